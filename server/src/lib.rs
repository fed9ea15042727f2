//! The server of GELU-Net (Zhang et al., IJCAI-18) for gelunet.
//!
//! - [`role`]: the server's state machine with no I/O (paper Alg. 1, 2, 3, 5 on the
//!   server side; DESIGN.md "One iteration", "Sessions and the d_max bound").
//! - [`sim`] (feature `sim`, on by default): an in-memory driver wiring a server to
//!   in-process clients, counting messages and bytes.
//! - [`quic`] (feature `quic`, on by default): the role behind a QUIC endpoint
//!   (registration with name and token, scheduling, disconnects, encrypted inference).

mod error;
#[cfg(feature = "quic")]
pub mod quic;
pub mod role;
#[cfg(feature = "sim")]
pub mod sim;

pub use error::{Result, ServerError};
pub use role::{
    ClientId, DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig, SessionOutcome,
    MAX_INFER_SAMPLES,
};
