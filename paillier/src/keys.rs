//! Public and private keys, key generation, encryption and decryption.

use std::fmt;
use std::sync::{Arc, OnceLock};

use num_bigint::{BigInt, BigUint, RandBigInt, Sign};
use num_integer::Integer;
use num_prime::RandPrime;
use num_traits::{One, Zero};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::arith::{wipe_biguint, Modulus};
use crate::multiexp::FixedBaseTable;
use crate::{Ciphertext, Error, Result};

/// The smallest modulus accepted outside the `*_insecure_for_tests` constructors, in bits
/// (NIST SP 800-57: 2048-bit factoring moduli for 112-bit security).
pub const MIN_KEY_BITS: u64 = 2048;

/// The largest modulus accepted anywhere, in bits: a peer's public key, a key file or a
/// key to generate above it is refused before any computation of its size (a stranger's
/// million-bit "modulus" would otherwise cost minutes of `N²` arithmetic).
pub const MAX_KEY_BITS: u64 = 4096;

/// Refuses moduli above [`MAX_KEY_BITS`].
fn check_max_bits(bits: u64) -> Result<()> {
    if bits > MAX_KEY_BITS {
        return Err(Error::KeyTooLarge {
            bits,
            max_bits: MAX_KEY_BITS,
        });
    }
    Ok(())
}

/// The smallest modulus the `*_insecure_for_tests` constructors accept, in bits.
pub const MIN_TEST_KEY_BITS: u64 = 128;

/// Key sizes [`PrivateKey::generate`] accepts, in bits of `N`.
pub const SUPPORTED_KEY_BITS: [u64; 3] = [2048, 3072, 4096];

/// Whether this build has the test-only keys below [`MIN_KEY_BITS`]: the `hazmat` cargo
/// feature, which also exposes the `*_insecure_for_tests` constructors. Without it the
/// `*_for_run` constructors refuse small keys with [`Error::TestKeysUnavailable`] even
/// when a run allows test keys, so a shipping build has no small-key path.
pub const TEST_KEYS_AVAILABLE: bool = cfg!(feature = "hazmat");

/// Whether a key of `bits` bits takes the test-only path: `Ok(false)` for the checked
/// constructors (which refuse `bits < MIN_KEY_BITS` with [`Error::KeyTooSmall`]),
/// `Ok(true)` for the test-only ones when the run allows them and `available`.
///
/// # Errors
/// [`Error::TestKeysUnavailable`] for a test-size key that the run allows but the build
/// cannot make (`available` false).
fn test_key_path(bits: u64, allow_test_keys: bool, available: bool) -> Result<bool> {
    if bits >= MIN_KEY_BITS || !allow_test_keys {
        Ok(false)
    } else if available {
        Ok(true)
    } else {
        Err(Error::TestKeysUnavailable { bits })
    }
}

/// A short public fingerprint of a public key: the first 8 bytes of `SHA-256(N)`
/// (big-endian bytes of `N`). Ciphertexts carry it so that mixing keys is an error.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub(crate) fn of(n: &BigUint) -> Self {
        let digest = Sha256::digest(n.to_bytes_be());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The random exponent `α` of a Damgård–Jurik–Nielsen obfuscator, `|N|/2` bits.
fn alpha_bits(n_bits: u64) -> u64 {
    n_bits / 2
}

/// Window width of the obfuscator table: `⌈|N|/2 / w⌉` multiplications per encryption,
/// `⌈|N|/2 / w⌉ · (2^w − 1)` entries (about 16 MiB at 2048 bits with `w = 8`).
fn obfuscator_window(n_bits: u64) -> u32 {
    if n_bits <= 2048 {
        8
    } else {
        7
    }
}

struct PublicInner {
    n: BigUint,
    n_squared: BigUint,
    /// `(N − 1) / 2`, the largest magnitude of a signed plaintext.
    max_signed: BigUint,
    /// `h_N = (−x²)^N mod N²` (Damgård–Jurik–Nielsen 2010 §4, Jurik's thesis §2.3.1).
    h_n: BigUint,
    id: KeyId,
    modulus: Modulus,
    table: OnceLock<FixedBaseTable>,
}

