//! The shared data pipeline and training schedule of every comparison.
//!
//! Data: [`gelunet_datasets::load_by_name`], a stratified 80/20 split seeded by the run's
//! seed, standardization fitted on the training split (not for MNIST, whose pixels are
//! already in `[0, 1]`), and a split of the training set among `K` clients
//! ([`gelunet_datasets::split_clients`]).
//!
//! Schedule: the mini-batches GELU-Net's clients draw. The server's [`Scheduler`] (seeded
//! with the schedule seed) picks a client and a session length `d`, the client draws `d`
//! mini-batches from its [`BatchSampler`] (seeded with [`sampler_seed`] of its seed).
//! [`Schedule`] replays exactly that stream, so the plaintext baselines train on the same
//! mini-batches, in the same order, as GELU-Net (encrypted or reference).

use std::path::Path;

use gelunet_datasets::{load_by_name, split_clients, LoadOptions, MnistOptions};
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::data::sampler_seed;
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::{
    Activation, BatchSampler, Dataset, ModelSpec, Scales, Scheduler, SessionPolicy,
};
use ndarray::{Array2, Axis};

use crate::error::{BenchError, Result};

/// Test fraction of the stratified split.
pub const TEST_FRACTION: f64 = 0.2;

/// One client's share of the training set (standardized features, labels).
#[derive(Clone, Debug)]
pub struct Share {
    /// Features, `samples × n_0`.
    pub x: Array2<f64>,
    /// Labels.
    pub y: Vec<usize>,
    /// The client's seed (mini-batches, masks, encryption).
    pub seed: u64,
}

/// A dataset ready for training: client shares and the test split.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Dataset name.
    pub name: String,
    /// Number of features `n_0`.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
    /// The training set, split among the clients.
    pub shares: Vec<Share>,
    /// All training samples (the shares concatenated in client order).
    pub train_x: Array2<f64>,
    /// Their labels.
    pub train_y: Vec<usize>,
    /// Test features.
    pub test_x: Array2<f64>,
    /// Test labels.
    pub test_y: Vec<usize>,
    /// Whether the features were standardized.
    pub standardized: bool,
}

impl Prepared {
    /// Training samples.
    #[must_use]
    pub fn train_len(&self) -> usize {
        self.train_y.len()
    }

    /// Largest `|x|` over training and test features.
    #[must_use]
    pub fn max_abs_feature(&self) -> f64 {
        self.train_x
            .iter()
            .chain(self.test_x.iter())
            .fold(0.0f64, |m, v| m.max(v.abs()))
    }
}

/// Limits for MNIST (the first samples of each split, in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MnistLimits {
    /// Training samples.
    pub train: usize,
    /// Test samples.
    pub test: usize,
}

/// The seed of client `k` in a run with seed `seed`.
#[must_use]
pub fn client_seed(seed: u64, k: usize) -> u64 {
    1000 * seed + 10 + k as u64
}

/// Loads, splits (seeded by `seed`), standardizes and shares out `name`.
///
/// # Errors
/// Dataset errors (missing files name the file and how to fetch it).
pub fn prepare(
    data_dir: &Path,
    name: &str,
    seed: u64,
    clients: usize,
    mnist: MnistLimits,
) -> Result<Prepared> {
    let opts = LoadOptions {
        mnist: MnistOptions {
            max_train: Some(mnist.train),
            max_test: Some(mnist.test),
        },
        ..LoadOptions::default()
    };
    let loaded = load_by_name(name, data_dir, &opts)?;
    let standardized = !loaded.is_image();
    let (train, test, _) = loaded.into_scaled_train_test(TEST_FRACTION, seed)?;
    let parts = split_clients(&train, clients, None, seed)?;
    let shares: Vec<Share> = parts
        .iter()
        .enumerate()
        .map(|(k, d)| Share {
            x: d.features.clone(),
            y: d.labels.clone(),
            seed: client_seed(seed, k),
        })
        .collect();
    let views: Vec<_> = shares.iter().map(|s| s.x.view()).collect();
    let train_x = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| BenchError::Config(format!("concatenating client shares: {e}")))?;
    let train_y: Vec<usize> = shares.iter().flat_map(|s| s.y.iter().copied()).collect();
    Ok(Prepared {
        name: name.to_string(),
        features: train.n_features(),
        classes: train.n_classes().max(test.n_classes()),
        shares,
        train_x,
        train_y,
        test_x: test.features.clone(),
        test_y: test.labels.clone(),
        standardized,
    })
}

