//! The messages the two parties exchange (paper Alg. 1–5), versioned serde types.
//!
//! On the wire a message is `postcard(Envelope { version, body })` ([`to_wire`],
//! [`from_wire`]). Every ciphertext is a [`Ciphertext`] carrying the fingerprint of its key;
//! the receiver validates it ([`gelunet_paillier::PublicKey::validate_all`]) before use.
//! Activations and errors travel as vectors of `groups · width` ciphertexts, group-major
//! (`v[g·width + k]` is value `k` of the samples of group `g`): without packing a group is
//! one sample; with sample packing ([`crate::packing`], docs/DESIGN.md "Batches and packing")
//! a group is up to [`Packing::samples_per_ciphertext`] samples in signed slots. Masked and
//! final updates pack several parameters per ciphertext ([`UpdatePacking`]). Every
//! message states its layout, and the receiver checks it against the layout both sides
//! derive from the handshake ([`ServerHello::packing`]).
//!
//! One iteration of a session, for `L` layers:
//!
//! ```text
//! server → client  SessionStart { d, [η_s]_s }                       once per session
//! client → server  ForwardRequest  { layer i, [a_{i−1}]_c }         i = 1..=L
//! server → client  ForwardResponse { layer i, [z~_i]_c }
//! client → server  BackwardRequest { layer i, [δ_i]_c }             i = L..=2
//! server → client  BackwardResponse{ layer i, [q~]_c = [δ_i]ᵀ ⊗ W~_i }
//! client → server  MaskedUpdate { [D]_s per weight and bias }        iterations 0..d−1
//! server → client  UpdateApplied
//! client → server  FinalUpdate { [ΔW^c]_s, [Δb^c]_s }                after iteration d−1
//! server → client  SessionEnd
//! ```
//!
//! That is the paper's form (`Protocol::Paper`). Under protocol v2 (the default,
//! [`crate::v2`]) `SessionStart` carries the model version and the plaintext `η_s` instead of `[η]_s`, and the
//! updates travel in plaintext: `PlainUpdate { D_j }` every iteration but the last,
//! `Rollover { ν', D }` after the last; there is no `FinalUpdate`.
//!
//! Encrypted inference (paper Alg. 1 with the trained model, outside sessions, true
//! weights, no masks), one round trip per layer:
//!
//! ```text
//! client → server  Infer    { request, layer i, [a_{i−1}]_c }         i = 1..=L
//! server → client  Inferred { request, layer i, [z_i]_c }            (row-packed for one sample)
//! ```

use gelunet_paillier::{Ciphertext, KeyId};
use num_bigint::BigUint;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::fixed::Scales;
use crate::mask::MaskMode;
use crate::spec::ModelSpec;
use crate::v2::{ModelVersion, PlainUpdate, Rollover, V2Params};
use crate::{Error, Result};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 4;

/// Largest message accepted by [`from_wire`], in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How values are packed into ciphertexts ([`crate::packing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packing {
    /// Values per ciphertext (1: no packing): samples for activations and errors,
    /// parameters for updates, rows for row-packed inference responses.
    pub samples_per_ciphertext: u32,
    /// Width of each slot in bits (0 when unpacked).
    pub slot_bits: u32,
}

/// The layout of a masked or final update: weights and biases have slots of their own
/// widths ([`crate::packing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePacking {
    /// Layout of the weight ciphertexts (row-major weights, consecutive in the slots).
    pub weights: Packing,
    /// Layout of the bias ciphertexts.
    pub biases: Packing,
}

impl UpdatePacking {
    /// One value per ciphertext.
    pub const NONE: Self = Self {
        weights: Packing::NONE,
        biases: Packing::NONE,
    };
}

impl Packing {
    /// One value per ciphertext.
    pub const NONE: Self = Self {
        samples_per_ciphertext: 1,
        slot_bits: 0,
    };
}

impl Default for Packing {
    fn default() -> Self {
        Self::NONE
    }
}

/// A public key on the wire: its modulus `N` (big-endian bytes in postcard). The receiver
/// builds the key with `PublicKey::from_n_for_run`: test-size keys only when its
/// configuration explicitly allows test keys and the build has paillier's `hazmat` feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicModulus {
    /// `N`.
    #[serde(with = "gelunet_paillier::serde_biguint")]
    pub n: BigUint,
}

