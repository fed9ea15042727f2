//! Montgomery arithmetic over `u64` limbs: the default (pure-Rust) backend of
//! [`crate::arith::Modulus`].
//!
//! A residue `x` modulo an odd `m` of `n` limbs is kept as `x·R mod m` with `R = 2^{64n}`
//! (Montgomery 1985), always fully reduced to `[0, m)`, so a product needs no division:
//! the schoolbook product (or square) of two residues, then one Montgomery reduction
//! (REDC, separated operand scanning: Koç–Acar–Kaliski 1996, "SOS"). Values stay in
//! Montgomery form across a whole exponentiation, multi-exponentiation or table walk and
//! are converted only at the ends, so the results are exactly those of reducing with `%`
//! after every product.
//!
//! Squaring computes each cross product once (`n(n−1)/2` limb products plus `n` squares
//! instead of `n²`), which is where exponentiations spend most of their time.
//!
//! Every function here is variable-time.

use num_bigint::BigUint;

/// Limbs of scratch kept on the stack: enough for the product of two 8192-bit residues
/// (`N²` of a 4096-bit key). Larger moduli use a heap buffer.
const STACK_LIMBS: usize = 2 * 128 + 1;

/// One odd modulus `m > 1` with its Montgomery constants.
#[derive(Clone)]
pub(crate) struct Monty {
    /// `m` as `n` little-endian limbs (the top limb is non-zero).
    m: Vec<u64>,
    /// `−m^{−1} mod 2^64`.
    m_inv: u64,
    /// `R² mod m`, for converting into Montgomery form.
    r2: Vec<u64>,
    /// `R mod m`, the Montgomery form of 1.
    one: Vec<u64>,
    /// The radix-`2^52` AVX-512 IFMA form of the same modulus, where the CPU has it
    /// ([`crate::monty_ifma`]); every operation then goes there, on its own residues.
    #[cfg(target_arch = "x86_64")]
    ifma: Option<crate::monty_ifma::Ifma>,
}

/// Runs `$ifma` with the IFMA form when there is one (x86-64 with AVX-512 IFMA), else
/// falls through.
macro_rules! with_ifma {
    ($self:ident, $f:ident => $body:expr) => {
        #[cfg(target_arch = "x86_64")]
        if let Some($f) = &$self.ifma {
            return $body;
        }
    };
}

/// `t + a·b + c` as (low, high) limbs; never overflows 128 bits.
#[inline(always)]
fn mac(t: u64, a: u64, b: u64, c: u64) -> (u64, u64) {
    let p = u128::from(a) * u128::from(b) + u128::from(t) + u128::from(c);
    (p as u64, (p >> 64) as u64)
}

/// `t ← t + a·b` over `a.len()` limbs of `t`, returning the carry limb: the
/// MULX/ADX kernel ([`crate::addmul_adx`]) where the CPU has it, else the portable loop.
#[inline(always)]
fn addmul_1(t: &mut [u64], a: &[u64], b: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if crate::addmul_adx::available() {
        return crate::addmul_adx::addmul_1(t, a, b);
    }
    addmul_1_portable(t, a, b)
}

/// The portable `t ← t + a·b`, returning the carry limb.
#[inline(always)]
pub(crate) fn addmul_1_portable(t: &mut [u64], a: &[u64], b: u64) -> u64 {
    let mut c = 0;
    for (ti, &ai) in t.iter_mut().zip(a) {
        let (lo, hi) = mac(*ti, ai, b, c);
        *ti = lo;
        c = hi;
    }
    c
}

/// `a ← a − b` (same length), returning the borrow.
#[inline(always)]
fn sub_assign(a: &mut [u64], b: &[u64]) -> bool {
    let mut borrow = false;
    for (ai, &bi) in a.iter_mut().zip(b) {
        let (d, b1) = ai.overflowing_sub(bi);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        *ai = d;
        borrow = b1 | b2;
    }
    borrow
}

