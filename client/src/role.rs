//! The client's role in GELU-Net as a state machine with no I/O: the [`Client`] struct,
//! its configuration, the handshake, session start and end, and the dispatch of server
//! messages ([`Client::handle`]) to the algorithms, one file each.
//!
//! # What the client holds
//!
//! Its private data share (features quantized at `2^fa`, labels), its key pair
//! `(PK_c, SK_c)`, the server's `PK_s`, and during a session the *ledger* `R^w_i, R^b_i`
//! (the accumulated masks, mod `N_c`; paper `r^wc, r^bc`; [`crate::ledger`]) and the
//! gradient accumulators `ΔW^c_i, Δb^c_i` (paper Alg. 1 input).
//!
//! # What it computes (paper Alg. 1–5, docs/DESIGN.md "One iteration")
//!
//! ```text
//! forward   send [a_{i−1}]_c; receive [z~_i]_c                           crate::forward
//!           z_i = z~_i + R^w_i·a_{i−1} + R^b_i (mod N_c)                Alg. 4, crate::unmask
//!           a_i = f(z_i)  (softmax + δ_L = y − t at the output)
//! backward  send [δ_i]_c; receive [q~]_c                                 crate::backward
//!           q = q~ + δ_i·R^w_i (mod N_c),  δ_{i−1} = q ⊙ f'(z_{i−1})     Alg. 4, Alg. 2
//! gradients Δw_i = δ_iᵀ a_{i−1}, Δb_i = Σ δ_i (mini-batch of B), ΔW^c += Δw
//! masked    [D]_s = ([η]_s ⊗ Δ) ⊕ Enc_s(r),  R ← R + r (mod N_c)          Alg. 3, crate::masked_update
//! final     send [ΔW^c]_s, [Δb^c]_s                                        Alg. 5, crate::final_update
//! ```
//!
//! # Packing ([`gelunet_protocol::packing`], when the server's hello asks for it)
//!
//! Activations and errors of the `B` samples of a mini-batch share one ciphertext per
//! feature (`P_k = Σ_s a_{s,k}·2^(β s)`); the masks are removed mod `N_c` before
//! unpacking ([`crate::unmask`]). Masked updates pack `k` parameters per server-key
//! ciphertext ([`crate::masked_update`]); final updates pack `ΔW^c + 2^max_bits`
//! ([`crate::final_update`]).
//!
//! The client encrypts under its own key with [`PrivateKey::encrypt_crt_batch`] (the
//! obfuscator computed mod `p²` and `q²`: the same ciphertexts as public-key encryption
//! with the same randomness, about three times faster).
//!
//! # Determinism and secrets
//!
//! Every secret random value (masks, encryption obfuscators, decryption blinding factors)
//! and the mini-batch order come from ChaCha20 streams seeded with 256 bits from the
//! operating system ([`Randomness::Os`], the default of [`ClientConfig::randomness`]). In
//! the insecure reproducible mode ([`Randomness::InsecureReproducible`]) the masks,
//! obfuscators and batch order derive from a public 64-bit seed instead (tests, the
//! exactness replay; the masks are then known to the server); [`ClientConfig::batch_seed`]
//! makes only the batch order public and reproducible (`gelunet train`: it never affects
//! the masks). Blinding factors come from the operating system in every mode
//! (docs/DESIGN.md "Protocol v2", "Side channels"). The ledger and the private key never appear in `Debug`; the
//! ledger is overwritten with zeros on drop (best effort, [`crate::ledger`]). Faults of
//! the server's messages are [`ProtocolViolation`]s ([`ClientError::Violation`]).

use std::fmt;

use gelunet_paillier::{
    BigUint, Ciphertext, PreparedCiphertext, PrivateKey, PublicKey, MIN_KEY_BITS,
    SUPPORTED_KEY_BITS,
};
use gelunet_protocol::data::sampler_seed;
use gelunet_protocol::group_key::GroupKey;
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::messages::{
    Abort, ClientHello, ClientMessage, Packing, PublicModulus, ServerHello, ServerMessage,
    SessionEnd, SessionStart, UpdateApplied, UpdatePacking, PROTOCOL_VERSION,
};
use gelunet_protocol::packing::{pack_samples, sample_packing};
use gelunet_protocol::randomness::{os_rng, Randomness};
use gelunet_protocol::v2::{ModelVersion, V2Params, MIN_SIGMA};
use gelunet_protocol::version_mask::VersionMasks;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{
    BatchSampler, Dataset, Gradients, LayerGradients, MaskMode, ModelSpec, Scales, ValueKind,
};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{ClientError, Result};
use crate::ledger::Ledger;
pub use crate::ledger::LedgerCopy;
use crate::masked_update::eta_powers;

