//! Encrypted inference with the trained model (paper Alg. 1 outside training): the
//! client encrypts its inputs, the server applies the true weights
//! (`[z_i] = W_i ⊗ [a_{i−1}] ⊕ b_i`, no masks), the client decrypts, applies the
//! activation and sends the next layer; after the output layer it has the class
//! probabilities (softmax) and the predictions (argmax of `z_L`, first maximum on ties,
//! as [`gelunet_protocol::FixedModel::predict`]).
//!
//! ```text
//! start(x)          → Infer { layer 1, [x]_c }
//! handle(Inferred)  → Next(Infer { layer i+1, [f(z_i)]_c })   i < L
//!                   → Done(predictions, probabilities)         i = L
//! ```
//!
//! Batches use sample packing ([`gelunet_protocol::packing::inference_packing`]); a
//! single sample asks for row packing, so the client decrypts one ciphertext per layer
//! (about `⌈m·β/(|N| − 2)⌉` for a layer of width `m`); through a conv layer it sends
//! the layer's im2col columns packed by output positions and gets one ciphertext per
//! filter and group of positions ([`gelunet_protocol::packing::position_packing`]).
//! The arithmetic is the fixed-point
//! arithmetic of the training ([`gelunet_protocol::math`]), so the predictions equal the
//! plaintext model's on the same fixed-point inputs.
//!
//! *Preprocessed* (docs/DESIGN.md "Preprocessed inference",
//! `gelunet_server::preprocessed`): [`InferenceClient::prepare`] sends, ahead of time,
//! the encryptions of one-time masks `r ∈ Z_N` in the layout of one single-sample
//! inference; once the server has acknowledged them
//! ([`InferenceClient::handle_prepared`]), a single-sample request of a prepared layer goes
//! as the plaintexts `m − r mod N` ([`InferMasked`]) and the server answers with one
//! plaintext product instead of its multi-exponentiations. The answers, and so the
//! predictions, are the same.
//!
//! ```text
//! prepare()                → [InferPrepare { layer i, [r_i]_c }]   (offline, per layer)
//! handle_prepared(ack)     → the layer's preparation is ready
//! start(x), one sample     → InferMasked { layer 1, x − r_1 mod N }  (prepared layers)
//! ```
//!
//! The server learns nothing (it sees ciphertexts only); the client learns the
//! pre-activations of every layer for its inputs (see the server's module docs for what
//! that means for the model).

use std::collections::{HashMap, VecDeque};
use std::fmt;

use gelunet_paillier::{
    BigInt, BigUint, Ciphertext, Obfuscator, PrivateKey, PublicKey, MIN_KEY_BITS,
};
use gelunet_protocol::fixed::{Scales, ValueKind};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::mask::centered;
use gelunet_protocol::math::{activate_at, argmax};
use gelunet_protocol::messages::{
    ClientHello, ClientMessage, InferMasked, InferPrepare, InferRequest, InferResponse, Packing,
    PublicModulus, ServerHello, ServerMessage, WirePlaintext, PROTOCOL_VERSION,
};
use gelunet_protocol::packing::{
    group_sizes, inference_packing, pack_samples, position_packing, row_packing_is_valid,
    unpack_signed, unpack_unsigned,
};
use gelunet_protocol::randomness::Randomness;
use gelunet_protocol::version_mask::wipe;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Activation, ModelSpec};
use ndarray::{Array2, ArrayView2};
use num_bigint::RandBigInt;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::error::{ClientError, Result};

/// Largest number of samples in one inference request (the server's limit).
pub const MAX_INFER_SAMPLES: usize = 1 << 16;

/// Settings of an [`InferenceClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InferenceConfig {
    /// Where the encryption randomness comes from: the operating system by default;
    /// [`Randomness::InsecureReproducible`] `{ seed }` uses
    /// `ChaCha20Rng::seed_from_u64(seed ^ 0x696e_6665_7221_2121)` (tests, benchmarks).
    /// Decryption blinding factors come from the operating system in every mode.
    pub randomness: Randomness,
    /// Accept keys below 2048 bits (tests, examples).
    pub allow_test_keys: bool,
    /// Sample packing for batches (default on).
    pub packing: bool,
    /// Ask for row-packed answers when a group holds one sample (default on).
    pub row_packing: bool,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            randomness: Randomness::Os,
            allow_test_keys: false,
            packing: true,
            row_packing: true,
        }
    }
}

