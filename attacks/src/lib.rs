//! The privacy attacks of GELU-Net (Zhang et al., IJCAI-18), run against the real
//! protocol: real Paillier keys, the real server and client state machines, in memory
//! ([`gelunet_sim::Simulation`]), each attacker using only what its party sees.
//!
//! | module | attack | paper |
//! | --- | --- | --- |
//! | [`inversion`] | the server reconstructs a client's inputs from layer-1 gradients: per-iteration updates (Alg. 3) without and with masking, and the summed update `w^I − w^F` of each session (Alg. 5) | §4.3, Fig. 2 |
//! | [`extraction`] | a client solves for the server's layer-1 weights from its decrypted pre-activations, against the number of samples per session | §4.1, Prop. 2 |
//!
//! [`drive`] builds the runs and records both parties' views message by message,
//! [`linalg`] holds the least-squares and span machinery, [`plot`] the extraction curve
//! (the figures are drawn by `gelunet-plot`), [`data`] the datasets. The `gelunet attack`
//! subcommand is the front end.

pub mod data;
pub mod drive;
mod error;
pub mod extraction;
pub mod inversion;
pub mod linalg;
pub mod plot;

pub use error::{AttackError, Result};