/// Server → client handshake: everything a client needs to train.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The architecture.
    pub spec: ModelSpec,
    /// The fixed-point scales and ranges.
    pub scales: Scales,
    /// The gradient mask the client must use.
    pub mask: MaskMode,
    /// Mini-batch size `B`.
    pub batch_size: u32,
    /// `PK_s` (the paper's protocol); `None` under protocol v2, which has no server key
    /// pair for training (and for an inference-only server).
    pub server_key: Option<PublicModulus>,
    /// Protocol v2's public parameters (`model_id`, `σ`, `η`, the mask widths); `None`
    /// for the paper's protocol ([`crate::v2`]).
    pub v2: Option<V2Params>,
    /// Whether this run packs values ([`crate::packing`]): samples of a mini-batch per
    /// ciphertext, several parameters per masked or final update ciphertext. Both sides
    /// derive the layouts from the spec, scales, batch size and key sizes.
    pub packing: bool,
}

impl ServerHello {
    /// The largest frame either party of this run needs to receive after the handshake,
    /// in bytes, for mini-batches of at most `batch` samples (at least the hello's
    /// `batch_size`): [`ModelSpec::max_message_len`] (every message carries at most
    /// `max(P, w·B)` values, each counted as a ciphertext of the largest key, 4096 bits,
    /// plus [`crate::spec::MESSAGE_OVERHEAD`], 64 KiB, as margin). The server's shell
    /// bounds a registered client's frames by it, the client's shell the server's
    /// (docs/DESIGN.md "Wire protocol and processes").
    pub fn max_message_len(&self, batch: usize) -> usize {
        let batch = batch.max(usize::try_from(self.batch_size).unwrap_or(usize::MAX));
        self.spec.max_message_len(batch)
    }
}

/// Client → server handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The fingerprint of the server key the client accepted (`None` under protocol v2).
    pub server_key_id: Option<KeyId>,
    /// `PK_c`.
    pub client_key: PublicModulus,
}

/// Server → client: a session begins (Alg. 1 input, Alg. 2 line 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    /// Session identifier (unique per server run).
    pub session: u64,
    /// Number of iterations `d` of this session.
    pub iterations: u32,
    /// `[η]_s`, the learning rate at `2^fe` under the server key (paper's protocol;
    /// `None` under v2, where `η` is public in [`V2Params`]).
    pub eta: Option<Ciphertext>,
    /// The model version the session starts from and its nonce (protocol v2: the client
    /// sets its ledger to `P_v`); `None` for the paper's protocol.
    pub version: Option<ModelVersion>,
    /// Protocol v2: the session's public learning rate `η_s` at `2^fe`, `1 ≤ η_s ≤ η` of
    /// [`V2Params`] (crate::learning_rate; the client refuses another value); `None` for
    /// the paper's protocol, where `[η]_s` carries it. Added in version 4.
    pub learning_rate: Option<i128>,
}

/// Client → server: `[a_{i−1}]_c` for layer `i` (Alg. 1 line 4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Session identifier.
    pub session: u64,
    /// Iteration `0..d`.
    pub iteration: u32,
    /// Layer `i ∈ 1..=L`.
    pub layer: u32,
    /// Packing of the ciphertexts.
    pub packing: Packing,
    /// `groups · n_{i−1}` ciphertexts under `PK_c`, group-major, at `2^fa`.
    pub activations: Vec<Ciphertext>,
}

/// Server → client: `[z~_i]_c = W~_i ⊗ [a_{i−1}]_c ⊕ b~_i` (Alg. 1 line 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardResponse {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
    /// Layer `i`.
    pub layer: u32,
    /// Packing of the ciphertexts.
    pub packing: Packing,
    /// `groups · n_i` ciphertexts under `PK_c`, at `2^(fa+fw)` once unmasked.
    pub pre_activations: Vec<Ciphertext>,
}

/// Client → server: `[δ_i]_c` for the backward product through layer `i ≥ 2` (Alg. 2
/// line 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackwardRequest {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
    /// Layer `i ∈ 2..=L` whose error this is.
    pub layer: u32,
    /// Packing of the ciphertexts.
    pub packing: Packing,
    /// `groups · n_i` ciphertexts under `PK_c`, at `2^fd`.
    pub errors: Vec<Ciphertext>,
}

