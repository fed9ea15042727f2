//! Protocol v2's public parameters and plaintext update messages (`docs/DESIGN.md`
//! "Protocol v2"): the server never holds a true weight.
//!
//! # A session, client `c`, `d ≥ 1` iterations
//!
//! ```text
//! server → client  SessionStart { d, v, ν_v, η_s }                 client: R ← P_v
//! (forward and backward exactly as in the paper's form, on W~)
//! client → server  PlainUpdate   { D_j = η_s·Δ_j + r_j }            j < d − 1; R ← R + r_j
//! server → client  UpdateApplied                                    server: W~ ← W~ − D_j
//! client → server  Rollover { ν', D = η_s·Δ_last + P_{v+1} − R }   j = d − 1
//! server → client  SessionEnd                                       W~ ← W~ − D; (v, ν) ← (v+1, ν')
//! ```
//!
//! # Who holds what
//!
//! - Public: everything in [`V2Params`], `η`, the session's `η_s ≤ η`
//!   ([`crate::learning_rate`]), the version `v` and its nonce `ν_v`, every
//!   `D` (statistically hidden by `r_j` or by `P_{v+1}`).
//! - Clients only: the group key `k` ([`crate::group_key`]), the ledger `R`, the gradients.
//! - Server only: nothing secret; it holds `W~ = W_v − P_v` ([`crate::version_mask`]).
//!
//! Invariant (exact over the integers): `W~ + R = W` after every message, and
//! `W~ + P_v` equals the plaintext fixed-point reference after every completed session.

use num_bigint::BigInt;
use serde::{Deserialize, Serialize};

use crate::fixed::{Scales, ValueKind};
use crate::group_key::{ModelId, VersionNonce};
use crate::mask::{MaskMode, MaskTarget};
use crate::version_mask::MaskWidths;

/// Which protocol a run speaks.
///
/// With the `clap` feature it is a `clap::ValueEnum` (`v2`, `paper`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Protocol {
    /// Protocol v2 (the default): masked weights only, plaintext masked updates, no
    /// server key pair for training (`docs/DESIGN.md` "Protocol v2").
    #[default]
    V2,
    /// The paper's form: true weights between sessions, `[D]_s` under the server key and
    /// the final update Alg. 5 (leaks each session's summed gradient to the server).
    Paper,
}

impl Protocol {
    /// `"v2"` or `"paper"`, as on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Paper => "paper",
        }
    }
}

/// The smallest statistical mask width `σ` a v2 party accepts.
pub const MIN_SIGMA: u32 = 128;

/// Protocol v2's public parameters, sent in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Params {
    /// The run's public model identifier.
    pub model_id: ModelId,
    /// The statistical mask width `σ`.
    pub sigma: u32,
    /// The learning rate `η` at `2^fe` (public in v2: the client computes `η_s·Δ`): the
    /// largest rate a session may use; each session's `η_s ≤ η` comes in
    /// `SessionStart::learning_rate` ([`crate::learning_rate`]).
    pub eta: i128,
    /// `λ_w = B_w + σ`, `λ_b = B_b + σ`: the widths of the version masks `P_v`.
    pub widths: MaskWidths,
}

impl V2Params {
    /// The parameters for `scales`, `sigma` and the learning rate `eta` (at `2^fe`):
    /// `B_w`, `B_b` are the bits of the largest weight and bias the scales allow.
    pub fn new(model_id: ModelId, scales: &Scales, sigma: u32, eta: i128) -> Self {
        Self {
            model_id,
            sigma,
            eta,
            widths: MaskWidths {
                weight_bits: scales.max_bits(ValueKind::Weight) + sigma,
                bias_bits: scales.max_bits(ValueKind::Bias) + sigma,
            },
        }
    }

    /// Bits of the per-iteration masks `r_j` for weights or biases: `σ + g`, where `g`
    /// bounds the bits of `|η·Δ|` ([`MaskMode::g_bits`]).
    pub fn update_mask_bits(&self, scales: &Scales, target: MaskTarget) -> u32 {
        self.sigma + MaskMode::g_bits(scales, target)
    }

    /// Whether these are the parameters `scales` and `sigma` imply (a client checks the
    /// server's handshake with it).
    pub fn is_consistent(&self, scales: &Scales) -> bool {
        *self == Self::new(self.model_id, scales, self.sigma, self.eta)
    }
}

/// The start of a v2 session: which model version the client masks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The version `v` (0 before the first completed session).
    pub version: u64,
    /// Its nonce `ν_v` (all zero for `v = 0`, whose mask is `P_0 = 0`).
    pub nonce: VersionNonce,
}

/// One layer's plaintext update values, row-major weights (`m·n`) and biases (`m`), at the
/// weight and bias scales (`2^fw`, `2^(fa+fw)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainLayerUpdate {
    /// `m·n` values, `[j·n + k]` for weight `w_jk`.
    pub weights: Vec<BigInt>,
    /// `m` values.
    pub biases: Vec<BigInt>,
}

/// Client → server: `D_j = η·Δ_j + r_j` in plaintext, every iteration but the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlainUpdate {
    /// Session identifier.
    pub session: u64,
    /// Iteration.
    pub iteration: u32,
    /// One entry per layer `1..=L`.
    pub layers: Vec<PlainLayerUpdate>,
}

/// Client → server: the last iteration's update, which rolls the mask over to
/// `P_{v+1}`: `D = η·Δ_last + P_{v+1} − R` with the fresh nonce `ν' = ν_{v+1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollover {
    /// Session identifier.
    pub session: u64,
    /// Iteration (`d − 1`).
    pub iteration: u32,
    /// The nonce of the new version.
    pub nonce: VersionNonce,
    /// One entry per layer `1..=L`.
    pub layers: Vec<PlainLayerUpdate>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_the_scales() {
        let scales = Scales::default();
        let p = V2Params::new(ModelId([0; 16]), &scales, MIN_SIGMA, 1 << 15);
        assert_eq!(
            p.widths.weight_bits,
            scales.max_bits(ValueKind::Weight) + 128
        );
        assert!(p.widths.bias_bits > p.widths.weight_bits);
        assert!(p.is_consistent(&scales));
        let mut bad = p;
        bad.widths.weight_bits -= 1;
        assert!(!bad.is_consistent(&scales));
        assert_eq!(Protocol::default(), Protocol::V2);
        assert_eq!(Protocol::Paper.name(), "paper");
    }
}
