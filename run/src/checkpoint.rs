//! The server's checkpoint file, `STATE_DIR/checkpoint.bin` (docs/DESIGN.md "Checkpoint
//! and resume"): the coordinator's [`Checkpoint`] after every completed session
//! (under protocol v2 the masked state `(v, ν_v, W~)`, never a true weight; no secret
//! key under either protocol) with the [`RunContext`] of the command that wrote it.
//!
//! Layout (all integers little-endian), as the model files':
//!
//! ```text
//! offset  size  field
//! 0       8     magic "GLNCHKPT"
//! 8       4     format version (2)
//! 12      8     payload length n
//! 20      32    SHA-256 of the payload
//! 52      n     payload: postcard(CheckpointFile)
//! ```
//!
//! Written atomically (temporary file in the same directory, fsync, rename) with mode
//! 0600 from its creation: a reader sees the previous checkpoint or the whole new one. A
//! file with another magic or version, a wrong length (truncated or extended), a checksum
//! mismatch or an undecodable payload is refused with [`RunError::Checkpoint`], and so is
//! one of another run ([`check_context`], [`gelunet_server::CheckpointError`]); a refused
//! checkpoint is never overwritten (the command stops before it trains).

use std::path::{Path, PathBuf};

use gelunet_protocol::group_key::GroupKey;
use gelunet_server::Checkpoint;
use serde::{Deserialize, Serialize};

use crate::data::Prepared;
use crate::model_file::write_atomic_private;
use crate::{Result, RunError};

/// The file name in the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// The file's magic.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"GLNCHKPT";
/// The format version this build writes and reads (2: with [`PartyFingerprints`]).
pub const CHECKPOINT_VERSION: u32 = 2;

/// What the command that wrote a checkpoint trained on, beyond the server's
/// configuration ([`gelunet_server::RunFingerprint`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    /// The command (`serve`, `train`).
    pub command: String,
    /// The dataset's name, if the command had one.
    pub dataset: Option<String>,
    /// Training samples of the split.
    pub train_samples: u64,
    /// Test samples of the split.
    pub test_samples: u64,
}

impl RunContext {
    /// The context of `command` on `prepared` (if any).
    pub fn new(command: &str, prepared: Option<&Prepared>) -> Self {
        Self {
            command: command.into(),
            dataset: prepared.map(|p| p.name.clone()),
            train_samples: prepared.map_or(0, |p| p.train.n_samples() as u64),
            test_samples: prepared.map_or(0, |p| p.test.n_samples() as u64),
        }
    }
}

/// Public fingerprints of the secrets the clients of `gelunet train` keep next to the
/// checkpoint ([`crate::train_state`]), so that a resume with key files of another run is
/// refused naming the mismatch. No key material: the group key's
/// [`GroupKey::fingerprint`] (HKDF-SHA256 under its own label) and, per client, SHA-256
/// of its public modulus `N_c` ([`crate::key_files::public_key_fingerprint`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyFingerprints {
    /// [`GroupKey::fingerprint`] of the clients' group key.
    pub group_key: [u8; 32],
    /// Per client, by index: SHA-256 of its public modulus.
    pub clients: Vec<[u8; 32]>,
}

impl PartyFingerprints {
    /// The fingerprints of `group_key` and of the clients' `public` keys (by index).
    pub fn new<'a>(
        group_key: &GroupKey,
        public: impl IntoIterator<Item = &'a gelunet_paillier::PublicKey>,
    ) -> Self {
        Self {
            group_key: group_key.fingerprint(),
            clients: public
                .into_iter()
                .map(crate::key_files::public_key_fingerprint)
                .collect(),
        }
    }

    /// What differs between the recorded fingerprints (`self`) and those of the keys
    /// `found` on disk, if anything: the number of clients, the group key, or the first
    /// client (by index) whose public key differs.
    pub fn difference(&self, found: &Self) -> Option<String> {
        if self.clients.len() != found.clients.len() {
            Some(format!(
                "it was written by a run of {} clients, not {}",
                self.clients.len(),
                found.clients.len()
            ))
        } else if self.group_key != found.group_key {
            Some("the group key on disk is not the one the checkpoint was written with".into())
        } else {
            let k = (0..self.clients.len()).find(|&k| self.clients[k] != found.clients[k])?;
            Some(format!(
                "client {k}'s key on disk is not the one the checkpoint was written with"
            ))
        }
    }
}

/// The payload of the checkpoint file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// The command and its data.
    pub context: RunContext,
    /// The server's state.
    pub checkpoint: Checkpoint,
    /// `gelunet train`: the fingerprints of its clients' keys (`None` for `serve`, whose
    /// clients keep their keys themselves).
    pub parties: Option<PartyFingerprints>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> RunError {
    RunError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The checkpoint file of `state_dir`.
pub fn checkpoint_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CHECKPOINT_FILE)
}

