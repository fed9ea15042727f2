//! The model specification: a fully connected network given by its layer widths and one
//! activation per hidden layer; the output layer is always softmax with cross-entropy
//! (paper §2.1).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A hidden-layer activation `f`, applied by the client in plaintext (paper §3, "locally
/// unencrypted").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// `f(x) = 1/(1 + e^{−x})`, `f'(x) = f(x)(1 − f(x))`.
    Sigmoid,
    /// `f(x) = max(0, x)`, `f'(x) = 1` for `x > 0`, else 0.
    Relu,
    /// `f(x) = tanh x`, `f'(x) = 1 − tanh² x`.
    Tanh,
    /// `f(x) = x`, `f'(x) = 1`.
    Identity,
}

impl Activation {
    /// `f(x)` in `f64`.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Sigmoid => sigmoid(x),
            Self::Relu => x.max(0.0),
            Self::Tanh => x.tanh(),
            Self::Identity => x,
        }
    }

    /// `f'(x)` in `f64`, evaluated at the pre-activation `x`.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Self::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Self::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            Self::Identity => 1.0,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// A fully connected network: `widths = [n_0, n_1, …, n_L]` (input, hidden…, classes),
/// layer `i ∈ 1..=L` has weights `W_i` of shape `n_i × n_{i−1}` and biases of length
/// `n_i`. `hidden[i−1]` is the activation of layer `i < L`; layer `L` is softmax.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Layer widths, input first, classes last.
    pub widths: Vec<usize>,
    /// One activation per hidden layer (`widths.len() − 2` of them).
    pub hidden: Vec<Activation>,
}

/// Largest width accepted (bounds messages and keeps sums inside `i128`).
pub const MAX_WIDTH: usize = 1 << 16;

impl ModelSpec {
    /// A spec with the same activation on every hidden layer.
    pub fn new(widths: Vec<usize>, activation: Activation) -> Self {
        let hidden = vec![activation; widths.len().saturating_sub(2)];
        Self { widths, hidden }
    }

    /// Checks the spec.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for fewer than two widths, a width of 0 or above
    /// [`MAX_WIDTH`], fewer than two classes, or a `hidden` of the wrong length.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidSpec { reason });
        if self.widths.len() < 2 {
            return bad(format!("{} widths, need at least 2", self.widths.len()));
        }
        if let Some(w) = self.widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return bad(format!("width {w} outside 1..={MAX_WIDTH}"));
        }
        if self.classes() < 2 {
            return bad("the output layer needs at least 2 classes".into());
        }
        if self.hidden.len() != self.widths.len() - 2 {
            return bad(format!(
                "{} hidden activations for {} hidden layers",
                self.hidden.len(),
                self.widths.len() - 2
            ));
        }
        Ok(())
    }

    /// Number of weight layers `L`.
    pub fn num_layers(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// Input width `n_0`.
    pub fn inputs(&self) -> usize {
        self.widths.first().copied().unwrap_or(0)
    }

    /// Output width `n_L` (number of classes).
    pub fn classes(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// `(m_i, n_i)`: (width, fan-in) of layer `i ∈ 1..=L`, i.e. the shape of `W_i`.
    pub fn layer_shape(&self, layer: usize) -> (usize, usize) {
        (self.widths[layer], self.widths[layer - 1])
    }

    /// The smallest fan-in `min_i n_{i−1}` (docs/DESIGN.md, "Sessions and the d_max bound").
    pub fn min_fan_in(&self) -> usize {
        self.widths[..self.widths.len().saturating_sub(1)]
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
    }

    /// The activation of layer `i ∈ 1..L` (hidden layers only).
    pub fn activation(&self, layer: usize) -> Option<Activation> {
        layer
            .checked_sub(1)
            .and_then(|i| self.hidden.get(i))
            .copied()
    }

    /// Number of parameters (weights and biases).
    pub fn num_parameters(&self) -> usize {
        (1..=self.num_layers())
            .map(|i| {
                let (m, n) = self.layer_shape(i);
                m * n + m
            })
            .sum()
    }
}