/// What [`InferenceClient::handle`] gives back.
#[derive(Clone, Debug, PartialEq)]
pub enum InferStep {
    /// Send this request for the next layer.
    Next(ClientMessage),
    /// Finished: the predicted classes and the softmax probabilities (`B × classes`).
    Done(Vec<usize>, Array2<f64>),
}

#[derive(Clone, Debug)]
struct Pending {
    request_id: u64,
    layer: u32,
    packing: Packing,
    row_packing: bool,
    /// One sample through a conv layer with its output positions packed in slots
    /// (`packing` is [`position_packing`]'s).
    positions: bool,
    /// The inputs of the pending layer, `B × n_{i−1}`, at `2^fa`.
    inputs: Array2<i128>,
}

/// One layer's one-time masks `r ∈ [0, N)` (secret; zeroized on drop).
struct Preparation {
    prep_id: u64,
    layer: u32,
    masks: Vec<BigUint>,
}

impl Drop for Preparation {
    fn drop(&mut self) {
        self.masks.iter_mut().for_each(wipe);
    }
}

/// The client side of encrypted inference (see the module docs).
pub struct InferenceClient {
    config: InferenceConfig,
    key: PrivateKey,
    spec: ModelSpec,
    /// The linear map of each layer `1..=L`.
    layers: Vec<LinearLayer>,
    scales: Scales,
    server_key_id: Option<gelunet_paillier::KeyId>,
    rng: ChaCha20Rng,
    next_request: u64,
    pending: Option<Pending>,
    /// Obfuscators computed ahead of time, used first and once each.
    obfuscators: VecDeque<Obfuscator>,
    /// Preparations sent and not acknowledged yet, by id.
    sent: HashMap<u64, Preparation>,
    /// Acknowledged preparations by layer, used first and once each.
    ready: HashMap<u32, VecDeque<Preparation>>,
    next_prep: u64,
}

impl fmt::Debug for InferenceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InferenceClient")
            .field("key", self.key.public_key())
            .field("spec", &self.spec)
            .field("pending", &self.pending.as_ref().map(|p| p.layer))
            .field("obfuscators_ready", &self.obfuscators.len())
            .field("preparations_ready", &self.preparations_ready())
            .finish_non_exhaustive()
    }
}

impl InferenceClient {
    /// An inference client with its key pair, for the server that sent `hello`.
    ///
    /// # Errors
    /// [`ClientError::Violation`] ([`ProtocolViolation::Version`]), spec and scale errors, [`ClientError::InsecureKey`] for
    /// keys below 2048 bits without `allow_test_keys`, [`ClientError::KeyTooSmall`] if the
    /// client key cannot hold a pre-activation.
    pub fn new(config: InferenceConfig, key: PrivateKey, hello: &ServerHello) -> Result<Self> {
        ProtocolViolation::check_version(hello.version)?;
        hello.spec.validate()?;
        hello.scales.validate()?;
        let allow = config.allow_test_keys;
        // A server key (the paper's protocol) is checked and named in the hello; a v2 or
        // inference-only server has none.
        let server_key = match &hello.server_key {
            Some(pm) => Some(PublicKey::from_n_for_run(pm.n.clone(), allow)?),
            None => None,
        };
        let bits = key.public_key().bits();
        if bits < MIN_KEY_BITS && !allow {
            return Err(ClientError::InsecureKey { bits });
        }
        let needed = u64::from(
            hello
                .scales
                .max_bits(ValueKind::PreActivation)
                .max(hello.scales.max_bits(ValueKind::Product)),
        ) + 2;
        if bits < needed {
            return Err(ClientError::KeyTooSmall { bits, needed });
        }
        let layers = (1..=hello.spec.num_layers())
            .map(|i| LinearLayer::of(&hello.spec, i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            config,
            key,
            layers,
            spec: hello.spec.clone(),
            scales: hello.scales,
            server_key_id: server_key.as_ref().map(PublicKey::id),
            rng: crate::role::stream(config.randomness, 0x696e_6665_7221_2121),
            next_request: 1,
            pending: None,
            obfuscators: VecDeque::new(),
            sent: HashMap::new(),
            ready: HashMap::new(),
            next_prep: 1,
        })
    }

