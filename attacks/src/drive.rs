//! Building in-memory training runs ([`Simulation`]: real Paillier keys, the real server and
//! client state machines) and driving sessions message by message while recording what
//! each party sees.
//!
//! Per session, [`run_observed_session`] records:
//! - the server's view: what it stores before and after the session (under the paper's
//!   protocol its true model, `w^I` and `w^F`; under protocol v2 the masked model
//!   `W~_v = W_v − P_v` and `W~_{v+1}`, [`Server::masked_model`]) and every masked update
//!   `D` it learns: under the paper's protocol the decrypted `D = η·Δ + r` of Alg. 3
//!   ([`Server::last_decrypted_update`]), under v2 the plaintext `D_j = η·Δ_j + r_j` of
//!   every [`PlainUpdate`] and the rollover's `D = η·Δ_last + P_{v+1} − R`
//!   ([`Rollover`]);
//! - the client's view: its layer-1 inputs and unmasked pre-activations per iteration
//!   ([`Client::transcript`]) and its own gradients per iteration
//!   ([`Client::last_gradients`]).
//!
//! Neither attack uses more than its party's view; the other party's secrets (the true
//! inputs, the true weights: [`Simulation::model`], which under v2 only the clients and
//! the driver can compute) are only used to score the attack.
//!
//! [`PlainUpdate`]: gelunet_protocol::v2::PlainUpdate
//! [`Rollover`]: gelunet_protocol::v2::Rollover
//! [`Client::transcript`]: gelunet_client::Client::transcript
//! [`Client::last_gradients`]: gelunet_client::Client::last_gradients

use gelunet_client::ClientConfig;
use gelunet_paillier::BigInt;
use gelunet_paillier::PrivateKey;
use gelunet_protocol::messages::{ClientMessage, ServerMessage};
use gelunet_protocol::v2::{PlainLayerUpdate, Protocol};
use gelunet_protocol::{
    Activation, ClientOrder, FixedModel, Gradients, MaskMode, ModelSpec, Scales, SessionLength,
    SessionPolicy,
};
use gelunet_server::{DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig};
use gelunet_sim::Simulation;
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::data::AttackData;
use crate::{AttackError, Result};

/// Key sizes below this need [`generate_keys`]' `insecure_test_keys`.
pub const SECURE_KEY_BITS: u64 = 2048;

/// `count` Paillier key pairs of `bits` bits from `seed`. Keys below 2048 bits are only
/// generated with `insecure_test_keys`, in builds with paillier's `hazmat` feature
/// (`PrivateKey::generate_for_run`).
///
/// # Errors
/// [`AttackError::Invalid`] for a small key without permission; key-generation errors
/// (`TestKeysUnavailable` in a build without `hazmat`).
pub fn generate_keys(
    bits: u64,
    count: usize,
    seed: u64,
    insecure_test_keys: bool,
) -> Result<Vec<PrivateKey>> {
    if bits < SECURE_KEY_BITS && !insecure_test_keys {
        return Err(AttackError::Invalid(format!(
            "{bits}-bit keys are test-only: pass --insecure-test-keys (or use 2048)"
        )));
    }
    (0..count)
        .map(|i| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1_000_003) + i as u64);
            PrivateKey::generate_for_run(bits, insecure_test_keys, &mut rng)
                .map_err(AttackError::from)
        })
        .collect()
}

/// One training run to attack.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// Architecture.
    pub spec: ModelSpec,
    /// Fixed-point scales.
    pub scales: Scales,
    /// Learning rate `η`.
    pub learning_rate: f64,
    /// Mini-batch size `B`.
    pub batch_size: usize,
    /// Iterations per session `d` (every session has exactly `d`).
    pub iterations: u32,
    /// Gradient mask.
    pub mask: MaskMode,
    /// Whether `d·B` may exceed the smallest fan-in (insecure; docs/DESIGN.md "Sessions and the
    /// d_max bound").
    pub allow_bound_violation: bool,
    /// Whether `d·B` may be below the server's minimum of samples per session (insecure:
    /// with one sample Alg. 5 gives the input away; `SessionPolicy::min_samples`).
    pub allow_few_samples: bool,
    /// Seed of the model, the schedule and the clients.
    pub seed: u64,
    /// The protocol attacked (`docs/DESIGN.md` "Protocol v2").
    pub protocol: gelunet_protocol::v2::Protocol,
}

