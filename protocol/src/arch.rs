//! Network architectures with convolutional layers: a layer syntax, the paper's named
//! networks, and shape inference (paper §5 and Table 4; docs/DESIGN.md "Convolutional
//! layers"). `--arch` on `train`, `serve` and `bench train` takes it; a spec is built with
//! [`crate::ModelSpec::from_arch`].
//!
//! # Syntax
//! An architecture is a named network or a comma-separated list of layers, input first;
//! spaces around a layer are ignored:
//!
//! | layer | meaning |
//! | --- | --- |
//! | `conv<k>x<k>[s<s>][p<p>\|p<b>+<a>]:<f>` | convolution, `f` filters of `k×k` (square), stride `s` (default 1), zero padding `p` on every side or `b` before (top, left) and `a` after (bottom, right) (default none) |
//! | `meanpool` | 2×2 mean pooling, stride 2 (an exact sum, [`crate::pool`]) |
//! | `dense:<n>` | fully connected layer of `n` units; flattens a `c×h×w` input (channel-major) |
//! | `relu`, `sigmoid`, `tanh`, `identity` | activation, applied by the client |
//!
//! The last layer is a `dense:<classes>` (at least 2): its output goes through softmax
//! with cross-entropy, as in [`crate::ModelSpec`]. An activation follows a conv, pooling
//! or dense layer (not the input, not another activation); nothing but `dense` and
//! activations follows a `dense`. Numbers are decimal digits. [`SYNTAX`] is the one-line
//! summary for `--help`. Example: `conv5x5s2:5,relu,meanpool,dense:100,relu,dense:10`.
//!
//! # Named networks
//! Both on MNIST's `1×28×28` (the `Display` of [`Arch`] prints their layers):
//!
//! - `conv1` — the paper's Conv-1, "Conv(5×5, stride 2, 5 filters)–ReLU–Mean Pooling–ReLU–
//!   Softmax", which is CryptoNets' network (Gilad-Bachrach et al. 2016, §4.1). The paper
//!   leaves the sizes open, so they follow CryptoNets: the 28×28 input padded to 29×29
//!   (one row below, one column right: `p0+1`), giving 5 maps of 13×13 = 845 values;
//!   CryptoNets' "scaled mean pool" and the layers after it are linear and merged into
//!   one weighted-sum layer of 100 outputs, which is the paper's "Mean Pooling" here
//!   (a 2×2 pool does not fit the odd 13×13 maps); then the activation and the 10-way
//!   softmax layer. `conv5x5s2p0+1:5,relu,dense:100,relu,dense:10`, 85,740 parameters.
//!   ReLU stands where CryptoNets squares (the paper's "ReLU (square)").
//! - `lenet5` — the paper's "Conv(5×5, stride 1, 6 filters)–Mean Pooling–ReLU–Conv(5×5,
//!   stride 1, 16 filters)–Mean Pooling–ReLU–Dense(120)–Dense(84)–Softmax", sized as
//!   LeNet-5 (LeCun et al. 1998, whose 32×32 input is MNIST padded by 2): the first
//!   convolution pads by 2, so the maps are 6×28×28 → 6×14×14 → 16×10×10 → 16×5×5 = 400.
//!   The paper's list names no activation between its dense layers; two linear layers in
//!   a row would collapse into one, so each hidden dense layer has a ReLU, as LeNet-5 has
//!   its activations. `Softmax` is the 10-way output layer.
//!   `conv5x5p2:6,meanpool,relu,conv5x5:16,meanpool,relu,dense:120,relu,dense:84,relu,dense:10`,
//!   61,706 parameters.
//!
//! ```
//! use gelunet_protocol::arch::Arch;
//! use gelunet_protocol::conv::Shape;
//!
//! let mnist = Shape { channels: 1, height: 28, width: 28 };
//! let net = "lenet5".parse::<Arch>()?.infer(mnist)?;
//! assert_eq!(net.num_parameters(), 61_706);
//! assert_eq!(net.classes(), 10);
//!
//! let arch: Arch = "conv5x5s2:5,relu,meanpool,dense:100,relu,dense:10".parse()?;
//! // 28×28 with a 5×5 kernel and stride 2 gives 12×12 maps, which pool to 6×6.
//! let net = arch.infer(mnist)?;
//! assert_eq!(net.layers[2].output.to_string(), "5×6×6");
//! # Ok::<(), gelunet_protocol::Error>(())
//! ```
//!
//! Bad input names the layer by position and text:
//!
//! ```
//! use gelunet_protocol::arch::Arch;
//! use gelunet_protocol::conv::Shape;
//!
//! let e = "conv5x5:6,relu,dense:10x".parse::<Arch>().unwrap_err();
//! assert_eq!(e.to_string(), "layer 3 `dense:10x`: `10x` is not a number");
//!
//! // Conv-1's 13×13 maps cannot be pooled 2×2.
//! let arch: Arch = "conv5x5s2p0+1:5,meanpool,dense:10".parse()?;
//! let e = arch.infer(Shape { channels: 1, height: 28, width: 28 }).unwrap_err();
//! assert_eq!(
//!     e.to_string(),
//!     "layer 2 `meanpool`: 2×2 pooling needs an even height and width, not 13×13"
//! );
//! # Ok::<(), gelunet_protocol::arch::ArchError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::conv::{ConvGeometry, GeometryError, Padding, Shape};
use crate::pool::MeanPool2;
use crate::spec::{Activation, MAX_LAYERS, MAX_PARAMETERS, MAX_WIDTH};

