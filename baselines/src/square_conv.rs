//! CryptoNets' square-activation conv nets in exact fixed-point integers (issue #15).
//!
//! An [`Arch`](gelunet_protocol::arch::Arch) from protocol with every activation replaced
//! by `x²` and mean pooling kept as the exact 2×2 sum (CryptoNets, Gilad-Bachrach et al.
//! 2016 §4; the paper's Table 4 compares against it). Convolution and pooling reuse
//! protocol's generic index walks ([`ConvGeometry::forward_with`],
//! [`MeanPool2::sum_with`]) so the encrypted evaluation can walk the same taps.
//! DESIGN.md "Convolutional layers", "Other schemes".
//!
//! The BFV evaluation of the same walks is [`crate::square_conv_bfv`].

use gelunet_protocol::arch::{Network, Op};
use gelunet_protocol::conv::ConvGeometry;
use gelunet_protocol::pool::MeanPool2;

use crate::error::{BaselineError, Result};

/// One layer's integer parameters: `weights` (conv: `f·c·k·k`; dense: `units × inputs`,
/// row-major) and `bias` (one per filter or unit), at the scale of that layer's input
/// times the weight scale. Empty for pooling and activations.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LayerWeights {
    /// The weights.
    pub weights: Vec<i128>,
    /// The biases.
    pub bias: Vec<i128>,
}

/// A square-activation network: the inferred shapes and one [`LayerWeights`] per layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SquareConvNet {
    network: Network,
    params: Vec<LayerWeights>,
}

fn protocol_err(e: gelunet_protocol::Error) -> BaselineError {
    BaselineError::InvalidParameter {
        name: "square conv net",
        reason: e.to_string(),
    }
}

fn shape(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(BaselineError::InvalidParameter {
            name: what,
            reason: format!("expected {expected} values, got {got}"),
        })
    }
}

const OVERFLOW: gelunet_protocol::Error = gelunet_protocol::Error::Overflow {
    op: "square conv net",
};

impl SquareConvNet {
    /// A network from its inferred shapes and one [`LayerWeights`] per layer.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if the parameter count or any slice length
    /// does not match the layer.
    pub fn new(network: Network, params: Vec<LayerWeights>) -> Result<Self> {
        shape("layers", network.layers.len(), params.len())?;
        for (l, p) in network.layers.iter().zip(&params) {
            let (w, b) = match l.op {
                Op::Conv(g) => (g.kernel_len(), g.filters()),
                Op::Dense { inputs, units } => (inputs * units, units),
                Op::MeanPool(_) | Op::Activation(_) => (0, 0),
            };
            shape("layer weights", w, p.weights.len())?;
            shape("layer bias", b, p.bias.len())?;
        }
        Ok(Self { network, params })
    }

    /// The inferred shapes.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The parameters, one [`LayerWeights`] per layer.
    pub fn params(&self) -> &[LayerWeights] {
        &self.params
    }

    /// The worst-case `|output|` over inputs with `|x| ≤ input_bound`, per output: the
    /// forward pass of the net with every weight and bias replaced by its absolute
    /// value on the all-`input_bound` input (each layer is monotone on non-negative
    /// values, the square included).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for a negative bound or an `i128` overflow.
    pub fn output_bound(&self, input_bound: i128) -> Result<Vec<i128>> {
        if input_bound < 0 {
            return Err(BaselineError::InvalidParameter {
                name: "input_bound",
                reason: format!("{input_bound} is negative"),
            });
        }
        let abs = |v: &[i128]| -> Result<Vec<i128>> {
            v.iter()
                .map(|w| w.checked_abs().ok_or(OVERFLOW).map_err(protocol_err))
                .collect()
        };
        let params = self
            .params
            .iter()
            .map(|p| {
                Ok(LayerWeights {
                    weights: abs(&p.weights)?,
                    bias: abs(&p.bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let net = Self {
            network: self.network.clone(),
            params,
        };
        net.forward(&vec![input_bound; self.network.input.len()])
    }

    /// The exact integer outputs for one input (`network().input.len()` values): every
    /// activation is `x²`, pooling the 2×2 sum.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for a wrong-length input or an `i128` overflow.
    pub fn forward(&self, input: &[i128]) -> Result<Vec<i128>> {
        shape("input", self.network.input.len(), input.len())?;
        let mut x = input.to_vec();
        for (l, p) in self.network.layers.iter().zip(&self.params) {
            x = match l.op {
                Op::Conv(g) => conv(&g, &x, p)?,
                Op::MeanPool(m) => pool(&m, &x)?,
                Op::Dense { inputs, units } => dense(inputs, units, &x, p)?,
                Op::Activation(_) => x
                    .iter()
                    .map(|v| v.checked_mul(*v).ok_or(OVERFLOW))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(protocol_err)?,
            };
        }
        Ok(x)
    }
}

fn conv(g: &ConvGeometry, x: &[i128], p: &LayerWeights) -> Result<Vec<i128>> {
    g.forward_with(
        x,
        &p.weights,
        |f| Ok(p.bias[f]),
        |acc, a, w| {
            *acc = a
                .checked_mul(*w)
                .and_then(|m| acc.checked_add(m))
                .ok_or(OVERFLOW)?;
            Ok(())
        },
    )
    .map_err(protocol_err)
}

fn pool(m: &MeanPool2, x: &[i128]) -> Result<Vec<i128>> {
    m.sum_with(
        x,
        |v| *v,
        |acc, v| {
            *acc = acc.checked_add(*v).ok_or(OVERFLOW)?;
            Ok(())
        },
    )
    .map_err(protocol_err)
}

fn dense(inputs: usize, units: usize, x: &[i128], p: &LayerWeights) -> Result<Vec<i128>> {
    shape("dense input", inputs, x.len())?;
    (0..units)
        .map(|u| {
            p.weights[u * inputs..(u + 1) * inputs]
                .iter()
                .zip(x)
                .try_fold(p.bias[u], |acc, (w, a)| {
                    w.checked_mul(*a).and_then(|m| acc.checked_add(m))
                })
                .ok_or(BaselineError::InvalidParameter {
                    name: "square conv net",
                    reason: "i128 overflow in a dense layer".into(),
                })
        })
        .collect()
}