    /// The hello to present to the server ([`PROTOCOL_VERSION`], the accepted server key,
    /// `PK_c`).
    pub fn hello(&self) -> ClientHello {
        ClientHello {
            version: PROTOCOL_VERSION,
            server_key_id: self.server_key_id,
            client_key: PublicModulus {
                n: self.key.public_key().n().clone(),
            },
        }
    }

    /// `PK_c`.
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The fixed-point scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// Whether a request is in flight.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Drops the request in flight, if any.
    pub fn cancel(&mut self) {
        self.pending = None;
    }

    /// Computes `count` encryption obfuscators now (CRT, on rayon's threads), for the next
    /// requests to use: an encryption with a ready obfuscator is one multiplication modulo
    /// `N²` instead of a fixed-base exponentiation. Call it in idle time, e.g.
    /// [`InferenceClient::obfuscators_per_inference`] of them before each inference, to
    /// take the client's encryptions off the latency-critical path.
    ///
    /// The obfuscators come from the same random stream as inline ones, in the same order:
    /// the ciphertexts are the same whether or not they were precomputed.
    pub fn precompute_obfuscators(&mut self, count: usize) {
        let fresh = self.key.obfuscators_crt(count, &mut self.rng);
        self.obfuscators.extend(fresh);
    }

    /// Obfuscators ready for the next requests.
    pub fn obfuscators_ready(&self) -> usize {
        self.obfuscators.len()
    }

    /// How many encryptions (and so obfuscators) one inference of `samples` samples
    /// takes: `Σ_i n_{i−1}·g` over the layers, with `g` the number of ciphertext groups of
    /// the sample packing (`g = samples` without packing, 1 for one sample); a
    /// position-packed conv layer takes `windows·c·k·k` per group of positions.
    pub fn obfuscators_per_inference(&self, samples: usize) -> usize {
        let packing = self.sample_packing(samples);
        let groups = group_sizes(samples, packing.samples_per_ciphertext).len();
        (1..=self.spec.num_layers())
            .map(|i| match self.position_packing(i, samples) {
                Some((map, p)) => {
                    map.windows()
                        * map.columns()
                        * group_sizes(map.output_positions(), p.samples_per_ciphertext).len()
                }
                None => self.spec.layer_shape(i).1 * groups,
            })
            .sum()
    }

    /// The layout of layer `layer`'s single-sample request when it can be preprocessed:
    /// its sample packing (position packing for a conv layer), row packing and number of
    /// plaintexts; `None` for a conv layer without position packing.
    fn single_sample_layout(&self, layer: usize) -> Option<(Packing, bool, usize)> {
        let map = self.layers.get(layer.checked_sub(1)?)?;
        if let Some((map, p)) = self.position_packing(layer, 1) {
            let groups = group_sizes(map.output_positions(), p.samples_per_ciphertext).len();
            return Some((p, false, map.windows() * map.columns() * groups));
        }
        let p = self.sample_packing(1);
        (map.is_dense() && p == Packing::NONE)
            .then(|| (p, self.config.row_packing, self.spec.layer_shape(layer).1))
    }

