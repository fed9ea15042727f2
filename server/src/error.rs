//! The server's error type.
//!
//! Faults of a client's message are [`ProtocolViolation`]s, shared with the client crate
//! ([`gelunet_protocol::violation`]); the other variants are the server's own
//! (configuration, keys, registration, driver misuse) with their own small mapping in
//! [`ServerError::code`].

use gelunet_protocol::messages::{ErrorCode, ErrorReport};
use gelunet_protocol::violation::{blame_peer, ProtocolViolation};

/// Everything that can go wrong in the server role. After any error the server's state is
/// unchanged (the message is refused as a whole).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A client's message that breaks the protocol: out of turn, wrong
    /// client/session/iteration/layer, shape, packing, invalid ciphertext, decrypted value
    /// out of range, another version.
    #[error(transparent)]
    Violation(#[from] ProtocolViolation),
    /// An error of the shared protocol code (configuration, session bound, …).
    #[error(transparent)]
    Protocol(#[from] gelunet_protocol::Error),
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
    /// Protocol v2: the model exists in the clear only once the clients released it.
    #[error("the model has not been released by the clients")]
    NotReleased,
    /// Protocol v2: a release that does not unmask to a model within the scales' ranges
    /// (a wrong seed or version).
    #[error("release refused: {reason}")]
    Release {
        /// What is wrong (no weights).
        reason: String,
    },
    /// A key too small for the mask mode and scales (docs/DESIGN.md: `D` must not wrap).
    #[error("{bits}-bit key is below the {needed} bits the mask and scales need")]
    KeyTooSmall {
        /// Size of the key.
        bits: u64,
        /// Bits needed ([`gelunet_protocol::MaskMode::min_key_bits`]).
        needed: u64,
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
    /// Starting a session while one is active ([`crate::Server::start_session`]).
    #[error("session {session} is still active")]
    SessionActive {
        /// The active session.
        session: u64,
    },
}

impl ServerError {
    /// Reclassifies the range and ciphertext errors of the shared code and the
    /// cryptosystem as [`ServerError::Violation`]s ([`blame_peer`]): applied to the result
    /// of handling a client's message, whose contents caused them.
    pub(crate) fn blame_peer(self) -> Self {
        match self {
            Self::Protocol(e) => blame_peer(e),
            other => other,
        }
    }

    /// The class of the error for an [`ErrorReport`]: a violation's
    /// [`ProtocolViolation::code`], the shared code's [`gelunet_protocol::Error::code`]
    /// (the cryptosystem's errors among them); configuration and key errors
    /// [`ErrorCode::Config`], registration closed and a session still active
    /// [`ErrorCode::OutOfTurn`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Violation(v) => v.code(),
            Self::Protocol(e) => e.code(),
            Self::Config { .. }
            | Self::InsecureKey { .. }
            | Self::KeyTooSmall { .. }
            | Self::WrongServerKey
            | Self::UnknownClient { .. }
            | Self::NotReleased
            | Self::Release { .. } => ErrorCode::Config,
            Self::RegistrationClosed | Self::SessionActive { .. } => ErrorCode::OutOfTurn,
        }
    }

    /// The error as a message for the client: its [`ServerError::code`] and the code's
    /// fixed text ([`ErrorReport::new`]); nothing of the `Display` text leaves the server.
    pub fn report(&self, session: Option<u64>) -> ErrorReport {
        ErrorReport::new(session, self.code())
    }
}

/// The cryptosystem's errors are errors of the shared code
/// ([`gelunet_protocol::Error::Paillier`]).
impl From<gelunet_paillier::Error> for ServerError {
    fn from(e: gelunet_paillier::Error) -> Self {
        Self::Protocol(e.into())
    }
}

/// Shorthand for the server's results.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_strings_and_reports() {
        let cases = [
            (
                ServerError::Violation(ProtocolViolation::NoSession),
                ErrorCode::OutOfTurn,
                "no active session",
            ),
            (
                ServerError::Config {
                    reason: "no registered clients".into(),
                },
                ErrorCode::Config,
                "invalid server configuration: no registered clients",
            ),
            (
                ServerError::InsecureKey { bits: 512 },
                ErrorCode::Config,
                "512-bit key refused: test keys are not allowed in this run",
            ),
            (
                ServerError::KeyTooSmall {
                    bits: 512,
                    needed: 600,
                },
                ErrorCode::Config,
                "512-bit key is below the 600 bits the mask and scales need",
            ),
            (
                ServerError::WrongServerKey,
                ErrorCode::Config,
                "the client accepted another server key",
            ),
            (
                ServerError::UnknownClient { client: 7 },
                ErrorCode::Config,
                "unknown client 7",
            ),
            (
                ServerError::RegistrationClosed,
                ErrorCode::OutOfTurn,
                "client registration is closed once training has started",
            ),
            (
                ServerError::SessionActive { session: 2 },
                ErrorCode::OutOfTurn,
                "session 2 is still active",
            ),
        ];
        for (e, code, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.report(Some(1)), ErrorReport::new(Some(1), code));
            assert_eq!(e.report(None).detail, code.detail());
        }
    }

    #[test]
    fn peer_faults_become_violations_and_keep_their_code() {
        let range = ServerError::from(gelunet_protocol::Error::MaskOutOfRange {
            reason: "D = 1234567".into(),
        });
        assert_eq!(range.code(), ErrorCode::Range);
        let blamed = range.blame_peer();
        assert_eq!(
            blamed,
            ServerError::Violation(ProtocolViolation::Range { kind: None })
        );
        assert!(!blamed.to_string().contains("1234567"), "{blamed}");
        let bound =
            ServerError::from(gelunet_protocol::Error::InvalidConfig { reason: "x".into() });
        assert_eq!(bound.clone().blame_peer(), bound);
        assert_eq!(bound.code(), ErrorCode::Config);
    }
}
