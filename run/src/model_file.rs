//! Trained-model files, the public model card, and atomic writes.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic "GLNMODEL"
//! 8       4     format version (1)
//! 12      8     payload length n
//! 20      32    SHA-256 of the payload
//! 52      n     payload: postcard(ModelFile)
//! ```
//!
//! The payload holds the architecture, the fixed-point scales, the weights (fixed-point
//! integers), the standardizer's mean/std and the class and feature names. Files are
//! written atomically (temporary file in the same directory, fsync, rename). A file with
//! another magic or version, a wrong length (truncated or extended), a checksum mismatch,
//! an undecodable payload or inconsistent contents is refused with a clear error.

use std::fs;
use std::path::{Path, PathBuf};

use gelunet_protocol::{FixedModel, LayerParams, ModelSpec, Scales};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File magic.
pub const MAGIC: &[u8; 8] = b"GLNMODEL";
/// Format version of a fully connected model (its payload's spec is `widths, hidden`).
pub const VERSION: u32 = 1;
/// Format version of a model with conv layers (its payload's spec is the whole
/// [`ModelSpec`], with its layer kinds). Dense models keep [`VERSION`], byte for byte.
pub const VERSION_CONV: u32 = 2;
const HEADER: usize = 8 + 4 + 8 + 32;
/// Largest payload accepted (1 GiB).
const MAX_PAYLOAD: u64 = 1 << 30;

/// One layer on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LayerOnDisk {
    rows: u32,
    cols: u32,
    /// Row-major weights at `2^fw`.
    w: Vec<i128>,
    /// Biases at `2^(fa+fw)`.
    b: Vec<i128>,
}

/// The payload: postcard is positional, so the nested [`DataCard`] encodes exactly as its
/// seven fields inline (the format is unchanged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Payload<S> {
    spec: S,
    scales: Scales,
    layers: Vec<LayerOnDisk>,
    data: DataCard,
}

/// The spec of a version-1 (fully connected) file: [`ModelSpec`] without layer kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct DenseSpec {
    widths: Vec<usize>,
    hidden: Vec<gelunet_protocol::Activation>,
}

/// What a model holds about its training data besides the weights, in the model file
/// and in the public [`ModelCard`]: the standardizer, the names, the dataset and its
/// split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataCard {
    /// Standardizer mean per input feature.
    pub mean: Vec<f64>,
    /// Standardizer standard deviation per input feature.
    pub std: Vec<f64>,
    /// Class names (index = class).
    pub class_names: Vec<String>,
    /// Feature names.
    pub feature_names: Vec<String>,
    /// The dataset the model was trained on.
    pub dataset: String,
    /// Seed of the train/test split used in training.
    pub split_seed: u64,
    /// Test fraction of that split.
    pub test_fraction: f64,
}

/// A trained model with what inference needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The fixed-point model.
    pub model: FixedModel,
    /// Its scales.
    pub scales: Scales,
    /// The standardizer, names and split of its training data.
    pub data: DataCard,
}

