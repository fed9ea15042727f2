//! Montgomery multiplication in radix `2^52` with the AVX-512 IFMA instructions
//! (`VPMADD52LUQ`/`VPMADD52HUQ`, Intel Ice Lake and later, AMD Zen 4 and later): the fast
//! path of [`crate::monty`] where the CPU has them.
//!
//! A residue modulo an odd `m` is kept as `L = 8·K` digits of 52 bits in `u64` lanes,
//! `x = Σ_j x_j·2^{52j}`, in Montgomery form `x·R mod m` with `R = 2^{52L}` and
//! `4m ≤ R`. One product is the word-by-word Montgomery multiplication (Montgomery
//! 1985; "CIOS", Koç–Acar–Kaliski 1996) over 52-bit digits with eight digits per
//! 512-bit register, as in Gueron and Krasnov, "Software implementation of modular
//! exponentiation, using advanced vector instructions architectures" (WAIFI 2012) and
//! Drucker and Gueron, "Fast modular squaring with AVX512IFMA" (ITNG 2019); OpenSSL's
//! `rsaz-avx512` uses the same loop for RSA. For each digit `b_i` of `b`:
//!
//! 1. `acc ← acc + lo52(a·b_i)` (one `VPMADD52LUQ` per register);
//! 2. `q ← lo52(acc_0·m')` with `m' = −m^{−1} mod 2^52`, then `acc ← acc + lo52(m·q)`,
//!    which makes `acc_0 ≡ 0 mod 2^52`;
//! 3. shift `acc` down one digit (`VALIGNQ`), carrying `acc_0 >> 52` into the new lowest
//!    digit;
//! 4. `acc ← acc + hi52(a·b_i) + hi52(m·q)`, the high halves, which belong one digit up
//!    and so land unshifted.
//!
//! The lanes are 64 bits wide and take at most four 52-bit terms per step, so they hold
//! the unnormalised sums of all `L ≤ 160` steps without overflow
//! (`160·4·2^52 < 2^62`). The result `(a·b + q·m)/R` is below `2m` whenever both inputs
//! are (because `4m ≤ R`), so values stay in `[0, 2m)` between products ("almost
//! Montgomery"; no conditional subtraction) and are reduced to `[0, m)` only when they
//! leave Montgomery form ([`Ifma::residue`]). At the end the lanes are normalised back
//! to 52-bit digits with vector carry passes.
//!
//! Compared with the 64-bit schoolbook path ([`crate::monty`] with
//! [`crate::addmul_adx`]), a 4096-bit product is `4·K·L = 3,200` vector multiply-adds of
//! eight lanes each instead of `2·64² = 8,192` scalar `MULX`; the property tests compare
//! both, and plain `%` reduction, on the same inputs.
//!
//! Whether the CPU has AVX-512F and IFMA is detected once at run time ([`available`]);
//! `GELUNET_PORTABLE_ARITH` (the portable loop) or `GELUNET_NO_IFMA` (the `MULX`/ADX
//! loop) turn this path off for comparisons.
//!
//! Variable-time in the lengths only (no data-dependent branch or address, except the
//! normalisation's rare extra carry passes).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use num_bigint::BigUint;

/// The digit width in bits.
const DIGIT_BITS: u64 = 52;

/// `2^52 − 1`.
const MASK52: u64 = (1 << DIGIT_BITS) - 1;

/// The most registers of eight digits a residue may take (`L = 160` digits, moduli of up
/// to 8,318 bits: `N²` of a 4096-bit key); larger moduli use [`crate::monty`]'s path.
const MAX_REGISTERS: usize = 20;

/// Set (to any value) to use the `MULX`/ADX loop even where IFMA exists, for comparing
/// the two on one machine (`GELUNET_NO_IFMA=1 gelunet bench paillier`); read once.
pub(crate) const NO_IFMA_ENV: &str = "GELUNET_NO_IFMA";

