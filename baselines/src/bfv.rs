//! CryptoNets-style encrypted inference of a [`SquareNet`] under BFV.
//!
//! Scheme: BFV (Brakerski 2012; Fan–Vercauteren 2012) as implemented by `fhe.rs`
//! (Tancrède Lepoint), ring `R_q = Z_q[X]/(X^N + 1)`, plaintext ring `R_t`. With a
//! prime `t ≡ 1 (mod 2N)`, `R_t ≅ Z_t^N` and a plaintext is a vector of `N` *slots*
//! on which ciphertext additions and multiplications act component-wise (SIMD).
//!
//! Layout (CryptoNets, Gilad-Bachrach et al., ICML 2016, §4): the batch is packed
//! *across* slots. For a batch `X` (`S × n`, `S ≤ N`), ciphertext `k` encrypts
//! feature `k` of every sample: slot `s` of `ct_k` holds `X[s, k]`. The network is then
//! evaluated exactly as on one sample, with the plaintext weights as scalars:
//!
//! ```text
//! ct_z1[j] = Σ_k W1[j,k] ⊙ ct_x[k] + b1[j]      (plaintext-scalar products, additions)
//! ct_a1[j] = Relin(ct_z1[j] ⊗ ct_z1[j])          (the only ct × ct product: depth 1)
//! ct_z2[c] = Σ_j W2[c,j] ⊙ ct_a1[j] + b2[c]
//! ```
//!
//! A scalar `w` is multiplied as the constant plaintext polynomial `|w|` (all slots
//! equal to `|w|`), and a negative weight is handled by *subtracting* the product:
//! encoding `w < 0` as `t − |w|` would multiply the ciphertext noise by `≈ t`, while
//! `|w|` multiplies it by `|w| ≤ 2^fw`. The constant plaintexts are encoded once per
//! distinct `|w|` (a few hundred for small `fw`) when the model is loaded; each
//! neuron's weighted sum is one lazy-reduction dot product
//! ([`fhe::bfv::dot_product_scalar`]) over its positive weights minus one over its
//! negative weights. After the square the ciphertexts are switched down one modulus
//! (if the chain has more than one), which makes the output layer and the returned
//! ciphertexts smaller.
//!
//! All arithmetic is modulo `t`, and the network is a polynomial in the inputs, so the
//! decrypted slots equal the exact integer logits as long as `2·|z2| < t`.
//! [`SquareNetBfv::new`] checks this against the worst case
//! [`SquareNet::output_bound`] for the agreed input bound and returns
//! [`BaselineError::PlaintextModulusTooSmall`] otherwise. Decoding is centred: a slot
//! value above `t/2` is negative. `fhe.rs` supports plaintext moduli up to 62 bits
//! and needs `t` below every ciphertext prime, so `t` has at most 61 bits here;
//! CryptoNets' CRT over several plaintext moduli is not needed for the small
//! fixed-point scales used here (Iris-size nets need about 43 bits at
//! `fx = fw = 6`, MNIST-size 784-300-10 nets about 36 bits at `fx = fw = 4`); the conv nets that
//! need it use [`crate::square_conv_crt`].
//!
//! Parameters (see [`BfvConfig`]): `N = 8192` with a 218-bit modulus chain (four
//! primes of 54–55 bits, so that `t` may have up to 53 bits: `fhe.rs` needs `t` below
//! every `q_i`; three 62-bit primes, 186 bits, for larger `t`), or `N = 16384` with
//! 438 bits. These are the limits of the HomomorphicEncryption.org standard
//! (Albrecht et al. 2018, Table 1,
//! ternary secret, classical 128-bit security: `log q ≤ 218` at `N = 8192`,
//! `log q ≤ 438` at `N = 16384`); `fhe.rs` samples the secret key from a centred
//! binomial distribution of variance 10, for which the standard's error-distribution
//! table allows 220 resp. 440 bits, so the ternary limits are the conservative ones.
//!
//! Roles: the client ([`BfvContext`]) owns the secret key, encrypts batches (secret-key
//! encryption: the client is the key owner, as in CryptoNets' inference setting) and
//! decrypts the logits. The server ([`SquareNetBfv`]) holds the plaintext model and
//! the public [`ServerKey`] (parameters and relinearization key).

use std::collections::BTreeMap;
use std::sync::Arc;

use fhe::bfv::{
    dot_product_scalar, BfvParameters, BfvParametersBuilder, Ciphertext, Encoding, Multiplicator,
    Plaintext, RelinearizationKey, SecretKey,
};
use fhe_traits::{FheDecoder, FheDecrypter, FheEncoder, FheEncrypter};
use gelunet_protocol::math::argmax;
use ndarray::Array2;
use rand09::SeedableRng;
use rand_chacha09::ChaCha20Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};
use crate::square_net::SquareNet;