/// The layer syntax in one line, for `--help`.
pub const SYNTAX: &str = "conv1 | lenet5 | comma-separated layers: conv<k>x<k>[s<stride>][p<pad>|p<before>+<after>]:<filters>, meanpool, dense:<units>, relu, sigmoid, tanh, identity; the last layer is dense:<classes> (softmax)";

/// The named architectures, in the order `--help` lists them.
pub const NAMES: [&str; 2] = ["conv1", "lenet5"];

const CONV1: &str = "conv5x5s2p0+1:5,relu,dense:100,relu,dense:10";
const LENET5: &str =
    "conv5x5p2:6,meanpool,relu,conv5x5:16,meanpool,relu,dense:120,relu,dense:84,relu,dense:10";

/// The longest layer text an error repeats (longer text is cut, with `…`).
const MAX_TOKEN_ECHO: usize = 40;

/// One layer of an [`Arch`], as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// `conv<k>x<k>[s<stride>][p…]:<filters>`.
    Conv {
        /// Kernel side `k`.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: Padding,
        /// Number of filters (output channels).
        filters: usize,
    },
    /// `meanpool`: 2×2, stride 2.
    MeanPool,
    /// `dense:<units>`.
    Dense {
        /// Number of units.
        units: usize,
    },
    /// `relu`, `sigmoid`, `tanh`, `identity`.
    Activation(Activation),
}

impl Layer {
    fn is_activation(&self) -> bool {
        matches!(self, Layer::Activation(_))
    }
}

impl fmt::Display for Layer {
    /// The layer's canonical syntax (defaults left out), which parses back to it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Conv {
                kernel,
                stride,
                padding,
                filters,
            } => {
                write!(f, "conv{kernel}x{kernel}")?;
                if *stride != 1 {
                    write!(f, "s{stride}")?;
                }
                if padding.before == padding.after {
                    if padding.before != 0 {
                        write!(f, "p{}", padding.before)?;
                    }
                } else {
                    write!(f, "p{}+{}", padding.before, padding.after)?;
                }
                write!(f, ":{filters}")
            }
            Layer::MeanPool => f.write_str("meanpool"),
            Layer::Dense { units } => write!(f, "dense:{units}"),
            Layer::Activation(a) => f.write_str(activation_name(*a)),
        }
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Sigmoid => "sigmoid",
        Activation::Tanh => "tanh",
        Activation::Identity => "identity",
    }
}