/// Server → client: `[q~]_c = [δ_i]_cᵀ ⊗ W~_i` (Alg. 2 line 6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackwardResponse {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
    /// Layer `i` whose weights were used.
    pub layer: u32,
    /// Packing of the ciphertexts.
    pub packing: Packing,
    /// `groups · n_{i−1}` ciphertexts under `PK_c`, at `2^(fd+fw)` once unmasked.
    pub products: Vec<Ciphertext>,
}

/// Ciphertexts for the parameters of one layer, under `PK_s`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCiphertexts {
    /// Unpacked: `m · n` ciphertexts, row-major (`[j·n + k]` is weight `w_jk`); packed:
    /// `⌈m·n / k⌉` ciphertexts holding the row-major weights `k` per ciphertext.
    pub weights: Vec<Ciphertext>,
    /// `m` ciphertexts, or `⌈m / k⌉` packed.
    pub biases: Vec<Ciphertext>,
}

/// Client → server: `[D]_s = ([η]_s ⊗ Δ) ⊕ [r]_s` for every parameter (Alg. 3), sent after
/// every iteration but the last of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedUpdate {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
    /// The layout of the ciphertexts ([`UpdatePacking::masked`]).
    pub packing: UpdatePacking,
    /// One entry per layer `1..=L`.
    pub layers: Vec<LayerCiphertexts>,
}

/// Server → client: the masked update of an iteration was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApplied {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
}

/// Client → server: `[ΔW^c]_s`, `[Δb^c]_s`, the session's accumulated gradients at the
/// "as sent" scales (Alg. 5), after the last iteration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalUpdate {
    /// Session identifier.
    pub session: u64,
    /// The layout of the ciphertexts ([`UpdatePacking::final_update`]).
    pub packing: UpdatePacking,
    /// One entry per layer `1..=L`.
    pub layers: Vec<LayerCiphertexts>,
}

/// Server → client: the session is over and the model updated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnd {
    /// Session identifier.
    pub session: u64,
    /// Iterations completed.
    pub iterations: u32,
}

/// Either side: abandon the session (the server rolls back to `w^I, b^I`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    /// Session identifier.
    pub session: u64,
    /// Human-readable reason (no secrets).
    pub reason: String,
}

/// Client → server: an encrypted inference step (paper Alg. 1 with the trained model):
/// `[a_{i−1}]_c` for layer `i`, answered with the true weights (no masks) by
/// [`InferResponse`]. Independent of training sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferRequest {
    /// Chosen by the client, echoed in the response.
    pub request_id: u64,
    /// Layer `i ∈ 1..=L`.
    pub layer: u32,
    /// Number of samples `B ≥ 1` of the request.
    pub samples: u32,
    /// Sample packing of the activations ([`crate::packing::inference_packing`]).
    pub packing: Packing,
    /// Ask for row-packed pre-activations (one sample per group only): the server packs
    /// the `m` outputs of a sample into `⌈m·β/(|N_c| − 2)⌉` ciphertexts.
    pub row_packing: bool,
    /// `groups · n_{i−1}` ciphertexts under `PK_c`, group-major, at `2^fa`.
    pub activations: Vec<Ciphertext>,
}

/// Server → client: `[z_i]_c = W_i ⊗ [a_{i−1}]_c ⊕ b_i` with the true weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The request's id.
    pub request_id: u64,
    /// Layer `i`.
    pub layer: u32,
    /// Number of samples (as requested).
    pub samples: u32,
    /// Sample packing (as requested).
    pub packing: Packing,
    /// Row packing chosen by the server ([`crate::packing::inference_row_packing`], at most
    /// the static [`crate::packing::row_packing`]) or [`Packing::NONE`].
    pub row_packing: Packing,
    /// Without row packing: `groups · n_i` ciphertexts, group-major, at `2^(fa+fw)`.
    /// With row packing: `B · ⌈n_i / k⌉` ciphertexts, sample-major, slot `r` of
    /// ciphertext `c` holding `z_{c·k + r} + 2^(β−1)`.
    pub pre_activations: Vec<Ciphertext>,
}

