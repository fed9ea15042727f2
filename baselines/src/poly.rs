//! Polynomial activations used by the homomorphic baselines, on `f64`.
//!
//! Schemes that evaluate the whole network under encryption cannot compute a sigmoid
//! or a ReLU, so they replace the activation by a low-degree polynomial:
//!
//! | activation | `f(x)` | `f'(x)` | used by |
//! | --- | --- | --- | --- |
//! | square | `x²` | `2x` | CryptoNets (Gilad-Bachrach et al., ICML 2016) |
//! | Taylor-3 | `1/2 + x/4 − x³/48` | `1/4 − x²/16` | BGN-Net (Yuan & Yu 2014) |
//! | Taylor-5 | `1/2 + x/4 − x³/48 + x⁵/480` | `1/4 − x²/16 + x⁴/96` | BGN-Net |
//!
//! The Taylor polynomials are the Maclaurin expansions of the logistic sigmoid
//! `σ(x) = 1/(1 + e^{−x})`; they agree with it near `0` and diverge from it for large
//! `|x|` (the GELU-Net paper, §5 and Fig. 3, attributes the instability of training
//! with these activations to this). The plaintext baselines use them for training
//! and inference; [`crate::measure`] times the same degree-5 polynomial under BFV.

use serde::{Deserialize, Serialize};

/// The square activation `x²` (CryptoNets).
#[must_use]
pub fn square(x: f64) -> f64 {
    x * x
}

/// Derivative of [`square`]: `2x`.
#[must_use]
pub fn square_derivative(x: f64) -> f64 {
    2.0 * x
}

/// Third-order Taylor expansion of the sigmoid at 0: `1/2 + x/4 − x³/48` (BGN-Net).
#[must_use]
pub fn taylor3(x: f64) -> f64 {
    0.5 + x / 4.0 - x * x * x / 48.0
}

/// Derivative of [`taylor3`]: `1/4 − x²/16`.
#[must_use]
pub fn taylor3_derivative(x: f64) -> f64 {
    0.25 - x * x / 16.0
}

/// Fifth-order Taylor expansion of the sigmoid at 0:
/// `1/2 + x/4 − x³/48 + x⁵/480` (BGN-Net).
#[must_use]
pub fn taylor5(x: f64) -> f64 {
    let x2 = x * x;
    0.5 + x / 4.0 - x * x2 / 48.0 + x * x2 * x2 / 480.0
}

/// Derivative of [`taylor5`]: `1/4 − x²/16 + x⁴/96`.
#[must_use]
pub fn taylor5_derivative(x: f64) -> f64 {
    let x2 = x * x;
    0.25 - x2 / 16.0 + x2 * x2 / 96.0
}

/// The logistic sigmoid `1/(1 + e^{−x})`, the function the Taylor activations
/// approximate (for comparisons in tests and reports): the protocol's,
/// [`gelunet_protocol::Activation::Sigmoid`].
#[must_use]
pub fn sigmoid(x: f64) -> f64 {
    gelunet_protocol::Activation::Sigmoid.apply(x)
}

/// A polynomial activation of the homomorphic baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolyActivation {
    /// `x²` (CryptoNets).
    Square,
    /// `1/2 + x/4 − x³/48` (BGN-Net, third order).
    Taylor3,
    /// `1/2 + x/4 − x³/48 + x⁵/480` (BGN-Net, fifth order).
    Taylor5,
}

impl PolyActivation {
    /// All variants, in declaration order.
    pub const ALL: [PolyActivation; 3] = [Self::Square, Self::Taylor3, Self::Taylor5];

    /// Evaluates the activation at `x`.
    #[must_use]
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Square => square(x),
            Self::Taylor3 => taylor3(x),
            Self::Taylor5 => taylor5(x),
        }
    }

    /// Evaluates the derivative of the activation at `x` (for back-propagation).
    #[must_use]
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Self::Square => square_derivative(x),
            Self::Taylor3 => taylor3_derivative(x),
            Self::Taylor5 => taylor5_derivative(x),
        }
    }

    /// Short name for reports: `"square"`, `"taylor3"`, `"taylor5"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Square => "square",
            Self::Taylor3 => "taylor3",
            Self::Taylor5 => "taylor5",
        }
    }

    /// Polynomial degree of the activation (2, 3 or 5); its multiplicative depth
    /// under a leveled scheme is `⌈log2(degree)⌉`.
    #[must_use]
    pub fn degree(self) -> u32 {
        match self {
            Self::Square => 2,
            Self::Taylor3 => 3,
            Self::Taylor5 => 5,
        }
    }
}

impl std::fmt::Display for PolyActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