    /// Offline part of preprocessed inference (see the module docs): one-time masks
    /// `r ∈ [0, N)` for every layer of one single-sample inference that can be
    /// preprocessed (dense layers, position-packed conv layers), drawn from the
    /// configured random stream, and the requests that send `[r]_c` to the server. A
    /// layer's preparation is used by the next single-sample request of that layer after
    /// [`InferenceClient::handle_prepared`] has seen the server's acknowledgement; call
    /// this again for each inference to keep the online path. Encryptions use the
    /// precomputed obfuscators first.
    ///
    /// # Errors
    /// The cryptosystem's errors (none for masks below `N`).
    pub fn prepare(&mut self) -> Result<Vec<ClientMessage>> {
        let pk = self.key.public_key().clone();
        let mut rng = self.rng.clone();
        let mut out = Vec::new();
        let mut made = Vec::new();
        let mut taken = 0;
        for layer in 1..=self.spec.num_layers() {
            let Some((packing, row_packing, count)) = self.single_sample_layout(layer) else {
                continue;
            };
            let masks: Vec<BigUint> = (0..count).map(|_| rng.gen_biguint_below(pk.n())).collect();
            let prep = Preparation {
                prep_id: self.next_prep + made.len() as u64,
                layer: layer as u32,
                masks,
            };
            // Signed representatives of the masks, for the encryption.
            let signed: Vec<BigInt> = prep.masks.iter().map(|r| pk.decode(r)).collect();
            let (cts, used) = self.encrypt_pooled(&signed, taken, &mut rng)?;
            taken += used;
            out.push(ClientMessage::InferPrepare(InferPrepare {
                prep_id: prep.prep_id,
                layer: prep.layer,
                packing,
                row_packing,
                masks: cts,
            }));
            made.push(prep);
        }
        self.obfuscators.drain(..taken);
        self.next_prep += made.len() as u64;
        self.sent.extend(made.into_iter().map(|p| (p.prep_id, p)));
        self.rng = rng;
        Ok(out)
    }