/// What is wrong with one layer of an architecture.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchErrorKind {
    /// No architecture at all.
    #[error("no layers")]
    Empty,
    /// An empty layer between two commas.
    #[error("empty layer")]
    EmptyLayer,
    /// A layer name the syntax does not know.
    #[error("unknown layer; expected conv<k>x<k>…:<filters>, meanpool, dense:<units>, relu, sigmoid, tanh or identity (or a whole name: conv1, lenet5)")]
    UnknownLayer,
    /// A number that is not decimal digits or does not fit in `usize`.
    #[error("`{text}` is not a number")]
    BadNumber {
        /// The text where a number was expected.
        text: String,
    },
    /// A conv layer whose text does not follow `conv<k>x<k>[s<s>][p…]:<f>`.
    #[error("expected conv<k>x<k>[s<stride>][p<pad>|p<before>+<after>]:<filters>")]
    BadConv,
    /// `conv<k1>x<k2>` with `k1 ≠ k2`.
    #[error("kernel {rows}×{cols} is not square")]
    NonSquareKernel {
        /// Kernel rows.
        rows: usize,
        /// Kernel columns.
        cols: usize,
    },
    /// A layer where it cannot stand.
    #[error("{reason}")]
    Misplaced {
        /// Why not.
        reason: &'static str,
    },
    /// A conv or pooling layer that does not fit its input.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// `dense:0`, or more than [`MAX_WIDTH`] units or inputs.
    #[error("{what} {value} outside 1..={MAX_WIDTH}")]
    DenseWidth {
        /// `"units"` or `"inputs"` (the flattened input).
        what: &'static str,
        /// The value.
        value: usize,
    },
    /// A last layer `dense:<classes>` with fewer than 2 classes.
    #[error("{classes} classes, the output layer needs at least 2")]
    TooFewClasses {
        /// The last layer's units.
        classes: usize,
    },
    /// More than [`MAX_LAYERS`] weight layers.
    #[error("more than {MAX_LAYERS} weight layers")]
    TooManyLayers,
    /// More than [`MAX_PARAMETERS`] parameters up to and including this layer.
    #[error("{parameters} parameters so far, at most {MAX_PARAMETERS}")]
    TooManyParameters {
        /// Parameters up to this layer (saturating).
        parameters: usize,
    },
}

/// An architecture that cannot be parsed or does not fit its input: the layer's
/// position (1-based, in the layer list; 0 for the whole text), its text, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("layer {position} `{token}`: {kind}")]
pub struct ArchError {
    /// 1-based position of the layer in the comma-separated list (0: the whole text).
    pub position: usize,
    /// The layer's text (cut at 40 characters).
    pub token: String,
    /// What is wrong.
    pub kind: ArchErrorKind,
}

impl ArchError {
    fn new(position: usize, token: &str, kind: impl Into<ArchErrorKind>) -> Self {
        let token = if token.chars().count() > MAX_TOKEN_ECHO {
            let cut: String = token.chars().take(MAX_TOKEN_ECHO).collect();
            format!("{cut}…")
        } else {
            token.to_owned()
        };
        Self {
            position,
            token,
            kind: kind.into(),
        }
    }
}

/// A network as a list of layers, input first; the softmax output is implied after the
/// last (dense) layer. Parse it with [`str::parse`] (module docs "Syntax"); its
/// `Display` is the canonical syntax, which parses back to the same value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    layers: Vec<Layer>,
}

impl Arch {
    /// The named architecture `name` (module docs "Named networks"), or `None`.
    pub fn named(name: &str) -> Option<Self> {
        let text = match name {
            "conv1" => CONV1,
            "lenet5" => LENET5,
            _ => return None,
        };
        parse_layers(text).ok()
    }

