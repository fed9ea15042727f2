//! Protocol violations: what the other party's message did wrong, shared by both sides.
//!
//! The server and the client check every message of the other party before anything of
//! their state changes (docs/DESIGN.md "Wire protocol and processes": "Every message from
//! the other side is validated (shapes, ranges, ciphertext validity, session and iteration
//! numbers) and answered with a typed error"). A [`ProtocolViolation`] is the fault of
//! such a message; `gelunet_server::ServerError` and `gelunet_client::ClientError` wrap
//! it (`#[from]`), so that a fault has one variant and one [`ErrorCode`] on both sides.
//!
//! | class ([`ProtocolViolation::code`]) | variants |
//! | --- | --- |
//! | [`ErrorCode::Version`] | `Version` |
//! | [`ErrorCode::OutOfTurn`] | `NoHandshake`, `NoSession`, `SessionActive`, `OutOfTurn`, `WrongClient`, `WrongSession`, `WrongIteration`, `WrongLayer`, `WrongRequest`, `NoRequest`, `UnknownPreparation`, `StalePreparation` |
//! | [`ErrorCode::Shape`] | `Shape`, `Packing`, `UnknownLayer`, `PreparationLimit` |
//! | [`ErrorCode::Ciphertext`] | `Ciphertext` |
//! | [`ErrorCode::Range`] | `Range` |
//! | [`ErrorCode::Config`] | `EmptySession` |
//!
//! What goes back to the other party is [`ProtocolViolation::report`]: the class and the
//! class's fixed text ([`ErrorCode::detail`]), never the `Display` text, so no decrypted
//! value or bit length leaves the party that found the fault. A range violation does not
//! even keep the value ([`ProtocolViolation::Range`]).
//!
//! The errors of the shared code and of the cryptosystem are classified by
//! [`crate::Error::code`] and [`paillier_code`]; [`ProtocolViolation::try_from`] turns the
//! range and ciphertext errors among them into violations when they were raised by the
//! other party's message.

use crate::fixed::ValueKind;
use crate::messages::{ErrorCode, ErrorReport, Packing};

/// A fault of a message of the other party (see the module docs). Every variant carries
/// the values that explain it locally; none holds secret or decrypted values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A peer speaking another protocol version.
    #[error("protocol version {found}, expected {expected}")]
    Version {
        /// Our version.
        expected: u16,
        /// Theirs.
        found: u16,
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
    /// A message that does not fit the state.
    #[error("message out of turn: expected {expected}, got {found}")]
    OutOfTurn {
        /// What the receiver waits for.
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
    /// A session of 0 iterations.
    #[error("a session of 0 iterations")]
    EmptySession,
    /// A masked inference request names a preparation this party does not hold: never
    /// made, made for another layer, or used already (each is used once;
    /// docs/DESIGN.md "Preprocessed inference").
    #[error("no preparation {id} for layer {layer} (unknown, for another layer, or used)")]
    UnknownPreparation {
        /// The preparation id of the request.
        id: u64,
        /// The layer of the request.
        layer: u32,
    },
    /// A masked inference request names a preparation made with other parameters of the
    /// layer than the server holds now (the model changed since); it cannot be used.
    #[error("preparation {id} was made for other parameters of its layer")]
    StalePreparation {
        /// The preparation id of the request.
        id: u64,
    },
    /// More preprocessed layers than one connection may hold at once.
    #[error("more than {limit} prepared layers held")]
    PreparationLimit {
        /// The limit.
        limit: usize,
    },
    /// A wrong number of ciphertexts, layers or samples.
    #[error("{what}: expected {expected} values, got {found}")]
    Shape {
        /// What was counted.
        what: &'static str,
        /// The expected count.
        expected: usize,
        /// The count found.
        found: usize,
    },
    /// A packing that is not the layout both sides derived from the handshake
    /// ([`crate::packing`]).
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
    /// A ciphertext that fails validation (outside `(0, N²)`, not a unit mod `N`) or is
    /// under another key than the one it must be under.
    #[error("ciphertext refused: {source}")]
    Ciphertext {
        /// The cryptosystem's error ([`gelunet_paillier::Error::InvalidCiphertext`] or
        /// [`gelunet_paillier::Error::KeyMismatch`]).
        source: gelunet_paillier::Error,
    },
    /// A value decrypted from the message, or computed from it, outside its fixed-point,
    /// mask, slot or plaintext range. The value itself is not kept: it may be secret.
    #[error("{} out of range", range_subject(*kind))]
    Range {
        /// The kind of the value when it is a fixed-point value; `None` for masked
        /// values, packed slots and plaintexts.
        kind: Option<ValueKind>,
    },
}

fn range_subject(kind: Option<ValueKind>) -> String {
    match kind {
        Some(k) => format!("{k:?} value"),
        None => "masked, packed or plaintext value".into(),
    }
}

impl ProtocolViolation {
    /// `found` values where `expected` are due.
    ///
    /// # Errors
    /// [`ProtocolViolation::Shape`] naming `what` when the counts differ.
    pub fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Self> {
        if expected == found {
            Ok(())
        } else {
            Err(Self::Shape {
                what,
                expected,
                found,
            })
        }
    }

    /// The other party's protocol version against [`crate::messages::PROTOCOL_VERSION`].
    ///
    /// # Errors
    /// [`ProtocolViolation::Version`] for any other version.
    pub fn check_version(found: u16) -> Result<(), Self> {
        let expected = crate::messages::PROTOCOL_VERSION;
        if found == expected {
            Ok(())
        } else {
            Err(Self::Version { expected, found })
        }
    }

    /// The class of the violation for an [`ErrorReport`] (table in the module docs).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Version { .. } => ErrorCode::Version,
            Self::NoHandshake
            | Self::NoSession
            | Self::SessionActive { .. }
            | Self::OutOfTurn { .. }
            | Self::WrongClient { .. }
            | Self::WrongSession { .. }
            | Self::WrongIteration { .. }
            | Self::WrongLayer { .. }
            | Self::WrongRequest { .. }
            | Self::NoRequest
            | Self::UnknownPreparation { .. }
            | Self::StalePreparation { .. } => ErrorCode::OutOfTurn,
            Self::Shape { .. }
            | Self::Packing { .. }
            | Self::UnknownLayer { .. }
            | Self::PreparationLimit { .. } => ErrorCode::Shape,
            Self::Ciphertext { .. } => ErrorCode::Ciphertext,
            Self::Range { .. } => ErrorCode::Range,
            Self::EmptySession => ErrorCode::Config,
        }
    }

    /// The violation as a message for the other party: its class and the class's fixed
    /// text ([`ErrorReport::new`]), nothing of the `Display` text.
    pub fn report(&self, session: Option<u64>) -> ErrorReport {
        ErrorReport::new(session, self.code())
    }
}