/// The 128-bit-secure modulus chain that `fhe.rs` lists for `N = 8192`
/// (`BfvParameters::default_parameters_128`): five NTT-friendly primes of 43, 43, 44,
/// 44, 44 bits, `log q = 218`. Usable through [`BfvConfig::new`] with `t < 2^42`;
/// [`BfvConfig::n8192`] builds a four-prime chain instead (fewer RNS limbs, larger `t`).
pub const MODULI_8192: [u64; 5] = [
    0x7fffffd8001,
    0x7fffffc8001,
    0xfffffffc001,
    0xffffff6c001,
    0xfffffebc001,
];

/// The 128-bit-secure modulus chain that `fhe.rs` lists for `N = 16384`: nine primes
/// of 48–49 bits, `log q = 438`. Usable through [`BfvConfig::new`] with `t < 2^47`.
pub const MODULI_16384: [u64; 9] = [
    0xffffffffd8001,
    0xffffffffa0001,
    0xffffffff00001,
    0x1fffffff68001,
    0x1fffffff50001,
    0x1ffffffee8001,
    0x1ffffffea0001,
    0x1ffffffe88001,
    0x1ffffffe48001,
];

/// Largest plaintext modulus size supported by `fhe.rs` (bits).
pub const MAX_PLAINTEXT_BITS: u32 = 62;

/// Smallest plaintext modulus size used by [`BfvConfig::for_net`] (bits).
const MIN_PLAINTEXT_BITS: u32 = 17;

/// Maximal `log2 q` for 128-bit classical security, HomomorphicEncryption.org
/// standard (Albrecht et al. 2018), Table 1, ternary secret; `None` for other degrees.
#[must_use]
pub fn max_log_q_128(degree: usize) -> Option<u32> {
    match degree {
        1024 => Some(27),
        2048 => Some(54),
        4096 => Some(109),
        8192 => Some(218),
        16384 => Some(438),
        32768 => Some(881),
        _ => None,
    }
}

pub(crate) fn bits_u64(v: u64) -> u32 {
    64 - v.leading_zeros()
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    // The remainder is below m, so it fits in u64.
    #[allow(clippy::cast_possible_truncation)]
    let r = (u128::from(a) * u128::from(b) % u128::from(m)) as u64;
    r
}

fn pow_mod(mut b: u64, mut e: u64, m: u64) -> u64 {
    let mut r = 1 % m;
    b %= m;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_mod(r, b, m);
        }
        b = mul_mod(b, b, m);
        e >>= 1;
    }
    r
}

/// Deterministic Miller–Rabin for 64-bit integers (the first 12 prime bases suffice
/// below `3.3·10^24`).
#[must_use]
pub fn is_prime_u64(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    'outer: for a in BASES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// BFV parameters: ring degree `N`, ciphertext modulus chain, plaintext modulus `t`.
///
/// Constructed only through checked constructors: `N` is a power of two with a known
/// 128-bit security bound, `Σ log q_i` respects it, `t` is a prime `≡ 1 (mod 2N)`
/// (required for SIMD batching) of at most 62 bits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfvConfig {
    degree: usize,
    moduli: Vec<u64>,
    plaintext_modulus: u64,
}

impl BfvConfig {
    /// Checks and builds a configuration.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if the degree has no 128-bit bound, the
    /// modulus chain is empty or exceeds `max_log_q_128(degree)` bits, a modulus is
    /// not a prime `≡ 1 (mod 2N)`, or `t` is not a prime `≡ 1 (mod 2N)` of at most 62
    /// bits below every `q_i` (`fhe.rs` would otherwise fail or panic in key
    /// generation).
    pub fn new(degree: usize, moduli: Vec<u64>, plaintext_modulus: u64) -> Result<Self> {
        let bound = max_log_q_128(degree).ok_or_else(|| BaselineError::InvalidParameter {
            name: "degree",
            reason: format!("{degree} is not one of 1024, 2048, ..., 32768"),
        })?;
        let two_n = 2 * degree as u64;
        if moduli.is_empty() {
            return Err(BaselineError::InvalidParameter {
                name: "moduli",
                reason: "empty modulus chain".into(),
            });
        }
        let log_q: u32 = moduli.iter().map(|&q| bits_u64(q)).sum();
        if log_q > bound {
            return Err(BaselineError::InvalidParameter {
                name: "moduli",
                reason: format!(
                    "log q = {log_q} bits exceeds {bound}, the 128-bit bound for N = {degree}"
                ),
            });
        }
        for &q in &moduli {
            if !is_prime_u64(q) || q % two_n != 1 || bits_u64(q) > 62 {
                return Err(BaselineError::InvalidParameter {
                    name: "moduli",
                    reason: format!("{q} is not a prime ≡ 1 mod {two_n} below 2^62"),
                });
            }
        }
        let t = plaintext_modulus;
        if let Some(&q) = moduli.iter().find(|&&q| q <= t) {
            return Err(BaselineError::InvalidParameter {
                name: "plaintext_modulus",
                reason: format!("t = {t} must be smaller than every ciphertext modulus (q = {q})"),
            });
        }
        if !is_prime_u64(t) || t % two_n != 1 || bits_u64(t) > MAX_PLAINTEXT_BITS {
            return Err(BaselineError::InvalidParameter {
                name: "plaintext_modulus",
                reason: format!(
                    "t = {t} must be a prime ≡ 1 mod {two_n} (SIMD batching) of at most {MAX_PLAINTEXT_BITS} bits"
                ),
            });
        }
        Ok(Self {
            degree,
            moduli,
            plaintext_modulus,
        })
    }

