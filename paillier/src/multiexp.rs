//! Exponentiation engines: fixed-base window tables and shared-base multi-exponentiation.
//!
//! # Fixed base (encryption obfuscators)
//!
//! For a fixed base `g` and exponents of at most `t` bits, split the exponent into
//! `⌈t/w⌉` windows of `w` bits, `e = Σ_i d_i·2^{wi}`, and store
//! `T[i][d] = g^{d·2^{wi}}` for `d = 1 … 2^w − 1`. Then `g^e = Π_i T[i][d_i]`: at most
//! `⌈t/w⌉` multiplications and no squaring (Brickell–Gordon–McCurley–Wilson 1992, the
//! simple "fixed-base windowing" variant).
//!
//! # Shared bases (the server's matrix–vector product)
//!
//! The matrix–vector product `W ⊗ [a]` needs, for every row `j`, the multi-exponentiation
//! `R_j = Π_k a_k^{w_jk}` over the *same* bases `a_1 … a_n`. Straus' method (1964)
//! interleaves the rows' square-and-multiply loops: with a table `a_k^d`,
//! `d < 2^w`, built once per base and shared by every row, one row costs `b` squarings
//! and `n·⌈b/w⌉` multiplications for `b`-bit exponents, and the tables cost `n·(2^w − 2)`
//! multiplications once. The window `w` is chosen to minimise the total for the shape
//! at hand.
//!
//! Signed exponents use one inverse for the whole product: with an offset `o = 2^B`
//! above every `|w_jk|`, `u_jk = w_jk + o ≥ 0` and
//! `R_j = Π_k a_k^{u_jk} · (Π_k a_k)^{−o}`; the correction `(Π_k a_k)^{−o}` is the same for
//! every row, so a product with negative weights costs one inversion and `B` squarings
//! more than one without.
//!
//! All of it is variable-time in the exponents (see the crate docs, "Side channels").

use num_bigint::{BigInt, BigUint, Sign};
use rayon::prelude::*;

use crate::arith::{wipe, Elem, Modulus};

/// Bits `[start, start + w)` of `e` as a small integer (`w ≤ 32`).
pub(crate) fn window(e: &[u64], start: u64, w: u32) -> u32 {
    let limb = (start / 64) as usize;
    let shift = start % 64;
    let mut v = e.get(limb).copied().unwrap_or(0) >> shift;
    if shift + u64::from(w) > 64 {
        v |= e.get(limb + 1).copied().unwrap_or(0) << (64 - shift);
    }
    (v & ((1u64 << w) - 1)) as u32
}

/// A fixed-base window table `T[i][d] = g^{d·2^{wi}}` for exponents of up to
/// `max_bits` bits.
pub(crate) struct FixedBaseTable {
    modulus: Modulus,
    w: u32,
    max_bits: u64,
    /// `rows[i][d − 1] = g^{d·2^{wi}}`.
    rows: Vec<Vec<Elem>>,
}

impl FixedBaseTable {
    /// Builds the table for `g` modulo `modulus` (rows in parallel with rayon).
    pub(crate) fn new(modulus: &Modulus, g: &Elem, max_bits: u64, w: u32) -> Self {
        let windows = max_bits.div_ceil(u64::from(w)) as usize;
        // Row heads g^{2^{wi}}: sequential squarings.
        let mut heads = Vec::with_capacity(windows);
        let mut head = g.clone();
        for _ in 0..windows {
            heads.push(head.clone());
            for _ in 0..w {
                modulus.square_assign(&mut head);
            }
        }
        let rows = power_tables(modulus, &heads, w);
        Self {
            modulus: modulus.clone(),
            w,
            max_bits,
            rows,
        }
    }

    /// `g^e`, for any `e` (falls back to plain exponentiation above `max_bits`).
    pub(crate) fn pow_vartime(&self, e: &BigUint) -> Elem {
        if e.bits() > self.max_bits {
            let g = &self.rows[0][0];
            return self.modulus.pow_vartime(g, e);
        }
        let digits = e.to_u64_digits();
        let entries: Vec<&Elem> = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let d = window(&digits, i as u64 * u64::from(self.w), self.w) as usize;
                d.checked_sub(1).map(|d| &row[d])
            })
            .collect();
        let mut acc = None;
        multiply_prefetched(&self.modulus, &mut acc, &entries);
        acc.unwrap_or_else(|| self.modulus.one())
    }
}

