//! The linear part of one weight layer as every party computes it: a dense `W·a + b`,
//! or a convolution with its optional 2×2 sum pooling (docs/DESIGN.md "Convolutional
//! layers"; paper §4 end). One index logic for the reference, the client's unmasking
//! (its own activations by the ledger's kernels, mod `N_c`) and the server's products
//! on ciphertexts.
//!
//! A dense layer is the `1×1` convolution of its flattened input (`n × 1 × 1`, `m`
//! filters, [`crate::conv_net`]), so both kinds are a [`ConvGeometry`]; the server sees
//! a convolution as one small matrix–vector product per output *position*:
//!
//! ```text
//! z[f, p] = b[f] + Σ_u W[f, u]·a[in(p, u)]     over the columns u of position p
//! ```
//!
//! where `in(p, u)` is the input under kernel offset `u = (ch, ky, kx)` at position `p`
//! ([`LinearLayer::position_taps`]; offsets on zero padding are left out). A dense
//! layer has one position with every column. Pooling sums the four positions of each
//! window, so the bias enters a pooled output `4×` ([`LinearLayer::bias_multiplicity`])
//! and the value moves two bits up the scale ([`LinearLayer::pool_bits`]).
//!
//! ```text
//! forward    z = pool(conv(a, W) + b)           at 2^(fa + fw + pool_bits)
//! backward   q = convᵀ(pool_back(δ), W)         δ at 2^fd  →  q at 2^(fd + pool_bits + fw)
//! ```
//!
//! ```
//! use gelunet_protocol::linear_layer::LinearLayer;
//! use gelunet_protocol::ModelSpec;
//! use gelunet_protocol::arch::Arch;
//! use gelunet_protocol::conv::Shape;
//!
//! let arch: Arch = "conv3x3:2,meanpool,relu,dense:3".parse()?;
//! let spec = ModelSpec::from_arch(&arch, Shape { channels: 1, height: 6, width: 6 })?;
//! let conv = LinearLayer::of(&spec, 1)?;
//! // 2 filters of 4×4 positions, pooled to 2×2: 8 outputs of 36 inputs.
//! assert_eq!((conv.width(), conv.fan_in(), conv.positions()), (8, 36, 16));
//! assert_eq!((conv.bias_multiplicity(), conv.pool_bits()), (4, 2));
//! let dense = LinearLayer::of(&spec, 2)?;
//! assert_eq!((dense.width(), dense.fan_in(), dense.positions()), (3, 8, 1));
//! // There is no layer 3.
//! assert!(LinearLayer::of(&spec, 3).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::Array2;

use crate::conv::{ConvGeometry, Padding};
use crate::fixed::Scales;
use crate::pool::{MeanPool2, POOL_SCALE_BITS};
use crate::spec::{LayerKind, ModelSpec};
use crate::{Error, Result};

/// The linear map of weight layer `i` of a [`ModelSpec`] (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearLayer {
    geometry: ConvGeometry,
    pool: Option<MeanPool2>,
    dense: bool,
}

impl LinearLayer {
    /// The linear map of layer `layer ∈ 1..=L` of `spec`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a layer outside `1..=L`; [`Error::Geometry`] for a conv
    /// layer whose geometry does not validate (a validated spec's always does).
    pub fn of(spec: &ModelSpec, layer: usize) -> Result<Self> {
        if layer == 0 || layer > spec.num_layers() {
            return Err(Error::InvalidSpec {
                reason: format!("layer {layer} outside 1..={}", spec.num_layers()),
            });
        }
        Ok(match spec.layer_kind(layer) {
            LayerKind::Dense => {
                let (m, n) = spec.layer_shape(layer);
                Self {
                    geometry: ConvGeometry::new(n, 1, 1, m, 1, 1, Padding::NONE)?,
                    pool: None,
                    dense: true,
                }
            }
            LayerKind::Conv(c) => Self {
                geometry: c.geometry()?,
                pool: c.pooling()?,
                dense: false,
            },
        })
    }

    /// Whether the layer is fully connected.
    pub fn is_dense(&self) -> bool {
        self.dense
    }

    /// The convolution (for a dense layer, the `1×1` one on the `n × 1 × 1` input).
    pub fn geometry(&self) -> &ConvGeometry {
        &self.geometry
    }