/// The class of an error of the cryptosystem for an [`ErrorReport`]: invalid ciphertexts
/// and key mismatches are [`ErrorCode::Ciphertext`], plaintexts and encodings out of range
/// [`ErrorCode::Range`], operand shapes [`ErrorCode::Shape`], unusable keys
/// [`ErrorCode::Config`], anything else [`ErrorCode::Internal`].
pub fn paillier_code(e: &gelunet_paillier::Error) -> ErrorCode {
    use gelunet_paillier::Error as P;
    match e {
        P::InvalidCiphertext { .. } | P::KeyMismatch { .. } => ErrorCode::Ciphertext,
        P::PlaintextOutOfRange { .. } | P::EncodingOutOfRange { .. } => ErrorCode::Range,
        P::ShapeMismatch { .. } => ErrorCode::Shape,
        P::KeyTooSmall { .. }
        | P::UnsupportedKeySize { .. }
        | P::InvalidPrimes { .. }
        | P::InvalidModulus { .. } => ErrorCode::Config,
        _ => ErrorCode::Internal,
    }
}

/// An error of the shared code (the cryptosystem's among them) raised by handling the
/// other party's message, as a role's error type `E` reports it: the
/// [`ProtocolViolation`] it stands for (`ProtocolViolation::try_from`), else the error
/// itself. Both roles' `blame_peer` (`ClientError`, `ServerError`).
pub fn blame_peer<E: From<ProtocolViolation> + From<crate::Error>>(e: crate::Error) -> E {
    ProtocolViolation::try_from(e).map_or_else(E::from, E::from)
}

impl TryFrom<gelunet_paillier::Error> for ProtocolViolation {
    type Error = gelunet_paillier::Error;

    /// The violation a cryptosystem error raised by the other party's message stands for:
    /// [`ProtocolViolation::Ciphertext`] or [`ProtocolViolation::Range`] by
    /// [`paillier_code`].
    ///
    /// # Errors
    /// The error itself when it is neither (it is then not the message's fault).
    fn try_from(e: gelunet_paillier::Error) -> Result<Self, Self::Error> {
        match paillier_code(&e) {
            ErrorCode::Ciphertext => Ok(Self::Ciphertext { source: e }),
            ErrorCode::Range => Ok(Self::Range { kind: None }),
            _ => Err(e),
        }
    }
}

impl TryFrom<crate::Error> for ProtocolViolation {
    type Error = crate::Error;

