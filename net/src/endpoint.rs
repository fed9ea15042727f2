//! TLS configuration (pinned self-signed certificate) and QUIC endpoints.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{NetError, Result};
use crate::identity::ServerIdentity;
use crate::settings::TransportSettings;

/// ALPN protocol identifier negotiated by gelunet peers; a peer speaking anything else is
/// refused during the handshake.
pub const ALPN: &[u8] = b"gelunet/1";

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(context: &str) -> impl FnOnce(rustls::Error) -> NetError + '_ {
    move |e| NetError::TlsConfig {
        reason: format!("{context}: {e}"),
    }
}

/// A TLS configuration QUIC cannot use, as [`NetError::TlsConfig`].
fn quic_err(e: impl std::fmt::Display) -> NetError {
    NetError::TlsConfig {
        reason: e.to_string(),
    }
}

/// Always presents the one server certificate.
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// Builds the quinn server configuration (TLS 1.3, ALPN [`ALPN`], no client certificates,
/// transport tuning from `settings`).
///
/// # Errors
/// [`NetError::TlsConfig`] or [`NetError::InvalidSetting`].
pub fn server_config(
    identity: &ServerIdentity,
    settings: &TransportSettings,
) -> Result<quinn::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("TLS 1.3 unsupported"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCert(identity.certified_key())));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT is not used: every connection starts with a fresh authenticated handshake.
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(quic_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport_config()?));
    Ok(config)
}

/// Builds a client configuration that trusts exactly one certificate: the pinned,
/// self-signed server certificate (a self-signed certificate is its own root).
///
/// A server presenting any other certificate, or connecting under a server name not listed
/// in the certificate, is refused during the handshake with
/// [`NetError::CertificateRejected`].
///
/// # Errors
/// [`NetError::InvalidIdentity`] if `pinned_cert` cannot be used as a trust anchor,
/// [`NetError::TlsConfig`] or [`NetError::InvalidSetting`].
pub fn client_config(
    pinned_cert: CertificateDer<'static>,
    settings: &TransportSettings,
) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pinned_cert)
        .map_err(|e| NetError::InvalidIdentity {
            reason: format!("pinned certificate is not usable as a trust anchor: {e}"),
        })?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("TLS 1.3 unsupported"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(quic_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(settings.transport_config()?));
    Ok(config)
}

/// Creates a server endpoint listening on `bind` (use port 0 for an ephemeral port and read
/// it back with [`quinn::Endpoint::local_addr`]). Must be called inside a tokio runtime.
///
/// # Errors
/// [`NetError::Bind`] if the socket cannot be bound; configuration errors as in
/// [`server_config`].
pub fn server_endpoint(
    bind: SocketAddr,
    identity: &ServerIdentity,
    settings: &TransportSettings,
) -> Result<quinn::Endpoint> {
    let config = server_config(identity, settings)?;
    quinn::Endpoint::server(config, bind).map_err(|source| NetError::Bind { addr: bind, source })
}

/// The unspecified local address (port 0) of the same family as `server`, suitable for
/// [`client_endpoint`].
pub fn client_bind_addr(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Creates a client-only endpoint bound to `bind` (typically
/// [`client_bind_addr`]`(server_addr)`). The TLS configuration is supplied per connection
/// by [`connect`]. Must be called inside a tokio runtime.
///
/// # Errors
/// [`NetError::Bind`].
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint> {
    quinn::Endpoint::client(bind).map_err(|source| NetError::Bind { addr: bind, source })
}

/// Connects to `server_addr`, verifying that the server presents exactly `pinned_cert` and
/// that it is valid for `server_name` (one of the names the certificate was generated for).
/// The handshake is bounded by `settings.handshake_timeout`.
///
/// # Errors
/// [`NetError::CertificateRejected`] if the server's certificate is not the pinned one,
/// [`NetError::HandshakeFailed`], [`NetError::Timeout`], [`NetError::ConnectionLost`],
/// [`NetError::Connect`] (invalid server name, endpoint closed) and configuration errors.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    server_addr: SocketAddr,
    server_name: &str,
    pinned_cert: CertificateDer<'static>,
    settings: &TransportSettings,
) -> Result<quinn::Connection> {
    let config = client_config(pinned_cert, settings)?;
    let connecting = endpoint
        .connect_with(config, server_addr, server_name)
        .map_err(|source| NetError::Connect {
            addr: server_addr,
            source,
        })?;
    let connection = tokio::time::timeout(settings.handshake_timeout, connecting)
        .await
        .map_err(|_| NetError::Timeout {
            what: "the QUIC handshake",
            after: settings.handshake_timeout,
        })??;
    tracing::debug!(%server_addr, server_name, "connected");
    Ok(connection)
}

/// Waits for the next incoming connection and completes its handshake (bounded by
/// `settings.handshake_timeout`).
///
/// A failed handshake of one client is returned as an error (e.g.
/// [`NetError::CertificateRejected`] when the client did not trust our certificate,
/// [`NetError::Timeout`]); servers should log it and call `accept` again.
///
/// # Errors
/// [`NetError::EndpointClosed`] once the endpoint is closed (stop accepting), otherwise
/// per-connection handshake errors.
pub async fn accept(
    endpoint: &quinn::Endpoint,
    settings: &TransportSettings,
) -> Result<quinn::Connection> {
    let incoming = endpoint.accept().await.ok_or(NetError::EndpointClosed)?;
    complete_handshake(incoming, settings).await
}

/// Completes the handshake of one incoming connection (bounded by
/// `settings.handshake_timeout`): the second half of [`accept`], for servers that take
/// incoming connections with `Endpoint::accept` themselves (to bound how many handshakes
/// run at once and handle them concurrently).
///
/// # Errors
/// Per-connection handshake errors ([`NetError::Timeout`],
/// [`NetError::CertificateRejected`], ...).
pub async fn complete_handshake(
    incoming: quinn::Incoming,
    settings: &TransportSettings,
) -> Result<quinn::Connection> {
    let remote = incoming.remote_address();
    let connection = tokio::time::timeout(settings.handshake_timeout, incoming)
        .await
        .map_err(|_| NetError::Timeout {
            what: "the QUIC handshake",
            after: settings.handshake_timeout,
        })?
        .map_err(|e| {
            let err = NetError::from(e);
            tracing::debug!(%remote, error = %err, "handshake failed");
            err
        })?;
    tracing::debug!(%remote, "accepted connection");
    Ok(connection)
}