impl RunConfig {
    /// Samples per session, `d·B`.
    pub fn samples_per_session(&self) -> usize {
        self.iterations as usize * self.batch_size
    }

    /// Whether the run needs the insecure policy: `d·B` above the smallest fan-in.
    pub fn breaks_bound(&self) -> bool {
        self.samples_per_session() > self.spec.min_fan_in()
    }
}

/// What every experiment trains and attacks: the clients' data, a model of one sigmoid
/// hidden layer, the clients, the learning rate, the seed and the protocol.
#[derive(Clone, Debug)]
pub struct AttackRun {
    /// The clients' data.
    pub data: AttackData,
    /// Hidden-layer width (one sigmoid hidden layer).
    pub hidden: usize,
    /// Number of clients (round-robin sessions).
    pub clients: usize,
    /// Learning rate `η`.
    pub learning_rate: f64,
    /// Seed of the model, the data split, the schedule and the clients.
    pub seed: u64,
    /// The protocol of the runs (`docs/DESIGN.md` "Protocol v2").
    pub protocol: Protocol,
}

impl AttackRun {
    /// The architecture `[n_0, hidden, classes]`, sigmoid.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec::new(
            vec![self.data.features(), self.hidden, self.data.classes],
            Activation::Sigmoid,
        )
    }

    /// The data split among the clients ([`AttackData::split`] with the run's seed).
    ///
    /// # Errors
    /// Dataset errors (e.g. fewer samples than clients).
    pub fn shares(&self) -> Result<Vec<(Array2<f64>, Vec<usize>)>> {
        self.data.split(self.clients, self.seed)
    }

    /// A run of `spec` with sessions of `iterations` mini-batches of `batch_size`, the
    /// default scales and mask, and the insecure policy switches on exactly where `d·B`
    /// needs them (above the smallest fan-in; below the server's minimum of samples).
    pub fn config(&self, spec: &ModelSpec, batch_size: usize, iterations: u32) -> RunConfig {
        let mut cfg = RunConfig {
            spec: spec.clone(),
            scales: Scales::default(),
            learning_rate: self.learning_rate,
            batch_size,
            iterations,
            mask: MaskMode::default(),
            allow_bound_violation: false,
            allow_few_samples: false,
            seed: self.seed,
            protocol: self.protocol,
        };
        cfg.allow_bound_violation = cfg.breaks_bound();
        cfg.allow_few_samples = cfg.samples_per_session()
            < gelunet_protocol::schedule::DEFAULT_MIN_SESSION_SAMPLES as usize;
        cfg
    }

    /// The learning rate as the runs encode it: `η` at `2^fe`, and that value as a real.
    ///
    /// # Errors
    /// A learning rate outside the scales' range.
    pub fn eta(&self, scales: &Scales) -> Result<(i128, f64)> {
        let eta = scales.encode(
            gelunet_protocol::ValueKind::LearningRate,
            self.learning_rate,
        )?;
        Ok((eta, eta as f64 / 2f64.powi(scales.fe as i32)))
    }

    /// The report's description of the run with `keys` and `samples` loaded.
    pub fn summary(&self, keys: &[PrivateKey]) -> RunSummary {
        RunSummary {
            protocol: self.protocol.name().into(),
            dataset: self.data.name.clone(),
            widths: self.spec().widths,
            samples: self.data.x.nrows(),
            clients: self.clients,
            key_bits: keys.first().map_or(0, |k| k.public_key().bits()),
            learning_rate: self.learning_rate,
        }
    }
}

/// The description of a run at the head of a report (flattened into its JSON).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The protocol attacked: `paper` or `v2`.
    pub protocol: String,
    /// Dataset name.
    pub dataset: String,
    /// Layer widths.
    pub widths: Vec<usize>,
    /// Samples loaded (all clients).
    pub samples: usize,
    /// Clients.
    pub clients: usize,
    /// Bits of every Paillier modulus.
    pub key_bits: u64,
    /// Learning rate.
    pub learning_rate: f64,
}

