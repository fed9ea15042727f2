//! The JSON reports of `train`, `serve`, `join` and `infer`, the evaluation of a trained
//! model, and the replay of a run's completed sessions by the plaintext fixed-point
//! reference ([`ReferenceTrainer`], docs/DESIGN.md "Exactness"), which the encrypted model
//! equals bit for bit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use gelunet_datasets::Dataset as RawDataset;
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::{Dataset, FixedModel, ReferenceTrainer, Scales, ValueKind};
use gelunet_server::ServerConfig;
use gelunet_shell::server::TrainingLog;
use serde::Serialize;

use crate::data::Prepared;
use crate::keys::KeyOptions;
use crate::model::{activation_name, mask_name, ModelOptions};
use crate::model_file::{write_atomic, ModelFileError};
use crate::{Result, RunError};

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
    /// `train`, `train --plaintext` or `serve`.
    pub command: String,
    /// Dataset name (`null` when the server had no dataset).
    pub dataset: Option<String>,
    /// Where the data came from: its file, or the built-in copy when no data directory
    /// holds it (`null` without a dataset).
    pub data_source: Option<String>,
    /// The defaults the run used, one note each (e.g. `8 epochs (iris default)`); empty
    /// when every value was given.
    pub defaults_used: Vec<String>,
    /// Registered clients.
    pub clients: usize,
    /// Paillier modulus bits (0 for `train --plaintext`).
    pub key_bits: u64,
    /// Gradient mask.
    pub mask: String,
    /// The protocol: `v2` (the server held masked weights only; the clients released the
    /// model) or `paper`.
    pub protocol: String,
    /// Epoch limit (`--epochs`; 1 when neither limit was given; `null` for a run bound
    /// by `--sessions` alone).
    pub epochs: Option<u32>,
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
    /// Hidden widths of a dense model; `None` (not written) when `arch` replaced them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<usize>>,
    /// The `--arch` architecture, when one replaced `hidden` and `activation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Hidden activation of a dense model; `None` (not written) when `arch` replaced it
    /// (the architecture names each layer's activation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    /// Learning rate (the largest of any session).
    pub learning_rate: f64,
    /// The learning-rate schedule (`constant`, `step:F:E`, `cosine:E`; docs/DESIGN.md
    /// "Learning-rate schedule").
    pub lr_schedule: String,
    /// Seed.
    pub seed: u64,
    /// Big-integer backend (`gmp` or `num-bigint`; the reference's name for
    /// `train --plaintext`).
    pub backend: String,
    /// Why training stopped: `N sessions completed` or `N samples processed` (the epoch
    /// target), from [`gelunet_server::StopReason`].
    pub stop_reason: String,
    /// Where the clients' masks came from
    /// ([`gelunet_protocol::randomness::Randomness::report_label`]): `secret (OS
    /// randomness)…`, or `masks known to the server (insecure reproducible mode)` when a
    /// client joined `--insecure-reproducible` (docs/DESIGN.md "Protocol v2",
    /// "Randomness").
    pub randomness: String,
    /// Every party's traffic.
    pub parties: Vec<PartyReport>,
    /// The figures `--plot` wrote (`loss.png`, `accuracy.png`), if asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plots: Vec<std::path::PathBuf>,
    /// The run was interrupted (Ctrl-C, SIGTERM) before its stop rule: the figures cover
    /// the sessions so far, no model was written, and the run continues with `--resume`
    /// from its checkpoint.
    pub partial: bool,
}

/// Writes `value` as pretty JSON (with a final newline), atomically.
///
/// # Errors
/// [`RunError::ModelFile`] ([`ModelFileError::Io`]) on failure.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| ModelFileError::Io {
        op: "encode report",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    s.push('\n');
    Ok(write_atomic(path, s.as_bytes())?)
}

