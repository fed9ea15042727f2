//! The client's role in GELU-Net as a state machine with no I/O.
//!
//! # What the client holds
//!
//! Its private data share (features quantized at `2^fa`, labels), its key pair
//! `(PK_c, SK_c)`, the server's `PK_s`, and during a session the *ledger* `R^w_i, R^b_i`
//! (the accumulated masks, mod `N_c`; paper `r^wc, r^bc`) and the gradient accumulators
//! `ΔW^c_i, Δb^c_i` (paper Alg. 1 input).
//!
//! # What it computes (paper Alg. 1–5, docs/DESIGN.md "One iteration")
//!
//! ```text
//! forward   send [a_{i−1}]_c; receive [z~_i]_c
//!           z_i = z~_i + R^w_i·a_{i−1} + R^b_i (mod N_c)                Alg. 4
//!           a_i = f(z_i)  (softmax + δ_L = y − t at the output)
//! backward  send [δ_i]_c; receive [q~]_c
//!           q = q~ + δ_i·R^w_i (mod N_c),  δ_{i−1} = q ⊙ f'(z_{i−1})     Alg. 4, Alg. 2
//! gradients Δw_i = δ_iᵀ a_{i−1}, Δb_i = Σ δ_i (mini-batch of B), ΔW^c += Δw
//! masked    [D]_s = ([η]_s ⊗ Δ) ⊕ Enc_s(r),  R ← R + r (mod N_c)          Alg. 3, all but the last iteration
//! final     send [ΔW^c]_s, [Δb^c]_s                                        Alg. 5
//! ```
//!
//! `Enc_s(r)` is a fresh encryption, so `[D]_s` is re-randomized: the server, which knows
//! the randomness of its own `[η]_s`, cannot strip it.
//!
//! # Packing ([`gelunet_protocol::packing`], when the server's hello asks for it)
//!
//! Activations and errors of the `B` samples of a mini-batch share one ciphertext per
//! feature (`P_k = Σ_s a_{s,k}·2^(β s)`); the masks are removed mod `N_c` before
//! unpacking (`z~ + Σ_k R_jk·P_k + R^b_j·Σ_s 2^(β s)`). Masked updates pack `k`
//! parameters per server-key ciphertext:
//! `[Σ_i (η·Δ_i + r_i + G)·2^(β i)]_s = Π_i E_i^{Δ_i} ⊕ Enc_s(Σ_i (r_i + G)·2^(β i))` with
//! `E_i = [η]_s^{2^(β i)}` computed once per session (a shared-base multi-exponentiation
//! with small exponents per ciphertext); final updates pack `ΔW^c + 2^max_bits`.
//!
//! The client encrypts under its own key with [`PrivateKey::encrypt_crt_batch`] (the
//! obfuscator computed mod `p²` and `q²`: the same ciphertexts as public-key encryption
//! with the same randomness, about three times faster).
//!
//! # Determinism and secrets
//!
//! All randomness (mini-batches, masks, encryption) comes from ChaCha20 streams seeded by
//! [`ClientConfig::seed`]. The ledger and the private key never appear in `Debug`; the
//! ledger is overwritten with zeros on drop (best effort).

use std::fmt;

use gelunet_paillier::{
    BigInt, BigUint, Ciphertext, PreparedCiphertext, PrivateKey, PublicKey, MIN_KEY_BITS,
};
use gelunet_protocol::data::sampler_seed;
use gelunet_protocol::mask::{centered, mod_n, MaskTarget};
use gelunet_protocol::math::{activate, hidden_error, layer_gradients, output_error};
use gelunet_protocol::messages::{
    Abort, BackwardRequest, BackwardResponse, ClientHello, ClientMessage, FinalUpdate,
    ForwardRequest, ForwardResponse, LayerCiphertexts, MaskedUpdate, Packing, PublicModulus,
    ServerHello, ServerMessage, SessionEnd, SessionStart, UpdateApplied, UpdatePacking,
    PROTOCOL_VERSION,
};
use gelunet_protocol::packing::{
    final_plaintext, group_sizes, mask_plaintext, pack_samples, sample_packing, slot_sum,
    unpack_signed,
};
use gelunet_protocol::{
    Activation, BatchSampler, Dataset, Gradients, LayerGradients, MaskMode, ModelSpec, Scales,
    ValueKind,
};
use ndarray::{Array1, Array2};
use num_traits::Zero;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::error::{ClientError, Result};

