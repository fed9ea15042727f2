//! Self-signed server identity (certificate + private key) and its on-disk form.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{NetError, Result};

/// File name of the DER-encoded certificate written by [`ServerIdentity::save`] (public).
pub const CERT_FILE: &str = "cert.der";
/// File name of the DER-encoded PKCS#8 private key written by [`ServerIdentity::save`]
/// (secret, mode 0600 on unix).
pub const KEY_FILE: &str = "key.der";

/// A server's self-signed certificate and its private key.
///
/// Clients pin the certificate ([`ServerIdentity::certificate`], or the `cert.der` file)
/// instead of relying on a certificate authority.
///
/// The private key bytes are zeroized on drop and never printed by `Debug`.
pub struct ServerIdentity {
    cert: CertificateDer<'static>,
    /// PKCS#8 DER of the private key.
    key: Zeroizing<Vec<u8>>,
    /// Parsed signing key + certificate, ready for rustls.
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("cert_sha256", &self.fingerprint())
            .field("cert_len", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServerIdentity {
    /// Generates a fresh self-signed certificate (ECDSA P-256) valid for the given subject
    /// alternative names (DNS names such as `"localhost"` or IP literals such as
    /// `"127.0.0.1"`). Clients must connect with one of these names.
    ///
    /// # Errors
    /// [`NetError::CertificateGeneration`] if a name is invalid or key generation fails.
    pub fn generate(subject_alt_names: &[String]) -> Result<Self> {
        let mut certified = rcgen::generate_simple_self_signed(subject_alt_names.to_vec())
            .map_err(NetError::CertificateGeneration)?;
        let key = Zeroizing::new(certified.signing_key.serialize_der());
        // rcgen's KeyPair does not zeroize itself on drop.
        certified.signing_key.zeroize();
        Self::from_der(certified.cert.der().clone(), key)
    }

    /// Builds an identity from a DER certificate and a DER PKCS#8 private key, checking that
    /// the key can be used for signing and matches the certificate.
    ///
    /// # Errors
    /// [`NetError::InvalidIdentity`] if the key cannot be parsed or does not match.
    pub fn from_der(cert: CertificateDer<'static>, key_pkcs8: Zeroizing<Vec<u8>>) -> Result<Self> {
        let borrowed = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.as_slice()));
        let signing_key =
            rustls::crypto::ring::sign::any_supported_type(&borrowed).map_err(|e| {
                NetError::InvalidIdentity {
                    reason: format!("unusable private key: {e}"),
                }
            })?;
        let certified = CertifiedKey::new(vec![cert.clone()], signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(NetError::InvalidIdentity {
                    reason: format!("private key does not match certificate: {e}"),
                })
            }
        }
        Ok(Self {
            cert,
            key: key_pkcs8,
            certified: Arc::new(certified),
        })
    }

    /// The DER certificate; give it to clients for pinning.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Lower-case hex SHA-256 of the DER certificate, for out-of-band verification by
    /// operators.
    pub fn fingerprint(&self) -> String {
        certificate_fingerprint(&self.cert)
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// Writes `cert.der` and `key.der` into `dir` (created if missing).
    ///
    /// Both files are written atomically (temporary file in the same directory, then
    /// rename); on unix the key file is created with mode 0600 from the start.
    ///
    /// # Errors
    /// [`NetError::Io`] on any file-system error.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| NetError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomic(&dir.join(CERT_FILE), &self.cert, false)?;
        write_atomic(&dir.join(KEY_FILE), &self.key, true)?;
        Ok(())
    }

    /// Loads an identity written by [`ServerIdentity::save`].
    ///
    /// On unix, a key file readable by group or others is accepted but logged as a warning.
    ///
    /// # Errors
    /// [`NetError::Io`] if a file cannot be read, [`NetError::InvalidIdentity`] if the
    /// contents are not a matching certificate / key pair.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let cert = fs::read(&cert_path).map_err(|source| NetError::Io {
            op: "read",
            path: cert_path,
            source,
        })?;
        let key = Zeroizing::new(fs::read(&key_path).map_err(|source| NetError::Io {
            op: "read",
            path: key_path.clone(),
            source,
        })?);
        warn_if_key_exposed(&key_path);
        Self::from_der(CertificateDer::from(cert), key)
    }
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn certificate_fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a DER certificate file (e.g. the server's `cert.der`) for pinning.
///
/// # Errors
/// [`NetError::Io`] if the file cannot be read.
pub fn load_certificate(path: impl AsRef<Path>) -> Result<CertificateDer<'static>> {
    let path = path.as_ref();
    fs::read(path)
        .map(CertificateDer::from)
        .map_err(|source| NetError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(unix)]
fn warn_if_key_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "private key file is accessible by group/others; expected mode 0600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_exposed(_path: &Path) {}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one, never
/// a part: a new temporary sibling `.NAME.tmp.PID.NANOS` (mode 0600 on Unix from its
/// creation when `private`, else the default mode), fsync, rename over `path`, fsync of
/// the directory (best effort). The temporary file is removed after a failure. Used for
/// the identity files here and for model, key, checkpoint and report files in
/// `gelunet-run`.
///
/// # Errors
/// [`NetError::Io`] naming the step (`create`, `write`, `sync`, `rename into place`) and
/// the file.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.tmp.{}.{nanos}", std::process::id()));
    let io_err = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| NetError::Io {
            op,
            path: p,
            source,
        }
    };
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: do not leave a (possibly secret) temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("gelunet-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        write_atomic(&path, b"old", false).unwrap();
        write_atomic(&path, b"new", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        // A missing directory: the `create` step fails, nothing is written.
        let err = write_atomic(&dir.join("none").join("f.bin"), b"x", false).unwrap_err();
        assert!(matches!(err, NetError::Io { op: "create", .. }), "{err}");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
