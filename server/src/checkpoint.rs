//! The server's whole state between two sessions, as a value ([`Checkpoint`]): what a
//! server restarted after a crash, a `kill -9` or a signal needs to continue the run as if
//! nothing had happened (docs/DESIGN.md "Checkpoint and resume").
//!
//! The coordinator produces one after every completed session
//! ([`crate::ServerEvent::Checkpoint`], [`crate::Coordinator::checkpoint`]) and continues
//! from one ([`crate::Coordinator::resume`]); the run layer writes it to disk (framed,
//! checksummed, atomically, mode 0600: `gelunet_run::checkpoint`). Nothing here does I/O.
//!
//! # What it holds
//!
//! * the configuration it belongs to ([`RunFingerprint`]: spec, scales, mask, `B`, `η`,
//!   protocol, packing, seeds, session policy), so that a checkpoint of another run is
//!   refused ([`CheckpointError::Mismatch`]);
//! * the model state: under protocol v2 the masked state `(v, ν_v, W~)` only
//!   ([`V2Checkpoint`], never a true weight); under the paper's protocol the true model
//!   (the paper's server holds it anyway) and **not** the server's Paillier key: a
//!   resumed paper-protocol server generates a new key pair, and every client, which
//!   handshakes anew at each connection, takes the new `PK_s` (`[η]_s` is per session);
//! * the schedule position (the sessions started: the seeded [`gelunet_protocol::Scheduler`]
//!   is replayed that far) and the next session id;
//! * the position of the server's encryption stream in the insecure reproducible mode
//!   ([`crate::ServerConfig::rng_seed`]); with operating-system randomness a resumed
//!   server draws a fresh stream;
//! * every registered client: name, public key, declared samples, reproduction hint,
//!   registrations, sessions completed and abandoned, the mini-batches of its completed
//!   sessions (sent back in `Registered`, so the client's batch order continues), bytes;
//! * the coordinator's counters (completed sessions, samples, samples held: the
//!   [`crate::StopRule`] is a function of these), the session log and the training time.

use std::time::Duration;

use gelunet_protocol::messages::PublicModulus;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{
    LearningRateSchedule, MaskMode, ModelSpec, Scales, Scheduler, SessionPolicy,
};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::coordinator::{ClientLog, SessionLog, Traffic};
use crate::plain_update::V2Checkpoint;
use crate::role::Server;

/// The configuration a checkpoint belongs to; a resumed server must have the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFingerprint {
    /// The architecture.
    pub spec: ModelSpec,
    /// Fixed-point scales.
    pub scales: Scales,
    /// The gradient mask.
    pub mask: MaskMode,
    /// Mini-batch size `B`.
    pub batch_size: usize,
    /// `η` at `2^fe`.
    pub eta: i128,
    /// The learning-rate schedule (checkpoints written before it existed read as
    /// constant, which they were).
    #[serde(default)]
    pub lr_schedule: LearningRateSchedule,
    /// The protocol.
    pub protocol: Protocol,
    /// Packing on or off.
    pub packing: bool,
    /// Seed of the weight initialization.
    pub model_seed: u64,
    /// Seed of the session scheduler.
    pub schedule_seed: u64,
    /// The server's reproducible encryption seed, if any.
    pub rng_seed: Option<u64>,
    /// The session policy.
    pub policy: SessionPolicy,
}

impl RunFingerprint {
    /// The fingerprint of `server`'s configuration.
    pub fn of(server: &Server) -> Self {
        Self::new(server.config(), server.learning_rate())
    }

    /// The fingerprint of a configuration with `η = eta` at `2^fe` (to check a checkpoint
    /// before the server is built, e.g. before any key is generated).
    pub fn new(c: &crate::ServerConfig, eta: i128) -> Self {
        Self {
            spec: c.spec.clone(),
            scales: c.scales,
            mask: c.mask,
            batch_size: c.batch_size,
            eta,
            lr_schedule: c.lr_schedule,
            protocol: c.protocol,
            packing: c.packing,
            model_seed: c.model_seed,
            schedule_seed: c.schedule_seed,
            rng_seed: c.rng_seed,
            policy: c.policy,
        }
    }

