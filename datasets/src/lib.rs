//! Dataset loading and preparation for gelunet (GELU-Net, IJCAI-18).
//!
//! The four datasets of the paper are read in their original distribution
//! formats (see the README next to the shared data files and
//! `scripts/fetch-datasets.sh`):
//!
//! | name | loader | samples × features | classes |
//! | --- | --- | --- | --- |
//! | `iris` | [`load_iris`] | 150 × 4 | 3 (50 each) |
//! | `pima` | [`load_pima`] | 768 × 8 | 2 (500 / 268) |
//! | `kr-vs-kp` | [`load_kr_vs_kp`] | 3196 × 38 (one-hot) | 2 (1527 nowin / 1669 won) |
//! | `mnist` | [`load_mnist`] | 60000 + 10000 × 784, pixels in `[0, 1]` | 10 |
//!
//! plus any CSV file through [`load_csv`]. Iris, Pima and kr-vs-kp are also built into
//! the crate ([`EMBEDDED_FILES`], the original UCI files, SHA-256-checked):
//! [`load_by_name`] uses them when the data directory does not hold the file, so a
//! fresh checkout needs no data step for them; MNIST comes from
//! `scripts/fetch-datasets.sh` (or `--mirror DIR`). Unlabeled samples for inference are
//! read by [`load_unlabeled_csv`]. Every loader returns a [`Dataset`]
//! (features as an `ndarray::Array2<f64>` with one row per sample, labels as
//! class indices). Features are returned unscaled (except MNIST pixels, scaled
//! to `[0, 1]`); use [`Standardizer`] fitted on the training split.
//!
//! Typical pipeline:
//! 1. [`resolve_data_dir`] (`--data-dir`, else `GELUNET_DATA_DIR`, else `./data`);
//! 2. [`load_by_name`] then [`Loaded::into_train_test`] (a deterministic
//!    [`stratified_split`] unless the dataset has its own split);
//! 3. [`standardize_train_test`] for tabular data (z-scores clipped to `±`[`CLIP_Z`]);
//!    image pixels stay in `[0, 1]` ([`Loaded::into_scaled_train_test`] does both steps);
//! 4. [`split_clients`] to share the training set among K clients.
//!
//! All randomness is seeded (`ChaCha8Rng::seed_from_u64`), so splits are
//! reproducible. All errors are [`DatasetError`]; nothing panics on bad input.

mod dataset;
mod embedded;
mod error;
mod mnist;
mod registry;
mod split;
mod standardize;
mod tabular;
mod uci;
mod unlabeled;

pub use dataset::Dataset;
pub use embedded::{embedded_file, EmbeddedFile, EMBEDDED_FILES};
pub use error::{DatasetError, Result, FETCH_HINT};
pub use mnist::{
    load_mnist, read_idx_header, IdxHeader, Mnist, MnistOptions, IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC, MNIST_TEST_IMAGES, MNIST_TEST_LABELS, MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS,
};
pub use registry::{
    load_by_name, load_by_name_with_source, resolve_data_dir, workspace_data_dir, DataSource,
    LoadOptions, Loaded, DATASET_NAMES, DATA_DIR_ENV, DEFAULT_DATA_DIR, MNIST_HINT,
};
pub use split::{
    client_split_indices, parse_client_shares, split_clients, stratified_split,
    stratified_split_indices, DEFAULT_TEST_FRACTION, SHARES_SUM_TOLERANCE,
};
pub use standardize::{
    standardize_columns, standardize_train_test, standardize_value, Standardizer, CLIP_Z, MIN_STD,
};
pub use tabular::{load_csv, CsvOptions};
pub use uci::{load_iris, load_kr_vs_kp, load_pima, IRIS_FILE, KR_VS_KP_FILE, PIMA_FILE};
pub use unlabeled::load_unlabeled_csv;
