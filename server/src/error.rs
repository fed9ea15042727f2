//! The server's error type.

use gelunet_protocol::messages::{ErrorCode, ErrorReport, Packing};

/// Everything that can go wrong in the server role. After any error the server's state is
/// unchanged (the message is refused as a whole).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// An error of the shared protocol code (ranges, shapes, session bound, …).
    #[error(transparent)]
    Protocol(#[from] gelunet_protocol::Error),
    /// An error of the cryptosystem (invalid ciphertext, wrong key, …).
    #[error(transparent)]
    Paillier(#[from] gelunet_paillier::Error),
    /// An unusable configuration.
    #[error("invalid server configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A key below 2048 bits while the configuration does not allow test keys.
    #[error("{bits}-bit key refused: test keys are not allowed in this run")]
    InsecureKey {
        /// Size of the key.
        bits: u64,
    },
    /// A key too small for the mask mode and scales (docs/DESIGN.md: `D` must not wrap).
    #[error("{bits}-bit key is below the {needed} bits the mask and scales need")]
    KeyTooSmall {
        /// Size of the key.
        bits: u64,
        /// Bits needed ([`gelunet_protocol::MaskMode::min_key_bits`]).
        needed: u64,
    },
    /// A peer speaking another protocol version.
    #[error("protocol version {found}, expected {expected}")]
    Version {
        /// Our version.
        expected: u16,
        /// Theirs.
        found: u16,
    },
    /// A client hello naming another server key.
    #[error("the client accepted another server key")]
    WrongServerKey,
    /// A client index that was never registered.
    #[error("unknown client {client}")]
    UnknownClient {
        /// The index.
        client: usize,
    },
    /// Registration after training started.
    #[error("client registration is closed once training has started")]
    RegistrationClosed,
    /// A session message while no session is active.
    #[error("no active session")]
    NoSession,
    /// Starting a session while one is active.
    #[error("session {session} is still active")]
    SessionActive {
        /// The active session.
        session: u64,
    },
    /// A message that does not fit the session's state.
    #[error("message out of turn: expected {expected}, got {found}")]
    OutOfTurn {
        /// What the server waits for.
        expected: String,
        /// What arrived.
        found: &'static str,
    },
    /// A message from a client that is not in the active session.
    #[error("client {found} is not the session's client {expected}")]
    WrongClient {
        /// The session's client.
        expected: usize,
        /// The sender.
        found: usize,
    },
    /// A message for another session.
    #[error("message for session {found}, active session is {expected}")]
    WrongSession {
        /// The active session.
        expected: u64,
        /// The message's session.
        found: u64,
    },
    /// A message for another iteration.
    #[error("message for iteration {found}, expected {expected}")]
    WrongIteration {
        /// The current iteration.
        expected: u32,
        /// The message's iteration.
        found: u32,
    },
    /// A message for another layer.
    #[error("message for layer {found}, expected {expected}")]
    WrongLayer {
        /// The expected layer.
        expected: u32,
        /// The message's layer.
        found: u32,
    },
    /// A packing that is not the layout both sides derived from the handshake
    /// ([`gelunet_protocol::packing`]).
    #[error("unexpected packing {found:?}")]
    Packing {
        /// The packing found.
        found: Packing,
    },
    /// An inference request for a layer the model does not have.
    #[error("layer {layer} does not exist (the model has layers 1..={layers})")]
    UnknownLayer {
        /// The requested layer.
        layer: u32,
        /// The number of layers `L`.
        layers: u32,
    },
    /// A wrong number of ciphertexts or layers.
    #[error("{what}: expected {expected} values, got {found}")]
    Shape {
        /// What was counted.
        what: &'static str,
        /// The expected count.
        expected: usize,
        /// The count found.
        found: usize,
    },
}

impl ServerError {
    /// The class of the error for an [`ErrorReport`].
    pub fn code(&self) -> ErrorCode {
        use gelunet_paillier::Error as P;
        use gelunet_protocol::Error as E;
        match self {
            Self::Version { .. } => ErrorCode::Version,
            Self::NoSession
            | Self::SessionActive { .. }
            | Self::OutOfTurn { .. }
            | Self::WrongClient { .. }
            | Self::WrongSession { .. }
            | Self::WrongIteration { .. }
            | Self::WrongLayer { .. }
            | Self::RegistrationClosed => ErrorCode::OutOfTurn,
            Self::Shape { .. } | Self::Packing { .. } | Self::UnknownLayer { .. } => {
                ErrorCode::Shape
            }
            Self::Protocol(E::Packing { .. }) => ErrorCode::Range,
            Self::Paillier(P::InvalidCiphertext { .. } | P::KeyMismatch { .. }) => {
                ErrorCode::Ciphertext
            }
            Self::Paillier(P::PlaintextOutOfRange { .. }) => ErrorCode::Range,
            Self::Protocol(
                E::OutOfRange { .. } | E::MaskOutOfRange { .. } | E::NotFinite { .. },
            ) => ErrorCode::Range,
            Self::Protocol(E::ShapeMismatch { .. }) => ErrorCode::Shape,
            Self::Protocol(E::Paillier(P::InvalidCiphertext { .. } | P::KeyMismatch { .. })) => {
                ErrorCode::Ciphertext
            }
            Self::Config { .. }
            | Self::InsecureKey { .. }
            | Self::KeyTooSmall { .. }
            | Self::WrongServerKey
            | Self::UnknownClient { .. }
            | Self::Protocol(
                E::SessionBound { .. } | E::SessionMinimum { .. } | E::InvalidConfig { .. },
            ) => ErrorCode::Config,
            _ => ErrorCode::Internal,
        }
    }

    /// The error as a message for the client.
    pub fn report(&self, session: Option<u64>) -> ErrorReport {
        ErrorReport {
            session,
            code: self.code(),
            detail: self.to_string(),
        }
    }
}

/// Shorthand for the server's results.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
