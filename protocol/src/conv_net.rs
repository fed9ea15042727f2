//! Plaintext fixed-point training of an [`Arch`] (conv, pooling, dense, activations),
//! through [`crate::conv`] and [`crate::pool`]; the conv-net counterpart of
//! [`crate::math::FixedModel`] (docs/DESIGN.md "Convolutional layers", "Fixed-point
//! numbers"). [`crate::math::FixedModel`] runs it for specs with conv layers
//! ([`ModelSpec::from_arch`]), so the reference trainer and `gelunet train --plaintext
//! --arch` train through it; the encrypted roles run the same per-layer math
//! ([`layer_gradients_of`], [`crate::math::activate_at`], [`crate::math::hidden_error_at`]).
//!
//! A dense layer of `u` units on a `c×h×w` input is the `1×1` convolution of `u` filters
//! on the flattened `(c·h·w)×1×1` input (its flat kernel is the `u × n` row-major
//! weight matrix of [`crate::math`]), so every weight layer runs the same three
//! [`ConvGeometry`] walks.
//!
//! Every tensor carries its number of fractional bits, so that pooling stays an exact
//! sum (the `¼` is two more bits, [`POOL_SCALE_BITS`]) and nothing is rounded that the
//! dense math does not round:
//!
//! ```text
//! linear      z = W·a + b·2^(F_a − fa)      a at 2^F_a, W at 2^fw  →  z at 2^(F_a + fw)
//! pooling     Σ of the 2×2 window           2^F → 2^(F + 2)
//! activation  a = round(f(z / 2^F_z)·2^fa)                          →  2^fa
//! output      δ = round(softmax(z / 2^F_z)·2^fd) − t·2^fd           →  2^fd
//! backward    q = convᵀ(g, W)               g at 2^G  →  q at 2^(G + fw)
//!             pooling: g copied             2^G → 2^(G + 2)
//!             δ = round_shift(g ⊙ round(f'(z)·2^fa), G + fa − fd)   →  2^fd
//! gradients   ΔW = Σ_batch Σ_taps g·a at 2^(G + F_a), Δb = Σ_batch Σ_p g at 2^G,
//!             each rounded once to the "as sent" scales 2^(fw−fe), 2^(fa+fw−fe)
//! SGD         as [`crate::math::scaled_step`] and [`crate::math::subtract`]
//! ```
//!
//! On a dense-only architecture this is bit for bit [`crate::math::FixedModel`] (tested).
//! All integer arithmetic is checked: overflow is [`Error::Overflow`], a value beyond
//! its kind's range (at its scale) [`Error::OutOfRange`].

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::arch::{Arch, Network, Op};
use crate::conv::{
    accumulate_kernel_gradients, conv2d_bounded, conv2d_transpose_bounded, kernel_gradients,
    magnitude_bits, Bounded, ConvGeometry, Padding, Shape,
};
use crate::fixed::{round_shift, shl_checked, Scales, ValueKind};
use crate::linear_layer::LinearLayer;
use crate::math::{
    activation_value, argmax, decode_at, error_value, scaled_step, softmax_in_place, subtract,
    LayerGradients, LayerParams,
};
use crate::pool::{MeanPool2, POOL_SCALE_BITS};
use crate::spec::{Activation, ModelSpec};
use crate::{Error, Result};

/// One step of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A conv or dense layer: its geometry and the index of its parameters.
    Linear(ConvGeometry, usize),
    Pool(MeanPool2),
    Act(Activation),
}

/// Integers with their number of fractional bits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tensor {
    v: Vec<i128>,
    frac: u32,
}

impl Tensor {
    /// `v` at `2^frac`, each value checked against the range of `kind` at that scale.
    fn checked(scales: &Scales, kind: ValueKind, v: Vec<i128>, frac: u32) -> Result<Self> {
        for &x in &v {
            check_at(scales, kind, x, frac)?;
        }
        Ok(Self { v, frac })
    }
}