/// What a client accepts from a server, whatever the server proposes (a malicious server
/// must not be able to lower it): checked at the handshake and at every session start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Smallest statistical mask width `σ` accepted (default [`MIN_SIGMA`] = 128).
    pub min_sigma: u32,
    /// Largest model accepted, in parameters `Σ m_i(n_i + 1)` (default `2^24`).
    pub max_parameters: usize,
    /// Largest mini-batch accepted (default 4096).
    pub max_batch: u32,
    /// Accept the paper's protocol (default true: its leak is the server's gain, not a
    /// risk to the client's decryption key; a client that wants v2 only sets false).
    pub accept_paper_protocol: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            min_sigma: MIN_SIGMA,
            max_parameters: 1 << 24,
            max_batch: 4096,
            accept_paper_protocol: true,
        }
    }
}

/// The client's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// What the client accepts from the server ([`ClientPolicy`]).
    pub policy: ClientPolicy,
    /// Accept sessions of more than `min fan-in` samples (`d·B` above the bound of
    /// docs/DESIGN.md "Sessions and the d_max bound"; insecure, for the attack
    /// benchmarks only).
    pub allow_bound_violation: bool,
    /// Where the client's secret randomness comes from (masks, encryption obfuscators;
    /// and the mini-batch order unless [`ClientConfig::batch_seed`] is set): the operating
    /// system by default. [`Randomness::InsecureReproducible`] `{ seed }` derives the role's
    /// stream as `ChaCha20Rng::seed_from_u64(seed ^ 0x6372_7970_746f_2121)` and the batch
    /// order through [`sampler_seed`]`(seed)`: reproducible bit for bit, and the masks are
    /// known to anyone who knows `seed` (the server included).
    pub randomness: Randomness,
    /// A public seed of the mini-batch order alone (through [`sampler_seed`]), whatever
    /// [`ClientConfig::randomness`] says: lets a plaintext reference replay the client's
    /// mini-batches while the masks stay secret (`gelunet train`). `None`: the order comes
    /// from [`ClientConfig::randomness`].
    pub batch_seed: Option<u64>,
    /// Accept a server key below 2048 bits (tests, examples).
    pub allow_test_keys: bool,
    /// Accept [`MaskMode::InsecureNone`] (gradient-inversion demo only).
    pub allow_unmasked_gradients: bool,
    /// Record the decrypted pre-activations and their inputs ([`Client::transcript`]): the
    /// view a client has for the model-extraction attack of paper §4.1; and the unmasked
    /// backward products with their errors ([`Client::backward_transcript`]).
    pub record_transcript: bool,
}

/// What the client sees of one layer in one iteration (recorded only with
/// [`ClientConfig::record_transcript`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Session id.
    pub session: u64,
    /// Iteration within the session.
    pub iteration: u32,
    /// Layer `i`.
    pub layer: u32,
    /// `a_{i−1}`, `B × n_{i−1}`, at `2^fa`.
    pub inputs: Array2<i128>,
    /// `z_i`, `B × n_i`, at `2^(fa+fw)`, unmasked.
    pub pre_activations: Array2<i128>,
}

/// What the client sees of one backward product in one iteration (recorded only with
/// [`ClientConfig::record_transcript`]): Alg. 2 line 7 after the masks are removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackwardEntry {
    /// Session id.
    pub session: u64,
    /// Iteration within the session.
    pub iteration: u32,
    /// Layer `i` whose weights multiplied the errors (`i ≥ 2`; `L` for the output layer).
    pub layer: u32,
    /// `δ_i` as sent, `B × m_i`, at `2^fd` (for `i = L` the softmax errors `y − t`).
    pub errors: Array2<i128>,
    /// `q = δ_i·W_i`, `B × n_i`, at `2^(fd+fw)`, unmasked.
    pub products: Array2<i128>,
}

/// What the handshake fixed: the server's spec, scales, mask, batch size and key, the
/// quantized data share and the layouts.
pub(crate) struct Setup {
    pub(crate) spec: ModelSpec,
    pub(crate) scales: Scales,
    pub(crate) mask: MaskMode,
    pub(crate) batch: usize,
    /// `PK_s` (the paper's protocol; `None` under v2).
    pub(crate) server_key: Option<PublicKey>,
    /// Protocol v2's parameters (`None` for the paper's protocol).
    pub(crate) v2: Option<V2Params>,
    pub(crate) data: Dataset,
    /// The sample packing of this client's sessions.
    pub(crate) packing: Packing,
    /// The layouts of masked and final updates.
    pub(crate) masked_packing: UpdatePacking,
    pub(crate) final_packing: UpdatePacking,
    /// The linear map of each weight layer `1..=L` (index `i − 1`).
    pub(crate) layers: Vec<LinearLayer>,
}