/// `acc ← acc · Π entries` (`acc = None` stands for 1, so no product with 1 is computed),
/// with each entry fetched from its (large) table while the product before it runs and
/// its header (where its limbs are) one product earlier ([`Modulus::prefetch`]). Table
/// walks spend about a sixth of their time waiting for memory without it.
fn multiply_prefetched(modulus: &Modulus, acc: &mut Option<Elem>, entries: &[&Elem]) {
    for e in entries.iter().take(2) {
        Modulus::prefetch_header(e);
    }
    if let Some(first) = entries.first() {
        Modulus::prefetch(first);
    }
    for (k, entry) in entries.iter().enumerate() {
        if let Some(after) = entries.get(k + 2) {
            Modulus::prefetch_header(after);
        }
        if let Some(next) = entries.get(k + 1) {
            Modulus::prefetch(next);
        }
        match acc.as_mut() {
            None => *acc = Some((*entry).clone()),
            Some(a) => modulus.mul_assign(a, entry),
        }
    }
}

impl Drop for FixedBaseTable {
    fn drop(&mut self) {
        // Tables modulo p² or q² would give away the factorisation.
        for row in &mut self.rows {
            for e in row.iter_mut() {
                wipe(e);
            }
        }
    }
}

/// `[a, a², …, a^(2^w − 1)]` modulo `modulus` for every `a` of `bases` (in parallel with
/// rayon): the window tables of [`FixedBaseTable`] (one per row head) and of
/// [`SharedBases`] (one per base, combined into group tables when `g > 1`).
fn power_tables(modulus: &Modulus, bases: &[Elem], w: u32) -> Vec<Vec<Elem>> {
    let size = (1usize << w) - 1;
    bases
        .par_iter()
        .map(|a| {
            let mut t = Vec::with_capacity(size);
            t.push(a.clone());
            for d in 1..size {
                let next = modulus.mul(&t[d - 1], a);
                t.push(next);
            }
            t
        })
        .collect()
}

/// Most bytes the window tables of one [`SharedBases`] may hold: 128 MiB (at a 2048-bit
/// key, elements modulo `N²` are 512 bytes, so about 262,000 entries; the per-base
/// window of earlier versions took 205 MB on the MNIST `128 × 784` product).
const MAX_TABLE_BYTES: u64 = 128 << 20;

/// The window `w` and group size `g` of a [`SharedBases`] for `rows` products over `n`
/// bases with `bits`-bit exponents and elements of `elem_bytes` bytes: the pair of least
/// [`grouped_cost`] whose tables fit in [`MAX_TABLE_BYTES`] (`g = 1` is Straus' method).
fn best_params(n: usize, rows: usize, bits: u64, elem_bytes: u64) -> (u32, usize) {
    let mut best = ((1, 1), f64::INFINITY);
    for g in 1..=16usize {
        for w in 1..=12u32 {
            let Some(index_bits) = u32::try_from(g).ok().and_then(|g| g.checked_mul(w)) else {
                break;
            };
            if index_bits > 16 {
                break;
            }
            let entries = (n.div_ceil(g) as u64) << index_bits;
            if entries.saturating_mul(elem_bytes) > MAX_TABLE_BYTES {
                break;
            }
            let c = grouped_cost(n, rows, bits, w, g);
            if c < best.1 {
                best = ((w, g), c);
            }
        }
    }
    best.0
}

/// The cost, in modular multiplications, of `rows` multi-exponentiations over `n` shared
/// bases with `bits`-bit exponents, window `w` and groups of `g` bases: the per-base
/// power tables (`n·(2^w − 2)`), the group tables (`⌈n/g⌉·2^{g·w}`, for `g > 1`), and per
/// row `bits` squarings and one multiplication per group and window.
fn grouped_cost(n: usize, rows: usize, bits: u64, w: u32, g: usize) -> f64 {
    let windows = bits.div_ceil(u64::from(w)) as f64;
    let groups = n.div_ceil(g) as f64;
    let powers = n as f64 * ((1u64 << w) as f64 - 2.0).max(0.0);
    let group_tables = if g > 1 {
        groups * (1u64 << (g as u32 * w)) as f64
    } else {
        0.0
    };
    powers + group_tables + rows as f64 * (bits as f64 + groups * windows)
}

