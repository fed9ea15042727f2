//! Transport options, the server's identity and listening endpoint, client credentials
//! (`NAME:TOKEN`) and tokens.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gelunet_net::{ServerIdentity, TransportSettings, Zeroizing};
use gelunet_shell::server::Credential;

use crate::model_file::write_atomic;
use crate::{Result, RunError};

/// Transport options (`--idle-timeout`, `--response-timeout`; with the `clap` feature
/// these flags, as `clap::Args`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct NetOptions {
    /// QUIC idle timeout in seconds (at least 2): a peer that vanishes without closing its
    /// connection is detected after this long; keep-alives every idle/4 s, at most 5 s.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 60))]
    pub idle_timeout: u64,
    /// Longest wait for one protocol answer, in seconds (positive).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 600))]
    pub response_timeout: u64,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            idle_timeout: 60,
            response_timeout: 600,
        }
    }
}

impl NetOptions {
    /// The transport settings.
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] for an idle timeout below 2 s or a zero response
    /// timeout.
    pub fn transport(&self) -> Result<TransportSettings> {
        if self.idle_timeout < 2 {
            return Err(RunError::option(
                "--idle-timeout",
                "must be at least 2 seconds",
            ));
        }
        if self.response_timeout == 0 {
            return Err(RunError::option("--response-timeout", "must be positive"));
        }
        let idle = Duration::from_secs(self.idle_timeout);
        Ok(TransportSettings {
            idle_timeout: idle,
            keep_alive_interval: (idle / 4).min(Duration::from_secs(5)),
            ..TransportSettings::default()
        })
    }

    /// The response timeout as a duration.
    pub fn response(&self) -> Duration {
        Duration::from_secs(self.response_timeout)
    }
}

/// Where a server listens, its certificate and the clients it accepts (`serve`,
/// `serve-model`).
#[derive(Clone)]
pub struct ListenOptions {
    /// Address to listen on (port 0: any free port, written to `STATE_DIR/listen.addr`).
    pub listen: SocketAddr,
    /// Directory of the server's certificate (`cert.der`, given to clients) and key
    /// (`key.der`); generated on first use.
    pub state_dir: PathBuf,
    /// Extra names (DNS or IP) for a newly generated certificate, besides `localhost` and
    /// `127.0.0.1`.
    pub cert_names: Vec<String>,
    /// A file of client credentials, one `NAME:TOKEN` per line (`#` comments).
    pub tokens_file: Option<PathBuf>,
    /// Client credentials given directly (see [`parse_credential`]).
    pub credentials: Vec<Credential>,
}

// `Credential`'s Debug redacts the tokens.
gelunet_protocol::redacted_debug!(
    ListenOptions { listen, state_dir, cert_names, tokens_file, credentials } secret {}
);

/// What a server prints once it listens (`serve`, `serve-model`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The bound address (also in `STATE_DIR/listen.addr`).
    pub addr: SocketAddr,
    /// The certificate clients pin (`STATE_DIR/cert.der`).
    pub cert_path: PathBuf,
    /// Its SHA-256 fingerprint (hex).
    pub fingerprint: String,
}

/// One line: `listening on ADDR; certificate PATH (sha256 HEX)`, as `serve` and
/// `serve-model` print it.
impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listening on {}; certificate {} (sha256 {})",
            self.addr,
            self.cert_path.display(),
            self.fingerprint
        )
    }
}

/// The state directory of a server: `--state-dir`, or the one `serve --resume STATE_DIR`
/// names (both: they must be the same).
///
/// # Errors
/// [`RunError::InvalidOption`] without either, or with two different ones.
pub fn resolve_state_dir(state_dir: Option<&Path>, resume: Option<&Path>) -> Result<PathBuf> {
    match (state_dir, resume) {
        (Some(d), Some(r)) if d != r => Err(RunError::option(
            "--resume",
            format!("{} is not the --state-dir {}", r.display(), d.display()),
        )),
        (Some(d), _) | (None, Some(d)) => Ok(d.to_path_buf()),
        (None, None) => Err(RunError::option("--state-dir", "is required")),
    }
}