impl Setup {
    /// The linear map of layer `i ∈ 1..=L`.
    ///
    /// # Errors
    /// [`ProtocolViolation::Shape`] for a layer outside the spec (a checked header never
    /// has one).
    pub(crate) fn layer(&self, i: usize) -> Result<&LinearLayer> {
        layer_at(&self.layers, i)
    }
}

/// Layer `i ∈ 1..=L` of `layers` (index `i − 1`).
///
/// # Errors
/// [`ProtocolViolation::Shape`] for `i` outside `1..=L`.
pub(crate) fn layer_at(layers: &[LinearLayer], i: usize) -> Result<&LinearLayer> {
    i.checked_sub(1).and_then(|j| layers.get(j)).ok_or_else(|| {
        ProtocolViolation::Shape {
            what: "layers",
            expected: layers.len(),
            found: i,
        }
        .into()
    })
}

/// What the session waits for from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Awaiting {
    Forward(u32),
    Backward(u32),
    UpdateApplied,
    SessionEnd,
}

/// The state of the current iteration (Alg. 1 and 2 on one mini-batch).
#[derive(Clone)]
pub(crate) struct Step {
    pub(crate) labels: Vec<usize>,
    /// `a_0 … a_{k}` computed so far.
    pub(crate) a: Vec<Array2<i128>>,
    /// `z_1 … z_k` computed so far.
    pub(crate) z: Vec<Array2<i128>>,
    /// The error of the layer whose backward product is awaited.
    pub(crate) delta: Option<Array2<i128>>,
    /// Gradients of layers `1..=L` (filled from the top).
    pub(crate) grads: Vec<Option<LayerGradients>>,
}

/// The active session: plan, position, `[η]_s` and its powers, ledger, accumulators.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) iterations: u32,
    pub(crate) iteration: u32,
    /// `[η]_s` (the paper's protocol; `None` under v2).
    pub(crate) eta: Option<PreparedCiphertext>,
    /// The session's public rate `η_s` at `2^fe` (protocol v2; `0` under the paper's,
    /// where `[η]_s` hides it).
    pub(crate) learning_rate: i128,
    /// The model version the session started from (protocol v2).
    pub(crate) version: Option<ModelVersion>,
    /// The version the session's rollover creates, once sent (protocol v2).
    pub(crate) next_version: Option<ModelVersion>,
    /// `E_i = [η]_s^{2^(β i)}` for the packed weight and bias updates (empty when the
    /// masked updates are not packed or the session has one iteration).
    pub(crate) eta_powers: (Vec<Ciphertext>, Vec<Ciphertext>),
    pub(crate) ledger: Ledger,
    pub(crate) acc: Gradients,
    pub(crate) last: Option<Gradients>,
    pub(crate) sampler_at_start: BatchSampler,
    pub(crate) step: Step,
    pub(crate) awaiting: Awaiting,
}

