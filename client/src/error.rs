//! The client's error type.

use gelunet_protocol::messages::{ErrorCode, ErrorReport, Packing};

/// Everything that can go wrong in the client role. After any error the client's state is
/// unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An error of the shared protocol code (ranges, shapes, labels, …).
    #[error(transparent)]
    Protocol(#[from] gelunet_protocol::Error),
    /// An error of the cryptosystem (invalid ciphertext, wrong key, …).
    #[error(transparent)]
    Paillier(#[from] gelunet_paillier::Error),
    /// A server speaking another protocol version.
    #[error("protocol version {found}, expected {expected}")]
    Version {
        /// Our version.
        expected: u16,
        /// Theirs.
        found: u16,
    },
    /// A server key below 2048 bits while test keys are not allowed.
    #[error("{bits}-bit server key refused: test keys are not allowed in this run")]
    InsecureKey {
        /// Size of the key.
        bits: u64,
    },
    /// A key too small for the mask mode and scales.
    #[error("{bits}-bit key is below the {needed} bits the mask and scales need")]
    KeyTooSmall {
        /// Size of the key.
        bits: u64,
        /// Bits needed.
        needed: u64,
    },
    /// An insecure mask mode the client was not configured to accept.
    #[error("the server asks for an unmasked-gradient run, which this client refuses")]
    InsecureMask,
    /// The server's model does not fit the client's data.
    #[error("data mismatch: {reason}")]
    Data {
        /// What does not fit.
        reason: String,
    },
    /// A message before the handshake.
    #[error("no handshake yet")]
    NoHandshake,
    /// A session message while no session is active.
    #[error("no active session")]
    NoSession,
    /// A session start while one is active.
    #[error("session {session} is still active")]
    SessionActive {
        /// The active session.
        session: u64,
    },
    /// A message that does not fit the session's state.
    #[error("message out of turn: expected {expected}, got {found}")]
    OutOfTurn {
        /// What the client waits for.
        expected: String,
        /// What arrived.
        found: &'static str,
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
    /// A packing that is not the layout both sides derived from the handshake.
    #[error("unexpected packing {found:?}")]
    Packing {
        /// The packing found.
        found: Packing,
    },
    /// A wrong number of ciphertexts.
    #[error("{what}: expected {expected} values, got {found}")]
    Shape {
        /// What was counted.
        what: &'static str,
        /// The expected count.
        expected: usize,
        /// The count found.
        found: usize,
    },
    /// A session of 0 iterations.
    #[error("a session of 0 iterations")]
    EmptySession,
    /// An inference answer for another request.
    #[error("inference answer for request {found}, expected {expected}")]
    WrongRequest {
        /// The pending request.
        expected: u64,
        /// The answer's request id.
        found: u64,
    },
    /// An inference answer while no request is pending.
    #[error("no inference request pending")]
    NoRequest,
}

impl ClientError {
    /// The class of the error for an [`ErrorReport`].
    pub fn code(&self) -> ErrorCode {
        use gelunet_paillier::Error as P;
        use gelunet_protocol::Error as E;
        match self {
            Self::Version { .. } => ErrorCode::Version,
            Self::NoHandshake
            | Self::NoSession
            | Self::SessionActive { .. }
            | Self::OutOfTurn { .. }
            | Self::WrongSession { .. }
            | Self::WrongIteration { .. }
            | Self::WrongLayer { .. }
            | Self::WrongRequest { .. }
            | Self::NoRequest => ErrorCode::OutOfTurn,
            Self::Shape { .. } | Self::Packing { .. } | Self::Data { .. } => ErrorCode::Shape,
            Self::Paillier(P::InvalidCiphertext { .. } | P::KeyMismatch { .. }) => {
                ErrorCode::Ciphertext
            }
            Self::Paillier(P::PlaintextOutOfRange { .. })
            | Self::Protocol(
                E::OutOfRange { .. }
                | E::NotFinite { .. }
                | E::MaskOutOfRange { .. }
                | E::Packing { .. },
            ) => ErrorCode::Range,
            Self::InsecureKey { .. }
            | Self::KeyTooSmall { .. }
            | Self::InsecureMask
            | Self::EmptySession => ErrorCode::Config,
            _ => ErrorCode::Internal,
        }
    }

    /// The error as a message for the server.
    pub fn report(&self, session: Option<u64>) -> ErrorReport {
        ErrorReport {
            session,
            code: self.code(),
            detail: self.to_string(),
        }
    }
}

/// Shorthand for the client's results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
