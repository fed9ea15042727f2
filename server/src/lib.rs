//! The server of GELU-Net (Zhang et al., IJCAI-18) for gelunet: a state machine with no
//! I/O, one file per algorithm of the paper (docs/DESIGN.md "One iteration", "Sessions
//! and the d_max bound").
//!
//! | module | contents | source |
//! | --- | --- | --- |
//! | [`role`] | [`Server`], [`ServerConfig`], registration, sessions, [`Server::handle`] | |
//! | [`forward`] | `[z~] = W~ ⊗ [a] ⊕ b~` | paper Alg. 1 |
//! | [`backward`] | `[q~] = [δ]ᵀ ⊗ W~` | paper Alg. 2 |
//! | [`masked_update`] | `D = Dec_s([D]_s)`, `w~ ← w~ − D` | paper Alg. 3 |
//! | [`final_update`] | `w^F = w^I − η·ΔW^c` | paper Alg. 5 |
//! | [`inference`] | [`Server::infer`], row packing | paper Alg. 1, true weights |
//! | [`preprocessed`] | [`Server::prepare_infer`], [`Server::infer_masked`]: the linear layers offline on one-time masks | docs/DESIGN.md "Preprocessed inference" |
//! | [`plain_update`] | protocol v2: `W~ ← W~ − D`, the mask rollover, release | docs/DESIGN.md "Protocol v2" |
//! | [`coordinator`] | [`Coordinator`]: registration, reconnection, timeouts, scheduling, stop rule, training log, without I/O or clock | |
//! | [`stop`] | [`StopRule`] | |
//!
//! Faults of a client's message are [`gelunet_protocol::ProtocolViolation`]s
//! ([`ServerError::Violation`]), shared with the client.
//!
//! The crate does no I/O and depends on neither the client nor any runtime: the
//! in-memory driver is `gelunet-sim`, the QUIC shell `gelunet-shell`.

pub mod backward;
pub mod checkpoint;
pub mod coordinator;
mod error;
pub mod final_update;
pub mod forward;
pub mod inference;
mod linear;
pub mod masked_update;
pub mod plain_update;
pub mod preprocessed;
pub mod role;
pub mod stop;

pub use checkpoint::{Checkpoint, CheckpointError, ClientRecord, ModelState, RunFingerprint};
pub use coordinator::{
    Action, ClientLog, ConnectionId, Coordinator, CoordinatorConfig, CoordinatorError, Input,
    LinkError, ServerEvent, SessionLog, Traffic, TrainingLog,
};
pub use error::{Result, ServerError};
pub use plain_update::V2Checkpoint;
pub use preprocessed::{Preparations, MAX_PREPARATIONS};
pub use role::{
    ClientId, DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig, SessionOutcome,
    MAX_INFER_SAMPLES,
};
pub use stop::{StopReason, StopRule};
