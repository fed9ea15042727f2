//! The server of GELU-Net (Zhang et al., IJCAI-18) for gelunet.
//!
//! - [`role`]: the server's state machine with no I/O (paper Alg. 1, 2, 3, 5 on the
//!   server side; docs/DESIGN.md "One iteration", "Sessions and the d_max bound").
//! - [`coordinator`]: the policy around the role (registration, reconnection, timeouts,
//!   scheduling of connected clients, stop rule, training log) as a state machine with
//!   no I/O and no clock of its own, driven by the QUIC shell or an in-memory harness.
//! - [`stop`]: when training stops.
//!
//! The crate does no I/O and depends on neither the client nor any runtime: the
//! in-memory driver is `gelunet-sim`, the QUIC shell `gelunet-shell`.

pub mod coordinator;
mod error;
pub mod role;
pub mod stop;

pub use coordinator::{
    Action, ClientLog, ConnectionId, Coordinator, CoordinatorConfig, CoordinatorError, Input,
    LinkError, ServerEvent, SessionLog, Traffic, TrainingLog,
};
pub use error::{Result, ServerError};
pub use role::{
    ClientId, DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig, SessionOutcome,
    MAX_INFER_SAMPLES,
};
pub use stop::{StopReason, StopRule};