/// Whether this CPU has AVX-512F and AVX-512 IFMA (detected once), and neither
/// [`NO_IFMA_ENV`] nor [`crate::addmul_adx::PORTABLE_ENV`] is set.
pub(crate) fn available() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        std::env::var_os(NO_IFMA_ENV).is_none()
            && std::env::var_os(crate::addmul_adx::PORTABLE_ENV).is_none()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
    })
}

/// The kernel for `K` registers: `out ← a·b·R^{−1}` (all `8K` digits).
type Kernel = unsafe fn(*const u64, *const u64, *const u64, u64, *mut u64);

/// One odd modulus `m` in radix `2^52` with its Montgomery constants.
#[derive(Clone)]
pub(crate) struct Ifma {
    /// `m` as `L` digits.
    m: Vec<u64>,
    /// `−m^{−1} mod 2^52`.
    m_inv: u64,
    /// `R² mod m` as `L` digits, for converting into Montgomery form.
    r2: Vec<u64>,
    /// `R mod m`, the Montgomery form of 1.
    one: Vec<u64>,
    /// `1` as `L` digits, for converting out of Montgomery form.
    unit: Vec<u64>,
    /// The product for this `K`.
    kernel: Kernel,
}

/// `x` as exactly `len` digits of 52 bits (`x < 2^{52·len}`).
fn digits(x: &BigUint, len: usize) -> Vec<u64> {
    let limbs = x.to_u64_digits();
    let limb = |i: usize| limbs.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| {
            let bit = i * DIGIT_BITS as usize;
            let (w, s) = (bit / 64, bit % 64);
            let lo = limb(w) >> s;
            let hi = if s == 0 { 0 } else { limb(w + 1) << (64 - s) };
            (lo | hi) & MASK52
        })
        .collect()
}

/// 52-bit digits to a `BigUint`.
fn from_digits(x: &[u64]) -> BigUint {
    let mut limbs = vec![0u64; (x.len() * DIGIT_BITS as usize).div_ceil(64) + 1];
    for (i, &d) in x.iter().enumerate() {
        let bit = i * DIGIT_BITS as usize;
        let (w, s) = (bit / 64, bit % 64);
        limbs[w] |= d << s;
        if s > 64 - DIGIT_BITS as usize {
            limbs[w + 1] |= d >> (64 - s);
        }
    }
    let r = crate::monty::from_limbs(&limbs);
    limbs.iter_mut().for_each(|l| *l = 0);
    r
}

impl Ifma {
    /// The constants for an odd `m > 1` with `m_inv64 = −m^{−1} mod 2^64`, or `None`
    /// when this CPU lacks IFMA ([`available`]) or `m` needs more than
    /// [`MAX_REGISTERS`] registers.
    pub(crate) fn new(m: &BigUint, m_inv64: u64) -> Option<Self> {
        if !available() {
            return None;
        }
        // 4m ≤ R = 2^{52L}: two bits of headroom, rounded up to whole registers.
        let k = (m.bits() + 2).div_ceil(DIGIT_BITS * 8) as usize;
        let kernel = kernel_for(k)?;
        let len = 8 * k;
        let r = BigUint::from(1u8) << (DIGIT_BITS * len as u64);
        let mut unit = vec![0u64; len];
        unit[0] = 1;
        Some(Self {
            m: digits(m, len),
            m_inv: m_inv64 & MASK52,
            r2: digits(&((&r * &r) % m), len),
            one: digits(&(&r % m), len),
            unit,
            kernel,
        })
    }

    /// The number of digits `L` of every residue.
    pub(crate) fn len(&self) -> usize {
        self.m.len()
    }

    /// The Montgomery form of 1.
    pub(crate) fn one(&self) -> Vec<u64> {
        self.one.clone()
    }

    /// `out ← a·b·R^{−1}` (in `[0, 2m)` for inputs in `[0, 2m)`); `out` may be `a` or `b`.
    #[inline(always)]
    fn amm(&self, a: *const u64, b: *const u64, out: *mut u64) {
        // SAFETY: `a`, `b` and `out` point at `L` digits each (the callers pass residues
        // of this modulus, checked by their length assertions), the kernel reads all of
        // `a` and `b` before it writes `out`, and `available()` held when `kernel` was
        // chosen.
        unsafe { (self.kernel)(a, b, self.m.as_ptr(), self.m_inv, out) }
    }