    /// Encrypts `plain` with the precomputed obfuscators after the first `taken`, then
    /// fresh ones from `rng` (the same stream, in order: the ciphertexts do not depend on
    /// what was precomputed); returns the ciphertexts and how many precomputed
    /// obfuscators they used, which the caller drains once all its work succeeded.
    fn encrypt_pooled(
        &self,
        plain: &[BigInt],
        taken: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<(Vec<Ciphertext>, usize)> {
        let pk = self.key.public_key();
        let ready = self
            .obfuscators
            .len()
            .saturating_sub(taken)
            .min(plain.len());
        let mut obfuscators: Vec<Obfuscator> = self
            .obfuscators
            .iter()
            .skip(taken)
            .take(ready)
            .cloned()
            .collect();
        obfuscators.extend(self.key.obfuscators_crt(plain.len() - ready, rng));
        let cts = plain
            .par_iter()
            .zip(obfuscators.par_iter())
            .map(|(m, o)| pk.encrypt_with_obfuscator(m, o))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((cts, ready))
    }

    /// Takes the server's acknowledgement of a preparation ([`InferenceClient::prepare`]):
    /// the layer's masks are ready for its next single-sample request.
    ///
    /// # Errors
    /// [`ClientError::Violation`] with [`ProtocolViolation::UnknownPreparation`] for an
    /// acknowledgement of no preparation sent (or of another layer),
    /// [`ProtocolViolation::OutOfTurn`] for another message. On error nothing changes.
    pub fn handle_prepared(&mut self, msg: &ServerMessage) -> Result<()> {
        let ServerMessage::InferPrepared(ack) = msg else {
            return Err(ClientError::blame_peer(
                ProtocolViolation::OutOfTurn {
                    expected: "InferPrepared".into(),
                    found: msg.kind(),
                }
                .into(),
            ));
        };
        let unknown = ProtocolViolation::UnknownPreparation {
            id: ack.prep_id,
            layer: ack.layer,
        };
        if self.sent.get(&ack.prep_id).map(|p| p.layer) != Some(ack.layer) {
            return Err(ClientError::blame_peer(unknown.into()));
        }
        if let Some(p) = self.sent.remove(&ack.prep_id) {
            self.ready.entry(p.layer).or_default().push_back(p);
        }
        Ok(())
    }

    /// Acknowledged preparations not used yet, over all layers.
    pub fn preparations_ready(&self) -> usize {
        self.ready.values().map(VecDeque::len).sum()
    }

    /// The position packing of layer `layer` for a request of `samples` samples: `Some`
    /// for one sample through a conv layer when enabled and two or more positions fit.
    fn position_packing(&self, layer: usize, samples: usize) -> Option<(&LinearLayer, Packing)> {
        let map = layer.checked_sub(1).and_then(|i| self.layers.get(i))?;
        if samples != 1 || map.is_dense() || !self.config.row_packing {
            return None;
        }
        let p = position_packing(
            &self.spec,
            &self.scales,
            layer,
            self.key.public_key().bits(),
        );
        (p != Packing::NONE).then_some((map, p))
    }

    /// The sample packing of a request of `samples` samples.
    fn sample_packing(&self, samples: usize) -> Packing {
        inference_packing(
            &self.spec,
            &self.scales,
            samples,
            self.key.public_key().bits(),
            self.config.packing,
        )
    }

    /// Starts inference on `samples` (`B × n_0`, real values, quantized at `2^fa`):
    /// the request for layer 1. Replaces a pending request.
    ///
    /// # Errors
    /// [`ClientError::Data`] for a wrong width or no samples; range errors of the
    /// quantization.
    pub fn start(&mut self, samples: &Array2<f64>) -> Result<ClientMessage> {
        let mut x = Array2::<i128>::zeros(samples.dim());
        for (o, &v) in x.iter_mut().zip(samples.iter()) {
            *o = self.scales.encode(ValueKind::Activation, v)?;
        }
        self.start_fixed(x.view())
    }

    /// As [`InferenceClient::start`] for inputs already at `2^fa` (range-checked).
    ///
    /// # Errors
    /// As [`InferenceClient::start`].
    pub fn start_fixed(&mut self, x: ArrayView2<'_, i128>) -> Result<ClientMessage> {
        if x.ncols() != self.spec.inputs() || x.nrows() == 0 || x.nrows() > MAX_INFER_SAMPLES {
            return Err(ClientError::Data {
                reason: format!(
                    "{} samples of {} features; the model takes 1..={MAX_INFER_SAMPLES} samples of {}",
                    x.nrows(),
                    x.ncols(),
                    self.spec.inputs()
                ),
            });
        }
        for &v in x {
            self.scales.check(ValueKind::Activation, v)?;
        }
        let request_id = self.next_request;
        self.next_request += 1;
        self.request(request_id, 1, x.to_owned())
    }

    fn request(
        &mut self,
        request_id: u64,
        layer: u32,
        inputs: Array2<i128>,
    ) -> Result<ClientMessage> {
        let samples = inputs.nrows();
        let by_position = self.position_packing(layer as usize, samples);
        let positions = by_position.is_some();
        let (plain, packing) = match by_position {
            Some((map, p)) => {
                let cols = map.im2col(&inputs.row(0).to_vec())?;
                (pack_samples(cols.view(), p).0, p)
            }
            None => {
                let p = self.sample_packing(samples);
                (pack_samples(inputs.view(), p).0, p)
            }
        };
        let pk = self.key.public_key();
        let mut encoded = plain
            .iter()
            .map(|m| pk.encode(m))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let dense = self
            .layers
            .get(layer as usize - 1)
            .is_some_and(LinearLayer::is_dense);
        let row_packing = self.config.row_packing && packing == Packing::NONE && dense;
        let prepared = self
            .ready
            .get(&layer)
            .and_then(VecDeque::front)
            .is_some_and(|p| samples == 1 && p.masks.len() == encoded.len());
        let prep = if prepared {
            self.ready.get_mut(&layer).and_then(VecDeque::pop_front)
        } else {
            None
        };
        let msg = if let Some(prep) = prep {
            // d = m − r mod N: uniform, independent of m.
            let n = pk.n();
            let masked = encoded
                .iter()
                .zip(&prep.masks)
                .map(|(m, r)| WirePlaintext((m + n - r) % n))
                .collect();
            encoded.iter_mut().for_each(wipe);
            ClientMessage::InferMasked(InferMasked {
                request_id,
                prep_id: prep.prep_id,
                layer,
                masked,
            })
        } else {
            encoded.iter_mut().for_each(wipe);
            let mut rng = self.rng.clone();
            let (activations, used) = self.encrypt_pooled(&plain, 0, &mut rng)?;
            self.obfuscators.drain(..used);
            self.rng = rng;
            ClientMessage::Infer(InferRequest {
                request_id,
                layer,
                samples: samples as u32,
                packing,
                row_packing,
                activations,
            })
        };
        self.pending = Some(Pending {
            request_id,
            layer,
            packing,
            row_packing,
            positions,
            inputs,
        });
        Ok(msg)
    }

    /// Handles the server's answer: the request for the next layer, or the result.
    /// On error the state is unchanged.
    ///
    /// # Errors
    /// [`ClientError::Violation`] for every fault of the answer:
    /// [`ProtocolViolation::NoRequest`], [`ProtocolViolation::WrongRequest`],
    /// [`ProtocolViolation::WrongLayer`], [`ProtocolViolation::Packing`],
    /// [`ProtocolViolation::Shape`], [`ProtocolViolation::Ciphertext`],
    /// [`ProtocolViolation::Range`]; [`ProtocolViolation::OutOfTurn`] for a message other
    /// than an inference answer.
    pub fn handle(&mut self, msg: &ServerMessage) -> Result<InferStep> {
        self.answer(msg).map_err(ClientError::blame_peer)
    }

    /// [`InferenceClient::handle`] before the faults of the answer are classified as
    /// violations.
    fn answer(&mut self, msg: &ServerMessage) -> Result<InferStep> {
        let ServerMessage::Inferred(r) = msg else {
            return Err(ProtocolViolation::OutOfTurn {
                expected: "InferResponse".into(),
                found: msg.kind(),
            }
            .into());
        };
        let p = self.pending.as_ref().ok_or(ProtocolViolation::NoRequest)?;
        let z = self.read_response(p, r)?;
        let layer = p.layer as usize;
        let request_id = p.request_id;
        if layer < self.spec.num_layers() {
            let act = self.spec.activation(layer).unwrap_or(Activation::Identity);
            let frac = self.layer(layer)?.pre_activation_frac(&self.scales);
            let a = activate_at(act, z.view(), frac, &self.scales)?;
            return self
                .request(request_id, p.layer + 1, a)
                .map(InferStep::Next);
        }
        let predictions: Vec<usize> = z.rows().into_iter().map(argmax).collect();
        let mut probs = Array2::<f64>::zeros(z.dim());
        for (s, row) in z.rows().into_iter().enumerate() {
            let x: Vec<f64> = row
                .iter()
                .map(|&v| self.scales.decode(ValueKind::PreActivation, v))
                .collect();
            let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, ej) in e.iter().enumerate() {
                probs[[s, j]] = ej / sum;
            }
        }
        self.pending = None;
        Ok(InferStep::Done(predictions, probs))
    }