/// The description of a sweep's runs at the head of a report (flattened into its JSON).
#[derive(Clone, Debug, Serialize)]
pub struct SweepSummary {
    /// The protocol of the runs: `paper` or `v2`.
    pub protocol: String,
    /// Dataset.
    pub dataset: String,
    /// Layer widths.
    pub widths: Vec<usize>,
    /// Bits of every Paillier modulus.
    pub key_bits: u64,
    /// Mini-batch size.
    pub batch: usize,
}

impl SweepSummary {
    /// The summary of `run` with `keys` and mini-batches of `batch`.
    pub fn new(run: &AttackRun, keys: &[PrivateKey], batch: usize) -> Self {
        Self {
            protocol: run.protocol.name().into(),
            dataset: run.data.name.clone(),
            widths: run.spec().widths,
            key_bits: keys.first().map_or(0, |k| k.public_key().bits()),
            batch,
        }
    }
}

/// A sweep over session sizes: sessions of `S = d·B` samples for each `S` in `sizes`,
/// after `warmup` sessions, `trials` attacked sessions per size.
#[derive(Clone, Debug)]
pub struct SessionSweep {
    /// Mini-batch size `B` (sessions of `d = S / B` iterations).
    pub batch: usize,
    /// The session sizes `S` to attack (multiples of `B`).
    pub sizes: Vec<usize>,
    /// Sessions run before the attacked ones (so that the model is mid-training, with
    /// non-zero biases).
    pub warmup: usize,
    /// Attacked sessions per session size.
    pub trials: usize,
}

impl SessionSweep {
    /// Every multiple of `batch` up to `max_samples` (none for `batch = 0`).
    pub fn up_to(max_samples: usize, batch: usize, warmup: usize, trials: usize) -> Self {
        let sizes = match batch {
            0 => Vec::new(),
            b => (1..=max_samples / b).map(|d| d * b).collect(),
        };
        Self {
            batch,
            sizes,
            warmup,
            trials,
        }
    }

    /// `B`, at least 1, and the iterations `d = S / B` of every size.
    ///
    /// # Errors
    /// [`AttackError::Invalid`] for a size that is not a positive multiple of `B`.
    pub fn iterations(&self) -> Result<(usize, Vec<u32>)> {
        let batch = self.batch.max(1);
        let d = self
            .sizes
            .iter()
            .map(|&size| {
                if size == 0 || size % batch != 0 {
                    return Err(AttackError::Invalid(format!(
                        "session size {size} is not a positive multiple of the batch size {batch}"
                    )));
                }
                Ok((size / batch) as u32)
            })
            .collect::<Result<_>>()?;
        Ok((batch, d))
    }

    /// Runs `attack` once per session size of the sweep, in order: with `d = S / B`, the
    /// configuration of `run` for `spec` with sessions of `d` mini-batches of `B`
    /// ([`AttackRun::config`]) and its simulation over `run`'s data shares and `keys`
    /// ([`build_simulation`]) after the sweep's `warmup` sessions. Returns `B` (at
    /// least 1).
    ///
    /// # Errors
    /// Dataset errors of the split; [`AttackError::Invalid`] for a size that is not a
    /// positive multiple of `B` ([`SessionSweep::iterations`]) or too few keys; the
    /// simulation's errors; the first error of `attack`.
    pub fn run_sizes(
        &self,
        run: &AttackRun,
        spec: &ModelSpec,
        keys: &[PrivateKey],
        mut attack: impl FnMut(u32, &RunConfig, Simulation) -> Result<()>,
    ) -> Result<usize> {
        let shares = run.shares()?;
        let (batch, iterations) = self.iterations()?;
        for d in iterations {
            let cfg = run.config(spec, batch, d);
            let mut sim = build_simulation(&cfg, keys, &shares)?;
            sim.run_sessions(self.warmup)?;
            attack(d, &cfg, sim)?;
        }
        Ok(batch)
    }
}