    /// `a ← a·b·R^{−1}`, congruent modulo `m` and kept in `[0, 2m)` (module docs).
    ///
    /// # Panics
    /// If `a` or `b` is not `L` digits long (a residue of another modulus).
    #[inline(always)]
    pub(crate) fn mul_assign(&self, a: &mut [u64], b: &[u64]) {
        assert!(
            a.len() == self.len() && b.len() == self.len(),
            "residue length"
        );
        let p = a.as_mut_ptr();
        self.amm(p, b.as_ptr(), p);
    }

    /// `a ← a²·R^{−1}`, congruent modulo `m` and kept in `[0, 2m)`.
    ///
    /// # Panics
    /// If `a` is not `L` digits long.
    #[inline(always)]
    pub(crate) fn square_assign(&self, a: &mut [u64]) {
        assert!(a.len() == self.len(), "residue length");
        let p = a.as_mut_ptr();
        self.amm(p, p, p);
    }

    /// The Montgomery form of `x` (`x < m`).
    pub(crate) fn to_monty(&self, x: &BigUint) -> Vec<u64> {
        let mut d = digits(x, self.len());
        self.mul_assign(&mut d, &self.r2);
        d
    }

    /// The residue whose Montgomery form is `x`, as a `BigUint` in `[0, m)`.
    pub(crate) fn residue(&self, x: &[u64]) -> BigUint {
        let mut d = x.to_vec();
        self.mul_assign(&mut d, &self.unit);
        // x·1·R^{−1} < (2m + R·m)/R ≤ m + 1: at most one subtraction.
        let mut r = from_digits(&d);
        d.iter_mut().for_each(|l| *l = 0);
        let m = from_digits(&self.m);
        if r >= m {
            r -= m;
        }
        r
    }
}

impl Drop for Ifma {
    fn drop(&mut self) {
        // p², q² and their constants would give away the factorisation.
        for v in [&mut self.m, &mut self.r2, &mut self.one] {
            v.iter_mut().for_each(|l| *l = 0);
        }
        self.m_inv = 0;
    }
}

/// The kernel for `k` registers, `None` above [`MAX_REGISTERS`].
fn kernel_for(k: usize) -> Option<Kernel> {
    if k > MAX_REGISTERS {
        return None;
    }
    macro_rules! pick {
        ($($n:literal)*) => {
            match k {
                $($n => Some(amm::<$n> as Kernel),)*
                _ => None,
            }
        };
    }
    pick!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20)
}

/// Hints the CPU to load the limbs of `x` into its caches (one `PREFETCHT0` per 64-byte
/// line and one for the last limb); reads nothing, never faults. Used by
/// [`crate::arith::Modulus::prefetch`] for table walks, on residues of either backend.
/// Reading `x`'s length and address is a load of its `Vec` header, which
/// [`prefetch_value`] can bring in beforehand.
#[inline(always)]
pub(crate) fn prefetch(x: &[u64]) {
    for p in x
        .chunks(8)
        .map(<[u64]>::as_ptr)
        .chain(x.last().map(std::ptr::from_ref))
    {
        prefetch_line(p.cast());
    }
}

/// Hints the CPU to load the 64-byte line at `x` itself (for a `Vec`, its header: the
/// address and length of the limbs); reads nothing, never faults.
#[inline(always)]
pub(crate) fn prefetch_value<T>(x: &T) {
    prefetch_line(std::ptr::from_ref(x).cast());
}

#[inline(always)]
fn prefetch_line(p: *const i8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: SSE is part of x86-64; a prefetch is a hint that reads no memory and never
    // faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
}