/// Parses a credential `NAME:TOKEN` (both non-empty after trimming).
///
/// # Errors
/// [`RunError::Credential`] without a `:` or with an empty part; the message never shows
/// the token.
pub fn parse_credential(s: &str) -> Result<Credential> {
    parse_credential_at(s, String::new())
}

fn parse_credential_at(s: &str, at: String) -> Result<Credential> {
    let Some((name, token)) = s.split_once(':') else {
        return Err(RunError::Credential {
            at,
            name: None,
            reason: "expected NAME:TOKEN",
        });
    };
    let (name, token) = (name.trim(), token.trim());
    if name.is_empty() || token.is_empty() {
        return Err(RunError::Credential {
            at,
            name: Some(name.to_string()),
            reason: "name and token must not be empty",
        });
    }
    Ok(Credential {
        name: name.to_string(),
        token: Zeroizing::new(token.to_string()),
    })
}

impl ListenOptions {
    /// The clients this server accepts: the tokens file's lines, then the credentials
    /// given directly.
    ///
    /// # Errors
    /// [`RunError::Io`] reading the tokens file; [`RunError::Credential`] for a malformed
    /// line (with `FILE:LINE`); [`RunError::InvalidOption`] when no client is configured.
    pub fn load_credentials(&self) -> Result<Vec<Credential>> {
        let mut creds = Vec::new();
        if let Some(path) = &self.tokens_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path).map_err(RunError::io("--tokens-file", path))?,
            );
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                creds.push(parse_credential_at(
                    line,
                    format!("{}:{}: ", path.display(), i + 1),
                )?);
            }
        }
        creds.extend(self.credentials.iter().cloned());
        if creds.is_empty() {
            return Err(RunError::option(
                "--client",
                "no clients configured: pass --client NAME:TOKEN or --tokens-file",
            ));
        }
        Ok(creds)
    }

    /// The server's identity from `state_dir`, or a new self-signed one for `localhost`,
    /// `127.0.0.1` and `cert_names`, saved there.
    ///
    /// # Errors
    /// [`RunError::Net`] for an unreadable or unwritable state directory or a failed
    /// certificate generation.
    pub fn load_or_create_identity(&self) -> Result<ServerIdentity> {
        let dir = &self.state_dir;
        if dir.join(gelunet_net::CERT_FILE).exists() {
            return ServerIdentity::load(dir).map_err(RunError::net("--state-dir"));
        }
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(self.cert_names.iter().cloned());
        let id = ServerIdentity::generate(&names).map_err(RunError::net("certificate"))?;
        id.save(dir).map_err(RunError::net("--state-dir"))?;
        Ok(id)
    }

    /// Opens the QUIC endpoint (inside a tokio runtime) and writes the bound address to
    /// `STATE_DIR/listen.addr` (atomically).
    ///
    /// # Errors
    /// [`RunError::Net`] if the address cannot be bound; [`RunError::ModelFile`] if the
    /// address file cannot be written.
    pub fn bind(
        &self,
        identity: &ServerIdentity,
        transport: &TransportSettings,
    ) -> Result<(gelunet_net::quinn::Endpoint, Listening)> {
        let endpoint = gelunet_net::server_endpoint(self.listen, identity, transport)
            .map_err(RunError::net("--listen"))?;
        let addr = endpoint
            .local_addr()
            .map_err(RunError::io("--listen", self.listen.to_string()))?;
        write_atomic(
            &self.state_dir.join("listen.addr"),
            addr.to_string().as_bytes(),
        )?;
        Ok((
            endpoint,
            Listening {
                addr,
                cert_path: self.state_dir.join(gelunet_net::CERT_FILE),
                fingerprint: identity.fingerprint(),
            },
        ))
    }
}

