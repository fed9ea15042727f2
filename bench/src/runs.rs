//! Training GELU-Net and the polynomial baselines side by side on the same mini-batches,
//! and the encrypted GELU-Net run checked against its reference.
//!
//! GELU-Net's numbers come from [`ReferenceTrainer`], the exact plaintext fixed-point
//! reference: by the exactness tests (`server/tests/exactness.rs`) the encrypted run
//! produces the same weights bit for bit. [`encrypted_run`] runs the real protocol
//! ([`Simulation`] with real Paillier keys) and checks that claim again, session by
//! session, in the same process.

use std::time::Instant;

use gelunet_baselines::train::mean_cross_entropy;
use gelunet_baselines::{FloatNet, FloatTrainer, TrainActivation};
use gelunet_client::{Client, ClientConfig};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::{
    Dataset, FixedModel, LearningRateSchedule, ReferenceTrainer, Scales, SessionPolicy, ValueKind,
};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use gelunet_sim::{IterationStats, Simulation};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::pipeline::{quantize_shares, Prepared, Schedule, TrainSetup};

/// Mean cross-entropy of a fixed-point model on real features.
///
/// # Errors
/// Range errors of the quantization and the forward pass.
pub fn fixed_loss(
    model: &FixedModel,
    scales: &Scales,
    x: ArrayView2<'_, f64>,
    y: &[usize],
    classes: usize,
) -> Result<f64> {
    let d = Dataset::quantize(x, y, classes, scales)?;
    let trace = model.forward(scales, d.x.view())?;
    let z = trace
        .z
        .last()
        .ok_or_else(|| BenchError::Check("model without layers".into()))?;
    let zf: Array2<f64> = z.mapv(|v| scales.decode(ValueKind::PreActivation, v));
    Ok(mean_cross_entropy(&zf, y))
}

/// Accuracy of a fixed-point model on real features.
///
/// # Errors
/// Range errors of the quantization and the forward pass.
pub fn fixed_accuracy(
    model: &FixedModel,
    scales: &Scales,
    x: ArrayView2<'_, f64>,
    y: &[usize],
    classes: usize,
) -> Result<f64> {
    let d = Dataset::quantize(x, y, classes, scales)?;
    Ok(model.accuracy(scales, d.x.view(), &d.labels)?)
}

/// The fixed-point reference trainer of `setup` on `prep`'s client shares (the model
/// every encrypted run of `setup` must equal).
///
/// # Errors
/// Spec, scale and data errors.
pub(crate) fn reference_trainer(prep: &Prepared, setup: &TrainSetup) -> Result<ReferenceTrainer> {
    let scales = setup.scales();
    let eta = scales.encode(ValueKind::LearningRate, setup.lr)?;
    Ok(ReferenceTrainer::new(
        &setup.spec()?,
        scales,
        setup.model_seed(),
        eta,
        setup.batch,
        quantize_shares(&prep.shares, prep.classes, &scales)?,
    )?)
}

/// The outcome of [`train_side_by_side`].
#[derive(Debug)]
pub struct SideBySide {
    /// GELU-Net's reference model after training (`None` if it failed).
    pub reference: Option<FixedModel>,
    /// Why the reference stopped (fixed-point overflow or range error), if it did.
    pub reference_error: Option<String>,
    /// Training loss of the reference at the start and after each epoch (empty unless
    /// losses were recorded; NaN after a failure).
    pub reference_losses: Vec<f64>,
    /// The baselines after training, in the order asked for.
    pub floats: Vec<FloatTrainer<TrainActivation>>,
    /// Their training losses (same layout as `reference_losses`).
    pub float_losses: Vec<Vec<f64>>,
    /// The session plans, in order (for replaying on the encrypted run).
    pub plans: Vec<SessionPlan>,
    /// SGD iterations run.
    pub iterations: usize,
}

fn select(x: &Array2<f64>, y: &[usize], idx: &[usize]) -> (Array2<f64>, Vec<usize>) {
    (x.select(Axis(0), idx), idx.iter().map(|&i| y[i]).collect())
}