/// `out ← a·b·R^{−1}` over `8K` digits (module docs); `m_inv = −m^{−1} mod 2^52`.
///
/// # Safety
/// The CPU has AVX-512F and IFMA; `a`, `b`, `m` and `out` are valid for `8K` digits;
/// `a` and `b` hold digits below `2^52` whose values are below `2m`; `out` may alias `a`
/// or `b` (every read happens before the first write).
#[target_feature(enable = "avx512f,avx512ifma")]
#[allow(clippy::needless_range_loop)] // a, m and the accumulator are walked in step
unsafe fn amm<const K: usize>(
    a: *const u64,
    b: *const u64,
    m: *const u64,
    m_inv: u64,
    out: *mut u64,
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_si512();
    let minv = _mm512_set1_epi64(m_inv as i64);
    let mut acc = [zero; K];
    let mut av = [zero; K];
    let mut mv = [zero; K];
    for k in 0..K {
        av[k] = _mm512_loadu_si512(a.add(8 * k).cast());
        mv[k] = _mm512_loadu_si512(m.add(8 * k).cast());
    }
    for i in 0..8 * K {
        let bi = _mm512_set1_epi64(*b.add(i) as i64);
        for k in 0..K {
            acc[k] = _mm512_madd52lo_epu64(acc[k], av[k], bi);
        }
        // q = lo52(acc_0·m') in lane 0, broadcast to every lane.
        let q = _mm512_permutexvar_epi64(zero, _mm512_madd52lo_epu64(zero, acc[0], minv));
        for k in 0..K {
            acc[k] = _mm512_madd52lo_epu64(acc[k], mv[k], q);
        }
        // acc_0 ≡ 0 mod 2^52 now: shift down one digit, carrying acc_0 >> 52.
        let carry = _mm512_srli_epi64::<52>(acc[0]);
        for k in 0..K - 1 {
            acc[k] = _mm512_alignr_epi64::<1>(acc[k + 1], acc[k]);
        }
        acc[K - 1] = _mm512_alignr_epi64::<1>(zero, acc[K - 1]);
        acc[0] = _mm512_mask_add_epi64(acc[0], 1, acc[0], carry);
        for k in 0..K {
            acc[k] = _mm512_madd52hi_epu64(acc[k], av[k], bi);
            acc[k] = _mm512_madd52hi_epu64(acc[k], mv[k], q);
        }
    }
    normalize(&mut acc);
    for k in 0..K {
        _mm512_storeu_si512(out.add(8 * k).cast(), acc[k]);
    }
}

/// Normalises the lanes to 52-bit digits of the same value (below `2^{52·8K}`): two
/// carry passes leave each lane at most `2^52`; a lane at exactly `2^52` (rare: a carry
/// rippling through digits of `2^52 − 1`) takes further passes until none is.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn normalize<const K: usize>(acc: &mut [std::arch::x86_64::__m512i; K]) {
    use std::arch::x86_64::*;
    let mask = _mm512_set1_epi64(MASK52 as i64);
    pass(acc);
    pass(acc);
    while acc.iter().any(|&l| _mm512_cmpgt_epu64_mask(l, mask) != 0) {
        pass(acc);
    }
}