/// Client → server, offline (docs/DESIGN.md "Preprocessed inference"): the encrypted
/// one-time masks `[r]_c` of one single-sample layer request, in the layout that layer's
/// [`InferRequest`] would have (`n_{i−1}` ciphertexts of a dense layer, row-packed
/// answer; a conv layer's position-packed im2col groups). The server computes its answer
/// on `[r]_c` now and keeps it for one later [`InferMasked`] with the same `prep_id`.
/// The masks `r` are uniform in `Z_N` and known only to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferPrepare {
    /// Chosen by the client, unique among its preparations on this connection.
    pub prep_id: u64,
    /// Layer `i ∈ 1..=L`.
    pub layer: u32,
    /// [`Packing::NONE`] for a dense layer, the layer's
    /// [`crate::packing::position_packing`] for a conv layer.
    pub packing: Packing,
    /// Row-packed answer (dense layers), as [`InferRequest::row_packing`].
    pub row_packing: bool,
    /// `[r]_c`, one per plaintext of the layer's request.
    pub masks: Vec<Ciphertext>,
}

/// Server → client: preparation `prep_id` of layer `layer` is held (its answer computed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferPrepared {
    /// The preparation's id.
    pub prep_id: u64,
    /// Its layer.
    pub layer: u32,
}

/// A plaintext of `Z_N` on the wire (big-endian bytes in postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePlaintext(#[serde(with = "gelunet_paillier::serde_biguint")] pub BigUint);

/// Client → server, online: layer `i`'s request of one sample against preparation
/// `prep_id`, as the masked plaintexts `d_k = m_k − r_k mod N` (`m_k` the plaintexts the
/// [`InferRequest`] would have encrypted). Answered by an [`InferResponse`] equal in
/// layout and plaintexts to the answer of that request; the preparation is used up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferMasked {
    /// Chosen by the client, echoed in the response.
    pub request_id: u64,
    /// The preparation of this layer.
    pub prep_id: u64,
    /// Layer `i`.
    pub layer: u32,
    /// `d_k ∈ [0, N)`, as many as the preparation's masks.
    pub masked: Vec<WirePlaintext>,
}

/// Broad classes of errors reported to the other side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Unsupported protocol version.
    Version,
    /// A message that does not fit the current state (out of turn, wrong session,
    /// iteration or layer).
    OutOfTurn,
    /// Wrong number of values or layers.
    Shape,
    /// A ciphertext that fails validation or is under the wrong key.
    Ciphertext,
    /// A value outside its fixed-point or mask range.
    Range,
    /// An unacceptable configuration or key.
    Config,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    /// The fixed text an [`ErrorReport`] of this code carries ([`ErrorReport::new`]): the
    /// same words for every error of the class, so that no decrypted value, bit length or
    /// other detail of the sender's state reaches the other party.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Version => "unsupported protocol version",
            Self::OutOfTurn => {
                "message out of turn (wrong state, session, iteration, layer or request)"
            }
            Self::Shape => "wrong number of values or layers, or an unexpected packing",
            Self::Ciphertext => "invalid ciphertext or ciphertext under the wrong key",
            Self::Range => "value outside its fixed-point or mask range",
            Self::Config => "unacceptable configuration or key",
            Self::Internal => "internal error",
        }
    }
}

/// Either side: a typed error answer to the last message; the sender's state is
/// unchanged and it may retry or abort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The session concerned, if any.
    pub session: Option<u64>,
    /// The class of error.
    pub code: ErrorCode,
    /// Human-readable detail (no secrets): [`ErrorCode::detail`] when built by
    /// [`ErrorReport::new`].
    pub detail: String,
}

impl ErrorReport {
    /// The report of an error of class `code` about `session`, with the code's fixed text
    /// ([`ErrorCode::detail`]) as its detail: what the sender knows about the error beyond
    /// its class (values, bit lengths, expected states) stays with the sender.
    pub fn new(session: Option<u64>, code: ErrorCode) -> Self {
        Self {
            session,
            code,
            detail: code.detail().into(),
        }
    }
}

/// Everything a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Handshake.
    Hello(ClientHello),
    /// Alg. 1 forward request.
    Forward(ForwardRequest),
    /// Alg. 2 backward request.
    Backward(BackwardRequest),
    /// Alg. 3 masked update.
    MaskedUpdate(MaskedUpdate),
    /// Alg. 5 final update.
    FinalUpdate(FinalUpdate),
    /// Encrypted inference request (outside sessions).
    Infer(InferRequest),
    /// Abandon the session.
    Abort(Abort),
    /// Error answer.
    Error(ErrorReport),
    /// Protocol v2: the plaintext masked update `D_j = η·Δ_j + r_j`.
    PlainUpdate(PlainUpdate),
    /// Protocol v2: the last iteration's update, rolling the mask over to `P_{v+1}`.
    Rollover(Rollover),
    /// Offline part of a preprocessed inference layer (outside sessions).
    InferPrepare(InferPrepare),
    /// Online part of a preprocessed inference layer.
    InferMasked(InferMasked),
}