/// The unrounded gradient sums of part of a mini-batch, one buffer per weight layer,
/// with the fractional bits of each layer's sums (`(0, 0)` before any sample).
struct Sums {
    dw: Vec<Vec<i128>>,
    db: Vec<Vec<i128>>,
    /// A bound on each layer's `|dw|` (see [`accumulate_kernel_gradients`]).
    dw_bound: Vec<u128>,
    fracs: Vec<(u32, u32)>,
}

impl Sums {
    /// The elementwise sum of two parts, checked.
    fn add(mut self, other: Self) -> Result<Self> {
        let pairs = self
            .dw
            .iter_mut()
            .chain(&mut self.db)
            .zip(other.dw.iter().chain(&other.db));
        for (mine, theirs) in pairs {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m = m
                    .checked_add(*t)
                    .ok_or_else(Error::overflow("conv net gradient sum"))?;
            }
        }
        for (m, t) in self.dw_bound.iter_mut().zip(other.dw_bound) {
            *m = m.saturating_add(t);
        }
        for (m, t) in self.fracs.iter_mut().zip(other.fracs) {
            if *m == (0, 0) {
                *m = t;
            }
        }
        Ok(self)
    }
}

/// A conv net's true parameters in fixed point, with its inferred shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvNet {
    network: Network,
    steps: Vec<Step>,
    /// One per weight layer, input first: `w` is `f × (c·k·k)` (the flat OIHW kernel)
    /// at `2^fw`, `b` has `f` values at `2^(fa+fw)`.
    params: Vec<LayerParams>,
    /// The bit length of each layer's largest `|w|` (for the integer walks' fast path).
    kernel_bits: Vec<u32>,
}

fn check_at(scales: &Scales, kind: ValueKind, v: i128, frac: u32) -> Result<i128> {
    let max_bits = frac + scales.limit_bits(kind);
    if max_bits < 127 && v.unsigned_abs() >> max_bits != 0 {
        return Err(Error::OutOfRange {
            kind,
            value: v.to_string(),
            max_bits,
        });
    }
    Ok(v)
}

/// Shape inference of `arch` on `input`: the network, its steps and the geometry of each
/// weight layer (a dense layer as the 1×1 convolution of its flattened input).
fn structure(arch: &Arch, input: Shape) -> Result<(Network, Vec<Step>, Vec<ConvGeometry>)> {
    let network = arch.infer(input)?;
    let mut steps = Vec::with_capacity(network.layers.len());
    let mut geoms = Vec::new();
    for layer in &network.layers {
        match layer.op {
            Op::Conv(g) => {
                steps.push(Step::Linear(g, geoms.len()));
                geoms.push(g);
            }
            // Shape inference checked units and inputs against MAX_WIDTH.
            Op::Dense { inputs, units } => {
                let g = ConvGeometry::new(inputs, 1, 1, units, 1, 1, Padding::NONE)?;
                steps.push(Step::Linear(g, geoms.len()));
                geoms.push(g);
            }
            Op::MeanPool(p) => steps.push(Step::Pool(p)),
            Op::Activation(a) => steps.push(Step::Act(a)),
        }
    }
    Ok((network, steps, geoms))
}

/// `v` from `2^from` to `2^to`: exact when finer, [`round_shift`] when coarser.
fn to_frac(v: i128, from: u32, to: u32) -> Result<i128> {
    if to >= from {
        shl_checked(v, to - from)
    } else {
        round_shift(v, from - to)
    }
}

impl ConvNet {
    /// Shape inference of `arch` on `input`, then Xavier-uniform weights as
    /// [`crate::math::FixedModel::init`] draws them (`U(−l, l)`, `l = √(6 / (fan-in +
    /// fan-out))` with fan-in `c·k·k` and fan-out `f·k·k`; layer by layer, filter by
    /// filter, in kernel order, from `ChaCha20Rng::seed_from_u64(seed)`), biases 0.
    ///
    /// # Errors
    /// [`Error::Arch`] if the architecture does not fit `input`; [`Error::InvalidScales`];
    /// [`Error::OutOfRange`] if `l` exceeds the weight range.
    pub fn init(arch: &Arch, input: Shape, scales: &Scales, seed: u64) -> Result<Self> {
        scales.validate()?;
        let (network, steps, geoms) = structure(arch, input)?;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(geoms.len());
        for g in geoms {
            let kk = g.kernel() * g.kernel();
            let (f, n) = (g.filters(), g.input().channels * kk);
            let l = (6.0 / (n + f * kk) as f64).sqrt();
            let mut w = Array2::zeros((f, n));
            for v in w.iter_mut() {
                *v = scales.encode(ValueKind::Weight, rng.gen_range(-l..l))?;
            }
            params.push(LayerParams {
                w,
                b: Array1::zeros(f),
            });
        }
        Ok(Self {
            network,
            steps,
            kernel_bits: Self::bits_of(&params),
            params,
        })
    }

