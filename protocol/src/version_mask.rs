//! The masks `P_v` of protocol v2: the server only ever holds `W~ = W_v − P_v`
//! (`docs/DESIGN.md` "Protocol v2").
//!
//! `P_0 = 0` (the server's random initialization is public to it anyway). For `v ≥ 1`,
//! `P_v` is expanded from the version seed `s_v` ([`crate::group_key::VersionSeed`],
//! HKDF-SHA256 of the group key) by the ChaCha20 stream cipher used as a generator
//! (`rand_chacha::ChaCha20Rng::from_seed(s_v)`): independent uniform integers in
//! `[0, 2^λ_w)` for every weight and `[0, 2^λ_b)` for every bias, drawn layer by layer
//! (`i = 1 … L`), weights row-major (`m_i × n_{i−1}`) before the layer's biases (`m_i`).
//! That order is part of the protocol: every client derives the same `P_v`.
//!
//! # Who holds what
//!
//! - Clients: the group key, hence `P_v` for every version they know `(v, ν_v)` of.
//! - Server: `W~ = W_v − P_v` and the public `(model_id, v, ν_v, λ_w, λ_b)`; `P_v` only
//!   when a client releases version `v` (sends `s_v`).
//!
//! `W~` hides `W_v` within statistical distance about `2^(B−λ)` per value, where `B`
//! bounds the bits of the true value: `λ_w = B_w + σ`, `λ_b = B_b + σ` with `σ ≥ 128`.
//!
//! ```
//! use gelunet_protocol::group_key::{GroupKey, ModelId, VersionNonce};
//! use gelunet_protocol::version_mask::{MaskWidths, VersionMasks};
//! use gelunet_protocol::{Activation, ModelSpec};
//!
//! let spec = ModelSpec::new(vec![4, 3, 2], Activation::Sigmoid);
//! let widths = MaskWidths { weight_bits: 173, bias_bits: 197 };
//! let k = GroupKey::from_bytes([1; 32]);
//! let seed = k.version_seed(ModelId([2; 16]), 1, VersionNonce([3; 16]));
//! let p1 = VersionMasks::derive(&seed, &spec, widths);
//! assert_eq!(p1.layers()[0].weights.dim(), (3, 4));
//! assert!(p1.layers()[1].biases.iter().all(|b| b.bits() <= 197));
//! // Every client derives the same masks; the zero version has none.
//! assert_eq!(p1, VersionMasks::derive(&seed, &spec, widths));
//! assert!(VersionMasks::zero(&spec).is_zero());
//! ```

use std::fmt;

use ndarray::{Array1, Array2};
use num_bigint::{BigUint, RandBigInt};
use num_traits::Zero;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::group_key::VersionSeed;
use crate::spec::ModelSpec;

/// The mask widths `λ_w`, `λ_b` in bits (public, sent in the handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskWidths {
    /// `λ_w = B_w + σ`: weights' masks are uniform on `[0, 2^λ_w)`.
    pub weight_bits: u32,
    /// `λ_b = B_b + σ`: biases' masks are uniform on `[0, 2^λ_b)`.
    pub bias_bits: u32,
}

/// One layer's masks: `m × n` for the weights, `m` for the biases (both non-negative).
#[derive(Clone, PartialEq, Eq)]
pub struct LayerMask {
    /// Weight masks, `m_i × n_{i−1}`, each in `[0, 2^λ_w)`.
    pub weights: Array2<BigUint>,
    /// Bias masks, `m_i`, each in `[0, 2^λ_b)`.
    pub biases: Array1<BigUint>,
}

/// The masks `P_v` of one model version, layer by layer (secret to the clients; wiped on
/// drop, hidden from Debug).
#[derive(Clone, PartialEq, Eq)]
pub struct VersionMasks {
    layers: Vec<LayerMask>,
}

impl fmt::Debug for VersionMasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionMasks")
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