/// Bases `a_1 … a_n` prepared for many multi-exponentiations `Π_k a_k^{e_k}`: Straus'
/// interleaved square-and-multiply over *groups* of `g` consecutive bases (the
/// simultaneous-exponentiation table of Straus 1964, generalised by Yao 1976 and Pippenger
/// 1980 to several bases per lookup). Group `G` stores every product
/// `T_G[d_0 + d_1·2^w + … ] = Π_t a_{gG+t}^{d_t}` of `w`-bit digits, so one row costs
/// `bits` squarings and `⌈n/g⌉·⌈bits/w⌉` multiplications, and the tables `⌈n/g⌉·2^{g·w}`
/// once for all rows. `g = 1` is plain Straus with a table per base. `(w, g)` minimise
/// the total for the shape ([`best_params`]); on the MNIST `128 × 784` product of 177-bit
/// exponents the model gives `g = 11, w = 1` (72 MiB of tables), 1.35× fewer
/// multiplications than the best per-base window (`w = 9`) and 1.10× fewer than the
/// best grouping of at most 8 bases (`g = 5, w = 2`, the choice until session 13), and
/// 1.4× fewer than per-base windows on one row of 784 bases or `16 × 150` (a conv
/// layer's `c·k·k = 150` taps).
pub(crate) struct SharedBases<'m> {
    modulus: &'m Modulus,
    w: u32,
    g: usize,
    /// `tables[G][i − 1] = T_G[i]`, `i = 1 … 2^{g_G·w} − 1` (`g_G = g` but for a shorter
    /// last group).
    tables: Vec<Vec<Elem>>,
}

impl<'m> SharedBases<'m> {
    /// Builds the tables (in parallel), with the window and group size chosen for `rows`
    /// products of `bits`-bit exponents.
    pub(crate) fn new(modulus: &'m Modulus, bases: &[Elem], rows: usize, bits: u64) -> Self {
        let (w, g) = best_params(bases.len(), rows, bits.max(1), modulus.elem_bytes());
        Self::with_params(modulus, bases, w, g)
    }

    /// [`SharedBases::new`] with a given window `w ≥ 1` and group size `g ≥ 1`
    /// (`g·w ≤ 16`).
    pub(crate) fn with_params(modulus: &'m Modulus, bases: &[Elem], w: u32, g: usize) -> Self {
        let powers = power_tables(modulus, bases, w);
        let tables = if g == 1 {
            powers
        } else {
            powers
                .par_chunks(g)
                .map(|group| group_table(modulus, group, w))
                .collect()
        };
        Self {
            modulus,
            w,
            g,
            tables,
        }
    }

    /// `Π_k a_k^{e_k}` for non-negative exponents given as little-endian u64 limbs
    /// (Straus' interleaved square-and-multiply, one lookup per group of bases).
    pub(crate) fn multi_exp(&self, exps: &[Vec<u64>]) -> Elem {
        let bits = exps
            .iter()
            .map(|e| {
                e.iter()
                    .rposition(|&l| l != 0)
                    .map_or(0, |i| i as u64 * 64 + 64 - u64::from(e[i].leading_zeros()))
            })
            .max()
            .unwrap_or(0);
        let windows = bits.div_ceil(u64::from(self.w));
        let groups = self.tables.len();
        // Every group's table index in every window, `digits[i·groups + G]`, gathered one
        // exponent at a time (each exponent's limbs read once, not once per window).
        let mut digits = vec![0usize; windows as usize * groups];
        for (g, group) in exps.chunks(self.g).enumerate() {
            for (t, e) in group.iter().enumerate() {
                for i in 0..windows {
                    let d = window(e, i * u64::from(self.w), self.w) as usize;
                    digits[i as usize * groups + g] |= d << (t as u32 * self.w);
                }
            }
        }
        let mut acc: Option<Elem> = None;
        // This window's table entries, one per group with a non-zero digit.
        let mut entries: Vec<&Elem> = Vec::with_capacity(groups);
        for i in (0..windows).rev() {
            entries.clear();
            let row = &digits[i as usize * groups..][..groups];
            entries.extend(
                self.tables
                    .iter()
                    .zip(row)
                    .filter_map(|(table, &d)| d.checked_sub(1).map(|d| &table[d])),
            );
            for e in entries.iter().take(2) {
                Modulus::prefetch_header(e);
            }
            if let Some(a) = acc.as_mut() {
                for _ in 0..self.w {
                    self.modulus.square_assign(a);
                }
            }
            multiply_prefetched(self.modulus, &mut acc, &entries);
        }
        acc.unwrap_or_else(|| self.modulus.one())
    }
}

