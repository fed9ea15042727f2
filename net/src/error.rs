//! The single error type of the crate.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Result alias used throughout `gelunet-net`.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Everything that can go wrong in the transport layer.
///
/// Variants are structured so that callers (server and client shells) can react to the
/// cause, e.g. drop a client on [`NetError::ConnectionLost`] but abort start-up on
/// [`NetError::Io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Generating the self-signed certificate failed.
    #[error("failed to generate self-signed certificate: {0}")]
    CertificateGeneration(#[source] rcgen::Error),

    /// Reading or writing identity files failed.
    #[error("I/O error while trying to {op} `{}`: {source}", path.display())]
    Io {
        /// What we were doing (`"read"`, `"write"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A certificate or private key could not be used (bad DER, key does not match the
    /// certificate, ...).
    #[error("invalid certificate or key: {reason}")]
    InvalidIdentity {
        /// Human-readable description.
        reason: String,
    },

    /// Building the rustls / QUIC TLS configuration failed.
    #[error("TLS configuration error: {reason}")]
    TlsConfig {
        /// Human-readable description.
        reason: String,
    },

    /// A [`TransportSettings`](crate::TransportSettings) value is out of range.
    #[error("invalid transport setting `{name}`: {reason}")]
    InvalidSetting {
        /// Name of the field.
        name: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// Binding the UDP socket of an endpoint failed.
    #[error("failed to bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The requested local address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The connection attempt could not even be started (bad server name, endpoint stopped...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: quinn::ConnectError,
    },

    /// The TLS handshake failed because a certificate was refused: on the client side,
    /// the server presented a certificate other than the pinned one (or one not valid for
    /// the requested server name); on the server side, the client refused ours.
    #[error("TLS certificate rejected (the server certificate does not match the pinned certificate or server name): {reason}")]
    CertificateRejected {
        /// Detail reported by rustls / the peer.
        reason: String,
    },

    /// The TLS handshake failed for another reason (no common ALPN protocol, ...).
    #[error("TLS handshake failed: {reason}")]
    HandshakeFailed {
        /// Detail reported by rustls / the peer.
        reason: String,
    },

    /// The connection was closed or lost (peer closed it, idle timeout, reset...).
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] quinn::ConnectionError),

    /// The peer finished its side of the stream cleanly at a frame boundary: there are no
    /// more messages.
    #[error("the peer closed the stream (no more messages)")]
    Closed,

    /// The peer abandoned the stream (`RESET_STREAM`).
    #[error("stream reset by peer with error code {code}")]
    StreamReset {
        /// Application error code chosen by the peer.
        code: u64,
    },

    /// The peer stopped reading the stream (`STOP_SENDING`).
    #[error("peer stopped reading the stream with error code {code}")]
    StreamStopped {
        /// Application error code chosen by the peer.
        code: u64,
    },

    /// The local stream was already finished or reset.
    #[error("the stream is already closed locally")]
    StreamClosed,

    /// Another stream-level error (0-RTT rejection, illegal ordered read).
    #[error("stream error: {reason}")]
    Stream {
        /// Human-readable description.
        reason: String,
    },

    /// The announced frame length exceeds the receiver's limit; the payload was not read.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced (or, on the sending side, serialized) payload length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The stream finished in the middle of a frame.
    #[error("truncated frame: expected {expected} bytes but the stream finished after {received}")]
    Truncated {
        /// Bytes the frame part (length prefix or payload) should have had.
        expected: usize,
        /// Bytes actually received of that part.
        received: usize,
    },

    /// The payload could not be decoded as the expected message type.
    #[error("malformed frame of {len} bytes: {reason}")]
    Malformed {
        /// Payload length.
        len: usize,
        /// Decoder error.
        reason: String,
    },

    /// The message could not be serialized.
    #[error("failed to serialize message: {0}")]
    Serialize(#[source] postcard::Error),

    /// The endpoint was closed; no more connections will be accepted.
    #[error("the endpoint is closed")]
    EndpointClosed,

    /// An operation did not complete in time.
    #[error("timed out after {after:?} while waiting for {what}")]
    Timeout {
        /// What we were waiting for.
        what: &'static str,
        /// The time limit.
        after: std::time::Duration,
    },

    /// The peer failed application-level authentication.
    #[error("authentication failed: {reason}")]
    AuthenticationFailed {
        /// Human-readable description (never contains the token).
        reason: String,
    },
}

/// TLS alert codes (RFC 8446 §6) that mean "I refuse this certificate".
///
/// `decrypt_error` is included because in TLS 1.3 it signals a failed signature check, e.g.
/// an impostor certificate with the same issuer name as the pinned one but another key.
const CERTIFICATE_ALERTS: [u8; 8] = [
    42,  // bad_certificate
    43,  // unsupported_certificate
    44,  // certificate_revoked
    45,  // certificate_expired
    46,  // certificate_unknown
    48,  // unknown_ca
    51,  // decrypt_error
    116, // certificate_required
];

/// If `code` is a QUIC `CRYPTO_ERROR` (0x100..=0x1ff), the embedded TLS alert.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let raw = u64::from(code);
    if (0x100..0x200).contains(&raw) {
        u8::try_from(raw & 0xff).ok()
    } else {
        None
    }
}

impl From<quinn::ConnectionError> for NetError {
    /// Classifies a connection error: TLS failures become [`NetError::CertificateRejected`] /
    /// [`NetError::HandshakeFailed`], everything else [`NetError::ConnectionLost`].
    fn from(err: quinn::ConnectionError) -> Self {
        let (alert, reason) = match &err {
            quinn::ConnectionError::TransportError(te) => (tls_alert(te.code), te.to_string()),
            quinn::ConnectionError::ConnectionClosed(cc) => {
                (tls_alert(cc.error_code), format!("aborted by peer: {cc}"))
            }
            _ => (None, String::new()),
        };
        match alert {
            Some(a) if CERTIFICATE_ALERTS.contains(&a) => NetError::CertificateRejected { reason },
            Some(_) => NetError::HandshakeFailed { reason },
            None => NetError::ConnectionLost(err),
        }
    }
}

impl From<quinn::ReadError> for NetError {
    fn from(err: quinn::ReadError) -> Self {
        match err {
            quinn::ReadError::Reset(code) => NetError::StreamReset {
                code: code.into_inner(),
            },
            quinn::ReadError::ConnectionLost(e) => e.into(),
            quinn::ReadError::ClosedStream => NetError::StreamClosed,
            other => NetError::Stream {
                reason: other.to_string(),
            },
        }
    }
}

impl From<quinn::WriteError> for NetError {
    fn from(err: quinn::WriteError) -> Self {
        match err {
            quinn::WriteError::Stopped(code) => NetError::StreamStopped {
                code: code.into_inner(),
            },
            quinn::WriteError::ConnectionLost(e) => e.into(),
            quinn::WriteError::ClosedStream => NetError::StreamClosed,
            other => NetError::Stream {
                reason: other.to_string(),
            },
        }
    }
}

impl From<quinn::StoppedError> for NetError {
    fn from(err: quinn::StoppedError) -> Self {
        match err {
            quinn::StoppedError::ConnectionLost(e) => e.into(),
            other => NetError::Stream {
                reason: other.to_string(),
            },
        }
    }
}

impl From<quinn::ClosedStream> for NetError {
    fn from(_: quinn::ClosedStream) -> Self {
        NetError::StreamClosed
    }
}
