//! The error type of the baselines crate.

use thiserror::Error;

/// Result alias with [`BaselineError`].
pub type Result<T> = std::result::Result<T, BaselineError>;

/// Every failure of the baselines crate.
///
/// Library code never panics on bad input: shapes, ranges, parameters and the
/// plaintext-modulus headroom are all checked and reported through these variants.
#[derive(Debug, Error)]
pub enum BaselineError {
    /// A parameter (scale, degree, modulus, repetition count, ...) is invalid.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The BFV plaintext modulus `t` cannot hold the network's outputs without
    /// wrapping: the worst-case `|z2|` needs `2·|z2| < t`.
    #[error(
        "plaintext modulus too small: outputs need a {needed_bits}-bit t, t has {t_bits} bits"
    )]
    PlaintextModulusTooSmall {
        /// Bits of the smallest modulus that would hold `2·max|z2| + 1`.
        needed_bits: u32,
        /// Bits of the configured plaintext modulus.
        t_bits: u32,
    },

    /// An array does not have the expected shape.
    #[error("shape mismatch in {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which argument or array.
        what: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        got: Vec<usize>,
    },

    /// A real number is NaN or infinite.
    #[error("non-finite value in {what} at flat index {index}")]
    NonFinite {
        /// Which array.
        what: &'static str,
        /// Flat (row-major) index of the value.
        index: usize,
    },

    /// A real number is too large for its fixed-point encoding.
    #[error("value {value} in {what} does not fit its fixed-point encoding (|value·2^scale| must stay below {bound})")]
    QuantizationOverflow {
        /// Which array.
        what: &'static str,
        /// The offending real value.
        value: f64,
        /// The largest allowed magnitude of the scaled integer.
        bound: f64,
    },

    /// An integer input is outside the agreed input bound.
    #[error("input {value} exceeds the input bound {bound}")]
    InputOutOfRange {
        /// The offending value.
        value: i64,
        /// The agreed bound on `|x|`.
        bound: i64,
    },

    /// An exact integer computation overflowed its integer type.
    #[error("integer overflow in {what}")]
    Overflow {
        /// Which computation.
        what: &'static str,
    },

    /// A batch holds more samples than the ciphertext has SIMD slots.
    #[error("batch of {got} samples exceeds the {slots} SIMD slots")]
    TooManySamples {
        /// Samples in the batch.
        got: usize,
        /// Slots per ciphertext (the ring degree).
        slots: usize,
    },

    /// The cloud's product failed Freivalds' check on every attempt (SecureNets,
    /// paper §3.3.3).
    #[error("the cloud's product failed verification {attempts} times")]
    VerificationFailed {
        /// Products requested.
        attempts: usize,
    },

    /// An error reported by `fhe.rs`.
    #[error("fhe: {0}")]
    Fhe(#[from] fhe::Error),

    /// An error reported by `fhe-math`.
    #[error("fhe-math: {0}")]
    FheMath(#[from] fhe_math::Error),
}
