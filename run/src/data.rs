//! The data pipeline of a run: load → deterministic stratified split (seeded) →
//! standardize on the training split → split the training set among K clients; and the
//! seeds and names derived from the run's seed.

use std::path::PathBuf;

use gelunet_datasets::{
    load_by_name_with_source, parse_client_shares, resolve_data_dir, split_clients, CsvOptions,
    DataSource, Dataset, DatasetError, LoadOptions, Loaded, MnistOptions, Standardizer,
};

use crate::{Result, RunError};

/// Where the data comes from (`--dataset`, `--data-dir` and the loader options).
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    /// Dataset: `iris`, `pima`, `kr-vs-kp`, `mnist`, or `csv:PATH`.
    pub dataset: Option<String>,
    /// Data directory (`None`: `$GELUNET_DATA_DIR`, else `./data`).
    pub data_dir: Option<PathBuf>,
    /// CSV: 0-based label column, negative counts from the end.
    pub label_column: isize,
    /// CSV: columns to drop (same indexing as `label_column`).
    pub ignore_columns: Vec<isize>,
    /// CSV: the first row is a header (`false`: auto-detect).
    pub header: bool,
    /// Fraction of the samples held out for testing, in `[0, 1)` (datasets without their
    /// own split).
    pub test_fraction: f64,
    /// MNIST: use at most this many training samples.
    pub max_train: Option<usize>,
    /// MNIST: use at most this many test samples.
    pub max_test: Option<usize>,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            dataset: None,
            data_dir: None,
            label_column: -1,
            ignore_columns: Vec::new(),
            header: false,
            test_fraction: 0.2,
            max_train: None,
            max_test: None,
        }
    }
}

/// The prepared data: scaled train/test splits (tabular columns standardized and clipped,
/// image pixels in `[0, 1]`) and the clients' shares.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Dataset name as given.
    pub name: String,
    /// Scaled training split.
    pub train: Dataset,
    /// Scaled test split.
    pub test: Dataset,
    /// Fitted on the training split (the identity for images).
    pub standardizer: Standardizer,
    /// The clients' shares of `train`.
    pub shares: Vec<Dataset>,
    /// Where the data came from (a file, or the built-in copy).
    pub source: DataSource,
}

