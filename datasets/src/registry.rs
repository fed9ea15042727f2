//! Data directory lookup and loading datasets by name.

use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};
use crate::mnist::{load_mnist, MnistOptions};
use crate::split::stratified_split;
use crate::standardize::{standardize_train_test, Standardizer};
use crate::tabular::{load_csv, CsvOptions};
use crate::uci::{load_iris, load_kr_vs_kp, load_pima};

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "GELUNET_DATA_DIR";
/// Data directory used when neither `--data-dir` nor [`DATA_DIR_ENV`] is given.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Built-in dataset names accepted by [`load_by_name`] (besides the aliases
/// `diabetes` and `pima-diabetes` for `pima`, and `csv:PATH`).
pub const DATASET_NAMES: [&str; 4] = ["iris", "pima", "kr-vs-kp", "mnist"];

/// Chooses the data directory: `explicit` (the `--data-dir` flag) if given,
/// else the non-empty value of `GELUNET_DATA_DIR`, else `./data`. The directory
/// is not checked for existence here; loaders report missing files.
pub fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The data directory as seen from a directory inside a checkout of this workspace
/// (tests, examples, benches): the non-empty value of `GELUNET_DATA_DIR` if set, else the
/// first of `start`, its parents, … that holds a `data/` directory (where
/// `scripts/fetch-datasets.sh` puts the files), else `./data`. Like [`resolve_data_dir`],
/// it does not check that the datasets are there; the loaders report missing files with
/// [`crate::FETCH_HINT`].
pub fn workspace_data_dir(start: &Path) -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => return PathBuf::from(v),
        _ => {}
    }
    start
        .ancestors()
        .map(|d| d.join(DEFAULT_DATA_DIR))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Options passed through [`load_by_name`] to the individual loaders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Options for `csv:PATH`.
    pub csv: CsvOptions,
    /// Sample limits for `mnist`.
    pub mnist: MnistOptions,
}

/// What [`load_by_name`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// A dataset without a predefined split (Iris, Pima, kr-vs-kp, CSV).
    Single(Dataset),
    /// A dataset distributed with its own train/test split (MNIST).
    PreSplit {
        /// The training split.
        train: Dataset,
        /// The test split.
        test: Dataset,
    },
}

impl Loaded {
    /// Returns `(train, test)`: the predefined split if there is one, otherwise a
    /// [`stratified_split`] with `test_fraction` and `seed`.
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] if a split is needed and `test_fraction` is not
    /// in `[0, 1]`.
    pub fn into_train_test(self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        match self {
            Self::Single(ds) => stratified_split(&ds, test_fraction, seed),
            Self::PreSplit { train, test } => Ok((train, test)),
        }
    }

    /// Whether the features are image pixels kept as loaded (MNIST, in `[0, 1]`) rather
    /// than standardized: true for the pre-split datasets (MNIST is the only one).
    pub fn is_image(&self) -> bool {
        matches!(self, Self::PreSplit { .. })
    }

    /// [`Loaded::into_train_test`], then the scaling of the features: images keep their
    /// `[0, 1]` pixels ([`Standardizer::identity`]); tabular data is standardized on the
    /// training split, clipped to `±`[`crate::CLIP_Z`] ([`standardize_train_test`]).
    /// Returns `(train, test, the scaling applied)`.
    ///
    /// # Errors
    /// As [`Loaded::into_train_test`] and [`standardize_train_test`] (an empty training
    /// split).
    pub fn into_scaled_train_test(
        self,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset, Standardizer)> {
        let image = self.is_image();
        let (train, test) = self.into_train_test(test_fraction, seed)?;
        if image {
            let s = Standardizer::identity(train.n_features());
            return Ok((train, test, s));
        }
        standardize_train_test(&train, &test)
    }
}

/// Loads a dataset by name from `data_dir` (laid out as `iris/`,
/// `pima-diabetes/`, `kr-vs-kp/`, `mnist/`).
///
/// Names (case-insensitive): `iris`, `pima` (also `diabetes`,
/// `pima-diabetes`), `kr-vs-kp` (also `krkp`, `chess`), `mnist`, or
/// `csv:PATH` for [`load_csv`] with `opts.csv`. A relative CSV `PATH` is taken
/// relative to the current directory, or to `data_dir` if it does not exist
/// there but does in `data_dir`.
///
/// # Errors
/// [`DatasetError::UnknownDataset`] for any other name,
/// [`DatasetError::BadOption`] for `csv:` with an empty path, and whatever the
/// selected loader returns ([`DatasetError::MissingFile`] naming the absent
/// file, [`DatasetError::Malformed`], ...).
pub fn load_by_name(name: &str, data_dir: &Path, opts: &LoadOptions) -> Result<Loaded> {
    if let Some(rest) = name.strip_prefix("csv:") {
        if rest.is_empty() {
            return Err(DatasetError::bad_option(
                "dataset",
                "csv: needs a path, e.g. csv:my.csv",
            ));
        }
        let given = PathBuf::from(rest);
        let path = if given.is_relative() && !given.exists() && data_dir.join(&given).exists() {
            data_dir.join(&given)
        } else {
            given
        };
        return load_csv(&path, &opts.csv).map(Loaded::Single);
    }
    match name.trim().to_ascii_lowercase().as_str() {
        "iris" => load_iris(data_dir).map(Loaded::Single),
        "pima" | "diabetes" | "pima-diabetes" => load_pima(data_dir).map(Loaded::Single),
        "kr-vs-kp" | "krkp" | "chess" => load_kr_vs_kp(data_dir).map(Loaded::Single),
        "mnist" => {
            let m = load_mnist(data_dir, opts.mnist)?;
            Ok(Loaded::PreSplit {
                train: m.train,
                test: m.test,
            })
        }
        _ => Err(DatasetError::UnknownDataset {
            name: name.to_owned(),
        }),
    }
}