/// Whether `a ≥ b` (same length).
#[inline(always)]
fn geq(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `x` as exactly `n` limbs (the caller guarantees `x < 2^{64n}`).
fn limbs(x: &BigUint, n: usize) -> Vec<u64> {
    let mut v = x.to_u64_digits();
    v.resize(n, 0);
    v
}

/// Little-endian limbs to a `BigUint`.
pub(crate) fn from_limbs(x: &[u64]) -> BigUint {
    let mut digits = Vec::with_capacity(2 * x.len());
    for &l in x {
        digits.push(l as u32);
        digits.push((l >> 32) as u32);
    }
    BigUint::new(digits)
}

/// Runs `f` on a zeroed scratch buffer of `len` limbs: on the stack when it fits, in the
/// smallest of three sizes (zeroing the buffer is part of every product).
#[inline(always)]
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u64]) -> T) -> T {
    if len <= 64 {
        let mut buf = [0u64; 64];
        f(&mut buf[..len])
    } else if len <= 128 {
        let mut buf = [0u64; 128];
        f(&mut buf[..len])
    } else if len <= STACK_LIMBS {
        let mut buf = [0u64; STACK_LIMBS];
        f(&mut buf[..len])
    } else {
        let mut buf = vec![0u64; len];
        f(&mut buf)
    }
}