    /// Checks and decrypts an answer: the `B × m` pre-activations at `2^(fa+fw)`.
    fn read_response(&self, p: &Pending, r: &InferResponse) -> Result<Array2<i128>> {
        if r.request_id != p.request_id {
            return Err(ProtocolViolation::WrongRequest {
                expected: p.request_id,
                found: r.request_id,
            }
            .into());
        }
        if r.layer != p.layer {
            return Err(ProtocolViolation::WrongLayer {
                expected: p.layer,
                found: r.layer,
            }
            .into());
        }
        let samples = p.inputs.nrows();
        if r.samples as usize != samples {
            return Err(ProtocolViolation::Shape {
                what: "inference samples",
                expected: samples,
                found: r.samples as usize,
            }
            .into());
        }
        if r.packing != p.packing {
            return Err(ProtocolViolation::Packing { found: r.packing }.into());
        }
        let (width, fan_in) = self.spec.layer_shape(p.layer as usize);
        let map = self.layer(p.layer as usize)?;
        let pk = self.key.public_key();
        if p.positions {
            return self.read_positions(map, p, r);
        }
        // The server chooses the slot width up to the static one (`inference_row_packing`).
        let valid = if p.row_packing {
            row_packing_is_valid(r.row_packing, &self.scales, fan_in, width, pk.bits())
        } else {
            r.row_packing == Packing::NONE
        };
        if !valid {
            return Err(ProtocolViolation::Packing {
                found: r.row_packing,
            }
            .into());
        }
        let expected_rows = r.row_packing;
        let groups = group_sizes(samples, p.packing.samples_per_ciphertext);
        let per_group = if expected_rows == Packing::NONE {
            width
        } else {
            group_sizes(width, expected_rows.samples_per_ciphertext).len()
        };
        let raw = self.decrypt_counted(&r.pre_activations, per_group * groups.len())?;
        let n = pk.n();
        let mut z = Array2::<i128>::zeros((samples, width));
        let kind = ValueKind::PreActivation;
        let extra = map.pool_bits();
        let mut start = 0;
        for (g, &size) in groups.iter().enumerate() {
            let block = &raw[g * per_group..(g + 1) * per_group];
            if expected_rows == Packing::NONE {
                for (j, v) in block.iter().enumerate() {
                    let slots = unpack_signed(&centered(v, n), size, p.packing.slot_bits)?;
                    for (s, x) in slots.iter().enumerate() {
                        z[[start + s, j]] = self.scales.check_big_with(kind, x, extra)?;
                    }
                }
            } else {
                let shift = BigInt::from(1u8) << (expected_rows.slot_bits - 1);
                let rows = group_sizes(width, expected_rows.samples_per_ciphertext);
                let mut j = 0;
                for (v, &count) in block.iter().zip(&rows) {
                    for slot in unpack_unsigned(v, count, expected_rows.slot_bits)? {
                        z[[start, j]] = self
                            .scales
                            .check_big(kind, &(BigInt::from(slot) - &shift))?;
                        j += 1;
                    }
                }
            }
            start += size;
        }
        Ok(z)
    }

