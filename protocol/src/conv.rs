//! Convolutional layers: a validated geometry, its index map, and the exact integer
//! convolution, transposed convolution and kernel gradients (paper §4 end and §5,
//! Table 4; docs/DESIGN.md "Convolutional layers").
//!
//! The index logic and the plaintext integer arithmetic the reference, the client's
//! unmasking and the server's products share (through [`crate::linear_layer`]).
//!
//! # Layout
//! Every tensor is a flat slice in channel-major, row-major order (PyTorch's NCHW for one
//! sample, OIHW for kernels):
//!
//! | tensor | shape | flat index |
//! | --- | --- | --- |
//! | input `a` | `c × h × w` | `(ch·h + y)·w + x` |
//! | kernel `W` | `f × c × k × k` | `((f·c + ch)·k + ky)·k + kx` |
//! | bias `b` | `f` | `f` |
//! | output `z`, error `δ` | `f × oh × ow` | `(f·oh + oy)·ow + ox` |
//!
//! with `oh = (h + pad_before + pad_after − k) / s + 1` (rounded down, as PyTorch does;
//! trailing rows a stride does not reach are unused), `ow` likewise. Zero padding adds
//! `pad_before` rows above and columns left, `pad_after` rows below and columns right;
//! padded positions are zeros, so they contribute nothing and the index map skips them.
//!
//! # The index map
//! A [`Tap`] is one term `(output o, input i, kernel u)` of the convolution: the
//! forward pass, its transpose and the kernel gradients are the same set of taps read
//! three ways,
//!
//! ```text
//! forward     z[o]  = b[f(o)] + Σ_{taps (o,i,u)} W[u]·a[i]
//! transposed  q[i]  =           Σ_{taps (o,i,u)} W[u]·δ[o]
//! gradients   ΔW[u] =           Σ_{taps (o,i,u)} δ[o]·a[i],   Δb[f] = Σ_{o of filter f} δ[o]
//! ```
//!
//! [`ConvGeometry::forward_with`], [`ConvGeometry::transpose_with`] and
//! [`ConvGeometry::kernel_gradient_with`] walk them over any value types with a caller's
//! multiply-accumulate, so the same code serves `i128` fixed point (the reference; [`conv2d`],
//! [`conv2d_transpose`], [`kernel_gradients`]), the client's unmasking `conv(a, R)` mod
//! `N_c`, and ciphertexts on the server (`acc ← acc · [a]^W`).
//!
//! # Scales
//! As for dense layers (docs/DESIGN.md "Fixed-point numbers"): `a` at `2^fa` and `W` at
//! `2^fw` give `z` at `2^(fa+fw)` with `b` at that scale, no rescaling; `δ` at `2^fd` gives
//! `q` at `2^(fd+fw)` and `ΔW` at `2^(fd+fa)` before the one rounding to the "as sent"
//! scale. The integer functions here are exact and checked ([`Error::Overflow`], never a
//! wrap); the range checks of each kind are the caller's.
//!
//! ```
//! use gelunet_protocol::conv::{ConvGeometry, Padding};
//!
//! // CryptoNets' first layer (Conv-1): 1×28×28 padded to 29×29, 5 filters 5×5, stride 2.
//! let g = ConvGeometry::new(1, 28, 28, 5, 5, 2, Padding { before: 0, after: 1 })?;
//! assert_eq!((g.output().height, g.output().width, g.output_len()), (13, 13, 845));
//! assert_eq!(g.num_parameters(), 5 * 25 + 5);
//!
//! // A 7×7 kernel does not fit a 5×5 input.
//! assert!(ConvGeometry::new(1, 5, 5, 1, 7, 1, Padding::NONE).is_err());
//! # Ok::<(), gelunet_protocol::Error>(())
//! ```

use crate::spec::MAX_WIDTH;
use crate::{Error, Result};

/// Largest number of values (`c·h·w`) of a conv or pooling layer's input or output
/// tensor: 2^24 (MNIST's is 784, LeNet-5's largest 6·28·28 = 4,704).
pub const MAX_TENSOR_LEN: usize = 1 << 24;

