//! The data the attacked clients train on.

use std::path::Path;

use gelunet_datasets::{load_by_name, split_clients, LoadOptions, MnistOptions, Standardizer};
use gelunet_sim::synthetic_blobs;
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::{AttackError, Result};

/// A labelled dataset for an attack run, with what a server may know about its range.
#[derive(Clone, Debug)]
pub struct AttackData {
    /// `mnist`, `iris` or `synthetic`.
    pub name: String,
    /// Features, one row per sample (real values).
    pub x: Array2<f64>,
    /// Class labels.
    pub labels: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Public bounds of every feature (MNIST pixels lie in `[0, 1]`), used by the
    /// box-constrained unmixing attack; `None` when the range is not public.
    pub bounds: Option<(f64, f64)>,
    /// Side of a square image (28 for MNIST), for the reconstruction grid.
    pub image_side: Option<usize>,
}

impl AttackData {
    /// Number of features.
    pub fn features(&self) -> usize {
        self.x.ncols()
    }

    /// Splits the samples among `clients` clients (stratified, seeded).
    ///
    /// # Errors
    /// Dataset errors (e.g. fewer samples than clients).
    pub fn split(&self, clients: usize, seed: u64) -> Result<Vec<(Array2<f64>, Vec<usize>)>> {
        let ds = gelunet_datasets::Dataset::new(
            self.name.clone(),
            self.x.clone(),
            self.labels.clone(),
            (0..self.classes).map(|c| c.to_string()).collect(),
            (0..self.features()).map(|f| format!("f{f}")).collect(),
        )?;
        Ok(split_clients(&ds, clients, None, seed)?
            .into_iter()
            .map(|d| (d.features, d.labels))
            .collect())
    }
}

/// `samples` Gaussian blobs in `features` dimensions and `classes` classes
/// ([`synthetic_blobs`], spread 0.5).
pub fn synthetic(samples: usize, features: usize, classes: usize, seed: u64) -> AttackData {
    let (x, labels) = synthetic_blobs(samples, features, classes, 0.5, seed);
    AttackData {
        name: "synthetic".into(),
        x,
        labels,
        classes,
        bounds: None,
        image_side: None,
    }
}

/// Loads `mnist` (the first `samples` training images, pixels in `[0, 1]`), `iris`
/// (standardized, at most `samples` rows) or `synthetic` (`samples` × 32 features, 3
/// classes).
///
/// # Errors
/// [`AttackError::Invalid`] for another name; loader errors (missing files name the
/// file and the fetch script).
pub fn load(name: &str, data_dir: &Path, samples: usize, seed: u64) -> Result<AttackData> {
    match name {
        "synthetic" => Ok(synthetic(samples, 32, 3, seed)),
        "mnist" => {
            let opts = LoadOptions {
                mnist: MnistOptions {
                    max_train: Some(samples),
                    max_test: Some(1),
                },
                ..LoadOptions::default()
            };
            let (train, _) = load_by_name("mnist", data_dir, &opts)?.into_train_test(0.0, seed)?;
            Ok(AttackData {
                name: "mnist".into(),
                classes: train.n_classes(),
                x: train.features,
                labels: train.labels,
                bounds: Some((0.0, 1.0)),
                image_side: Some(28),
            })
        }
        "iris" => {
            let ds = match load_by_name("iris", data_dir, &LoadOptions::default())? {
                gelunet_datasets::Loaded::Single(d) => d,
                gelunet_datasets::Loaded::PreSplit { train, .. } => train,
            };
            let st = Standardizer::fit(&ds.features)?;
            let ds = st.transform_dataset(&ds)?;
            let mut idx: Vec<usize> = (0..ds.n_samples()).collect();
            idx.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
            idx.truncate(samples.min(ds.n_samples()));
            let ds = ds.select(&idx, "")?;
            Ok(AttackData {
                name: "iris".into(),
                classes: ds.n_classes(),
                x: ds.features,
                labels: ds.labels,
                bounds: None,
                image_side: None,
            })
        }
        other => Err(AttackError::Invalid(format!(
            "unknown dataset {other:?} (mnist, iris or synthetic)"
        ))),
    }
}