/// Number of sessions a run of `setup` has: sessions are drawn until `epochs × n_train`
/// samples have been processed.
///
/// # Errors
/// As [`Schedule::new`].
pub fn session_count(prep: &Prepared, setup: &TrainSetup) -> Result<usize> {
    let mut schedule = Schedule::new(setup, &prep.shares)?;
    let target = setup.epochs * prep.train_len();
    let (mut samples, mut sessions) = (0usize, 0usize);
    while samples < target {
        let s = schedule.next_session();
        samples += s.batches.len() * setup.batch;
        sessions += 1;
    }
    Ok(sessions)
}

/// Trains GELU-Net's reference (if `with_reference`) and one `f64` network per activation
/// in `activations`, all from the same initial weights and on the same mini-batches
/// ([`Schedule`]), for `setup.epochs` epochs; records the training loss at the start and
/// after every epoch when `record_loss` is set.
///
/// # Errors
/// Configuration and data errors. A reference that overflows is not an error: it is
/// reported in [`SideBySide::reference_error`].
pub fn train_side_by_side(
    prep: &Prepared,
    setup: &TrainSetup,
    activations: &[TrainActivation],
    with_reference: bool,
    record_loss: bool,
) -> Result<SideBySide> {
    let scales = setup.scales();
    setup.spec()?; // a bad architecture fails before any training
    let mut reference = with_reference
        .then(|| reference_trainer(prep, setup))
        .transpose()?;
    let init = FloatNet::xavier(&setup.widths, setup.model_seed(), Some(scales.fw))?;
    let mut floats = activations
        .iter()
        .map(|&a| FloatTrainer::new(init.clone(), a, setup.lr))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut reference_error = None;
    let mut reference_losses = Vec::new();
    let mut float_losses = vec![Vec::new(); floats.len()];
    let (tx, ty) = (prep.train_x.view(), &prep.train_y);
    let record = |reference: &Option<ReferenceTrainer>,
                  failed: bool,
                  floats: &[FloatTrainer<TrainActivation>],
                  rl: &mut Vec<f64>,
                  fl: &mut [Vec<f64>]|
     -> Result<()> {
        if let Some(r) = reference {
            let l = if failed {
                f64::NAN
            } else {
                fixed_loss(r.model(), &scales, tx, ty, prep.classes).unwrap_or(f64::NAN)
            };
            rl.push(l);
        }
        for (f, out) in floats.iter().zip(fl.iter_mut()) {
            out.push(f.loss(tx, ty)?);
        }
        Ok(())
    };
    if record_loss {
        record(
            &reference,
            false,
            &floats,
            &mut reference_losses,
            &mut float_losses,
        )?;
    }
    let mut schedule = Schedule::new(setup, &prep.shares)?;
    let n_train = prep.train_len();
    let (mut samples, mut epoch, mut iterations) = (0usize, 0usize, 0usize);
    let mut plans = Vec::new();
    while epoch < setup.epochs {
        let session = schedule.next_session();
        plans.push(session.plan);
        if let Some(r) = reference.as_mut() {
            if reference_error.is_none() {
                if let Err(e) = r.run_session(session.plan) {
                    reference_error = Some(e.to_string());
                }
            }
        }
        let share = &prep.shares[session.plan.client];
        for idx in &session.batches {
            let (x, y) = select(&share.x, &share.y, idx);
            for f in &mut floats {
                f.step(x.view(), &y)?;
            }
            samples += idx.len();
            iterations += 1;
        }
        while epoch < setup.epochs && samples >= (epoch + 1) * n_train {
            epoch += 1;
            if record_loss {
                record(
                    &reference,
                    reference_error.is_some(),
                    &floats,
                    &mut reference_losses,
                    &mut float_losses,
                )?;
            }
        }
    }
    let reference_model = match (&reference, &reference_error) {
        (Some(r), None) => Some(r.model().clone()),
        _ => None,
    };
    Ok(SideBySide {
        reference: reference_model,
        reference_error,
        reference_losses,
        floats,
        float_losses,
        plans,
        iterations,
    })
}