/// Why a model file or a model card was refused or could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// File-system error.
    #[error("{op} `{}`: {source}", path.display())]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not a model file, a truncated or corrupt one, or inconsistent contents.
    #[error("`{}` is not a valid gelunet model file: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model card that is missing, unreadable, malformed or inconsistent.
    #[error("model card `{}`: {reason}", path.display())]
    InvalidCard {
        /// The card.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(path: &Path, reason: impl Into<String>) -> ModelFileError {
    ModelFileError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ModelFile {
    fn check(&self, path: &Path) -> Result<(), ModelFileError> {
        let d = &self.data;
        self.model
            .validate(&self.scales)
            .map_err(|e| invalid(path, format!("model: {e}")))?;
        let inputs = self.model.spec.inputs();
        if d.mean.len() != inputs || d.std.len() != inputs {
            return Err(invalid(
                path,
                format!(
                    "standardizer has {}/{} values for {inputs} inputs",
                    d.mean.len(),
                    d.std.len()
                ),
            ));
        }
        if d.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || d.mean.iter().any(|m| !m.is_finite())
        {
            return Err(invalid(path, "standardizer values must be finite, std > 0"));
        }
        if d.class_names.len() != self.model.spec.classes() {
            return Err(invalid(
                path,
                format!(
                    "{} class names for {} classes",
                    d.class_names.len(),
                    self.model.spec.classes()
                ),
            ));
        }
        if !d.feature_names.is_empty() && d.feature_names.len() != inputs {
            return Err(invalid(
                path,
                format!(
                    "{} feature names for {inputs} inputs",
                    d.feature_names.len()
                ),
            ));
        }
        Ok(())
    }

    /// Writes the file atomically.
    ///
    /// # Errors
    /// [`ModelFileError::Io`]; [`ModelFileError::Invalid`] for an inconsistent model.
    pub fn save(&self, path: &Path) -> Result<(), ModelFileError> {
        self.check(path)?;
        let spec = &self.model.spec;
        let layers = self
            .model
            .layers
            .iter()
            .map(|l| LayerOnDisk {
                rows: l.w.nrows() as u32,
                cols: l.w.ncols() as u32,
                w: l.w.iter().copied().collect(),
                b: l.b.to_vec(),
            })
            .collect();
        let (version, body) = if spec.is_dense() {
            let payload = Payload {
                spec: DenseSpec {
                    widths: spec.widths.clone(),
                    hidden: spec.hidden.clone(),
                },
                scales: self.scales,
                layers,
                data: self.data.clone(),
            };
            (VERSION, postcard::to_stdvec(&payload))
        } else {
            let payload = Payload {
                spec: spec.clone(),
                scales: self.scales,
                layers,
                data: self.data.clone(),
            };
            (VERSION_CONV, postcard::to_stdvec(&payload))
        };
        let body = body.map_err(|e| invalid(path, e.to_string()))?;
        let bytes = frame(MAGIC, version, &body);
        write_atomic(path, &bytes)
    }

    /// Reads and checks a file written by [`ModelFile::save`].
    ///
    /// # Errors
    /// [`ModelFileError::Io`] if it cannot be read; [`ModelFileError::Invalid`] for a bad
    /// magic or version, a truncated or extended file, a checksum mismatch or bad
    /// contents.
    pub fn load(path: &Path) -> Result<Self, ModelFileError> {
        let bytes = fs::read(path).map_err(|source| ModelFileError::Io {
            op: "read model",
            path: path.to_path_buf(),
            source,
        })?;
        let version = match bytes.get(8..12) {
            Some(v) if bytes.starts_with(MAGIC) => {
                u32::from_le_bytes(v.try_into().unwrap_or_default())
            }
            _ => VERSION,
        };
        let conv = version == VERSION_CONV;
        let expected = if conv { VERSION_CONV } else { VERSION };
        let body = unframe(&bytes, MAGIC, expected, "model file").map_err(|r| invalid(path, r))?;
        let payload = |e: postcard::Error| invalid(path, format!("payload: {e}"));
        let p: Payload<ModelSpec> = if conv {
            postcard::from_bytes(body).map_err(payload)?
        } else {
            let p: Payload<DenseSpec> = postcard::from_bytes(body).map_err(payload)?;
            Payload {
                spec: ModelSpec {
                    widths: p.spec.widths,
                    hidden: p.spec.hidden,
                    layers: Vec::new(),
                },
                scales: p.scales,
                layers: p.layers,
                data: p.data,
            }
        };
        if conv && p.spec.is_dense() {
            return Err(invalid(path, "a version-2 file holds conv layers"));
        }
        p.spec
            .validate()
            .map_err(|e| invalid(path, format!("spec: {e}")))?;
        if p.layers.len() != p.spec.num_layers() {
            return Err(invalid(path, "layer count does not match the architecture"));
        }
        let mut layers = Vec::with_capacity(p.layers.len());
        for (i, l) in p.layers.into_iter().enumerate() {
            let (m, n) = p.spec.param_shape(i + 1);
            if (l.rows as usize, l.cols as usize) != (m, n) || l.b.len() != m {
                return Err(invalid(
                    path,
                    format!("layer {} has the wrong shape", i + 1),
                ));
            }
            let w = Array2::from_shape_vec((m, n), l.w)
                .map_err(|e| invalid(path, format!("layer {}: {e}", i + 1)))?;
            layers.push(LayerParams {
                w,
                b: Array1::from(l.b),
            });
        }
        let f = Self {
            model: FixedModel {
                spec: p.spec,
                layers,
            },
            scales: p.scales,
            data: p.data,
        };
        f.check(path)?;
        Ok(f)
    }
}

/// The directory `path` is written in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that [`write_atomic`] can write `path`, without touching it: `path` is not a
/// directory, and its directory exists and accepts a new file (a probe file is created
/// there and removed).
///
/// # Errors
/// The I/O error (`NotFound` for a missing directory, `PermissionDenied`, ...;
/// `InvalidInput` for a directory given as the path).
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory, not a file",
        ));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("directory {} does not exist", dir.display()),
        ));
    }
    let probe = dir.join(format!(".gelunet-write-probe.{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// Writes `bytes` to a temporary sibling of `path` (created new), fsyncs, renames it over
/// `path` and fsyncs the directory (best effort): readers see the old file or the whole
/// new one, never a part.
///
/// # Errors
/// [`ModelFileError::Io`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelFileError> {
    write_atomic_mode(path, bytes, false)
}

/// [`write_atomic`] for secrets (a client's key file): the file is readable by its owner
/// only (mode 0600 on Unix) from its creation.
///
/// # Errors
/// The I/O error.
pub(crate) fn write_atomic_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, true).map_err(|e| match e {
        ModelFileError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

fn write_atomic_mode(path: &Path, bytes: &[u8], private: bool) -> Result<(), ModelFileError> {
    gelunet_net::write_atomic(path, bytes, private).map_err(|e| match e {
        gelunet_net::NetError::Io { op, path, source } => ModelFileError::Io { op, path, source },
        other => ModelFileError::Io {
            op: "write",
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}

/// The public part of a [`ModelFile`]: what a remote inference client needs to prepare
/// its inputs and name the classes, without the weights. `gelunet serve-model` writes it
/// as JSON to `STATE_DIR/model-card.json`; `gelunet infer --server` reads it
/// (`--model-card`). It reveals the architecture's input and output widths, the
/// training split's per-feature mean and standard deviation and the names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Input width `n_0`.
    pub inputs: usize,
    /// Number of classes.
    pub classes: usize,
    /// The standardizer, names and split (flattened into the JSON object).
    #[serde(flatten)]
    pub data: DataCard,
}

impl ModelCard {
    /// Writes the card as JSON, atomically.
    ///
    /// # Errors
    /// [`ModelFileError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), ModelFileError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| ModelFileError::Io {
            op: "encode",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(path, &json)
    }

    /// Reads and checks a card.
    ///
    /// # Errors
    /// [`ModelFileError::InvalidCard`] (naming the file) for a missing, unreadable or
    /// malformed card, or one whose lengths disagree, whose standard deviations are not
    /// positive and finite or whose test fraction is outside `(0, 1)`.
    pub fn load(path: &Path) -> Result<Self, ModelFileError> {
        let what = |reason: String| ModelFileError::InvalidCard {
            path: path.to_path_buf(),
            reason,
        };
        let text = fs::read(path).map_err(|e| what(e.to_string()))?;
        let card: Self = serde_json::from_slice(&text).map_err(|e| what(e.to_string()))?;
        if card.inputs == 0 || card.classes < 2 {
            return Err(what(format!(
                "{} inputs and {} classes: not a model",
                card.inputs, card.classes
            )));
        }
        if card.data.mean.len() != card.inputs || card.data.std.len() != card.inputs {
            return Err(what(format!(
                "{} inputs but {} means and {} standard deviations",
                card.inputs,
                card.data.mean.len(),
                card.data.std.len()
            )));
        }
        if card.data.class_names.len() != card.classes {
            return Err(what(format!(
                "{} classes but {} class names",
                card.classes,
                card.data.class_names.len()
            )));
        }
        if card.data.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || card.data.mean.iter().any(|m| !m.is_finite())
        {
            return Err(what(
                "a mean or standard deviation is not finite and positive".into(),
            ));
        }
        if !(card.data.test_fraction > 0.0 && card.data.test_fraction < 1.0) {
            return Err(what(format!(
                "test fraction {} outside (0, 1)",
                card.data.test_fraction
            )));
        }
        Ok(card)
    }

    /// `(x − mean) / std` per feature clipped to `±`[`gelunet_datasets::CLIP_Z`], as in
    /// training ([`gelunet_datasets::standardize_columns`]; `x`: samples × `inputs`).
    pub fn standardize(&self, x: &Array2<f64>) -> Array2<f64> {
        gelunet_datasets::standardize_columns(x, &self.data.mean, &self.data.std)
    }
}

impl ModelFile {
    /// The public card of this model (no weights).
    pub fn card(&self) -> ModelCard {
        ModelCard {
            inputs: self.model.spec.inputs(),
            classes: self.model.spec.classes(),
            data: self.data.clone(),
        }
    }
}

/// `magic ‖ version (u32 LE) ‖ length (u64 LE) ‖ SHA-256(body) ‖ body`: the framing of the
/// model file and of the checkpoint file ([`crate::checkpoint`]).
pub(crate) fn frame(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(body));
    bytes.extend_from_slice(body);
    bytes
}

/// The body of a file written by [`frame`], after checking the magic, the version, the
/// length (at most 1 GiB) and the checksum.
///
/// # Errors
/// What is wrong, as text naming `kind` (no file contents).
pub(crate) fn unframe<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    version: u32,
    kind: &str,
) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER {
        return Err(format!(
            "{} bytes, shorter than the {HEADER}-byte header (truncated)",
            bytes.len()
        ));
    }
    if &bytes[..8] != magic {
        return Err(format!("bad magic (not a {kind})"));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let found = u32::from_le_bytes(v);
    if found != version {
        return Err(format!(
            "format version {found}, this build reads {version}"
        ));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(l);
    let body = &bytes[HEADER..];
    if len > MAX_PAYLOAD || len != body.len() as u64 {
        return Err(format!(
            "payload of {} bytes, the header says {len} (truncated or corrupt)",
            body.len()
        ));
    }
    if Sha256::digest(body).as_slice() != &bytes[20..HEADER] {
        return Err("checksum mismatch (corrupt file)".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_output_paths_are_found_without_writing() {
        let dir = std::env::temp_dir().join(format!("gelunet-writable-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("model.bin");
        check_writable(&ok).unwrap();
        assert!(!ok.exists(), "the check leaves nothing behind");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let missing = dir.join("no-such-dir").join("model.bin");
        assert_eq!(
            check_writable(&missing).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        assert_eq!(
            check_writable(&dir).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
