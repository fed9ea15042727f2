//! Per-column standardization (z-scores) fitted on a training split, clipped to
//! [`CLIP_Z`] so that no value (of the test split, or at inference) can leave the
//! fixed-point input range; and the identity scaling of image data (MNIST pixels stay in
//! `[0, 1]`).

use ndarray::{Array1, Array2, Axis};

use crate::dataset::Dataset;
use crate::error::{DatasetError, Result};

/// Columns whose standard deviation is at most this are treated as constant
/// and get a standard deviation of 1 (so they are only centred).
pub const MIN_STD: f64 = 1e-12;

/// Standardized values are clipped to `[−CLIP_Z, CLIP_Z]`.
///
/// A column that is nearly constant on the training split (say an MNIST pixel that is
/// almost always 0, or a rare one-hot category) has a tiny standard deviation, so one
/// unusual test value can become a z-score in the hundreds and leave the fixed-point
/// range of an input (`|x| < 2^8` with the default scales, docs/DESIGN.md "Fixed-point
/// numbers"). The clip bounds every value. By Samuelson's inequality a training value is
/// never further than `sqrt(n − 1)` standard deviations (population std) from its column
/// mean, so on training splits of at most 4097 samples the clip changes no training
/// value (Iris, Pima and kr-vs-kp are unaffected, their models byte-identical); it only
/// bounds outliers of the test split and of inference inputs.
pub const CLIP_Z: f64 = 64.0;

/// [`standardize_value`] on every entry of `x` (samples × features) with the mean and
/// std of its column; columns beyond `mean` or `std` are kept as they are.
pub fn standardize_columns(x: &Array2<f64>, mean: &[f64], std: &[f64]) -> Array2<f64> {
    let mut out = x.clone();
    for mut row in out.rows_mut() {
        for ((v, &m), &s) in row.iter_mut().zip(mean).zip(std) {
            *v = standardize_value(*v, m, s);
        }
    }
    out
}

/// `(x − mean) / std` clipped to `[−CLIP_Z, CLIP_Z]` ([`CLIP_Z`]); NaN stays NaN (and is
/// refused later by the fixed-point encoder).
pub fn standardize_value(x: f64, mean: f64, std: f64) -> f64 {
    ((x - mean) / std).clamp(-CLIP_Z, CLIP_Z)
}

/// Per-column mean and standard deviation fitted on a training feature matrix,
/// applied as `(x − mean) / std`, clipped to `±`[`CLIP_Z`], to any matrix with the same
/// columns.
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

    /// The identity on `n_features` columns (mean 0, std 1): features are kept as loaded.
    /// Used for image data, whose pixels are already in `[0, 1]` ([`crate::load_mnist`]).
    pub fn identity(n_features: usize) -> Self {
        Self {
            mean: Array1::zeros(n_features),
            std: Array1::ones(n_features),
        }
    }

    /// Whether this is the identity (every mean 0 and every std 1).
    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
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

    /// Returns `(features − mean) / std` clipped to `±`[`CLIP_Z`]
    /// ([`standardize_value`]), same shape as `features`. The identity returns
    /// `features` unchanged.
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
        if self.is_identity() {
            return Ok(features.clone());
        }
        Ok(standardize_columns(
            features,
            &self.mean.to_vec(),
            &self.std.to_vec(),
        ))
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
