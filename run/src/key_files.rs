//! `gelunet keys`: Paillier key files people can exchange. Generates, inspects and
//! converts keys between the gelunet key file (the `join --key-file` format: the primes,
//! [`PrivateKey::to_secret_bytes`]) and python-paillier's JSON keys
//! ([`gelunet_paillier::phe_json`]). Private keys are written with mode 0600 (temporary
//! file, fsync, rename), never over an existing file unless `force`, and never printed;
//! [`KeyInfo`] shows only public facts.

use std::fmt;
use std::path::{Path, PathBuf};

use gelunet_net::Zeroizing;
use gelunet_paillier::phe_json::{
    private_key_from_json, private_key_to_json, public_key_from_json, public_key_to_json,
};
use gelunet_paillier::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};

use crate::keys::KeyOptions;
use crate::model_file::{write_atomic, write_atomic_private};
use crate::{Result, RunError};

/// The file formats of `gelunet keys` (with the `clap` feature a `clap::ValueEnum`:
/// `gelunet`, `phe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum KeyFormat {
    /// The gelunet key file (`join --key-file`): binary, private keys only.
    Gelunet,
    /// python-paillier's JSON (`pheutil`): a private key with `p`, `q` (and `lambda`,
    /// `mu`) and its public key under `pub`, or a public key alone.
    Phe,
}

/// What a key file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileKind {
    /// A gelunet key file (private).
    GelunetPrivate,
    /// A python-paillier private key (JSON).
    PhePrivate,
    /// A python-paillier public key (JSON).
    PhePublic,
}

impl KeyFileKind {
    /// A short description: `gelunet private key`, `python-paillier private key (JSON)`, …
    pub fn describe(self) -> &'static str {
        match self {
            Self::GelunetPrivate => "gelunet private key",
            Self::PhePrivate => "python-paillier private key (JSON)",
            Self::PhePublic => "python-paillier public key (JSON)",
        }
    }
}

/// The public facts of a key file (what `gelunet keys inspect` prints; nothing secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    /// The file.
    pub path: PathBuf,
    /// What it holds ([`KeyFileKind::describe`]).
    pub kind: String,
    /// Whether it holds a private key.
    pub private: bool,
    /// Bits of the modulus `N`.
    pub bits: u64,
    /// The key id ciphertexts carry: the first 8 bytes of SHA-256 of `N`'s big-endian
    /// bytes, in hex.
    pub key_id: String,
    /// SHA-256 of `N`'s big-endian bytes, in hex (to compare keys out of band).
    pub fingerprint: String,
}

impl KeyInfo {
    fn of(path: &Path, kind: KeyFileKind, public: &PublicKey) -> Self {
        Self {
            path: path.to_path_buf(),
            kind: kind.describe().into(),
            private: kind != KeyFileKind::PhePublic,
            bits: public.bits(),
            key_id: public.id().to_string(),
            fingerprint: public_key_fingerprint(public)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// SHA-256 of `N`'s big-endian bytes: the public key's fingerprint ([`KeyInfo`], and
/// the client keys `gelunet train`'s checkpoint records, [`crate::checkpoint`]).
pub fn public_key_fingerprint(public: &PublicKey) -> [u8; 32] {
    Sha256::digest(public.n().to_bytes_be()).into()
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.path.display(), self.kind)?;
        writeln!(f, "  N: {} bits", self.bits)?;
        writeln!(f, "  key id: {}", self.key_id)?;
        writeln!(f, "  fingerprint (sha256 of N): {}", self.fingerprint)
    }
}

/// A key read from a file.
#[derive(Debug)]
pub enum LoadedKey {
    /// A private key (and its public key).
    Private(Box<PrivateKey>),
    /// A public key alone.
    Public(PublicKey),
}

impl LoadedKey {
    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        match self {
            Self::Private(k) => k.public_key(),
            Self::Public(k) => k,
        }
    }
}

