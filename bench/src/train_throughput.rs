//! `gelunet bench train`: a short encrypted training run on a named dataset and
//! architecture (issue #14), reporting samples per second, the time of an epoch
//! (extrapolated, and measured when the run covers one) and the split of an iteration
//! between the parties and the protocol's steps.
//!
//! The run is [`crate::runs::encrypted_run_with`]: the server and the clients in one
//! process ([`gelunet_sim::Simulation`], no sockets), real Paillier keys, checked after
//! every session against the fixed-point reference. The parties take turns, so every
//! step has both cores (rayon) and the split is exact: the time in each party's
//! handler for each message kind. There is no network: the report gives the bytes per
//! iteration and what they would take at 1 Gbit/s; a party's idle time is the iteration's
//! wall time minus its own handlers' time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gelunet_paillier::BACKEND;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::LearningRateSchedule;
use serde::Serialize;

use gelunet_protocol::arch::Arch;
use gelunet_protocol::packing::largest_batch_size;

use crate::pipeline::{prepare, MnistLimits, TrainSetup};
use crate::runs::encrypted_run_with;
use crate::{BenchError, Result};

/// What `gelunet bench train` runs.
#[derive(Clone, Debug)]
pub struct TrainBenchConfig {
    /// Data directory (laid out as `iris/`, `mnist/`, …).
    pub data_dir: PathBuf,
    /// Dataset name (`mnist`, `iris`, …; `gelunet_datasets::load_by_name`).
    pub dataset: String,
    /// Hidden-layer widths (the input and output widths come from the dataset).
    pub hidden: Vec<usize>,
    /// A conv architecture instead of the dense net of `hidden` (issue #15).
    pub arch: Option<Arch>,
    /// Clients (data owners).
    pub clients: usize,
    /// Mini-batch size `B`; `None`: the largest the session bound and the packing allow
    /// for the network and `key_bits`
    /// ([`gelunet_protocol::packing::largest_batch_size`], as `gelunet train` chooses;
    /// 23 for MNIST `[784, 128, 10]` with 2048-bit keys).
    pub batch: Option<usize>,
    /// Sessions to run (each one client's turn of several iterations).
    pub sessions: usize,
    /// Paillier key size in bits (below 2048 only with `allow_test_keys`).
    pub key_bits: u64,
    /// Allow test-only keys below 2048 bits (builds with paillier's `hazmat`).
    pub allow_test_keys: bool,
    /// Training protocol (v2 by default).
    pub protocol: Protocol,
    /// Learning rate `η`.
    pub lr: f64,
    /// How each session's rate falls from `lr` (docs/DESIGN.md "Learning-rate
    /// schedule"); the reference follows the same `η_s`.
    pub lr_schedule: LearningRateSchedule,
    /// MNIST: training and test samples loaded (the first ones of each file).
    pub mnist: MnistLimits,
    /// Seed of the split, the initialization, the schedule and the keys.
    pub seed: u64,
}

/// One row of the split of an iteration.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `client` or `server`.
    pub party: &'static str,
    /// The message the party was handling ([`gelunet_protocol::messages`] kinds).
    pub message: &'static str,
    /// What the party does then.
    pub work: &'static str,
    /// Mean seconds per iteration.
    pub seconds_per_iteration: f64,
    /// Share of the mean iteration's wall time.
    pub share: f64,
}

/// The report of `gelunet bench train`.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchReport {
    /// Dataset name.
    pub dataset: String,
    /// Layer widths `[n_0, hidden…, classes]` (a conv layer's: its pooled outputs).
    pub widths: Vec<usize>,
    /// The conv architecture, if any (`Arch`'s display form).
    pub arch: Option<String>,
    /// Clients.
    pub clients: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Paillier key size in bits.
    pub key_bits: u64,
    /// Big-integer backend of the Paillier hot loops (`num-bigint` or `gmp`).
    pub backend: &'static str,
    /// The multiplication kernel that ran ([`gelunet_paillier::arithmetic`]).
    pub arithmetic: &'static str,
    /// `v2` or `paper`.
    pub protocol: String,
    /// The learning-rate schedule (`constant`, `step:F:E`, `cosine:E`).
    pub lr_schedule: String,
    /// `η_s` of each session run (the reference ran each at the same rate).
    pub session_rates: Vec<f64>,
    /// Rayon threads / logical cores.
    pub threads: usize,
    /// Sessions run.
    pub sessions: usize,
    /// Iterations (mini-batches) run.
    pub iterations: usize,
    /// Samples trained on (`iterations · B`).
    pub samples: usize,
    /// Key generation (every party), seconds.
    pub keygen_seconds: f64,
    /// Wall time of the sessions, seconds.
    pub seconds: f64,
    /// Samples per second of training.
    pub samples_per_second: f64,
    /// Mean wall time per iteration, seconds.
    pub seconds_per_iteration: f64,
    /// Training samples of one epoch (all clients' shares).
    pub epoch_samples: usize,
    /// Time of one epoch at the measured rate, seconds.
    pub epoch_seconds_extrapolated: f64,
    /// Wall time of the first epoch when the run covered one, seconds.
    pub epoch_seconds_measured: Option<f64>,
    /// Whether the encrypted model equalled the fixed-point reference after every session.
    pub identical_to_reference: bool,
    /// Test accuracy, when the run covered the whole schedule.
    pub test_accuracy: Option<f64>,
    /// The split of the mean iteration by party and message handled.
    pub split: Vec<Phase>,
    /// Mean seconds per iteration in which the server was not computing.
    pub server_idle_seconds_per_iteration: f64,
    /// Mean seconds per iteration in which the training client was not computing.
    pub client_idle_seconds_per_iteration: f64,
    /// Mean bytes client → server per iteration (postcard).
    pub bytes_to_server_per_iteration: f64,
    /// Mean bytes server → client per iteration (postcard).
    pub bytes_to_client_per_iteration: f64,
    /// The time the bytes of an iteration take at 1 Gbit/s, seconds (the run itself is
    /// in-process).
    pub network_seconds_per_iteration_at_1gbps: f64,
}