    /// The net of a spec with conv layers ([`ModelSpec::arch`]) with the given
    /// parameters (one per weight layer, `w` of [`ModelSpec::param_shape`]).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a dense spec; [`Error::Arch`]; as
    /// [`ConvNet::set_params`].
    pub fn from_spec(spec: &ModelSpec, scales: &Scales, params: Vec<LayerParams>) -> Result<Self> {
        let (arch, input) = spec.arch().ok_or_else(|| Error::InvalidSpec {
            reason: "a conv net needs a spec with conv layers".into(),
        })?;
        let (network, steps, geoms) = structure(&arch, input)?;
        let mut net = Self {
            network,
            steps,
            kernel_bits: vec![0; geoms.len()],
            params: geoms
                .iter()
                .map(|g| LayerParams {
                    w: Array2::zeros((g.filters(), g.input().channels * g.kernel() * g.kernel())),
                    b: Array1::zeros(g.filters()),
                })
                .collect(),
        };
        net.set_params(scales, params)?;
        Ok(net)
    }

    /// The parameters, taken out of the net.
    pub fn into_params(self) -> Vec<LayerParams> {
        self.params
    }

    /// Predicted classes (argmax of the output layer's integer pre-activations, first
    /// maximum on ties, as [`crate::math::FixedModel::predict`]) for `x`
    /// (`B × input length`, at `2^fa`).
    ///
    /// # Errors
    /// As [`ConvNet::logits`].
    pub fn predict(&self, scales: &Scales, x: ArrayView2<'_, i128>) -> Result<Vec<usize>> {
        (0..x.nrows())
            .into_par_iter()
            .map(|r| x.row(r))
            .map(|row| {
                let (_, z) = self.forward_sample(scales, &row.to_vec())?;
                Ok(argmax(ArrayView1::from(&z.v)))
            })
            .collect()
    }

    /// The architecture's inferred shapes.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The parameters of each weight layer, input first (`w`: `f × (c·k·k)` at `2^fw`,
    /// for a dense layer `units × inputs`; `b`: `f` at `2^(fa+fw)`).
    pub fn params(&self) -> &[LayerParams] {
        &self.params
    }

    /// Replaces the parameters.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for another number or shape of layers;
    /// [`Error::OutOfRange`] for a weight or bias out of range. Nothing changes on error.
    pub fn set_params(&mut self, scales: &Scales, params: Vec<LayerParams>) -> Result<()> {
        crate::conv::check_len("conv net layers", self.params.len(), params.len())?;
        for (old, new) in self.params.iter().zip(&params) {
            if old.w.dim() != new.w.dim() || old.b.len() != new.b.len() {
                return Err(Error::ShapeMismatch {
                    what: "conv net parameters",
                    expected: format!("{:?} and {}", old.w.dim(), old.b.len()),
                    found: format!("{:?} and {}", new.w.dim(), new.b.len()),
                });
            }
            for &v in &new.w {
                scales.check(ValueKind::Weight, v)?;
            }
            for &v in &new.b {
                scales.check(ValueKind::Bias, v)?;
            }
        }
        self.kernel_bits = Self::bits_of(&params);
        self.params = params;
        Ok(())
    }