/// Reads a key file in any format of [`KeyFormat`]: JSON (first non-blank byte `{`) is
/// python-paillier's (private when it has `pub`), anything else a gelunet key file. Keys
/// below 2048 bits only with `allow_test_keys` (in builds with test keys).
///
/// # Errors
/// [`RunError::Io`] reading the file; [`RunError::PheJson`] for a refused JSON key;
/// [`RunError::KeyFile`] for a gelunet key file that holds no usable key.
pub fn load_key(path: &Path, allow_test_keys: bool) -> Result<(LoadedKey, KeyFileKind)> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(RunError::io("key", path))?);
    let json = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !json {
        let key =
            PrivateKey::from_secret_bytes_for_run(&bytes, allow_test_keys).map_err(|source| {
                RunError::KeyFile {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        return Ok((
            LoadedKey::Private(Box::new(key)),
            KeyFileKind::GelunetPrivate,
        ));
    }
    let phe = |source| RunError::PheJson {
        path: path.to_path_buf(),
        source,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| RunError::PheJson {
        path: path.to_path_buf(),
        source: gelunet_paillier::phe_json::PheJsonError::Json {
            what: "key",
            line: 1,
            column: 1,
        },
    })?;
    // A private key has `pub`; the probe skips every other field without copying it.
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "pub")]
        public: Option<serde::de::IgnoredAny>,
    }
    let private = serde_json::from_str::<Probe>(text).map_or(true, |p| p.public.is_some());
    if private {
        let key = private_key_from_json(text, allow_test_keys).map_err(phe)?;
        Ok((LoadedKey::Private(Box::new(key)), KeyFileKind::PhePrivate))
    } else {
        let key = public_key_from_json(text, allow_test_keys).map_err(phe)?;
        Ok((LoadedKey::Public(key), KeyFileKind::PhePublic))
    }
}

/// `gelunet keys inspect`: the public facts of a key file.
///
/// # Errors
/// As [`load_key`].
pub fn inspect_key(path: &Path, allow_test_keys: bool) -> Result<KeyInfo> {
    let (key, kind) = load_key(path, allow_test_keys)?;
    Ok(KeyInfo::of(path, kind, key.public_key()))
}