/// What a party does on receiving a message kind.
fn work(party: &str, message: &str) -> &'static str {
    match (party, message) {
        ("client", "SessionStart" | "UpdateApplied") => "encrypt the mini-batch's inputs",
        ("client", "ForwardResponse") => {
            "decrypt pre-activations, activate, encrypt the next layer or the output error"
        }
        ("client", "BackwardResponse") => {
            "decrypt, compute the gradients, mask or encrypt the update"
        }
        ("client", "SessionEnd") => "end of session",
        ("server", "ForwardRequest") => "linear layer W ⊗ [a]",
        ("server", "BackwardRequest") => "backward products [δ]ᵀ ⊗ W",
        ("server", "PlainUpdate") => "apply the plaintext masked update (v2)",
        ("server", "MaskedUpdate") => "apply the encrypted masked update (paper Alg. 3)",
        ("server", "FinalUpdate") => "final update (paper Alg. 5)",
        ("server", "Rollover") => "version rollover (v2)",
        _ => "other",
    }
}

/// Runs `gelunet bench train`.
///
/// # Errors
/// [`BenchError::Config`] for zero sessions, clients or batch size, or an empty
/// `hidden`; dataset, key and protocol errors; [`BenchError::Check`] if the encrypted
/// model leaves the reference.
pub fn run_train(c: &TrainBenchConfig) -> Result<TrainBenchReport> {
    if c.sessions == 0
        || c.clients == 0
        || c.batch == Some(0)
        || (c.hidden.is_empty() && c.arch.is_none())
    {
        return Err(BenchError::Config(
            "--sessions, --clients, --batch-size and --hidden must be positive".into(),
        ));
    }
    let prep = prepare(&c.data_dir, &c.dataset, c.seed, c.clients, c.mnist)?;
    let mut widths = vec![prep.features];
    widths.extend(&c.hidden);
    widths.push(prep.classes);
    let mut setup = TrainSetup {
        arch: c.arch.clone(),
        widths: widths.clone(),
        lr: c.lr,
        batch: c.batch.unwrap_or(1),
        epochs: 1,
        seed: c.seed,
    };
    let spec = setup.spec()?;
    let batch = c
        .batch
        .unwrap_or_else(|| largest_batch_size(&spec, &setup.scales(), c.key_bits));
    setup.batch = batch;
    let widths = spec.widths;
    let (check, stats) = encrypted_run_with(
        &prep,
        &setup,
        c.key_bits,
        c.allow_test_keys,
        Some(c.sessions),
        c.protocol,
        c.lr_schedule,
    )?;
    let iterations = stats.len().max(1);
    #[allow(clippy::cast_precision_loss)]
    let mean = |d: Duration| d.as_secs_f64() / iterations as f64;
    let elapsed: Duration = stats.iter().map(|s| s.elapsed).sum();
    let server: Duration = stats.iter().map(|s| s.server_time).sum();
    let client: Duration = stats.iter().map(|s| s.client_time).sum();
    let mut by: BTreeMap<(&'static str, &'static str), Duration> = BTreeMap::new();
    for s in &stats {
        for (k, d) in &s.client_time_by_message {
            *by.entry(("client", k)).or_default() += *d;
        }
        for (k, d) in &s.server_time_by_message {
            *by.entry(("server", k)).or_default() += *d;
        }
    }
    let per_iteration = mean(elapsed);
    let split = by
        .into_iter()
        .map(|((party, message), d)| Phase {
            party,
            message,
            work: work(party, message),
            seconds_per_iteration: mean(d),
            share: if per_iteration > 0.0 {
                mean(d) / per_iteration
            } else {
                0.0
            },
        })
        .collect();
    let samples = stats.len() * batch;
    #[allow(clippy::cast_precision_loss)]
    let samples_per_second = if check.seconds > 0.0 {
        samples as f64 / check.seconds
    } else {
        0.0
    };
    let epoch_samples = prep.train_len();
    #[allow(clippy::cast_precision_loss)]
    let epoch_seconds_extrapolated = if samples_per_second > 0.0 {
        epoch_samples as f64 / samples_per_second
    } else {
        0.0
    };
    let epoch_seconds_measured = (samples >= epoch_samples).then(|| {
        let mut seen = 0;
        let mut t = Duration::ZERO;
        for s in &stats {
            if seen >= epoch_samples {
                break;
            }
            seen += batch;
            t += s.elapsed;
        }
        t.as_secs_f64()
    });
    #[allow(clippy::cast_precision_loss)]
    let bytes = |f: fn(&gelunet_sim::IterationStats) -> usize| {
        stats.iter().map(f).sum::<usize>() as f64 / iterations as f64
    };
    let up = bytes(|s| s.bytes_to_server);
    let down = bytes(|s| s.bytes_to_client);
    Ok(TrainBenchReport {
        dataset: c.dataset.clone(),
        widths,
        arch: c.arch.as_ref().map(ToString::to_string),
        clients: c.clients,
        batch,
        key_bits: c.key_bits,
        backend: BACKEND,
        arithmetic: gelunet_paillier::arithmetic(),
        protocol: format!("{:?}", c.protocol).to_lowercase(),
        lr_schedule: check.lr_schedule.clone(),
        session_rates: check.session_rates.clone(),
        threads: check.threads,
        sessions: check.sessions,
        iterations: stats.len(),
        samples,
        keygen_seconds: check.keygen_secs,
        seconds: check.seconds,
        samples_per_second,
        seconds_per_iteration: per_iteration,
        epoch_samples,
        epoch_seconds_extrapolated,
        epoch_seconds_measured,
        identical_to_reference: check.identical_to_reference,
        test_accuracy: check.test_accuracy,
        split,
        server_idle_seconds_per_iteration: mean(elapsed.saturating_sub(server)),
        client_idle_seconds_per_iteration: mean(elapsed.saturating_sub(client)),
        bytes_to_server_per_iteration: up,
        bytes_to_client_per_iteration: down,
        network_seconds_per_iteration_at_1gbps: (up + down) * 8.0 / 1e9,
    })
}

