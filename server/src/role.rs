//! The server's role in GELU-Net as a state machine with no I/O.
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
//! forward   [z~_i]_c = W~_i ⊗ [a_{i−1}]_c ⊕ b~_i         PublicKey::matvec + add_plain
//! backward  [q~]_c   = [δ_i]_cᵀ ⊗ W~_i                    PublicKey::vecmat
//! masked    D = Dec_s([D]_s) = η·Δ + r,  w~ ← w~ − D (mod N_c)     every iteration but the last
//! final     w^F = w^I − η·ΔW^c,  b^F = b^I − η·Δb^c                after the last iteration
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
//! # Encrypted inference ([`Server::infer`])
//!
//! At any time, for any client key, the server answers [`InferRequest`]s with the true
//! model (between sessions the current weights, during one `w^I, b^I`), no masks:
//! `[z_i] = W_i ⊗ [a_{i−1}] ⊕ b_i`. For requests of one sample per group it can *row-pack*
//! the `m` outputs of a sample into `⌈m·β/(|N_c| − 2)⌉` ciphertexts by Horner
//! (`acc ← acc^{2^β} ⊕ [z_j + 2^(β−1)]`, `β` squarings and one multiplication per row), so
//! the client decrypts one ciphertext per layer instead of `m`. Note what inference gives
//! the client: the pre-activations `z_1 = W_1·x + b_1` in clear for inputs of its choice,
//! i.e. `m_1` linear equations in the weights per query; `n_0 + 1` queries determine
//! `W_1, b_1` (model extraction, paper §4.1). The d_max bound protects training sessions,
//! not inference; the server refuses inference from the client of the active session so
//! that a session's view stays within the bound, and an operator who cares must limit
//! queries per client.
//!
//! # Validation
//!
//! Every incoming message is checked (client, session, iteration, layer, turn, packing,
//! counts, ciphertext validity under the expected key, decrypted ranges) before anything
//! changes; an error leaves the server exactly as it was. An abandoned session (client
//! abort or disconnect, [`Server::abandon_session`]) leaves `w^I, b^I` in place: nothing
//! of the session reaches the true model before Alg. 5.

use std::fmt;

use gelunet_paillier::{BigInt, BigUint, Ciphertext, PrivateKey, PublicKey, MIN_KEY_BITS};
use gelunet_protocol::mask::{reduce_centered, MaskTarget};
use gelunet_protocol::messages::{
    Abort, BackwardRequest, BackwardResponse, ClientHello, ClientMessage, FinalUpdate,
    ForwardRequest, ForwardResponse, InferRequest, InferResponse, LayerCiphertexts, MaskedUpdate,
    Packing, PublicModulus, ServerHello, ServerMessage, SessionEnd, SessionStart, UpdateApplied,
    UpdatePacking, PROTOCOL_VERSION,
};
use gelunet_protocol::packing::{
    group_sizes, inference_row_packing, sample_packing, sample_slot_bits, slot_sum,
    slots_per_plaintext, unpack_final, unpack_masked,
};
use gelunet_protocol::{
    FixedModel, Gradients, LayerGradients, MaskMode, ModelSpec, Scales, Scheduler, SessionPolicy,
    ValueKind,
};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

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
    /// Seed of the server's encryption randomness (`[η]_s`).
    pub rng_seed: u64,
    /// Learning rate `η` (encoded at `2^fe`).
    pub learning_rate: f64,
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
            rng_seed: 2,
            learning_rate,
            batch_size,
            mask: MaskMode::default(),
            policy: SessionPolicy::default(),
            insecure: InsecureOptions::default(),
            packing: true,
        }
    }
}

/// Largest number of samples in one inference request.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Forward(u32),
    Backward(u32),
    Update,
}