/// The client's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// Seed of every random stream of the client (mini-batches through
    /// [`sampler_seed`], masks and encryption).
    pub seed: u64,
    /// Accept a server key below 2048 bits (tests, examples).
    pub allow_test_keys: bool,
    /// Accept [`MaskMode::InsecureNone`] (gradient-inversion demo only).
    pub allow_unmasked_gradients: bool,
    /// Record the decrypted pre-activations and their inputs ([`Client::transcript`]): the
    /// view a client has for the model-extraction attack of paper §4.1.
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

/// A copy of the ledger: `R^w_i` (`m × n`) and `R^b_i` (`m`) per layer, mod `N_c`.
pub type LedgerCopy = (Vec<Array2<BigUint>>, Vec<Array1<BigUint>>);

/// The accumulated masks `R^w_i, R^b_i` mod `N_c` (secret; zeroized on drop).
#[derive(Clone)]
struct Ledger {
    w: Vec<Array2<BigUint>>,
    b: Vec<Array1<BigUint>>,
}

fn wipe(x: &mut BigUint) {
    let len = (x.bits() as usize).div_ceil(32);
    x.assign_from_slice(&vec![0u32; len.max(1)]);
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.w.iter_mut().flat_map(|a| a.iter_mut()).for_each(wipe);
        self.b.iter_mut().flat_map(|a| a.iter_mut()).for_each(wipe);
    }
}

impl Ledger {
    fn zeros(spec: &ModelSpec) -> Self {
        let shapes: Vec<_> = (1..=spec.num_layers())
            .map(|i| spec.layer_shape(i))
            .collect();
        Self {
            w: shapes
                .iter()
                .map(|&(m, n)| Array2::from_elem((m, n), BigUint::zero()))
                .collect(),
            b: shapes
                .iter()
                .map(|&(m, _)| Array1::from_elem(m, BigUint::zero()))
                .collect(),
        }
    }
}

struct Setup {
    spec: ModelSpec,
    scales: Scales,
    mask: MaskMode,
    batch: usize,
    server_key: PublicKey,
    data: Dataset,
    /// The sample packing of this client's sessions.
    packing: Packing,
    /// The layouts of masked and final updates.
    masked_packing: UpdatePacking,
    final_packing: UpdatePacking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    Forward(u32),
    Backward(u32),
    UpdateApplied,
    SessionEnd,
}

#[derive(Clone)]
struct Step {
    labels: Vec<usize>,
    /// `a_0 … a_{k}` computed so far.
    a: Vec<Array2<i128>>,
    /// `z_1 … z_k` computed so far.
    z: Vec<Array2<i128>>,
    /// The error of the layer whose backward product is awaited.
    delta: Option<Array2<i128>>,
    /// Gradients of layers `1..=L` (filled from the top).
    grads: Vec<Option<LayerGradients>>,
}

struct Session {
    id: u64,
    iterations: u32,
    iteration: u32,
    eta: PreparedCiphertext,
    /// `E_i = [η]_s^{2^(β i)}` for the packed weight and bias updates (empty when the
    /// masked updates are not packed or the session has one iteration).
    eta_powers: (Vec<Ciphertext>, Vec<Ciphertext>),
    ledger: Ledger,
    acc: Gradients,
    last: Option<Gradients>,
    sampler_at_start: BatchSampler,
    step: Step,
    awaiting: Awaiting,
}

