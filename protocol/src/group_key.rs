//! The clients' group key of protocol v2 and the per-version mask seeds derived from it
//! (`docs/DESIGN.md` "Protocol v2", "Who holds what").
//!
//! # Who holds what
//!
//! | value | held by | sent |
//! | --- | --- | --- |
//! | group key `k` (256 bits) | every client, never the server | never (out of band: `gelunet group-key new`) |
//! | `model_id` (128 bits), version `v`, nonce `ν_v` (128 bits) | everyone | in the handshake and `SessionStart` |
//! | version seed `s_v = HKDF-SHA256(k; model_id ‖ v ‖ ν_v)` | clients | only to release version `v` |
//!
//! The seed is HKDF-SHA256 (RFC 5869) with `k` as input keying material, the fixed salt
//! [`HKDF_SALT`], and the info string `"gelunet v2 version seed" ‖ model_id ‖ v (u64 LE) ‖ ν_v`;
//! the masks `P_v` are expanded from `s_v` by [`crate::version_mask`]. Releasing `s_v`
//! reveals `P_v` and nothing about `k` or any other version's masks (HKDF is a PRF in its
//! info argument).
//!
//! # File format
//!
//! A group-key file is one line of text, `gelunet-group-key-v1 <64 hex digits>`, written
//! with mode `0600` through a temporary file that is renamed into place.
//!
//! ```
//! use gelunet_protocol::group_key::{GroupKey, GroupKeyError};
//!
//! let k = GroupKey::generate();
//! let text = k.to_file_text();
//! assert_eq!(GroupKey::parse(&text).unwrap(), k);
//! // The key never shows in Debug output.
//! assert_eq!(format!("{k:?}"), "GroupKey(<redacted>)");
//! // A malformed file is a typed error, and the message does not echo the contents.
//! let err = GroupKey::parse("gelunet-group-key-v1 00ff").unwrap_err();
//! assert!(matches!(err, GroupKeyError::Malformed { .. }));
//! assert!(!err.to_string().contains("00ff"));
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes of the group key `k`.
pub const GROUP_KEY_BYTES: usize = 32;
/// The HKDF salt of every version seed.
pub const HKDF_SALT: &[u8] = b"gelunet protocol v2";
/// The HKDF info of [`GroupKey::fingerprint`] (a label no version seed's info starts with).
pub const FINGERPRINT_INFO: &[u8] = b"gelunet group key fingerprint v1";
/// First word of a group-key file.
pub const FILE_TAG: &str = "gelunet-group-key-v1";

/// Everything that can go wrong with a group key or its file. Messages never contain key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupKeyError {
    /// The file could not be read or written.
    #[error("group key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are not a group key.
    #[error("group key {what}: not a gelunet group key ({reason})")]
    Malformed {
        /// The file, or "text" for an in-memory string.
        what: String,
        /// What is wrong (no key material).
        reason: &'static str,
    },
    /// Refusing to overwrite an existing key file.
    #[error("group key file {path} exists: refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

/// The 256-bit group key `k` shared by the clients (module docs). Zeroized on drop, never
/// printed; compared in constant time.
#[derive(Clone)]
pub struct GroupKey(Zeroizing<[u8; GROUP_KEY_BYTES]>);

/// `Debug` as `Name(<redacted>)` and a constant-time `PartialEq` for a newtype around
/// zeroizing secret bytes ([`GroupKey`], [`VersionSeed`]).
macro_rules! secret_bytes {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), "(<redacted>)"))
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&*other.0).into()
            }
        }
        impl Eq for $ty {}
    };
}
secret_bytes!(GroupKey);

/// The public 128-bit identifier of a training run's model (`model_id`), drawn by the
/// server from the operating system's generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelId(pub [u8; 16]);

/// The public 128-bit nonce `ν_v` of model version `v`, drawn fresh by the client that
/// completes the session creating version `v` (so no mask is ever reused, even after a
/// restore from an old checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionNonce(pub [u8; 16]);

impl ModelId {
    /// A fresh identifier from the operating system's generator.
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }
}

impl VersionNonce {
    /// A fresh nonce from the operating system's generator.
    pub fn generate() -> Self {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        Self(b)
    }
}