/// The client role (see the module docs).
pub struct Client {
    pub(crate) config: ClientConfig,
    pub(crate) key: PrivateKey,
    pub(crate) features: Array2<f64>,
    pub(crate) labels: Vec<usize>,
    pub(crate) rng: ChaCha20Rng,
    pub(crate) setup: Option<Setup>,
    pub(crate) sampler: Option<BatchSampler>,
    pub(crate) session: Option<Session>,
    pub(crate) transcript: Vec<TranscriptEntry>,
    pub(crate) backward_transcript: Vec<BackwardEntry>,
    /// The clients' group key (protocol v2; never sent, never in `Debug`).
    pub(crate) group_key: Option<GroupKey>,
    /// The latest model version this client knows of (protocol v2): the one its last
    /// session started from, or the one its last completed session created.
    pub(crate) last_version: Option<ModelVersion>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No private data, no key material, no ledger.
        f.debug_struct("Client")
            .field("key", self.key.public_key())
            .field("samples", &self.features.nrows())
            .field("handshake", &self.setup.is_some())
            .field("session", &self.session.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

/// A random stream of `randomness`: `ChaCha20Rng::seed_from_u64(seed ^ tweak)` in the
/// insecure reproducible mode, 256 bits from the operating system otherwise.
pub(crate) fn stream(randomness: Randomness, tweak: u64) -> ChaCha20Rng {
    match randomness {
        Randomness::InsecureReproducible { seed } => randomness.rng_with_seed(seed ^ tweak),
        Randomness::Os => os_rng(),
    }
}

/// `found` values where `expected` are due.
pub(crate) fn expect_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    Ok(ProtocolViolation::check_len(what, expected, found)?)
}

/// A key of `bits` bits is allowed and holds `needed` bits.
pub(crate) fn check_key_size(bits: u64, allow_test: bool, needed: u64) -> Result<()> {
    if bits < MIN_KEY_BITS && !allow_test {
        return Err(ClientError::InsecureKey { bits });
    }
    if bits >= MIN_KEY_BITS && !SUPPORTED_KEY_BITS.contains(&bits) {
        return Err(ClientError::Policy {
            reason: format!("{bits}-bit keys (this client accepts 2048, 3072 and 4096 bits)"),
        });
    }
    if bits < needed {
        return Err(ClientError::KeyTooSmall { bits, needed });
    }
    Ok(())
}

impl Client {
    /// A client with its key pair and private data (`features`: `samples × n_0`, real
    /// values, quantized at the handshake; `labels` in `0..classes`).
    ///
    /// # Errors
    /// [`ClientError::Data`] if `labels.len()` differs from the number of rows or there
    /// are no samples; [`ClientError::InsecureKey`] for a test key without permission.
    pub fn new(
        config: ClientConfig,
        key: PrivateKey,
        features: Array2<f64>,
        labels: Vec<usize>,
    ) -> Result<Self> {
        if labels.len() != features.nrows() || labels.is_empty() {
            return Err(ClientError::Data {
                reason: format!("{} labels for {} samples", labels.len(), features.nrows()),
            });
        }
        check_key_size(key.public_key().bits(), config.allow_test_keys, 0)?;
        let rng = stream(config.randomness, 0x6372_7970_746f_2121);
        Ok(Self {
            config,
            key,
            features,
            labels,
            rng,
            setup: None,
            sampler: None,
            session: None,
            transcript: Vec::new(),
            backward_transcript: Vec::new(),
            group_key: None,
            last_version: None,
        })
    }

    /// Gives the client the group key `k` of protocol v2 (`docs/DESIGN.md` "Protocol
    /// v2"): shared by the data owners out of band, never by the server.
    pub fn set_group_key(&mut self, key: GroupKey) {
        self.group_key = Some(key);
    }

    /// The protocol the server's handshake set up (`None` before it).
    pub fn protocol(&self) -> Option<gelunet_protocol::v2::Protocol> {
        self.setup.as_ref().map(|s| {
            if s.v2.is_some() {
                gelunet_protocol::v2::Protocol::V2
            } else {
                gelunet_protocol::v2::Protocol::Paper
            }
        })
    }

    /// Whether the client holds a group key.
    pub fn has_group_key(&self) -> bool {
        self.group_key.is_some()
    }

    /// The seed `s_v` that releases model version `version` (protocol v2,
    /// `docs/DESIGN.md` "Release"): `HKDF(k; model_id ‖ v ‖ ν_v)`, never `k` itself. The
    /// version and its nonce are public (the server names them when it asks).
    ///
    /// # Errors
    /// [`ClientError::NoGroupKey`]; [`ProtocolViolation::NoHandshake`] before a v2
    /// handshake.
    pub fn release_seed(
        &self,
        version: ModelVersion,
    ) -> Result<gelunet_protocol::group_key::VersionSeed> {
        let k = self.group_key.as_ref().ok_or(ClientError::NoGroupKey)?;
        let p = self
            .setup
            .as_ref()
            .and_then(|s| s.v2)
            .ok_or(ClientError::Violation(ProtocolViolation::NoHandshake))?;
        Ok(k.version_seed(p.model_id, version.version, version.nonce))
    }

    /// The latest model version this client knows of (protocol v2): the one its last
    /// session started from, or the one its last completed session created.
    pub fn last_version(&self) -> Option<ModelVersion> {
        self.last_version
    }