/// A QUIC server endpoint on `127.0.0.1`, any free port (inside a tokio runtime), for the
/// in-process server of `train` and `infer --model`; with its bound address.
///
/// # Errors
/// [`RunError::Net`] if the endpoint cannot be opened, [`RunError::Io`] if its address
/// cannot be read.
pub fn loopback_endpoint(
    identity: &ServerIdentity,
    transport: &TransportSettings,
) -> Result<(gelunet_net::quinn::Endpoint, SocketAddr)> {
    let endpoint =
        gelunet_net::server_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), identity, transport)
            .map_err(RunError::net("loopback endpoint"))?;
    let addr = endpoint
        .local_addr()
        .map_err(RunError::io("loopback endpoint", "127.0.0.1"))?;
    Ok((endpoint, addr))
}

/// The first address `s` (`HOST:PORT`) resolves to.
///
/// # Errors
/// [`RunError::Resolve`].
pub fn resolve_addr(s: &str) -> Result<SocketAddr> {
    let resolve = |reason: String| RunError::Resolve {
        addr: s.to_string(),
        reason,
    };
    s.to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))
}

/// The token given inline, or the first line of `token_file`.
///
/// # Errors
/// [`RunError::InvalidOption`] with neither; [`RunError::Io`] for an unreadable file;
/// [`RunError::InvalidOption`] for an empty one.
pub fn read_token(
    token: Option<&Zeroizing<String>>,
    token_file: Option<&Path>,
) -> Result<Zeroizing<String>> {
    if let Some(t) = token {
        return Ok(t.clone());
    }
    let path =
        token_file.ok_or_else(|| RunError::option("--token", "pass --token or --token-file"))?;
    let text =
        Zeroizing::new(std::fs::read_to_string(path).map_err(RunError::io("--token-file", path))?);
    let token = Zeroizing::new(text.lines().next().unwrap_or("").trim().to_string());
    if token.is_empty() {
        return Err(RunError::option(
            "--token-file",
            format!("`{}` is empty", path.display()),
        ));
    }
    Ok(token)
}

/// A fresh random token (48 hex digits) for the in-process clients of `train` and
/// `infer --model`.
pub fn random_token() -> Zeroizing<String> {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The tokio runtime of a run (two worker threads).
///
/// # Errors
/// [`RunError::Runtime`].
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_parsed_without_showing_tokens() {
        let c = parse_credential(" alice : s3cret ").unwrap();
        assert_eq!(c.name, "alice");
        assert_eq!(c.token.as_str(), "s3cret");
        let e = parse_credential("bob:").unwrap_err().to_string();
        assert!(e.contains("bob") && e.contains("empty"), "{e}");
        let e = parse_credential("s3cret").unwrap_err().to_string();
        assert!(e.contains("NAME:TOKEN") && !e.contains("s3cret"), "{e}");
        let opts = ListenOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: PathBuf::from("."),
            cert_names: Vec::new(),
            tokens_file: None,
            credentials: vec![c],
        };
        assert!(!format!("{opts:?}").contains("s3cret"));
        let none = ListenOptions {
            credentials: Vec::new(),
            ..opts
        };
        assert!(matches!(
            none.load_credentials(),
            Err(RunError::InvalidOption {
                option: "--client",
                ..
            })
        ));
    }

    #[test]
    fn tokens_file_lines_are_located() {
        let dir = std::env::temp_dir().join(format!("gelunet-run-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "# clients\nalice:ta\n\nbroken\n").unwrap();
        let opts = ListenOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: dir.clone(),
            cert_names: Vec::new(),
            tokens_file: Some(path.clone()),
            credentials: Vec::new(),
        };
        let e = opts.load_credentials().unwrap_err().to_string();
        assert!(e.contains("tokens:4"), "{e}");
        std::fs::write(&path, "alice:ta\nbob:tb\n").unwrap();
        let names: Vec<String> = opts
            .load_credentials()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn transport_limits() {
        assert!(NetOptions::default().transport().is_ok());
        let bad = NetOptions {
            idle_timeout: 1,
            ..NetOptions::default()
        };
        assert!(bad.transport().is_err());
    }
}
