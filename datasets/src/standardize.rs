//! Per-column standardization (z-scores) fitted on a training split.

use ndarray::{Array1, Array2, Axis};

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};

/// Columns whose standard deviation is at most this are treated as constant
/// and get a standard deviation of 1 (so they are only centred).
pub const MIN_STD: f64 = 1e-12;

/// Per-column mean and standard deviation fitted on a training feature matrix,
/// applied as `(x − mean) / std` to any matrix with the same columns.
///
/// Every column is standardized, including the 0/1 columns produced by one-hot
/// encoding: this keeps the transform uniform (a model sees zero-mean,
/// unit-variance inputs everywhere) and is harmless for the linear first layer
/// of a network. Fit on the training split only and reuse the same
/// `Standardizer` for the test split (and for every client) so no test
/// statistics leak into training.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Array1<f64>,
    std: Array1<f64>,
}

impl Standardizer {
    /// Fits column means and population standard deviations (divisor `n`) on
    /// `features` of shape `(n_samples, n_features)`. A column with standard
    /// deviation `<=` [`MIN_STD`] gets std 1.
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] (option `"standardizer"`) if `features` has no rows.
    pub fn fit(features: &Array2<f64>) -> Result<Self> {
        let mean = features.mean_axis(Axis(0)).ok_or_else(|| {
            DatasetError::bad_option("standardizer", "cannot fit on a matrix with no rows")
        })?;
        let std = features
            .std_axis(Axis(0), 0.0)
            .mapv(|s| if s > MIN_STD { s } else { 1.0 });
        Ok(Self { mean, std })
    }

    /// Column means, length `n_features`.
    pub fn mean(&self) -> &Array1<f64> {
        &self.mean
    }

    /// Column standard deviations used as divisors (constant columns: 1),
    /// length `n_features`.
    pub fn std(&self) -> &Array1<f64> {
        &self.std
    }

    /// Returns `(features − mean) / std`, same shape as `features`.
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] (option `"standardizer"`) if `features` does not
    /// have the number of columns the standardizer was fitted on.
    pub fn transform(&self, features: &Array2<f64>) -> Result<Array2<f64>> {
        if features.ncols() != self.mean.len() {
            return Err(DatasetError::bad_option(
                "standardizer",
                format!(
                    "fitted on {} columns, applied to {}",
                    self.mean.len(),
                    features.ncols()
                ),
            ));
        }
        Ok((features - &self.mean) / &self.std)
    }

    /// Returns a copy of `ds` with standardized features (labels and names kept).
    ///
    /// # Errors
    /// As [`Standardizer::transform`].
    pub fn transform_dataset(&self, ds: &Dataset) -> Result<Dataset> {
        Ok(Dataset {
            features: self.transform(&ds.features)?,
            ..ds.clone()
        })
    }
}

/// Fits a [`Standardizer`] on `train` only and applies it to both splits.
/// Returns `(standardized train, standardized test, fitted standardizer)`.
///
/// # Errors
/// [`DatasetError::BadOption`] if `train` is empty or the splits have different
/// numbers of features.
pub fn standardize_train_test(
    train: &Dataset,
    test: &Dataset,
) -> Result<(Dataset, Dataset, Standardizer)> {
    let s = Standardizer::fit(&train.features)?;
    Ok((s.transform_dataset(train)?, s.transform_dataset(test)?, s))
}
