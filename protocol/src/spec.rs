//! The model specification: a fully connected network given by its layer widths and one
//! activation per hidden layer; the output layer is always softmax with cross-entropy
//! (paper §2.1).

use serde::{Deserialize, Serialize};

use crate::arch::{Arch, Layer, Network, Op};
use crate::conv::{ConvGeometry, Padding, Shape};
use crate::pool::MeanPool2;
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

/// A convolutional weight layer of a [`ModelSpec`]: `filters` kernels of
/// `c × kernel × kernel` over the `input` shape, stride and zero padding, optionally
/// followed by 2×2 mean pooling of the pre-activations (the server pools before it
/// returns them; docs/DESIGN.md "Convolutional layers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvLayer {
    /// The input shape `c × h × w`.
    pub input: Shape,
    /// Filters (output channels).
    pub filters: usize,
    /// Kernel side `k`.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: Padding,
    /// Whether 2×2 mean pooling follows (before the activation).
    pub pool: bool,
}

impl ConvLayer {
    /// The validated convolution.
    ///
    /// # Errors
    /// [`Error::Geometry`] as [`ConvGeometry::new`].
    pub fn geometry(&self) -> Result<ConvGeometry> {
        let i = self.input;
        Ok(ConvGeometry::new(
            i.channels,
            i.height,
            i.width,
            self.filters,
            self.kernel,
            self.stride,
            self.padding,
        )?)
    }

    /// The pooling, if any, over the convolution's output.
    ///
    /// # Errors
    /// [`Error::Geometry`] as [`ConvGeometry::new`] and [`MeanPool2::new`].
    pub fn pooling(&self) -> Result<Option<MeanPool2>> {
        if !self.pool {
            return Ok(None);
        }
        let o = self.geometry()?.output();
        Ok(Some(MeanPool2::new(o.channels, o.height, o.width)?))
    }

    /// The output shape (after pooling, if any).
    ///
    /// # Errors
    /// As [`ConvLayer::pooling`].
    pub fn output(&self) -> Result<Shape> {
        Ok(match self.pooling()? {
            Some(p) => p.output(),
            None => self.geometry()?.output(),
        })
    }
}

/// What weight layer `i` of a [`ModelSpec`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// Fully connected: `W_i` is `n_i × n_{i−1}`.
    Dense,
    /// A convolution (with optional pooling): `W_i` is `f × (c·k·k)`, the flat OIHW
    /// kernel, shared over the output positions.
    Conv(ConvLayer),
}

