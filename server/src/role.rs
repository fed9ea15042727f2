//! The server's role in GELU-Net as a state machine with no I/O: the [`Server`] struct,
//! its configuration, registration, session start and abandonment, and the dispatch of
//! client messages ([`Server::handle`]) to the algorithms, one file each.
//!
//! # What the server holds
//!
//! Between sessions, the true model `w_i, b_i` (fixed-point integers, [`FixedModel`]).
//! When a session with client `c` starts it keeps that model as `w^I, b^I` and works on
//! *masked* copies `w~ = w − R^w (mod N_c)`, which start equal to `w` (`R = 0`).
//!
//! # What it computes (paper Alg. 1, 2, 3, 5; docs/DESIGN.md "One iteration")
//!
//! ```text
//! forward   [z~_i]_c = W~_i ⊗ [a_{i−1}]_c ⊕ b~_i         crate::forward        PublicKey::matvec + add_plain
//! backward  [q~]_c   = [δ_i]_cᵀ ⊗ W~_i                    crate::backward       PublicKey::vecmat
//! masked    D = Dec_s([D]_s) = η·Δ + r,  w~ ← w~ − D (mod N_c)     crate::masked_update, every iteration but the last
//! final     w^F = w^I − η·ΔW^c,  b^F = b^I − η·Δb^c                crate::final_update, after the last iteration
//! infer     [z_i]_c = W_i ⊗ [a_{i−1}]_c ⊕ b_i (true weights)      crate::inference, outside the client's sessions
//! ```
//!
//! Masked weights are kept as the centered representative mod `N_c`: signed integers of
//! about `σ + g` bits under the statistical mask, `|N_c|`-bit ones under the uniform mask.
//!
//! # Packing ([`gelunet_protocol::packing`], on by default: [`ServerConfig::packing`])
//!
//! The samples of a mini-batch share one ciphertext per feature (the bias is added as
//! `b~_j·Σ_s 2^(β s)` reduced mod `N_c`), so the forward and backward products cost the
//! same for `B` samples as for one; masked updates arrive with about `|N_s|/(σ + g + 1)`
//! parameters per ciphertext (statistical mask; one per ciphertext under the uniform
//! mask) and final updates with `|N_s|/(max_bits + 1)`, so the server decrypts that many
//! times fewer plaintexts. The unpacked values, and so the weights, are exactly those of
//! the unpacked protocol.
//!
//! # Validation
//!
//! Every incoming message is checked (client, session, iteration, layer, turn, packing,
//! counts, ciphertext validity under the expected key, decrypted ranges) before anything
//! changes; an error leaves the server exactly as it was. The faults of the message are
//! [`ProtocolViolation`]s ([`ServerError::Violation`]). An abandoned session (client
//! abort or disconnect, [`Server::abandon_session`]) leaves `w^I, b^I` in place: nothing
//! of the session reaches the true model before Alg. 5.

use std::fmt;

use gelunet_paillier::{BigInt, BigUint, Ciphertext, PrivateKey, PublicKey, MIN_KEY_BITS};
use gelunet_protocol::group_key::{ModelId, VersionNonce};
use gelunet_protocol::messages::{
    Abort, ClientHello, ClientMessage, LayerCiphertexts, Packing, PublicModulus, ServerHello,
    ServerMessage, SessionStart, UpdatePacking, PROTOCOL_VERSION,
};
use gelunet_protocol::packing::sample_packing;
use gelunet_protocol::v2::{ModelVersion, Protocol, V2Params, MIN_SIGMA};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{
    FixedModel, LearningRateSchedule, MaskMode, ModelSpec, Scales, Scheduler, SessionPolicy,
    ValueKind,
};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{Result, ServerError};

/// Insecure switches, all off by default; each one is named in reports and refused unless
/// set here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsecureOptions {
    /// Accept Paillier keys below 2048 bits (tests and examples for speed).
    pub allow_test_keys: bool,
    /// Accept [`MaskMode::InsecureNone`] (the server then sees every gradient; for the
    /// gradient-inversion demo of paper §4.3).
    pub allow_unmasked_gradients: bool,
}