    /// The first field in which `other` differs from `self`, if any.
    pub fn difference(&self, other: &Self) -> Option<&'static str> {
        [
            (self.spec != other.spec, "model spec"),
            (self.scales != other.scales, "fixed-point scales"),
            (self.mask != other.mask, "gradient mask"),
            (self.batch_size != other.batch_size, "batch size"),
            (self.eta != other.eta, "learning rate"),
            (
                self.lr_schedule != other.lr_schedule,
                "learning-rate schedule",
            ),
            (self.protocol != other.protocol, "protocol"),
            (self.packing != other.packing, "packing"),
            (self.model_seed != other.model_seed, "model seed"),
            (self.schedule_seed != other.schedule_seed, "schedule seed"),
            (self.rng_seed != other.rng_seed, "server randomness"),
            (self.policy != other.policy, "session policy"),
        ]
        .into_iter()
        .find_map(|(differs, what)| differs.then_some(what))
    }
}

/// The model state of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ModelState {
    /// Protocol v2: `(v, ν_v, W~)`, never a true weight.
    V2(V2Checkpoint),
    /// The paper's protocol: the true model, `(W_i, b_i)` per layer at the scales'
    /// fixed point (no key material).
    Paper {
        /// `(W_i` (`m × n`), `b_i` (length `m`)) for `i = 1..=L`.
        layers: Vec<(Array2<i128>, Array1<i128>)>,
    },
}

/// One registered client in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Its record so far (name, index, samples, sessions, registrations, bytes).
    pub log: ClientLog,
    /// Its public key `N_c` (a reconnecting client must present the same).
    pub key: PublicModulus,
}

/// The server's whole state between sessions (module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The configuration it belongs to.
    pub fingerprint: RunFingerprint,
    /// The model state.
    pub model: ModelState,
    /// Sessions started so far (completed and abandoned): the scheduler's position.
    pub sessions_started: u64,
    /// Clients the scheduler was built for (`None`: no session started yet).
    pub scheduler_clients: Option<usize>,
    /// The id of the next session.
    pub next_session: u64,
    /// The word position of the server's reproducible encryption stream (`None` with
    /// operating-system randomness).
    pub rng_word_pos: Option<u128>,
    /// Every registered client, by index.
    pub clients: Vec<ClientRecord>,
    /// Every session so far, in order.
    pub sessions: Vec<SessionLog>,
    /// Completed sessions.
    pub completed: u64,
    /// Samples processed in completed sessions.
    pub samples: u64,
    /// Samples the registered clients held at the start of training.
    pub held: u64,
    /// Training time so far.
    pub training_time: Duration,
    /// Bytes of connections that never registered.
    pub unregistered: Traffic,
}

impl Checkpoint {
    /// The v2 state, under protocol v2.
    pub fn v2(&self) -> Option<&V2Checkpoint> {
        match &self.model {
            ModelState::V2(cp) => Some(cp),
            ModelState::Paper { .. } => None,
        }
    }
}

/// Why a checkpoint cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint belongs to a run with another configuration.
    #[error("the checkpoint is of a run with another {what}")]
    Mismatch {
        /// What differs (e.g. "model spec", "protocol").
        what: &'static str,
    },
    /// A client of the checkpoint is not among the configured clients.
    #[error("the checkpoint's client `{name}` is not among the configured clients")]
    UnknownClient {
        /// Its name.
        name: String,
    },
    /// The checkpoint contradicts itself or cannot be applied.
    #[error("the checkpoint is inconsistent: {reason}")]
    Inconsistent {
        /// What is wrong.
        reason: String,
    },
}

fn inconsistent(reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Inconsistent {
        reason: reason.into(),
    }
}

/// The role's part of a [`Checkpoint`] (the fields of the same names).
pub(crate) struct RolePart {
    pub(crate) model: ModelState,
    pub(crate) sessions_started: u64,
    pub(crate) scheduler_clients: Option<usize>,
    pub(crate) next_session: u64,
    pub(crate) rng_word_pos: Option<u128>,
}

