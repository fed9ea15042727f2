//! QUIC transport shared by the gelunet server and client shells.
//!
//! * [`ServerIdentity`]: self-signed certificate + private key (rcgen), stored as
//!   `cert.der` / `key.der`; clients pin the certificate ([`client_config`]).
//! * [`TransportSettings`]: idle timeout, keep-alives and flow-control windows sized for
//!   long homomorphic computations and large ciphertext batches.
//! * [`send_message`] / [`recv_message`] and [`Channel`]: 4-byte big-endian length-prefixed
//!   postcard frames over QUIC streams.
//! * [`server_endpoint`], [`client_endpoint`], [`connect`], [`accept`]: endpoints (quinn 0.11,
//!   rustls 0.23 with the *ring* provider, TLS 1.3, ALPN [`ALPN`]).
//! * [`tokens_equal`], [`authenticate_server_side`]: timing-safe credential checks.
//!
//! All functions are async on tokio and report failures through [`NetError`].

mod auth;
mod endpoint;
mod error;
mod framing;
mod identity;
mod settings;

pub use auth::{authenticate_server_side, tokens_equal};
pub use endpoint::{
    accept, client_bind_addr, client_config, client_endpoint, complete_handshake, connect,
    server_config, server_endpoint, ALPN,
};
pub use error::{NetError, Result};
pub use framing::{
    decode_frame, encode_frame, recv_message, send_message, Channel, LEN_PREFIX, PREAUTH_MAX_FRAME,
};
pub use identity::{
    certificate_fingerprint, load_certificate, write_atomic, ServerIdentity, CERT_FILE, KEY_FILE,
};
pub use settings::TransportSettings;

/// Re-exports of the libraries appearing in this crate's API.
pub use quinn;
pub use rustls::pki_types::CertificateDer;
pub use zeroize::Zeroizing;