    /// Layer `p`'s flat kernel with its magnitude bound.
    fn kernel(&self, p: usize) -> Result<Bounded<'_>> {
        let v = self.params[p]
            .w
            .as_slice()
            .ok_or_else(|| Error::ShapeMismatch {
                what: "conv net kernel layout",
                expected: "standard layout".into(),
                found: "strided".into(),
            })?;
        Ok(Bounded {
            v,
            bits: self.kernel_bits[p],
        })
    }

    /// The bit length of each layer's largest weight magnitude.
    fn bits_of(params: &[LayerParams]) -> Vec<u32> {
        params
            .iter()
            .map(|p| p.w.iter().map(|&w| magnitude_bits(&[w])).max().unwrap_or(0))
            .collect()
    }

    /// The forward pass of one sample: the input of every step, then the logits.
    fn forward_sample(&self, scales: &Scales, x: &[i128]) -> Result<(Vec<Tensor>, Tensor)> {
        crate::conv::check_len("conv net input", self.network.input.len(), x.len())?;
        for &v in x {
            scales.check(ValueKind::Activation, v)?;
        }
        let mut t = Tensor {
            v: x.to_vec(),
            frac: scales.fa,
        };
        let mut inputs = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let next = match *step {
                Step::Linear(g, p) => {
                    let shift = t.frac - scales.fa;
                    let b = self.params[p]
                        .b
                        .iter()
                        .map(|&b| shl_checked(b, shift))
                        .collect::<Result<Vec<_>>>()?;
                    let z = conv2d_bounded(&g, Bounded::of(&t.v), self.kernel(p)?, &b)?;
                    Tensor::checked(scales, ValueKind::PreActivation, z, t.frac + scales.fw)?
                }
                Step::Pool(pool) => Tensor {
                    v: pool.sum(&t.v)?,
                    frac: t.frac + POOL_SCALE_BITS,
                },
                Step::Act(act) => Tensor {
                    v: t.v
                        .iter()
                        .map(|&z| activation_value(act, z, t.frac, scales))
                        .collect::<Result<_>>()?,
                    frac: scales.fa,
                },
            };
            inputs.push(std::mem::replace(&mut t, next));
        }
        Ok((inputs, t))
    }

    /// The real logits of each sample of `x` (`B × input length`, at `2^fa`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input length; range and overflow errors.
    pub fn logits(&self, scales: &Scales, x: ArrayView2<'_, i128>) -> Result<Array2<f64>> {
        let mut out = Array2::zeros((x.nrows(), self.network.classes()));
        let rows = (0..x.nrows())
            .into_par_iter()
            .map(|r| {
                self.forward_sample(scales, &x.row(r).to_vec())
                    .map(|(_, z)| z)
            })
            .collect::<Result<Vec<_>>>()?;
        for (z, mut o) in rows.iter().zip(out.rows_mut()) {
            for (o, &v) in o.iter_mut().zip(&z.v) {
                *o = decode_at(v, z.frac);
            }
        }
        Ok(out)
    }

    /// Mean cross-entropy `−(1/B) Σ log softmax(z)[label]` over `x` (`B × input length`).
    ///
    /// # Errors
    /// As [`ConvNet::logits`]; [`Error::ShapeMismatch`] for `labels.len() ≠ B`;
    /// [`Error::InvalidLabel`].
    pub fn loss(&self, scales: &Scales, x: ArrayView2<'_, i128>, labels: &[usize]) -> Result<f64> {
        self.check_labels(x.nrows(), labels)?;
        let mut z = self.logits(scales, x)?;
        let mut total = 0.0;
        for (mut row, &t) in z.rows_mut().into_iter().zip(labels) {
            softmax_in_place(row.view_mut());
            total -= row[t].max(f64::MIN_POSITIVE).ln();
        }
        Ok(total / labels.len().max(1) as f64)
    }

    fn check_labels(&self, rows: usize, labels: &[usize]) -> Result<()> {
        crate::conv::check_len("labels", rows, labels.len())?;
        let classes = self.network.classes();
        match labels.iter().find(|&&l| l >= classes) {
            Some(&label) => Err(Error::InvalidLabel { label, classes }),
            None => Ok(()),
        }
    }

    /// The gradients of a mini-batch `x` (`B × input length`, at `2^fa`) with `labels`,
    /// summed over the batch and rounded once to the "as sent" scales (`Δw` at
    /// `2^(fw−fe)`, `Δb` at `2^(fa+fw−fe)`), one per weight layer, input first.
    ///
    /// # Errors
    /// As [`ConvNet::loss`]; range and overflow errors.
    pub fn gradients(
        &self,
        scales: &Scales,
        x: ArrayView2<'_, i128>,
        labels: &[usize],
    ) -> Result<Vec<LayerGradients>> {
        self.check_labels(x.nrows(), labels)?;
        // The samples run in parallel, each summing into its thread's buffers; the sums
        // are exact integers, so their order does not change the result.
        let zero = || Sums {
            dw: self.params.iter().map(|p| vec![0; p.w.len()]).collect(),
            db: self.params.iter().map(|p| vec![0; p.b.len()]).collect(),
            dw_bound: vec![1; self.params.len()],
            fracs: vec![(0, 0); self.params.len()],
        };
        let sums = (0..x.nrows())
            .into_par_iter()
            .try_fold(zero, |mut sums, r| {
                self.sample_gradients(scales, &x.row(r).to_vec(), labels[r], &mut sums)?;
                Ok(sums)
            })
            .try_reduce(zero, Sums::add)?;
        self.params
            .iter()
            .zip(sums.dw.into_iter().zip(sums.db))
            .zip(&sums.fracs)
            .map(|((p, raw), &f)| round_gradients(scales, p.w.dim(), raw, f))
            .collect()
    }

    /// Adds one sample's unrounded kernel and bias gradients to `sums`.
    fn sample_gradients(
        &self,
        scales: &Scales,
        x: &[i128],
        label: usize,
        sums: &mut Sums,
    ) -> Result<()> {
        let (inputs, z) = self.forward_sample(scales, x)?;
        let mut y = Array1::from_iter(z.v.iter().map(|&v| decode_at(v, z.frac)));
        softmax_in_place(y.view_mut());
        let mut g = Tensor {
            v: y.iter()
                .map(|&p| scales.encode(ValueKind::Error, p))
                .collect::<Result<_>>()?,
            frac: scales.fd,
        };
        g.v[label] -= shl_checked(1, scales.fd)?;
        for (i, (step, input)) in self.steps.iter().zip(&inputs).enumerate().rev() {
            g = match *step {
                Step::Linear(geom, p) => {
                    accumulate_kernel_gradients(
                        &geom,
                        &g.v,
                        &input.v,
                        &mut sums.dw[p],
                        &mut sums.db[p],
                        &mut sums.dw_bound[p],
                    )?;
                    // The fractional bits of the layer's raw sums (the same for every
                    // sample).
                    sums.fracs[p] = (g.frac + input.frac, g.frac);
                    if i == 0 {
                        break;
                    }
                    let q = conv2d_transpose_bounded(&geom, Bounded::of(&g.v), self.kernel(p)?)?;
                    Tensor::checked(scales, ValueKind::Product, q, g.frac + scales.fw)?
                }
                Step::Pool(pool) => Tensor {
                    v: pool.backward(&g.v)?,
                    frac: g.frac + POOL_SCALE_BITS,
                },
                Step::Act(act) => Tensor {
                    v: g.v
                        .iter()
                        .zip(&input.v)
                        .map(|(&gv, &zv)| error_value(act, (gv, g.frac), (zv, input.frac), scales))
                        .collect::<Result<_>>()?,
                    frac: scales.fd,
                },
            };
        }
        Ok(())
    }

    /// `w ← w − η·Δw`, `b ← b − η·Δb` on every weight layer (`η` at `2^fe`), all or
    /// nothing, through [`scaled_step`] and [`subtract`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for gradients of another shape; [`Error::OutOfRange`] if
    /// `η` or an updated parameter leaves its range.
    pub fn apply_update(
        &mut self,
        scales: &Scales,
        eta: i128,
        grads: &[LayerGradients],
    ) -> Result<()> {
        crate::conv::check_len("conv net gradients", self.params.len(), grads.len())?;
        let mut new = Vec::with_capacity(self.params.len());
        for (l, g) in self.params.iter().zip(grads) {
            let (dw, db) = scaled_step(scales, eta, g)?;
            new.push(subtract(scales, l, &dw, &db)?);
        }
        self.kernel_bits = Self::bits_of(&new);
        self.params = new;
        Ok(())
    }

    /// One SGD step on a mini-batch: [`ConvNet::gradients`] then
    /// [`ConvNet::apply_update`]. All or nothing.
    ///
    /// # Errors
    /// As those two.
    pub fn train_step(
        &mut self,
        scales: &Scales,
        eta: i128,
        x: ArrayView2<'_, i128>,
        labels: &[usize],
    ) -> Result<()> {
        let grads = self.gradients(scales, x, labels)?;
        self.apply_update(scales, eta, &grads)
    }
}

