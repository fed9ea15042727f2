//! The Paillier cryptosystem for GELU-Net: key generation, fast encryption, CRT
//! decryption, and the homomorphic linear algebra the server runs.
//!
//! # The scheme
//!
//! With `N = pq` and `g = N + 1` (Paillier 1999 §3; Damgård–Jurik 2001),
//!
//! ```text
//! Enc(m; r) = g^m · r^N = (1 + m·N) · r^N   (mod N²),     m ∈ Z_N, r ∈ Z*_N
//! Dec(c)    = L(c^λ mod N²) · μ mod N,      L(x) = (x − 1)/N
//! ```
//!
//! and the homomorphisms the protocol uses:
//!
//! ```text
//! [a] ⊕ [b] = [a]·[b]        = [a + b]
//! [a] ⊕ m   = [a]·(1 + m·N)  = [a + m]      (no exponentiation)
//! [a] ⊗ k   = [a]^k          = [k·a]        (k < 0 uses [a]^{-1})
//! W ⊗ [a]   = (Π_k [a_k]^{w_jk})_j = [W·a]
//! ```
//!
//! All plaintexts are signed integers in `Z_N`: `x ≥ 0` is `x`, `x < 0` is `N + x`, and
//! decoding maps values above `(N−1)/2` to negatives ([`PublicKey::encode`],
//! [`PublicKey::decode`]). Range checks return errors; nothing wraps silently.
//!
//! # Encryption modes and what each assumes
//!
//! | mode | cost at 2048 bits | assumption |
//! | --- | --- | --- |
//! | [`PublicKey::encrypt`]: DJN obfuscator `h_N^α`, `α` of `|N|/2` bits, fixed-base window table | ~128 multiplications mod `N²` | DCR + short-exponent indistinguishability (Damgård–Jurik–Nielsen 2010 §4) |
//! | [`PrivateKey::encrypt_crt`]: the same obfuscator computed mod `p²` and `q²` | ~256 multiplications at half size | same as above |
//! | [`PublicKey::encrypt_with_obfuscator`] with an [`ObfuscatorPool`] | one multiplication on the critical path | same as above |
//! | [`PublicKey::encrypt_textbook`] / [`PublicKey::encrypt_raw_with_r`]: `r^N` for uniform `r` | one `|N|`-bit exponentiation | DCR only (Paillier 1999) |
//!
//! # Decryption
//!
//! [`PrivateKey::decrypt`] uses CRT over `p²` and `q²` with precomputed `h_p`, `h_q`
//! (Paillier 1999 §7): two half-size exponentiations with `(|N|/2)`-bit exponents.
//!
//! # Keys
//!
//! Keys below 2048 bits are refused ([`Error::KeyTooSmall`]) except through the
//! constructors whose names end in `_insecure_for_tests`, which tests use for speed. They
//! exist only with the `hazmat` cargo feature (as RustCrypto RSA's `hazmat`), which the
//! workspace's tests turn on through their dev-dependencies; a build without it has no
//! small-key path. Runs make and accept keys through [`PrivateKey::generate_for_run`],
//! [`PrivateKey::from_secret_bytes_for_run`] and [`PublicKey::from_n_for_run`], which take
//! the test-only path only when the run allows test keys *and* the build has `hazmat`
//! ([`TEST_KEYS_AVAILABLE`]), and otherwise refuse small keys with a typed error
//! ([`Error::KeyTooSmall`], [`Error::TestKeysUnavailable`]):
//!
//! ```
//! use gelunet_paillier::{Error, PrivateKey};
//! let mut rng = rand::thread_rng();
//! assert!(matches!(
//!     PrivateKey::generate(1024, &mut rng),
//!     Err(Error::KeyTooSmall { bits: 1024, min_bits: 2048 })
//! ));
//! # #[cfg(feature = "hazmat")] {
//! let key = PrivateKey::generate_insecure_for_tests(256, &mut rng).unwrap();
//! let pk = key.public_key();
//! let c = pk.encrypt(&(-42).into(), &mut rng).unwrap();
//! let d = pk.mul_scalar(&c, &3.into()).unwrap();
//! assert_eq!(key.decrypt(&d).unwrap(), (-126).into());
//! // A ciphertext under another key is refused, not decrypted to garbage.
//! let other = PrivateKey::generate_insecure_for_tests(256, &mut rng).unwrap();
//! assert!(other.decrypt(&c).is_err());
//! # }
//! ```
//!
//! A private key contains its public key; its secrets (`p`, `q`, `λ`, `μ`, the CRT
//! values and tables reduced modulo `p²`, `q²`) are overwritten with zeros on drop
//! (best effort: the limbs are zeroed in place), never appear in `Debug`, and leave memory
//! only through [`PrivateKey::to_secret_bytes`].
//!
//! # Backends
//!
//! Big integers at the API are `num-bigint`. The hot loops (modular multiplication,
//! exponentiation, the fixed-base tables and the shared multi-exponentiation) run by
//! default on this crate's pure-Rust Montgomery arithmetic over `u64` limbs (no division
//! per product; values stay in Montgomery form across a whole exponentiation), and with
//! the `gmp` feature on GMP through `rug`; on x86-64 CPUs with AVX-512 IFMA the
//! Montgomery residues are radix-`2^52` digits multiplied eight lanes at a time
//! ([`arithmetic`] says which kernel runs). Results are identical: the ciphertexts equal
//! those of reducing with `%` after every product (property tests against num-bigint).
//!
//! # Side channels
//!
//! Every exponentiation here is variable-time (sliding windows, table lookups indexed by
//! exponent digits), decryption included, as in python-paillier and Intel's IPCL: GMP's
//! side-channel-silent `mpz_powm_sec` costs 28% more per decryption on the reference
//! machine. GELU-Net's threat model (semi-honest parties talking over a network,
//! paper §3) does not include co-located timing or cache attackers; do not run a party
//! next to an adversary's code.