/// Builds the simulation: a server with `keys[0]`, one client per data share with
/// `keys[1..]`, all recording their transcripts. Test keys and the insecure switches are
/// enabled exactly where the configuration needs them.
///
/// # Errors
/// [`AttackError::Invalid`] with too few keys; the roles' configuration errors.
#[allow(clippy::needless_update)] // the policy and option structs may grow fields
pub fn build_simulation(
    cfg: &RunConfig,
    keys: &[PrivateKey],
    shares: &[(Array2<f64>, Vec<usize>)],
) -> Result<Simulation> {
    if keys.len() < shares.len() + 1 {
        return Err(AttackError::Invalid(format!(
            "{} keys for a server and {} clients",
            keys.len(),
            shares.len()
        )));
    }
    let test_keys = keys.iter().any(|k| k.public_key().bits() < SECURE_KEY_BITS);
    let mut sc = ServerConfig::new(cfg.spec.clone(), cfg.learning_rate, cfg.batch_size);
    sc.protocol = cfg.protocol;
    sc.scales = cfg.scales;
    sc.model_seed = cfg.seed;
    sc.schedule_seed = cfg.seed.wrapping_add(1);
    sc.rng_seed = Some(cfg.seed.wrapping_add(2));
    sc.mask = cfg.mask;
    sc.policy = SessionPolicy {
        order: ClientOrder::RoundRobin,
        length: SessionLength::Fixed(cfg.iterations),
        insecure_allow_bound_violation: cfg.allow_bound_violation,
        insecure_allow_few_samples: cfg.allow_few_samples,
        ..SessionPolicy::default()
    };
    sc.insecure = InsecureOptions {
        allow_test_keys: test_keys,
        allow_unmasked_gradients: cfg.mask.is_insecure(),
        ..InsecureOptions::default()
    };
    let server = Server::new(sc, keys[0].clone())?;
    Ok(Simulation::with_shares(
        server,
        shares,
        keys[1..].iter().cloned(),
        |c| ClientConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                seed: cfg.seed.wrapping_mul(31).wrapping_add(7 + 13 * c as u64),
            },
            allow_test_keys: test_keys,
            allow_unmasked_gradients: cfg.mask.is_insecure(),
            record_transcript: true,
            allow_bound_violation: cfg.allow_bound_violation,
            ..ClientConfig::default()
        },
    )?)
}

/// Everything recorded about one session.
#[derive(Clone, Debug)]
pub struct ObservedSession {
    /// Session id.
    pub session: u64,
    /// Index of the client.
    pub client: usize,
    /// Iterations `d`.
    pub iterations: u32,
    /// The protocol of the run.
    pub protocol: Protocol,
    /// The true model when the session started (`w^I`; under v2 `W~_v + P_v`, which the
    /// server cannot compute): the ground truth of the extraction attack.
    pub model_before: FixedModel,
    /// The true model after the session (`w^F`; under v2 `W_{v+1}`).
    pub model_after: FixedModel,
    /// Server's view: what it stores when the session starts, per layer (the paper's
    /// protocol: the true `w^I`; v2: `W~_v = W_v − P_v`).
    pub stored_before: Vec<MaskedLayer>,
    /// Server's view: what it stores after the session (the paper's protocol: `w^F`
    /// after Alg. 5; v2: `W~_{v+1}` after the rollover).
    pub stored_after: Vec<MaskedLayer>,
    /// Server's view: every masked update it learns, in order, per layer. The paper's
    /// protocol: the decrypted `D = η·Δ + r` of Alg. 3 (`d − 1` of them); v2: the
    /// plaintext `D_j` of iterations `0..d−1` and the rollover's `D` (`d` of them).
    pub decrypted: Vec<Vec<DecryptedUpdate>>,
    /// Client's view: its gradients of each iteration (`d` of them).
    pub client_gradients: Vec<Gradients>,
    /// Client's view: layer-1 inputs `a_0` (`B × n_0`, at `2^fa`) of each iteration. Also
    /// the ground truth the gradient-inversion attack is scored against.
    pub inputs: Vec<Array2<i128>>,
    /// Client's view: unmasked layer-1 pre-activations `z_1` (`B × n_1`, at
    /// `2^(fa+fw)`) of each iteration.
    pub pre_activations: Vec<Array2<i128>>,
}

/// What the server stores between sessions, per layer: its true model under the paper's
/// protocol, the masked model `W~ = W_v − P_v` under v2.
///
/// # Errors
/// [`AttackError::Invalid`] if the server holds neither.
pub fn stored_model(server: &Server) -> Result<Vec<MaskedLayer>> {
    if let Some(masked) = server.masked_model() {
        return Ok(masked.to_vec());
    }
    let model = server
        .model()
        .ok_or_else(|| AttackError::Invalid("the server holds no model".into()))?;
    Ok(model
        .layers
        .iter()
        .map(|l| MaskedLayer {
            w: l.w.mapv(BigInt::from),
            b: l.b.mapv(BigInt::from),
        })
        .collect())
}