/// `", η schedule cosine:1 (0.2000 → 0.0191)"`: the schedule and the first and last
/// session's rates; empty for a constant rate.
fn schedule_clause(r: &TrainBenchReport) -> String {
    match (r.session_rates.first(), r.session_rates.last()) {
        (Some(first), Some(last)) if r.lr_schedule != "constant" => {
            format!(", η schedule {} ({first:.4} → {last:.4})", r.lr_schedule)
        }
        _ => String::new(),
    }
}

/// The report as Markdown: a summary line and the split table.
#[must_use]
pub fn render(r: &TrainBenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let widths: Vec<String> = r.widths.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "{} [{}]{}, {} clients, B = {}, {}-bit keys, backend {} ({}), protocol {}, {} threads{}\n",
        r.dataset,
        widths.join(", "),
        r.arch
            .as_ref()
            .map_or_else(String::new, |a| format!(" ({a})")),
        r.clients,
        r.batch,
        r.key_bits,
        r.backend,
        r.arithmetic,
        r.protocol,
        r.threads,
        schedule_clause(r)
    );
    let _ = writeln!(
        s,
        "**{:.2} samples/s**, {:.2} s per iteration ({} sessions, {} iterations, {} samples, \
         {:.1} s); one epoch of {} samples: {:.0} s extrapolated{}; identical to the \
         reference: {}\n",
        r.samples_per_second,
        r.seconds_per_iteration,
        r.sessions,
        r.iterations,
        r.samples,
        r.seconds,
        r.epoch_samples,
        r.epoch_seconds_extrapolated,
        r.epoch_seconds_measured
            .map_or_else(String::new, |m| format!(", {m:.0} s measured")),
        r.identical_to_reference
    );
    let _ = writeln!(s, "| party | handling | work | s / iteration | share |");
    let _ = writeln!(s, "| --- | --- | --- | ---: | ---: |");
    for p in &r.split {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.1}% |",
            p.party,
            p.message,
            p.work,
            p.seconds_per_iteration,
            100.0 * p.share
        );
    }
    let _ = writeln!(
        s,
        "| server | – | idle | {:.3} | |\n| client | – | idle | {:.3} | |\n| network | – | \
         {:.0} B up, {:.0} B down (in-process; at 1 Gbit/s) | {:.3} | |",
        r.server_idle_seconds_per_iteration,
        r.client_idle_seconds_per_iteration,
        r.bytes_to_server_per_iteration,
        r.bytes_to_client_per_iteration,
        r.network_seconds_per_iteration_at_1gbps
    );
    s
}