/// Hyper-parameters of one training run, shared by GELU-Net and the baselines.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSetup {
    /// Layer widths `[n_0, hidden, classes]` (of a dense net; ignored with `arch`).
    pub widths: Vec<usize>,
    /// A conv architecture on square one-channel images (`1×s×s` for `s² = n_0`)
    /// instead of the dense sigmoid net of `widths`.
    pub arch: Option<Arch>,
    /// Learning rate `η` (gradients are summed over the mini-batch).
    pub lr: f64,
    /// Mini-batch size `B`.
    pub batch: usize,
    /// Epochs (passes over the training set, counted in samples).
    pub epochs: usize,
    /// Seed of the run (split, initialization, schedule, clients).
    pub seed: u64,
}

impl TrainSetup {
    /// The GELU-Net model spec: the dense net of `widths` (sigmoid hidden layers, softmax
    /// output), or `arch` on `1×s×s` images.
    ///
    /// # Errors
    /// [`BenchError::Config`] if `arch` does not fit the input (not a square image, or
    /// shapes that do not chain).
    pub fn spec(&self) -> Result<ModelSpec> {
        let Some(arch) = &self.arch else {
            return Ok(ModelSpec::new(self.widths.clone(), Activation::Sigmoid));
        };
        let n = self.widths.first().copied().unwrap_or(0);
        let side = (1..=n).find(|s| s * s >= n).unwrap_or(0);
        if side * side != n {
            return Err(BenchError::Config(format!(
                "--arch needs square one-channel images; {n} features are not s²"
            )));
        }
        let input = Shape {
            channels: 1,
            height: side,
            width: side,
        };
        ModelSpec::from_arch(arch, input).map_err(|e| BenchError::Config(format!("--arch: {e}")))
    }

    /// Seed of the weight initialization (shared by every activation).
    #[must_use]
    pub fn model_seed(&self) -> u64 {
        self.seed
    }

    /// Seed of the session scheduler.
    #[must_use]
    pub fn schedule_seed(&self) -> u64 {
        self.seed + 1
    }

    /// Seed of the server's encryption randomness.
    #[must_use]
    pub fn server_rng_seed(&self) -> u64 {
        self.seed + 2
    }

    /// The fixed-point scales (docs/DESIGN.md defaults).
    #[must_use]
    pub fn scales(&self) -> Scales {
        Scales::default()
    }
}

/// The stream of mini-batches GELU-Net's clients draw (see the module docs).
#[derive(Clone, Debug)]
pub struct Schedule {
    scheduler: Scheduler,
    samplers: Vec<BatchSampler>,
}

/// One session of the stream: the plan and its mini-batches (indices into the client's
/// share).
#[derive(Clone, Debug)]
pub struct SessionBatches {
    /// Client and number of iterations.
    pub plan: SessionPlan,
    /// `plan.iterations` mini-batches of `B` indices into `shares[plan.client]`.
    pub batches: Vec<Vec<usize>>,
}

impl Schedule {
    /// The schedule of `setup` over `shares`.
    ///
    /// # Errors
    /// [`gelunet_protocol::Error::SessionBound`] if `B` exceeds the smallest fan-in;
    /// [`gelunet_protocol::Error::InvalidConfig`] for a batch larger than a share.
    pub fn new(setup: &TrainSetup, shares: &[Share]) -> Result<Self> {
        let scheduler = Scheduler::new(
            SessionPolicy::default(),
            &setup.spec()?,
            setup.batch,
            shares.len(),
            setup.schedule_seed(),
        )?;
        let samplers = shares
            .iter()
            .map(|s| BatchSampler::new(s.y.len(), setup.batch, sampler_seed(s.seed)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            scheduler,
            samplers,
        })
    }

    /// The next session and its mini-batches.
    pub fn next_session(&mut self) -> SessionBatches {
        let plan = self.scheduler.next_session();
        let batches = match self.samplers.get_mut(plan.client) {
            Some(s) => (0..plan.iterations).map(|_| s.next_batch()).collect(),
            None => Vec::new(),
        };
        SessionBatches { plan, batches }
    }
}

/// Quantizes every share at the activation scale (the clients' view of their data).
///
/// # Errors
/// Range errors of [`Dataset::quantize`].
pub fn quantize_shares(
    shares: &[Share],
    classes: usize,
    scales: &Scales,
) -> Result<Vec<(Dataset, u64)>> {
    shares
        .iter()
        .map(|s| {
            Ok((
                Dataset::quantize(s.x.view(), &s.y, classes, scales)?,
                s.seed,
            ))
        })
        .collect()
}

/// Mean and sample standard deviation (0 for fewer than two values).
#[must_use]
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    #[allow(clippy::cast_precision_loss)]
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}