impl Monty {
    /// The constants for an odd `m > 1`. An even `m` or `m ≤ 1` has no Montgomery form;
    /// the constants are then those of the smallest odd modulus `≥ max(m, 3)`, so that
    /// every operation stays total (the callers pass only odd moduli).
    pub(crate) fn new(m: &BigUint) -> Self {
        let m = if m.bits() < 2 {
            BigUint::from(3u8)
        } else {
            m | BigUint::from(1u8)
        };
        let m = &m;
        let ml = m.to_u64_digits();
        let n = ml.len();
        // Newton's iteration for m0^{-1} mod 2^64: each step doubles the correct bits
        // (3 bits from x = m0, since m0·m0 ≡ 1 mod 8).
        let m0 = ml[0];
        let mut inv = m0;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(m0.wrapping_mul(inv)));
        }
        let r = BigUint::from(1u8) << (64 * n);
        let one = limbs(&(&r % m), n);
        let r2 = limbs(&((&r * &r) % m), n);
        Self {
            #[cfg(target_arch = "x86_64")]
            ifma: crate::monty_ifma::Ifma::new(m, inv.wrapping_neg()),
            m: ml,
            m_inv: inv.wrapping_neg(),
            r2,
            one,
        }
    }

    /// The 64-bit-limb form only, without the IFMA path (for comparing the two).
    #[cfg(all(test, target_arch = "x86_64"))]
    pub(crate) fn without_ifma(mut self) -> Self {
        self.ifma = None;
        self
    }

    /// The number of limbs `n` of every residue.
    fn len(&self) -> usize {
        self.m.len()
    }

    /// The Montgomery form of 1.
    pub(crate) fn one(&self) -> Vec<u64> {
        with_ifma!(self, f => f.one());
        self.one.clone()
    }

    /// The Montgomery form of `x` (`x < m`).
    pub(crate) fn to_monty(&self, x: &BigUint) -> Vec<u64> {
        with_ifma!(self, f => f.to_monty(x));
        let n = self.len();
        let mut xl = limbs(x, n);
        self.mul_assign(&mut xl, &self.r2);
        xl
    }

    /// The residue whose Montgomery form is `x` (out of Montgomery form), as a `BigUint`
    /// in `[0, m)`.
    pub(crate) fn residue(&self, x: &[u64]) -> BigUint {
        with_ifma!(self, f => f.residue(x));
        let n = self.len();
        with_scratch(2 * n, |t| {
            t[..n].copy_from_slice(x);
            let mut out = vec![0u64; n];
            self.redc(t, &mut out);
            let r = from_limbs(&out);
            out.iter_mut().for_each(|l| *l = 0);
            t.iter_mut().for_each(|l| *l = 0);
            r
        })
    }

    /// Montgomery reduction of `t` (`2n` limbs, `t < m·R`) into `out`: `t·R^{−1} mod m`,
    /// fully reduced. Overwrites `t`.
    #[inline(always)]
    fn redc(&self, t: &mut [u64], out: &mut [u64]) {
        let n = self.len();
        let m = &self.m[..];
        let mut top = 0u64;
        for i in 0..n {
            let u = t[i].wrapping_mul(self.m_inv);
            let c = addmul_1(&mut t[i..i + n], m, u);
            let (s, o1) = t[i + n].overflowing_add(c);
            let (s, o2) = s.overflowing_add(top);
            t[i + n] = s;
            top = u64::from(o1 | o2);
        }
        out.copy_from_slice(&t[n..2 * n]);
        // The result is below 2m: one conditional subtraction.
        if top != 0 || geq(out, m) {
            sub_assign(out, m);
        }
    }

    /// `a ← a·b·R^{−1} mod m`.
    #[inline(always)]
    pub(crate) fn mul_assign(&self, a: &mut [u64], b: &[u64]) {
        with_ifma!(self, f => f.mul_assign(a, b));
        let n = self.len();
        with_scratch(2 * n, |t| {
            for (i, &bi) in b.iter().enumerate() {
                t[i + n] = addmul_1(&mut t[i..i + n], a, bi);
            }
            self.redc(t, a);
        });
    }

    /// `a ← a²·R^{−1} mod m`.
    #[inline(always)]
    pub(crate) fn square_assign(&self, a: &mut [u64]) {
        with_ifma!(self, f => f.square_assign(a));
        let n = self.len();
        with_scratch(2 * n, |t| {
            // Cross products a_i·a_j, i < j, once each.
            for i in 0..n.saturating_sub(1) {
                t[i + n] = addmul_1(&mut t[2 * i + 1..i + n], &a[i + 1..], a[i]);
            }
            // Double them (shift left by one bit) and add the squares a_i².
            let mut shifted_out = 0u64;
            for l in t.iter_mut() {
                let next = *l >> 63;
                *l = (*l << 1) | shifted_out;
                shifted_out = next;
            }
            let mut c = 0u64;
            for (i, &ai) in a.iter().enumerate() {
                let sq = u128::from(ai) * u128::from(ai);
                let lo = u128::from(t[2 * i]) + (sq as u64 as u128) + u128::from(c);
                t[2 * i] = lo as u64;
                let hi = u128::from(t[2 * i + 1]) + ((sq >> 64) as u64 as u128) + (lo >> 64);
                t[2 * i + 1] = hi as u64;
                c = (hi >> 64) as u64;
            }
            self.redc(t, a);
        });
    }

    /// `a^e` in Montgomery form for a public exponent `e` (little-endian limbs):
    /// left-to-right sliding windows over a table of odd powers.
    pub(crate) fn pow(&self, a: &[u64], e: &[u64]) -> Vec<u64> {
        let bits = e
            .iter()
            .rposition(|&l| l != 0)
            .map_or(0, |i| i as u64 * 64 + 64 - u64::from(e[i].leading_zeros()));
        if bits == 0 {
            return self.one();
        }
        let w: u32 = match bits {
            0..=24 => 1,
            25..=80 => 3,
            81..=240 => 4,
            241..=672 => 5,
            _ => 6,
        };
        let bit = |i: u64| (e[(i / 64) as usize] >> (i % 64)) & 1;
        // Odd powers a, a³, …, a^(2^w − 1).
        let mut odd = Vec::with_capacity(1 << (w - 1));
        odd.push(a.to_vec());
        if w > 1 {
            let mut a2 = a.to_vec();
            self.square_assign(&mut a2);
            for k in 1..(1usize << (w - 1)) {
                let mut next = odd[k - 1].clone();
                self.mul_assign(&mut next, &a2);
                odd.push(next);
            }
        }
        let mut acc: Option<Vec<u64>> = None;
        let mut i = bits as i64 - 1;
        while i >= 0 {
            if bit(i as u64) == 0 {
                if let Some(x) = acc.as_mut() {
                    self.square_assign(x);
                }
                i -= 1;
                continue;
            }
            // The longest window [j, i] of at most w bits that ends in a one bit.
            let mut j = (i - i64::from(w) + 1).max(0);
            while bit(j as u64) == 0 {
                j += 1;
            }
            let mut d = 0usize;
            for k in (j..=i).rev() {
                d = (d << 1) | bit(k as u64) as usize;
            }
            match acc.as_mut() {
                None => acc = Some(odd[d >> 1].clone()),
                Some(x) => {
                    for _ in j..=i {
                        self.square_assign(x);
                    }
                    self.mul_assign(x, &odd[d >> 1]);
                }
            }
            i = j - 1;
        }
        for t in &mut odd {
            t.iter_mut().for_each(|l| *l = 0);
        }
        acc.unwrap_or_else(|| self.one())
    }
}