/// A network: `widths = [n_0, n_1, …, n_L]` (input, hidden…, classes), layer
/// `i ∈ 1..=L` maps the `n_{i−1}` values of its input to `n_i` pre-activations, with
/// biases of length `n_i` for a dense layer. `hidden[i−1]` is the activation of layer
/// `i < L`; layer `L` is softmax.
///
/// `layers` is empty for a fully connected network (`W_i` is `n_i × n_{i−1}`; paper
/// §2.1). Otherwise it has one [`LayerKind`] per weight layer and the spec comes from an
/// [`Arch`] ([`ModelSpec::from_arch`]): a conv layer's `n_i` counts its (pooled) output
/// values, its parameters are `f × (c·k·k)` kernels and `f` biases
/// ([`ModelSpec::param_shape`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Layer widths, input first, classes last.
    pub widths: Vec<usize>,
    /// One activation per hidden layer (`widths.len() − 2` of them).
    pub hidden: Vec<Activation>,
    /// One kind per weight layer, or empty for a fully connected network.
    pub layers: Vec<LayerKind>,
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
        Self {
            widths,
            hidden,
            layers: Vec::new(),
        }
    }

    /// The spec of an architecture on an input shape: each conv or dense layer of
    /// `arch` is a weight layer; a `meanpool` right after a convolution pools its
    /// pre-activations; the activation after a weight layer (and its pooling) is that
    /// layer's; a weight layer followed directly by another gets the identity.
    /// A dense architecture gives the dense spec ([`ModelSpec::new`]'s form, `layers`
    /// empty), so it trains exactly as `[n_0, …, n_L]` does.
    ///
    /// # Errors
    /// [`Error::Arch`] if the architecture does not fit `input` ([`Arch::infer`]);
    /// [`Error::InvalidSpec`] for what the protocol cannot run: pooling that does not
    /// follow a convolution directly, a convolution after a dense layer, an activation
    /// after the output layer; the checks of [`ModelSpec::validate`].
    pub fn from_arch(arch: &Arch, input: Shape) -> Result<Self> {
        let network = arch.infer(input)?;
        let bad = |reason: String| Err(Error::InvalidSpec { reason });
        let mut widths = vec![input.len()];
        let mut hidden = Vec::new();
        let mut layers: Vec<LayerKind> = Vec::new();
        // Whether the current weight layer already has its activation.
        let mut activated = true;
        let mut shape = input;
        for (pos, l) in network.layers.iter().enumerate() {
            let pos = pos + 1;
            if matches!(l.op, Op::Conv(_) | Op::Dense { .. }) && !activated {
                hidden.push(Activation::Identity);
            }
            match l.op {
                Op::Conv(g) => {
                    if layers.iter().any(|k| matches!(k, LayerKind::Dense)) {
                        return bad(format!(
                            "layer {pos}: a convolution after a dense layer is not supported"
                        ));
                    }
                    layers.push(LayerKind::Conv(ConvLayer {
                        input: shape,
                        filters: g.filters(),
                        kernel: g.kernel(),
                        stride: g.stride(),
                        padding: g.padding(),
                        pool: false,
                    }));
                    widths.push(l.output.len());
                    activated = false;
                }
                Op::Dense { units, .. } => {
                    layers.push(LayerKind::Dense);
                    widths.push(units);
                    activated = false;
                }
                Op::MeanPool(_) => match layers.last_mut() {
                    Some(LayerKind::Conv(c)) if !activated && !c.pool => {
                        c.pool = true;
                        if let Some(w) = widths.last_mut() {
                            *w = l.output.len();
                        }
                    }
                    _ => {
                        return bad(format!(
                            "layer {pos}: pooling must follow a convolution directly \
                             (the server pools pre-activations)"
                        ))
                    }
                },
                Op::Activation(a) => {
                    if activated {
                        return bad(format!(
                            "layer {pos}: an activation needs a layer before it"
                        ));
                    }
                    hidden.push(a);
                    activated = true;
                }
            }
            shape = l.output;
        }
        if activated || !matches!(layers.last(), Some(LayerKind::Dense)) {
            return bad(
                "the last layer must be dense:<classes> (softmax), with no activation after it"
                    .into(),
            );
        }
        if layers.iter().all(|k| matches!(k, LayerKind::Dense)) {
            layers.clear();
        }
        let spec = Self {
            widths,
            hidden,
            layers,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Whether every weight layer is fully connected (`layers` empty or all dense).
    pub fn is_dense(&self) -> bool {
        self.layers.iter().all(|k| matches!(k, LayerKind::Dense))
    }

    /// The kind of weight layer `i ∈ 1..=L` ([`LayerKind::Dense`] for a dense spec).
    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        layer
            .checked_sub(1)
            .and_then(|i| self.layers.get(i))
            .copied()
            .unwrap_or(LayerKind::Dense)
    }

    /// The shape of layer `i`'s weights: `(m_i, n_i)` = `(n_i, n_{i−1})` for a dense
    /// layer, `(f, c·k·k)` for a convolution; it has as many biases as rows.
    pub fn param_shape(&self, layer: usize) -> (usize, usize) {
        match self.layer_kind(layer) {
            LayerKind::Dense => self.layer_shape(layer),
            LayerKind::Conv(c) => (
                c.filters,
                c.input
                    .channels
                    .saturating_mul(c.kernel)
                    .saturating_mul(c.kernel),
            ),
        }
    }

    /// The architecture of a spec with conv layers (its input shape and layers), for
    /// [`crate::conv_net::ConvNet`]; `None` for a dense spec.
    pub fn arch(&self) -> Option<(Arch, Shape)> {
        if self.is_dense() {
            return None;
        }
        let input = match self.layers.first() {
            Some(LayerKind::Conv(c)) => c.input,
            _ => return None,
        };
        let mut out = Vec::new();
        for i in 1..=self.num_layers() {
            match self.layer_kind(i) {
                LayerKind::Conv(c) => {
                    out.push(Layer::Conv {
                        kernel: c.kernel,
                        stride: c.stride,
                        padding: c.padding,
                        filters: c.filters,
                    });
                    if c.pool {
                        out.push(Layer::MeanPool);
                    }
                }
                LayerKind::Dense => out.push(Layer::Dense {
                    units: self.widths[i],
                }),
            }
            if let Some(a) = self.activation(i) {
                out.push(Layer::Activation(a));
            }
        }
        Arch::new(out).ok().map(|a| (a, input))
    }

    /// The inferred shapes of [`ModelSpec::arch`].
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a dense spec; [`Error::Arch`].
    pub fn network(&self) -> Result<Network> {
        let (arch, input) = self.arch().ok_or_else(|| Error::InvalidSpec {
            reason: "not a conv spec".into(),
        })?;
        Ok(arch.infer(input)?)
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
        self.validate_layers()
    }

    /// The conv-layer checks of [`ModelSpec::validate`]: one kind per weight layer,
    /// valid geometries whose input and (pooled) output lengths are the widths, each
    /// conv layer's input the previous one's output shape, no conv after a dense layer,
    /// a dense output layer.
    fn validate_layers(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Ok(());
        }
        let bad = |reason: String| Err(Error::InvalidSpec { reason });
        if self.layers.len() != self.num_layers() {
            return bad(format!(
                "{} layer kinds for {} layers",
                self.layers.len(),
                self.num_layers()
            ));
        }
        let mut prev: Option<Shape> = None;
        let mut seen_dense = false;
        for (i, kind) in self.layers.iter().enumerate() {
            match kind {
                LayerKind::Dense => seen_dense = true,
                LayerKind::Conv(c) => {
                    if seen_dense {
                        return bad(format!(
                            "layer {}: a convolution after a dense layer",
                            i + 1
                        ));
                    }
                    if prev.is_some_and(|p| p != c.input) {
                        return bad(format!(
                            "layer {}: input {} is not the previous layer's output",
                            i + 1,
                            c.input
                        ));
                    }
                    let out = c.output()?;
                    if c.input.len() != self.widths[i] || out.len() != self.widths[i + 1] {
                        return bad(format!(
                            "layer {}: {} → {} does not match widths {} → {}",
                            i + 1,
                            c.input,
                            out,
                            self.widths[i],
                            self.widths[i + 1]
                        ));
                    }
                    prev = Some(out);
                }
            }
        }
        if !matches!(self.layers.last(), Some(LayerKind::Dense)) {
            return bad("the output layer must be dense".into());
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

    /// The smallest fan-in `min_i n_{i−1}` over the dense layers (docs/DESIGN.md,
    /// "Sessions and the d_max bound"; a conv layer's kernel is not hidden from the
    /// clients whatever the session size, "Convolutional layers").
    pub fn min_fan_in(&self) -> usize {
        (1..=self.num_layers())
            .filter(|&i| matches!(self.layer_kind(i), LayerKind::Dense))
            .map(|i| self.widths[i - 1])
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
                let (m, n) = self.param_shape(i);
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