/// A Paillier public key with `g = N + 1`: `Enc(m; r) = (1 + m·N) · r^N mod N²`
/// (Paillier 1999 §3, with the simplification of Damgård–Jurik 2001).
///
/// Holds `N`, `N²`, the fixed DJN base `h_N` and, built on first use, the fixed-base window
/// table that makes each obfuscator `h_N^α` about `|N|/16` modular multiplications.
/// Cloning is cheap (the precomputations are shared).
///
/// Serialized (serde) as `N` alone: a hex string in human-readable formats, big-endian
/// bytes otherwise; deserializing refuses moduli below [`MIN_KEY_BITS`].
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<PublicInner>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .field("id", &self.inner.id)
            .finish()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.n == other.inner.n
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    /// The public key with modulus `n`.
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] below [`MIN_KEY_BITS`]; [`Error::KeyTooLarge`] above
    /// [`MAX_KEY_BITS`]; [`Error::InvalidModulus`] for an even `n`.
    pub fn from_n(n: BigUint) -> Result<Self> {
        Self::checked(n, MIN_KEY_BITS)
    }

    /// Like [`PublicKey::from_n`] but accepts moduli down to [`MIN_TEST_KEY_BITS`]: only for
    /// tests and the explicitly insecure modes that want small, fast keys (`hazmat`
    /// feature).
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] below [`MIN_TEST_KEY_BITS`]; [`Error::InvalidModulus`] for an
    /// even `n`.
    #[cfg(feature = "hazmat")]
    pub fn from_n_insecure_for_tests(n: BigUint) -> Result<Self> {
        Self::checked(n, MIN_TEST_KEY_BITS)
    }

    /// A peer's public key in a run: [`PublicKey::from_n`], or, when the run allows test
    /// keys (`allow_test_keys`, e.g. `InsecureOptions::allow_test_keys` of the server
    /// role) and `N` is below [`MIN_KEY_BITS`], the test-only minimum
    /// [`MIN_TEST_KEY_BITS`] — in builds with the `hazmat` feature only
    /// ([`TEST_KEYS_AVAILABLE`]).
    ///
    /// # Errors
    /// [`Error::TestKeysUnavailable`] for a test-size `N` allowed by the run in a build
    /// without `hazmat`; otherwise the errors of [`PublicKey::from_n`] (with the smaller
    /// minimum for allowed test keys).
    pub fn from_n_for_run(n: BigUint, allow_test_keys: bool) -> Result<Self> {
        if test_key_path(n.bits(), allow_test_keys, TEST_KEYS_AVAILABLE)? {
            Self::checked(n, MIN_TEST_KEY_BITS)
        } else {
            Self::from_n(n)
        }
    }

    fn checked(n: BigUint, min_bits: u64) -> Result<Self> {
        check_max_bits(n.bits())?;
        if n.bits() < min_bits {
            return Err(Error::KeyTooSmall {
                bits: n.bits(),
                min_bits,
            });
        }
        if n.is_even() {
            return Err(Error::InvalidModulus {
                reason: "N is even",
            });
        }
        Ok(Self::new_unchecked(n, None))
    }

    /// Builds the key; `h_n` is derived from a fixed public seed when not given.
    fn new_unchecked(n: BigUint, h_n: Option<BigUint>) -> Self {
        let n_squared = &n * &n;
        let modulus = Modulus::new(&n_squared);
        let h_n = h_n.unwrap_or_else(|| derive_h_n(&n, &modulus));
        let max_signed = (&n - 1u32) >> 1;
        let id = KeyId::of(&n);
        Self {
            inner: Arc::new(PublicInner {
                n,
                n_squared,
                max_signed,
                h_n,
                id,
                modulus,
                table: OnceLock::new(),
            }),
        }
    }

    /// The modulus `N`.
    pub fn n(&self) -> &BigUint {
        &self.inner.n
    }

    /// `N²`, the ciphertext modulus.
    pub fn n_squared(&self) -> &BigUint {
        &self.inner.n_squared
    }

    /// The size of `N` in bits.
    pub fn bits(&self) -> u64 {
        self.inner.n.bits()
    }

    /// The key's fingerprint, carried by its ciphertexts.
    pub fn id(&self) -> KeyId {
        self.inner.id
    }

    /// The DJN obfuscator base `h_N` (public).
    pub fn h_n(&self) -> &BigUint {
        &self.inner.h_n
    }

    /// The largest magnitude of a signed plaintext, `(N − 1)/2`.
    pub fn max_signed(&self) -> &BigUint {
        &self.inner.max_signed
    }

    pub(crate) fn modulus(&self) -> &Modulus {
        &self.inner.modulus
    }

    /// Encodes a signed integer into `Z_N`: `v ≥ 0 ↦ v`, `v < 0 ↦ N + v` (docs/DESIGN.md,
    /// "Fixed-point numbers").
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|v| > (N − 1)/2`: nothing wraps silently.
    pub fn encode(&self, v: &BigInt) -> Result<BigUint> {
        if v.magnitude() > self.max_signed() {
            return Err(Error::PlaintextOutOfRange {
                bits: v.bits(),
                key_bits: self.bits(),
            });
        }
        Ok(match v.sign() {
            Sign::Minus => self.n() - v.magnitude(),
            _ => v.magnitude().clone(),
        })
    }

    /// Decodes `m ∈ [0, N)` to a signed integer: values above `(N − 1)/2` are negative.
    /// Inputs `≥ N` are reduced modulo `N` first.
    pub fn decode(&self, m: &BigUint) -> BigInt {
        let m = if m >= self.n() {
            m % self.n()
        } else {
            m.clone()
        };
        if &m > self.max_signed() {
            BigInt::from_biguint(Sign::Minus, self.n() - m)
        } else {
            BigInt::from(m)
        }
    }

    fn table(&self) -> &FixedBaseTable {
        self.inner.table.get_or_init(|| {
            let md = self.modulus();
            FixedBaseTable::new(
                md,
                &md.elem(self.h_n()),
                alpha_bits(self.bits()),
                obfuscator_window(self.bits()),
            )
        })
    }

    /// Builds the obfuscator table now instead of on the first encryption (about
    /// `2^w · |N|/(2w)` multiplications; 0.1–0.5 s at 2048 bits).
    pub fn precompute(&self) {
        let _ = self.table();
    }

    /// A fresh DJN obfuscator `h_N^α mod N²` with `α` uniform on `[0, 2^{|N|/2})`.
    ///
    /// Security: semantic security of the resulting ciphertexts rests on the DCR
    /// assumption *and* on the short-exponent assumption that `h_N^α` with a `|N|/2`-bit
    /// `α` is indistinguishable from a random `N`-th residue (Damgård–Jurik–Nielsen 2010
    /// §4; the same choice as Intel's IPCL).
    pub fn obfuscator<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> Obfuscator {
        let alpha = rng.gen_biguint(alpha_bits(self.bits()));
        self.obfuscator_from_alpha(&alpha)
    }

    fn obfuscator_from_alpha(&self, alpha: &BigUint) -> Obfuscator {
        let md = self.modulus();
        Obfuscator {
            key: self.id(),
            value: md.to_biguint(&self.table().pow_vartime(alpha)),
        }
    }

    /// `1 + m·N mod N²` for a plaintext `m ∈ [0, N)`: the deterministic half of an
    /// encryption, no exponentiation (`g^m = (1+N)^m = 1 + mN mod N²`).
    pub(crate) fn nude(&self, m: &BigUint) -> BigUint {
        m * self.n() + 1u32
    }

    /// Encrypts the signed integer `m` with a fresh DJN obfuscator (see
    /// [`PublicKey::obfuscator`] for the security assumption).
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|m| > (N − 1)/2`.
    pub fn encrypt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &BigInt,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let alpha = rng.gen_biguint(alpha_bits(self.bits()));
        self.encrypt_with_alpha(m, &alpha)
    }

    fn encrypt_with_alpha(&self, m: &BigInt, alpha: &BigUint) -> Result<Ciphertext> {
        let obf = self.obfuscator_from_alpha(alpha);
        self.encrypt_with_obfuscator(m, &obf)
    }

    /// Encrypts a batch with rayon. The `α`s are drawn from `rng` in order before the
    /// parallel part, so the result equals `ms.iter().map(|m| self.encrypt(m, rng))`
    /// exactly, whatever the number of threads.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] for the first plaintext out of range; nothing is
    /// encrypted then.
    pub fn encrypt_batch<R: RngCore + CryptoRng + ?Sized>(
        &self,
        ms: &[BigInt],
        rng: &mut R,
    ) -> Result<Vec<Ciphertext>> {
        use rayon::prelude::*;
        for m in ms {
            self.encode(m)?;
        }
        let alphas: Vec<BigUint> = ms
            .iter()
            .map(|_| rng.gen_biguint(alpha_bits(self.bits())))
            .collect();
        self.table();
        ms.par_iter()
            .zip(alphas.par_iter())
            .map(|(m, a)| self.encrypt_with_alpha(m, a))
            .collect()
    }

    /// Encrypts `m` with a precomputed obfuscator (for instance from an
    /// [`crate::ObfuscatorPool`]): one multiplication.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|m| > (N − 1)/2`; [`Error::KeyMismatch`] if the
    /// obfuscator was made for another key.
    pub fn encrypt_with_obfuscator(&self, m: &BigInt, obf: &Obfuscator) -> Result<Ciphertext> {
        if obf.key != self.id() {
            return Err(Error::KeyMismatch {
                expected: self.id(),
                found: obf.key,
            });
        }
        let nude = self.nude(&self.encode(m)?);
        let c = (nude * &obf.value) % self.n_squared();
        Ok(Ciphertext::new_unchecked(c, self.id()))
    }

    /// Textbook encryption with caller-chosen randomness: `(1 + m·N) · r^N mod N²` for a
    /// plaintext `m ∈ [0, N)` and `r ∈ Z*_N`. Slow (a full `|N|`-bit exponentiation);
    /// it exists for known-answer tests against other implementations (python-paillier's
    /// `raw_encrypt(m, r_value=r)` gives the same ciphertext) and for callers that want no
    /// assumption beyond DCR.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `m ≥ N`; [`Error::InvalidCiphertext`] if `r` is not
    /// in `Z*_N`.
    pub fn encrypt_raw_with_r(&self, m: &BigUint, r: &BigUint) -> Result<Ciphertext> {
        if m >= self.n() {
            return Err(Error::PlaintextOutOfRange {
                bits: m.bits(),
                key_bits: self.bits(),
            });
        }
        if r.is_zero() || r >= self.n() || !r.gcd(self.n()).is_one() {
            return Err(Error::InvalidCiphertext {
                reason: "randomness r is not in Z*_N",
            });
        }
        let md = self.modulus();
        let rn = md.to_biguint(&md.pow_vartime(&md.elem(r), self.n()));
        let c = (self.nude(m) * rn) % self.n_squared();
        Ok(Ciphertext::new_unchecked(c, self.id()))
    }

    /// Encrypts the signed `m` with a uniformly random `r ∈ Z*_N` (textbook Paillier, DCR
    /// assumption only). About 10× slower than [`PublicKey::encrypt`].
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|m| > (N − 1)/2`.
    pub fn encrypt_textbook<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &BigInt,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let m = self.encode(m)?;
        loop {
            let r = rng.gen_biguint_below(self.n());
            if !r.is_zero() && r.gcd(self.n()).is_one() {
                return self.encrypt_raw_with_r(&m, &r);
            }
        }
    }
}

/// `h = −x² mod N` for an `x` derived from `N` by hashing, and `h_N = h^N mod N²`.
/// Deriving `x` from `N` makes `h_N` a deterministic function of the public key, so both
/// sides of a protocol agree on it without sending it; its only requirement is to be a
/// random-looking `N`-th residue (Damgård–Jurik–Nielsen 2010 §4).
fn derive_h_n(n: &BigUint, modulus: &Modulus) -> BigUint {
    let mut bytes = Vec::new();
    let mut counter = 0u32;
    while (bytes.len() as u64) * 8 < n.bits() + 128 {
        let mut hasher = Sha256::new();
        hasher.update(b"gelunet-paillier h_N v1");
        hasher.update(counter.to_be_bytes());
        hasher.update(n.to_bytes_be());
        bytes.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    let x = BigUint::from_bytes_be(&bytes) % n;
    let h = n - (&x * &x) % n;
    modulus.to_biguint(&modulus.pow_vartime(&modulus.elem(&h), n))
}

/// A precomputed encryption obfuscator `r^N mod N²` for one key. It must be used once
/// only, and kept from everyone else: with the obfuscator of a ciphertext, anyone can read
/// its plaintext. Hidden from `Debug`, overwritten with zeros on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Obfuscator {
    key: KeyId,
    value: BigUint,
}

impl Drop for Obfuscator {
    fn drop(&mut self) {
        wipe_biguint(&mut self.value);
    }
}

impl fmt::Debug for Obfuscator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obfuscator")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The secret part of a private key, zeroized on drop.
struct Secrets {
    p: BigUint,
    q: BigUint,
    p_squared: BigUint,
    q_squared: BigUint,
    /// `p − 1`, `q − 1`: the CRT decryption exponents.
    p_minus_1: BigUint,
    q_minus_1: BigUint,
    /// `h_p = L_p(g^{p−1} mod p²)^{−1} mod p` (Paillier 1999 §7).
    h_p: BigUint,
    h_q: BigUint,
    /// `q^{−1} mod p` for recombining `m_p`, `m_q`.
    q_inv_p: BigUint,
    /// `(q²)^{−1} mod p²` for recombining values modulo `p²` and `q²`.
    q2_inv_p2: BigUint,
    /// `λ = lcm(p − 1, q − 1)` and `μ = L(g^λ mod N²)^{−1} mod N` (Paillier 1999 §3).
    lambda: BigUint,
    mu: BigUint,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        for x in [
            &mut self.p,
            &mut self.q,
            &mut self.p_squared,
            &mut self.q_squared,
            &mut self.p_minus_1,
            &mut self.q_minus_1,
            &mut self.h_p,
            &mut self.h_q,
            &mut self.q_inv_p,
            &mut self.q2_inv_p2,
            &mut self.lambda,
            &mut self.mu,
        ] {
            wipe_biguint(x);
        }
    }
}

struct CrtTables {
    mod_p2: Modulus,
    mod_q2: Modulus,
    table_p2: FixedBaseTable,
    table_q2: FixedBaseTable,
}

/// A Paillier private key. It contains its [`PublicKey`] (`private.public_key()`) and the
/// secrets `p`, `q`, `λ`, `μ` and the CRT values `h_p`, `h_q`, all overwritten with zeros
/// when the key is dropped, never shown by `Debug`, and serialized only through the
/// explicit [`PrivateKey::to_secret_bytes`].
pub struct PrivateKey {
    public: PublicKey,
    secrets: Box<Secrets>,
    mod_p2: Modulus,
    mod_q2: Modulus,
    crt_tables: OnceLock<CrtTables>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Clone for PrivateKey {
    fn clone(&self) -> Self {
        Self::assemble(self.secrets.p.clone(), self.secrets.q.clone(), &self.public)
    }
}

impl PrivateKey {
    /// Generates a key pair with an `N` of exactly `bits` bits from two random primes of
    /// `bits/2` bits (num-prime's probable-prime generation).
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] below 2048 bits; [`Error::UnsupportedKeySize`] for sizes other
    /// than 2048, 3072 or 4096.
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(bits: u64, rng: &mut R) -> Result<Self> {
        if bits < MIN_KEY_BITS {
            return Err(Error::KeyTooSmall {
                bits,
                min_bits: MIN_KEY_BITS,
            });
        }
        if !SUPPORTED_KEY_BITS.contains(&bits) {
            return Err(Error::UnsupportedKeySize { bits });
        }
        let (p, q) = random_primes(bits, rng);
        Self::from_primes(p, q)
    }

    /// The private key for the primes `p`, `q`.
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] if `N = pq` is below [`MIN_KEY_BITS`];
    /// [`Error::InvalidPrimes`] if `p = q`, either is not prime, or
    /// `gcd(N, (p−1)(q−1)) ≠ 1`.
    pub fn from_primes(p: BigUint, q: BigUint) -> Result<Self> {
        Self::checked(p, q, MIN_KEY_BITS)
    }

    /// The one test-only way to small keys: like [`PrivateKey::from_primes`] but accepts
    /// `N` down to [`MIN_TEST_KEY_BITS`]. Such keys are insecure; tests use them for speed
    /// (`hazmat` feature).
    ///
    /// # Errors
    /// As [`PrivateKey::from_primes`], with the smaller minimum.
    #[cfg(feature = "hazmat")]
    pub fn from_primes_insecure_for_tests(p: BigUint, q: BigUint) -> Result<Self> {
        Self::checked(p, q, MIN_TEST_KEY_BITS)
    }

    /// Generates a small key for tests through [`PrivateKey::from_primes_insecure_for_tests`]
    /// (`bits` even, at least [`MIN_TEST_KEY_BITS`]; `hazmat` feature).
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] below [`MIN_TEST_KEY_BITS`]; [`Error::UnsupportedKeySize`] for
    /// an odd size.
    #[cfg(feature = "hazmat")]
    pub fn generate_insecure_for_tests<R: RngCore + CryptoRng + ?Sized>(
        bits: u64,
        rng: &mut R,
    ) -> Result<Self> {
        Self::generate_small(bits, rng)
    }

    /// The one key-generation entry point of runs (`gelunet train`, the attacks, the
    /// benches): [`PrivateKey::generate`] for `bits ≥` [`MIN_KEY_BITS`]; below, a
    /// test-only key of `bits` bits (even, at least [`MIN_TEST_KEY_BITS`]) when the run
    /// allows test keys and the build has the `hazmat` feature ([`TEST_KEYS_AVAILABLE`]).
    ///
    /// # Errors
    /// [`Error::KeyTooSmall`] below [`MIN_KEY_BITS`] without `allow_test_keys` (and below
    /// [`MIN_TEST_KEY_BITS`] with it); [`Error::TestKeysUnavailable`] for an allowed test
    /// key in a build without `hazmat`; [`Error::UnsupportedKeySize`] for sizes other
    /// than 2048, 3072 or 4096 bits, or an odd test size.
    pub fn generate_for_run<R: RngCore + CryptoRng + ?Sized>(
        bits: u64,
        allow_test_keys: bool,
        rng: &mut R,
    ) -> Result<Self> {
        if test_key_path(bits, allow_test_keys, TEST_KEYS_AVAILABLE)? {
            Self::generate_small(bits, rng)
        } else {
            Self::generate(bits, rng)
        }
    }

    /// A test-size key; reached only through the `hazmat` constructors or
    /// [`test_key_path`].
    fn generate_small<R: RngCore + CryptoRng + ?Sized>(bits: u64, rng: &mut R) -> Result<Self> {
        if bits < MIN_TEST_KEY_BITS {
            return Err(Error::KeyTooSmall {
                bits,
                min_bits: MIN_TEST_KEY_BITS,
            });
        }
        if bits % 2 == 1 {
            return Err(Error::UnsupportedKeySize { bits });
        }
        let (p, q) = random_primes(bits, rng);
        Self::checked(p, q, MIN_TEST_KEY_BITS)
    }

    fn checked(p: BigUint, q: BigUint, min_bits: u64) -> Result<Self> {
        // |pq| ≤ |p| + |q|: refuse huge factors before multiplying them.
        check_max_bits(p.bits().saturating_add(q.bits()).saturating_sub(1))?;
        let n = &p * &q;
        if n.bits() < min_bits {
            return Err(Error::KeyTooSmall {
                bits: n.bits(),
                min_bits,
            });
        }
        if p == q {
            return Err(Error::InvalidPrimes { reason: "p = q" });
        }
        if !num_prime::nt_funcs::is_prime(&p, None).probably()
            || !num_prime::nt_funcs::is_prime(&q, None).probably()
        {
            return Err(Error::InvalidPrimes {
                reason: "a factor is not prime",
            });
        }
        let phi = (&p - 1u32) * (&q - 1u32);
        if !n.gcd(&phi).is_one() {
            return Err(Error::InvalidPrimes {
                reason: "gcd(N, (p-1)(q-1)) != 1",
            });
        }
        let public = PublicKey::new_unchecked(n, None);
        Ok(Self::assemble(p, q, &public))
    }

    fn assemble(p: BigUint, q: BigUint, public: &PublicKey) -> Self {
        let one = BigUint::one();
        let n = public.n();
        let p_squared = &p * &p;
        let q_squared = &q * &q;
        let p_minus_1 = &p - 1u32;
        let q_minus_1 = &q - 1u32;
        // g = N + 1: g^{p-1} mod p² = 1 + (p-1)N mod p², so L_p = ((p-1)N mod p²)/p.
        let lp = (((&p_minus_1 * n) % &p_squared) / &p) % &p;
        let lq = (((&q_minus_1 * n) % &q_squared) / &q) % &q;
        let h_p = lp.modinv(&p).unwrap_or_else(|| one.clone());
        let h_q = lq.modinv(&q).unwrap_or_else(|| one.clone());
        let q_inv_p = (&q % &p).modinv(&p).unwrap_or_else(|| one.clone());
        let q2_inv_p2 = (&q_squared % &p_squared)
            .modinv(&p_squared)
            .unwrap_or_else(|| one.clone());
        let lambda = p_minus_1.lcm(&q_minus_1);
        // g^λ = 1 + λN mod N², L(·) = λ mod N.
        let mu = (&lambda % n).modinv(n).unwrap_or(one);
        let mod_p2 = Modulus::new(&p_squared);
        let mod_q2 = Modulus::new(&q_squared);
        Self {
            public: public.clone(),
            secrets: Box::new(Secrets {
                p,
                q,
                p_squared,
                q_squared,
                p_minus_1,
                q_minus_1,
                h_p,
                h_q,
                q_inv_p,
                q2_inv_p2,
                lambda,
                mu,
            }),
            mod_p2,
            mod_q2,
            crt_tables: OnceLock::new(),
        }
    }

    /// The private key for the primes `p`, `q` in a run: [`PrivateKey::from_primes`], or
    /// the test-only minimum [`MIN_TEST_KEY_BITS`] when `allow_test_keys` and `N` is below
    /// [`MIN_KEY_BITS`], in builds with the `hazmat` feature only (as
    /// [`PrivateKey::from_secret_bytes_for_run`]).
    ///
    /// # Errors
    /// [`Error::TestKeysUnavailable`] for an allowed test-size key in a build without
    /// `hazmat`; the errors of [`PrivateKey::from_primes`].
    pub fn from_primes_for_run(p: BigUint, q: BigUint, allow_test_keys: bool) -> Result<Self> {
        check_max_bits(p.bits().saturating_add(q.bits()).saturating_sub(1))?;
        let bits = (&p * &q).bits();
        if test_key_path(bits, allow_test_keys, TEST_KEYS_AVAILABLE)? {
            Self::checked(p, q, MIN_TEST_KEY_BITS)
        } else {
            Self::from_primes(p, q)
        }
    }

    /// The secrets `(p, q, λ, μ)` for the key-file formats of this crate
    /// ([`crate::phe_json`]); never leaves the crate.
    pub(crate) fn secret_parts(&self) -> (&BigUint, &BigUint, &BigUint, &BigUint) {
        let s = &self.secrets;
        (&s.p, &s.q, &s.lambda, &s.mu)
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Decrypts to the raw plaintext in `[0, N)` with CRT (Paillier 1999 §7):
    /// `m_p = L_p(c^{p−1} mod p²)·h_p mod p`, likewise `m_q`, recombined modulo `N`.
    ///
    /// # Errors
    /// [`Error::KeyMismatch`] for a ciphertext under another key;
    /// [`Error::InvalidCiphertext`] if `c ∉ (0, N²)`.
    pub fn decrypt_raw(&self, c: &Ciphertext) -> Result<BigUint> {
        self.public.check_range(c)?;
        let s = &self.secrets;
        // The two halves are independent: on two cores a single decryption takes the time
        // of one half (rayon; nested inside `decrypt_batch` it costs nothing extra).
        let (mp, mq) = rayon::join(
            || Self::half(&self.mod_p2, c.value(), &s.p, &s.p_minus_1, &s.h_p),
            || Self::half(&self.mod_q2, c.value(), &s.q, &s.q_minus_1, &s.h_q),
        );
        // m = m_q + q·((m_p − m_q)·q^{-1} mod p)
        let diff = (&mp + &s.p - (&mq % &s.p)) % &s.p;
        let h = (diff * &s.q_inv_p) % &s.p;
        Ok(mq + h * &s.q)
    }

    fn half(md: &Modulus, c: &BigUint, prime: &BigUint, exp: &BigUint, h: &BigUint) -> BigUint {
        let x = md.to_biguint(&md.pow_vartime(&md.elem(c), exp));
        let l = (x - 1u32) / prime;
        (l * h) % prime
    }

    /// Decrypts and decodes to a signed integer (see [`PublicKey::decode`]).
    ///
    /// # Errors
    /// As [`PrivateKey::decrypt_raw`].
    pub fn decrypt(&self, c: &Ciphertext) -> Result<BigInt> {
        Ok(self.public.decode(&self.decrypt_raw(c)?))
    }

    /// Decrypts a batch with rayon; equal to decrypting one at a time.
    ///
    /// # Errors
    /// The first error of [`PrivateKey::decrypt`], if any.
    pub fn decrypt_batch(&self, cs: &[Ciphertext]) -> Result<Vec<BigInt>> {
        use rayon::prelude::*;
        cs.par_iter().map(|c| self.decrypt(c)).collect()
    }

    /// Textbook decryption `m = L(c^λ mod N²)·μ mod N` (Paillier 1999 §3), the reference
    /// the CRT path is tested against. About 3× slower than [`PrivateKey::decrypt_raw`].
    ///
    /// # Errors
    /// As [`PrivateKey::decrypt_raw`].
    pub fn decrypt_textbook(&self, c: &Ciphertext) -> Result<BigUint> {
        self.public.check_range(c)?;
        let md = self.public.modulus();
        let n = self.public.n();
        let x = md.to_biguint(&md.pow_vartime(&md.elem(c.value()), &self.secrets.lambda));
        let l = (x - 1u32) / n;
        Ok((l * &self.secrets.mu) % n)
    }

    fn crt_tables(&self) -> &CrtTables {
        self.crt_tables.get_or_init(|| {
            let bits = alpha_bits(self.public.bits());
            let w = obfuscator_window(self.public.bits());
            let h = self.public.h_n();
            let mod_p2 = self.mod_p2.clone();
            let mod_q2 = self.mod_q2.clone();
            let table_p2 = FixedBaseTable::new(&mod_p2, &mod_p2.elem(h), bits, w);
            let table_q2 = FixedBaseTable::new(&mod_q2, &mod_q2.elem(h), bits, w);
            CrtTables {
                mod_p2,
                mod_q2,
                table_p2,
                table_q2,
            }
        })
    }

    /// A DJN obfuscator `h_N^α` computed modulo `p²` and `q²` and recombined (CRT): the
    /// same value as [`PublicKey::obfuscator`] with the same `α`, at about a third of the
    /// cost. Same security assumption (DCR plus short exponent).
    pub fn obfuscator_crt<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> Obfuscator {
        let alpha = rng.gen_biguint(alpha_bits(self.public.bits()));
        self.obfuscator_crt_from_alpha(&alpha)
    }

    fn obfuscator_crt_from_alpha(&self, alpha: &BigUint) -> Obfuscator {
        let t = self.crt_tables();
        let s = &self.secrets;
        let xp = t.mod_p2.to_biguint(&t.table_p2.pow_vartime(alpha));
        let xq = t.mod_q2.to_biguint(&t.table_q2.pow_vartime(alpha));
        // x = x_q + q²·((x_p − x_q)·(q²)^{-1} mod p²)
        let diff = (&xp + &s.p_squared - (&xq % &s.p_squared)) % &s.p_squared;
        let h = (diff * &s.q2_inv_p2) % &s.p_squared;
        Obfuscator {
            key: self.public.id(),
            value: xq + h * &s.q_squared,
        }
    }

    /// Encrypts with an obfuscator computed through CRT ([`PrivateKey::obfuscator_crt`]);
    /// for the key owner, the fastest way to encrypt.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|m| > (N − 1)/2`.
    pub fn encrypt_crt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &BigInt,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let obf = self.obfuscator_crt(rng);
        self.public.encrypt_with_obfuscator(m, &obf)
    }

    /// `count` obfuscators computed through CRT ([`PrivateKey::obfuscator_crt`]; Paillier
    /// 1999 §7, DJN obfuscators `h_N^α`) with rayon. The `α`s are drawn from `rng` in order before the parallel part, so the result
    /// equals `count` calls of `obfuscator_crt(rng)`, whatever the number of threads.
    ///
    /// For a client that encrypts on a latency-critical path: compute the obfuscators in
    /// idle time, then encrypt with [`PublicKey::encrypt_with_obfuscator`] (one
    /// multiplication modulo `N²`).
    pub fn obfuscators_crt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        count: usize,
        rng: &mut R,
    ) -> Vec<Obfuscator> {
        use rayon::prelude::*;
        let mut alphas: Vec<BigUint> = (0..count)
            .map(|_| rng.gen_biguint(alpha_bits(self.public.bits())))
            .collect();
        self.crt_tables();
        let out = alphas
            .par_iter()
            .map(|a| self.obfuscator_crt_from_alpha(a))
            .collect();
        for a in &mut alphas {
            wipe_biguint(a);
        }
        out
    }

    /// Batch form of [`PrivateKey::encrypt_crt`] (rayon); equal to encrypting one at a
    /// time with the same `rng`.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] for any plaintext out of range; nothing is encrypted
    /// and nothing is drawn from `rng`.
    pub fn encrypt_crt_batch<R: RngCore + CryptoRng + ?Sized>(
        &self,
        ms: &[BigInt],
        rng: &mut R,
    ) -> Result<Vec<Ciphertext>> {
        use rayon::prelude::*;
        for m in ms {
            self.public.encode(m)?;
        }
        let obfuscators = self.obfuscators_crt(ms.len(), rng);
        ms.par_iter()
            .zip(obfuscators.par_iter())
            .map(|(m, o)| self.public.encrypt_with_obfuscator(m, o))
            .collect()
    }

    /// The primes `p`, `q` as big-endian bytes, each prefixed by its length as a 4-byte
    /// big-endian integer. The only way a private key leaves memory; the caller owns the
    /// secret bytes (wrapped to be zeroized on drop).
    pub fn to_secret_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        for x in [&self.secrets.p, &self.secrets.q] {
            let bytes = zeroize::Zeroizing::new(x.to_bytes_be());
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Parses [`PrivateKey::to_secret_bytes`] output (size rules of
    /// [`PrivateKey::from_primes`]).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a truncated or padded encoding, and the errors of
    /// [`PrivateKey::from_primes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_secret_bytes_for_run(bytes, false)
    }

    /// Parses [`PrivateKey::to_secret_bytes`] output in a run: as
    /// [`PrivateKey::from_secret_bytes`], or with the test-only minimum
    /// [`MIN_TEST_KEY_BITS`] when `allow_test_keys` and `N` is below [`MIN_KEY_BITS`], in
    /// builds with the `hazmat` feature only.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a truncated or padded encoding;
    /// [`Error::TestKeysUnavailable`] for an allowed test-size key in a build without
    /// `hazmat`; the errors of [`PrivateKey::from_primes`].
    pub fn from_secret_bytes_for_run(bytes: &[u8], allow_test_keys: bool) -> Result<Self> {
        let (p, rest) = take_prefixed(bytes)?;
        let (q, rest) = take_prefixed(rest)?;
        if !rest.is_empty() {
            return Err(Error::Malformed {
                reason: "trailing bytes after the private key".into(),
            });
        }
        Self::from_primes_for_run(p, q, allow_test_keys)
    }
}