impl Server {
    /// The role's part of a [`Checkpoint`], between sessions.
    pub(crate) fn role_checkpoint(&self) -> Option<RolePart> {
        if self.session.is_some() {
            return None;
        }
        let model = match &self.v2 {
            Some(_) => ModelState::V2(self.v2_checkpoint().ok()?),
            None => ModelState::Paper {
                layers: self
                    .model
                    .layers
                    .iter()
                    .map(|l| (l.w.clone(), l.b.clone()))
                    .collect(),
            },
        };
        let scheduler_clients = self.scheduler.as_ref().map(|_| self.clients.len());
        let rng = self.config.rng_seed.map(|_| self.rng.get_word_pos());
        Some(RolePart {
            model,
            sessions_started: self.next_session - 1,
            scheduler_clients,
            next_session: self.next_session,
            rng_word_pos: rng,
        })
    }

    /// Restores the role from `cp` (a server just built with [`Server::new`] for the same
    /// configuration, no client registered): the clients' keys, the model state, the
    /// scheduler's position, the next session id and the reproducible stream's position.
    ///
    /// # Errors
    /// [`CheckpointError::Mismatch`] for another configuration;
    /// [`CheckpointError::Inconsistent`] for a role that already has clients or a
    /// session, unusable client keys, model shapes of another architecture, or a
    /// schedule position the checkpoint cannot have.
    pub fn restore(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        if let Some(what) = RunFingerprint::of(self).difference(&cp.fingerprint) {
            return Err(CheckpointError::Mismatch { what });
        }
        if self.session.is_some() || !self.clients.is_empty() {
            return Err(inconsistent("the server role is not fresh"));
        }
        let allow = self.config.insecure.allow_test_keys;
        let keys = cp
            .clients
            .iter()
            .map(|c| gelunet_paillier::PublicKey::from_n_for_run(c.key.n.clone(), allow))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| inconsistent(format!("client key: {e}")))?;
        if cp.next_session != cp.sessions_started + 1 {
            return Err(inconsistent("the session ids do not follow the schedule"));
        }
        let scheduler = match cp.scheduler_clients {
            None if cp.sessions_started == 0 => None,
            None => return Err(inconsistent("sessions started without a scheduler")),
            Some(k) if k == 0 || k > keys.len() => {
                return Err(inconsistent("a scheduler for another number of clients"))
            }
            Some(k) => {
                let c = &self.config;
                let mut s = Scheduler::new(c.policy, &c.spec, c.batch_size, k, c.schedule_seed)
                    .map_err(|e| inconsistent(e.to_string()))?;
                for _ in 0..cp.sessions_started {
                    s.next_session();
                }
                Some(s)
            }
        };
        match (&cp.model, self.v2.is_some()) {
            (ModelState::V2(v2), true) => self
                .restore_v2(v2)
                .map_err(|e| inconsistent(e.to_string()))?,
            (ModelState::Paper { layers }, false) => {
                let spec = &self.config.spec;
                let shapes_ok = layers.len() == spec.num_layers()
                    && layers.iter().enumerate().all(|(i, (w, b))| {
                        let (m, n) = spec.param_shape(i + 1);
                        w.dim() == (m, n) && b.len() == m
                    });
                if !shapes_ok {
                    return Err(CheckpointError::Mismatch { what: "model spec" });
                }
                let mut model = self.model.clone();
                for (l, (w, b)) in model.layers.iter_mut().zip(layers) {
                    l.w = w.clone();
                    l.b = b.clone();
                }
                model
                    .validate(&self.config.scales)
                    .map_err(|e| inconsistent(format!("model: {e}")))?;
                self.model = model;
            }
            _ => return Err(CheckpointError::Mismatch { what: "protocol" }),
        }
        if let (Some(seed), Some(pos)) = (self.config.rng_seed, cp.rng_word_pos) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            rng.set_word_pos(pos);
            self.rng = rng;
        }
        self.clients = keys;
        self.scheduler = scheduler;
        self.next_session = cp.next_session;
        Ok(())
    }
}