/// What the encrypted run did.
#[derive(Clone, Debug, Serialize)]
pub struct EncryptedCheck {
    /// Paillier key size (server and clients).
    pub key_bits: u64,
    /// Whether the keys were test-only keys (below 2048 bits).
    pub test_keys: bool,
    /// Gradient mask (docs/DESIGN.md).
    pub mask: String,
    /// Clients.
    pub clients: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Sessions run encrypted.
    pub sessions: usize,
    /// Sessions of the whole training run (equal to `sessions` for a full run).
    pub sessions_in_training: usize,
    /// Iterations (mini-batches) run encrypted.
    pub iterations: usize,
    /// Key generation, seconds.
    pub keygen_secs: f64,
    /// Wall time of the sessions, seconds.
    pub seconds: f64,
    /// Mean wall time per iteration, seconds.
    pub secs_per_iteration: f64,
    /// Mean bytes on the wire (both directions) per iteration.
    pub bytes_per_iteration: f64,
    /// Whether the encrypted model equalled the reference after every session.
    pub identical_to_reference: bool,
    /// Test accuracy of the encrypted model (after a full run only).
    pub test_accuracy: Option<f64>,
    /// Rayon threads.
    pub threads: usize,
    /// The learning-rate schedule (`constant`, `step:F:E`, `cosine:E`).
    pub lr_schedule: String,
    /// `η_s` of each session run, from the schedule (decoded from `2^fe`); the reference
    /// ran each session at it, so a server that scheduled another rate fails the check.
    pub session_rates: Vec<f64>,
}