    /// The violation an error of the shared code raised by the other party's message
    /// stands for: [`ProtocolViolation::Range`] (dropping the value) or
    /// [`ProtocolViolation::Ciphertext`] by [`crate::Error::code`].
    ///
    /// # Errors
    /// The error itself when it is neither (configuration, shapes of the shared math,
    /// overflow, codec: not classified as the message's fault).
    fn try_from(e: crate::Error) -> Result<Self, Self::Error> {
        use crate::Error as E;
        match e {
            E::Paillier(p) => Self::try_from(p).map_err(E::Paillier),
            E::OutOfRange { kind, .. } | E::NotFinite { kind, .. } => {
                Ok(Self::Range { kind: Some(kind) })
            }
            E::MaskOutOfRange { .. } | E::Packing { .. } => Ok(Self::Range { kind: None }),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gelunet_paillier::KeyId;

    fn all() -> Vec<(ProtocolViolation, ErrorCode, &'static str)> {
        use ProtocolViolation as V;
        vec![
            (
                V::Version {
                    expected: 2,
                    found: 7,
                },
                ErrorCode::Version,
                "protocol version 7, expected 2",
            ),
            (V::NoHandshake, ErrorCode::OutOfTurn, "no handshake yet"),
            (V::NoSession, ErrorCode::OutOfTurn, "no active session"),
            (
                V::SessionActive { session: 3 },
                ErrorCode::OutOfTurn,
                "session 3 is still active",
            ),
            (
                V::OutOfTurn {
                    expected: "FinalUpdate".into(),
                    found: "MaskedUpdate",
                },
                ErrorCode::OutOfTurn,
                "message out of turn: expected FinalUpdate, got MaskedUpdate",
            ),
            (
                V::WrongClient {
                    expected: 0,
                    found: 2,
                },
                ErrorCode::OutOfTurn,
                "client 2 is not the session's client 0",
            ),
            (
                V::WrongSession {
                    expected: 4,
                    found: 5,
                },
                ErrorCode::OutOfTurn,
                "message for session 5, active session is 4",
            ),
            (
                V::WrongIteration {
                    expected: 0,
                    found: 1,
                },
                ErrorCode::OutOfTurn,
                "message for iteration 1, expected 0",
            ),
            (
                V::WrongLayer {
                    expected: 1,
                    found: 2,
                },
                ErrorCode::OutOfTurn,
                "message for layer 2, expected 1",
            ),
            (
                V::WrongRequest {
                    expected: 8,
                    found: 9,
                },
                ErrorCode::OutOfTurn,
                "inference answer for request 9, expected 8",
            ),
            (V::NoRequest, ErrorCode::OutOfTurn, "no inference request pending"),
            (V::EmptySession, ErrorCode::Config, "a session of 0 iterations"),
            (
                V::UnknownPreparation { id: 7, layer: 2 },
                ErrorCode::OutOfTurn,
                "no preparation 7 for layer 2 (unknown, for another layer, or used)",
            ),
            (
                V::StalePreparation { id: 7 },
                ErrorCode::OutOfTurn,
                "preparation 7 was made for other parameters of its layer",
            ),
            (
                V::PreparationLimit { limit: 64 },
                ErrorCode::Shape,
                "more than 64 prepared layers held",
            ),
            (
                V::Shape {
                    what: "activations",
                    expected: 12,
                    found: 11,
                },
                ErrorCode::Shape,
                "activations: expected 12 values, got 11",
            ),
            (
                V::Packing {
                    found: Packing {
                        samples_per_ciphertext: 2,
                        slot_bits: 64,
                    },
                },
                ErrorCode::Shape,
                "unexpected packing Packing { samples_per_ciphertext: 2, slot_bits: 64 }",
            ),
            (
                V::UnknownLayer {
                    layer: 4,
                    layers: 2,
                },
                ErrorCode::Shape,
                "layer 4 does not exist (the model has layers 1..=2)",
            ),
            (
                V::Ciphertext {
                    source: gelunet_paillier::Error::InvalidCiphertext {
                        reason: "c is not below N²",
                    },
                },
                ErrorCode::Ciphertext,
                "ciphertext refused: invalid ciphertext: c is not below N²",
            ),
            (
                V::Ciphertext {
                    source: gelunet_paillier::Error::KeyMismatch {
                        expected: KeyId([0x11; 8]),
                        found: KeyId([0x22; 8]),
                    },
                },
                ErrorCode::Ciphertext,
                "ciphertext refused: ciphertext is under key 2222222222222222, expected key 1111111111111111",
            ),
            (
                V::Range {
                    kind: Some(ValueKind::PreActivation),
                },
                ErrorCode::Range,
                "PreActivation value out of range",
            ),
            (
                V::Range { kind: None },
                ErrorCode::Range,
                "masked, packed or plaintext value out of range",
            ),
        ]
    }

    #[test]
    fn error_strings() {
        for (v, code, text) in all() {
            assert_eq!(v.to_string(), text, "{v:?}");
            assert_eq!(v.code(), code, "{v:?}");
        }
    }

    #[test]
    fn reports_carry_the_fixed_text_of_their_code() {
        let fixed = [
            (ErrorCode::Version, "unsupported protocol version"),
            (
                ErrorCode::OutOfTurn,
                "message out of turn (wrong state, session, iteration, layer or request)",
            ),
            (
                ErrorCode::Shape,
                "wrong number of values or layers, or an unexpected packing",
            ),
            (
                ErrorCode::Ciphertext,
                "invalid ciphertext or ciphertext under the wrong key",
            ),
            (
                ErrorCode::Range,
                "value outside its fixed-point or mask range",
            ),
            (ErrorCode::Config, "unacceptable configuration or key"),
            (ErrorCode::Internal, "internal error"),
        ];
        for (code, text) in fixed {
            assert_eq!(code.detail(), text);
        }
        for (v, code, _) in all() {
            let r = v.report(Some(6));
            assert_eq!(
                r,
                ErrorReport {
                    session: Some(6),
                    code,
                    detail: code.detail().into(),
                }
            );
        }
    }

    #[test]
    fn range_errors_lose_their_value_on_the_way_to_a_violation() {
        let secret = "123456789123456789";
        let e = crate::Error::OutOfRange {
            kind: ValueKind::PreActivation,
            value: secret.into(),
            max_bits: 40,
        };
        assert_eq!(e.code(), ErrorCode::Range);
        let v = ProtocolViolation::try_from(e).unwrap();
        assert_eq!(
            v,
            ProtocolViolation::Range {
                kind: Some(ValueKind::PreActivation)
            }
        );
        for shown in [v.to_string(), format!("{v:?}"), v.report(None).detail] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("40"), "{shown}");
        }
        let mask = crate::Error::MaskOutOfRange {
            reason: format!("D = {secret}"),
        };
        assert_eq!(
            ProtocolViolation::try_from(mask),
            Ok(ProtocolViolation::Range { kind: None })
        );
        let plain = crate::Error::Paillier(gelunet_paillier::Error::PlaintextOutOfRange {
            bits: 600,
            key_bits: 512,
        });
        assert_eq!(
            ProtocolViolation::try_from(plain),
            Ok(ProtocolViolation::Range { kind: None })
        );
    }

