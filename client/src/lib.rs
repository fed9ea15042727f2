//! The client (data owner) of GELU-Net (Zhang et al., IJCAI-18) for gelunet.
//!
//! [`role`]: the client's state machine with no I/O (paper Alg. 1–5 on the client side:
//! encrypt activations and errors, decrypt and unmask pre-activations and backward
//! products, apply the real activations, compute and mask gradients, keep the randomness
//! ledger, send the final update). See docs/DESIGN.md "One iteration".
//!
//! [`infer`]: encrypted inference with the trained model ([`InferenceClient`]).
//!
//! The crate does no I/O and depends on neither the server nor any runtime: the QUIC
//! shell that drives it is `gelunet-shell`.

mod error;
pub mod infer;
pub mod role;

pub use error::{ClientError, Result};
pub use infer::{InferStep, InferenceClient, InferenceConfig};
pub use role::{Client, ClientConfig, LedgerCopy, TranscriptEntry};