/// A Paillier key of `bits` bits from `seed`: a real key at 2048 bits and above, a test
/// key below (only if `allow_test_keys`, in builds with paillier's `hazmat` feature;
/// `PrivateKey::generate_for_run`).
///
/// # Errors
/// [`BenchError::Config`] for a test-size key without permission; key generation errors
/// (`TestKeysUnavailable` in a build without `hazmat`).
pub fn keygen(bits: u64, seed: u64, allow_test_keys: bool) -> Result<PrivateKey> {
    if bits < gelunet_paillier::MIN_KEY_BITS && !allow_test_keys {
        return Err(BenchError::Config(format!(
            "{bits}-bit keys are test-only keys: use --quick or --insecure-test-keys"
        )));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Ok(PrivateKey::generate_for_run(
        bits,
        allow_test_keys,
        &mut rng,
    )?)
}

/// Runs GELU-Net encrypted ([`Simulation`], real Paillier keys of `key_bits`) for the
/// training run of `setup` (all its sessions, or the first `max_sessions`), next to the
/// reference, and checks after every session that both models are identical.
///
/// # Errors
/// [`BenchError::Check`] if the models differ or the sessions were planned differently;
/// key, protocol and configuration errors.
pub fn encrypted_run(
    prep: &Prepared,
    setup: &TrainSetup,
    key_bits: u64,
    allow_test_keys: bool,
    max_sessions: Option<usize>,
) -> Result<EncryptedCheck> {
    // The paper's protocol, as in the paper's comparisons (v2 costs the same per
    // iteration on the linear layers and less on the updates).
    encrypted_run_with(
        prep,
        setup,
        key_bits,
        allow_test_keys,
        max_sessions,
        gelunet_protocol::v2::Protocol::Paper,
        LearningRateSchedule::Constant,
    )
    .map(|(check, _)| check)
}

/// [`encrypted_run`] under `protocol` with each session's rate from `lr_schedule`
/// (docs/DESIGN.md "Learning-rate schedule"; the reference runs each session at the same
/// `η_s`), also returning the driver's per-iteration costs (`gelunet bench train`,
/// [`crate::train_throughput`]).
///
/// # Errors
/// As [`encrypted_run`]; [`BenchError::Server`] for an `lr_schedule` the server's
/// configuration refuses.
pub fn encrypted_run_with(
    prep: &Prepared,
    setup: &TrainSetup,
    key_bits: u64,
    allow_test_keys: bool,
    max_sessions: Option<usize>,
    protocol: gelunet_protocol::v2::Protocol,
    lr_schedule: LearningRateSchedule,
) -> Result<(EncryptedCheck, Vec<IterationStats>)> {
    let scales = setup.scales();
    let spec = setup.spec()?;
    let mut cfg = ServerConfig::new(spec.clone(), setup.lr, setup.batch);
    cfg.protocol = protocol;
    cfg.lr_schedule = lr_schedule;
    let eta = scales.encode(ValueKind::LearningRate, setup.lr)?;
    cfg.scales = scales;
    cfg.model_seed = setup.model_seed();
    cfg.schedule_seed = setup.schedule_seed();
    cfg.rng_seed = Some(setup.server_rng_seed());
    cfg.policy = SessionPolicy::default();
    let test_keys = key_bits < gelunet_paillier::MIN_KEY_BITS;
    cfg.insecure = InsecureOptions {
        allow_test_keys: test_keys && allow_test_keys,
        allow_unmasked_gradients: false,
    };
    let t = Instant::now();
    let server = Server::new(
        cfg.clone(),
        keygen(key_bits, setup.seed * 100 + 1, allow_test_keys)?,
    )?;
    let mut clients = Vec::with_capacity(prep.shares.len());
    for (k, share) in prep.shares.iter().enumerate() {
        let config = ClientConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                seed: share.seed,
            },
            allow_test_keys: test_keys && allow_test_keys,
            ..ClientConfig::default()
        };
        let key = keygen(key_bits, setup.seed * 100 + 10 + k as u64, allow_test_keys)?;
        clients.push(Client::new(config, key, share.x.clone(), share.y.clone())?);
    }
    let keygen_secs = t.elapsed().as_secs_f64();
    let mut sim = Simulation::new(server, clients)?;
    let mut reference = reference_trainer(prep, setup)?;
    let total = session_count(prep, setup)?;
    let sessions = max_sessions.map_or(total, |m| m.min(total));
    let mut schedule = Schedule::new(setup, &prep.shares)?;
    let t = Instant::now();
    let mut session_rates = Vec::with_capacity(sessions);
    for s in 0..sessions {
        let (done, held) = sim.progress();
        let eta_s = lr_schedule.eta_at(eta, done, held);
        session_rates.push(scales.decode(ValueKind::LearningRate, eta_s));
        let rec = sim.run_session()?;
        let expected = schedule.next_session().plan;
        if rec.plan != expected || !rec.completed {
            return Err(BenchError::Check(format!(
                "session {s}: the server planned {:?} (completed {}), the schedule {:?}",
                rec.plan, rec.completed, expected
            )));
        }
        reference.run_session_at(rec.plan, eta_s)?;
        if sim.model() != reference.model() {
            return Err(BenchError::Check(format!(
                "session {s}: the encrypted weights differ from the fixed-point reference"
            )));
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let stats = sim.stats();
    let iterations = stats.len();
    let bytes: usize = stats
        .iter()
        .map(|s| s.bytes_to_client + s.bytes_to_server)
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let per = |v: f64| {
        if iterations == 0 {
            0.0
        } else {
            v / iterations as f64
        }
    };
    let test_accuracy = if sessions == total {
        Some(fixed_accuracy(
            sim.model(),
            &scales,
            prep.test_x.view(),
            &prep.test_y,
            prep.classes,
        )?)
    } else {
        None
    };
    #[allow(clippy::cast_precision_loss)]
    let bytes_per_iteration = per(bytes as f64);
    let check = EncryptedCheck {
        key_bits,
        test_keys,
        mask: format!("{:?}", cfg.mask),
        clients: prep.shares.len(),
        batch: setup.batch,
        sessions,
        sessions_in_training: total,
        iterations,
        keygen_secs,
        seconds,
        secs_per_iteration: per(seconds),
        bytes_per_iteration,
        identical_to_reference: true,
        test_accuracy,
        threads: rayon::current_num_threads(),
        lr_schedule: lr_schedule.to_string(),
        session_rates,
    };
    Ok((check, stats.to_vec()))
}
