//! The client's error type.
//!
//! Faults of a server's message are [`ProtocolViolation`]s, shared with the server crate
//! ([`gelunet_protocol::violation`]); the other variants are the client's own (keys,
//! mask, data) with their own small mapping in [`ClientError::code`].

use gelunet_protocol::messages::{ErrorCode, ErrorReport};
use gelunet_protocol::violation::{blame_peer, ProtocolViolation};

/// Everything that can go wrong in the client role. After any error the client's state is
/// unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A server's message that breaks the protocol: out of turn, wrong
    /// session/iteration/layer/request, shape, packing, invalid ciphertext, decrypted value
    /// out of range, another version, an empty session.
    #[error(transparent)]
    Violation(#[from] ProtocolViolation),
    /// An error of the shared protocol code (spec, scales, the client's own data out of
    /// range, …).
    #[error(transparent)]
    Protocol(#[from] gelunet_protocol::Error),
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
    /// The server's configuration breaks this client's own policy
    /// ([`crate::ClientPolicy`]): a mask width, key size, model or batch size, session
    /// length or protocol the client does not accept.
    #[error("refused by this client's policy: {reason}")]
    Policy {
        /// What the client refuses.
        reason: String,
    },
    /// A protocol v2 server, and no group key was given to this client.
    #[error("protocol v2 needs the clients' group key, and this client has none")]
    NoGroupKey,
    /// The server's model does not fit the client's data.
    #[error("data mismatch: {reason}")]
    Data {
        /// What does not fit.
        reason: String,
    },
}

impl ClientError {
    /// Reclassifies the range and ciphertext errors of the shared code and the
    /// cryptosystem as [`ClientError::Violation`]s ([`blame_peer`]): applied to the result
    /// of handling a server's message, whose contents caused them.
    pub(crate) fn blame_peer(self) -> Self {
        match self {
            Self::Protocol(e) => blame_peer(e),
            other => other,
        }
    }

    /// Whether the error must end the session and the connection: a range, packing or
    /// ciphertext fault of a value the client decrypted (or was about to). Answering such
    /// faults and going on would let a malicious server use accept/refuse as a decryption
    /// oracle (`docs/DESIGN.md` "Side channels").
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            Self::Violation(
                ProtocolViolation::Range { .. }
                    | ProtocolViolation::Packing { .. }
                    | ProtocolViolation::Ciphertext { .. }
            )
        )
    }

    /// The class of the error for an [`ErrorReport`]: a violation's
    /// [`ProtocolViolation::code`], the shared code's [`gelunet_protocol::Error::code`]
    /// (the cryptosystem's errors among them); key and mask refusals [`ErrorCode::Config`],
    /// data that does not fit the model [`ErrorCode::Shape`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Violation(v) => v.code(),
            Self::Protocol(e) => e.code(),
            Self::InsecureKey { .. }
            | Self::KeyTooSmall { .. }
            | Self::InsecureMask
            | Self::Policy { .. }
            | Self::NoGroupKey => ErrorCode::Config,
            Self::Data { .. } => ErrorCode::Shape,
        }
    }

    /// The error as a message for the server: its [`ClientError::code`] and the code's
    /// fixed text ([`ErrorReport::new`]); nothing of the `Display` text leaves the client.
    pub fn report(&self, session: Option<u64>) -> ErrorReport {
        ErrorReport::new(session, self.code())
    }
}

/// The cryptosystem's errors are errors of the shared code
/// ([`gelunet_protocol::Error::Paillier`]).
impl From<gelunet_paillier::Error> for ClientError {
    fn from(e: gelunet_paillier::Error) -> Self {
        Self::Protocol(e.into())
    }
}

/// Shorthand for the client's results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_strings_and_reports() {
        let cases = [
            (
                ClientError::Violation(ProtocolViolation::EmptySession),
                ErrorCode::Config,
                "a session of 0 iterations",
            ),
            (
                ClientError::InsecureKey { bits: 512 },
                ErrorCode::Config,
                "512-bit server key refused: test keys are not allowed in this run",
            ),
            (
                ClientError::KeyTooSmall {
                    bits: 512,
                    needed: 600,
                },
                ErrorCode::Config,
                "512-bit key is below the 600 bits the mask and scales need",
            ),
            (
                ClientError::InsecureMask,
                ErrorCode::Config,
                "the server asks for an unmasked-gradient run, which this client refuses",
            ),
            (
                ClientError::Policy {
                    reason: "sigma 0 is below the 128 bits this client requires".into(),
                },
                ErrorCode::Config,
                "refused by this client's policy: sigma 0 is below the 128 bits this client requires",
            ),
            (
                ClientError::NoGroupKey,
                ErrorCode::Config,
                "protocol v2 needs the clients' group key, and this client has none",
            ),
            (
                ClientError::Data {
                    reason: "6 features, the model has 4 inputs".into(),
                },
                ErrorCode::Shape,
                "data mismatch: 6 features, the model has 4 inputs",
            ),
        ];
        for (e, code, text) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.code(), code, "{e}");
            assert_eq!(e.report(Some(3)), ErrorReport::new(Some(3), code));
        }
    }

    #[test]
    fn a_shape_mismatch_has_the_same_code_as_on_the_server() {
        // The server always called this `Shape`, the client `Internal`.
        let e = ClientError::from(gelunet_protocol::Error::ShapeMismatch {
            what: "gradients",
            expected: "2x3".into(),
            found: "3x2".into(),
        });
        assert_eq!(e.code(), ErrorCode::Shape);
    }

    #[test]
    fn decrypted_values_out_of_range_stay_with_the_client() {
        let e = ClientError::from(gelunet_protocol::Error::OutOfRange {
            kind: gelunet_protocol::ValueKind::PreActivation,
            value: "98765432109876543210".into(),
            max_bits: 40,
        })
        .blame_peer();
        assert_eq!(e.code(), ErrorCode::Range);
        assert!(matches!(
            e,
            ClientError::Violation(ProtocolViolation::Range { .. })
        ));
        for shown in [e.to_string(), format!("{e:?}"), e.report(None).detail] {
            assert!(!shown.contains("98765432109876543210"), "{shown}");
        }
    }
}