/// The gradients of one weight layer from its raw batch sums: `raw = (ΣΣ g·a, ΣΣ g)`
/// at `2^w_frac` and `2^b_frac`, each rounded once to the "as sent" scales (`Δw` at
/// `2^(fw−fe)`, `Δb` at `2^(fa+fw−fe)`) and range-checked; `dim` is the kernel matrix's
/// `f × c·k·k`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `raw` does not have `dim`'s sizes; range and overflow
/// errors.
pub fn round_gradients(
    scales: &Scales,
    dim: (usize, usize),
    (w, b): (Vec<i128>, Vec<i128>),
    (w_frac, b_frac): (u32, u32),
) -> Result<LayerGradients> {
    let (wf, bf) = (
        scales.frac_bits(ValueKind::WeightGradient),
        scales.frac_bits(ValueKind::BiasGradient),
    );
    let w = w
        .into_iter()
        .map(|v| scales.check(ValueKind::WeightGradient, to_frac(v, w_frac, wf)?))
        .collect::<Result<Vec<_>>>()?;
    let b = b
        .into_iter()
        .map(|v| scales.check(ValueKind::BiasGradient, to_frac(v, b_frac, bf)?))
        .collect::<Result<Vec<_>>>()?;
    crate::conv::check_len("conv net bias gradient", dim.0, b.len())?;
    let w = Array2::from_shape_vec(dim, w).map_err(|e| Error::ShapeMismatch {
        what: "conv net gradient",
        expected: format!("{dim:?}"),
        found: e.to_string(),
    })?;
    Ok(LayerGradients {
        w,
        b: Array1::from(b),
    })
}