/// Checks, without allocating, that every feature of `ds` quantizes at the scales (inputs
/// at `2^fa`): what [`quantize`] will do on the clients and in the evaluation, checked
/// before any key is generated.
///
/// # Errors
/// [`RunError::Protocol`] naming the dataset, the sample (0-based row) and the feature of
/// the first value that is not finite or out of the fixed-point range.
pub fn check_quantizable(ds: &RawDataset, scales: &Scales) -> Result<()> {
    for (row, sample) in ds.features.rows().into_iter().enumerate() {
        for (col, &v) in sample.iter().enumerate() {
            if let Err(source) = scales.encode(ValueKind::Activation, v) {
                let feature = ds.feature_names.get(col).map_or("?", String::as_str);
                return Err(RunError::Protocol {
                    what: format!("{}: sample {row}, feature {col} ({feature})", ds.name),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Quantizes a raw (standardized) dataset at the scales (inputs at `2^fa`).
///
/// # Errors
/// [`RunError::Protocol`] for values out of the fixed-point range.
pub fn quantize(ds: &RawDataset, classes: usize, scales: &Scales) -> Result<Dataset> {
    Dataset::quantize(ds.features.view(), &ds.labels, classes, scales)
        .map_err(RunError::protocol(format!("quantizing {}", ds.name)))
}

/// Accuracy of `model` on `ds`, in `[0, 1]`.
///
/// # Errors
/// [`RunError::Protocol`] for range errors.
pub fn accuracy(model: &FixedModel, scales: &Scales, ds: &Dataset) -> Result<f64> {
    model
        .accuracy(scales, ds.x.view(), &ds.labels)
        .map_err(RunError::protocol("evaluation"))
}

/// Replays the completed sessions of `log` in plaintext with the [`ReferenceTrainer`]
/// under `cfg` (spec, scales, model seed, `η` and its schedule, `B`): one reference client
/// per client, whose sampler runs on over its completed sessions as the client's does (a
/// client that registers again re-seeds its sampler and fast-forwards it by the batches
/// of its completed sessions, `Registered::batches`, also after a server resumed from its
/// checkpoint). Each session runs at the rate the coordinator gave it,
/// `cfg.lr_schedule.eta_at(η, samples before it, log.samples_held)` (docs/DESIGN.md
/// "Learning-rate schedule"). `share_of(client index)` gives the client's quantized data
/// and role seed, or `None` when it cannot be reproduced. Returns `None` if some client
/// that completed a session cannot be reproduced.
///
/// # Errors
/// [`RunError::Protocol`] for the reference's errors and a rate outside the scale.
pub fn replay(
    cfg: &ServerConfig,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
) -> Result<Option<FixedModel>> {
    replay_with(cfg, log, share_of, |_, _| Ok(()))
}

/// [`replay`], calling `each(k, model)` with the reference model after its `k`-th
/// completed session (`k = 0`: the initial model), for the per-epoch curves
/// ([`crate::curves`]).
///
/// # Errors
/// As [`replay`], and `each`'s errors.
pub(crate) fn replay_with(
    cfg: &ServerConfig,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
    mut each: impl FnMut(u64, &FixedModel) -> Result<()>,
) -> Result<Option<FixedModel>> {
    let (spec, scales, model_seed, batch) = (&cfg.spec, cfg.scales, cfg.model_seed, cfg.batch_size);
    let eta = eta(cfg)?;
    let mut slots: BTreeMap<usize, usize> = BTreeMap::new();
    let mut data = Vec::new();
    let mut plans = Vec::new();
    for s in log.sessions.iter().filter(|s| s.completed) {
        let slot = match slots.get(&s.client) {
            Some(&i) => i,
            None => {
                let Some(d) = share_of(s.client) else {
                    return Ok(None);
                };
                data.push(d);
                slots.insert(s.client, data.len() - 1);
                data.len() - 1
            }
        };
        let before = s
            .samples
            .saturating_sub(u64::from(s.iterations) * batch as u64);
        let plan = SessionPlan {
            client: slot,
            iterations: s.iterations,
        };
        plans.push((plan, cfg.lr_schedule.eta_at(eta, before, log.samples_held)));
    }
    if data.is_empty() {
        let init =
            FixedModel::init(spec, &scales, model_seed).map_err(RunError::protocol("reference"))?;
        each(0, &init)?;
        return Ok(Some(init));
    }
    let mut r = ReferenceTrainer::new(spec, scales, model_seed, eta, batch, data)
        .map_err(RunError::protocol("reference"))?;
    each(0, r.model())?;
    for (k, (p, eta_s)) in plans.into_iter().enumerate() {
        r.run_session_at(p, eta_s)
            .map_err(RunError::protocol("reference"))?;
        each(k as u64 + 1, r.model())?;
    }
    Ok(Some(r.model().clone()))
}

/// Largest |a − b| over all parameters: (real units, fixed-point units); infinite and
/// `u64::MAX` for models of different depths.
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

/// The learning rate `η` at its fixed-point scale.
///
/// # Errors
/// [`RunError::Protocol`] for a rate outside the scale's range.
pub fn eta(cfg: &ServerConfig) -> Result<i128> {
    cfg.scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .map_err(RunError::protocol("--lr"))
}

/// What the evaluation of a finished run gives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// Accuracy of the trained model on the test split.
    pub test_accuracy: Option<f64>,
    /// Accuracy on the training split.
    pub train_accuracy: Option<f64>,
    /// Accuracy of the plaintext fixed-point reference replaying the same sessions.
    pub plaintext_test_accuracy: Option<f64>,
    /// `max |w − w_ref|` in real and fixed-point units ([`max_diff`]).
    pub diff: Option<(f64, u64)>,
}

/// Evaluates `model` on the prepared splits and replays `log` with the plaintext
/// reference (`share_of` as in [`replay`]); everything `None` without data.
///
/// # Errors
/// [`RunError::Protocol`] for quantization, evaluation and reference errors.
pub fn evaluate(
    model: &FixedModel,
    cfg: &ServerConfig,
    prepared: Option<&Prepared>,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
) -> Result<Evaluation> {
    let Some(p) = prepared else {
        return Ok(Evaluation::default());
    };
    let reference = replay(cfg, log, share_of)?;
    evaluate_against(model, cfg, p, reference.as_ref())
}

/// [`evaluate`] with the plaintext reference already at hand (`None`: no reference, so
/// no `plaintext_test_accuracy` and no `diff`); `gelunet train --plaintext` passes none
/// instead of replaying the run it has just computed a second time.
///
/// # Errors
/// [`RunError::Protocol`] for quantization and evaluation errors.
pub(crate) fn evaluate_against(
    model: &FixedModel,
    cfg: &ServerConfig,
    p: &Prepared,
    reference: Option<&FixedModel>,
) -> Result<Evaluation> {
    let scales: Scales = cfg.scales;
    let classes = cfg.spec.classes();
    let test = quantize(&p.test, classes, &scales)?;
    let train = quantize(&p.train, classes, &scales)?;
    let acc = |m: &FixedModel, d: &Dataset| -> Result<Option<f64>> {
        if d.is_empty() {
            Ok(None)
        } else {
            accuracy(m, &scales, d).map(Some)
        }
    };
    Ok(Evaluation {
        test_accuracy: acc(model, &test)?,
        train_accuracy: acc(model, &train)?,
        plaintext_test_accuracy: match reference {
            Some(r) => acc(r, &test)?,
            None => None,
        },
        diff: reference.map(|r| max_diff(model, r, &scales)),
    })
}

/// [`TrainReport::randomness`] of `gelunet train`: the masks and obfuscators from the
/// operating system, only the mini-batch order from the public seed (for the replay of
/// the plaintext reference).
pub(crate) const TRAIN_RANDOMNESS: &str =
    "secret (OS randomness); mini-batch order from the public --seed";
/// [`TrainReport::randomness`] of `gelunet train --plaintext`.
pub(crate) const PLAINTEXT_RANDOMNESS: &str =
    "none (plaintext reference); mini-batch order from the public --seed";

/// What [`build_report`] needs besides the training log.
pub(crate) struct ReportInput<'a> {
    pub command: &'a str,
    pub prepared: Option<&'a Prepared>,
    pub defaults_used: Vec<String>,
    pub model: &'a ModelOptions,
    pub keys: &'a KeyOptions,
    pub log: &'a TrainingLog,
    pub eval: &'a Evaluation,
    pub wall: Duration,
    pub keygen: Duration,
    pub parties: Vec<PartyReport>,
    pub randomness: &'a str,
}

/// The report of a training run.
pub(crate) fn build_report(i: ReportInput<'_>) -> TrainReport {
    let log = i.log;
    let mut per_client = BTreeMap::new();
    for c in &log.clients {
        per_client.insert(c.name.clone(), c.sessions);
    }
    let training = log.training_time.as_secs_f64();
    // `hidden` and `activation` describe a dense model; an `--arch` replaces both.
    let dense = i.model.arch.is_none();
    TrainReport {
        command: i.command.into(),
        dataset: i.prepared.map(|p| p.name.clone()),
        data_source: i.prepared.map(|p| p.source.to_string()),
        defaults_used: i.defaults_used,
        clients: log.clients.len(),
        key_bits: i.keys.key_bits,
        mask: mask_name(i.model.mask).into(),
        protocol: i.model.protocol.name().into(),
        epochs: i.model.epoch_limit(),
        epochs_completed: log.epochs,
        max_sessions: i.model.sessions,
        test_accuracy: i.eval.test_accuracy,
        train_accuracy: i.eval.train_accuracy,
        plaintext_test_accuracy: i.eval.plaintext_test_accuracy,
        max_abs_weight_diff: i.eval.diff.map(|d| d.0),
        max_abs_weight_diff_fixed: i.eval.diff.map(|d| d.1),
        wall_seconds: i.wall.as_secs_f64(),
        keygen_seconds: i.keygen.as_secs_f64(),
        training_seconds: training,
        seconds_per_epoch: (log.epochs > 0.0).then(|| training / log.epochs),
        bytes_sent: log.bytes_sent,
        bytes_received: log.bytes_received,
        sessions: log.sessions_completed,
        sessions_abandoned: log.sessions.iter().filter(|s| !s.completed).count() as u64,
        sessions_per_client: per_client,
        samples_processed: log.samples,
        train_samples: log.samples_held,
        test_samples: i.prepared.map_or(0, |p| p.test.n_samples()),
        batch_size: i.model.batch(),
        hidden: dense.then(|| i.model.hidden.clone()),
        arch: i.model.arch.as_ref().map(ToString::to_string),
        activation: dense.then(|| activation_name(i.model.activation).into()),
        learning_rate: i.model.learning_rate(),
        lr_schedule: i.model.lr_schedule.to_string(),
        seed: i.model.seed,
        backend: gelunet_paillier::BACKEND.into(),
        stop_reason: log.stop_reason.clone(),
        randomness: i.randomness.into(),
        partial: log.interrupted,
        parties: i.parties,
        plots: Vec::new(),
    }
}

/// The server's own line of [`TrainReport::parties`].
pub(crate) fn server_party(log: &TrainingLog) -> PartyReport {
    PartyReport {
        name: "server".into(),
        bytes_sent: log.bytes_sent,
        bytes_received: log.bytes_received,
        sessions: log.sessions_completed,
        abandoned: log.sessions.iter().filter(|s| !s.completed).count() as u64,
        registrations: 0,
    }
}

/// The report of `gelunet join` (`--report PATH`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinReport {
    /// This client's name.
    pub name: String,
    /// Training samples this client holds.
    pub samples: u64,
    /// Sessions this client completed.
    pub sessions: u64,
    /// Sessions of this client that were abandoned.
    pub abandoned: u64,
    /// Reconnections after a lost connection.
    pub reconnects: u32,
    /// Bytes this client sent.
    pub bytes_sent: u64,
    /// Bytes this client received.
    pub bytes_received: u64,
    /// CPU time of the client role, in seconds.
    pub compute_seconds: f64,
    /// Whole command, in seconds.
    pub wall_seconds: f64,
    /// Sessions the server completed with all clients.
    pub server_sessions: u64,
    /// Epochs the server completed.
    pub server_epochs: f64,
    /// Why the server stopped training.
    pub stop_reason: String,
    /// Big-integer backend.
    pub backend: String,
    /// The protocol the server spoke: `v2` or `paper`.
    pub protocol: String,
    /// Where this client's masks came from
    /// ([`gelunet_protocol::randomness::Randomness::report_label`]): `secret (OS
    /// randomness)` or `masks known to the server (insecure reproducible mode)`.
    pub randomness: String,
    /// The client was interrupted (Ctrl-C, SIGTERM) before the server's summary: the
    /// figures cover the run so far.
    pub partial: bool,
}

/// The report of `gelunet infer` (`--report PATH`).
#[derive(Clone, Debug, Serialize)]
pub struct InferReport {
    /// The model file, or `remote HOST:PORT`.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// `test`, `train` or `all`; `input` for the unlabeled samples of `--input` (then
    /// `dataset` is the file).
    pub split: String,
    /// Samples classified.
    pub samples: usize,
    /// Fraction classified correctly by the encrypted inference (`null` for unlabeled
    /// input).
    pub accuracy: Option<f64>,
    /// The same for the plaintext fixed-point model (local model only).
    pub plaintext_accuracy: Option<f64>,
    /// Predicted class per sample.
    pub predictions: Vec<usize>,
    /// Encrypted requests sent.
    pub requests: u64,
    /// Layers answered from a preparation (`--preprocess`; 0 otherwise).
    pub prepared_layers: u64,
    /// Bytes the client sent.
    pub bytes_sent: u64,
    /// Bytes the client received.
    pub bytes_received: u64,
    /// Paillier modulus bits of the client's key.
    pub key_bits: u64,
    /// Samples per encrypted request (`--batch`; 1 with `--preprocess`).
    pub batch: usize,
    /// Median wall-clock seconds of one request batch, from the client's encryption of
    /// its samples to their predictions: every layer's round trip, the server's work and
    /// the client's decryptions, without connecting and key setup (with `--preprocess`,
    /// the online part). With `--batch 1`, the single-sample latency `bench paper`
    /// reports. `None` when nothing was classified.
    pub median_batch_secs: Option<f64>,
    /// The slowest request batch, seconds (`None` as above).
    pub max_batch_secs: Option<f64>,
    /// `--preprocess`: median wall-clock seconds of one sample's preparation (the offline
    /// part, docs/DESIGN.md "Preprocessed inference"); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_preparation_secs: Option<f64>,
    /// Whole command, in seconds.
    pub seconds: f64,
    /// Big-integer backend.
    pub backend: String,
}

/// MiB from bytes, for the summaries.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The summary `gelunet train` and `gelunet serve` print (five or six lines).
impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a));
        let dataset = self.dataset.as_deref().unwrap_or("client data");
        if self.key_bits == 0 {
            writeln!(
                f,
                "plaintext fixed-point reference on {dataset} with {} clients (no encryption; an encrypted run with the same options gives the same model)",
                self.clients
            )?;
        } else {
            writeln!(
                f,
                "trained on {dataset} with {} clients, {}-bit keys (protocol {}, {} mask, {} backend; masks {})",
                self.clients, self.key_bits, self.protocol, self.mask, self.backend, self.randomness
            )?;
        }
        if let Some(source) = &self.data_source {
            writeln!(
                f,
                "data: {dataset} from {source}; {} training samples, {} test samples",
                self.train_samples, self.test_samples
            )?;
        }
        let layers = match &self.arch {
            Some(a) => format!("arch {a}"),
            None => format!(
                "hidden {:?} {}",
                self.hidden.as_deref().unwrap_or_default(),
                self.activation.as_deref().unwrap_or_default()
            ),
        };
        writeln!(
            f,
            "model: {layers}, mini-batch {}, learning rate {}{}{}",
            self.batch_size,
            self.learning_rate,
            match self.lr_schedule.as_str() {
                "constant" => String::new(),
                s => format!(" ({s})"),
            },
            if self.defaults_used.is_empty() {
                String::new()
            } else {
                format!("; defaults used: {}", self.defaults_used.join(", "))
            }
        )?;
        writeln!(
            f,
            "{} sessions ({} abandoned), {:.2} epochs in {:.1} s{}; stopped: {}",
            self.sessions,
            self.sessions_abandoned,
            self.epochs_completed,
            self.training_seconds,
            self.seconds_per_epoch
                .map_or(String::new(), |s| format!(" ({s:.1} s/epoch)")),
            self.stop_reason
        )?;
        writeln!(
            f,
            "test accuracy {} (plaintext fixed-point reference {}), max |w - w_ref| = {}",
            pct(self.test_accuracy),
            pct(self.plaintext_test_accuracy),
            self.max_abs_weight_diff
                .map_or("n/a".to_string(), |d| format!("{d}"))
        )?;
        writeln!(
            f,
            "server traffic: {:.2} MiB sent, {:.2} MiB received",
            mib(self.bytes_sent),
            mib(self.bytes_received)
        )?;
        if !self.plots.is_empty() {
            let names: Vec<String> = self.plots.iter().map(|p| p.display().to_string()).collect();
            writeln!(f, "plots: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// The summary line `gelunet join` prints.
impl fmt::Display for JoinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} sessions of {} in total; sent {:.2} MiB, received {:.2} MiB; training over ({}); masks {}",
            self.name,
            self.sessions,
            self.server_sessions,
            mib(self.bytes_sent),
            mib(self.bytes_received),
            self.stop_reason,
            self.randomness
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_input_range_are_named_before_any_key() {
        let scales = Scales::default();
        let mut features = ndarray::Array2::zeros((3, 2));
        features[[1, 1]] = 200.0; // below 2^8: fits
        let ds = RawDataset::new(
            "toy-test",
            features,
            vec![0, 1, 0],
            vec!["a".into(), "b".into()],
            vec!["x".into(), "y".into()],
        )
        .unwrap();
        assert!(check_quantizable(&ds, &scales).is_ok());
        let mut bad = ds.clone();
        bad.features[[2, 1]] = 266.7; // the value
        let e = check_quantizable(&bad, &scales).unwrap_err().to_string();
        assert!(e.contains("toy-test: sample 2, feature 1 (y)"), "{e}");
        bad.features[[2, 1]] = f64::NAN;
        assert!(check_quantizable(&bad, &scales).is_err());
    }
}