    /// An architecture from its layers, checked as the parser checks them.
    ///
    /// # Errors
    /// [`ArchError`] for an empty list, a misplaced layer or a last layer that is not
    /// `dense`.
    pub fn new(layers: Vec<Layer>) -> Result<Self, ArchError> {
        check_order(&layers)?;
        Ok(Self { layers })
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The shape after each layer, and its parameters, from a `c×h×w` input.
    ///
    /// # Errors
    /// [`ArchError`] naming the first layer that does not fit: a conv or pooling layer
    /// with a [`GeometryError`] (kernel larger than the input, pooling of an odd side, a
    /// zero kernel, stride or filter count, …), a dense layer of 0 or more than
    /// [`MAX_WIDTH`] units or inputs, more than [`MAX_LAYERS`] weight layers or more
    /// than [`MAX_PARAMETERS`] parameters (the limits of [`crate::ModelSpec`]); position
    /// 0 for a zero-sized input.
    pub fn infer(&self, input: Shape) -> Result<Network, ArchError> {
        if input.is_empty() {
            let kind = GeometryError::Zero { what: "input" };
            return Err(ArchError::new(0, &input.to_string(), kind));
        }
        let mut shape = input;
        let mut parameters = 0usize;
        let mut weight_layers = 0usize;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let err = |kind: ArchErrorKind| ArchError::new(i + 1, &layer.to_string(), kind);
            let geometry = |g: GeometryError| err(g.into());
            let (op, out, params) = match *layer {
                Layer::Conv {
                    kernel,
                    stride,
                    padding,
                    filters,
                } => {
                    let g = ConvGeometry::new(
                        shape.channels,
                        shape.height,
                        shape.width,
                        filters,
                        kernel,
                        stride,
                        padding,
                    )
                    .map_err(geometry)?;
                    (Op::Conv(g), g.output(), g.num_parameters())
                }
                Layer::MeanPool => {
                    let p = MeanPool2::new(shape.channels, shape.height, shape.width)
                        .map_err(geometry)?;
                    (Op::MeanPool(p), p.output(), 0)
                }
                Layer::Dense { units } => {
                    let inputs = shape.len();
                    for (what, value) in [("inputs", inputs), ("units", units)] {
                        if value == 0 || value > MAX_WIDTH {
                            return Err(err(ArchErrorKind::DenseWidth { what, value }));
                        }
                    }
                    let out = Shape {
                        channels: units,
                        height: 1,
                        width: 1,
                    };
                    let params = units.saturating_mul(inputs).saturating_add(units);
                    (Op::Dense { inputs, units }, out, params)
                }
                Layer::Activation(a) => (Op::Activation(a), shape, 0),
            };
            if matches!(op, Op::Conv(_) | Op::Dense { .. }) {
                weight_layers += 1;
                if weight_layers > MAX_LAYERS {
                    return Err(err(ArchErrorKind::TooManyLayers));
                }
            }
            parameters = parameters.saturating_add(params);
            if parameters > MAX_PARAMETERS {
                return Err(err(ArchErrorKind::TooManyParameters { parameters }));
            }
            layers.push(InferredLayer {
                op,
                output: out,
                parameters: params,
            });
            shape = out;
        }
        Ok(Network { input, layers })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

impl FromStr for Arch {
    type Err = ArchError;

    /// A name of [`NAMES`] or a layer list (module docs "Syntax").
    ///
    /// # Errors
    /// [`ArchError`] naming the first bad layer.
    fn from_str(s: &str) -> Result<Self, ArchError> {
        match Self::named(s.trim()) {
            Some(a) => Ok(a),
            None => parse_layers(s),
        }
    }
}

/// What one layer computes, with its validated geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A convolution.
    Conv(ConvGeometry),
    /// 2×2 mean pooling.
    MeanPool(MeanPool2),
    /// A dense layer `units × inputs` (the input flattened, channel-major).
    Dense {
        /// Fan-in (the flattened input length).
        inputs: usize,
        /// Units.
        units: usize,
    },
    /// An activation, elementwise.
    Activation(Activation),
}

/// One layer after shape inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InferredLayer {
    /// What it computes.
    pub op: Op,
    /// Its output shape (`units × 1 × 1` for a dense layer).
    pub output: Shape,
    /// Its parameters (weights and biases; 0 for pooling and activations).
    pub parameters: usize,
}

/// An architecture with every layer's shape, from [`Arch::infer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The input shape.
    pub input: Shape,
    /// The layers, input first.
    pub layers: Vec<InferredLayer>,
}

impl Network {
    /// All parameters (at most [`MAX_PARAMETERS`]).
    pub fn num_parameters(&self) -> usize {
        self.layers.iter().map(|l| l.parameters).sum()
    }

    /// Number of classes: the width of the last (dense) layer.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output.len())
    }
}

fn parse_layers(s: &str) -> Result<Arch, ArchError> {
    if s.trim().is_empty() {
        return Err(ArchError::new(0, s, ArchErrorKind::Empty));
    }
    let mut layers = Vec::new();
    for (i, raw) in s.split(',').enumerate() {
        let token = raw.trim();
        layers.push(parse_layer(token).map_err(|k| ArchError::new(i + 1, token, k))?);
    }
    check_order(&layers)?;
    Ok(Arch { layers })
}

