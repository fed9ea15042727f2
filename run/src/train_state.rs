//! What the in-process clients of `gelunet train --state-dir DIR` keep next to the
//! server's checkpoint, so that `gelunet train --resume DIR` can continue the run
//! (docs/DESIGN.md "Checkpoint and resume"): the clients' group key of protocol v2
//! (`DIR/group.key`) and each client's Paillier key pair (`DIR/client-K.key`, `K` the
//! client's index). The checkpoint records their public fingerprints
//! ([`crate::checkpoint::PartyFingerprints`]); a resume with files of another run is
//! refused naming the mismatch.
//!
//! Each file is framed as the model file and the checkpoint are (all integers
//! little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic "GLNGRPKY" (group key) or "GLNCLKEY" (client key)
//! 8       4     format version (1)
//! 12      8     payload length n
//! 20      32    SHA-256 of the payload
//! 52      n     payload: the group key file's text (`gelunet-group-key-v1 <hex>`) or
//!               the client's `PrivateKey::to_secret_bytes` (the `join --key-file` format)
//! ```
//!
//! The files are written once, when a fresh run has generated its keys and before its
//! first session (so a checkpoint never exists without them), atomically (temporary
//! file in the same directory, fsync, rename) with mode 0600 from their creation. Their
//! bytes are zeroized in memory after use, and no error or log line holds any of them.

use std::path::{Path, PathBuf};

use gelunet_net::Zeroizing;
use gelunet_paillier::PrivateKey;
use gelunet_protocol::group_key::GroupKey;

use crate::checkpoint::checkpoint_path;
use crate::model_file::{frame, unframe, write_atomic_private};
use crate::{Result, RunError};

/// The group key's file name in the state directory.
pub const GROUP_KEY_FILE: &str = "group.key";
/// The group key file's magic.
pub const GROUP_KEY_MAGIC: &[u8; 8] = b"GLNGRPKY";
/// A client key file's magic.
pub const CLIENT_KEY_MAGIC: &[u8; 8] = b"GLNCLKEY";
/// The format version of both files.
pub const KEY_FILE_VERSION: u32 = 1;

/// The key file of client `k` in `state_dir` (`client-K.key`).
pub fn client_key_path(state_dir: &Path, k: usize) -> PathBuf {
    state_dir.join(format!("client-{k}.key"))
}

/// The group key file in `state_dir`.
pub fn group_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(GROUP_KEY_FILE)
}

fn refused(path: &Path, reason: impl Into<String>) -> RunError {
    RunError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Refuses a fresh `train --state-dir` in a directory that holds the checkpoint of an
/// earlier run (its keys would be replaced and the run lost); creates the directory if
/// it does not exist (mode 0700), and checks that it accepts new files.
///
/// # Errors
/// [`RunError::InvalidOption`] (`--state-dir`) for a directory with a checkpoint, saying
/// how to continue it; [`RunError::Io`] if the directory cannot be created or written.
pub fn prepare_fresh(state_dir: &Path) -> Result<()> {
    let checkpoint = checkpoint_path(state_dir);
    if checkpoint.exists() {
        return Err(RunError::option(
            "--state-dir",
            format!(
                "{} holds the checkpoint of an earlier run: continue it with `gelunet train \
                 --resume {}` and the same options, or use an empty directory",
                state_dir.display(),
                state_dir.display()
            ),
        ));
    }
    if !state_dir.is_dir() {
        let mut d = std::fs::DirBuilder::new();
        d.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut d, 0o700);
        d.create(state_dir)
            .map_err(RunError::io("--state-dir", state_dir))?;
    }
    crate::model_file::check_writable(&checkpoint).map_err(RunError::io("--state-dir", state_dir))
}

/// Writes the group key and the clients' key pairs (by index) to `state_dir` (module
/// docs).
///
/// # Errors
/// [`RunError::Io`] naming the file that could not be written.
pub fn save_keys(state_dir: &Path, group_key: &GroupKey, clients: &[PrivateKey]) -> Result<()> {
    let path = group_key_path(state_dir);
    let text = group_key.to_file_text();
    let bytes = Zeroizing::new(frame(GROUP_KEY_MAGIC, KEY_FILE_VERSION, text.as_bytes()));
    write_atomic_private(&path, &bytes).map_err(RunError::io("write group key", &path))?;
    for (k, key) in clients.iter().enumerate() {
        let path = client_key_path(state_dir, k);
        let secret = key.to_secret_bytes();
        let bytes = Zeroizing::new(frame(CLIENT_KEY_MAGIC, KEY_FILE_VERSION, &secret));
        write_atomic_private(&path, &bytes).map_err(RunError::io("write client key", &path))?;
    }
    Ok(())
}

/// Reads one framed secret file.
fn read_framed(path: &Path, magic: &[u8; 8], kind: &str) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refused(path, format!("the {kind} is missing")))
        }
        Err(e) => return Err(RunError::io("read", path)(e)),
    };
    let body = unframe(&bytes, magic, KEY_FILE_VERSION, kind).map_err(|r| refused(path, r))?;
    Ok(Zeroizing::new(body.to_vec()))
}

