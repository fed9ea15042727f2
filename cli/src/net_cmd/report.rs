//! The JSON run report and the plaintext fixed-point reference.

use std::collections::BTreeMap;
use std::path::Path;

use gelunet_datasets::Dataset as RawDataset;
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::{Dataset, FixedModel, ModelSpec, ReferenceTrainer, Scales, ValueKind};
use gelunet_shell::server::TrainingLog;
use serde::Serialize;

use super::model_file::write_atomic;

/// One party's traffic and sessions.
#[derive(Clone, Debug, Serialize)]
pub struct PartyReport {
    /// Name (`server` or the client's name).
    pub name: String,
    /// Bytes the party sent.
    pub bytes_sent: u64,
    /// Bytes the party received.
    pub bytes_received: u64,
    /// Sessions completed (clients).
    pub sessions: u64,
    /// Sessions abandoned.
    pub abandoned: u64,
    /// Registrations (clients; 1 + reconnections).
    pub registrations: u32,
}

/// The report of `gelunet train` / `gelunet serve` (`--report PATH`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// `train` or `serve`.
    pub command: String,
    /// Dataset name (`null` when the server had no dataset).
    pub dataset: Option<String>,
    /// Registered clients.
    pub clients: usize,
    /// Paillier modulus bits.
    pub key_bits: u64,
    /// Gradient mask.
    pub mask: String,
    /// Epochs requested.
    pub epochs: u32,
    /// Epochs completed (samples processed / samples held).
    pub epochs_completed: f64,
    /// Session limit, if any.
    pub max_sessions: Option<u64>,
    /// Accuracy of the encrypted-trained model on the test split.
    pub test_accuracy: Option<f64>,
    /// Accuracy on the training split.
    pub train_accuracy: Option<f64>,
    /// Accuracy of the plaintext fixed-point reference (same seed, same session plans).
    pub plaintext_test_accuracy: Option<f64>,
    /// Largest |encrypted − reference| over all weights and biases, in real units
    /// (0 when exact).
    pub max_abs_weight_diff: Option<f64>,
    /// The same in fixed-point units (integer).
    pub max_abs_weight_diff_fixed: Option<u64>,
    /// Whole command.
    pub wall_seconds: f64,
    /// Key generation.
    pub keygen_seconds: f64,
    /// First session to last.
    pub training_seconds: f64,
    /// `training_seconds / epochs_completed`.
    pub seconds_per_epoch: Option<f64>,
    /// Bytes the server sent.
    pub bytes_sent: u64,
    /// Bytes the server received.
    pub bytes_received: u64,
    /// Completed sessions.
    pub sessions: u64,
    /// Abandoned sessions (rolled back).
    pub sessions_abandoned: u64,
    /// Completed sessions per client name.
    pub sessions_per_client: BTreeMap<String, u64>,
    /// Samples processed in completed sessions.
    pub samples_processed: u64,
    /// Training samples held by the clients.
    pub train_samples: u64,
    /// Test samples.
    pub test_samples: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: String,
    /// Learning rate.
    pub learning_rate: f64,
    /// Seed.
    pub seed: u64,
    /// Big-integer backend (`gmp` or `num-bigint`).
    pub backend: String,
    /// Why training stopped.
    pub stop_reason: String,
    /// Every party's traffic.
    pub parties: Vec<PartyReport>,
}

/// The big-integer backend this binary was built with.
pub fn backend() -> &'static str {
    if cfg!(feature = "gmp") {
        "gmp"
    } else {
        "num-bigint"
    }
}

/// Writes the report as pretty JSON, atomically.
///
/// # Errors
/// A message on failure.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    s.push('\n');
    write_atomic(path, s.as_bytes()).map_err(|e| e.to_string())
}

/// Quantizes a raw (standardized) dataset at the scales.
///
/// # Errors
/// Range errors.
pub fn quantize(ds: &RawDataset, classes: usize, scales: &Scales) -> Result<Dataset, String> {
    Dataset::quantize(ds.features.view(), &ds.labels, classes, scales)
        .map_err(|e| format!("quantizing {}: {e}", ds.name))
}

/// Accuracy of `model` on `ds`.
///
/// # Errors
/// Range errors.
pub fn accuracy(model: &FixedModel, scales: &Scales, ds: &Dataset) -> Result<f64, String> {
    model
        .accuracy(scales, ds.x.view(), &ds.labels)
        .map_err(|e| format!("evaluation: {e}"))
}

/// Replays the completed sessions of `log` in plaintext with the [`ReferenceTrainer`]:
/// one reference client per (client, incarnation), since a client re-seeds its sampler at
/// every registration. `share_of(client index)` gives the client's quantized data and
/// role seed, or `None` when it cannot be reproduced. Returns `None` if some client that
/// completed a session cannot be reproduced.
///
/// # Errors
/// The reference's errors.
pub fn replay(
    spec: &ModelSpec,
    scales: Scales,
    model_seed: u64,
    eta: i128,
    batch: usize,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
) -> Result<Option<FixedModel>, String> {
    let mut slots: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    let mut data = Vec::new();
    let mut plans = Vec::new();
    for s in log.sessions.iter().filter(|s| s.completed) {
        let slot = match slots.get(&(s.client, s.incarnation)) {
            Some(&i) => i,
            None => {
                let Some(d) = share_of(s.client) else {
                    return Ok(None);
                };
                data.push(d);
                slots.insert((s.client, s.incarnation), data.len() - 1);
                data.len() - 1
            }
        };
        plans.push(SessionPlan {
            client: slot,
            iterations: s.iterations,
        });
    }
    if data.is_empty() {
        return FixedModel::init(spec, &scales, model_seed)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let mut r = ReferenceTrainer::new(spec, scales, model_seed, eta, batch, data)
        .map_err(|e| format!("reference: {e}"))?;
    for p in plans {
        r.run_session(p).map_err(|e| format!("reference: {e}"))?;
    }
    Ok(Some(r.model().clone()))
}

/// Largest |a − b| over all parameters: (real units, fixed-point units).
pub fn max_diff(a: &FixedModel, b: &FixedModel, scales: &Scales) -> (f64, u64) {
    let mut real = 0.0f64;
    let mut fixed = 0u128;
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        for (x, y) in la.w.iter().zip(lb.w.iter()) {
            let d = x.abs_diff(*y);
            fixed = fixed.max(d);
            real = real.max(scales.decode(ValueKind::Weight, (x - y).abs()));
        }
        for (x, y) in la.b.iter().zip(lb.b.iter()) {
            let d = x.abs_diff(*y);
            fixed = fixed.max(d);
            real = real.max(scales.decode(ValueKind::Bias, (x - y).abs()));
        }
    }
    if a.layers.len() != b.layers.len() {
        real = f64::INFINITY;
        fixed = u128::MAX;
    }
    (real, u64::try_from(fixed).unwrap_or(u64::MAX))
}