/// Everything the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Handshake.
    Hello(ServerHello),
    /// A session begins.
    SessionStart(SessionStart),
    /// Alg. 1 forward response.
    Forward(ForwardResponse),
    /// Alg. 2 backward response.
    Backward(BackwardResponse),
    /// A masked update was applied.
    UpdateApplied(UpdateApplied),
    /// The session ended (Alg. 5 done).
    SessionEnd(SessionEnd),
    /// Encrypted inference response.
    Inferred(InferResponse),
    /// Abandon the session.
    Abort(Abort),
    /// Error answer.
    Error(ErrorReport),
    /// A preprocessed inference layer is held.
    InferPrepared(InferPrepared),
}

impl ClientMessage {
    /// Short name of the variant, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "ClientHello",
            Self::Forward(_) => "ForwardRequest",
            Self::Backward(_) => "BackwardRequest",
            Self::MaskedUpdate(_) => "MaskedUpdate",
            Self::FinalUpdate(_) => "FinalUpdate",
            Self::Infer(_) => "InferRequest",
            Self::Abort(_) => "Abort",
            Self::Error(_) => "Error",
            Self::PlainUpdate(_) => "PlainUpdate",
            Self::Rollover(_) => "Rollover",
            Self::InferPrepare(_) => "InferPrepare",
            Self::InferMasked(_) => "InferMasked",
        }
    }

    /// The ciphertexts the message carries (empty for the others).
    pub fn ciphertexts(&self) -> Vec<&Ciphertext> {
        match self {
            Self::Forward(m) => m.activations.iter().collect(),
            Self::Backward(m) => m.errors.iter().collect(),
            Self::MaskedUpdate(m) => layer_cts(&m.layers),
            Self::FinalUpdate(m) => layer_cts(&m.layers),
            Self::Infer(m) => m.activations.iter().collect(),
            Self::InferPrepare(m) => m.masks.iter().collect(),
            _ => Vec::new(),
        }
    }
}

impl ServerMessage {
    /// Short name of the variant, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "ServerHello",
            Self::SessionStart(_) => "SessionStart",
            Self::Forward(_) => "ForwardResponse",
            Self::Backward(_) => "BackwardResponse",
            Self::UpdateApplied(_) => "UpdateApplied",
            Self::SessionEnd(_) => "SessionEnd",
            Self::Inferred(_) => "InferResponse",
            Self::Abort(_) => "Abort",
            Self::Error(_) => "Error",
            Self::InferPrepared(_) => "InferPrepared",
        }
    }
}

fn layer_cts(layers: &[LayerCiphertexts]) -> Vec<&Ciphertext> {
    layers
        .iter()
        .flat_map(|l| l.weights.iter().chain(l.biases.iter()))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

/// Serializes a message as `postcard(Envelope { version: PROTOCOL_VERSION, body })`.
///
/// # Errors
/// [`Error::Codec`] if serialization fails.
pub fn to_wire<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(&Envelope {
        version: PROTOCOL_VERSION,
        body: msg,
    })
    .map_err(|e| Error::Codec {
        reason: e.to_string(),
    })
}

/// Parses what [`to_wire`] wrote.
///
/// # Errors
/// [`Error::Codec`] for an oversized or malformed message; [`Error::VersionMismatch`] for
/// another version.
pub fn from_wire<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Codec {
            reason: format!("{} bytes exceed {MAX_MESSAGE_BYTES}", bytes.len()),
        });
    }
    #[derive(Deserialize)]
    struct Version {
        version: u16,
    }
    let v: Version = postcard::take_from_bytes(bytes)
        .map(|(v, _)| v)
        .map_err(|e| Error::Codec {
            reason: e.to_string(),
        })?;
    if v.version != PROTOCOL_VERSION {
        return Err(Error::VersionMismatch {
            expected: PROTOCOL_VERSION,
            found: v.version,
        });
    }
    let env: Envelope<T> = postcard::from_bytes(bytes).map_err(|e| Error::Codec {
        reason: e.to_string(),
    })?;
    Ok(env.body)
}

/// Size of a message on the wire, in bytes.
///
/// # Errors
/// [`Error::Codec`].
pub fn wire_size<T: Serialize>(msg: &T) -> Result<usize> {
    Ok(to_wire(msg)?.len())
}