    /// The pooling after the convolution, if any.
    pub fn pool(&self) -> Option<&MeanPool2> {
        self.pool.as_ref()
    }

    /// Output values `n_i` (pooled, if the layer pools).
    pub fn width(&self) -> usize {
        match &self.pool {
            Some(p) => p.output().len(),
            None => self.geometry.output_len(),
        }
    }

    /// Input values `n_{i−1}`.
    pub fn fan_in(&self) -> usize {
        self.geometry.input_len()
    }

    /// Filters `f` (a dense layer's units).
    pub fn filters(&self) -> usize {
        self.geometry.filters()
    }

    /// Columns of the kernel matrix, `c·k·k` (a dense layer's fan-in).
    pub fn columns(&self) -> usize {
        let g = &self.geometry;
        g.input().channels * g.kernel() * g.kernel()
    }

    /// Output positions `oh·ow` before pooling (1 for a dense layer).
    pub fn positions(&self) -> usize {
        let o = self.geometry.output();
        o.height * o.width
    }

    /// How many times a filter's bias enters each output: 4 when pooled, else 1.
    pub fn bias_multiplicity(&self) -> u32 {
        if self.pool.is_some() {
            4
        } else {
            1
        }
    }

    /// The scale bits pooling adds to the pre-activations and, backward, to the errors
    /// copied through it: [`POOL_SCALE_BITS`] when pooled, else 0.
    pub fn pool_bits(&self) -> u32 {
        if self.pool.is_some() {
            POOL_SCALE_BITS
        } else {
            0
        }
    }

    /// The fractional bits of the layer's pre-activations: `fa + fw + pool_bits`.
    pub fn pre_activation_frac(&self, scales: &Scales) -> u32 {
        scales.fa + scales.fw + self.pool_bits()
    }

    /// The fractional bits of the backward products `q = convᵀ(pool_back(δ), W)` for
    /// `δ` at `2^fd`: `fd + pool_bits + fw`.
    pub fn product_frac(&self, scales: &Scales) -> u32 {
        scales.fd + scales.fw + self.pool_bits()
    }

    /// The most `|W|·|a|` terms (biases counted as terms) in one output: `n + 1` dense,
    /// `(c·k·k + 1)·4` pooled, `c·k·k + 1` otherwise (the packing bounds,
    /// [`crate::packing::sample_slot_bits`]).
    pub fn forward_terms(&self) -> usize {
        (self.columns() + 1) * self.bias_multiplicity() as usize
    }

    /// The most `|δ|·|W|` terms in one backward product: `m` dense, `f·k·k` for a
    /// convolution (each input sits under at most `k·k` offsets of each filter).
    pub fn backward_terms(&self) -> usize {
        let g = &self.geometry;
        g.filters() * g.kernel() * g.kernel()
    }

    /// The taps of output position `p < positions()`: `(column u, input index)` for
    /// every kernel offset that does not fall on padding, in column order. A dense
    /// layer's single position has every column `u` on input `u`.
    pub fn position_taps(&self, p: usize) -> Vec<(usize, usize)> {
        let cols = self.columns();
        if self.dense {
            return (0..cols).map(|u| (u, u)).collect();
        }
        // Filter 0's outputs are the positions; its kernel indices are the columns.
        self.geometry
            .taps_of(p)
            .map(|t| (t.kernel, t.input))
            .collect()
    }

    /// The layer's output index of filter `f` at position `p` before pooling.
    pub fn conv_output(&self, f: usize, p: usize) -> usize {
        f * self.positions() + p
    }