/// The server's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// The architecture.
    pub spec: ModelSpec,
    /// Fixed-point scales (sent to clients).
    pub scales: Scales,
    /// Seed of the weight initialization ([`FixedModel::init`]).
    pub model_seed: u64,
    /// Seed of the session scheduler (client order, `d_max`).
    pub schedule_seed: u64,
    /// The server's own encryption randomness (`[η]_s`, the paper's protocol): `None`
    /// (the default) seeds ChaCha20 with 256 bits from the operating system; `Some(seed)`
    /// is the insecure reproducible mode (`ChaCha20Rng::seed_from_u64(seed)`).
    pub rng_seed: Option<u64>,
    /// Learning rate `η` (encoded at `2^fe`): the largest rate of any session.
    pub learning_rate: f64,
    /// How each session's rate `η_s ≤ η` falls with the training progress
    /// ([`gelunet_protocol::learning_rate`]; the coordinator applies it, default constant).
    pub lr_schedule: LearningRateSchedule,
    /// Mini-batch size `B`.
    pub batch_size: usize,
    /// Gradient mask the clients must use.
    pub mask: MaskMode,
    /// Client order, session length and the bound check.
    pub policy: SessionPolicy,
    /// Insecure switches.
    pub insecure: InsecureOptions,
    /// Pack values into ciphertexts ([`gelunet_protocol::packing`]): the samples of a
    /// mini-batch per activation and error ciphertext, several parameters per masked or
    /// final update ciphertext. On by default; `false` runs the unpacked protocol (one
    /// value per ciphertext). Exact either way.
    pub packing: bool,
    /// The protocol: v2 (the default; the server never holds a true weight) or the
    /// paper's form (`docs/DESIGN.md` "Protocol v2").
    pub protocol: Protocol,
}

impl ServerConfig {
    /// A configuration with the defaults of docs/DESIGN.md: default scales, statistical mask
    /// (`σ = 128`), round-robin clients, random `d_max` within the bound, everything
    /// secure.
    pub fn new(spec: ModelSpec, learning_rate: f64, batch_size: usize) -> Self {
        Self {
            spec,
            scales: Scales::default(),
            model_seed: 0,
            schedule_seed: 1,
            rng_seed: None,
            learning_rate,
            lr_schedule: LearningRateSchedule::Constant,
            batch_size,
            mask: MaskMode::default(),
            policy: SessionPolicy::default(),
            insecure: InsecureOptions::default(),
            packing: true,
            protocol: Protocol::V2,
        }
    }
}

/// Largest number of samples in one inference request ([`Server::infer`]).
pub const MAX_INFER_SAMPLES: u32 = 1 << 16;

/// Index of a registered client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// Masked parameters of one layer: `w~ = w − R^w`, `b~ = b − R^b` (mod `N_c`, centered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedLayer {
    /// `W~`, `m × n`.
    pub w: Array2<BigInt>,
    /// `b~`, length `m`.
    pub b: Array1<BigInt>,
}

/// Decrypted masked updates `D = η·Δ + r` of one layer, as the server saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptedUpdate {
    /// `D` for the weights, `m × n`.
    pub w: Array2<BigInt>,
    /// `D` for the biases, length `m`.
    pub b: Array1<BigInt>,
}

/// Where a session stands: the layer of the awaited forward or backward request, or the
/// awaited masked or final update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Forward(u32),
    Backward(u32),
    Update,
}

/// The active session: its client, plan, position and the masked weights `w~, b~`.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) client: usize,
    pub(crate) iterations: u32,
    pub(crate) iteration: u32,
    pub(crate) phase: Phase,
    pub(crate) masked: Vec<MaskedLayer>,
    /// The session's learning rate `η_s` at `2^fe`.
    pub(crate) eta: i128,
}

/// What a session ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Alg. 5 applied; the model changed.
    Completed {
        /// Session id.
        session: u64,
        /// Client.
        client: ClientId,
        /// Iterations run.
        iterations: u32,
    },
    /// Rolled back to `w^I, b^I`.
    Abandoned {
        /// Session id.
        session: u64,
        /// Client.
        client: ClientId,
    },
}

/// What a protocol v2 server holds between sessions: `(v, ν_v, W~ = W_v − P_v)`, and the
/// model once the clients released it (`docs/DESIGN.md` "Protocol v2").
#[derive(Clone, Debug)]
pub(crate) struct V2State {
    pub(crate) params: V2Params,
    pub(crate) version: ModelVersion,
    /// `W~ = W_v − P_v`, signed integers of about `λ` bits.
    pub(crate) masked: Vec<MaskedLayer>,
    /// The released model `W_v` and its version.
    pub(crate) released: Option<(u64, FixedModel)>,
}

