//! The state a protocol v2 server persists after every completed session
//! (`STATE_DIR/v2-state.bin`, `docs/DESIGN.md` "Protocol v2", "Dropouts and crashes"):
//! `(v, ν_v, W~)` and the public parameters ([`V2Checkpoint`]), never a true weight.
//!
//! Layout (all integers little-endian), as the model files':
//!
//! ```text
//! offset  size  field
//! 0       8     magic "GLNV2STA"
//! 8       4     format version (1)
//! 12      8     payload length n
//! 20      32    SHA-256 of the payload
//! 52      n     payload: postcard(V2Checkpoint)
//! ```
//!
//! Written atomically (temporary file in the same directory, fsync, rename): a reader
//! sees the previous state or the whole new one. A file with another magic or version, a
//! wrong length (truncated or extended), a checksum mismatch or an undecodable payload
//! is refused with [`RunError::V2State`].

use std::path::Path;

use gelunet_server::V2Checkpoint;

use crate::model_file::write_atomic;
use crate::{Result, RunError};

/// The file name in the server's state directory.
pub const V2_STATE_FILE: &str = "v2-state.bin";
/// The file's magic.
pub const V2_STATE_MAGIC: &[u8; 8] = b"GLNV2STA";
/// The format version this build writes and reads.
pub const V2_STATE_VERSION: u32 = 1;

fn invalid(path: &Path, reason: impl Into<String>) -> RunError {
    RunError::V2State {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes `cp` to `path` atomically (module docs).
///
/// # Errors
/// [`RunError::V2State`] if it cannot be encoded; [`RunError::ModelFile`]
/// ([`crate::ModelFileError::Io`]) if it cannot be written.
pub fn save_v2_state(path: &Path, cp: &V2Checkpoint) -> Result<()> {
    let body = postcard::to_stdvec(cp).map_err(|e| invalid(path, e.to_string()))?;
    let bytes = crate::model_file::frame(V2_STATE_MAGIC, V2_STATE_VERSION, &body);
    Ok(write_atomic(path, &bytes)?)
}

/// Reads and checks a file written by [`save_v2_state`]. The shapes are checked against
/// the model when it is restored ([`gelunet_server::Server::restore_v2`]).
///
/// # Errors
/// [`RunError::Io`] if it cannot be read; [`RunError::V2State`] for a bad magic or
/// version, a truncated or extended file, a checksum mismatch or an undecodable payload.
pub fn load_v2_state(path: &Path) -> Result<V2Checkpoint> {
    let bytes = std::fs::read(path).map_err(RunError::io("read v2 state", path))?;
    let body =
        crate::model_file::unframe(&bytes, V2_STATE_MAGIC, V2_STATE_VERSION, "v2 state file")
            .map_err(|r| invalid(path, r))?;
    postcard::from_bytes(body).map_err(|e| invalid(path, format!("payload: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use gelunet_protocol::group_key::{ModelId, VersionNonce};
    use gelunet_protocol::v2::{ModelVersion, V2Params};
    use gelunet_server::MaskedLayer;
    use ndarray::{array, Array1};

    fn checkpoint() -> V2Checkpoint {
        let scales = gelunet_protocol::Scales::default();
        V2Checkpoint {
            params: V2Params::new(ModelId([7; 16]), &scales, 128, 1 << 10),
            version: ModelVersion {
                version: 3,
                nonce: VersionNonce([9; 16]),
            },
            masked: vec![MaskedLayer {
                w: array![[(-5).into(), 12345678901234567890u64.into()]],
                b: Array1::from(vec![(-1).into()]),
            }],
        }
    }

    #[test]
    fn a_state_round_trips_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("gelunet-v2-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(V2_STATE_FILE);
        let cp = checkpoint();
        save_v2_state(&path, &cp).unwrap();
        assert_eq!(load_v2_state(&path).unwrap(), cp);
        let bytes = std::fs::read(&path).unwrap();
        // Truncated in the payload, in the header; one flipped bit; another magic.
        for (bad, what) in [
            (bytes[..bytes.len() - 1].to_vec(), "truncated"),
            (bytes[..10].to_vec(), "truncated"),
            (
                {
                    let mut b = bytes.clone();
                    let last = b.len() - 1;
                    b[last] ^= 1;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = bytes.clone();
                    b[0] = b'X';
                    b
                },
                "magic",
            ),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let e = load_v2_state(&path).unwrap_err();
            assert!(matches!(e, RunError::V2State { .. }), "{e}");
            assert!(e.to_string().contains(what), "{e}");
            assert!(e.to_string().contains("v2-state.bin"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