/// A seed derived from `seed` and a label (SplitMix64 finalizer): the schedule seed
/// (label `0x5c4e_d01e`), the client split (`0x5ba2e`) and the clients' role seeds
/// ([`client_seed`]) of a run with `--seed`.
pub fn derive_seed(seed: u64, label: u64) -> u64 {
    let mut z = seed ^ label.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of client `k` in a run with `seed`: of its mini-batch order in `train`
/// (`ClientConfig::batch_seed`), of all its randomness in `join --insecure-reproducible`.
pub fn client_seed(seed: u64, k: usize) -> u64 {
    derive_seed(seed, 0xc11e_0000 + k as u64)
}

/// Name of client `k` in a `train` run (`client-k`).
pub fn client_name(k: usize) -> String {
    format!("client-{k}")
}

/// Parses `--client-shares` (comma-separated fractions summing to 1).
///
/// # Errors
/// [`RunError::Dataset`] for a malformed list.
pub fn parse_shares(s: Option<&str>) -> Result<Option<Vec<f64>>> {
    Ok(s.map(parse_client_shares).transpose()?)
}

impl DataOptions {
    /// The dataset name, required here.
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] when no dataset is given.
    pub fn name(&self) -> Result<&str> {
        self.dataset.as_deref().ok_or_else(|| {
            RunError::option(
                "--dataset",
                "required (iris, pima, kr-vs-kp, mnist or csv:PATH)",
            )
        })
    }

    /// The loader options (CSV and MNIST).
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            csv: CsvOptions {
                label_column: self.label_column,
                ignore_columns: self.ignore_columns.clone(),
                header: self.header.then_some(true),
                ..CsvOptions::default()
            },
            mnist: MnistOptions {
                max_train: self.max_train,
                max_test: self.max_test,
            },
        }
    }

    /// Loads the dataset and splits it (stratified, `seed`) into train and test with
    /// `test_fraction`, unstandardized.
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] without a dataset; [`RunError::Dataset`] (a missing
    /// file names the file and how to get it).
    pub fn load_split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        self.load_split_with_source(test_fraction, seed)
            .map(|(train, test, _)| (train, test))
    }

    /// [`DataOptions::load_split`], and where the data came from (Iris, Pima and
    /// kr-vs-kp fall back to their built-in copies when the data directory does not hold
    /// them, `gelunet_datasets::load_by_name_with_source`).
    ///
    /// # Errors
    /// As [`DataOptions::load_split`].
    pub fn load_split_with_source(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset, DataSource)> {
        let (loaded, source) = self.load()?;
        let (train, test) = loaded.into_train_test(test_fraction, seed)?;
        Ok((train, test, source))
    }

    /// Loads the dataset, and says where it came from (Iris, Pima and kr-vs-kp fall back
    /// to their built-in copies when the data directory does not hold them).
    fn load(&self) -> Result<(Loaded, DataSource)> {
        let name = self.name()?;
        let dir = resolve_data_dir(self.data_dir.as_deref());
        Ok(load_by_name_with_source(name, &dir, &self.load_options())?)
    }

    /// Loads, splits (stratified, `seed`), scales ([`Loaded::into_scaled_train_test`]:
    /// tabular columns standardized on the training split and clipped to
    /// `±`[`gelunet_datasets::CLIP_Z`], image pixels kept in `[0, 1]`), and splits the
    /// training set among `clients` clients with `shares` (`None`: equal; seed
    /// `derive_seed(seed, 0x5ba2e)`).
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] without a dataset or for a test fraction outside
    /// `[0, 1)`; [`RunError::Dataset`] ([`DatasetError::TooLittleData`] for labels of a
    /// single class, a training split with fewer samples than clients or a test split
    /// left empty by a positive test fraction).
    pub fn prepare(&self, clients: usize, shares: Option<&[f64]>, seed: u64) -> Result<Prepared> {
        let name = self.name()?;
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(RunError::option(
                "--test-fraction",
                format!("{}: must be in [0, 1)", self.test_fraction),
            ));
        }
        let (loaded, source) = self.load()?;
        let (train, test, standardizer) =
            loaded.into_scaled_train_test(self.test_fraction, seed)?;
        if train.n_classes() < 2 {
            return Err(DatasetError::TooLittleData {
                dataset: name.to_string(),
                reason: format!(
                    "the labels hold a single class ({:?}): a classifier needs at least 2 \
                     (is --label-column right?)",
                    train.class_names.first().map_or("", String::as_str)
                ),
            }
            .into());
        }
        if self.test_fraction > 0.0 && test.n_samples() == 0 {
            return Err(DatasetError::TooLittleData {
                dataset: name.to_string(),
                reason: format!(
                    "a test fraction of {} leaves no test sample ({} samples in all); \
                     use more data or a larger --test-fraction",
                    self.test_fraction,
                    train.n_samples()
                ),
            }
            .into());
        }
        let shares = split_clients(&train, clients, shares, derive_seed(seed, 0x5ba2e))?;
        Ok(Prepared {
            name: name.to_string(),
            train,
            test,
            standardizer,
            shares,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_fixed_functions_of_the_run_seed() {
        // Model files and reproducible joins depend on these values.
        assert_eq!(client_seed(1, 0), derive_seed(1, 0xc11e_0000));
        assert_ne!(client_seed(1, 0), client_seed(1, 1));
        assert_ne!(derive_seed(1, 7), derive_seed(2, 7));
        assert_eq!(client_name(2), "client-2");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(matches!(
            DataOptions::default().prepare(1, None, 1),
            Err(RunError::InvalidOption {
                option: "--dataset",
                ..
            })
        ));
        let d = DataOptions {
            dataset: Some("iris".into()),
            test_fraction: 1.0,
            ..DataOptions::default()
        };
        assert!(matches!(
            d.prepare(1, None, 1),
            Err(RunError::InvalidOption {
                option: "--test-fraction",
                ..
            })
        ));
        assert!(parse_shares(Some("0.5,x")).is_err());
        assert_eq!(parse_shares(Some("0.5,0.5")).unwrap(), Some(vec![0.5, 0.5]));
        assert_eq!(parse_shares(None).unwrap(), None);
    }
}
