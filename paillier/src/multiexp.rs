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
        let mut acc: Option<Elem> = None;
        for (i, row) in self.rows.iter().enumerate() {
            let d = window(&digits, i as u64 * u64::from(self.w), self.w) as usize;
            if d == 0 {
                continue;
            }
            match acc.as_mut() {
                None => acc = Some(row[d - 1].clone()),
                Some(a) => self.modulus.mul_assign(a, &row[d - 1]),
            }
        }
        acc.unwrap_or_else(|| self.modulus.one())
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
/// [`SharedBases`] (one per base).
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

/// The cost, in modular multiplications, of `rows` multi-exponentiations over `n` shared
/// bases with `bits`-bit exponents and window `w`.
fn straus_cost(n: usize, rows: usize, bits: u64, w: u32) -> f64 {
    let windows = bits.div_ceil(u64::from(w)) as f64;
    let table = n as f64 * ((1u64 << w) as f64 - 2.0).max(0.0);
    table + rows as f64 * (bits as f64 + n as f64 * windows)
}

/// The best window for the shape, capped so that the tables hold at most 2^21 entries.
fn best_window(n: usize, rows: usize, bits: u64) -> u32 {
    let mut best = (1, f64::INFINITY);
    for w in 1..=12u32 {
        if n.saturating_mul(1 << w) > 1 << 21 {
            break;
        }
        let c = straus_cost(n, rows, bits, w);
        if c < best.1 {
            best = (w, c);
        }
    }
    best.0
}

/// Bases `a_1 … a_n` prepared for many multi-exponentiations `Π_k a_k^{e_k}`.
pub(crate) struct SharedBases<'m> {
    modulus: &'m Modulus,
    w: u32,
    /// `tables[k][d − 1] = a_k^d`, `d = 1 … 2^w − 1`.
    tables: Vec<Vec<Elem>>,
}

impl<'m> SharedBases<'m> {
    /// Builds the per-base tables (in parallel), with the window chosen for `rows`
    /// products of `bits`-bit exponents.
    pub(crate) fn new(modulus: &'m Modulus, bases: &[Elem], rows: usize, bits: u64) -> Self {
        let w = best_window(bases.len(), rows, bits.max(1));
        let tables = power_tables(modulus, bases, w);
        Self { modulus, w, tables }
    }

    /// `Π_k a_k^{e_k}` for non-negative exponents given as little-endian u64 limbs
    /// (Straus' interleaved square-and-multiply).
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
        let mut acc: Option<Elem> = None;
        for i in (0..windows).rev() {
            if let Some(a) = acc.as_mut() {
                for _ in 0..self.w {
                    self.modulus.square_assign(a);
                }
            }
            for (k, e) in exps.iter().enumerate() {
                let d = window(e, i * u64::from(self.w), self.w) as usize;
                if d == 0 {
                    continue;
                }
                match acc.as_mut() {
                    None => acc = Some(self.tables[k][d - 1].clone()),
                    Some(a) => self.modulus.mul_assign(a, &self.tables[k][d - 1]),
                }
            }
        }
        acc.unwrap_or_else(|| self.modulus.one())
    }
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
}
