//! The three small UCI datasets built into the crate, used when no data directory holds
//! them (so `gelunet train` works on a fresh machine without a data step).
//!
//! The bytes are the original UCI files, byte for byte (the files
//! `scripts/fetch-datasets.sh` downloads), embedded with `include_bytes!` from
//! `datasets/embedded/` and checked against the same SHA-256 digests as the fetch script
//! before they are parsed. MNIST (55 MB) is not embedded.

use std::fmt::Write as _;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::uci::{IRIS_FILE, KR_VS_KP_FILE, PIMA_FILE};

/// One embedded dataset file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedFile {
    /// The dataset's canonical name (`iris`, `pima`, `kr-vs-kp`).
    pub dataset: &'static str,
    /// The file's path relative to a data directory (e.g. [`IRIS_FILE`]).
    pub file: &'static str,
    /// Its SHA-256 digest, lower-case hex (as in `scripts/fetch-datasets.sh`).
    pub sha256: &'static str,
    bytes: &'static [u8],
}

/// The embedded files: Iris (UCI `iris.data`), Pima Indians Diabetes and kr-vs-kp.
pub const EMBEDDED_FILES: [EmbeddedFile; 3] = [
    EmbeddedFile {
        dataset: "iris",
        file: IRIS_FILE,
        sha256: "6f608b71a7317216319b4d27b4d9bc84e6abd734eda7872b71a458569e2656c0",
        bytes: include_bytes!("../embedded/iris.data"),
    },
    EmbeddedFile {
        dataset: "pima",
        file: PIMA_FILE,
        sha256: "06f5b7c2cd7bca686fda4f92eab5f61e7ff6426a9acefa2e3dda04fc54293cf5",
        bytes: include_bytes!("../embedded/pima-indians-diabetes.data"),
    },
    EmbeddedFile {
        dataset: "kr-vs-kp",
        file: KR_VS_KP_FILE,
        sha256: "f47f7d920e117ab5764d3adcd2f6446ca596290261756ecd35c81b12fcaec061",
        bytes: include_bytes!("../embedded/kr-vs-kp.data"),
    },
];

/// The embedded file of the dataset with canonical name `dataset`, if there is one.
pub fn embedded_file(dataset: &str) -> Option<&'static EmbeddedFile> {
    EMBEDDED_FILES.iter().find(|e| e.dataset == dataset)
}

impl EmbeddedFile {
    /// The path that names the embedded copy in messages: `<embedded>/FILE`.
    pub fn label(&self) -> PathBuf {
        PathBuf::from("<embedded>").join(self.file)
    }

    /// The file's bytes, after checking their SHA-256 digest.
    ///
    /// # Errors
    /// [`DatasetError::BadBinary`] if the digest differs from [`EmbeddedFile::sha256`]
    /// (a damaged build).
    pub fn bytes(&self) -> Result<&'static [u8]> {
        let digest = Sha256::digest(self.bytes);
        let mut hex = String::with_capacity(64);
        for b in digest {
            let _ = write!(hex, "{b:02x}");
        }
        if hex != self.sha256 {
            return Err(DatasetError::BadBinary {
                path: self.label(),
                reason: format!("sha256 {hex}, expected {}", self.sha256),
            });
        }
        Ok(self.bytes)
    }
}
