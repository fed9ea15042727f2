//! The model specification: a fully connected network given by its layer widths and one
//! activation per hidden layer; the output layer is always softmax with cross-entropy
//! (paper §2.1).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A hidden-layer activation `f`, applied by the client in plaintext (paper §3, "locally
/// unencrypted").
///
/// With the `clap` feature it is a `clap::ValueEnum` (`sigmoid`, `relu`, `tanh`; the
/// identity is not offered on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Activation {
    /// `f(x) = 1/(1 + e^{−x})`, `f'(x) = f(x)(1 − f(x))`.
    Sigmoid,
    /// `f(x) = max(0, x)`, `f'(x) = 1` for `x > 0`, else 0.
    Relu,
    /// `f(x) = tanh x`, `f'(x) = 1 − tanh² x`.
    Tanh,
    /// `f(x) = x`, `f'(x) = 1`.
    #[cfg_attr(feature = "clap", value(skip))]
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

/// Most weight layers a spec may have (`widths.len() ≤ MAX_LAYERS + 1`).
pub const MAX_LAYERS: usize = 64;

/// Most parameters (weights and biases) a spec may have: 2^26, about 67 million (MNIST
/// `[784, 128, 10]` has 101,770). A spec from the other side (a server's hello, a model
/// file) is refused beyond it before anything of its size is allocated.
pub const MAX_PARAMETERS: usize = 1 << 26;

/// Bytes of a frame beyond its values that [`ModelSpec::max_message_len`] allows
/// (headers, packing descriptors, error texts): 64 KiB.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// The modulus a message bound is computed for, in bits: the largest key a run accepts.
const MAX_MESSAGE_KEY_BITS: usize = 4096;

impl ModelSpec {
    /// A spec with the same activation on every hidden layer.
    pub fn new(widths: Vec<usize>, activation: Activation) -> Self {
        let hidden = vec![activation; widths.len().saturating_sub(2)];
        Self { widths, hidden }
    }

    /// Checks the spec.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for fewer than two widths, more than [`MAX_LAYERS`] layers,
    /// a width of 0 or above [`MAX_WIDTH`], more than [`MAX_PARAMETERS`] parameters, fewer
    /// than two classes, or a `hidden` of the wrong length.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidSpec { reason });
        if self.widths.len() < 2 {
            return bad(format!("{} widths, need at least 2", self.widths.len()));
        }
        if self.widths.len() > MAX_LAYERS + 1 {
            return bad(format!(
                "{} layers, at most {MAX_LAYERS}",
                self.widths.len() - 1
            ));
        }
        if let Some(w) = self.widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return bad(format!("width {w} outside 1..={MAX_WIDTH}"));
        }
        // Widths ≤ 2^16 and at most 64 layers: no overflow below.
        let parameters = self.num_parameters();
        if parameters > MAX_PARAMETERS {
            return bad(format!("{parameters} parameters, at most {MAX_PARAMETERS}"));
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

    /// Number of parameters (weights and biases), saturating at `usize::MAX`.
    pub fn num_parameters(&self) -> usize {
        (1..=self.num_layers())
            .map(|i| {
                let (m, n) = self.layer_shape(i);
                m.saturating_mul(n).saturating_add(m)
            })
            .fold(0usize, usize::saturating_add)
    }

    /// The largest frame a party of a run of this spec needs to receive, in bytes: every
    /// message carries at most `max(P, w·B)` values (`P` parameters, `w` the widest layer,
    /// `B` the mini-batch; ciphertexts unpacked in the worst case), each at most a
    /// ciphertext modulo `N²` for the largest key (4096 bits) plus its framing, and
    /// [`MESSAGE_OVERHEAD`]. The shells bound every frame after authentication by it
    /// (docs/DESIGN.md "Wire protocol and processes"). MNIST `[784, 128, 10]`: about
    /// 107 MB.
    pub fn max_message_len(&self, batch: usize) -> usize {
        let widest = self.widths.iter().copied().max().unwrap_or(0);
        let values = self
            .num_parameters()
            .max(widest.saturating_mul(batch.max(1)));
        // 2·|N| bits of ciphertext, its key fingerprint and length prefixes.
        let per_value = 2 * MAX_MESSAGE_KEY_BITS / 8 + 32;
        values
            .saturating_mul(per_value)
            .saturating_add(MESSAGE_OVERHEAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_beyond_the_limits_are_refused() {
        let ok = ModelSpec::new(vec![784, 128, 10], Activation::Sigmoid);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.num_parameters(), 101_770);
        // 101,770 values of a 4096-bit ciphertext (1,056 bytes) and 64 KiB.
        assert_eq!(ok.max_message_len(8), 101_770 * 1056 + MESSAGE_OVERHEAD);
        // A wide layer times a large batch can exceed the parameter count.
        let wide = ModelSpec::new(vec![4, 3, 2], Activation::Sigmoid);
        assert_eq!(wide.max_message_len(1000), 4000 * 1056 + MESSAGE_OVERHEAD);

        let deep = ModelSpec::new(vec![4; MAX_LAYERS + 2], Activation::Sigmoid);
        assert!(matches!(deep.validate(), Err(Error::InvalidSpec { .. })));
        let edge = ModelSpec::new(vec![4; MAX_LAYERS + 1], Activation::Sigmoid);
        assert!(edge.validate().is_ok());
        // Widths within MAX_WIDTH but 2^32 weights in one layer.
        let huge = ModelSpec::new(vec![MAX_WIDTH, MAX_WIDTH, 2], Activation::Sigmoid);
        let e = huge.validate().unwrap_err().to_string();
        assert!(e.contains("parameters"), "{e}");
        // Saturating, never overflowing, even for nonsense widths.
        let absurd = ModelSpec::new(vec![usize::MAX, usize::MAX, 2], Activation::Sigmoid);
        assert_eq!(absurd.num_parameters(), usize::MAX);
        assert!(absurd.validate().is_err());
    }
}