/// Reads the group key and the key pairs of `clients` clients from `state_dir`; test
/// keys (below 2048 bits) only with `allow_test_keys`.
///
/// # Errors
/// [`RunError::Checkpoint`] naming the file for a missing, truncated, corrupt or
/// undecodable one (no contents in the message); [`RunError::Io`] for other read errors.
pub fn load_keys(
    state_dir: &Path,
    clients: usize,
    allow_test_keys: bool,
) -> Result<(GroupKey, Vec<PrivateKey>)> {
    let path = group_key_path(state_dir);
    let body = read_framed(&path, GROUP_KEY_MAGIC, "group key file")?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| refused(&path, "the group key is not text (corrupt file)"))?;
    let group_key = GroupKey::parse(text).map_err(|e| refused(&path, e.to_string()))?;
    let mut keys = Vec::with_capacity(clients);
    for k in 0..clients {
        let path = client_key_path(state_dir, k);
        let body = read_framed(&path, CLIENT_KEY_MAGIC, "client key file")?;
        let key = PrivateKey::from_secret_bytes_for_run(&body, allow_test_keys)
            .map_err(|e| refused(&path, e.to_string()))?;
        keys.push(key);
    }
    Ok((group_key, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::PartyFingerprints;
    use crate::keys::KeyOptions;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gelunet-tstate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn keys(n: usize) -> Vec<PrivateKey> {
        KeyOptions {
            key_bits: 512,
            allow_test_keys: true,
        }
        .generate(n)
        .unwrap()
    }

    #[test]
    fn keys_round_trip_privately_and_damage_is_refused_by_file() {
        if !gelunet_paillier::TEST_KEYS_AVAILABLE {
            return;
        }
        let d = dir("cycle");
        let (gk, ks) = (GroupKey::generate(), keys(2));
        save_keys(&d, &gk, &ks).unwrap();
        let (gk2, ks2) = load_keys(&d, 2, true).unwrap();
        assert_eq!(gk2, gk);
        let public =
            |v: &[PrivateKey]| PartyFingerprints::new(&gk, v.iter().map(|k| k.public_key()));
        assert_eq!(public(&ks2), public(&ks));
        #[cfg(unix)]
        for p in [
            group_key_path(&d),
            client_key_path(&d, 0),
            client_key_path(&d, 1),
        ] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        // Test keys need allow_test_keys.
        assert!(matches!(
            load_keys(&d, 2, false),
            Err(RunError::Checkpoint { .. })
        ));
        // A third client has no file.
        let e = load_keys(&d, 3, true).unwrap_err().to_string();
        assert!(e.contains("client-2.key") && e.contains("missing"), "{e}");
        // Truncated, flipped, swapped.
        let p = client_key_path(&d, 1);
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        let e = load_keys(&d, 2, true).unwrap_err().to_string();
        assert!(e.contains("client-1.key") && e.contains("truncated"), "{e}");
        let mut flipped = good.clone();
        flipped[60] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        let e = load_keys(&d, 2, true).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        std::fs::copy(group_key_path(&d), &p).unwrap();
        let e = load_keys(&d, 2, true).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn foreign_keys_are_named_by_the_fingerprints() {
        if !gelunet_paillier::TEST_KEYS_AVAILABLE {
            return;
        }
        let (gk, ks) = (GroupKey::generate(), keys(3));
        let recorded = PartyFingerprints::new(&gk, ks.iter().map(|k| k.public_key()));
        assert_eq!(recorded.difference(&recorded), None);
        let other_group =
            PartyFingerprints::new(&GroupKey::generate(), ks.iter().map(|k| k.public_key()));
        assert!(recorded
            .difference(&other_group)
            .unwrap()
            .contains("group key"));
        let mut swapped = recorded.clone();
        swapped.clients.swap(1, 2);
        assert!(recorded
            .difference(&swapped)
            .unwrap()
            .contains("client 1's key"));
        let fewer = PartyFingerprints::new(&gk, ks[..2].iter().map(|k| k.public_key()));
        assert!(recorded
            .difference(&fewer)
            .unwrap()
            .contains("3 clients, not 2"));
    }

    #[test]
    fn a_directory_with_a_checkpoint_is_not_started_afresh() {
        let d = dir("fresh");
        let sub = d.join("new");
        prepare_fresh(&sub).unwrap();
        assert!(sub.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        std::fs::write(checkpoint_path(&sub), b"old").unwrap();
        let e = prepare_fresh(&sub).unwrap_err();
        assert!(
            matches!(
                e,
                RunError::InvalidOption {
                    option: "--state-dir",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("--resume"), "{e}");
        assert_eq!(std::fs::read(checkpoint_path(&sub)).unwrap(), b"old");
        let _ = std::fs::remove_dir_all(&d);
    }
}