/// A v2 update message's values as the layers' `D` (`m × n` weights, `m` biases).
fn plain_layers(layers: &[PlainLayerUpdate], spec: &ModelSpec) -> Result<Vec<DecryptedUpdate>> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (m, n) = spec.layer_shape(i + 1);
            let w = Array2::from_shape_vec((m, n), l.weights.clone())
                .map_err(|_| AttackError::Invalid(format!("layer {} update shape", i + 1)))?;
            if l.biases.len() != m {
                return Err(AttackError::Invalid(format!("layer {} biases", i + 1)));
            }
            Ok(DecryptedUpdate {
                w,
                b: Array1::from(l.biases.clone()),
            })
        })
        .collect()
}

/// Runs the next session message by message and records both parties' views (either
/// protocol).
///
/// # Errors
/// The roles' errors; [`AttackError::Invalid`] if the flow is not the expected one.
pub fn run_observed_session(sim: &mut Simulation) -> Result<ObservedSession> {
    let protocol = sim.server().protocol();
    let spec = sim.server().config().spec.clone();
    let model_before = sim.model().clone();
    let stored_before = stored_model(sim.server())?;
    let (cid, start) = sim.server_mut().start_session()?;
    let (session, iterations) = match &start {
        ServerMessage::SessionStart(s) => (s.session, s.iterations),
        other => {
            return Err(AttackError::Invalid(format!(
                "start_session gave {}",
                other.kind()
            )))
        }
    };
    let idx = cid.0;
    if idx >= sim.clients().len() {
        return Err(AttackError::Invalid(format!("unknown client {idx}")));
    }
    let mut decrypted = Vec::new();
    let mut client_gradients = Vec::new();
    let mut msg = start;
    while let Some(reply) = sim.clients_mut()[idx].handle(&msg)? {
        let is_masked = matches!(reply, ClientMessage::MaskedUpdate(_));
        match &reply {
            ClientMessage::PlainUpdate(u) => decrypted.push(plain_layers(&u.layers, &spec)?),
            ClientMessage::Rollover(r) => decrypted.push(plain_layers(&r.layers, &spec)?),
            _ => {}
        }
        if matches!(
            reply,
            ClientMessage::MaskedUpdate(_)
                | ClientMessage::FinalUpdate(_)
                | ClientMessage::PlainUpdate(_)
                | ClientMessage::Rollover(_)
        ) {
            let g = sim.clients()[idx]
                .last_gradients()
                .ok_or_else(|| AttackError::Invalid("no gradients after an iteration".into()))?;
            client_gradients.push(g.clone());
        }
        let answer = sim.server_mut().handle(cid, &reply)?;
        if is_masked {
            let d = sim
                .server()
                .last_decrypted_update()
                .ok_or_else(|| AttackError::Invalid("no decrypted update".into()))?;
            decrypted.push(d.to_vec());
        }
        match answer {
            Some(a) => msg = a,
            None => break,
        }
    }
    if sim.server().active_session().is_some() {
        return Err(AttackError::Invalid(format!(
            "session {session} did not complete"
        )));
    }
    // Under v2 the true model moved with the rollover (the driver knows the group key).
    sim.refresh_model()?;
    let stored_after = stored_model(sim.server())?;
    let client = &sim.clients()[idx];
    let mut inputs = vec![Array2::zeros((0, 0)); iterations as usize];
    let mut pre_activations = inputs.clone();
    for e in client
        .transcript()
        .iter()
        .filter(|e| e.session == session && e.layer == 1)
    {
        if let Some(slot) = inputs.get_mut(e.iteration as usize) {
            *slot = e.inputs.clone();
            pre_activations[e.iteration as usize] = e.pre_activations.clone();
        }
    }
    if inputs.iter().any(|a| a.is_empty()) || client_gradients.len() != iterations as usize {
        return Err(AttackError::Invalid(format!(
            "session {session}: incomplete transcript"
        )));
    }
    Ok(ObservedSession {
        session,
        client: idx,
        iterations,
        protocol,
        model_before,
        model_after: sim.model().clone(),
        stored_before,
        stored_after,
        decrypted,
        client_gradients,
        inputs,
        pre_activations,
    })
}