    /// `PK_c`.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The active session's id.
    pub fn active_session(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// The recorded transcript (empty unless [`ClientConfig::record_transcript`]).
    pub fn transcript(&self) -> &[TranscriptEntry] {
        &self.transcript
    }

    /// The recorded backward products (empty unless [`ClientConfig::record_transcript`]):
    /// the view a client has for extracting the output layer from `q = δ_L·W_L`.
    pub fn backward_transcript(&self) -> &[BackwardEntry] {
        &self.backward_transcript
    }

    /// The quantized data share, after the handshake.
    pub fn dataset(&self) -> Option<&Dataset> {
        self.setup.as_ref().map(|s| &s.data)
    }

    /// The session accumulators `ΔW^c, Δb^c` so far (the client's own gradients).
    pub fn session_gradients(&self) -> Option<&Gradients> {
        self.session.as_ref().map(|s| &s.acc)
    }

    /// The gradients of the last completed iteration of the active session.
    pub fn last_gradients(&self) -> Option<&Gradients> {
        self.session.as_ref().and_then(|s| s.last.as_ref())
    }

    /// A copy of the secret ledger `(R^w_i, R^b_i)` mod `N_c`. Only for tests of the mask
    /// bookkeeping (Alg. 5 invariant); revealing it to the server unmasks the weights.
    pub fn ledger_insecure_for_tests(&self) -> Option<LedgerCopy> {
        self.session
            .as_ref()
            .map(|s| (s.ledger.w.clone(), s.ledger.b.clone()))
    }

    /// Answers the server's hello: checks version, spec, scales, mask and key sizes,
    /// quantizes the data share and seeds the mini-batch sampler.
    ///
    /// # Errors
    /// [`ProtocolViolation::Version`], key errors, [`ClientError::InsecureMask`],
    /// [`ClientError::Data`] if the data does not fit the spec, range errors of the
    /// quantization. State unchanged on error.
    pub fn handle_hello(&mut self, hello: &ServerHello) -> Result<ClientMessage> {
        ProtocolViolation::check_version(hello.version)?;
        hello.spec.validate()?;
        hello.scales.validate()?;
        if hello.mask.is_insecure() && !self.config.allow_unmasked_gradients {
            return Err(ClientError::InsecureMask);
        }
        self.check_policy(hello)?;
        let allow = self.config.allow_test_keys;
        let needed = hello.mask.min_key_bits(&hello.scales);
        let server_key = match (&hello.server_key, hello.v2) {
            (Some(pm), None) => {
                if !self.config.policy.accept_paper_protocol {
                    return Err(ClientError::Policy {
                        reason: "this client takes part in protocol v2 only".into(),
                    });
                }
                let pk = PublicKey::from_n_for_run(pm.n.clone(), allow)?;
                check_key_size(pk.bits(), allow, needed)?;
                Some(pk)
            }
            (None, Some(p)) => {
                if self.group_key.is_none() {
                    return Err(ClientError::NoGroupKey);
                }
                if !p.is_consistent(&hello.scales)
                    || hello.mask != (MaskMode::Statistical { sigma: p.sigma })
                {
                    return Err(ClientError::Policy {
                        reason: "protocol v2 parameters that do not follow from the scales".into(),
                    });
                }
                hello.scales.check_learning_rate(p.eta)?;
                None
            }
            _ => {
                return Err(ClientError::Policy {
                    reason: "a hello with both or neither of a server key and v2 parameters".into(),
                })
            }
        };
        let needed = match hello.v2 {
            // Masked weights of about `λ_b` bits must keep their sign modulo `N_c`.
            Some(p) => needed.max(u64::from(p.widths.bias_bits) + 8),
            None => needed,
        };
        check_key_size(self.key.public_key().bits(), allow, needed)?;
        if self.features.ncols() != hello.spec.inputs() {
            return Err(ClientError::Data {
                reason: format!(
                    "{} features, the model has {} inputs",
                    self.features.ncols(),
                    hello.spec.inputs()
                ),
            });
        }
        let data = Dataset::quantize(
            self.features.view(),
            &self.labels,
            hello.spec.classes(),
            &hello.scales,
        )?;
        let batch = hello.batch_size as usize;
        let order = match (self.config.batch_seed, self.config.randomness) {
            (Some(seed), _) | (None, Randomness::InsecureReproducible { seed }) => {
                ChaCha20Rng::seed_from_u64(sampler_seed(seed))
            }
            (None, Randomness::Os) => os_rng(),
        };
        let sampler = BatchSampler::from_rng(data.len(), batch, order)?;
        let server_key_id = server_key.as_ref().map(PublicKey::id);
        let packing = sample_packing(
            &hello.spec,
            &hello.scales,
            batch,
            self.key.public_key().bits(),
            hello.packing,
        );
        let (masked_packing, final_packing) = match &server_key {
            Some(pk) => (
                UpdatePacking::masked(hello.mask, &hello.scales, pk.bits(), hello.packing),
                UpdatePacking::final_update(&hello.scales, pk.bits(), hello.packing),
            ),
            None => (UpdatePacking::NONE, UpdatePacking::NONE),
        };
        let layers = (1..=hello.spec.num_layers())
            .map(|i| LinearLayer::of(&hello.spec, i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.setup = Some(Setup {
            layers,
            spec: hello.spec.clone(),
            scales: hello.scales,
            mask: hello.mask,
            batch,
            server_key,
            v2: hello.v2,
            data,
            packing,
            masked_packing,
            final_packing,
        });
        self.sampler = Some(sampler);
        Ok(ClientMessage::Hello(ClientHello {
            version: PROTOCOL_VERSION,
            server_key_id,
            client_key: PublicModulus {
                n: self.key.public_key().n().clone(),
            },
        }))
    }

    /// The server's proposal against this client's [`ClientPolicy`]: `σ`, model size,
    /// batch size.
    fn check_policy(&self, hello: &ServerHello) -> Result<()> {
        let policy = &self.config.policy;
        if let MaskMode::Statistical { sigma } = hello.mask {
            if sigma < policy.min_sigma {
                return Err(ClientError::Policy {
                    reason: format!(
                        "sigma {sigma} is below the {} bits this client requires",
                        policy.min_sigma
                    ),
                });
            }
        }
        let params = hello.spec.num_parameters();
        if params > policy.max_parameters {
            return Err(ClientError::Policy {
                reason: format!(
                    "a model of {params} parameters (this client accepts at most {})",
                    policy.max_parameters
                ),
            });
        }
        if hello.batch_size == 0 || hello.batch_size > policy.max_batch {
            return Err(ClientError::Policy {
                reason: format!(
                    "a mini-batch of {} (this client accepts 1 to {})",
                    hello.batch_size, policy.max_batch
                ),
            });
        }
        Ok(())
    }

    /// Abandons the active session on our side (e.g. the connection dropped): the ledger
    /// and accumulators are discarded and the session's mini-batches will be drawn again.
    /// Returns the session abandoned, if any.
    pub fn abandon_session(&mut self) -> Option<u64> {
        let s = self.session.take()?;
        self.sampler = Some(s.sampler_at_start.clone());
        Some(s.id)
    }

    /// Fast-forwards the mini-batch sampler seeded by [`Client::handle_hello`] by the
    /// `batches` this client drew in its completed sessions (the server's count in
    /// `ToClient::Registered`), so that a reconnected client, or one whose server resumed
    /// from a checkpoint, draws the batches of an uninterrupted run (docs/DESIGN.md
    /// "Checkpoint and resume"). Call it once per handshake, outside a session.
    ///
    /// # Errors
    /// [`ProtocolViolation::NoHandshake`] before a hello; [`ProtocolViolation::OutOfTurn`]
    /// during a session.
    pub fn resume_batches(&mut self, batches: u64) -> Result<()> {
        if self.session.is_some() {
            return Err(ProtocolViolation::OutOfTurn {
                expected: "no session".into(),
                found: "Registered",
            }
            .into());
        }
        let sampler = self
            .sampler
            .as_mut()
            .ok_or(ProtocolViolation::NoHandshake)?;
        sampler.skip(batches);
        Ok(())
    }

    /// Abandons the active session and returns the [`Abort`] message for the server.
    pub fn abort(&mut self, reason: &str) -> Option<ClientMessage> {
        let session = self.abandon_session()?;
        Some(ClientMessage::Abort(Abort {
            session,
            reason: reason.into(),
        }))
    }

    /// Handles one server message; returns the answer, if any. On error the state is
    /// unchanged and [`ClientError::report`] goes back, except for the errors that
    /// [`ClientError::ends_connection`]: they abandon the session (and the shell closes
    /// the connection).
    ///
    /// # Errors
    /// See [`ClientError`]: out-of-turn, wrong session/iteration/layer, packing, counts,
    /// invalid ciphertexts or keys, values out of fixed-point range.
    pub fn handle(&mut self, msg: &ServerMessage) -> Result<Option<ClientMessage>> {
        if let ServerMessage::Hello(h) = msg {
            // Refusals of the hello are about the server's configuration or our own data,
            // not faults of a session message.
            return self.handle_hello(h).map(Some);
        }
        let result = self.dispatch(msg).map_err(ClientError::blame_peer);
        if let Err(e) = &result {
            if e.ends_connection() {
                // No second chance: the session is over on our side (and the shell
                // closes the connection), so refusals cannot be probed value by value.
                self.abandon_session();
            }
        }
        result
    }

    /// Sends a server message to its algorithm: [`Client::forward`] (Alg. 1 and 4),
    /// [`Client::backward`] (Alg. 2 and 4), the session's start, next iteration and end.
    fn dispatch(&mut self, msg: &ServerMessage) -> Result<Option<ClientMessage>> {
        match msg {
            ServerMessage::Hello(h) => self.handle_hello(h).map(Some),
            ServerMessage::SessionStart(m) => self.start(m).map(Some),
            ServerMessage::Forward(m) => self.forward(m).map(Some),
            ServerMessage::Backward(m) => self.backward(m).map(Some),
            ServerMessage::UpdateApplied(m) => self.update_applied(m).map(Some),
            ServerMessage::SessionEnd(m) => self.end(m).map(|()| None),
            ServerMessage::Abort(Abort { session, .. }) => {
                if self.active_session() == Some(*session) {
                    self.abandon_session();
                }
                Ok(None)
            }
            ServerMessage::Inferred(_) | ServerMessage::InferPrepared(_) => {
                Err(ProtocolViolation::OutOfTurn {
                    expected: "a training message (inference answers go to an InferenceClient)"
                        .into(),
                    found: msg.kind(),
                }
                .into())
            }
            ServerMessage::Error(_) => Ok(None),
        }
    }

    /// The sample packing of this client's sessions (after the handshake).
    pub fn packing(&self) -> Option<Packing> {
        self.setup.as_ref().map(|s| s.packing)
    }

    /// What the handshake fixed.
    ///
    /// # Errors
    /// [`ProtocolViolation::NoHandshake`] before the handshake.
    pub(crate) fn setup(&self) -> Result<&Setup> {
        self.setup
            .as_ref()
            .ok_or(ProtocolViolation::NoHandshake.into())
    }

    /// Checks that a message for `sid`, `iteration` of kind `want` is what the session
    /// waits for.
    ///
    /// # Errors
    /// The [`ProtocolViolation`] of the first check that fails.
    pub(crate) fn session_in_turn(
        &self,
        sid: u64,
        iteration: u32,
        want: Awaiting,
        found: &'static str,
    ) -> Result<&Session> {
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        if s.id != sid {
            return Err(ProtocolViolation::WrongSession {
                expected: s.id,
                found: sid,
            }
            .into());
        }
        if s.iteration != iteration {
            return Err(ProtocolViolation::WrongIteration {
                expected: s.iteration,
                found: iteration,
            }
            .into());
        }
        let same_kind = matches!(
            (s.awaiting, want),
            (Awaiting::Forward(_), Awaiting::Forward(_))
                | (Awaiting::Backward(_), Awaiting::Backward(_))
                | (Awaiting::UpdateApplied, Awaiting::UpdateApplied)
                | (Awaiting::SessionEnd, Awaiting::SessionEnd)
        );
        if !same_kind {
            return Err(ProtocolViolation::OutOfTurn {
                expected: format!("{:?}", s.awaiting),
                found,
            }
            .into());
        }
        match (s.awaiting, want) {
            (Awaiting::Forward(a), Awaiting::Forward(b))
            | (Awaiting::Backward(a), Awaiting::Backward(b))
                if a != b =>
            {
                Err(ProtocolViolation::WrongLayer {
                    expected: a,
                    found: b,
                }
                .into())
            }
            _ => Ok(s),
        }
    }

    /// Packs a `B × n` matrix by groups of samples and encrypts it under `PK_c` (with the
    /// CRT obfuscator: the client owns the key).
    pub(crate) fn encrypt_own(
        &self,
        rng: &mut ChaCha20Rng,
        v: &Array2<i128>,
    ) -> Result<Vec<Ciphertext>> {
        let packing = self.setup()?.packing;
        let (ms, _) = pack_samples(v.view(), packing);
        Ok(self.key.encrypt_crt_batch(&ms, rng)?)
    }

    /// Decrypts own ciphertexts, as the server computed them, to raw plaintexts in
    /// `[0, N_c)` after validation: blinded ([`PrivateKey::decrypt_raw_blinded_batch`], the
    /// exponentiations' input independent of the server's choice; docs/DESIGN.md "Side
    /// channels"), one blinding factor per ciphertext from a ChaCha20 stream seeded with
    /// 256 bits from the operating system in every mode (the factors never change a
    /// plaintext, so reproducible runs stay reproducible).
    pub(crate) fn decrypt_own(&self, cs: &[Ciphertext]) -> Result<Vec<BigUint>> {
        self.key.public_key().validate_all(cs)?;
        Ok(self.key.decrypt_raw_blinded_batch(cs, &mut os_rng())?)
    }

    /// Alg. 2 line 1 (client side): a session begins with `[η]_s`; precomputes the powers
    /// of `[η]_s` for packed masked updates ([`crate::masked_update`]) and sends the first
    /// forward request of iteration 0.
    ///
    /// # Errors
    /// [`ProtocolViolation::SessionActive`], [`ProtocolViolation::EmptySession`],
    /// ciphertext errors for `[η]_s`.
    fn start(&mut self, m: &SessionStart) -> Result<ClientMessage> {
        if let Some(s) = &self.session {
            return Err(ProtocolViolation::SessionActive { session: s.id }.into());
        }
        let setup = self.setup()?;
        if m.iterations == 0 {
            return Err(ProtocolViolation::EmptySession.into());
        }
        let samples = u64::from(m.iterations) * setup.batch as u64;
        let bound = setup.spec.min_fan_in() as u64;
        if samples > bound && !self.config.allow_bound_violation {
            return Err(ClientError::Policy {
                reason: format!(
                    "a session of {samples} samples (the bound is the smallest fan-in, {bound})"
                ),
            });
        }
        let rate = match (setup.v2, m.learning_rate) {
            (Some(p), Some(r)) if (1..=p.eta).contains(&r) => r,
            // A rate above the handshake's η would break the masks' bound; none, or
            // one under the paper's protocol, is a message of another protocol.
            (Some(_), Some(_)) => {
                return Err(ProtocolViolation::Range {
                    kind: Some(ValueKind::LearningRate),
                }
                .into())
            }
            (None, None) => 0,
            _ => {
                return Err(ProtocolViolation::OutOfTurn {
                    expected: "a SessionStart of the handshake's protocol".into(),
                    found: "SessionStart",
                }
                .into())
            }
        };
        let (eta, eta_powers, ledger) = match (&setup.server_key, setup.v2, &m.eta, m.version) {
            (Some(pk_s), None, Some(eta_ct), None) => {
                pk_s.validate(eta_ct)?;
                let eta = pk_s.prepare(eta_ct)?;
                let eta_powers = if m.iterations >= 2 {
                    let (w, b) = (setup.masked_packing.weights, setup.masked_packing.biases);
                    let (pw, pb) = rayon::join(
                        || eta_powers(pk_s, eta_ct, w),
                        || eta_powers(pk_s, eta_ct, b),
                    );
                    (pw?, pb?)
                } else {
                    (Vec::new(), Vec::new())
                };
                (Some(eta), eta_powers, Ledger::zeros(&setup.spec))
            }
            (None, Some(p), None, Some(v)) => {
                let k = self.group_key.as_ref().ok_or(ClientError::NoGroupKey)?;
                // R ← P_v (P_0 = 0).
                let masks = if v.version == 0 {
                    VersionMasks::zero(&setup.spec)
                } else {
                    let seed = k.version_seed(p.model_id, v.version, v.nonce);
                    VersionMasks::derive(&seed, &setup.spec, p.widths)
                };
                (None, (Vec::new(), Vec::new()), Ledger::from_masks(&masks))
            }
            _ => {
                return Err(ProtocolViolation::OutOfTurn {
                    expected: "a SessionStart of the handshake's protocol".into(),
                    found: "SessionStart",
                }
                .into())
            }
        };
        let spec = setup.spec.clone();
        let sampler_at_start = self.sampler.clone().ok_or(ProtocolViolation::NoHandshake)?;
        let mut sampler = sampler_at_start.clone();
        let mut rng = self.rng.clone();
        let (step, msg) = self.begin_iteration(&mut sampler, &mut rng, m.session, 0)?;
        self.session = Some(Session {
            id: m.session,
            iterations: m.iterations,
            iteration: 0,
            eta,
            learning_rate: rate,
            version: m.version,
            next_version: None,
            eta_powers,
            ledger,
            acc: Gradients::zeros(&spec),
            last: None,
            sampler_at_start,
            step,
            awaiting: Awaiting::Forward(1),
        });
        self.sampler = Some(sampler);
        self.rng = rng;
        if m.version.is_some() {
            self.last_version = m.version;
        }
        Ok(msg)
    }

    /// The server applied the masked update: the next iteration begins (Alg. 2 line 12).
    ///
    /// # Errors
    /// The [`ProtocolViolation`]s of [`Client::session_in_turn`].
    fn update_applied(&mut self, m: &UpdateApplied) -> Result<ClientMessage> {
        self.session_in_turn(
            m.session,
            m.iteration,
            Awaiting::UpdateApplied,
            "UpdateApplied",
        )?;
        let mut sampler = self.sampler.clone().ok_or(ProtocolViolation::NoHandshake)?;
        let mut rng = self.rng.clone();
        let (step, msg) =
            self.begin_iteration(&mut sampler, &mut rng, m.session, m.iteration + 1)?;
        let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
        s.iteration += 1;
        s.step = step;
        s.awaiting = Awaiting::Forward(1);
        self.sampler = Some(sampler);
        self.rng = rng;
        Ok(msg)
    }

    /// The server applied the final update (Alg. 5): the session is over.
    ///
    /// # Errors
    /// The [`ProtocolViolation`]s of [`Client::session_in_turn`].
    fn end(&mut self, m: &SessionEnd) -> Result<()> {
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let it = s.iteration;
        self.session_in_turn(m.session, it, Awaiting::SessionEnd, "SessionEnd")?;
        if let Some(s) = self.session.take() {
            if s.next_version.is_some() {
                self.last_version = s.next_version;
            }
        }
        Ok(())
    }
}