    /// The largest prime `t < 2^t_bits` with `t ≡ 1 (mod 2·degree)`.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if `t_bits` is outside `10..=62` or no such
    /// prime has exactly `t_bits` bits.
    pub fn batching_prime(t_bits: u32, degree: usize) -> Result<u64> {
        if !(10..=MAX_PLAINTEXT_BITS).contains(&t_bits) {
            return Err(BaselineError::InvalidParameter {
                name: "t_bits",
                reason: format!("{t_bits} is outside 10..={MAX_PLAINTEXT_BITS}"),
            });
        }
        fhe_math::zq::primes::generate_prime(t_bits as usize, 2 * degree as u64, 1u64 << t_bits)
            .ok_or_else(|| BaselineError::InvalidParameter {
                name: "t_bits",
                reason: format!("no {t_bits}-bit prime ≡ 1 mod {}", 2 * degree),
            })
    }

    /// Distinct NTT-friendly primes `q ≡ 1 (mod 2·degree)` of the given bit sizes
    /// (the largest such primes below `2^size`).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if a size is outside `10..=62` or the primes
    /// of a size run out.
    pub fn ntt_primes(degree: usize, sizes: &[u32]) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::with_capacity(sizes.len());
        for &size in sizes {
            if !(10..=62).contains(&size) {
                return Err(BaselineError::InvalidParameter {
                    name: "moduli_sizes",
                    reason: format!("{size} is outside 10..=62"),
                });
            }
            let mut upper = 1u64 << size;
            loop {
                let p =
                    fhe_math::zq::primes::generate_prime(size as usize, 2 * degree as u64, upper)
                        .ok_or_else(|| BaselineError::InvalidParameter {
                        name: "moduli_sizes",
                        reason: format!("ran out of {size}-bit primes ≡ 1 mod {}", 2 * degree),
                    })?;
                if out.contains(&p) {
                    upper = p;
                } else {
                    out.push(p);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Bit sizes of the modulus chain used by [`BfvConfig::with_degree`]: the fewest
    /// primes (at most 62 bits each) that use the whole 128-bit budget
    /// `max_log_q_128(degree)`, all larger than `t` (`fhe.rs` needs `t < q_i`); if
    /// `t` has 54 bits or more at `N = 8192` (`t_bits + 1 > 218/4`), the chain is three
    /// 62-bit primes (186 bits), and likewise seven 62-bit primes at `N = 16384`.
    fn chain_sizes(degree: usize, t_bits: u32) -> Result<Vec<u32>> {
        let budget = max_log_q_128(degree).ok_or_else(|| BaselineError::InvalidParameter {
            name: "degree",
            reason: format!("{degree} is not one of 1024, 2048, ..., 32768"),
        })?;
        let mut k = budget.div_ceil(62);
        while k > 0 && (budget / k).min(62) <= t_bits {
            k -= 1;
        }
        if k == 0 {
            return Err(BaselineError::InvalidParameter {
                name: "t_bits",
                reason: format!(
                    "no 128-bit secure chain at N = {degree} has primes above {t_bits} bits"
                ),
            });
        }
        let base = (budget / k).min(62);
        let extra = if budget / k >= 62 { 0 } else { budget % k };
        Ok((0..k).map(|i| base + u32::from(i < extra)).collect())
    }

    /// Degree `N`, a 128-bit-secure modulus chain sized for `t` (see below), and the
    /// largest batching prime `t < 2^t_bits`.
    ///
    /// The chain uses the fewest primes of at most 62 bits whose sizes add up to the
    /// standard's limit `max_log_q_128(N)` and each exceed `t_bits` (`fhe.rs` requires
    /// `t < q_i`): at `N = 8192` four primes of 54–55 bits (218 bits) for `t` up to
    /// 53 bits, three 62-bit primes (186 bits) above; at `N = 16384` eight primes of
    /// 54–55 bits (438 bits) for `t` up to 53 bits, seven 62-bit primes (434 bits)
    /// above.
    ///
    /// # Errors
    /// As [`BfvConfig::batching_prime`] and [`BfvConfig::new`].
    pub fn with_degree(degree: usize, t_bits: u32) -> Result<Self> {
        let t = Self::batching_prime(t_bits, degree)?;
        let sizes = Self::chain_sizes(degree, t_bits)?;
        Self::new(degree, Self::ntt_primes(degree, &sizes)?, t)
    }

    /// [`BfvConfig::with_degree`] at `N = 8192` (one square plus the linear layers).
    ///
    /// # Errors
    /// As [`BfvConfig::with_degree`].
    pub fn n8192(t_bits: u32) -> Result<Self> {
        Self::with_degree(8192, t_bits)
    }

    /// [`BfvConfig::with_degree`] at `N = 16384` (more depth and noise headroom,
    /// about 2–3× slower per operation).
    ///
    /// # Errors
    /// As [`BfvConfig::with_degree`].
    pub fn n16384(t_bits: u32) -> Result<Self> {
        Self::with_degree(16384, t_bits)
    }

    /// `N = 8192` with the smallest batching prime (at least 17 bits) that holds the
    /// outputs of `net` for inputs bounded by `input_bound` (a smaller `t` leaves more
    /// noise budget).
    ///
    /// # Errors
    /// [`BaselineError::PlaintextModulusTooSmall`] if even a 61-bit `t` is too small
    /// (CRT over several plaintext moduli would be needed); errors of
    /// [`SquareNet::output_bound`].
    pub fn for_net(net: &SquareNet, input_bound: i64) -> Result<Self> {
        let bound = net.output_bound(input_bound)?;
        let needed = net.required_plaintext_bits(input_bound)?;
        // t < q_i ≤ 2^62 leaves at most 61 bits.
        for bits in needed.max(MIN_PLAINTEXT_BITS)..MAX_PLAINTEXT_BITS {
            let t = Self::batching_prime(bits, 8192)?;
            if bound.checked_mul(2).is_some_and(|b2| b2 < u128::from(t)) {
                return Self::n8192(bits);
            }
        }
        Err(BaselineError::PlaintextModulusTooSmall {
            needed_bits: needed,
            t_bits: MAX_PLAINTEXT_BITS - 1,
        })
    }

    /// Ring degree `N` (number of SIMD slots).
    #[must_use]
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Ciphertext modulus chain `q_0, …, q_L`.
    #[must_use]
    pub fn moduli(&self) -> &[u64] {
        &self.moduli
    }

    /// Plaintext modulus `t`.
    #[must_use]
    pub fn plaintext_modulus(&self) -> u64 {
        self.plaintext_modulus
    }

    /// Builds the `fhe.rs` parameters.
    pub(crate) fn build(&self) -> Result<Arc<BfvParameters>> {
        Ok(BfvParametersBuilder::new()
            .set_degree(self.degree)
            .set_moduli(&self.moduli)
            .set_plaintext_modulus(self.plaintext_modulus)
            .build_arc()?)
    }

    /// Summary of the parameters for reports.
    #[must_use]
    pub fn describe(&self) -> BfvDescription {
        let moduli_bits: Vec<u32> = self.moduli.iter().map(|&q| bits_u64(q)).collect();
        let log_q = moduli_bits.iter().sum();
        BfvDescription {
            scheme: "BFV (fhe.rs 0.1.1), SIMD batching, samples across slots".into(),
            degree: self.degree,
            slots: self.degree,
            moduli_bits,
            log_q,
            max_log_q_128: max_log_q_128(self.degree).unwrap_or(0),
            plaintext_modulus: self.plaintext_modulus,
            t_bits: bits_u64(self.plaintext_modulus),
            security:
                "128-bit classical (HomomorphicEncryption.org standard, ternary-secret table)"
                    .into(),
        }
    }
}

/// The parameter set, as reported in benchmarks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfvDescription {
    /// Scheme and library.
    pub scheme: String,
    /// Ring degree `N`.
    pub degree: usize,
    /// SIMD slots per ciphertext (`= N`).
    pub slots: usize,
    /// Bit sizes of the ciphertext moduli `q_i`.
    pub moduli_bits: Vec<u32>,
    /// `log2 q = Σ log2 q_i`.
    pub log_q: u32,
    /// The standard's 128-bit limit on `log2 q` for this degree.
    pub max_log_q_128: u32,
    /// Plaintext modulus `t`.
    pub plaintext_modulus: u64,
    /// Bits of `t`.
    pub t_bits: u32,
    /// Security claim.
    pub security: String,
}

impl std::fmt::Display for BfvDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: N = {}, log q = {} bits {:?} (128-bit limit {}), t = {} ({} bits); {}",
            self.scheme,
            self.degree,
            self.log_q,
            self.moduli_bits,
            self.max_log_q_128,
            self.plaintext_modulus,
            self.t_bits,
            self.security
        )
    }
}