/// Refuses to replace `path` unless `force`.
pub(crate) fn check_new(path: &Path, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(RunError::Exists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Writes `key` to `out` in `format` (mode 0600).
fn write_private(key: &PrivateKey, out: &Path, format: KeyFormat) -> Result<KeyFileKind> {
    let (bytes, kind) = match format {
        KeyFormat::Gelunet => (key.to_secret_bytes(), KeyFileKind::GelunetPrivate),
        KeyFormat::Phe => {
            let text = private_key_to_json(key);
            (
                Zeroizing::new(text.as_bytes().to_vec()),
                KeyFileKind::PhePrivate,
            )
        }
    };
    write_atomic_private(out, &bytes).map_err(RunError::io("write key", out))?;
    Ok(kind)
}

/// Writes `key`'s public key to `out` as python-paillier JSON (the only public-key file
/// format).
fn write_public(key: &PublicKey, out: &Path) -> Result<()> {
    Ok(write_atomic(out, public_key_to_json(key).as_bytes())?)
}

/// `gelunet keys generate`: a fresh key pair (from the operating system's generator, the
/// sizes of [`KeyOptions`]) written to `out` in `format` (mode 0600), and its public key
/// to `public_out` as python-paillier JSON if given. Returns the public facts of `out`.
///
/// # Errors
/// [`RunError::Exists`] for an existing output without `force` (checked before the key
/// is generated); the errors of [`KeyOptions::generate_one`]; [`RunError::Io`] and
/// [`RunError::ModelFile`] writing.
pub fn generate_key(
    keys: &KeyOptions,
    out: &Path,
    format: KeyFormat,
    public_out: Option<&Path>,
    force: bool,
) -> Result<KeyInfo> {
    check_new(out, force)?;
    if let Some(p) = public_out {
        check_new(p, force)?;
        if p == out {
            return Err(RunError::option(
                "--public-out",
                "must differ from --out (the private key file)",
            ));
        }
    }
    let key = keys.generate_one()?;
    let kind = write_private(&key, out, format)?;
    if let Some(p) = public_out {
        write_public(key.public_key(), p)?;
    }
    Ok(KeyInfo::of(out, kind, key.public_key()))
}

/// `gelunet keys convert`: reads `input` (any format, see [`load_key`]) and writes it to
/// `out` in `to`; with `public_only`, only its public key (python-paillier JSON).
///
/// # Errors
/// [`RunError::Exists`] for an existing `out` without `force`; [`RunError::InvalidOption`]
/// for a private key asked of a public key file, or a public key in the gelunet format
/// (which holds private keys only); the errors of [`load_key`] and of writing.
pub fn convert_key(
    input: &Path,
    out: &Path,
    to: KeyFormat,
    public_only: bool,
    force: bool,
    allow_test_keys: bool,
) -> Result<KeyInfo> {
    check_new(out, force)?;
    if public_only && to == KeyFormat::Gelunet {
        return Err(RunError::option(
            "--to",
            "a gelunet key file holds private keys only; write a public key with --to phe",
        ));
    }
    let (key, _) = load_key(input, allow_test_keys)?;
    match (&key, public_only) {
        (LoadedKey::Private(k), false) => {
            let kind = write_private(k, out, to)?;
            Ok(KeyInfo::of(out, kind, k.public_key()))
        }
        (_, true) => {
            write_public(key.public_key(), out)?;
            Ok(KeyInfo::of(out, KeyFileKind::PhePublic, key.public_key()))
        }
        (LoadedKey::Public(_), false) => Err(RunError::option(
            "--public",
            format!(
                "`{}` holds a public key only: convert it with --public",
                input.display()
            ),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh temporary directory for a test.
    pub(crate) fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gelunet-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) const TEST_KEYS: KeyOptions = KeyOptions {
        key_bits: 512,
        allow_test_keys: true,
    };

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generate_inspect_and_convert_keep_the_key() {
        let d = dir("cycle");
        let (sk, pk) = (d.join("c.key"), d.join("c.pub.json"));
        let info = generate_key(&TEST_KEYS, &sk, KeyFormat::Gelunet, Some(&pk), false).unwrap();
        assert!(info.private);
        assert_eq!(info.bits, 512);
        #[cfg(unix)]
        assert_eq!(mode(&sk), 0o600);
        let public = inspect_key(&pk, true).unwrap();
        assert!(!public.private);
        assert_eq!(public.fingerprint, info.fingerprint);
        assert_eq!(public.key_id, info.key_id);
        // gelunet → python-paillier → gelunet gives the same secret bytes.
        let json = d.join("c.json");
        let to_phe = convert_key(&sk, &json, KeyFormat::Phe, false, false, true).unwrap();
        assert_eq!(to_phe.kind, KeyFileKind::PhePrivate.describe());
        #[cfg(unix)]
        assert_eq!(mode(&json), 0o600);
        let back = d.join("c2.key");
        convert_key(&json, &back, KeyFormat::Gelunet, false, false, true).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&sk).unwrap());
        // The printed facts hold nothing secret.
        let (LoadedKey::Private(k), _) = load_key(&sk, true).unwrap() else {
            panic!("private key expected")
        };
        let secret = private_key_to_json(&k);
        let v: serde_json::Value = serde_json::from_str(&secret).unwrap();
        let shown = format!(
            "{to_phe}{to_phe:?}{}",
            serde_json::to_string(&to_phe).unwrap()
        );
        for field in ["p", "q", "lambda", "mu"] {
            assert!(!shown.contains(v[field].as_str().unwrap()), "{field}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn existing_files_and_impossible_conversions_are_refused() {
        let d = dir("refuse");
        let sk = d.join("c.key");
        generate_key(&TEST_KEYS, &sk, KeyFormat::Phe, None, false).unwrap();
        let before = std::fs::read(&sk).unwrap();
        assert!(matches!(
            generate_key(&TEST_KEYS, &sk, KeyFormat::Phe, None, false),
            Err(RunError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&sk).unwrap(), before);
        generate_key(&TEST_KEYS, &sk, KeyFormat::Phe, None, true).unwrap();
        assert_ne!(std::fs::read(&sk).unwrap(), before);
        let pk = d.join("c.pub");
        convert_key(&sk, &pk, KeyFormat::Phe, true, false, true).unwrap();
        assert!(matches!(
            convert_key(&pk, &d.join("x"), KeyFormat::Phe, false, false, true),
            Err(RunError::InvalidOption {
                option: "--public",
                ..
            })
        ));
        assert!(matches!(
            convert_key(&sk, &d.join("y"), KeyFormat::Gelunet, true, false, true),
            Err(RunError::InvalidOption { option: "--to", .. })
        ));
        // Test-size keys need allow_test_keys.
        assert!(matches!(
            inspect_key(&sk, false),
            Err(RunError::PheJson { .. })
        ));
        std::fs::write(d.join("bad.json"), "{\"pub\": 1}").unwrap();
        assert!(matches!(
            inspect_key(&d.join("bad.json"), true),
            Err(RunError::PheJson { .. })
        ));
        std::fs::write(d.join("bad.key"), b"\x00\x00").unwrap();
        assert!(matches!(
            inspect_key(&d.join("bad.key"), true),
            Err(RunError::KeyFile { .. })
        ));
        assert!(matches!(
            inspect_key(&d.join("missing"), true),
            Err(RunError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