#[cfg(all(target_arch = "x86_64", not(feature = "gmp")))]
mod addmul_adx;
mod arith;
mod blinding;
mod ciphertext;
pub mod encoding;
mod error;
mod keys;
#[cfg(not(feature = "gmp"))]
mod monty;
#[cfg(all(target_arch = "x86_64", not(feature = "gmp")))]
mod monty_ifma;
pub mod multiexp;
pub mod phe_json;
mod pool;
pub mod serde_biguint;

pub use ciphertext::{Ciphertext, PreparedCiphertext};
pub use error::{Error, Result};
pub use keys::{
    KeyId, Obfuscator, PrivateKey, PublicKey, MAX_KEY_BITS, MIN_KEY_BITS, MIN_TEST_KEY_BITS,
    SUPPORTED_KEY_BITS, TEST_KEYS_AVAILABLE,
};
pub use pool::ObfuscatorPool;

pub use num_bigint::{BigInt, BigUint};

/// The big-integer backend of the hot loops in this build: `"gmp"` with the `gmp`
/// feature, else `"num-bigint"` (reported by `gelunet bench paillier` and the run
/// reports).
pub const BACKEND: &str = if cfg!(feature = "gmp") {
    "gmp"
} else {
    "num-bigint"
};

/// The kernel that multiplies residues on this machine in this build: `"gmp"` with the
/// `gmp` feature; otherwise `"avx512-ifma"` (radix-`2^52` digits, x86-64 with AVX-512
/// IFMA), `"mulx-adx"` (64-bit limbs, x86-64 with BMI2 and ADX) or `"portable"`, as
/// detected at run time and narrowed by `GELUNET_NO_IFMA` and `GELUNET_PORTABLE_ARITH`
/// (docs/DESIGN.md "Arithmetic backends"; reported by `gelunet bench`).
///
/// ```
/// let k = gelunet_paillier::arithmetic();
/// assert!(["gmp", "avx512-ifma", "mulx-adx", "portable"].contains(&k));
/// ```
pub fn arithmetic() -> &'static str {
    #[cfg(feature = "gmp")]
    {
        "gmp"
    }
    #[cfg(all(not(feature = "gmp"), target_arch = "x86_64"))]
    {
        if monty_ifma::available() {
            "avx512-ifma"
        } else if addmul_adx::available() {
            "mulx-adx"
        } else {
            "portable"
        }
    }
    #[cfg(all(not(feature = "gmp"), not(target_arch = "x86_64")))]
    {
        "portable"
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_biguint::serialize(self.n(), s)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = serde_biguint::deserialize(d)?;
        PublicKey::from_n(n).map_err(serde::de::Error::custom)
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