/// The server role (see the module docs).
pub struct Server {
    pub(crate) config: ServerConfig,
    /// `(PK_s, SK_s)`: the paper's protocol only.
    pub(crate) key: Option<PrivateKey>,
    /// Protocol v2's state (`None` for the paper's protocol).
    pub(crate) v2: Option<V2State>,
    /// `η` at `2^fe`.
    pub(crate) eta: i128,
    /// The true model (`w^I, b^I` during a session).
    pub(crate) model: FixedModel,
    /// `PK_c` of every registered client, by [`ClientId`].
    pub(crate) clients: Vec<PublicKey>,
    pub(crate) scheduler: Option<Scheduler>,
    pub(crate) next_session: u64,
    pub(crate) session: Option<Session>,
    /// The server's encryption randomness (`[η]_s`).
    pub(crate) rng: ChaCha20Rng,
    pub(crate) last_update: Option<Vec<DecryptedUpdate>>,
    pub(crate) history: Vec<SessionOutcome>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("spec", &self.config.spec)
            .field("key", &self.key.as_ref().map(PrivateKey::public_key))
            .field("protocol", &self.config.protocol)
            .field("clients", &self.clients.len())
            .field("session", &self.session.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

pub(crate) fn check_key_size(bits: u64, allow_test: bool, needed: u64) -> Result<()> {
    if bits < MIN_KEY_BITS && !allow_test {
        return Err(ServerError::InsecureKey { bits });
    }
    if bits < needed {
        return Err(ServerError::KeyTooSmall { bits, needed });
    }
    Ok(())
}

/// `a` as big integers.
pub(crate) fn to_big(a: &Array2<i128>) -> Array2<BigInt> {
    a.mapv(BigInt::from)
}

/// `w~ = w` for every layer (`R = 0`, or `P_0 = 0`).
pub(crate) fn masked_copy(model: &FixedModel) -> Vec<MaskedLayer> {
    model
        .layers
        .iter()
        .map(|l| MaskedLayer {
            w: to_big(&l.w),
            b: l.b.mapv(BigInt::from),
        })
        .collect()
}

impl Server {
    /// A server with its key pair; initializes the model from `config.model_seed`.
    ///
    /// # Errors
    /// [`ServerError::Protocol`] for an invalid spec, scales or learning rate;
    /// [`ServerError::InsecureKey`] / [`ServerError::KeyTooSmall`] for the key;
    /// [`ServerError::Config`] for an insecure mask without permission or a batch of 0;
    /// [`gelunet_protocol::Error::SessionBound`] if the policy breaks the session bound
    /// (docs/DESIGN.md) without `insecure_allow_bound_violation`.
    pub fn new(config: ServerConfig, key: impl Into<Option<PrivateKey>>) -> Result<Self> {
        let key = key.into();
        config.spec.validate()?;
        config.scales.validate()?;
        let eta = config
            .scales
            .encode(ValueKind::LearningRate, config.learning_rate)?;
        config.scales.check_learning_rate(eta)?;
        config.lr_schedule.validate()?;
        if config.mask.is_insecure() && !config.insecure.allow_unmasked_gradients {
            return Err(ServerError::Config {
                reason: "MaskMode::InsecureNone needs insecure.allow_unmasked_gradients".into(),
            });
        }
        if let MaskMode::Statistical { sigma } = config.mask {
            if sigma < 40 {
                return Err(ServerError::Config {
                    reason: format!("statistical mask with sigma = {sigma} < 40"),
                });
            }
        }
        let key = match config.protocol {
            Protocol::Paper => {
                let key = key.ok_or_else(|| ServerError::Config {
                    reason: "the paper's protocol needs the server's key pair".into(),
                })?;
                check_key_size(
                    key.public_key().bits(),
                    config.insecure.allow_test_keys,
                    config.mask.min_key_bits(&config.scales),
                )?;
                Some(key)
            }
            // v2 has no server key pair for training: a key given is not kept.
            Protocol::V2 => {
                match config.mask {
                    MaskMode::Statistical { sigma } if sigma >= MIN_SIGMA => {}
                    _ => {
                        return Err(ServerError::Config {
                            reason: format!(
                                "protocol v2 needs the statistical mask with sigma >= {MIN_SIGMA}"
                            ),
                        })
                    }
                }
                None
            }
        };
        // Checks the bound now (with one client) so that a bad configuration fails early.
        Scheduler::new(config.policy, &config.spec, config.batch_size, 1, 0)?;
        let model = FixedModel::init(&config.spec, &config.scales, config.model_seed)?;
        let rng = match config.rng_seed {
            Some(seed) => ChaCha20Rng::seed_from_u64(seed),
            None => gelunet_protocol::randomness::os_rng(),
        };
        let v2 = match (config.protocol, config.mask) {
            (Protocol::V2, MaskMode::Statistical { sigma }) => Some(V2State {
                params: V2Params::new(ModelId::generate(), &config.scales, sigma, eta),
                // P_0 = 0: W~ = W_0, the server's own initialization.
                version: ModelVersion {
                    version: 0,
                    nonce: VersionNonce([0; 16]),
                },
                masked: masked_copy(&model),
                released: None,
            }),
            _ => None,
        };
        Ok(Self {
            config,
            key,
            v2,
            eta,
            model,
            clients: Vec::new(),
            scheduler: None,
            next_session: 1,
            session: None,
            rng,
            last_update: None,
            history: Vec::new(),
        })
    }

    /// A server holding `model` (e.g. a trained model loaded from a file, for
    /// [`Server::infer`]) instead of the seeded initialization; otherwise as
    /// [`Server::new`].
    ///
    /// # Errors
    /// As [`Server::new`]; [`ServerError::Config`] if the model's architecture is not
    /// `config.spec`; range errors if a parameter is outside the scales' ranges.
    pub fn with_model(
        config: ServerConfig,
        key: impl Into<Option<PrivateKey>>,
        model: FixedModel,
    ) -> Result<Self> {
        if model.spec != config.spec {
            return Err(ServerError::Config {
                reason: "the model's architecture differs from the configured one".into(),
            });
        }
        model.validate(&config.scales)?;
        let mut server = Self::new(config, key)?;
        if let Some(v2) = server.v2.as_mut() {
            // A model given in the clear (a released model file, for inference).
            v2.masked = masked_copy(&model);
            v2.released = Some((0, model.clone()));
        }
        server.model = model;
        Ok(server)
    }

    /// The handshake message for clients (version, spec, scales, mask, `B`, `PK_s`).
    pub fn hello(&self) -> ServerHello {
        ServerHello {
            version: PROTOCOL_VERSION,
            spec: self.config.spec.clone(),
            scales: self.config.scales,
            mask: self.config.mask,
            batch_size: self.config.batch_size as u32,
            server_key: self.key.as_ref().map(|k| PublicModulus {
                n: k.public_key().n().clone(),
            }),
            v2: self.v2.as_ref().map(|v| v.params),
            packing: self.config.packing,
        }
    }

    /// The sample packing of the sessions of a client with key `pk` (derived by both
    /// sides, [`sample_packing`]).
    pub fn sample_packing_for(&self, pk: &PublicKey) -> Packing {
        sample_packing(
            &self.config.spec,
            &self.config.scales,
            self.config.batch_size,
            pk.bits(),
            self.config.packing,
        )
    }

    /// The layout of masked updates ([`UpdatePacking::masked`]).
    pub fn masked_update_packing(&self) -> UpdatePacking {
        match &self.key {
            Some(k) => UpdatePacking::masked(
                self.config.mask,
                &self.config.scales,
                k.public_key().bits(),
                self.config.packing,
            ),
            None => UpdatePacking::NONE,
        }
    }

    /// The layout of final updates ([`UpdatePacking::final_update`]).
    pub fn final_update_packing(&self) -> UpdatePacking {
        match &self.key {
            Some(k) => UpdatePacking::final_update(
                &self.config.scales,
                k.public_key().bits(),
                self.config.packing,
            ),
            None => UpdatePacking::NONE,
        }
    }

    /// The version and the server key a hello names.
    pub(crate) fn check_hello(&self, hello: &ClientHello) -> Result<()> {
        ProtocolViolation::check_version(hello.version)?;
        if hello.server_key_id != self.key.as_ref().map(|k| k.public_key().id()) {
            return Err(ServerError::WrongServerKey);
        }
        Ok(())
    }

    /// The hello's client key, built with `PublicKey::from_n_for_run` (test-size keys only
    /// when allowed, in `hazmat` builds) and of at least `needed` bits.
    pub(crate) fn client_key(&self, hello: &ClientHello, needed: u64) -> Result<PublicKey> {
        let n = hello.client_key.n.clone();
        let allow = self.config.insecure.allow_test_keys;
        let pk = PublicKey::from_n_for_run(n, allow)?;
        check_key_size(pk.bits(), allow, needed)?;
        Ok(pk)
    }

    /// Registers a client from its hello; its key is built with
    /// `PublicKey::from_n_for_run` (test-size keys only when allowed, in `hazmat` builds).
    ///
    /// # Errors
    /// [`ServerError::Violation`] ([`ProtocolViolation::Version`]), [`ServerError::WrongServerKey`],
    /// [`ServerError::RegistrationClosed`] after the first session, key errors.
    pub fn register_client(&mut self, hello: &ClientHello) -> Result<ClientId> {
        self.check_hello(hello)?;
        if self.scheduler.is_some() {
            return Err(ServerError::RegistrationClosed);
        }
        let pk = self.client_key(hello, self.min_client_key_bits())?;
        self.clients.push(pk);
        Ok(ClientId(self.clients.len() - 1))
    }

    /// The smallest client modulus `N_c` this server registers, in bits: what the mask
    /// needs ([`MaskMode::min_key_bits`]) and, in protocol v2, `λ_b + 8` so that masked
    /// weights of about `λ_b` bits keep their sign modulo every `N_c`. A run checks it
    /// against its key size before generating keys.
    pub fn min_client_key_bits(&self) -> u64 {
        let needed = self.config.mask.min_key_bits(&self.config.scales);
        match &self.v2 {
            Some(v) => needed.max(u64::from(v.params.widths.bias_bits) + 8),
            None => needed,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// `PK_s` (the paper's protocol; `None` under v2).
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.key.as_ref().map(PrivateKey::public_key)
    }

    /// The protocol this server speaks.
    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    /// Protocol v2's public parameters (`None` for the paper's protocol).
    pub fn v2_params(&self) -> Option<V2Params> {
        self.v2.as_ref().map(|v| v.params)
    }

    /// Protocol v2: the current model version `(v, ν_v)`.
    pub fn model_version(&self) -> Option<ModelVersion> {
        self.v2.as_ref().map(|v| v.version)
    }

    /// Protocol v2: what the server holds between sessions, `W~ = W_v − P_v` (public to
    /// the server; never a true weight for `v ≥ 1`).
    pub fn masked_model(&self) -> Option<&[MaskedLayer]> {
        self.v2.as_ref().map(|v| v.masked.as_slice())
    }

    /// The model in the clear, for inference and model files: under the paper's protocol
    /// the true model (between sessions the current weights, `w^I, b^I` during one);
    /// under v2 the released model ([`Server::release`]).
    ///
    /// # Errors
    /// [`ServerError::NotReleased`] under v2 before a release.
    pub fn true_model(&self) -> Result<&FixedModel> {
        match &self.v2 {
            None => Ok(&self.model),
            Some(v) => v
                .released
                .as_ref()
                .map(|(_, m)| m)
                .ok_or(ServerError::NotReleased),
        }
    }

    /// `η` at `2^fe`: the run's rate, the largest of any session.
    pub fn learning_rate(&self) -> i128 {
        self.eta
    }

    /// The rate `η_s` at `2^fe` of a session that starts after `samples_done` of
    /// `samples_held` samples: [`ServerConfig::lr_schedule`]'s
    /// [`LearningRateSchedule::eta_at`] of `η` (docs/DESIGN.md "Learning-rate schedule").
    pub fn session_rate(&self, samples_done: u64, samples_held: u64) -> i128 {
        self.config
            .lr_schedule
            .eta_at(self.eta, samples_done, samples_held)
    }

    /// The active session's rate `η_s` at `2^fe` (the run's `η` between sessions).
    pub fn current_learning_rate(&self) -> i128 {
        self.session.as_ref().map_or(self.eta, |s| s.eta)
    }

    /// The model in the clear, if the server has it: [`Server::true_model`] as an option.
    pub fn model(&self) -> Option<&FixedModel> {
        self.true_model().ok()
    }

    /// The masked parameters `w~, b~` of the active session.
    pub fn masked_weights(&self) -> Option<&[MaskedLayer]> {
        self.session.as_ref().map(|s| s.masked.as_slice())
    }

    /// The decrypted values `D = η·Δ + r` of the last masked update applied (what the
    /// server learns from Alg. 3; under [`MaskMode::InsecureNone`] these are `η·Δ`, the
    /// hook of the gradient-inversion demo).
    pub fn last_decrypted_update(&self) -> Option<&[DecryptedUpdate]> {
        self.last_update.as_deref()
    }

    /// The active session's id and client.
    pub fn active_session(&self) -> Option<(u64, ClientId)> {
        self.session.as_ref().map(|s| (s.id, ClientId(s.client)))
    }

    /// Every finished session, in order.
    pub fn history(&self) -> &[SessionOutcome] {
        &self.history
    }

    /// Number of registered clients.
    pub fn num_clients(&self) -> usize {
        self.clients.len()
    }

    /// Starts the next session at the run's rate `η`: [`Server::start_session_at`]`(η)`.
    ///
    /// # Errors
    /// As [`Server::start_session_at`].
    pub fn start_session(&mut self) -> Result<(ClientId, ServerMessage)> {
        self.start_session_at(self.eta)
    }

    /// Starts the next session (client order and `d` from the seeded [`Scheduler`]) at the
    /// learning rate `eta` (`η_s` at `2^fe`, from the run's
    /// [`ServerConfig::lr_schedule`]): records `w^I, b^I`, sets `w~ = w`, encrypts `η_s`
    /// under `PK_s` (Alg. 2 line 1; the paper's protocol) or sends it in plaintext
    /// (protocol v2). Closes registration.
    ///
    /// # Errors
    /// [`ServerError::SessionActive`]; [`ServerError::Config`] with no clients or a rate
    /// outside `[1, η]`.
    pub fn start_session_at(&mut self, eta: i128) -> Result<(ClientId, ServerMessage)> {
        if let Some(s) = &self.session {
            return Err(ServerError::SessionActive { session: s.id });
        }
        if self.clients.is_empty() {
            return Err(ServerError::Config {
                reason: "no registered clients".into(),
            });
        }
        if !(1..=self.eta).contains(&eta) {
            return Err(ServerError::Config {
                reason: format!(
                    "session learning rate {eta} outside [1, {}] at 2^fe",
                    self.eta
                ),
            });
        }
        let eta_ct = match &self.key {
            Some(k) => Some(k.public_key().encrypt(&BigInt::from(eta), &mut self.rng)?),
            None => None,
        };
        let mut scheduler = match self.scheduler.take() {
            Some(s) => s,
            None => Scheduler::new(
                self.config.policy,
                &self.config.spec,
                self.config.batch_size,
                self.clients.len(),
                self.config.schedule_seed,
            )?,
        };
        let plan = scheduler.next_session();
        self.scheduler = Some(scheduler);
        let id = self.next_session;
        self.next_session += 1;
        let (masked, version) = match &self.v2 {
            // The session starts from W~ = W_v − P_v; the stored state is kept as it is
            // until the rollover, so an abandoned session restores it for free.
            Some(v) => (v.masked.clone(), Some(v.version)),
            None => (masked_copy(&self.model), None),
        };
        self.session = Some(Session {
            id,
            client: plan.client,
            iterations: plan.iterations,
            iteration: 0,
            phase: Phase::Forward(1),
            masked,
            eta,
        });
        Ok((
            ClientId(plan.client),
            ServerMessage::SessionStart(SessionStart {
                session: id,
                iterations: plan.iterations,
                eta: eta_ct,
                learning_rate: version.map(|_| eta),
                version,
            }),
        ))
    }

    /// Abandons the active session (client disconnect): the model stays `w^I, b^I`.
    /// Returns the session abandoned, if any.
    pub fn abandon_session(&mut self) -> Option<u64> {
        let s = self.session.take()?;
        self.history.push(SessionOutcome::Abandoned {
            session: s.id,
            client: ClientId(s.client),
        });
        Some(s.id)
    }

    /// Handles one message from client `from`; returns the answer, if any (none for
    /// `Abort` and `Error`). On error the state is unchanged; send
    /// [`ServerError::report`] back.
    ///
    /// # Errors
    /// [`ServerError::UnknownClient`] for an index that was never registered; otherwise
    /// [`ServerError::Violation`] for every fault of the message: out of turn, wrong
    /// client/session/iteration/layer, packing, counts, invalid ciphertexts or keys,
    /// decrypted values out of range ([`ProtocolViolation`]).
    pub fn handle(&mut self, from: ClientId, msg: &ClientMessage) -> Result<Option<ServerMessage>> {
        if from.0 >= self.clients.len() {
            return Err(ServerError::UnknownClient { client: from.0 });
        }
        self.dispatch(from, msg).map_err(ServerError::blame_peer)
    }

    /// Checks the turn and sends the message of a registered client to its algorithm:
    /// [`Server::forward`] (Alg. 1), [`Server::backward`] (Alg. 2),
    /// [`Server::masked_update`] (Alg. 3), [`Server::final_update`] (Alg. 5),
    /// [`Server::infer`].
    fn dispatch(&mut self, from: ClientId, msg: &ClientMessage) -> Result<Option<ServerMessage>> {
        if let ClientMessage::InferPrepare(_) | ClientMessage::InferMasked(_) = msg {
            // Preparations live with an inference connection (`crate::Preparations`).
            return Err(ProtocolViolation::OutOfTurn {
                expected:
                    "InferRequest (preprocessed inference is served on inference connections)"
                        .into(),
                found: msg.kind(),
            }
            .into());
        }
        if let ClientMessage::Infer(req) = msg {
            if let Some(s) = self.session.as_ref().filter(|s| s.client == from.0) {
                return Err(ProtocolViolation::OutOfTurn {
                    expected: expected_name(s),
                    found: msg.kind(),
                }
                .into());
            }
            return self
                .infer(&self.clients[from.0], req)
                .map(|r| Some(ServerMessage::Inferred(r)));
        }
        let Some(session) = self.session.as_ref() else {
            return Err(match msg {
                ClientMessage::Hello(_) => ProtocolViolation::OutOfTurn {
                    expected: "register_client".into(),
                    found: msg.kind(),
                }
                .into(),
                _ => ProtocolViolation::NoSession.into(),
            });
        };
        if from.0 != session.client {
            return Err(ProtocolViolation::WrongClient {
                expected: session.client,
                found: from.0,
            }
            .into());
        }
        match msg {
            ClientMessage::Forward(m) => self.forward(m).map(Some),
            ClientMessage::Backward(m) => self.backward(m).map(Some),
            ClientMessage::MaskedUpdate(m) if self.v2.is_none() => self.masked_update(m).map(Some),
            ClientMessage::FinalUpdate(m) if self.v2.is_none() => self.final_update(m).map(Some),
            ClientMessage::PlainUpdate(m) if self.v2.is_some() => self.plain_update(m).map(Some),
            ClientMessage::Rollover(m) if self.v2.is_some() => self.rollover(m).map(Some),
            ClientMessage::Abort(Abort { session: sid, .. }) => {
                check_session(session, *sid)?;
                self.abandon_session();
                Ok(None)
            }
            ClientMessage::Error(_) => Ok(None),
            ClientMessage::Hello(_)
            | ClientMessage::Infer(_)
            | ClientMessage::InferPrepare(_)
            | ClientMessage::InferMasked(_)
            | ClientMessage::MaskedUpdate(_)
            | ClientMessage::FinalUpdate(_)
            | ClientMessage::PlainUpdate(_)
            | ClientMessage::Rollover(_) => Err(ProtocolViolation::OutOfTurn {
                expected: expected_name(session),
                found: msg.kind(),
            }
            .into()),
        }
    }

    /// `SK_s` (the paper's protocol).
    ///
    /// # Errors
    /// [`ProtocolViolation::OutOfTurn`] under v2, which has none.
    pub(crate) fn paper_key(&self) -> Result<&PrivateKey> {
        self.key.as_ref().ok_or_else(|| {
            ProtocolViolation::OutOfTurn {
                expected: "a message of protocol v2".into(),
                found: "an update under the server key",
            }
            .into()
        })
    }

    /// The active session.
    ///
    /// # Errors
    /// [`ProtocolViolation::NoSession`].
    pub(crate) fn session(&self) -> Result<&Session> {
        self.session
            .as_ref()
            .ok_or(ServerError::Violation(ProtocolViolation::NoSession))
    }

    /// Checks the header of a forward or backward request against the session: session,
    /// iteration, turn (`want`'s kind), layer and the client's sample packing.
    ///
    /// # Errors
    /// The [`ProtocolViolation`] of the first check that fails.
    pub(crate) fn check_header(
        &self,
        found: &'static str,
        want: Phase,
        sid: u64,
        iteration: u32,
        layer: u32,
        packing: Packing,
    ) -> Result<&Session> {
        let s = self.session()?;
        check_session(s, sid)?;
        check_iteration(s, iteration)?;
        let ok = matches!(
            (s.phase, want),
            (Phase::Forward(_), Phase::Forward(_)) | (Phase::Backward(_), Phase::Backward(_))
        );
        if !ok {
            return Err(ProtocolViolation::OutOfTurn {
                expected: expected_name(s),
                found,
            }
            .into());
        }
        let expected_layer = match s.phase {
            Phase::Forward(l) | Phase::Backward(l) => l,
            Phase::Update => 0,
        };
        if layer != expected_layer {
            return Err(ProtocolViolation::WrongLayer {
                expected: expected_layer,
                found: layer,
            }
            .into());
        }
        if packing != self.sample_packing_for(&self.clients[s.client]) {
            return Err(ProtocolViolation::Packing { found: packing }.into());
        }
        Ok(s)
    }

    /// Checks that an update (masked if `last` is false, final if true) is the awaited
    /// message of the session.
    ///
    /// # Errors
    /// The [`ProtocolViolation`] of the first check that fails.
    pub(crate) fn check_update_turn(
        &self,
        sid: u64,
        iteration: u32,
        found: &'static str,
        last: bool,
    ) -> Result<&Session> {
        let s = self.session()?;
        check_session(s, sid)?;
        check_iteration(s, iteration)?;
        let is_last = s.iteration + 1 == s.iterations;
        if s.phase != Phase::Update || is_last != last {
            return Err(ProtocolViolation::OutOfTurn {
                expected: expected_name(s),
                found,
            }
            .into());
        }
        Ok(s)
    }

    /// Checks the layout, counts and validity of per-layer ciphertexts under `PK_s`, then
    /// decrypts them raw (`[0, N_s)`), all layers in one parallel pass (Alg. 3 and Alg. 5 on the server).
    ///
    /// # Errors
    /// [`ProtocolViolation::Packing`], [`ProtocolViolation::Shape`], ciphertext errors.
    pub(crate) fn decrypt_layers(
        &self,
        layers: &[LayerCiphertexts],
        found: UpdatePacking,
        expected: UpdatePacking,
    ) -> Result<Vec<(Vec<BigUint>, Vec<BigUint>)>> {
        if found.weights != expected.weights {
            return Err(ProtocolViolation::Packing {
                found: found.weights,
            }
            .into());
        }
        if found.biases != expected.biases {
            return Err(ProtocolViolation::Packing {
                found: found.biases,
            }
            .into());
        }
        let spec = &self.config.spec;
        expect_len("layers", spec.num_layers(), layers.len())?;
        let sk = self.paper_key()?;
        let pk = sk.public_key();
        for (i, l) in layers.iter().enumerate() {
            let (m, n) = spec.param_shape(i + 1);
            let (cw, cb) = expected.counts(m, n);
            expect_len("weight updates", cw, l.weights.len())?;
            expect_len("bias updates", cb, l.biases.len())?;
            pk.validate_all(&l.weights)?;
            pk.validate_all(&l.biases)?;
        }
        let all: Vec<Ciphertext> = layers
            .iter()
            .flat_map(|l| l.weights.iter().chain(l.biases.iter()))
            .cloned()
            .collect();
        // The client chose these ciphertexts: decrypt them blinded (docs/DESIGN.md "Side
        // channels"), with blinding factors from the operating system.
        let mut blind = gelunet_protocol::randomness::os_rng();
        let mut plain = sk
            .decrypt_raw_blinded_batch(&all, &mut blind)
            .map_err(ServerError::from)?
            .into_iter();
        Ok(layers
            .iter()
            .map(|l| {
                let w: Vec<BigUint> = plain.by_ref().take(l.weights.len()).collect();
                let b: Vec<BigUint> = plain.by_ref().take(l.biases.len()).collect();
                (w, b)
            })
            .collect())
    }
}

/// The message is for the active session.
pub(crate) fn check_session(s: &Session, found: u64) -> Result<()> {
    if s.id != found {
        return Err(ProtocolViolation::WrongSession {
            expected: s.id,
            found,
        }
        .into());
    }
    Ok(())
}

/// The message is for the current iteration.
pub(crate) fn check_iteration(s: &Session, found: u32) -> Result<()> {
    if s.iteration != found {
        return Err(ProtocolViolation::WrongIteration {
            expected: s.iteration,
            found,
        }
        .into());
    }
    Ok(())
}

/// `found` values where `expected` are due.
pub(crate) fn expect_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    Ok(ProtocolViolation::check_len(what, expected, found)?)
}

/// What the session waits for, for out-of-turn errors.
pub(crate) fn expected_name(s: &Session) -> String {
    match s.phase {
        Phase::Forward(l) => format!("ForwardRequest for layer {l}"),
        Phase::Backward(l) => format!("BackwardRequest for layer {l}"),
        Phase::Update if s.iteration + 1 == s.iterations => "FinalUpdate".into(),
        Phase::Update => "MaskedUpdate".into(),
    }
}
