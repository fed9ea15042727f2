//! The common in-memory dataset type returned by every loader.

use ndarray::{Array2, Axis};

use crate::error::{DatasetError, Result};

/// A labelled classification dataset held in memory.
///
/// Invariants (checked by [`Dataset::new`], assumed by the rest of the crate):
/// `features` has shape `(n_samples, n_features)` with one row per sample,
/// `labels.len() == n_samples`, every label is `< class_names.len()`, and
/// `feature_names.len() == n_features`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Short name, e.g. `"iris"`, `"mnist-train"` or a CSV file stem.
    pub name: String,
    /// Feature matrix, shape `(n_samples, n_features)`, rows are samples.
    pub features: Array2<f64>,
    /// Class index of each sample, in `0..class_names.len()`.
    pub labels: Vec<usize>,
    /// Human-readable name of each class; `labels[i]` indexes into this.
    pub class_names: Vec<String>,
    /// Name of each feature column (one-hot columns are named `attr=value`).
    pub feature_names: Vec<String>,
}

impl Dataset {
    /// Builds a dataset after checking the invariants listed on [`Dataset`].
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] (option `"dataset"`) if the number of labels
    /// differs from the number of rows, the number of feature names differs from
    /// the number of columns, or a label is out of range.
    pub fn new(
        name: impl Into<String>,
        features: Array2<f64>,
        labels: Vec<usize>,
        class_names: Vec<String>,
        feature_names: Vec<String>,
    ) -> Result<Self> {
        let ds = Self {
            name: name.into(),
            features,
            labels,
            class_names,
            feature_names,
        };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks the invariants listed on [`Dataset`].
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] (option `"dataset"`) describing the first
    /// violated invariant.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(DatasetError::bad_option("dataset", reason));
        if self.labels.len() != self.features.nrows() {
            return bad(format!(
                "{}: {} labels for {} feature rows",
                self.name,
                self.labels.len(),
                self.features.nrows()
            ));
        }
        if self.feature_names.len() != self.features.ncols() {
            return bad(format!(
                "{}: {} feature names for {} feature columns",
                self.name,
                self.feature_names.len(),
                self.features.ncols()
            ));
        }
        if let Some(&l) = self.labels.iter().find(|&&l| l >= self.class_names.len()) {
            return bad(format!(
                "{}: label {l} out of range for {} classes",
                self.name,
                self.class_names.len()
            ));
        }
        Ok(())
    }

    /// Number of samples (rows).
    pub fn n_samples(&self) -> usize {
        self.features.nrows()
    }

    /// Number of features (columns).
    pub fn n_features(&self) -> usize {
        self.features.ncols()
    }

    /// Number of classes (`class_names.len()`; some may have no samples).
    pub fn n_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of samples of each class; a vector of length [`Dataset::n_classes`].
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l) {
                *c += 1;
            }
        }
        counts
    }

    /// Returns a new dataset made of the rows at `indices`, in that order
    /// (indices may repeat). Class and feature names are kept; the name gets
    /// `suffix` appended.
    ///
    /// # Errors
    /// [`DatasetError::BadOption`] (option `"indices"`) if an index is
    /// `>= n_samples`.
    pub fn select(&self, indices: &[usize], suffix: &str) -> Result<Self> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.n_samples()) {
            return Err(DatasetError::bad_option(
                "indices",
                format!("row {i} out of range for {} samples", self.n_samples()),
            ));
        }
        Ok(Self {
            name: format!("{}{suffix}", self.name),
            features: self.features.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            feature_names: self.feature_names.clone(),
        })
    }

    /// One-hot encoding of the labels, shape `(n_samples, n_classes)`, entries 0/1.
    pub fn one_hot_labels(&self) -> Array2<f64> {
        let mut y = Array2::zeros((self.n_samples(), self.n_classes()));
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(v) = y.get_mut((i, l)) {
                *v = 1.0;
            }
        }
        y
    }
}