/// The client role (see the module docs).
pub struct Client {
    config: ClientConfig,
    key: PrivateKey,
    features: Array2<f64>,
    labels: Vec<usize>,
    rng: ChaCha20Rng,
    setup: Option<Setup>,
    sampler: Option<BatchSampler>,
    session: Option<Session>,
    transcript: Vec<TranscriptEntry>,
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

fn expect_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(ClientError::Shape {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

fn check_key_size(bits: u64, allow_test: bool, needed: u64) -> Result<()> {
    if bits < MIN_KEY_BITS && !allow_test {
        return Err(ClientError::InsecureKey { bits });
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
        let rng = ChaCha20Rng::seed_from_u64(config.seed ^ 0x6372_7970_746f_2121);
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
        })
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
    /// [`ClientError::Version`], key errors, [`ClientError::InsecureMask`],
    /// [`ClientError::Data`] if the data does not fit the spec, range errors of the
    /// quantization. State unchanged on error.
    pub fn handle_hello(&mut self, hello: &ServerHello) -> Result<ClientMessage> {
        if hello.version != PROTOCOL_VERSION {
            return Err(ClientError::Version {
                expected: PROTOCOL_VERSION,
                found: hello.version,
            });
        }
        hello.spec.validate()?;
        hello.scales.validate()?;
        if hello.mask.is_insecure() && !self.config.allow_unmasked_gradients {
            return Err(ClientError::InsecureMask);
        }
        let allow = self.config.allow_test_keys;
        let n = hello.server_key.n.clone();
        let server_key = PublicKey::from_n_for_run(n, allow)?;
        let needed = hello.mask.min_key_bits(&hello.scales);
        check_key_size(server_key.bits(), allow, needed)?;
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
        let sampler = BatchSampler::new(data.len(), batch, sampler_seed(self.config.seed))?;
        let server_key_id = server_key.id();
        let packing = sample_packing(
            &hello.spec,
            &hello.scales,
            batch,
            self.key.public_key().bits(),
            hello.packing,
        );
        let masked_packing =
            UpdatePacking::masked(hello.mask, &hello.scales, server_key.bits(), hello.packing);
        let final_packing =
            UpdatePacking::final_update(&hello.scales, server_key.bits(), hello.packing);
        self.setup = Some(Setup {
            spec: hello.spec.clone(),
            scales: hello.scales,
            mask: hello.mask,
            batch,
            server_key,
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

    /// Abandons the active session on our side (e.g. the connection dropped): the ledger
    /// and accumulators are discarded and the session's mini-batches will be drawn again.
    /// Returns the session abandoned, if any.
    pub fn abandon_session(&mut self) -> Option<u64> {
        let s = self.session.take()?;
        self.sampler = Some(s.sampler_at_start.clone());
        Some(s.id)
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
    /// unchanged; send [`ClientError::report`] back.
    ///
    /// # Errors
    /// See [`ClientError`]: out-of-turn, wrong session/iteration/layer, packing, counts,
    /// invalid ciphertexts or keys, values out of fixed-point range.
    pub fn handle(&mut self, msg: &ServerMessage) -> Result<Option<ClientMessage>> {
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
            ServerMessage::Inferred(_) => Err(ClientError::OutOfTurn {
                expected: "a training message (inference answers go to an InferenceClient)".into(),
                found: msg.kind(),
            }),
            ServerMessage::Error(_) => Ok(None),
        }
    }

    /// The sample packing of this client's sessions (after the handshake).
    pub fn packing(&self) -> Option<Packing> {
        self.setup.as_ref().map(|s| s.packing)
    }

    fn setup(&self) -> Result<&Setup> {
        self.setup.as_ref().ok_or(ClientError::NoHandshake)
    }

    fn session_in_turn(
        &self,
        sid: u64,
        iteration: u32,
        want: Awaiting,
        found: &'static str,
    ) -> Result<&Session> {
        let s = self.session.as_ref().ok_or(ClientError::NoSession)?;
        if s.id != sid {
            return Err(ClientError::WrongSession {
                expected: s.id,
                found: sid,
            });
        }
        if s.iteration != iteration {
            return Err(ClientError::WrongIteration {
                expected: s.iteration,
                found: iteration,
            });
        }
        let same_kind = matches!(
            (s.awaiting, want),
            (Awaiting::Forward(_), Awaiting::Forward(_))
                | (Awaiting::Backward(_), Awaiting::Backward(_))
                | (Awaiting::UpdateApplied, Awaiting::UpdateApplied)
                | (Awaiting::SessionEnd, Awaiting::SessionEnd)
        );
        if !same_kind {
            return Err(ClientError::OutOfTurn {
                expected: format!("{:?}", s.awaiting),
                found,
            });
        }
        match (s.awaiting, want) {
            (Awaiting::Forward(a), Awaiting::Forward(b))
            | (Awaiting::Backward(a), Awaiting::Backward(b))
                if a != b =>
            {
                Err(ClientError::WrongLayer {
                    expected: a,
                    found: b,
                })
            }
            _ => Ok(s),
        }
    }

    /// Packs a `B × n` matrix by groups of samples and encrypts it under `PK_c` (with the
    /// CRT obfuscator: the client owns the key).
    fn encrypt_own(&self, rng: &mut ChaCha20Rng, v: &Array2<i128>) -> Result<Vec<Ciphertext>> {
        let packing = self.setup()?.packing;
        let (ms, _) = pack_samples(v.view(), packing);
        Ok(self.key.encrypt_crt_batch(&ms, rng)?)
    }

    /// Decrypts own ciphertexts to raw plaintexts in `[0, N_c)` after validation.
    fn decrypt_own(&self, cs: &[Ciphertext]) -> Result<Vec<BigUint>> {
        self.key.public_key().validate_all(cs)?;
        cs.par_iter()
            .map(|c| self.key.decrypt_raw(c).map_err(ClientError::from))
            .collect()
    }

    /// Draws the next mini-batch and builds the first forward request.
    fn begin_iteration(
        &self,
        sampler: &mut BatchSampler,
        rng: &mut ChaCha20Rng,
        sid: u64,
        iteration: u32,
    ) -> Result<(Step, ClientMessage)> {
        let setup = self.setup()?;
        let idx = sampler.next_batch();
        let (x, labels) = setup.data.select(&idx);
        let cts = self.encrypt_own(rng, &x)?;
        let l_count = setup.spec.num_layers();
        let step = Step {
            labels,
            a: vec![x],
            z: Vec::new(),
            delta: None,
            grads: vec![None; l_count],
        };
        Ok((
            step,
            ClientMessage::Forward(ForwardRequest {
                session: sid,
                iteration,
                layer: 1,
                packing: setup.packing,
                activations: cts,
            }),
        ))
    }

    fn start(&mut self, m: &SessionStart) -> Result<ClientMessage> {
        if let Some(s) = &self.session {
            return Err(ClientError::SessionActive { session: s.id });
        }
        let setup = self.setup()?;
        if m.iterations == 0 {
            return Err(ClientError::EmptySession);
        }
        setup.server_key.validate(&m.eta)?;
        let eta = setup.server_key.prepare(&m.eta)?;
        let eta_powers = if m.iterations >= 2 {
            let pk_s = &setup.server_key;
            let (w, b) = (setup.masked_packing.weights, setup.masked_packing.biases);
            let (pw, pb) = rayon::join(
                || eta_powers(pk_s, &m.eta, w),
                || eta_powers(pk_s, &m.eta, b),
            );
            (pw?, pb?)
        } else {
            (Vec::new(), Vec::new())
        };
        let spec = setup.spec.clone();
        let sampler_at_start = self.sampler.clone().ok_or(ClientError::NoHandshake)?;
        let mut sampler = sampler_at_start.clone();
        let mut rng = self.rng.clone();
        let (step, msg) = self.begin_iteration(&mut sampler, &mut rng, m.session, 0)?;
        self.session = Some(Session {
            id: m.session,
            iterations: m.iterations,
            iteration: 0,
            eta,
            eta_powers,
            ledger: Ledger::zeros(&spec),
            acc: Gradients::zeros(&spec),
            last: None,
            sampler_at_start,
            step,
            awaiting: Awaiting::Forward(1),
        });
        self.sampler = Some(sampler);
        self.rng = rng;
        Ok(msg)
    }

    /// Alg. 4 forward and Alg. 1 lines 6–10.
    fn forward(&mut self, m: &ForwardResponse) -> Result<ClientMessage> {
        let s = self.session_in_turn(
            m.session,
            m.iteration,
            Awaiting::Forward(m.layer),
            "ForwardResponse",
        )?;
        let setup = self.setup()?;
        if m.packing != setup.packing {
            return Err(ClientError::Packing { found: m.packing });
        }
        let layer = m.layer as usize;
        let (width, _) = setup.spec.layer_shape(layer);
        let b = setup.batch;
        let groups = group_sizes(b, setup.packing.samples_per_ciphertext).len();
        expect_len("pre-activations", width * groups, m.pre_activations.len())?;
        let raw = self.decrypt_own(&m.pre_activations)?;
        let n_c = self.key.public_key().n();
        let scales = &setup.scales;
        let a_prev = &s.step.a[layer - 1];
        let rw = &s.ledger.w[layer - 1];
        let rb = &s.ledger.b[layer - 1];
        let z = unmask_unpack(
            &raw,
            a_prev,
            setup.packing,
            n_c,
            width,
            |j, k| &rw[[j, k]],
            Some(rb),
            scales,
            ValueKind::PreActivation,
        )?;
        let l_count = setup.spec.num_layers();
        let mut step = s.step.clone();
        let mut rng = self.rng.clone();
        let (msg, awaiting, finished) = if layer < l_count {
            let act = setup.spec.activation(layer).unwrap_or(Activation::Identity);
            let a = activate(act, z.view(), scales)?;
            let cts = self.encrypt_own(&mut rng, &a)?;
            step.a.push(a);
            step.z.push(z.clone());
            (
                Some(ClientMessage::Forward(ForwardRequest {
                    session: m.session,
                    iteration: m.iteration,
                    layer: m.layer + 1,
                    packing: setup.packing,
                    activations: cts,
                })),
                Awaiting::Forward(m.layer + 1),
                false,
            )
        } else {
            let delta = output_error(z.view(), &step.labels, scales)?;
            step.grads[layer - 1] = Some(layer_gradients(delta.view(), a_prev.view(), scales)?);
            step.z.push(z.clone());
            if l_count >= 2 {
                let cts = self.encrypt_own(&mut rng, &delta)?;
                step.delta = Some(delta);
                (
                    Some(ClientMessage::Backward(BackwardRequest {
                        session: m.session,
                        iteration: m.iteration,
                        layer: m.layer,
                        packing: setup.packing,
                        errors: cts,
                    })),
                    Awaiting::Backward(m.layer),
                    false,
                )
            } else {
                (None, Awaiting::UpdateApplied, true)
            }
        };
        let entry = self.config.record_transcript.then(|| TranscriptEntry {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            inputs: a_prev.clone(),
            pre_activations: z,
        });
        let out = if finished {
            self.finish_iteration(step, rng)?
        } else {
            let s = self.session.as_mut().ok_or(ClientError::NoSession)?;
            s.step = step;
            s.awaiting = awaiting;
            self.rng = rng;
            msg.ok_or(ClientError::NoSession)?
        };
        self.transcript.extend(entry);
        Ok(out)
    }

    /// Alg. 4 backward and Alg. 2 line 7.
    fn backward(&mut self, m: &BackwardResponse) -> Result<ClientMessage> {
        let s = self.session_in_turn(
            m.session,
            m.iteration,
            Awaiting::Backward(m.layer),
            "BackwardResponse",
        )?;
        let setup = self.setup()?;
        if m.packing != setup.packing {
            return Err(ClientError::Packing { found: m.packing });
        }
        let layer = m.layer as usize;
        let (_, fan_in) = setup.spec.layer_shape(layer);
        let b = setup.batch;
        let groups = group_sizes(b, setup.packing.samples_per_ciphertext).len();
        expect_len("products", fan_in * groups, m.products.len())?;
        let raw = self.decrypt_own(&m.products)?;
        let n_c = self.key.public_key().n();
        let scales = &setup.scales;
        let delta = s.step.delta.as_ref().ok_or(ClientError::NoSession)?;
        let rw = &s.ledger.w[layer - 1];
        let q = unmask_unpack(
            &raw,
            delta,
            setup.packing,
            n_c,
            fan_in,
            |k, j| &rw[[j, k]],
            None,
            scales,
            ValueKind::Product,
        )?;
        let below = layer - 1;
        let act = setup.spec.activation(below).unwrap_or(Activation::Identity);
        let new_delta = hidden_error(q.view(), s.step.z[below - 1].view(), act, scales)?;
        let mut step = s.step.clone();
        step.grads[below - 1] = Some(layer_gradients(
            new_delta.view(),
            step.a[below - 1].view(),
            scales,
        )?);
        let mut rng = self.rng.clone();
        let packing = setup.packing;
        if below >= 2 {
            let cts = self.encrypt_own(&mut rng, &new_delta)?;
            step.delta = Some(new_delta);
            let s = self.session.as_mut().ok_or(ClientError::NoSession)?;
            s.step = step;
            s.awaiting = Awaiting::Backward(m.layer - 1);
            self.rng = rng;
            Ok(ClientMessage::Backward(BackwardRequest {
                session: m.session,
                iteration: m.iteration,
                layer: m.layer - 1,
                packing,
                errors: cts,
            }))
        } else {
            step.delta = None;
            self.finish_iteration(step, rng)
        }
    }

    /// Accumulates the iteration's gradients and builds the masked update (Alg. 3) or,
    /// after the last iteration, the final update (Alg. 5). Commits on success only.
    fn finish_iteration(&mut self, step: Step, mut rng: ChaCha20Rng) -> Result<ClientMessage> {
        let setup = self.setup()?;
        let s = self.session.as_ref().ok_or(ClientError::NoSession)?;
        let scales = &setup.scales;
        let grads = Gradients {
            layers: step
                .grads
                .iter()
                .map(|g| g.clone().ok_or(ClientError::NoSession))
                .collect::<Result<Vec<_>>>()?,
        };
        let acc = s.acc.checked_add(scales, &grads)?;
        let pk_s = &setup.server_key;
        if s.iteration + 1 < s.iterations {
            let n_c = self.key.public_key().n();
            let gw = MaskMode::g_bits(scales, MaskTarget::Weight);
            let gb = MaskMode::g_bits(scales, MaskTarget::Bias);
            let mut ledger = s.ledger.clone();
            let mut layers = Vec::with_capacity(grads.layers.len());
            let layout = setup.masked_packing;
            for (i, g) in grads.layers.iter().enumerate() {
                let weights = mask_values(
                    &mut rng,
                    setup,
                    &s.eta,
                    (layout.weights, &s.eta_powers.0),
                    g.w.iter(),
                    gw,
                    ledger.w[i].iter_mut(),
                    n_c,
                )?;
                let biases = mask_values(
                    &mut rng,
                    setup,
                    &s.eta,
                    (layout.biases, &s.eta_powers.1),
                    g.b.iter(),
                    gb,
                    ledger.b[i].iter_mut(),
                    n_c,
                )?;
                layers.push(LayerCiphertexts { weights, biases });
            }
            let msg = ClientMessage::MaskedUpdate(MaskedUpdate {
                session: s.id,
                iteration: s.iteration,
                packing: layout,
                layers,
            });
            let s = self.session.as_mut().ok_or(ClientError::NoSession)?;
            s.ledger = ledger;
            s.acc = acc;
            s.last = Some(grads);
            s.step = step;
            s.awaiting = Awaiting::UpdateApplied;
            self.rng = rng;
            Ok(msg)
        } else {
            let mut layers = Vec::with_capacity(acc.layers.len());
            let layout = setup.final_packing;
            let pack = |kind: ValueKind, values: Vec<i128>, p: Packing| -> Result<Vec<BigInt>> {
                if p == Packing::NONE {
                    return Ok(values.into_iter().map(BigInt::from).collect());
                }
                values
                    .chunks((p.samples_per_ciphertext as usize).max(1))
                    .map(|c| Ok(BigInt::from(final_plaintext(scales, kind, c, p.slot_bits)?)))
                    .collect()
            };
            for g in &acc.layers {
                let w = pack(
                    ValueKind::WeightGradient,
                    g.w.iter().copied().collect(),
                    layout.weights,
                )?;
                let b = pack(
                    ValueKind::BiasGradient,
                    g.b.iter().copied().collect(),
                    layout.biases,
                )?;
                layers.push(LayerCiphertexts {
                    weights: pk_s.encrypt_batch(&w, &mut rng)?,
                    biases: pk_s.encrypt_batch(&b, &mut rng)?,
                });
            }
            let msg = ClientMessage::FinalUpdate(FinalUpdate {
                session: s.id,
                packing: layout,
                layers,
            });
            let s = self.session.as_mut().ok_or(ClientError::NoSession)?;
            s.acc = acc;
            s.last = Some(grads);
            s.step = step;
            s.awaiting = Awaiting::SessionEnd;
            self.rng = rng;
            Ok(msg)
        }
    }

    fn update_applied(&mut self, m: &UpdateApplied) -> Result<ClientMessage> {
        self.session_in_turn(
            m.session,
            m.iteration,
            Awaiting::UpdateApplied,
            "UpdateApplied",
        )?;
        let mut sampler = self.sampler.clone().ok_or(ClientError::NoHandshake)?;
        let mut rng = self.rng.clone();
        let (step, msg) =
            self.begin_iteration(&mut sampler, &mut rng, m.session, m.iteration + 1)?;
        let s = self.session.as_mut().ok_or(ClientError::NoSession)?;
        s.iteration += 1;
        s.step = step;
        s.awaiting = Awaiting::Forward(1);
        self.sampler = Some(sampler);
        self.rng = rng;
        Ok(msg)
    }

    fn end(&mut self, m: &SessionEnd) -> Result<()> {
        let s = self.session.as_ref().ok_or(ClientError::NoSession)?;
        let it = s.iteration;
        self.session_in_turn(m.session, it, Awaiting::SessionEnd, "SessionEnd")?;
        self.session = None;
        Ok(())
    }
}

/// `E_i = [η]_s^{2^(β i)}`, `i < k`, for a packed masked-update layout (empty when unpacked).
fn eta_powers(pk_s: &PublicKey, eta: &Ciphertext, p: Packing) -> Result<Vec<Ciphertext>> {
    if p == Packing::NONE {
        return Ok(Vec::new());
    }
    let step = BigInt::from(1u8) << p.slot_bits;
    let mut out = Vec::with_capacity(p.samples_per_ciphertext as usize);
    let mut e = eta.clone();
    for i in 0..p.samples_per_ciphertext {
        if i > 0 {
            e = pk_s.mul_scalar(&e, &step)?;
        }
        out.push(e.clone());
    }
    Ok(out)
}

/// `[D]_s = ([η]_s ⊗ Δ) ⊕ Enc_s(r)` for each value (unpacked), or
/// `Π_i E_i^{Δ_i} ⊕ Enc_s(Σ_i (r_i + G)·2^(β i))` per group of `k` values (packed), and
/// `R ← R + r (mod N_c)` on the given ledger entries (Alg. 3).
#[allow(clippy::too_many_arguments)]
fn mask_values<'a>(
    rng: &mut ChaCha20Rng,
    setup: &Setup,
    eta: &PreparedCiphertext,
    (layout, powers): (Packing, &[Ciphertext]),
    values: impl Iterator<Item = &'a i128>,
    g_bits: u32,
    ledger: impl Iterator<Item = &'a mut BigUint>,
    n_c: &BigUint,
) -> Result<Vec<Ciphertext>> {
    let pk_s = &setup.server_key;
    let values: Vec<BigInt> = values.map(|&v| BigInt::from(v)).collect();
    let mut rs = Vec::with_capacity(values.len());
    for _ in &values {
        rs.push(setup.mask.draw(g_bits, pk_s.n(), rng)?);
    }
    let out = if layout == Packing::NONE {
        let r_signed: Vec<BigInt> = rs.iter().map(|r| centered(r, pk_s.n())).collect();
        let enc_r = pk_s.encrypt_batch(&r_signed, rng)?;
        values
            .par_iter()
            .zip(enc_r.par_iter())
            .map(|(v, er)| {
                let scaled = pk_s.mul_scalar_prepared(eta, v)?;
                pk_s.add(&scaled, er)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        let k = (layout.samples_per_ciphertext as usize).max(1);
        if powers.len() < k {
            return Err(ClientError::Packing { found: layout });
        }
        let groups = values.len().div_ceil(k);
        let masks: Vec<BigInt> = rs
            .chunks(k)
            .map(|c| BigInt::from(mask_plaintext(c, g_bits, layout.slot_bits)))
            .collect();
        let enc_m = pk_s.encrypt_batch(&masks, rng)?;
        let mut deltas = Array2::from_elem((groups, k), BigInt::zero());
        for (i, v) in values.iter().enumerate() {
            deltas[[i / k, i % k]] = v.clone();
        }
        let scaled = pk_s.matvec(deltas.view(), &powers[..k])?;
        scaled
            .par_iter()
            .zip(enc_m.par_iter())
            .map(|(sc, em)| pk_s.add(sc, em))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    for (entry, r) in ledger.zip(&rs) {
        *entry = (&*entry + r) % n_c;
    }
    Ok(out)
}

/// Removes the masks mod `N_c` from decrypted packed values and unpacks them (Alg. 4 with
/// sample packing): for group `g` and output `o`,
/// `raw[g·out + o] + Σ_i coef(o, i)·P_{g,i} (+ R^b_o·S_g)`, centered, split into the
/// group's signed slots and range-checked as `kind`. `inputs` is the `B × in` matrix the
/// request carried (packed here exactly as it was for encryption).
#[allow(clippy::too_many_arguments)]
fn unmask_unpack<'r>(
    raw: &[BigUint],
    inputs: &Array2<i128>,
    packing: Packing,
    n_c: &BigUint,
    out: usize,
    coef: impl Fn(usize, usize) -> &'r BigUint + Sync,
    bias: Option<&'r Array1<BigUint>>,
    scales: &Scales,
    kind: ValueKind,
) -> Result<Array2<i128>> {
    let (packed, groups) = pack_samples(inputs.view(), packing);
    let inn = inputs.ncols();
    let packed: Vec<BigUint> = packed.iter().map(|p| mod_n(p, n_c)).collect();
    expect_len("packed values", groups.len() * out, raw.len())?;
    let slots: Vec<Vec<BigInt>> = (0..groups.len() * out)
        .into_par_iter()
        .map(|idx| {
            let (g, o) = (idx / out, idx % out);
            let mut acc = raw[idx].clone();
            if let Some(rb) = bias {
                if !rb[o].is_zero() {
                    acc += &rb[o] * slot_sum(groups[g], packing.slot_bits);
                }
            }
            for i in 0..inn {
                let r = coef(o, i);
                if !r.is_zero() {
                    acc += r * &packed[g * inn + i];
                }
            }
            Ok(unpack_signed(
                &centered(&acc, n_c),
                groups[g],
                packing.slot_bits,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut res = Array2::<i128>::zeros((inputs.nrows(), out));
    let mut start = 0;
    for (g, &size) in groups.iter().enumerate() {
        for o in 0..out {
            for (s, v) in slots[g * out + o].iter().enumerate().take(size) {
                res[[start + s, o]] = scales.check_big(kind, v)?;
            }
        }
        start += size;
    }
    Ok(res)
}
