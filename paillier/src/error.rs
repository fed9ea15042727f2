//! The crate's error type.

use crate::KeyId;

/// Everything that can go wrong in this crate. Every variant carries the values that
/// explain it; none holds secret material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The modulus is smaller than the minimum accepted size (2048 bits outside the
    /// test-only constructors of the `hazmat` feature).
    #[error("key of {bits} bits is below the minimum of {min_bits} bits")]
    KeyTooSmall {
        /// Size of the offered modulus `N`, in bits.
        bits: u64,
        /// The minimum accepted size, in bits.
        min_bits: u64,
    },
    /// The modulus is larger than the largest accepted size ([`crate::MAX_KEY_BITS`],
    /// 4096 bits): refused before `N²` or any table of its size is computed.
    #[error("key of {bits} bits is above the maximum of {max_bits} bits")]
    KeyTooLarge {
        /// Size of the offered modulus `N`, in bits.
        bits: u64,
        /// The maximum accepted size, in bits.
        max_bits: u64,
    },
    /// A key below 2048 bits that the run allows as a test key, in a build without the
    /// test-only keys (the `hazmat` cargo feature, [`crate::TEST_KEYS_AVAILABLE`]).
    #[error(
        "{bits}-bit keys are test-only and this build has none: they need the `hazmat` feature of gelunet-paillier (for the gelunet binary: build it with `--features insecure-test-keys`)"
    )]
    TestKeysUnavailable {
        /// The requested size of `N`, in bits.
        bits: u64,
    },
    /// The requested key size is not one this crate generates (2048, 3072 or 4096 bits,
    /// or any even size ≥ 128 bits through the test-only constructor).
    #[error("unsupported key size {bits} bits (use 2048, 3072 or 4096)")]
    UnsupportedKeySize {
        /// The requested size of `N`, in bits.
        bits: u64,
    },
    /// The primes offered for a private key are not usable (equal, not prime, or `N` has
    /// a factor in common with `(p − 1)(q − 1)`).
    #[error("invalid prime factors: {reason}")]
    InvalidPrimes {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A public modulus that cannot be a Paillier modulus (even, or too small).
    #[error("invalid public modulus: {reason}")]
    InvalidModulus {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A ciphertext outside `(0, N²)` or not invertible modulo `N` (Paillier 1999 §2:
    /// ciphertexts live in `Z*_{N²}`).
    #[error("invalid ciphertext: {reason}")]
    InvalidCiphertext {
        /// Which check failed.
        reason: &'static str,
    },
    /// A ciphertext produced under another public key.
    #[error("ciphertext is under key {found}, expected key {expected}")]
    KeyMismatch {
        /// Fingerprint of the key the operation uses.
        expected: KeyId,
        /// Fingerprint carried by the ciphertext.
        found: KeyId,
    },
    /// A signed plaintext outside `[−(N−1)/2, (N−1)/2]`, or a plaintext `≥ N`.
    #[error("plaintext of {bits} bits does not fit the signed range of a {key_bits}-bit key")]
    PlaintextOutOfRange {
        /// Bit length of the magnitude that was offered.
        bits: u64,
        /// Bit length of `N`.
        key_bits: u64,
    },
    /// A real number that is not finite or whose fixed-point encoding exceeds the bound.
    #[error("cannot encode {value} at scale 2^{frac_bits} within {max_bits} bits")]
    EncodingOutOfRange {
        /// The real number that was offered.
        value: f64,
        /// The scale exponent `f` (the encoding is `round(value · 2^f)`).
        frac_bits: u32,
        /// The magnitude bound, in bits, that the encoding must stay below.
        max_bits: u64,
    },
    /// Operand shapes that do not fit together.
    #[error("shape mismatch: expected {expected}, got {found}")]
    ShapeMismatch {
        /// What the operation needs, e.g. `"n = 4 ciphertexts"`.
        expected: String,
        /// What it was given.
        found: String,
    },
    /// A serialized key or ciphertext that cannot be parsed.
    #[error("malformed encoding: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