/// Public evaluation material handed to the server: the parameters and the
/// relinearization key. It reveals nothing about the secret key beyond the RLWE
/// assumption.
#[derive(Clone, Debug)]
pub struct ServerKey {
    pub(crate) config: BfvConfig,
    pub(crate) params: Arc<BfvParameters>,
    pub(crate) rk: RelinearizationKey,
    /// Relinearization keys for ciphertexts at levels `1, 2, …` (after modulus
    /// switching), as many as [`BfvContext::prepare_levels`] generated.
    pub(crate) level_rks: Vec<RelinearizationKey>,
}

impl ServerKey {
    /// The parameter configuration.
    #[must_use]
    pub fn config(&self) -> &BfvConfig {
        &self.config
    }
}

/// The client: BFV parameters, secret key, relinearization key and a CSPRNG.
pub struct BfvContext {
    pub(crate) config: BfvConfig,
    pub(crate) params: Arc<BfvParameters>,
    pub(crate) sk: SecretKey,
    pub(crate) rk: RelinearizationKey,
    /// Relinearization keys for levels `1, 2, …` ([`BfvContext::prepare_levels`]).
    pub(crate) level_rks: Vec<RelinearizationKey>,
    pub(crate) rng: ChaCha20Rng,
    /// Encryptions of zero computed ahead of time ([`BfvContext::precompute_encryptions`]),
    /// used first and once each.
    pub(crate) zeros: Vec<Ciphertext>,
}