/// The per-version seed `s_v = HKDF-SHA256(k; model_id ‖ v ‖ ν_v)` (module docs): what a
/// client sends to release version `v`, and what the masks `P_v` are expanded from.
/// Zeroized on drop, never printed.
#[derive(Clone)]
pub struct VersionSeed(Zeroizing<[u8; 32]>);

secret_bytes!(VersionSeed);

impl VersionSeed {
    /// The seed from its 32 bytes (as received in a release message).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The seed's bytes (for the release message only).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl GroupKey {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; GROUP_KEY_BYTES]);
        OsRng.fill_bytes(&mut *k);
        Self(k)
    }

    /// The key with the given bytes (tests and the insecure reproducible mode).
    pub fn from_bytes(bytes: [u8; GROUP_KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The seed of version `v` of model `model_id` with nonce `nonce` (module docs).
    pub fn version_seed(&self, model_id: ModelId, v: u64, nonce: VersionNonce) -> VersionSeed {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &*self.0);
        let mut info = Vec::with_capacity(23 + 16 + 8 + 16);
        info.extend_from_slice(b"gelunet v2 version seed");
        info.extend_from_slice(&model_id.0);
        info.extend_from_slice(&v.to_le_bytes());
        info.extend_from_slice(&nonce.0);
        let mut out = Zeroizing::new([0u8; 32]);
        // HKDF-SHA256 expands up to 255·32 bytes: 32 bytes cannot fail.
        #[allow(clippy::expect_used)]
        hk.expand(&info, &mut *out)
            .expect("HKDF-SHA256 expands 32 bytes");
        VersionSeed(out)
    }

    /// A public 32-byte fingerprint of the key, to recognise it without revealing it
    /// (`gelunet train`'s checkpoint records it, docs/DESIGN.md "Checkpoint and resume"):
    /// HKDF-SHA256 with `k` as input keying material, the salt [`HKDF_SALT`] and the info
    /// [`FINGERPRINT_INFO`]. HKDF is a PRF in its info argument and no version seed uses
    /// this info, so the fingerprint reveals nothing about `k` or any mask.
    pub fn fingerprint(&self) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &*self.0);
        let mut out = [0u8; 32];
        // HKDF-SHA256 expands up to 255·32 bytes: 32 bytes cannot fail.
        #[allow(clippy::expect_used)]
        hk.expand(FINGERPRINT_INFO, &mut out)
            .expect("HKDF-SHA256 expands 32 bytes");
        out
    }

    /// The file contents: `gelunet-group-key-v1 <64 hex digits>\n`.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(FILE_TAG.len() + 66));
        s.push_str(FILE_TAG);
        s.push(' ');
        for b in self.0.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.push('\n');
        s
    }

    /// Parses the contents of a group-key file.
    ///
    /// # Errors
    /// [`GroupKeyError::Malformed`] for anything but the tag, one space and 64 hex digits
    /// (surrounding white space allowed).
    pub fn parse(text: &str) -> Result<Self, GroupKeyError> {
        Self::parse_named(text, "text")
    }

    fn parse_named(text: &str, what: &str) -> Result<Self, GroupKeyError> {
        let bad = |reason| GroupKeyError::Malformed {
            what: what.to_string(),
            reason,
        };
        let mut words = text.split_whitespace();
        if words.next() != Some(FILE_TAG) {
            return Err(bad("missing the gelunet-group-key-v1 tag"));
        }
        let hex = words.next().ok_or_else(|| bad("no key after the tag"))?;
        if words.next().is_some() {
            return Err(bad("extra text after the key"));
        }
        if hex.len() != 2 * GROUP_KEY_BYTES {
            return Err(bad("the key must be 64 hexadecimal digits"));
        }
        let mut k = Zeroizing::new([0u8; GROUP_KEY_BYTES]);
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(|| bad("not a hexadecimal digit"))?;
            let lo = nibble(pair[1]).ok_or_else(|| bad("not a hexadecimal digit"))?;
            k[i] = (hi << 4) | lo;
        }
        Ok(Self(k))
    }

    /// Reads a group-key file.
    ///
    /// # Errors
    /// [`GroupKeyError::Io`] if it cannot be read, [`GroupKeyError::Malformed`] if it is
    /// not a group key.
    pub fn load(path: &Path) -> Result<Self, GroupKeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| GroupKeyError::Io {
                    path: path.to_owned(),
                    source,
                })?,
            );
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Writes the key to a new file `path` (mode `0600` on Unix), atomically: a temporary
    /// file in the same directory, fsync, rename. An existing file is never overwritten.
    ///
    /// # Errors
    /// [`GroupKeyError::Exists`] if `path` exists, [`GroupKeyError::Io`] for any I/O
    /// failure (the temporary file is removed).
    pub fn save_new(&self, path: &Path) -> Result<(), GroupKeyError> {
        if path.exists() {
            return Err(GroupKeyError::Exists {
                path: path.to_owned(),
            });
        }
        let io = |source| GroupKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map_or_else(|| "group-key".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(self.to_file_text().as_bytes())?;
            f.sync_all()?;
            drop(f);
            // `hard_link` + remove would also refuse an existing target; rename is atomic
            // and we checked above (a race with another writer is not our threat model).
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_keys_apart_and_is_no_version_seed() {
        let k = GroupKey::from_bytes([7; GROUP_KEY_BYTES]);
        assert_eq!(k.fingerprint(), k.clone().fingerprint());
        assert_ne!(
            k.fingerprint(),
            GroupKey::from_bytes([8; GROUP_KEY_BYTES]).fingerprint()
        );
        assert_ne!(&k.fingerprint()[..], &[7; GROUP_KEY_BYTES][..]);
        let seed = k.version_seed(ModelId([0; 16]), 0, VersionNonce([0; 16]));
        assert_ne!(&k.fingerprint()[..], &seed.to_bytes()[..]);
    }

    #[test]
    fn file_round_trip_and_atomic_new_file() {
        let dir = std::env::temp_dir().join(format!("gelunet-gk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("group.key");
        let k = GroupKey::generate();
        k.save_new(&path).unwrap();
        assert_eq!(GroupKey::load(&path).unwrap(), k);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        let other = GroupKey::generate();
        assert!(matches!(
            other.save_new(&path),
            Err(GroupKeyError::Exists { .. })
        ));
        assert_eq!(GroupKey::load(&path).unwrap(), k);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_files_are_refused_without_echoing_them() {
        let good = GroupKey::from_bytes([0xab; 32]).to_file_text();
        let cases = [
            String::new(),
            "gelunet-group-key-v2 00".to_string(),
            FILE_TAG.to_string(),
            format!("{FILE_TAG} {}", "ab".repeat(31)),
            format!("{FILE_TAG} {}zz", "ab".repeat(31)),
            format!("{} extra", good.trim()),
        ];
        for c in &cases {
            let e = GroupKey::parse(c).unwrap_err();
            assert!(matches!(e, GroupKeyError::Malformed { .. }), "{c:?}");
            assert!(!e.to_string().contains("abab"), "{e}");
        }
        let missing = GroupKey::load(Path::new("/nonexistent/gelunet/group.key")).unwrap_err();
        assert!(matches!(missing, GroupKeyError::Io { .. }));
    }

    #[test]
    fn seeds_depend_on_every_input() {
        let k = GroupKey::from_bytes([7; 32]);
        let id = ModelId([1; 16]);
        let nu = VersionNonce([2; 16]);
        let s = k.version_seed(id, 3, nu);
        assert_eq!(s, k.version_seed(id, 3, nu));
        assert_ne!(s, k.version_seed(id, 4, nu));
        assert_ne!(s, k.version_seed(ModelId([9; 16]), 3, nu));
        assert_ne!(s, k.version_seed(id, 3, VersionNonce([8; 16])));
        assert_ne!(s, GroupKey::from_bytes([6; 32]).version_seed(id, 3, nu));
        assert_eq!(format!("{s:?}"), "VersionSeed(<redacted>)");
    }

    #[test]
    fn fresh_keys_and_nonces_differ() {
        assert_ne!(GroupKey::generate(), GroupKey::generate());
        assert_ne!(VersionNonce::generate(), VersionNonce::generate());
        assert_ne!(ModelId::generate(), ModelId::generate());
    }
}