/// Largest kernel side `k` (and padding on one side).
pub const MAX_KERNEL: usize = 64;

/// A geometry that cannot be computed, with the values that make it so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// A size that must be positive is 0.
    #[error("{what} is 0, must be at least 1")]
    Zero {
        /// Which size (`"channels"`, `"height"`, `"width"`, `"filters"`, `"kernel"`,
        /// `"stride"`).
        what: &'static str,
    },
    /// The kernel is larger than the padded input.
    #[error("kernel {kernel}×{kernel} is larger than the padded input {height}×{width}")]
    KernelTooLarge {
        /// Kernel side `k`.
        kernel: usize,
        /// Padded input height `h + pad_before + pad_after`.
        height: usize,
        /// Padded input width.
        width: usize,
    },
    /// Padding on one side at least the kernel size: some windows would be all zeros.
    #[error("padding {padding} is not below the kernel size {kernel}")]
    PaddingTooLarge {
        /// The larger of the two paddings.
        padding: usize,
        /// Kernel side `k`.
        kernel: usize,
    },
    /// A size above its limit (or one whose product overflows).
    #[error("{what} is {value}, at most {max}")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value (`usize::MAX` if its computation overflowed).
        value: usize,
        /// The limit.
        max: usize,
    },
    /// 2×2 pooling of an input with an odd side.
    #[error("2×2 pooling needs an even height and width, not {height}×{width}")]
    OddPoolInput {
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
}

/// A `channels × height × width` tensor shape (one sample).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Channels (feature maps).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl Shape {
    /// `channels · height · width`, saturating at `usize::MAX`.
    pub fn len(&self) -> usize {
        self.channels
            .saturating_mul(self.height)
            .saturating_mul(self.width)
    }

    /// Whether any side is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.channels, self.height, self.width)
    }
}

/// Zero padding: `before` rows above and columns left, `after` rows below and columns
/// right.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Padding {
    /// Rows above and columns to the left.
    pub before: usize,
    /// Rows below and columns to the right.
    pub after: usize,
}

impl Padding {
    /// No padding.
    pub const NONE: Self = Self {
        before: 0,
        after: 0,
    };

    /// `p` on every side.
    pub fn same(p: usize) -> Self {
        Self {
            before: p,
            after: p,
        }
    }
}

/// One term of a convolution: output `output` takes `W[kernel]·a[input]` (flat indices,
/// module docs "Layout").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tap {
    /// Flat output index `(f·oh + oy)·ow + ox`.
    pub output: usize,
    /// Flat input index `(ch·h + y)·w + x`.
    pub input: usize,
    /// Flat kernel index `((f·c + ch)·k + ky)·k + kx`.
    pub kernel: usize,
}

/// A validated convolution: `filters` kernels of `channels × kernel × kernel` over a
/// `channels × height × width` input, stride `stride`, zero padding `padding`.
/// Construct it with [`ConvGeometry::new`]; every size and index below then fits in
/// `usize` and every fan-in is at most [`MAX_WIDTH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    input: Shape,
    output: Shape,
    kernel: usize,
    stride: usize,
    padding: Padding,
}

fn too_large(what: &'static str, value: usize, max: usize) -> Result<(), GeometryError> {
    if value > max {
        Err(GeometryError::TooLarge { what, value, max })
    } else {
        Ok(())
    }
}

pub(crate) fn nonzero(pairs: &[(&'static str, usize)]) -> Result<(), GeometryError> {
    match pairs.iter().find(|(_, v)| *v == 0) {
        Some(&(what, _)) => Err(GeometryError::Zero { what }),
        None => Ok(()),
    }
}

/// `Error::ShapeMismatch` for a slice of the wrong length.
pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected: expected.to_string(),
            found: found.to_string(),
        })
    }
}

