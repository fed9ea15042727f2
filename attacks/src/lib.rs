//! The privacy attacks of GELU-Net (Zhang et al., IJCAI-18), run against the real
//! protocol: real Paillier keys, the real server and client state machines, in memory
//! ([`gelunet_sim::Simulation`]), each attacker using only what its party sees.
//!
//! | module | attack | paper |
//! | --- | --- | --- |
//! | [`inversion`] | the server reconstructs a client's inputs from layer-1 gradients: per-iteration updates (Alg. 3) without and with masking, and the summed update `w^I − w^F` of each session (Alg. 5) | §4.3, Fig. 2 |
//! | [`extraction`] | a client solves for the server's layer-1 weights from its decrypted pre-activations, against the number of samples per session | §4.1, Prop. 2 |
//! | [`session_sum`] | the server rebuilds each session's inputs from the difference of its stored states: `w^I − w^F` under the paper's protocol (succeeds), `W~_v − W~_{v+1}` under v2 (no better than the data mean) | §4.3, Alg. 5; `docs/DESIGN.md` "Protocol v2" |
//! | [`kernel_extraction`] | a client recovers the first conv layer's kernels and biases from one sample's pre-activations (weight sharing: `oh·ow` equations in `c·k·k + 1` unknowns), against a dense row (1 equation) | `docs/DESIGN.md` "Convolutional layers" |
//! | [`output_layer`] | a client extracts the row-centered output layer from the backward products `q = δ_L·W_L` (`m_L − 1` samples), and the others' updates between its sessions | `docs/DESIGN.md` "Protocol v2" |
//!
//! [`drive`] builds the runs and records both parties' views message by message,
//! [`linalg`] holds the least-squares and span machinery, [`plot`] the extraction curve
//! (the figures are drawn by `gelunet-plot`), [`data`] the datasets. The `gelunet attack`
//! subcommand is the front end: its arguments and runs are the `cli` module (feature
//! `cli`).

#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod drive;
mod error;
pub mod extraction;
pub mod inversion;
pub mod kernel_extraction;
pub mod linalg;
pub mod output_layer;
pub mod plot;
pub mod session_sum;

pub use error::{AttackError, Result};