impl std::fmt::Debug for BfvContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfvContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a column's encryption randomness comes from.
enum Randomness {
    /// A precomputed encryption of zero.
    Zero(Ciphertext),
    /// A seed for a fresh encryption.
    Seed([u8; 32]),
}

/// A batch of `S` samples with `n` features, encrypted as `n` ciphertexts (ciphertext
/// `k` holds feature `k` of sample `s` in slot `s`; slots `S..N` hold 0).
#[derive(Clone, Debug)]
pub struct EncryptedBatch {
    pub(crate) cts: Vec<Ciphertext>,
    pub(crate) samples: usize,
    pub(crate) input_bound: i64,
    pub(crate) params: Arc<BfvParameters>,
}

impl EncryptedBatch {
    /// Checks that a server sized for `features` inputs of at most `input_bound`, with
    /// BFV parameters `params`, can evaluate this batch.
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] for another number of features;
    /// [`BaselineError::InputOutOfRange`] for a batch encrypted for a larger input bound;
    /// [`BaselineError::InvalidParameter`] for a batch under other parameters.
    pub(crate) fn check_for(
        &self,
        features: usize,
        input_bound: i64,
        params: &Arc<BfvParameters>,
    ) -> Result<()> {
        if self.num_features() != features {
            return Err(BaselineError::ShapeMismatch {
                what: "encrypted batch features",
                expected: vec![features],
                got: vec![self.num_features()],
            });
        }
        if self.input_bound > input_bound {
            return Err(BaselineError::InputOutOfRange {
                value: self.input_bound,
                bound: input_bound,
            });
        }
        // `fhe.rs` asserts that operands share the same parameter object; check it here
        // so a foreign batch is an error, not a panic.
        if !Arc::ptr_eq(&self.params, params) {
            return Err(BaselineError::InvalidParameter {
                name: "batch",
                reason: "the batch was encrypted under other BFV parameters than the server key's"
                    .into(),
            });
        }
        Ok(())
    }

    /// Number of samples `S`.
    #[must_use]
    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Number of features `n` (= number of ciphertexts).
    #[must_use]
    pub fn num_features(&self) -> usize {
        self.cts.len()
    }

    /// The agreed bound on `|x|` the batch was checked against.
    #[must_use]
    pub fn input_bound(&self) -> i64 {
        self.input_bound
    }

    /// The ciphertexts, one per feature.
    #[must_use]
    pub fn ciphertexts(&self) -> &[Ciphertext] {
        &self.cts
    }
}

/// The encrypted logits: one ciphertext per class, slot `s` holding `z2[s, c]`.
#[derive(Clone, Debug)]
pub struct EncryptedOutput {
    pub(crate) cts: Vec<Ciphertext>,
    pub(crate) samples: usize,
}

impl EncryptedOutput {
    /// Number of samples `S`.
    #[must_use]
    pub fn num_samples(&self) -> usize {
        self.samples
    }

    /// Number of classes (= number of ciphertexts).
    #[must_use]
    pub fn num_classes(&self) -> usize {
        self.cts.len()
    }

    /// The ciphertexts, one per class.
    #[must_use]
    pub fn ciphertexts(&self) -> &[Ciphertext] {
        &self.cts
    }
}

impl BfvContext {
    /// Generates the secret and relinearization keys, with a ChaCha20 CSPRNG seeded
    /// by `seed` (deterministic keys for tests and benchmarks; `fhe.rs` draws the
    /// public part `a` of each fresh ciphertext from its own thread RNG).
    ///
    /// # Errors
    /// [`BaselineError::Fhe`] if `fhe.rs` rejects the parameters.
    pub fn new(config: &BfvConfig, seed: [u8; 32]) -> Result<Self> {
        let params = config.build()?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let sk = SecretKey::random(&params, &mut rng);
        let rk = RelinearizationKey::new(&sk, &mut rng)?;
        Ok(Self {
            config: config.clone(),
            params,
            sk,
            rk,
            level_rks: Vec::new(),
            rng,
            zeros: Vec::new(),
        })
    }

    /// Computes `count` encryptions of zero now (rayon), for the next
    /// [`BfvContext::encrypt_batch`] calls: a column then costs one encoding and one
    /// polynomial addition (`Enc(0) + Δ·m` is an encryption of `m` with the same noise
    /// distribution as a fresh one). The BFV counterpart of the Paillier client's
    /// precomputed obfuscators, so that "online" latencies compare like with like.
    ///
    /// # Errors
    /// [`BaselineError::Fhe`] on encryption failure.
    pub fn precompute_encryptions(&mut self, count: usize) -> Result<()> {
        let zero = Plaintext::try_encode(&[0i64][..], Encoding::simd(), &self.params)?;
        let seeds: Vec<[u8; 32]> = (0..count)
            .map(|_| {
                let mut seed = [0u8; 32];
                rand09::RngCore::fill_bytes(&mut self.rng, &mut seed);
                seed
            })
            .collect();
        let fresh = seeds
            .par_iter()
            .map(|seed| {
                let mut rng = ChaCha20Rng::from_seed(*seed);
                Ok(self.sk.try_encrypt(&zero, &mut rng)?)
            })
            .collect::<Result<Vec<_>>>()?;
        self.zeros.extend(fresh);
        Ok(())
    }