#[derive(Clone, Debug)]
struct Session {
    id: u64,
    client: usize,
    iterations: u32,
    iteration: u32,
    phase: Phase,
    masked: Vec<MaskedLayer>,
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

/// The server role (see the module docs).
pub struct Server {
    config: ServerConfig,
    key: PrivateKey,
    eta: i128,
    model: FixedModel,
    clients: Vec<PublicKey>,
    scheduler: Option<Scheduler>,
    next_session: u64,
    session: Option<Session>,
    rng: ChaCha20Rng,
    last_update: Option<Vec<DecryptedUpdate>>,
    history: Vec<SessionOutcome>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("spec", &self.config.spec)
            .field("key", &self.key.public_key())
            .field("clients", &self.clients.len())
            .field("session", &self.session.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

fn check_key_size(bits: u64, allow_test: bool, needed: u64) -> Result<()> {
    if bits < MIN_KEY_BITS && !allow_test {
        return Err(ServerError::InsecureKey { bits });
    }
    if bits < needed {
        return Err(ServerError::KeyTooSmall { bits, needed });
    }
    Ok(())
}

fn to_big(a: &Array2<i128>) -> Array2<BigInt> {
    a.mapv(BigInt::from)
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
    pub fn new(config: ServerConfig, key: PrivateKey) -> Result<Self> {
        config.spec.validate()?;
        config.scales.validate()?;
        let eta = config
            .scales
            .encode(ValueKind::LearningRate, config.learning_rate)?;
        config.scales.check_learning_rate(eta)?;
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
        check_key_size(
            key.public_key().bits(),
            config.insecure.allow_test_keys,
            config.mask.min_key_bits(&config.scales),
        )?;
        // Checks the bound now (with one client) so that a bad configuration fails early.
        Scheduler::new(config.policy, &config.spec, config.batch_size, 1, 0)?;
        let model = FixedModel::init(&config.spec, &config.scales, config.model_seed)?;
        let rng = ChaCha20Rng::seed_from_u64(config.rng_seed);
        Ok(Self {
            config,
            key,
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
    pub fn with_model(config: ServerConfig, key: PrivateKey, model: FixedModel) -> Result<Self> {
        if model.spec != config.spec {
            return Err(ServerError::Config {
                reason: "the model's architecture differs from the configured one".into(),
            });
        }
        model.validate(&config.scales)?;
        let mut server = Self::new(config, key)?;
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
            server_key: PublicModulus {
                n: self.key.public_key().n().clone(),
            },
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
        UpdatePacking::masked(
            self.config.mask,
            &self.config.scales,
            self.key.public_key().bits(),
            self.config.packing,
        )
    }

    /// The layout of final updates ([`UpdatePacking::final_update`]).
    pub fn final_update_packing(&self) -> UpdatePacking {
        UpdatePacking::final_update(
            &self.config.scales,
            self.key.public_key().bits(),
            self.config.packing,
        )
    }

    /// Checks a client hello for inference only (version, server key, key size) and
    /// returns the client's key, without registering it: inference works at any time,
    /// also after registration closed ([`Server::infer`]).
    ///
    /// # Errors
    /// As [`Server::register_client`], except registration being closed.
    pub fn inference_key(&self, hello: &ClientHello) -> Result<PublicKey> {
        self.check_hello(hello)?;
        let needed = u64::from(
            self.config
                .scales
                .max_bits(ValueKind::PreActivation)
                .max(self.config.scales.max_bits(ValueKind::Product)),
        ) + 2;
        self.client_key(hello, needed)
    }

    /// The version and the server key a hello names.
    fn check_hello(&self, hello: &ClientHello) -> Result<()> {
        if hello.version != PROTOCOL_VERSION {
            return Err(ServerError::Version {
                expected: PROTOCOL_VERSION,
                found: hello.version,
            });
        }
        if hello.server_key_id != self.key.public_key().id() {
            return Err(ServerError::WrongServerKey);
        }
        Ok(())
    }

    /// The hello's client key, built with `PublicKey::from_n_for_run` (test-size keys only
    /// when allowed, in `hazmat` builds) and of at least `needed` bits.
    fn client_key(&self, hello: &ClientHello, needed: u64) -> Result<PublicKey> {
        let n = hello.client_key.n.clone();
        let allow = self.config.insecure.allow_test_keys;
        let pk = PublicKey::from_n_for_run(n, allow)?;
        check_key_size(pk.bits(), allow, needed)?;
        Ok(pk)
    }

    /// Encrypted inference (paper Alg. 1 with the true model, no masks) for a client with
    /// key `pk`: `[z_i] = W_i ⊗ [a_{i−1}] ⊕ b_i` per group of samples, row-packed on
    /// request (see the module docs) with slots as narrow as the weights allow
    /// ([`gelunet_protocol::packing::inference_row_packing`]) through
    /// [`PublicKey::matvec_row_packed`]. Stateless: any layer, any time, in any order.
    ///
    /// # Errors
    /// [`ServerError::UnknownLayer`], [`ServerError::Shape`] (sample count, number of
    /// ciphertexts), [`ServerError::Packing`] for a layout that is not the derived one,
    /// ciphertext errors.
    pub fn infer(&self, pk: &PublicKey, req: &InferRequest) -> Result<InferResponse> {
        let spec = &self.config.spec;
        let scales = &self.config.scales;
        let layers = spec.num_layers() as u32;
        if req.layer == 0 || req.layer > layers {
            return Err(ServerError::UnknownLayer {
                layer: req.layer,
                layers,
            });
        }
        if req.samples == 0 || req.samples > MAX_INFER_SAMPLES {
            return Err(ServerError::Shape {
                what: "inference samples (1..=65536)",
                expected: 1,
                found: req.samples as usize,
            });
        }
        let (width, fan_in) = spec.layer_shape(req.layer as usize);
        let p = req.packing;
        let packed = p != Packing::NONE;
        if packed {
            let beta = sample_slot_bits(spec, scales);
            let fits = slots_per_plaintext(pk.bits(), beta);
            if p.slot_bits != beta
                || p.samples_per_ciphertext < 2
                || p.samples_per_ciphertext > fits
            {
                return Err(ServerError::Packing { found: p });
            }
        }
        let layer = &self.model.layers[req.layer as usize - 1];
        let biases = layer.b.as_slice().unwrap_or(&[]);
        expect_len("biases", width, biases.len())?;
        let rows = if req.row_packing {
            if packed {
                return Err(ServerError::Packing { found: p });
            }
            inference_row_packing(
                spec,
                scales,
                req.layer as usize,
                layer.w.view(),
                biases,
                pk.bits(),
            )
        } else {
            Packing::NONE
        };
        let groups = group_sizes(req.samples as usize, p.samples_per_ciphertext);
        expect_len("activations", fan_in * groups.len(), req.activations.len())?;
        pk.validate_all(&req.activations)?;
        let w = to_big(&layer.w);
        let n_c = pk.n();
        let mut out = Vec::new();
        for (g, &size) in groups.iter().enumerate() {
            let cts = &req.activations[g * fan_in..(g + 1) * fan_in];
            let s = BigInt::from(slot_sum(size, p.slot_bits));
            if rows == Packing::NONE {
                let z = pk.matvec(w.view(), cts)?;
                let z = z
                    .par_iter()
                    .zip(biases.par_iter())
                    .map(|(c, &b)| {
                        let plain = reduce_centered(&(BigInt::from(b) * &s), n_c);
                        pk.add_plain(c, &plain)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                out.extend(z);
            } else {
                // One sample: slots hold z_j + 2^(β−1) ≥ 0 (see `row_packing`).
                let shift = BigInt::from(1u8) << (rows.slot_bits - 1);
                let offsets: Vec<BigInt> = biases
                    .iter()
                    .map(|&b| BigInt::from(b) * &s + &shift)
                    .collect();
                out.extend(pk.matvec_row_packed(
                    w.view(),
                    cts,
                    &offsets,
                    rows.slot_bits,
                    (rows.samples_per_ciphertext as usize).max(1),
                )?);
            }
        }
        Ok(InferResponse {
            request_id: req.request_id,
            layer: req.layer,
            samples: req.samples,
            packing: p,
            row_packing: rows,
            pre_activations: out,
        })
    }

    /// Registers a client from its hello; its key is built with
    /// `PublicKey::from_n_for_run` (test-size keys only when allowed, in `hazmat` builds).
    ///
    /// # Errors
    /// [`ServerError::Version`], [`ServerError::WrongServerKey`],
    /// [`ServerError::RegistrationClosed`] after the first session, key errors.
    pub fn register_client(&mut self, hello: &ClientHello) -> Result<ClientId> {
        self.check_hello(hello)?;
        if self.scheduler.is_some() {
            return Err(ServerError::RegistrationClosed);
        }
        let pk = self.client_key(hello, self.config.mask.min_key_bits(&self.config.scales))?;
        self.clients.push(pk);
        Ok(ClientId(self.clients.len() - 1))
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// `PK_s`.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `η` at `2^fe`.
    pub fn learning_rate(&self) -> i128 {
        self.eta
    }

    /// The true model: the current weights between sessions, `w^I, b^I` during one.
    pub fn model(&self) -> &FixedModel {
        &self.model
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

    /// Starts the next session (client order and `d` from the seeded [`Scheduler`]):
    /// records `w^I, b^I`, sets `w~ = w`, encrypts `η` under `PK_s` (Alg. 2 line 1).
    /// Closes registration.
    ///
    /// # Errors
    /// [`ServerError::SessionActive`]; [`ServerError::Config`] with no clients.
    pub fn start_session(&mut self) -> Result<(ClientId, ServerMessage)> {
        if let Some(s) = &self.session {
            return Err(ServerError::SessionActive { session: s.id });
        }
        if self.clients.is_empty() {
            return Err(ServerError::Config {
                reason: "no registered clients".into(),
            });
        }
        let eta_ct = self
            .key
            .public_key()
            .encrypt(&BigInt::from(self.eta), &mut self.rng)?;
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
        let masked = self
            .model
            .layers
            .iter()
            .map(|l| MaskedLayer {
                w: to_big(&l.w),
                b: l.b.mapv(BigInt::from),
            })
            .collect();
        self.session = Some(Session {
            id,
            client: plan.client,
            iterations: plan.iterations,
            iteration: 0,
            phase: Phase::Forward(1),
            masked,
        });
        Ok((
            ClientId(plan.client),
            ServerMessage::SessionStart(SessionStart {
                session: id,
                iterations: plan.iterations,
                eta: eta_ct,
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
    /// See [`ServerError`]: out-of-turn, wrong client/session/iteration/layer, packing,
    /// counts, invalid ciphertexts or keys, decrypted values out of range.
    pub fn handle(&mut self, from: ClientId, msg: &ClientMessage) -> Result<Option<ServerMessage>> {
        if from.0 >= self.clients.len() {
            return Err(ServerError::UnknownClient { client: from.0 });
        }
        if let ClientMessage::Infer(req) = msg {
            if let Some(s) = self.session.as_ref().filter(|s| s.client == from.0) {
                return Err(ServerError::OutOfTurn {
                    expected: expected_name(s),
                    found: msg.kind(),
                });
            }
            return self
                .infer(&self.clients[from.0], req)
                .map(|r| Some(ServerMessage::Inferred(r)));
        }
        let Some(session) = self.session.as_ref() else {
            return Err(match msg {
                ClientMessage::Hello(_) => ServerError::OutOfTurn {
                    expected: "register_client".into(),
                    found: msg.kind(),
                },
                _ => ServerError::NoSession,
            });
        };
        if from.0 != session.client {
            return Err(ServerError::WrongClient {
                expected: session.client,
                found: from.0,
            });
        }
        match msg {
            ClientMessage::Forward(m) => self.forward(m).map(Some),
            ClientMessage::Backward(m) => self.backward(m).map(Some),
            ClientMessage::MaskedUpdate(m) => self.masked_update(m).map(Some),
            ClientMessage::FinalUpdate(m) => self.final_update(m).map(Some),
            ClientMessage::Abort(Abort { session: sid, .. }) => {
                check_session(session, *sid)?;
                self.abandon_session();
                Ok(None)
            }
            ClientMessage::Error(_) => Ok(None),
            ClientMessage::Hello(_) | ClientMessage::Infer(_) => Err(ServerError::OutOfTurn {
                expected: expected_name(session),
                found: msg.kind(),
            }),
        }
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or(ServerError::NoSession)
    }

    fn check_header(
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
            return Err(ServerError::OutOfTurn {
                expected: expected_name(s),
                found,
            });
        }
        let expected_layer = match s.phase {
            Phase::Forward(l) | Phase::Backward(l) => l,
            Phase::Update => 0,
        };
        if layer != expected_layer {
            return Err(ServerError::WrongLayer {
                expected: expected_layer,
                found: layer,
            });
        }
        if packing != self.sample_packing_for(&self.clients[s.client]) {
            return Err(ServerError::Packing { found: packing });
        }
        Ok(s)
    }

    /// Alg. 1 line 5: `[z~] = W~ ⊗ [a] ⊕ b~` per sample.
    fn forward(&mut self, m: &ForwardRequest) -> Result<ServerMessage> {
        let s = self.check_header(
            "ForwardRequest",
            Phase::Forward(0),
            m.session,
            m.iteration,
            m.layer,
            m.packing,
        )?;
        let layer = m.layer as usize;
        let (width, fan_in) = self.config.spec.layer_shape(layer);
        let groups = group_sizes(self.config.batch_size, m.packing.samples_per_ciphertext);
        expect_len("activations", fan_in * groups.len(), m.activations.len())?;
        let pk = &self.clients[s.client];
        pk.validate_all(&m.activations)?;
        let ml = &s.masked[layer - 1];
        let n_c = pk.n();
        let mut out = Vec::with_capacity(width * groups.len());
        for (g, &size) in groups.iter().enumerate() {
            let cts = &m.activations[g * fan_in..(g + 1) * fan_in];
            let z = pk.matvec(ml.w.view(), cts)?;
            // b~_j · Σ_s 2^(β s), reduced mod N_c (b~_j itself without packing).
            let s_sum = BigInt::from(slot_sum(size, m.packing.slot_bits));
            let biased = z
                .par_iter()
                .zip(ml.b.to_vec().par_iter())
                .map(|(c, bj)| {
                    let plain = if m.packing == Packing::NONE {
                        bj.clone()
                    } else {
                        reduce_centered(&(bj * &s_sum), n_c)
                    };
                    pk.add_plain(c, &plain)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            out.extend(biased);
        }
        let l_count = self.config.spec.num_layers() as u32;
        let next = if m.layer < l_count {
            Phase::Forward(m.layer + 1)
        } else if l_count >= 2 {
            Phase::Backward(l_count)
        } else {
            Phase::Update
        };
        if let Some(s) = self.session.as_mut() {
            s.phase = next;
        }
        Ok(ServerMessage::Forward(ForwardResponse {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            packing: m.packing,
            pre_activations: out,
        }))
    }

    /// Alg. 2 line 6: `[q~] = [δ]ᵀ ⊗ W~` per sample.
    fn backward(&mut self, m: &BackwardRequest) -> Result<ServerMessage> {
        let s = self.check_header(
            "BackwardRequest",
            Phase::Backward(0),
            m.session,
            m.iteration,
            m.layer,
            m.packing,
        )?;
        let layer = m.layer as usize;
        let (width, fan_in) = self.config.spec.layer_shape(layer);
        let groups = group_sizes(self.config.batch_size, m.packing.samples_per_ciphertext).len();
        expect_len("errors", width * groups, m.errors.len())?;
        let pk = &self.clients[s.client];
        pk.validate_all(&m.errors)?;
        let ml = &s.masked[layer - 1];
        let mut out = Vec::with_capacity(fan_in * groups);
        for group in m.errors.chunks(width) {
            out.extend(pk.vecmat(group, ml.w.view())?);
        }
        let next = if m.layer > 2 {
            Phase::Backward(m.layer - 1)
        } else {
            Phase::Update
        };
        if let Some(s) = self.session.as_mut() {
            s.phase = next;
        }
        Ok(ServerMessage::Backward(BackwardResponse {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            packing: m.packing,
            products: out,
        }))
    }

    fn check_update_turn(
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
            return Err(ServerError::OutOfTurn {
                expected: expected_name(s),
                found,
            });
        }
        Ok(s)
    }

    /// Checks the layout, counts and validity of per-layer ciphertexts under `PK_s`, then
    /// decrypts them raw (`[0, N_s)`), all layers in one parallel pass.
    fn decrypt_layers(
        &self,
        layers: &[LayerCiphertexts],
        found: UpdatePacking,
        expected: UpdatePacking,
    ) -> Result<Vec<(Vec<BigUint>, Vec<BigUint>)>> {
        if found.weights != expected.weights {
            return Err(ServerError::Packing {
                found: found.weights,
            });
        }
        if found.biases != expected.biases {
            return Err(ServerError::Packing {
                found: found.biases,
            });
        }
        let spec = &self.config.spec;
        expect_len("layers", spec.num_layers(), layers.len())?;
        let pk = self.key.public_key();
        for (i, l) in layers.iter().enumerate() {
            let (m, n) = spec.layer_shape(i + 1);
            let (cw, cb) = expected.counts(m, n);
            expect_len("weight updates", cw, l.weights.len())?;
            expect_len("bias updates", cb, l.biases.len())?;
            pk.validate_all(&l.weights)?;
            pk.validate_all(&l.biases)?;
        }
        let all: Vec<&Ciphertext> = layers
            .iter()
            .flat_map(|l| l.weights.iter().chain(l.biases.iter()))
            .collect();
        let mut plain = all
            .par_iter()
            .map(|c| self.key.decrypt_raw(c).map_err(ServerError::from))
            .collect::<Result<Vec<BigUint>>>()?
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

    /// Alg. 3 (server side): `D = Dec_s([D]_s)`, `w~ ← w~ − D (mod N_c)`.
    fn masked_update(&mut self, m: &MaskedUpdate) -> Result<ServerMessage> {
        let s = self.check_update_turn(m.session, m.iteration, "MaskedUpdate", false)?;
        let n_c = self.clients[s.client].n().clone();
        let layout = self.masked_update_packing();
        let raw = self.decrypt_layers(&m.layers, m.packing, layout)?;
        let n_s = self.key.public_key().n();
        let scales = &self.config.scales;
        let gw = MaskMode::g_bits(scales, MaskTarget::Weight);
        let gb = MaskMode::g_bits(scales, MaskTarget::Bias);
        let mode = self.config.mask;
        let mut new_masked = Vec::with_capacity(raw.len());
        let mut seen = Vec::with_capacity(raw.len());
        for ((rw, rb), ml) in raw.iter().zip(&s.masked) {
            let dw = unpack_masked(mode, gw, n_s, layout.weights, rw, ml.w.len())?;
            let db = unpack_masked(mode, gb, n_s, layout.biases, rb, ml.b.len())?;
            let dw = Array2::from_shape_vec(ml.w.dim(), dw).map_err(|_| ServerError::Shape {
                what: "weight updates",
                expected: ml.w.len(),
                found: rw.len(),
            })?;
            let db = Array1::from(db);
            let w = ndarray::Zip::from(&ml.w)
                .and(&dw)
                .map_collect(|w, d| reduce_centered(&(w - d), &n_c));
            let b = ndarray::Zip::from(&ml.b)
                .and(&db)
                .map_collect(|b, d| reduce_centered(&(b - d), &n_c));
            new_masked.push(MaskedLayer { w, b });
            seen.push(DecryptedUpdate { w: dw, b: db });
        }
        let s = self.session.as_mut().ok_or(ServerError::NoSession)?;
        s.masked = new_masked;
        s.iteration += 1;
        s.phase = Phase::Forward(1);
        self.last_update = Some(seen);
        Ok(ServerMessage::UpdateApplied(UpdateApplied {
            session: m.session,
            iteration: m.iteration,
        }))
    }

    /// Alg. 5: `w^F = w^I − η·ΔW^c`, `b^F = b^I − η·Δb^c`.
    fn final_update(&mut self, m: &FinalUpdate) -> Result<ServerMessage> {
        let s = self.session()?;
        let iteration = s.iteration;
        self.check_update_turn(m.session, iteration, "FinalUpdate", true)?;
        let layout = self.final_update_packing();
        let raw = self.decrypt_layers(&m.layers, m.packing, layout)?;
        let pk = self.key.public_key();
        let scales = &self.config.scales;
        let mut grads = Gradients::zeros(&self.config.spec);
        for ((rw, rb), g) in raw.iter().zip(grads.layers.iter_mut()) {
            let LayerGradients { w, b } = g;
            if layout.weights == Packing::NONE {
                for (o, d) in w.iter_mut().zip(rw) {
                    *o = scales.check_big(ValueKind::WeightGradient, &pk.decode(d))?;
                }
            } else {
                let v = unpack_final(
                    scales,
                    ValueKind::WeightGradient,
                    layout.weights,
                    rw,
                    w.len(),
                )?;
                w.iter_mut().zip(v).for_each(|(o, v)| *o = v);
            }
            if layout.biases == Packing::NONE {
                for (o, d) in b.iter_mut().zip(rb) {
                    *o = scales.check_big(ValueKind::BiasGradient, &pk.decode(d))?;
                }
            } else {
                let v = unpack_final(scales, ValueKind::BiasGradient, layout.biases, rb, b.len())?;
                b.iter_mut().zip(v).for_each(|(o, v)| *o = v);
            }
        }
        let mut model = self.model.clone();
        model.apply_update(scales, self.eta, &grads)?;
        self.model = model;
        let s = self.session.take().ok_or(ServerError::NoSession)?;
        self.history.push(SessionOutcome::Completed {
            session: s.id,
            client: ClientId(s.client),
            iterations: s.iterations,
        });
        Ok(ServerMessage::SessionEnd(SessionEnd {
            session: s.id,
            iterations: s.iterations,
        }))
    }
}

fn check_session(s: &Session, found: u64) -> Result<()> {
    if s.id != found {
        return Err(ServerError::WrongSession {
            expected: s.id,
            found,
        });
    }
    Ok(())
}

fn check_iteration(s: &Session, found: u32) -> Result<()> {
    if s.iteration != found {
        return Err(ServerError::WrongIteration {
            expected: s.iteration,
            found,
        });
    }
    Ok(())
}

fn expect_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(ServerError::Shape {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

fn expected_name(s: &Session) -> String {
    match s.phase {
        Phase::Forward(l) => format!("ForwardRequest for layer {l}"),
        Phase::Backward(l) => format!("BackwardRequest for layer {l}"),
        Phase::Update if s.iteration + 1 == s.iterations => "FinalUpdate".into(),
        Phase::Update => "MaskedUpdate".into(),
    }
}