fn number(text: &str) -> Result<usize, ArchErrorKind> {
    let bad = || ArchErrorKind::BadNumber {
        text: text.chars().take(MAX_TOKEN_ECHO).collect(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// Splits `text` at the first byte that is not an ASCII digit.
fn digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

fn parse_layer(token: &str) -> Result<Layer, ArchErrorKind> {
    match token {
        "" => return Err(ArchErrorKind::EmptyLayer),
        "meanpool" => return Ok(Layer::MeanPool),
        "relu" => return Ok(Layer::Activation(Activation::Relu)),
        "sigmoid" => return Ok(Layer::Activation(Activation::Sigmoid)),
        "tanh" => return Ok(Layer::Activation(Activation::Tanh)),
        "identity" => return Ok(Layer::Activation(Activation::Identity)),
        _ => {}
    }
    if let Some(units) = token.strip_prefix("dense:") {
        return Ok(Layer::Dense {
            units: number(units)?,
        });
    }
    if let Some(rest) = token.strip_prefix("conv") {
        return parse_conv(rest);
    }
    Err(ArchErrorKind::UnknownLayer)
}

/// `<k>x<k>[s<s>][p<p>|p<b>+<a>]:<f>` (after `conv`).
fn parse_conv(rest: &str) -> Result<Layer, ArchErrorKind> {
    let (geometry, filters) = rest.split_once(':').ok_or(ArchErrorKind::BadConv)?;
    let filters = number(filters)?;
    let (rows, tail) = digits(geometry);
    let rows = number(rows).map_err(|_| ArchErrorKind::BadConv)?;
    let tail = tail.strip_prefix('x').ok_or(ArchErrorKind::BadConv)?;
    let (cols, mut tail) = digits(tail);
    let cols = number(cols).map_err(|_| ArchErrorKind::BadConv)?;
    if rows != cols {
        return Err(ArchErrorKind::NonSquareKernel { rows, cols });
    }
    let mut stride = 1;
    if let Some(t) = tail.strip_prefix('s') {
        let (s, t) = digits(t);
        stride = number(s)?;
        tail = t;
    }
    let mut padding = Padding::NONE;
    if let Some(t) = tail.strip_prefix('p') {
        let (b, t) = digits(t);
        let before = number(b)?;
        padding = Padding::same(before);
        tail = t;
        if let Some(t) = tail.strip_prefix('+') {
            let (a, t) = digits(t);
            padding.after = number(a)?;
            tail = t;
        }
    }
    if !tail.is_empty() {
        return Err(ArchErrorKind::BadConv);
    }
    Ok(Layer::Conv {
        kernel: rows,
        stride,
        padding,
        filters,
    })
}

/// The placement rules of the module docs, "Syntax".
fn check_order(layers: &[Layer]) -> Result<(), ArchError> {
    let Some(last) = layers.last() else {
        return Err(ArchError::new(0, "", ArchErrorKind::Empty));
    };
    let mut flattened = false;
    let mut prev: Option<&Layer> = None;
    for (i, l) in layers.iter().enumerate() {
        let misplaced =
            |reason| ArchError::new(i + 1, &l.to_string(), ArchErrorKind::Misplaced { reason });
        match l {
            Layer::Activation(_) if prev.is_none() => {
                return Err(misplaced("an activation needs a layer before it"))
            }
            Layer::Activation(_) if prev.is_some_and(Layer::is_activation) => {
                return Err(misplaced("two activations in a row"))
            }
            Layer::Conv { .. } | Layer::MeanPool if flattened => {
                return Err(misplaced(
                    "a conv or pooling layer cannot follow a dense layer",
                ))
            }
            Layer::Dense { .. } => flattened = true,
            _ => {}
        }
        prev = Some(l);
    }
    let kind = match *last {
        Layer::Dense { units } if units >= 2 => return Ok(()),
        Layer::Dense { units } => ArchErrorKind::TooFewClasses { classes: units },
        _ => ArchErrorKind::Misplaced {
            reason: "the last layer must be dense:<classes> (the softmax output)",
        },
    };
    Err(ArchError::new(layers.len(), &last.to_string(), kind))
}