/// The table `T[i − 1] = Π_t a_t^{d_t}` of one group, `i = Σ_t d_t·2^{t·w} ≥ 1`, from the
/// per-base power tables `powers[t][d − 1] = a_t^d`: each entry is one product of the
/// entry without its highest digit and that digit's power (a copy when it has one digit).
fn group_table(modulus: &Modulus, powers: &[Vec<Elem>], w: u32) -> Vec<Elem> {
    let size = 1usize << (powers.len() as u32 * w);
    let mut t: Vec<Elem> = Vec::with_capacity(size - 1);
    for i in 1..size {
        let top = (usize::BITS - 1 - i.leading_zeros()) / w;
        let digit = i >> (top * w);
        let rest = i & ((1usize << (top * w)) - 1);
        let power = &powers[top as usize][digit - 1];
        let entry = if rest == 0 {
            power.clone()
        } else {
            modulus.mul(&t[rest - 1], power)
        };
        t.push(entry);
    }
    t
}

/// Signed exponents of a whole matrix, shifted to be non-negative (see the module docs).
pub(crate) struct OffsetExponents {
    /// Row-major `u_jk = w_jk + o` as little-endian limbs.
    pub(crate) rows: Vec<Vec<Vec<u64>>>,
    /// `B` with `o = 2^B`, or `None` when every exponent was already non-negative.
    pub(crate) offset_bits: Option<u64>,
    /// The largest bit length of any `u_jk`.
    pub(crate) bits: u64,
}

