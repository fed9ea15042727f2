//! The crate's single error type.

use std::path::PathBuf;

/// Hint appended to [`DatasetError::MissingFile`] for the built-in datasets.
pub const FETCH_HINT: &str =
    "run scripts/fetch-datasets.sh or pass --data-dir / set GELUNET_DATA_DIR";

/// Every error this crate can return.
///
/// Loaders never panic on bad input: a missing file, a malformed row, a bad IDX
/// header or an invalid option each map to one structured variant below.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A dataset file does not exist (or its data directory does not exist).
    #[error("dataset file {} not found: {hint}", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// How to obtain the file (for the built-in datasets: [`FETCH_HINT`]).
        hint: String,
    },

    /// A text (CSV) file has a row that cannot be parsed.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the offending row (0 if not tied to a line,
        /// e.g. an empty file).
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// A field of a text (CSV) file holds a value no sample may have: empty (a missing
    /// value), or a number that is not finite (`nan`, `inf`, `-inf`, ...).
    #[error("{}: row {line}, column {column} ({column_name}): {reason}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the row.
        line: usize,
        /// 0-based index of the column in the file.
        column: usize,
        /// The column's name (its header, or `col<index>`).
        column_name: String,
        /// What is wrong (it quotes the value, which is data, never a secret).
        reason: String,
    },

    /// The data cannot train a classifier as asked: one class only, fewer samples than
    /// clients, or a split that leaves the training or the test part empty.
    #[error("{dataset}: {reason}")]
    TooLittleData {
        /// The dataset (or split) concerned.
        dataset: String,
        /// What is missing.
        reason: String,
    },

    /// An IDX file starts with the wrong magic number.
    #[error("{}: bad IDX magic number {found:#010x}, expected {expected:#010x}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Magic number expected (`0x00000803` for images, `0x00000801` for labels).
        expected: u32,
        /// Magic number found in the file.
        found: u32,
    },

    /// A binary (IDX / gzip) file is structurally wrong: truncated, corrupt
    /// compressed stream, inconsistent sizes, out-of-range values or trailing bytes.
    #[error("{}: {reason}", path.display())]
    BadBinary {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// [`crate::load_by_name`] was given a name it does not know.
    #[error(
        "unknown dataset {name:?}: expected one of iris, pima (diabetes, pima-diabetes), \
         kr-vs-kp, mnist or csv:PATH"
    )]
    UnknownDataset {
        /// The name that was given.
        name: String,
    },

    /// An option (split fraction, client shares, CSV column index, ...) is invalid.
    #[error("invalid {option}: {reason}")]
    BadOption {
        /// Which option.
        option: String,
        /// Why it is rejected.
        reason: String,
    },

    /// Any other I/O error while reading a file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for `Result<T, DatasetError>`.
pub type Result<T> = std::result::Result<T, DatasetError>;

impl DatasetError {
    /// Builds a [`DatasetError::BadOption`].
    pub(crate) fn bad_option(option: &str, reason: impl Into<String>) -> Self {
        Self::BadOption {
            option: option.to_owned(),
            reason: reason.into(),
        }
    }

    /// Builds a [`DatasetError::Malformed`].
    pub(crate) fn malformed(
        path: &std::path::Path,
        line: usize,
        reason: impl Into<String>,
    ) -> Self {
        Self::Malformed {
            path: path.to_owned(),
            line,
            reason: reason.into(),
        }
    }
}

/// Opens `path` for reading, mapping "not found" to [`DatasetError::MissingFile`]
/// with the given hint and other failures to [`DatasetError::Io`].
pub(crate) fn open_file(path: &std::path::Path, hint: &str) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            let parent_note = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
                    format!(" (directory {} does not exist)", dir.display())
                }
                _ => String::new(),
            };
            DatasetError::MissingFile {
                path: path.to_owned(),
                hint: format!("{hint}{parent_note}"),
            }
        } else {
            DatasetError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}
