//! The shell's envelope: the frames around the protocol messages on a QUIC stream
//! (registration, refusal, end-of-training summary). Both shells and the I/O-free
//! coordinator speak it; see `docs/DESIGN.md` "Wire protocol and processes".
//!
//! ```text
//! client → server  Register { name, token, samples }
//! server → client  Welcome(ServerHello)          or Refused { code, detail } and close
//! client → server  Message(ClientHello)
//! server → client  Registered { client, incarnation, batches }   or Refused
//! server → client  Message(SessionStart | ForwardResponse | …)     sessions, as scheduled
//! client → server  Message(ForwardRequest | …)
//! server → client  Release(v, ν_v)        protocol v2, one client, when training stops
//! client → server  Release(v, s_v)
//! server → client  Finished(Summary)
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::messages::{ClientMessage, ServerHello, ServerMessage};
use crate::v2::ModelVersion;

/// Version of the shell's framing ([`ToServer`], [`ToClient`]); 2 since `Registered`
/// carries the client's completed batches (checkpoint and resume).
pub const SHELL_VERSION: u16 = 2;

/// A client's plaintext reproduction hint, sent only by clients whose data share and seed
/// are derived from public parameters (reproducible experiments): which share of the
/// public seeded split it holds and its role seed, so that the server can rebuild the
/// plaintext fixed-point reference and check exactness. Real deployments leave it out;
/// a server admits it only when allowed (`gelunet serve --insecure-reproducible`), since
/// the client's masks derive from that seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceHint {
    /// Index of the client's share in the seeded split.
    pub share: u32,
    /// The client's seed (`Randomness::InsecureReproducible { seed }` of its
    /// `gelunet_client::ClientConfig::randomness`).
    pub client_seed: u64,
}

/// Client → server: the first frame of a connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// [`SHELL_VERSION`].
    pub version: u16,
    /// The client's name, as configured on the server.
    pub name: String,
    /// The client's secret token (compared in constant time by the server).
    pub token: String,
    /// Number of training samples the client holds (for epoch accounting).
    pub samples: u64,
    /// Reproduction hint (reproducible experiments only).
    pub reference: Option<ReferenceHint>,
}

crate::redacted_debug!(Register { version, name, samples, reference } secret { token });

/// Every frame a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToServer {
    /// Registration (first frame).
    Register(Register),
    /// A protocol message.
    Message(ClientMessage),
    /// Protocol v2: the answer to [`ToClient::Release`], the version's seed.
    Release(ReleaseSeed),
}

/// Protocol v2, client → server at the end of training: the seed `s_v` of the version the
/// server asked to release (`docs/DESIGN.md` "Release"); never the group key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSeed {
    /// The version `v`.
    pub version: u64,
    /// `s_v = HKDF(k; model_id ‖ v ‖ ν_v)`.
    pub seed: [u8; 32],
}

crate::redacted_debug!(ReleaseSeed { version } secret { seed });

/// Why the server refused a client or closed its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    /// Another shell version.
    Version,
    /// Unknown client name or wrong token.
    Unauthenticated,
    /// A known client presenting another public key than at its first registration.
    KeyMismatch,
    /// Registration is closed (training has started) for a client never seen before.
    RegistrationClosed,
    /// The client's hello or key was refused by the server role.
    Handshake,
    /// A malformed, oversized or out-of-order frame.
    Protocol,
    /// The client took too long to answer.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
}

/// The server's refusal, sent before it closes the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The class of refusal.
    pub code: RefusalCode,
    /// Human-readable detail (no secrets).
    pub detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.detail)
    }
}

/// End-of-training summary sent to every connected client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Sessions completed (Alg. 5 applied), all clients.
    pub sessions: u64,
    /// Sessions completed by the receiving client.
    pub your_sessions: u64,
    /// Sessions abandoned and rolled back, all clients.
    pub abandoned: u64,
    /// Training samples processed in completed sessions, all clients.
    pub samples: u64,
    /// Epochs completed (samples processed / samples held by the clients).
    pub epochs: f64,
    /// Why training stopped.
    pub reason: String,
}

/// Every frame the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    /// Credentials accepted; the protocol handshake follows.
    Welcome(ServerHello),
    /// Public key accepted: the client takes part.
    Registered {
        /// The client's index in the server role.
        client: u32,
        /// How many times this client has registered before (0: first time).
        incarnation: u32,
        /// Mini-batches this client drew in its completed sessions so far (the sum of
        /// their iterations): the client fast-forwards its freshly seeded sampler by this
        /// many batches ([`crate::data::BatchSampler::skip`]), so that after a reconnection
        /// or a server resumed from its checkpoint it draws the batches an uninterrupted
        /// run would (docs/DESIGN.md "Checkpoint and resume"). 0 for inference.
        batches: u64,
    },
    /// Refused; the server closes the connection.
    Refused(Refusal),
    /// A protocol message.
    Message(ServerMessage),
    /// Training is over.
    Finished(Summary),
    /// Protocol v2: training is over; release this model version (answer with
    /// [`ToServer::Release`]).
    Release(ModelVersion),
}
