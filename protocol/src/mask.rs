//! Gradient masks (paper Alg. 3, docs/DESIGN.md "Masked update") and the modular bookkeeping
//! of masked weights.
//!
//! For every weight the client sends `[D]_s = ([η]_s ⊗ Δw) ⊕ [r]_s`; the server decrypts
//! `D = η·Δw + r` (mod `N_s`) and sets `w~ ← w~ − D (mod N_c)`, the client sets
//! `R ← R + r (mod N_c)`, so `w~ + R ≡ w − η·Δw (mod N_c)` stays the true weight. `G`
//! bounds `|η·Δw|`: `G = 2^g` with `g = max_bits(η) + max_bits(Δw)` from the scales'
//! range checks ([`MaskMode::g_bits`]), so `η·Δw + r` never wraps mod `N_s`.
//!
//! | mode | `r` | server sees | `w~` |
//! | --- | --- | --- | --- |
//! | [`MaskMode::Statistical`] (default, `σ = 128`) | uniform on `[0, 2^(σ+g))` | `D` hides `η·Δw` within `2^−σ` | signed, ≈ `σ + g` bits |
//! | [`MaskMode::Uniform`] (paper: "uniform over `Z_N`") | uniform on `[G, N_s − G)` | `D` within `2G/N_s` of uniform | `|N_c|` bits |
//! | [`MaskMode::InsecureNone`] (attack demos only) | `0` | `η·Δw` in clear | true weights |

use num_bigint::{BigInt, BigUint, RandBigInt, Sign};
use num_traits::Zero;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::fixed::{Scales, ValueKind};
use crate::{Error, Result};

/// The statistical security parameter of the default mask.
pub const DEFAULT_SIGMA: u32 = 128;

/// How the client masks its gradients (chosen by the server, sent in the handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskMode {
    /// `r` uniform on `[0, 2^(σ + g))`: statistical hiding within about `d_max·2^−σ`.
    Statistical {
        /// The statistical security parameter `σ` (default 128).
        sigma: u32,
    },
    /// `r` uniform on `[G, N_s − G)` (the paper's mask; `|N|`-bit masked weights).
    Uniform,
    /// No mask at all (`r = 0`): the server learns every gradient. Insecure; only for the
    /// gradient-inversion attack demo (paper §4.3), refused unless the run is marked
    /// insecure.
    InsecureNone,
}

impl Default for MaskMode {
    fn default() -> Self {
        Self::Statistical {
            sigma: DEFAULT_SIGMA,
        }
    }
}

/// Which parameters a mask is for (weights and biases have different `G`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskTarget {
    /// Weights: `η·Δw` at `2^fw`.
    Weight,
    /// Biases: `η·Δb` at `2^(fa+fw)`.
    Bias,
}

