//! The crate's error type.

use crate::fixed::ValueKind;
use crate::messages::ErrorCode;

/// Everything that can go wrong in the shared protocol code. Every variant carries the
/// values that explain it; none holds secret material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model specification that cannot be trained (fewer than two widths, a zero width,
    /// the wrong number of hidden activations, fewer than two classes).
    #[error("invalid model specification: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// Fixed-point scales that do not fit together (docs/DESIGN.md, "Fixed-point numbers").
    #[error("invalid fixed-point scales: {reason}")]
    InvalidScales {
        /// What is wrong with them.
        reason: String,
    },
    /// A real number that is NaN or infinite.
    #[error("{kind:?} value {value} is not finite")]
    NotFinite {
        /// What the value is.
        kind: ValueKind,
        /// The offending number.
        value: f64,
    },
    /// A fixed-point value whose magnitude reaches the bound of its kind
    /// (`|v| < 2^max_bits` at its scale). Nothing wraps silently.
    #[error("{kind:?} value {value} does not fit in {max_bits} bits")]
    OutOfRange {
        /// What the value is.
        kind: ValueKind,
        /// The offending value (integer at the kind's scale, or the real number), as text.
        value: String,
        /// The magnitude bound in bits.
        max_bits: u32,
    },
    /// An intermediate integer computation overflowed `i128`.
    #[error("integer overflow in {op}")]
    Overflow {
        /// The operation.
        op: &'static str,
    },
    /// Arrays whose shapes do not fit together.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What was being checked.
        what: &'static str,
        /// The expected shape.
        expected: String,
        /// The shape found.
        found: String,
    },
    /// A class label outside `0..classes`.
    #[error("label {label} is not below the number of classes {classes}")]
    InvalidLabel {
        /// The label.
        label: usize,
        /// The number of classes (width of the output layer).
        classes: usize,
    },
    /// A session length that breaks the generalized `d_max` bound (docs/DESIGN.md, "Sessions and
    /// the d_max bound"): `d_max · B` samples must stay at or below the smallest fan-in.
    #[error(
        "session bound broken: {iterations} iterations of {batch} samples exceed the smallest fan-in {min_fan_in}"
    )]
    SessionBound {
        /// Iterations per session (`d_max`, or 1 if even one is too many).
        iterations: usize,
        /// Mini-batch size `B`.
        batch: usize,
        /// The smallest fan-in `min_i n_i`.
        min_fan_in: usize,
    },
    /// A session plan with fewer samples than the configured minimum (docs/DESIGN.md "Sessions
    /// and the d_max bound"; [`crate::schedule`]): with one sample per session the server
    /// rebuilds the input from the summed gradient of Alg. 5.
    #[error(
        "session minimum broken: {iterations} iterations of {batch} samples are fewer than {min_samples} samples (smallest fan-in {min_fan_in})"
    )]
    SessionMinimum {
        /// Iterations per session (the largest the bound allows, or the fixed length).
        iterations: usize,
        /// Mini-batch size `B`.
        batch: usize,
        /// The configured minimum number of samples per session.
        min_samples: usize,
        /// The smallest fan-in `min_i n_i`.
        min_fan_in: usize,
    },
    /// Packed values that do not fit their slots, or a packing layout that does not fit.
    #[error("packing: {reason}")]
    Packing {
        /// What does not fit.
        reason: String,
    },
    /// A configuration value that is not usable.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A masked value outside the interval its mask mode allows.
    #[error("masked value out of range: {reason}")]
    MaskOutOfRange {
        /// Which check failed.
        reason: String,
    },
    /// A convolution or pooling geometry that cannot be computed ([`crate::conv`],
    /// [`crate::pool`]).
    #[error("invalid layer geometry: {0}")]
    Geometry(#[from] crate::conv::GeometryError),
    /// An architecture that cannot be parsed or does not fit its input
    /// ([`crate::arch`]).
    #[error("invalid architecture: {0}")]
    Arch(#[from] crate::arch::ArchError),
    /// An error of the Paillier crate.
    #[error(transparent)]
    Paillier(#[from] gelunet_paillier::Error),
    /// A message that cannot be (de)serialized.
    #[error("message codec: {reason}")]
    Codec {
        /// The serializer's explanation.
        reason: String,
    },
    /// A message of another protocol version.
    #[error("protocol version {found} is not the supported version {expected}")]
    VersionMismatch {
        /// The version this build speaks.
        expected: u16,
        /// The version found.
        found: u16,
    },
}

impl Error {
    /// A constructor of [`Error::Overflow`] for `ok_or_else`: the error is built only on
    /// overflow (an eager `ok_or(Error::Overflow { .. })` drops a built error on every
    /// successful step, a measurable cost in the reference's inner loops).
    pub(crate) fn overflow(op: &'static str) -> impl FnOnce() -> Self {
        move || Self::Overflow { op }
    }

    /// The class of the error for an [`ErrorReport`](crate::messages::ErrorReport), the
    /// same on both sides (`gelunet_server::ServerError::code` and
    /// `gelunet_client::ClientError::code` delegate here): values out of range, masks and
    /// packed slots [`ErrorCode::Range`]; shapes and labels [`ErrorCode::Shape`]; specs,
    /// scales, layer geometries and architectures, session plans and configurations [`ErrorCode::Config`];
    /// another version [`ErrorCode::Version`]; the cryptosystem's errors by
    /// [`crate::violation::paillier_code`]; overflow and codec errors
    /// [`ErrorCode::Internal`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFinite { .. }
            | Self::OutOfRange { .. }
            | Self::MaskOutOfRange { .. }
            | Self::Packing { .. } => ErrorCode::Range,
            Self::ShapeMismatch { .. } | Self::InvalidLabel { .. } => ErrorCode::Shape,
            Self::InvalidSpec { .. }
            | Self::InvalidScales { .. }
            | Self::SessionBound { .. }
            | Self::SessionMinimum { .. }
            | Self::InvalidConfig { .. }
            | Self::Geometry(_)
            | Self::Arch(_) => ErrorCode::Config,
            Self::VersionMismatch { .. } => ErrorCode::Version,
            Self::Paillier(e) => crate::violation::paillier_code(e),
            Self::Overflow { .. } | Self::Codec { .. } => ErrorCode::Internal,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