/// Writes `file` to `path` atomically, mode 0600 (module docs).
///
/// # Errors
/// [`RunError::Checkpoint`] if it cannot be encoded; [`RunError::Io`] if it cannot be
/// written.
pub fn save_checkpoint(path: &Path, file: &CheckpointFile) -> Result<()> {
    let body = postcard::to_stdvec(file).map_err(|e| invalid(path, e.to_string()))?;
    let bytes = crate::model_file::frame(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, &body);
    write_atomic_private(path, &bytes).map_err(RunError::io("write checkpoint", path))
}

/// Reads and checks a file written by [`save_checkpoint`]. Whether it belongs to the run
/// is checked by [`check_context`] and when the server resumes it
/// ([`gelunet_server::Coordinator::resume`]).
///
/// # Errors
/// [`RunError::Io`] if it cannot be read (e.g. missing); [`RunError::Checkpoint`] for a
/// bad magic or version, a truncated or extended file, a checksum mismatch or an
/// undecodable payload.
pub fn load_checkpoint(path: &Path) -> Result<CheckpointFile> {
    let bytes = std::fs::read(path).map_err(RunError::io("read checkpoint", path))?;
    let body =
        crate::model_file::unframe(&bytes, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, "checkpoint")
            .map_err(|r| invalid(path, r))?;
    postcard::from_bytes(body).map_err(|e| invalid(path, format!("payload: {e}")))
}

/// Refuses a checkpoint written by another command or on other data than `expected`.
///
/// # Errors
/// [`RunError::Checkpoint`] naming what differs.
pub fn check_context(path: &Path, found: &RunContext, expected: &RunContext) -> Result<()> {
    let what = if found.command != expected.command {
        Some(format!(
            "written by `gelunet {}`, not `gelunet {}`",
            found.command, expected.command
        ))
    } else if found.dataset != expected.dataset {
        Some(format!(
            "of another dataset ({}, not {})",
            found.dataset.as_deref().unwrap_or("none"),
            expected.dataset.as_deref().unwrap_or("none")
        ))
    } else if (found.train_samples, found.test_samples)
        != (expected.train_samples, expected.test_samples)
    {
        Some(format!(
            "of another split ({} + {} samples, not {} + {})",
            found.train_samples, found.test_samples, expected.train_samples, expected.test_samples
        ))
    } else {
        None
    };
    match what {
        Some(w) => Err(invalid(path, format!("a checkpoint {w}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn context() -> RunContext {
        RunContext {
            command: "serve".into(),
            dataset: Some("iris".into()),
            train_samples: 120,
            test_samples: 30,
        }
    }

    #[test]
    fn a_checkpoint_of_another_command_dataset_or_split_is_refused() {
        let path = Path::new("state/checkpoint.bin");
        check_context(path, &context(), &context()).unwrap();
        for (other, what) in [
            (
                RunContext {
                    command: "train".into(),
                    ..context()
                },
                "written by `gelunet train`",
            ),
            (
                RunContext {
                    dataset: Some("pima-diabetes".into()),
                    ..context()
                },
                "another dataset",
            ),
            (
                RunContext {
                    dataset: None,
                    ..context()
                },
                "another dataset (none, not iris)",
            ),
            (
                RunContext {
                    test_samples: 31,
                    ..context()
                },
                "another split",
            ),
        ] {
            let e = check_context(path, &other, &context()).unwrap_err();
            assert!(matches!(e, RunError::Checkpoint { .. }), "{e}");
            let e = e.to_string();
            assert!(e.contains(what), "{e}");
            assert!(e.contains("state/checkpoint.bin"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error_and_garbage_is_refused() {
        let dir = std::env::temp_dir().join(format!("gelunet-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = checkpoint_path(&dir);
        assert!(matches!(
            load_checkpoint(&path).unwrap_err(),
            RunError::Io { .. }
        ));
        std::fs::write(&path, b"GLNCHKPT but not really a checkpoint at all, no").unwrap();
        let e = load_checkpoint(&path).unwrap_err();
        assert!(matches!(e, RunError::Checkpoint { .. }), "{e}");
        // A well-framed payload that does not decode.
        let bytes = crate::model_file::frame(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, b"\xff\xff");
        std::fs::write(&path, bytes).unwrap();
        let e = load_checkpoint(&path).unwrap_err().to_string();
        assert!(e.contains("payload"), "{e}");
        // Another format version (1: before the parties' fingerprints).
        for other in [1, CHECKPOINT_VERSION + 1] {
            let bytes = crate::model_file::frame(CHECKPOINT_MAGIC, other, b"");
            std::fs::write(&path, bytes).unwrap();
            let e = load_checkpoint(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("format version {other}")), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