/// Shifts a row-major matrix of signed exponents to non-negative ones.
pub(crate) fn offset_exponents(rows: &[Vec<&BigInt>]) -> OffsetExponents {
    let any_negative = rows.iter().flatten().any(|x| x.sign() == Sign::Minus);
    let max_bits = rows.iter().flatten().map(|x| x.bits()).max().unwrap_or(0);
    let offset_bits = any_negative.then_some(max_bits);
    let offset = offset_bits.map(|b| BigInt::from(1u8) << b);
    let mut bits = 0;
    let rows = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|x| {
                    let u = match &offset {
                        Some(o) => *x + o,
                        None => (*x).clone(),
                    };
                    bits = bits.max(u.bits());
                    u.magnitude().to_u64_digits()
                })
                .collect()
        })
        .collect();
    OffsetExponents {
        rows,
        offset_bits,
        bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cross_limb_boundaries() {
        let e = [0xF000_0000_0000_0000u64, 0x0000_0000_0000_000Fu64];
        assert_eq!(window(&e, 60, 8), 0xFF);
        assert_eq!(window(&e, 56, 8), 0xF0);
        assert_eq!(window(&e, 128, 8), 0);
    }

    #[test]
    fn fixed_base_and_straus_match_modpow() {
        let m = BigUint::from(0xFFFF_FFFF_FFFF_FFC5u64) * BigUint::from(0xFFFF_FFFBu64);
        let md = Modulus::new(&m);
        let g = BigUint::from(0x1234_5678_9ABCu64);
        let table = FixedBaseTable::new(&md, &md.elem(&g), 70, 5);
        for e in [0u64, 1, 31, 32, 1 << 40, u64::MAX] {
            let e = BigUint::from(e);
            assert_eq!(md.to_biguint(&table.pow_vartime(&e)), g.modpow(&e, &m));
        }
        let big = BigUint::from(3u8) << 100;
        assert_eq!(md.to_biguint(&table.pow_vartime(&big)), g.modpow(&big, &m));

        let bases: Vec<BigUint> = (2u64..7).map(|x| BigUint::from(x * 1_000_003)).collect();
        let elems: Vec<Elem> = bases.iter().map(|b| md.elem(b)).collect();
        let shared = SharedBases::new(&md, &elems, 3, 40);
        let exps: Vec<BigUint> = (0u64..5)
            .map(|k| BigUint::from(k * 977 + 5) << 30)
            .collect();
        let limbs: Vec<Vec<u64>> = exps.iter().map(|e| e.to_u64_digits()).collect();
        let expected = bases
            .iter()
            .zip(&exps)
            .fold(BigUint::from(1u8), |acc, (b, e)| acc * b.modpow(e, &m) % &m);
        assert_eq!(md.to_biguint(&shared.multi_exp(&limbs)), expected);
    }

    #[test]
    fn grouped_tables_match_straus_for_every_window_and_group_size() {
        let m = BigUint::from(0xFFFF_FFFF_FFFF_FFC5u64) * BigUint::from(0xFFFF_FFFBu64);
        let md = Modulus::new(&m);
        // 7 bases: groups of 2, 3 and 4 leave a shorter last group.
        let bases: Vec<BigUint> = (2u64..9).map(|x| BigUint::from(x * 7_000_003)).collect();
        let elems: Vec<Elem> = bases.iter().map(|b| md.elem(b)).collect();
        let rows: Vec<Vec<BigUint>> = (0u64..3)
            .map(|j| {
                (0u64..7)
                    .map(|k| BigUint::from((j * 31 + k) * 0x9E37_79B9 + j) << (k * 9))
                    .collect()
            })
            .collect();
        // One row of zeros and one zero exponent among nonzero ones.
        let mut rows = rows;
        rows.push(vec![BigUint::from(0u8); 7]);
        rows[1][3] = BigUint::from(0u8);
        let expected: Vec<BigUint> = rows
            .iter()
            .map(|row| {
                bases
                    .iter()
                    .zip(row)
                    .fold(BigUint::from(1u8), |acc, (b, e)| acc * b.modpow(e, &m) % &m)
            })
            .collect();
        // Groups of up to 4, and the large groups the cost model picks since session 13
        // (one group holding all 7 bases, or wider than the bases).
        let params = (1..=4u32)
            .flat_map(|w| (1..=4usize).map(move |g| (w, g)))
            .chain([(1, 6), (1, 7), (1, 11), (2, 8), (1, 16)]);
        for (w, g) in params {
            let shared = SharedBases::with_params(&md, &elems, w, g);
            for (row, want) in rows.iter().zip(&expected) {
                let limbs: Vec<Vec<u64>> = row.iter().map(BigUint::to_u64_digits).collect();
                let got = md.to_biguint(&shared.multi_exp(&limbs));
                assert_eq!(&got, want, "w = {w}, g = {g}");
            }
        }
    }

    #[test]
    fn chosen_parameters_follow_the_cost_model_within_the_memory_cap() {
        // The MNIST first layer at a 2048-bit key (512-byte elements): 1-bit windows
        // over groups of 11 bases (72 MiB of tables).
        assert_eq!(best_params(784, 128, 177, 512), (1, 11));
        // The same with the IFMA form's 640-byte elements (80 digits of 52 bits).
        assert_eq!(best_params(784, 128, 177, 640), (1, 11));
        // Groups beyond 8 bases save a tenth of the multiplications there.
        assert!(grouped_cost(784, 128, 177, 1, 11) * 1.09 < grouped_cost(784, 128, 177, 2, 5));
        // At 4096-bit keys (1 KiB elements) the memory cap takes the groups down to 10.
        assert_eq!(best_params(784, 128, 177, 1024), (1, 10));
        // One row: one table per group of 6 bases and 1-bit windows.
        assert_eq!(best_params(784, 1, 177, 512), (1, 6));
        let (w, g) = best_params(784, 128, 177, 512);
        let entries = 784u64.div_ceil(g as u64) << (g as u32 * w);
        assert!(entries * 512 <= MAX_TABLE_BYTES);
        assert!(
            grouped_cost(784, 128, 177, w, g) * 1.2 < grouped_cost(784, 128, 177, 9, 1),
            "grouping saves at least 1/6 of the multiplications"
        );
    }
}