    /// One output `o < width()` over any value types: `start(f, mult)` (the bias of
    /// its filter `f`, entering `mult` times), then `mac(acc, W[f, u], a[i])` for each
    /// tap `(u, i)` of each position pooled into `o`. `kernel` is the flat `f × c·k·k`
    /// kernel matrix (row-major), `input` the `n_{i−1}` inputs.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for slices of the wrong length or `o ≥ width()`; the
    /// errors of `start` and `mac`.
    pub fn output_with<A, K, S>(
        &self,
        o: usize,
        input: &[A],
        kernel: &[K],
        start: impl FnOnce(usize, u32) -> Result<S>,
        mut mac: impl FnMut(&mut S, &K, &A) -> Result<()>,
    ) -> Result<S> {
        crate::conv::check_len("layer input", self.fan_in(), input.len())?;
        crate::conv::check_len(
            "layer kernel",
            self.filters() * self.columns(),
            kernel.len(),
        )?;
        if o >= self.width() {
            return Err(Error::ShapeMismatch {
                what: "layer output index",
                expected: format!("below {}", self.width()),
                found: o.to_string(),
            });
        }
        let cols = self.columns();
        let outputs: Vec<usize> = match &self.pool {
            Some(p) => p.window(o).map(|w| w.to_vec()).unwrap_or_default(),
            None => vec![o],
        };
        let f = self.geometry.filter_of(outputs[0]);
        let mut acc = start(f, self.bias_multiplicity())?;
        if self.dense {
            for (w, a) in kernel[f * cols..(f + 1) * cols].iter().zip(input) {
                mac(&mut acc, w, a)?;
            }
            return Ok(acc);
        }
        for out in outputs {
            for t in self.geometry.taps_of(out) {
                mac(&mut acc, &kernel[t.kernel], &input[t.input])?;
            }
        }
        Ok(acc)
    }

    /// Conv positions summed into one output: 4 when pooled, else 1.
    pub fn windows(&self) -> usize {
        self.bias_multiplicity() as usize
    }

    /// Outputs per filter `n_i / f` (pooled positions, or positions; 1 for a dense layer).
    pub fn output_positions(&self) -> usize {
        self.width() / self.filters().max(1)
    }

    /// The im2col matrix of one sample for *position packing* (docs/DESIGN.md
    /// "Convolutional layers", inference): row `q < output_positions()`, column
    /// `d·c·k·k + u` holds the input under kernel column `u` at the `d`-th conv position
    /// pooled into `q` (`d < windows()`), 0 on padding. Then output `(f, q)` is
    /// `b[f]·windows + Σ_col W_ext[f, col]·M[q, col]` with `W_ext` the kernel matrix
    /// repeated `windows()` times ([`LinearLayer::expanded_kernel`]): a dense product
    /// whose "samples" are the output positions, packed in slots like samples.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `a` is not `n_{i−1}` long.
    pub fn im2col(&self, a: &[i128]) -> Result<Array2<i128>> {
        crate::conv::check_len("layer input", self.fan_in(), a.len())?;
        let (cols, windows) = (self.columns(), self.windows());
        let mut m = Array2::zeros((self.output_positions(), windows * cols));
        for q in 0..self.output_positions() {
            for d in 0..windows {
                let p = match &self.pool {
                    Some(pool) => pool.window(q).map_or(0, |w| w[d]),
                    None => q,
                };
                for (u, i) in self.position_taps(p) {
                    m[[q, d * cols + u]] = a[i];
                }
            }
        }
        Ok(m)
    }

    /// The kernel matrix `f × c·k·k` repeated `windows()` times side by side, the weights
    /// of [`LinearLayer::im2col`]'s columns.
    pub fn expanded_kernel<T: Clone>(&self, w: &Array2<T>) -> Array2<T> {
        let (f, cols) = w.dim();
        Array2::from_shape_fn((f, cols * self.windows()), |(j, c)| {
            w[[j, c % cols]].clone()
        })
    }

    /// The backward product over any value types: the errors `delta` of the (pooled)
    /// outputs are copied through the pooling, then input `i` starts at `zero()` and
    /// takes `mac(acc, δ[o], W[u])` for every tap `(o, i, u)`
    /// ([`ConvGeometry::transpose_with`]).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for slices of the wrong length; the errors of `mac`.
    pub fn transpose_with<D: Clone, K, S>(
        &self,
        delta: &[D],
        kernel: &[K],
        zero: impl FnMut() -> S,
        mac: impl FnMut(&mut S, &D, &K) -> Result<()>,
    ) -> Result<Vec<S>> {
        match &self.pool {
            Some(p) => self
                .geometry
                .transpose_with(&p.backward(delta)?, kernel, zero, mac),
            None => self.geometry.transpose_with(delta, kernel, zero, mac),
        }
    }
}