/// The gradients of weight layer `layer` over a mini-batch, as [`ConvNet::gradients`]
/// computes them: `delta` (`B × n_i`) the errors of its (pooled) outputs at `2^fd`,
/// `a_prev` (`B × n_{i−1}`) its inputs at `2^fa`. Each sample's errors are copied
/// through the pooling (`2^(fd+2)`), the kernel gradients summed over the batch
/// ([`kernel_gradients`]) and rounded once ([`round_gradients`]). The client's side of
/// paper Alg. 2 for a conv layer.
///
/// # Errors
/// [`Error::ShapeMismatch`] for batches of the wrong shapes; range and overflow errors.
pub fn layer_gradients_of(
    layer: &LinearLayer,
    delta: ArrayView2<'_, i128>,
    a_prev: ArrayView2<'_, i128>,
    scales: &Scales,
) -> Result<LayerGradients> {
    crate::conv::check_len("gradient batch", delta.nrows(), a_prev.nrows())?;
    let g = layer.geometry();
    let mut dw = vec![0i128; g.kernel_len()];
    let mut db = vec![0i128; g.filters()];
    for (d, a) in delta.rows().into_iter().zip(a_prev.rows()) {
        let d = d.to_vec();
        let d = match layer.pool() {
            Some(p) => p.backward(&d)?,
            None => d,
        };
        kernel_gradients(g, &d, &a.to_vec(), &mut dw, &mut db)?;
    }
    let frac = scales.fd + layer.pool_bits();
    round_gradients(
        scales,
        (layer.filters(), layer.columns()),
        (dw, db),
        (frac + scales.fa, frac),
    )
}