impl ConvGeometry {
    /// Checks and builds a geometry.
    ///
    /// # Errors
    /// [`GeometryError::Zero`] for a zero size or stride;
    /// [`GeometryError::TooLarge`] for a kernel above [`MAX_KERNEL`], an input
    /// or output above [`MAX_TENSOR_LEN`] values, or a fan-in (`c·k·k`, `f·k·k`) or number
    /// of output positions (`oh·ow`) above [`MAX_WIDTH`] (the bound that keeps the sums
    /// inside `i128`, as for dense layers); [`GeometryError::PaddingTooLarge`] for a
    /// padding `≥ k`; [`GeometryError::KernelTooLarge`] if `k` exceeds the padded input.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<Self, GeometryError> {
        nonzero(&[
            ("channels", channels),
            ("height", height),
            ("width", width),
            ("filters", filters),
            ("kernel", kernel),
            ("stride", stride),
        ])?;
        too_large("kernel", kernel, MAX_KERNEL)?;
        let pad = padding.before.max(padding.after);
        if pad >= kernel {
            return Err(GeometryError::PaddingTooLarge {
                padding: pad,
                kernel,
            });
        }
        let input = Shape {
            channels,
            height,
            width,
        };
        too_large("input length", input.len(), MAX_TENSOR_LEN)?;
        too_large("stride", stride, MAX_TENSOR_LEN)?;
        too_large("filters", filters, MAX_WIDTH)?;
        // All sizes ≤ 2^24 now: the sums below cannot overflow.
        let (ph, pw) = (
            height + padding.before + padding.after,
            width + padding.before + padding.after,
        );
        if kernel > ph || kernel > pw {
            return Err(GeometryError::KernelTooLarge {
                kernel,
                height: ph,
                width: pw,
            });
        }
        let output = Shape {
            channels: filters,
            height: (ph - kernel) / stride + 1,
            width: (pw - kernel) / stride + 1,
        };
        let kk = kernel * kernel;
        too_large("fan-in c·k·k", channels.saturating_mul(kk), MAX_WIDTH)?;
        too_large(
            "transposed fan-in f·k·k",
            filters.saturating_mul(kk),
            MAX_WIDTH,
        )?;
        too_large(
            "output positions oh·ow",
            output.height.saturating_mul(output.width),
            MAX_WIDTH,
        )?;
        too_large("output length", output.len(), MAX_TENSOR_LEN)?;
        Ok(Self {
            input,
            output,
            kernel,
            stride,
            padding,
        })
    }

    /// The input shape `c × h × w`.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// The output shape `f × oh × ow`.
    pub fn output(&self) -> Shape {
        self.output
    }

    /// Number of filters `f`.
    pub fn filters(&self) -> usize {
        self.output.channels
    }

    /// Kernel side `k`.
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride `s`.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Zero padding.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// `c·h·w`.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// `f·oh·ow`.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// Number of kernel weights `f·c·k·k`.
    pub fn kernel_len(&self) -> usize {
        self.filters() * self.input.channels * self.kernel * self.kernel
    }

    /// Number of parameters: kernel weights and one bias per filter, `f·c·k·k + f`.
    pub fn num_parameters(&self) -> usize {
        self.kernel_len() + self.filters()
    }

    /// The filter of a flat output index, `o / (oh·ow)` (`≥ f` for `o ≥ output_len()`).
    pub fn filter_of(&self, output: usize) -> usize {
        output / (self.output.height * self.output.width)
    }

    /// The taps of one output position, in order (channel, kernel row, kernel column),
    /// those that fall on padding left out; none for `output ≥ output_len()`.
    pub fn taps_of(&self, output: usize) -> impl Iterator<Item = Tap> + '_ {
        let positions = self.output.height * self.output.width;
        let (f, p) = (output / positions, output % positions);
        let (oy, ox) = (p / self.output.width, p % self.output.width);
        let channels = if output < self.output_len() {
            self.input.channels
        } else {
            0
        };
        let k = self.kernel;
        (0..channels).flat_map(move |ch| {
            (0..k).flat_map(move |ky| {
                (0..k).filter_map(move |kx| {
                    // Padded coordinates, shifted back; padding falls outside 0..h.
                    let y = (oy * self.stride + ky).checked_sub(self.padding.before)?;
                    let x = (ox * self.stride + kx).checked_sub(self.padding.before)?;
                    if y >= self.input.height || x >= self.input.width {
                        return None;
                    }
                    Some(Tap {
                        output,
                        input: (ch * self.input.height + y) * self.input.width + x,
                        kernel: ((f * self.input.channels + ch) * k + ky) * k + kx,
                    })
                })
            })
        })
    }

    /// `Some(c)` for a dense layer in conv form (a 1×1 kernel on a `c×1×1` input, no
    /// padding), whose taps are every `(output, input)` pair in row-major order: the walks
    /// below then loop directly (the same taps in the same order as [`ConvGeometry::taps`]).
    fn dense_fan_in(&self) -> Option<usize> {
        let i = self.input;
        (self.kernel == 1 && i.height == 1 && i.width == 1 && self.padding == Padding::NONE)
            .then_some(i.channels)
    }

    /// Every tap, in output order, then as [`ConvGeometry::taps_of`].
    pub fn taps(&self) -> impl Iterator<Item = Tap> + '_ {
        (0..self.output_len()).flat_map(move |o| self.taps_of(o))
    }

    /// `visit(input, kernel, len)` for each run of taps of output `o < output_len()`,
    /// in the order of [`ConvGeometry::taps_of`]. A run is one kernel row of one
    /// channel, clipped to the input: the taps at `input + t` and `kernel + t` for
    /// `t < len`. The padding is clipped once per output instead of tested per tap, and
    /// the walks below zip each run without per-tap bounds checks (the hot loop of the
    /// plaintext reference).
    fn for_each_run_of(
        &self,
        o: usize,
        mut visit: impl FnMut(usize, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let (ow, positions) = (self.output.width, self.output.height * self.output.width);
        let (f, p) = (o / positions, o % positions);
        let (k, (h, w), before) = (
            self.kernel,
            (self.input.height, self.input.width),
            self.padding.before,
        );
        // Padded top-left corner of the window; kernel rows ky with 0 ≤ y0 + ky − before < h.
        let (y0, x0) = ((p / ow) * self.stride, (p % ow) * self.stride);
        let ky = before.saturating_sub(y0)..(h + before).saturating_sub(y0).min(k);
        let kx = before.saturating_sub(x0)..(w + before).saturating_sub(x0).min(k);
        if kx.is_empty() {
            return Ok(());
        }
        for ch in 0..self.input.channels {
            for ky in ky.clone() {
                let row = (ch * h + y0 + ky - before) * w;
                let krow = ((f * self.input.channels + ch) * k + ky) * k;
                visit(row + x0 + kx.start - before, krow + kx.start, kx.len())?;
            }
        }
        Ok(())
    }

    /// The forward convolution over any value types: output `o` starts at `start(f)`
    /// (the bias of its filter `f`) and takes `mac(acc, a[i], W[u])` for each of its taps
    /// in order. `input` is `c·h·w` long, `kernel` `f·c·k·k`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a slice of the wrong length; the errors of `start`
    /// and `mac`.
    pub fn forward_with<A, K, S>(
        &self,
        input: &[A],
        kernel: &[K],
        mut start: impl FnMut(usize) -> Result<S>,
        mut mac: impl FnMut(&mut S, &A, &K) -> Result<()>,
    ) -> Result<Vec<S>> {
        check_len("conv input", self.input_len(), input.len())?;
        check_len("conv kernel", self.kernel_len(), kernel.len())?;
        let mut out = Vec::with_capacity(self.output_len());
        if let Some(n) = self.dense_fan_in() {
            // A 1×1 kernel on a 1×1 input: tap (o, i) has kernel index o·n + i.
            for (o, row) in kernel.chunks_exact(n).enumerate() {
                let mut acc = start(o)?;
                for (a, w) in input.iter().zip(row) {
                    mac(&mut acc, a, w)?;
                }
                out.push(acc);
            }
            return Ok(out);
        }
        for o in 0..self.output_len() {
            let mut acc = start(self.filter_of(o))?;
            self.for_each_run_of(o, |i, u, n| {
                for (a, w) in input[i..i + n].iter().zip(&kernel[u..u + n]) {
                    mac(&mut acc, a, w)?;
                }
                Ok(())
            })?;
            out.push(acc);
        }
        Ok(out)
    }

    /// The transposed convolution over any value types: input position `i` starts at
    /// `zero()` and takes `mac(acc, δ[o], W[u])` for every tap `(o, i, u)`, in tap order.
    /// `delta` is `f·oh·ow` long, `kernel` `f·c·k·k`; the result has `c·h·w` values.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a slice of the wrong length; the errors of `mac`.
    pub fn transpose_with<D, K, S>(
        &self,
        delta: &[D],
        kernel: &[K],
        mut zero: impl FnMut() -> S,
        mut mac: impl FnMut(&mut S, &D, &K) -> Result<()>,
    ) -> Result<Vec<S>> {
        check_len("conv error", self.output_len(), delta.len())?;
        check_len("conv kernel", self.kernel_len(), kernel.len())?;
        let mut out: Vec<S> = (0..self.input_len()).map(|_| zero()).collect();
        if let Some(n) = self.dense_fan_in() {
            for (d, row) in delta.iter().zip(kernel.chunks_exact(n)) {
                for (acc, w) in out.iter_mut().zip(row) {
                    mac(acc, d, w)?;
                }
            }
            return Ok(out);
        }
        for (o, d) in delta.iter().enumerate() {
            self.for_each_run_of(o, |i, u, n| {
                for (q, w) in out[i..i + n].iter_mut().zip(&kernel[u..u + n]) {
                    mac(q, d, w)?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// The kernel gradient over any value types, accumulated into `acc` (`f·c·k·k`
    /// long, so a mini-batch sums into one buffer): `mac(acc[u], δ[o], a[i])` for every
    /// tap, in tap order.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a slice of the wrong length; the errors of `mac`
    /// (then `acc` is partly updated: the integer [`kernel_gradients`] works on a copy).
    pub fn kernel_gradient_with<D, A, S>(
        &self,
        delta: &[D],
        input: &[A],
        acc: &mut [S],
        mut mac: impl FnMut(&mut S, &D, &A) -> Result<()>,
    ) -> Result<()> {
        check_len("conv error", self.output_len(), delta.len())?;
        check_len("conv input", self.input_len(), input.len())?;
        check_len("conv kernel gradient", self.kernel_len(), acc.len())?;
        if let Some(n) = self.dense_fan_in() {
            for (d, row) in delta.iter().zip(acc.chunks_exact_mut(n)) {
                for (acc, a) in row.iter_mut().zip(input) {
                    mac(acc, d, a)?;
                }
            }
            return Ok(());
        }
        for (o, d) in delta.iter().enumerate() {
            self.for_each_run_of(o, |i, u, n| {
                for (g, a) in acc[u..u + n].iter_mut().zip(&input[i..i + n]) {
                    mac(g, d, a)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

/// `acc + x·y`, checked.
///
/// Factors that fit in `i64` (every fixed-point value does) take one 64×64→128-bit
/// product, which cannot overflow; only wider ones go through `i128::checked_mul`.
#[inline]
pub(crate) fn mac_i128(acc: &mut i128, x: &i128, y: &i128, op: &'static str) -> Result<()> {
    let product = match (i64::try_from(*x), i64::try_from(*y)) {
        (Ok(x), Ok(y)) => Some(i128::from(x) * i128::from(y)),
        _ => x.checked_mul(*y),
    };
    *acc = product
        .and_then(|p| acc.checked_add(p))
        .ok_or_else(Error::overflow(op))?;
    Ok(())
}

/// The forward convolution in exact integers, `z[f,p] = Σ_{ch,u} W[f,ch,u]·a[ch, p·s+u] +
/// b[f]` (docs/DESIGN.md "Convolutional layers"): `a` (`c·h·w`, at `2^fa`), `w`
/// (`f·c·k·k`, at `2^fw`), `b` (`f`, at `2^(fa+fw)`) give `z` (`f·oh·ow`, at
/// `2^(fa+fw)`).
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::Overflow`] if a sum leaves `i128`.
pub fn conv2d(g: &ConvGeometry, a: &[i128], w: &[i128], b: &[i128]) -> Result<Vec<i128>> {
    conv2d_bounded(g, Bounded::of(a), Bounded::of(w), b)
}

/// [`conv2d`] with known magnitude bounds.
pub(crate) fn conv2d_bounded(
    g: &ConvGeometry,
    a: Bounded<'_>,
    w: Bounded<'_>,
    b: &[i128],
) -> Result<Vec<i128>> {
    check_len("conv bias", g.filters(), b.len())?;
    let taps = g.input().channels * g.kernel() * g.kernel();
    if fast_path(a, w, taps + 1, magnitude_bits(b)) {
        // Every output is `b + Σ w·a` over at most `taps` terms.
        return g.forward_with(
            a.v,
            w.v,
            |f| Ok(b[f]),
            |acc, a, w| {
                *acc += narrow_mul(w, a);
                Ok(())
            },
        );
    }
    g.forward_with(
        a.v,
        w.v,
        |f| Ok(b[f]),
        |acc, a, w| mac_i128(acc, w, a, "conv sum of w * a"),
    )
}

/// Integers with a bound on their magnitude: every `|v| < 2^bits`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounded<'a> {
    /// The values.
    pub v: &'a [i128],
    /// The bound's bits.
    pub bits: u32,
}

impl<'a> Bounded<'a> {
    /// `v` with the bit length of its largest magnitude.
    pub(crate) fn of(v: &'a [i128]) -> Self {
        Self {
            v,
            bits: magnitude_bits(v),
        }
    }
}

/// The bit length of the largest `|v|`.
pub(crate) fn magnitude_bits(v: &[i128]) -> u32 {
    v.iter()
        .map(|x| 128 - x.unsigned_abs().leading_zeros())
        .max()
        .unwrap_or(0)
}

/// Whether every sum of at most `terms` values, each a product `x[i]·y[j]` or a value
/// below `2^extra_bits`, stays below `2^126` with factors that fit in `i64`: the fast path
/// of the integer walks (one 64×64→128-bit product per term, [`narrow_mul`], and
/// unchecked `i128` sums, which then cannot overflow). Otherwise the checked path.
fn fast_path(x: Bounded<'_>, y: Bounded<'_>, terms: usize, extra_bits: u32) -> bool {
    let log_terms = usize::BITS - terms.saturating_sub(1).leading_zeros();
    // |Σ| < terms · 2^max(bx + by, extra) ≤ 2^(max(bx + by, extra) + ⌈log₂ terms⌉).
    x.bits <= 63 && y.bits <= 63 && (x.bits + y.bits).max(extra_bits) + log_terms <= 126
}

/// `x·y` for factors below `2^63` in magnitude (checked by [`fast_path`]): exact.
#[inline]
fn narrow_mul(x: &i128, y: &i128) -> i128 {
    i128::from(*x as i64) * i128::from(*y as i64)
}

/// The transposed convolution `q = convᵀ(δ, W)` in exact integers (backpropagation to
/// the input, docs/DESIGN.md "Convolutional layers"): `δ` (`f·oh·ow`, at `2^fd`) and `w`
/// (`f·c·k·k`, at `2^fw`) give `q` (`c·h·w`, at `2^(fd+fw)`). It is the adjoint of
/// [`conv2d`] without bias: `⟨conv(a, W), δ⟩ = ⟨a, convᵀ(δ, W)⟩`.
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::Overflow`].
pub fn conv2d_transpose(g: &ConvGeometry, delta: &[i128], w: &[i128]) -> Result<Vec<i128>> {
    conv2d_transpose_bounded(g, Bounded::of(delta), Bounded::of(w))
}

/// [`conv2d_transpose`] with known magnitude bounds.
pub(crate) fn conv2d_transpose_bounded(
    g: &ConvGeometry,
    delta: Bounded<'_>,
    w: Bounded<'_>,
) -> Result<Vec<i128>> {
    // An input position takes at most one term per filter and kernel offset.
    let terms = g.filters() * g.kernel() * g.kernel();
    if fast_path(delta, w, terms, 0) {
        return g.transpose_with(
            delta.v,
            w.v,
            || 0,
            |acc, d, w| {
                *acc += narrow_mul(d, w);
                Ok(())
            },
        );
    }
    g.transpose_with(
        delta.v,
        w.v,
        || 0,
        |acc, d, w| mac_i128(acc, d, w, "conv sum of delta * w"),
    )
}

/// Adds one sample's kernel and bias gradients to `dw` and `db` in exact integers:
/// `ΔW[f,ch,u] += Σ_p δ[f,p]·a[ch, p·s+u]` and `Δb[f] += Σ_p δ[f,p]` (docs/DESIGN.md
/// "Convolutional layers"; the client's, in plaintext). `δ` (`f·oh·ow`, at `2^fd`), `a`
/// (`c·h·w`, at `2^fa`); `dw` (`f·c·k·k`) gains at `2^(fd+fa)` and `db` (`f`) at
/// `2^fd`, unrounded: sum the mini-batch, then round once as the dense layers do.
/// All or nothing: on error `dw` and `db` are unchanged.
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::Overflow`].
pub fn kernel_gradients(
    g: &ConvGeometry,
    delta: &[i128],
    a: &[i128],
    dw: &mut [i128],
    db: &mut [i128],
) -> Result<()> {
    check_len("conv bias gradient", g.filters(), db.len())?;
    let (mut w, mut b) = (dw.to_vec(), db.to_vec());
    let mut bound = 1u128 << magnitude_bits(dw).min(127);
    accumulate_kernel_gradients(g, delta, a, &mut w, &mut b, &mut bound)?;
    dw.copy_from_slice(&w);
    db.copy_from_slice(&b);
    Ok(())
}

/// [`kernel_gradients`] in place: on error `dw` and `db` are partly updated (for callers
/// that drop them on error). `dw_bound` bounds every `|dw|` (saturating at `2^127`) and
/// is raised by this sample's share.
pub(crate) fn accumulate_kernel_gradients(
    g: &ConvGeometry,
    delta: &[i128],
    a: &[i128],
    dw: &mut [i128],
    db: &mut [i128],
    dw_bound: &mut u128,
) -> Result<()> {
    check_len("conv bias gradient", g.filters(), db.len())?;
    // A kernel weight takes at most one term per output position of its filter, added
    // to its running sum.
    let (delta_b, a_b) = (Bounded::of(delta), Bounded::of(a));
    let positions = g.output().height * g.output().width;
    let share = (positions as u128)
        .checked_shl(delta_b.bits + a_b.bits)
        .filter(|&s| s >> (delta_b.bits + a_b.bits) == positions as u128)
        .unwrap_or(u128::MAX);
    let total = dw_bound.saturating_add(share);
    if delta_b.bits <= 63 && a_b.bits <= 63 && total < 1 << 126 {
        g.kernel_gradient_with(delta, a, dw, |acc, d, a| {
            *acc += narrow_mul(d, a);
            Ok(())
        })?;
    } else {
        g.kernel_gradient_with(delta, a, dw, |acc, d, a| {
            mac_i128(acc, d, a, "conv sum of delta * a")
        })?;
    }
    *dw_bound = total;
    for (o, d) in delta.iter().enumerate() {
        let f = g.filter_of(o);
        db[f] = db[f]
            .checked_add(*d)
            .ok_or_else(Error::overflow("conv sum of delta"))?;
    }
    Ok(())
}