/// One carry pass over the lanes: each lane keeps its low 52 bits and adds the carry
/// (`>> 52`) of the lane below it.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pass<const K: usize>(acc: &mut [std::arch::x86_64::__m512i; K]) {
    use std::arch::x86_64::*;
    let mask = _mm512_set1_epi64(MASK52 as i64);
    let mut prev = _mm512_setzero_si512();
    for lane in acc.iter_mut() {
        let c = _mm512_srli_epi64::<52>(*lane);
        // [prev lane 7, c lanes 0..6]: each lane's carry moves one digit up.
        let up = _mm512_alignr_epi64::<7>(c, prev);
        *lane = _mm512_add_epi64(_mm512_and_si512(*lane, mask), up);
        prev = c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monty::Monty;
    use num_bigint::RandBigInt;
    use rand::SeedableRng;

    fn odd_modulus(rng: &mut impl rand::Rng, bits: u64) -> BigUint {
        let mut m = rng.gen_biguint(bits);
        m.set_bit(0, true);
        m.set_bit(bits - 1, true);
        m
    }

    /// At the register boundaries (`52·8K − 2` bits is the largest modulus of `K`
    /// registers) and at the key sizes, products, squares, powers and a chain of 300
    /// products from `m − 1` equal the 64-bit path and `%` after every product.
    #[test]
    fn matches_the_limb_path_and_plain_reduction() {
        if !available() {
            return; // nothing to compare on this CPU
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(52);
        let mut sizes: Vec<u64> = (1..=MAX_REGISTERS as u64)
            .flat_map(|k| [416 * k - 3, 416 * k - 2, 416 * k - 1, 416 * k, 416 * k + 1])
            .collect();
        sizes.extend([1024, 2048, 4096, 8192]);
        for bits in sizes {
            let m = odd_modulus(&mut rng, bits);
            let fast = Monty::new(&m);
            let limb = Monty::new(&m).without_ifma();
            let a = rng.gen_biguint_below(&m);
            let b = &m - 1u32;
            let (fa, fb) = (fast.to_monty(&a), fast.to_monty(&b));
            let (la, lb) = (limb.to_monty(&a), limb.to_monty(&b));
            let mut fp = fa.clone();
            fast.mul_assign(&mut fp, &fb);
            let mut lp = la.clone();
            limb.mul_assign(&mut lp, &lb);
            assert_eq!(fast.residue(&fp), limb.residue(&lp), "{bits} bits");
            assert_eq!(fast.residue(&fp), (&a * &b) % &m, "{bits} bits");
            let mut fs = fb.clone();
            fast.square_assign(&mut fs);
            assert_eq!(fast.residue(&fs), (&b * &b) % &m, "{bits} bits");
            let e = rng.gen_biguint(bits.min(700));
            let el = e.to_u64_digits();
            assert_eq!(
                fast.residue(&fast.pow(&fa, &el)),
                a.modpow(&e, &m),
                "{bits} bits"
            );
            // A chain: the lazily reduced values must stay below 2m product after product.
            let (mut chain, mut want) = (fb.clone(), b.clone());
            for i in 0..300 {
                let (x, mx) = if i % 2 == 0 { (&b, &fb) } else { (&a, &fa) };
                fast.mul_assign(&mut chain, mx);
                want = (&want * x) % &m;
            }
            assert_eq!(fast.residue(&chain), want, "{bits} bits, chain");
            assert_eq!(fast.residue(&fast.one()), BigUint::from(1u8), "{bits} bits");
            assert_eq!(
                fast.residue(&fast.to_monty(&BigUint::default())),
                BigUint::default()
            );
        }
    }

    /// A carry that ripples through digits of `2^52 − 1` takes extra passes, and the
    /// value is kept.
    #[test]
    fn normalisation_ripples_through_full_digits() {
        if !available() {
            return;
        }
        use std::arch::x86_64::*;
        // lane 0 = 2^60 (a carry of 2^8 into lane 1), lanes 1..=14 = 2^52 − 1 − 2^8 + 1 and
        // 2^52 − 1: the carry ripples.
        let mut lanes = [MASK52; 16];
        lanes[0] = 1 << 60;
        lanes[1] = MASK52 - (1 << 8) + 1;
        lanes[15] = 0;
        let value = |l: &[u64]| {
            l.iter()
                .rev()
                .fold(BigUint::default(), |acc, &d| (acc << DIGIT_BITS) + d)
        };
        let want = value(&lanes);
        // SAFETY: available() holds, so the CPU has AVX-512F; the loads and stores stay
        // within `lanes`/`out` (16 lanes = two registers).
        let out = unsafe {
            let mut acc = [
                _mm512_loadu_si512(lanes.as_ptr().cast()),
                _mm512_loadu_si512(lanes.as_ptr().add(8).cast()),
            ];
            normalize(&mut acc);
            let mut out = [0u64; 16];
            _mm512_storeu_si512(out.as_mut_ptr().cast(), acc[0]);
            _mm512_storeu_si512(out.as_mut_ptr().add(8).cast(), acc[1]);
            out
        };
        assert!(out.iter().all(|&d| d <= MASK52), "{out:x?}");
        assert_eq!(value(&out), want);
        assert_eq!(out[15], 1, "the ripple reaches the top lane: {out:x?}");
    }
}
