//! The server of GELU-Net (Zhang et al., IJCAI-18) for gelunet.
//!
//! - [`role`]: the server's state machine with no I/O (paper Alg. 1, 2, 3, 5 on the
//!   server side; docs/DESIGN.md "One iteration", "Sessions and the d_max bound").
//!
//! The crate does no I/O and depends on neither the client nor any runtime: the
//! in-memory driver is `gelunet-sim`, the QUIC shell `gelunet-shell`.

mod error;
pub mod role;
pub mod stop;

pub use error::{Result, ServerError};
pub use role::{
    ClientId, DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig, SessionOutcome,
    MAX_INFER_SAMPLES,
};
pub use stop::{StopReason, StopRule};