impl Drop for Monty {
    fn drop(&mut self) {
        // p², q² and their constants would give away the factorisation.
        for v in [&mut self.m, &mut self.r2, &mut self.one] {
            v.iter_mut().for_each(|l| *l = 0);
        }
        self.m_inv = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::RandBigInt;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn odd_modulus(seed: u64, bits: u64) -> BigUint {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let mut m = rng.gen_biguint(bits);
        m.set_bit(0, true);
        m.set_bit(bits - 1, true);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Products, squares and powers in Montgomery form equal `%` after every product,
        /// for moduli of 1 to 70 limbs (top limbs near 2^64 included), in both forms.
        #[test]
        fn montgomery_matches_plain_reduction(
            seed in any::<u64>(),
            bits in 2u64..4480,
            ebits in 0u64..300,
        ) {
            let m = odd_modulus(seed, bits.max(2));
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 1);
            let a = rng.gen_biguint_below(&m);
            let b = rng.gen_biguint_below(&m);
            let e = rng.gen_biguint(ebits);
            // The default form (IFMA where the CPU has it) and the 64-bit limbs.
            #[cfg(target_arch = "x86_64")]
            let forms = [Monty::new(&m), Monty::new(&m).without_ifma()];
            #[cfg(not(target_arch = "x86_64"))]
            let forms = [Monty::new(&m)];
            for md in forms {
            let (ma, mb) = (md.to_monty(&a), md.to_monty(&b));
            prop_assert_eq!(md.residue(&ma), a.clone());
            let mut p = ma.clone();
            md.mul_assign(&mut p, &mb);
            prop_assert_eq!(md.residue(&p), (&a * &b) % &m);
            let mut s = ma.clone();
            md.square_assign(&mut s);
            prop_assert_eq!(md.residue(&s), (&a * &a) % &m);
            let el = e.to_u64_digits();
            prop_assert_eq!(md.residue(&md.pow(&ma, &el)), a.modpow(&e, &m));
            }
        }
    }

    #[test]
    fn extreme_residues() {
        // m = 2^256 − 189 (odd), residues 0, 1, m − 1, and a modulus of all-ones limbs.
        for m in [
            (BigUint::from(1u8) << 256) - 189u32,
            (BigUint::from(1u8) << 512) - 1u32,
            BigUint::from(3u8),
        ] {
            let md = Monty::new(&m);
            for x in [BigUint::from(0u8), BigUint::from(1u8), &m - 1u32] {
                let mx = md.to_monty(&x);
                let mut s = mx.clone();
                md.square_assign(&mut s);
                assert_eq!(md.residue(&s), (&x * &x) % &m);
                let mut p = mx.clone();
                md.mul_assign(&mut p, &mx);
                assert_eq!(md.residue(&p), (&x * &x) % &m);
                let e = &m - 2u32;
                assert_eq!(
                    md.residue(&md.pow(&mx, &e.to_u64_digits())),
                    x.modpow(&e, &m)
                );
            }
        }
        // No Montgomery form: the next odd modulus (documented fallback, unused by callers).
        let md = Monty::new(&BigUint::from(10u8));
        let x = md.to_monty(&BigUint::from(7u8));
        assert_eq!(md.residue(&md.pow(&x, &[2])), BigUint::from(49u32 % 11));
    }
}