    /// Encryptions of zero ready for the next batches.
    #[must_use]
    pub fn encryptions_ready(&self) -> usize {
        self.zeros.len()
    }

    /// As [`BfvContext::new`] with a seed from the operating system.
    ///
    /// # Errors
    /// As [`BfvContext::new`].
    pub fn from_entropy(config: &BfvConfig) -> Result<Self> {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::new(config, seed)
    }

    /// The parameter configuration.
    #[must_use]
    pub fn config(&self) -> &BfvConfig {
        &self.config
    }

    /// Summary of the parameters for reports.
    #[must_use]
    pub fn describe(&self) -> BfvDescription {
        self.config.describe()
    }

    /// SIMD slots per ciphertext (`= N`).
    #[must_use]
    pub fn slots(&self) -> usize {
        self.params.degree()
    }

    /// The evaluation material for the server.
    #[must_use]
    pub fn server_key(&self) -> ServerKey {
        ServerKey {
            config: self.config.clone(),
            params: self.params.clone(),
            rk: self.rk.clone(),
            level_rks: self.level_rks.clone(),
        }
    }

    /// Generates relinearization keys for ciphertexts at levels `1..=levels` (each
    /// with its key at the ciphertext's own level, so that a squaring after `k`
    /// modulus switches runs on the remaining moduli only), for the next
    /// [`BfvContext::server_key`]. Keys already generated are kept.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if level `levels` has fewer than two moduli
    /// (key switching needs two); [`BaselineError::Fhe`] on key generation failure.
    pub fn prepare_levels(&mut self, levels: usize) -> Result<()> {
        if levels + 1 >= self.config.moduli.len() && levels > 0 {
            return Err(BaselineError::InvalidParameter {
                name: "levels",
                reason: format!(
                    "relinearization at level {levels} needs at least {} moduli, the chain has {}",
                    levels + 2,
                    self.config.moduli.len()
                ),
            });
        }
        while self.level_rks.len() < levels {
            let level = self.level_rks.len() + 1;
            let rk = RelinearizationKey::new_leveled(&self.sk, level, level, &mut self.rng)?;
            self.level_rks.push(rk);
        }
        Ok(())
    }

    /// Encrypts one slot vector (at most `N` values, the rest zero).
    pub(crate) fn encrypt_slots(&mut self, values: &[i64]) -> Result<Ciphertext> {
        let pt = Plaintext::try_encode(values, Encoding::simd(), &self.params)?;
        Ok(self.sk.try_encrypt(&pt, &mut self.rng)?)
    }

    /// Decrypts one ciphertext to its centred slot values (`(−t/2, t/2]`).
    pub(crate) fn decrypt_slots(&self, ct: &Ciphertext) -> Result<Vec<i64>> {
        let pt = self.sk.try_decrypt(ct)?;
        Ok(Vec::<i64>::try_decode(&pt, Encoding::simd())?)
    }