/// Overwrites a secret big integer's digits with zeros in place, then sets it to 0 (the
/// `Drop` of every secret made of `BigUint`s: masks, ledgers, one-time pads).
pub fn wipe(x: &mut BigUint) {
    let len = (x.bits() as usize).div_ceil(32);
    x.assign_from_slice(&vec![0u32; len.max(1)]);
    *x = BigUint::zero();
}

impl Drop for VersionMasks {
    fn drop(&mut self) {
        for l in &mut self.layers {
            l.weights.iter_mut().for_each(wipe);
            l.biases.iter_mut().for_each(wipe);
        }
    }
}

impl VersionMasks {
    /// `P_0 = 0` for `spec`.
    pub fn zero(spec: &ModelSpec) -> Self {
        let layers = (1..=spec.num_layers())
            .map(|i| {
                let (m, n) = spec.param_shape(i);
                LayerMask {
                    weights: Array2::from_elem((m, n), BigUint::zero()),
                    biases: Array1::from_elem(m, BigUint::zero()),
                }
            })
            .collect();
        Self { layers }
    }

    /// `P_v` expanded from the version seed (module docs for the order of the draws).
    pub fn derive(seed: &VersionSeed, spec: &ModelSpec, widths: MaskWidths) -> Self {
        let mut rng = ChaCha20Rng::from_seed(*seed.bytes());
        let layers = (1..=spec.num_layers())
            .map(|i| {
                let (m, n) = spec.param_shape(i);
                let weights = Array2::from_shape_simple_fn((m, n), || {
                    rng.gen_biguint(u64::from(widths.weight_bits))
                });
                let biases = Array1::from_shape_simple_fn(m, || {
                    rng.gen_biguint(u64::from(widths.bias_bits))
                });
                LayerMask { weights, biases }
            })
            .collect();
        Self { layers }
    }

    /// The layers' masks, `1 … L`.
    pub fn layers(&self) -> &[LayerMask] {
        &self.layers
    }

    /// Whether every mask is zero (`P_0`).
    pub fn is_zero(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.weights.iter().chain(l.biases.iter()).all(Zero::is_zero))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_key::{GroupKey, ModelId, VersionNonce};

    fn spec() -> ModelSpec {
        ModelSpec::new(vec![4, 3, 2], crate::Activation::Sigmoid)
    }

    const W: MaskWidths = MaskWidths {
        weight_bits: 173,
        bias_bits: 197,
    };

    #[test]
    fn masks_fill_their_widths_and_differ_per_version() {
        let k = GroupKey::from_bytes([5; 32]);
        let id = ModelId([6; 16]);
        let a = VersionMasks::derive(&k.version_seed(id, 1, VersionNonce([0; 16])), &spec(), W);
        let b = VersionMasks::derive(&k.version_seed(id, 2, VersionNonce([0; 16])), &spec(), W);
        assert_ne!(a, b);
        assert!(!a.is_zero());
        let all: Vec<&BigUint> = a.layers().iter().flat_map(|l| l.weights.iter()).collect();
        assert!(all.iter().all(|w| w.bits() <= 173));
        // Uniform on 173 bits: with 18 draws, some top bit is set and no two agree.
        assert!(all.iter().any(|w| w.bits() >= 170));
        let biases: Vec<&BigUint> = a.layers().iter().flat_map(|l| l.biases.iter()).collect();
        assert!(biases.iter().all(|b| b.bits() <= 197));
        assert!(biases.iter().any(|b| b.bits() > 173));
        assert_eq!(format!("{a:?}"), "VersionMasks { layers: 2, .. }");
    }

    #[test]
    fn zero_version_has_zero_masks_of_the_model_shape() {
        let z = VersionMasks::zero(&spec());
        assert!(z.is_zero());
        assert_eq!(z.layers()[0].weights.dim(), (3, 4));
        assert_eq!(z.layers()[1].biases.len(), 2);
    }
}