impl MaskMode {
    /// Whether the mode gives up the gradient protection of Alg. 3.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Self::InsecureNone)
    }

    /// `g` with `G = 2^g > |η·Δ|` for the target: `max_bits(η) + max_bits(Δw or Δb)`.
    pub fn g_bits(scales: &Scales, target: MaskTarget) -> u32 {
        let grad = match target {
            MaskTarget::Weight => ValueKind::WeightGradient,
            MaskTarget::Bias => ValueKind::BiasGradient,
        };
        scales.max_bits(ValueKind::LearningRate) + scales.max_bits(grad)
    }

    /// Smallest key size (bits of `N_s` and `N_c`) with which this mode is exact for these
    /// scales: `D` must not wrap mod `N_s` and decode with its sign, masked weights after up
    /// to `2^16` updates and every plaintext the client decodes must fit the signed range.
    pub fn min_key_bits(&self, scales: &Scales) -> u64 {
        let g = u64::from(Self::g_bits(scales, MaskTarget::Bias));
        let values = u64::from(
            scales
                .max_bits(ValueKind::PreActivation)
                .max(scales.max_bits(ValueKind::Product)),
        );
        let mask = match self {
            Self::Statistical { sigma } => u64::from(*sigma) + g + 16,
            Self::Uniform | Self::InsecureNone => g,
        };
        mask.max(values) + 2
    }

    /// Draws a mask `r` for one parameter (paper Alg. 3 `r_i^w`, `r_i^b`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `N_s ≤ 2G` (uniform mode).
    pub fn draw<R: Rng + ?Sized>(
        &self,
        g_bits: u32,
        n_s: &BigUint,
        rng: &mut R,
    ) -> Result<BigUint> {
        match self {
            Self::Statistical { sigma } => Ok(rng.gen_biguint(u64::from(sigma + g_bits))),
            Self::Uniform => {
                let g = BigUint::from(1u8) << g_bits;
                let two_g = &g << 1u8;
                if n_s <= &two_g {
                    return Err(Error::InvalidConfig {
                        reason: "server key too small for the uniform mask".into(),
                    });
                }
                Ok(g + rng.gen_biguint_below(&(n_s - two_g)))
            }
            Self::InsecureNone => Ok(BigUint::zero()),
        }
    }

    /// Interprets a decrypted `D ∈ [0, N_s)` as the integer `η·Δ + r` and checks it lies in
    /// the interval the mode allows: `(−G, 2^(σ+g) + G)` (statistical, signed decoding),
    /// `[0, N_s)` (uniform, unsigned), `(−G, G)` (none, signed).
    ///
    /// # Errors
    /// [`Error::MaskOutOfRange`] outside the interval.
    pub fn interpret_decrypted(&self, g_bits: u32, n_s: &BigUint, raw: &BigUint) -> Result<BigInt> {
        match self {
            Self::Uniform => Ok(BigInt::from(raw.clone())),
            Self::Statistical { .. } | Self::InsecureNone => {
                self.check_signed(g_bits, centered(raw, n_s), "value")
            }
        }
    }

    /// Interprets one slot of a packed masked update (see [`crate::packing`]): the slot
    /// holds `η·Δ + r + G ≥ 0`; returns `D = slot − G` after the interval check of
    /// [`MaskMode::interpret_decrypted`]. The uniform mask is never packed.
    ///
    /// # Errors
    /// [`Error::MaskOutOfRange`] outside the interval, or for the uniform mask.
    pub fn interpret_slot(&self, g_bits: u32, slot: &BigUint) -> Result<BigInt> {
        let g = BigInt::from(1u8) << g_bits;
        match self {
            Self::Uniform => Err(Error::MaskOutOfRange {
                reason: "the uniform mask is not packed".into(),
            }),
            Self::Statistical { .. } | Self::InsecureNone => {
                self.check_signed(g_bits, BigInt::from(slot.clone()) - &g, "slot")
            }
        }
    }

    /// `d` if it lies in the signed interval of the mode, `(−G, 2^(σ+g) + G)`
    /// (statistical) or `(−G, G)` (none); the uniform mask has no signed interval and
    /// passes `d` unchanged. `what` names `d` in the error.
    fn check_signed(&self, g_bits: u32, d: BigInt, what: &str) -> Result<BigInt> {
        let g = BigInt::from(1u8) << g_bits;
        match self {
            Self::Statistical { sigma } => {
                let hi = (BigInt::from(1u8) << (sigma + g_bits)) + &g;
                if d <= -&g || d >= hi {
                    return Err(Error::MaskOutOfRange {
                        reason: format!("a {}-bit {what} outside (-G, 2^(sigma+g) + G)", d.bits()),
                    });
                }
                Ok(d)
            }
            Self::InsecureNone => {
                if d.magnitude().bits() > u64::from(g_bits) {
                    return Err(Error::MaskOutOfRange {
                        reason: format!("a {}-bit {what} outside (-G, G)", d.bits()),
                    });
                }
                Ok(d)
            }
            Self::Uniform => Ok(d),
        }
    }
}

/// `x mod n` in `[0, n)` for a signed `x`.
pub fn mod_n(x: &BigInt, n: &BigUint) -> BigUint {
    let n_int = BigInt::from(n.clone());
    let r = ((x % &n_int) + &n_int) % &n_int;
    r.magnitude().clone()
}

/// The representative of `x ∈ [0, n)` in `(−n/2, n/2]`: values above `(n−1)/2` are
/// negative (docs/DESIGN.md, "Fixed-point numbers"). Inputs `≥ n` are reduced first.
pub fn centered(x: &BigUint, n: &BigUint) -> BigInt {
    let x = x % n;
    let half = (n - 1u8) >> 1u8;
    if x > half {
        BigInt::from_biguint(Sign::Minus, n - x)
    } else {
        BigInt::from(x)
    }
}

/// `x mod n` as the centered representative (used for masked weights `w~`: small signed
/// integers under the statistical mask, `|N_c|`-bit ones under the uniform mask).
pub fn reduce_centered(x: &BigInt, n: &BigUint) -> BigInt {
    centered(&mod_n(x, n), n)
}