    /// Encrypts a batch `samples` (`S × n`, integers at `2^fx`, `S ≤ N`) as `n`
    /// ciphertexts, feature-major (CryptoNets packing). Every `|x|` must be at most
    /// `input_bound`, the public bound the server sized `t` for.
    ///
    /// # Errors
    /// [`BaselineError::TooManySamples`] if `S > N`, [`BaselineError::ShapeMismatch`]
    /// for an empty batch, [`BaselineError::InputOutOfRange`] if a value exceeds the
    /// bound, [`BaselineError::InvalidParameter`] if the bound is negative or not below
    /// `t/2`, [`BaselineError::Fhe`] on encryption failure.
    pub fn encrypt_batch(
        &mut self,
        samples: &Array2<i64>,
        input_bound: i64,
    ) -> Result<EncryptedBatch> {
        let (s_count, n) = samples.dim();
        if s_count == 0 || n == 0 {
            return Err(BaselineError::ShapeMismatch {
                what: "batch (non-empty)",
                expected: vec![1, 1],
                got: vec![s_count, n],
            });
        }
        if s_count > self.slots() {
            return Err(BaselineError::TooManySamples {
                got: s_count,
                slots: self.slots(),
            });
        }
        if input_bound < 0 || input_bound.unsigned_abs() >= self.params.plaintext() / 2 {
            return Err(BaselineError::InvalidParameter {
                name: "input_bound",
                reason: format!("{input_bound} must be in [0, t/2)"),
            });
        }
        if let Some(&v) = samples
            .iter()
            .find(|v| v.unsigned_abs() > input_bound.unsigned_abs())
        {
            return Err(BaselineError::InputOutOfRange {
                value: v,
                bound: input_bound,
            });
        }
        // One seed per column from the context's generator, then the columns in parallel
        // (rayon), so the ciphertexts do not depend on the number of threads.
        // Precomputed encryptions of zero first; for the other columns one seed per column
        // from the context's generator. Columns run in parallel (rayon), so the ciphertexts
        // do not depend on the number of threads.
        let ready = self.zeros.len().min(n);
        let mut zeros = self.zeros.drain(..ready);
        let columns: Vec<(Vec<i64>, Randomness)> = samples
            .columns()
            .into_iter()
            .map(|col| {
                let randomness = match zeros.next() {
                    Some(zero) => Randomness::Zero(zero),
                    None => {
                        let mut seed = [0u8; 32];
                        rand09::RngCore::fill_bytes(&mut self.rng, &mut seed);
                        Randomness::Seed(seed)
                    }
                };
                (col.to_vec(), randomness)
            })
            .collect();
        drop(zeros);
        let cts = columns
            .par_iter()
            .map(|(values, randomness)| {
                let pt = Plaintext::try_encode(&values[..], Encoding::simd(), &self.params)?;
                match randomness {
                    Randomness::Zero(zero) => Ok(zero + &pt),
                    Randomness::Seed(seed) => {
                        let mut rng = ChaCha20Rng::from_seed(*seed);
                        Ok(self.sk.try_encrypt(&pt, &mut rng)?)
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EncryptedBatch {
            cts,
            samples: s_count,
            input_bound,
            params: self.params.clone(),
        })
    }

    /// Decrypts the logits: `S × c` exact integers at `2^(2fx+3fw)` (centred decoding).
    ///
    /// # Errors
    /// [`BaselineError::Fhe`] if a ciphertext does not belong to these parameters.
    pub fn decrypt_logits(&self, out: &EncryptedOutput) -> Result<Array2<i128>> {
        let mut z = Array2::<i128>::zeros((out.samples, out.cts.len()));
        for (c, ct) in out.cts.iter().enumerate() {
            let v = self.decrypt_slots(ct)?;
            for (s, &x) in v.iter().take(out.samples).enumerate() {
                z[[s, c]] = i128::from(x);
            }
        }
        Ok(z)
    }

    /// Decrypts the logits and returns the argmax per sample (first maximal class on
    /// ties, as [`SquareNet::predict_plain`]).
    ///
    /// # Errors
    /// As [`BfvContext::decrypt_logits`].
    pub fn predict(&self, out: &EncryptedOutput) -> Result<Vec<usize>> {
        let z = self.decrypt_logits(out)?;
        Ok(z.outer_iter().map(argmax).collect())
    }
}

/// A weighted sum `Σ_k w_k·ct_k`, split by sign: `(input index, plaintext index)`
/// pairs for the positive and for the negative weights (zero weights are dropped).
#[derive(Clone, Debug, Default)]
struct SignedRow {
    pos: Vec<(usize, usize)>,
    neg: Vec<(usize, usize)>,
}

/// The server: a [`SquareNet`] prepared for encrypted inference.
///
/// Holds the constant plaintexts of every distinct `|w|` of each layer (layer 1 at the
/// top level, layer 2 at the level after the square), the signed row structure and
/// the multiplication strategy (tensor, scale, relinearize, switch down).
#[derive(Debug)]
pub struct SquareNetBfv {
    net: SquareNet,
    config: BfvConfig,
    params: Arc<BfvParameters>,
    mult: Multiplicator,
    level2: usize,
    pts1: Vec<Plaintext>,
    pts2: Vec<Plaintext>,
    rows1: Vec<SignedRow>,
    rows2: Vec<SignedRow>,
    input_bound: i64,
    output_bound: u128,
}

/// Encodes the constant plaintext of every distinct non-zero `|w|` in `w` and the
/// signed rows.
fn encode_layer(
    w: &Array2<i64>,
    level: usize,
    params: &Arc<BfvParameters>,
) -> Result<(Vec<Plaintext>, Vec<SignedRow>)> {
    let t = params.plaintext();
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut pts = Vec::new();
    let mut rows = Vec::with_capacity(w.nrows());
    for row in w.outer_iter() {
        let mut r = SignedRow::default();
        for (k, &v) in row.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let a = v.unsigned_abs() % t;
            let p = match index.get(&a) {
                Some(&p) => p,
                None => {
                    let pt =
                        Plaintext::try_encode(&[a][..], Encoding::poly_at_level(level), params)?;
                    pts.push(pt);
                    index.insert(a, pts.len() - 1);
                    pts.len() - 1
                }
            };
            if v > 0 {
                r.pos.push((k, p));
            } else {
                r.neg.push((k, p));
            }
        }
        rows.push(r);
    }
    Ok((pts, rows))
}

impl SquareNetBfv {
    /// Prepares `net` for encrypted inference on inputs with `|x| ≤ input_bound`.
    ///
    /// # Errors
    /// [`BaselineError::PlaintextModulusTooSmall`] if `2·max|z2| ≥ t` for the worst
    /// case over the input box; [`BaselineError::InvalidParameter`] for a negative
    /// bound; [`BaselineError::Overflow`] if the bound leaves `u128`;
    /// [`BaselineError::Fhe`] if encoding fails.
    pub fn new(net: &SquareNet, key: &ServerKey, input_bound: i64) -> Result<Self> {
        let params = key.params.clone();
        let t = params.plaintext();
        let output_bound = net.output_bound(input_bound)?;
        let needed_bits = net.required_plaintext_bits(input_bound)?;
        if output_bound
            .checked_mul(2)
            .is_none_or(|b| b >= u128::from(t))
        {
            return Err(BaselineError::PlaintextModulusTooSmall {
                needed_bits,
                t_bits: bits_u64(t),
            });
        }
        let mut mult = Multiplicator::default(&key.rk)?;
        let level2 = if params.max_level() > 0 {
            mult.enable_mod_switching()?;
            1
        } else {
            0
        };
        let (pts1, rows1) = encode_layer(net.w1(), 0, &params)?;
        let (pts2, rows2) = encode_layer(net.w2(), level2, &params)?;
        Ok(Self {
            net: net.clone(),
            config: key.config.clone(),
            params,
            mult,
            level2,
            pts1,
            pts2,
            rows1,
            rows2,
            input_bound,
            output_bound,
        })
    }

    /// The plaintext model.
    #[must_use]
    pub fn net(&self) -> &SquareNet {
        &self.net
    }

    /// Worst-case `|z2|` for the agreed input bound (`2·bound < t` holds).
    #[must_use]
    pub fn output_bound(&self) -> u128 {
        self.output_bound
    }

    /// Number of distinct constant plaintexts encoded for the two layers.
    #[must_use]
    pub fn encoded_plaintexts(&self) -> (usize, usize) {
        (self.pts1.len(), self.pts2.len())
    }

    /// Summary of the parameters for reports.
    #[must_use]
    pub fn describe(&self) -> BfvDescription {
        self.config.describe()
    }

    /// `Σ_k w_k·ct_k + b` for one neuron, at `level`.
    fn neuron(
        &self,
        row: &SignedRow,
        pts: &[Plaintext],
        cts: &[Ciphertext],
        bias: i64,
        level: usize,
    ) -> Result<Ciphertext> {
        let dot = |pairs: &[(usize, usize)]| -> Result<Option<Ciphertext>> {
            if pairs.is_empty() {
                return Ok(None);
            }
            let ci = pairs.iter().map(|&(k, _)| &cts[k]);
            let pi = pairs.iter().map(|&(_, p)| &pts[p]);
            Ok(Some(dot_product_scalar(ci, pi)?))
        };
        let pos = dot(&row.pos)?;
        let neg = dot(&row.neg)?;
        let t = self.params.plaintext();
        let b = bias.unsigned_abs() % t;
        let bias_pt = if b == 0 {
            None
        } else {
            Some(Plaintext::try_encode(
                &[b][..],
                Encoding::poly_at_level(level),
                &self.params,
            )?)
        };
        // Start from whichever term exists; a neuron with only zero weights still
        // needs a ciphertext, built as ct_0 · 0 (an encryption of 0).
        let mut acc = match (pos, neg) {
            (Some(p), Some(n)) => &p - &n,
            (Some(p), None) => p,
            (None, Some(n)) => -n,
            (None, None) => {
                let c0 = cts.first().ok_or(BaselineError::ShapeMismatch {
                    what: "ciphertexts (non-empty)",
                    expected: vec![1],
                    got: vec![0],
                })?;
                c0 * &Plaintext::zero(Encoding::poly_at_level(level), &self.params)?
            }
        };
        if let Some(pt) = bias_pt {
            if bias > 0 {
                acc += &pt;
            } else {
                acc -= &pt;
            }
        }
        Ok(acc)
    }

    /// Encrypted forward pass (server side, no secret key): `n` input ciphertexts →
    /// `h` squared hidden ciphertexts → `c` output ciphertexts.
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if the batch does not have `n` features;
    /// [`BaselineError::InputOutOfRange`] if the batch was encrypted for a larger input
    /// bound than the model was sized for; [`BaselineError::Fhe`] on a homomorphic
    /// failure (e.g. ciphertexts under other parameters).
    pub fn infer(&self, batch: &EncryptedBatch) -> Result<EncryptedOutput> {
        batch.check_for(self.net.inputs(), self.input_bound, &self.params)?;
        // Neurons in parallel (rayon), as the GELU-Net server computes its rows.
        let b1: Vec<i64> = self.net.b1().iter().copied().collect();
        let hidden = self
            .rows1
            .par_iter()
            .zip(b1.par_iter())
            .map(|(row, &b)| {
                let z = self.neuron(row, &self.pts1, &batch.cts, b, 0)?;
                Ok(self.mult.multiply(&z, &z)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let b2: Vec<i64> = self.net.b2().iter().copied().collect();
        let out = self
            .rows2
            .par_iter()
            .zip(b2.par_iter())
            .map(|(row, &b)| self.neuron(row, &self.pts2, &hidden, b, self.level2))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncryptedOutput {
            cts: out,
            samples: batch.samples,
        })
    }
}