fn take_prefixed(bytes: &[u8]) -> Result<(BigUint, &[u8])> {
    let malformed = || Error::Malformed {
        reason: "truncated private key encoding".into(),
    };
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(malformed)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let body = bytes.get(4..4 + len).ok_or_else(malformed)?;
    Ok((BigUint::from_bytes_be(body), &bytes[4 + len..]))
}

/// Two distinct primes of `bits/2` bits whose product has exactly `bits` bits.
fn random_primes<R: RngCore + CryptoRng + ?Sized>(bits: u64, rng: &mut R) -> (BigUint, BigUint) {
    let half = (bits / 2) as usize;
    // RandPrime is implemented for sized rngs; adapt the unsized reference.
    let mut rng = RngAdapter(rng);
    loop {
        let p: BigUint = rng.gen_prime_exact(half, None);
        let q: BigUint = rng.gen_prime_exact(half, None);
        if p != q && (&p * &q).bits() == bits {
            return (p, q);
        }
    }
}

struct RngAdapter<'a, R: ?Sized>(&'a mut R);

impl<R: RngCore + ?Sized> RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn test_keys_need_permission_and_the_hazmat_build() {
        for available in [false, true] {
            // Real sizes and refused small keys take the checked path (which refuses them).
            assert_eq!(test_key_path(2048, true, available), Ok(false));
            assert_eq!(test_key_path(512, false, available), Ok(false));
        }
        assert_eq!(test_key_path(512, true, true), Ok(true));
        let e = test_key_path(512, true, false).unwrap_err();
        assert_eq!(e, Error::TestKeysUnavailable { bits: 512 });
        assert!(e.to_string().contains("hazmat"), "{e}");
    }

    #[test]
    fn run_constructors_follow_the_build() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        assert!(matches!(
            PrivateKey::generate_for_run(512, false, &mut rng),
            Err(Error::KeyTooSmall { bits: 512, .. })
        ));
        let small = PrivateKey::generate_for_run(256, true, &mut rng);
        if TEST_KEYS_AVAILABLE {
            let key = small.unwrap();
            assert_eq!(key.public_key().bits(), 256);
            let bytes = key.to_secret_bytes();
            assert!(PrivateKey::from_secret_bytes(&bytes).is_err());
            let back = PrivateKey::from_secret_bytes_for_run(&bytes, true).unwrap();
            assert_eq!(back.public_key(), key.public_key());
            let n = key.public_key().n().clone();
            assert!(PublicKey::from_n_for_run(n.clone(), false).is_err());
            assert_eq!(
                &PublicKey::from_n_for_run(n, true).unwrap(),
                key.public_key()
            );
        } else {
            assert_eq!(small.unwrap_err(), Error::TestKeysUnavailable { bits: 256 });
        }
    }
}