    #[test]
    fn only_range_and_ciphertext_errors_become_violations() {
        let bad_ct = gelunet_paillier::Error::InvalidCiphertext { reason: "zero" };
        assert_eq!(
            ProtocolViolation::try_from(crate::Error::Paillier(bad_ct.clone())),
            Ok(ProtocolViolation::Ciphertext {
                source: bad_ct.clone()
            })
        );
        assert_eq!(paillier_code(&bad_ct), ErrorCode::Ciphertext);
        let kept = [
            crate::Error::InvalidConfig { reason: "x".into() },
            crate::Error::Overflow { op: "matmul" },
            crate::Error::ShapeMismatch {
                what: "gradients",
                expected: "2x3".into(),
                found: "3x2".into(),
            },
            crate::Error::Paillier(gelunet_paillier::Error::InvalidModulus { reason: "even" }),
        ];
        for e in kept {
            assert_eq!(ProtocolViolation::try_from(e.clone()), Err(e));
        }
        let small = gelunet_paillier::Error::KeyTooSmall {
            bits: 512,
            min_bits: 2048,
        };
        assert_eq!(paillier_code(&small), ErrorCode::Config);
        assert_eq!(ProtocolViolation::try_from(small.clone()), Err(small));
    }

    #[test]
    fn shared_errors_have_one_class() {
        use crate::Error as E;
        let cases = [
            (
                E::ShapeMismatch {
                    what: "w",
                    expected: "1".into(),
                    found: "2".into(),
                },
                ErrorCode::Shape,
            ),
            (
                E::SessionBound {
                    iterations: 5,
                    batch: 1,
                    min_fan_in: 4,
                },
                ErrorCode::Config,
            ),
            (E::InvalidSpec { reason: "x".into() }, ErrorCode::Config),
            (
                E::Packing {
                    reason: "slot".into(),
                },
                ErrorCode::Range,
            ),
            (
                E::VersionMismatch {
                    expected: 2,
                    found: 1,
                },
                ErrorCode::Version,
            ),
            (
                E::Codec {
                    reason: "eof".into(),
                },
                ErrorCode::Internal,
            ),
            (
                E::Paillier(gelunet_paillier::Error::KeyMismatch {
                    expected: KeyId([1; 8]),
                    found: KeyId([2; 8]),
                }),
                ErrorCode::Ciphertext,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }
}
