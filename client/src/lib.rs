//! The client (data owner) of GELU-Net (Zhang et al., IJCAI-18) for gelunet: a state
//! machine with no I/O, one file per algorithm of the paper (docs/DESIGN.md "One
//! iteration").
//!
//! | module | contents | source |
//! | --- | --- | --- |
//! | [`role`] | [`Client`], [`ClientConfig`], the handshake, sessions, [`Client::handle`] | |
//! | [`forward`] | encrypt `a`, decrypt `z~`, apply the activation | paper Alg. 1 |
//! | [`unmask`] | `z = z~ + R^w·a + R^b`, `q = q~ + δ·R^w` (mod `N_c`) | paper Alg. 4 |
//! | [`backward`] | errors `δ`, gradients, accumulators | paper Alg. 2 |
//! | [`masked_update`] | draw `r`, send `[D]_s`, `R ← R + r` | paper Alg. 3 |
//! | [`final_update`] | send `[ΔW^c]_s, [Δb^c]_s` | paper Alg. 5 |
//! | [`ledger`] | the randomness ledger `R^w, R^b`, zeroized on drop | paper Alg. 3–5 |
//! | [`infer`] | encrypted inference with the trained model ([`InferenceClient`]) | paper Alg. 1 |
//!
//! Faults of a server's message are [`gelunet_protocol::ProtocolViolation`]s
//! ([`ClientError::Violation`]), shared with the server.
//!
//! The crate does no I/O and depends on neither the server nor any runtime: the QUIC
//! shell that drives it is `gelunet-shell`.

pub mod backward;
mod error;
pub mod final_update;
pub mod forward;
pub mod infer;
pub mod ledger;
pub mod masked_update;
pub mod plain_update;
pub mod reconnect;
pub mod role;
pub mod unmask;

pub use error::{ClientError, Result};
pub use infer::{InferStep, InferenceClient, InferenceConfig};
pub use reconnect::{Backoff, ReconnectPolicy};
pub use role::{BackwardEntry, Client, ClientConfig, ClientPolicy, LedgerCopy, TranscriptEntry};