    /// The linear map of layer `i ∈ 1..=L`.
    fn layer(&self, i: usize) -> Result<&LinearLayer> {
        crate::role::layer_at(&self.layers, i)
    }

    /// A position-packed answer (one sample, conv layer `map`): `f` ciphertexts per group
    /// of output positions, filter-major within the group, each holding the group's
    /// outputs of its filter in signed slots; the `1 × n_i` pre-activations.
    fn read_positions(
        &self,
        map: &LinearLayer,
        p: &Pending,
        r: &InferResponse,
    ) -> Result<Array2<i128>> {
        if r.row_packing != Packing::NONE {
            return Err(ProtocolViolation::Packing {
                found: r.row_packing,
            }
            .into());
        }
        let q = map.output_positions();
        let groups = group_sizes(q, p.packing.samples_per_ciphertext);
        let f = map.filters();
        let raw = self.decrypt_counted(&r.pre_activations, f * groups.len())?;
        let n = self.key.public_key().n();
        let mut z = Array2::<i128>::zeros((1, map.width()));
        let mut start = 0;
        for (g, &size) in groups.iter().enumerate() {
            for filter in 0..f {
                let v = &raw[g * f + filter];
                let slots = unpack_signed(&centered(v, n), size, p.packing.slot_bits)?;
                for (s, x) in slots.iter().enumerate().take(size) {
                    z[[0, filter * q + start + s]] =
                        self.scales
                            .check_big_with(ValueKind::PreActivation, x, map.pool_bits())?;
                }
            }
            start += size;
        }
        Ok(z)
    }

    /// [`InferenceClient::decrypt_own`] of an answer that must hold `count` ciphertexts.
    ///
    /// # Errors
    /// [`ProtocolViolation::Shape`] for another count; ciphertext errors.
    fn decrypt_counted(&self, cs: &[Ciphertext], count: usize) -> Result<Vec<BigUint>> {
        if cs.len() != count {
            return Err(ProtocolViolation::Shape {
                what: "inference pre-activations",
                expected: count,
                found: cs.len(),
            }
            .into());
        }
        self.decrypt_own(cs)
    }

    /// Blinded decryption of the server's answers (as [`crate::Client`]'s, docs/DESIGN.md
    /// "Side channels"): blinding factors from a stream seeded by the operating system.
    fn decrypt_own(&self, cs: &[Ciphertext]) -> Result<Vec<BigUint>> {
        self.key.public_key().validate_all(cs)?;
        Ok(self
            .key
            .decrypt_raw_blinded_batch(cs, &mut gelunet_protocol::randomness::os_rng())?)
    }
}
