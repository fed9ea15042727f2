//! The plaintext network math shared by both parties and the reference trainer, in exact
//! fixed-point integers (`i128` with checked arithmetic; see [`crate::fixed`] for scales).
//!
//! Shapes: a mini-batch is an `Array2` of shape `B × n` (one row per sample); `W_i` is
//! `m × n` (`m` = width, `n` = fan-in), `b_i` has length `m`.
//!
//! ```text
//! forward    z_i = a_{i−1}·W_iᵀ + b_i                       2^fa · 2^fw = 2^(fa+fw), exact
//! hidden     a_i = round(f(z_i / 2^(fa+fw)) · 2^fa)           f64, then one rounding
//! output     y = softmax(z_L / 2^(fa+fw)),  δ_L = round(y·2^fd) − t·2^fd
//! backward   q = δ_{i+1}·W_{i+1}                              2^(fd+fw), exact
//!            δ_i = round_shift(q ⊙ round(f'(z_i)·2^fa), fw + fa)          → 2^fd
//! gradients  Δw_i = round_shift(Σ_batch δ_iᵀ a_{i−1}, fd + fa − (fw − fe))  → 2^(fw−fe)
//!            Δb_i = Σ_batch δ_i · 2^(fa + fw − fe − fd)                      → 2^(fa+fw−fe)
//! SGD        w ← w − η·Δw  (2^fe · 2^(fw−fe) = 2^fw),  b ← b − η·Δb         exact
//! ```
//!
//! The only non-integer steps are the activation, its derivative and the softmax, computed
//! in `f64` from the decoded pre-activation and rounded once; both parties and the
//! reference run the same code on the same machine, so results are bit-identical.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::conv_net::ConvNet;
use crate::fixed::{round_shift, shl_checked, Scales, ValueKind};
use crate::spec::{Activation, ModelSpec};
use crate::{Error, Result};

/// Parameters of one layer: `W` (`m × n`, at `2^fw`) and `b` (`m`, at `2^(fa+fw)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerParams {
    /// Weights, `m × n`, at `2^fw`.
    pub w: Array2<i128>,
    /// Biases, length `m`, at `2^(fa+fw)`.
    pub b: Array1<i128>,
}

/// A network's true parameters in fixed point; `layers[i − 1]` is layer `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedModel {
    /// The architecture.
    pub spec: ModelSpec,
    /// One entry per weight layer.
    pub layers: Vec<LayerParams>,
}

/// Gradients of one layer, summed over a mini-batch (or a session), at the "as sent"
/// scales: `w` at `2^(fw−fe)`, `b` at `2^(fa+fw−fe)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerGradients {
    /// `Δw`, `m × n`.
    pub w: Array2<i128>,
    /// `Δb`, length `m`.
    pub b: Array1<i128>,
}

/// Gradients of every layer; `layers[i − 1]` is layer `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gradients {
    /// One entry per weight layer.
    pub layers: Vec<LayerGradients>,
}

/// Everything a forward pass computes: `a[0] = x, …, a[L−1]` (activations feeding each
/// layer, at `2^fa`) and `z[0] = z_1, …, z[L−1] = z_L` (pre-activations, at `2^(fa+fw)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Inputs of layers `1..=L`, each `B × n_{i−1}`.
    pub a: Vec<Array2<i128>>,
    /// Pre-activations of layers `1..=L`, each `B × n_i`.
    pub z: Vec<Array2<i128>>,
}

fn add(a: i128, b: i128, op: &'static str) -> Result<i128> {
    a.checked_add(b).ok_or_else(Error::overflow(op))
}

fn mul(a: i128, b: i128, op: &'static str) -> Result<i128> {
    a.checked_mul(b).ok_or_else(Error::overflow(op))
}

fn shape_err(what: &'static str, expected: String, found: String) -> Error {
    Error::ShapeMismatch {
        what,
        expected,
        found,
    }
}

impl FixedModel {
    /// The model served with coarser weights: every weight rounded from `2^scales.fw` to
    /// `2^fw` and every bias from `2^(fa + scales.fw)` to `2^(fa + fw)` (nearest, ties
    /// away from zero), with the scales that go with it (`fw`, and `fe` lowered to `fw`
    /// if above it; the other fields unchanged). For inference only: the server's
    /// multi-exponentiations cost in proportion to the weights' bits (docs/DESIGN.md
    /// "Inference with coarser weights"), and the rounded model is a different model
    /// whose accuracy is its own ([`FixedModel::accuracy`] with the returned scales).
    /// `fw = scales.fw` returns the model unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidScales`] for `fw = 0` or `fw > scales.fw` (finer weights cannot be
    /// recovered) or if the new scales do not validate; [`Error::Overflow`] as
    /// [`round_shift`].
    ///
    /// ```
    /// use gelunet_protocol::{Activation, FixedModel, ModelSpec, Scales};
    /// let scales = Scales::default();
    /// let spec = ModelSpec::new(vec![4, 3, 2], Activation::Sigmoid);
    /// let model = FixedModel::init(&spec, &scales, 1)?;
    /// let (coarse, s12) = model.with_weight_frac_bits(&scales, 12)?;
    /// assert_eq!(s12.fw, 12);
    /// assert_eq!(coarse.layers[0].w[[0, 0]], (model.layers[0].w[[0, 0]] as f64 / 2f64.powi(20)).round() as i128);
    /// // Finer weights than the model's are refused.
    /// assert!(model.with_weight_frac_bits(&scales, 40).is_err());
    /// # Ok::<(), gelunet_protocol::Error>(())
    /// ```
    pub fn with_weight_frac_bits(&self, scales: &Scales, fw: u32) -> Result<(Self, Scales)> {
        if fw == 0 || fw > scales.fw {
            return Err(Error::InvalidScales {
                reason: format!(
                    "weights can be served at 1 to {} fractional bits, not {fw}",
                    scales.fw
                ),
            });
        }
        let coarse = Scales {
            fw,
            fe: scales.fe.min(fw),
            ..*scales
        };
        coarse.validate()?;
        let shift = scales.fw - fw;
        let mut layers = self.layers.clone();
        for l in &mut layers {
            for v in l.w.iter_mut().chain(l.b.iter_mut()) {
                *v = round_shift(*v, shift)?;
            }
        }
        Ok((
            Self {
                spec: self.spec.clone(),
                layers,
            },
            coarse,
        ))
    }

    /// Xavier-uniform initialization (Glorot & Bengio 2010): `w ~ U(−l, l)` with
    /// `l = √(6 / (n + m))`, drawn in order (layer, row, column) from
    /// `ChaCha20Rng::seed_from_u64(seed)` and quantized at `2^fw`; biases 0.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for an invalid spec; [`Error::OutOfRange`] if `l` exceeds the
    /// weight range.
    ///
    /// A spec with conv layers is initialized as [`ConvNet::init`] of its architecture
    /// (fan-in `c·k·k`, fan-out `f·k·k` for a convolution; the same draws otherwise).
    pub fn init(spec: &ModelSpec, scales: &Scales, seed: u64) -> Result<Self> {
        spec.validate()?;
        if let Some((arch, input)) = spec.arch() {
            let net = ConvNet::init(&arch, input, scales, seed)?;
            return Ok(Self {
                spec: spec.clone(),
                layers: net.into_params(),
            });
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(spec.num_layers());
        for i in 1..=spec.num_layers() {
            let (m, n) = spec.layer_shape(i);
            let l = (6.0 / (m + n) as f64).sqrt();
            let mut w = Array2::zeros((m, n));
            for v in w.iter_mut() {
                *v = scales.encode(ValueKind::Weight, rng.gen_range(-l..l))?;
            }
            layers.push(LayerParams {
                w,
                b: Array1::zeros(m),
            });
        }
        Ok(Self {
            spec: spec.clone(),
            layers,
        })
    }

    /// Checks that the parameters have the shapes of the spec and are within range.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::OutOfRange`].
    pub fn validate(&self, scales: &Scales) -> Result<()> {
        self.spec.validate()?;
        if self.layers.len() != self.spec.num_layers() {
            return Err(shape_err(
                "model layers",
                self.spec.num_layers().to_string(),
                self.layers.len().to_string(),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (m, n) = self.spec.param_shape(i + 1);
            if l.w.dim() != (m, n) || l.b.len() != m {
                return Err(shape_err(
                    "layer parameters",
                    format!("{m}×{n} and {m}"),
                    format!("{:?} and {}", l.w.dim(), l.b.len()),
                ));
            }
            for &v in &l.w {
                scales.check(ValueKind::Weight, v)?;
            }
            for &v in &l.b {
                scales.check(ValueKind::Bias, v)?;
            }
        }
        Ok(())
    }

    /// The forward pass over a mini-batch `x` (`B × n_0`, at `2^fa`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a wrong input width; range and overflow errors.
    ///
    /// [`Error::InvalidConfig`] for a spec with conv layers, whose passes are
    /// [`FixedModel::gradients`] and [`FixedModel::predict`] (through [`ConvNet`]).
    pub fn forward(&self, scales: &Scales, x: ArrayView2<'_, i128>) -> Result<Trace> {
        self.dense_only()?;
        let l_count = self.layers.len();
        let mut a = vec![x.to_owned()];
        let mut z = Vec::with_capacity(l_count);
        for (i, layer) in self.layers.iter().enumerate() {
            let zi = linear(layer.w.view(), layer.b.view(), a[i].view(), scales)?;
            if i + 1 < l_count {
                let act = self.spec.activation(i + 1).unwrap_or(Activation::Identity);
                a.push(activate(act, zi.view(), scales)?);
            }
            z.push(zi);
        }
        Ok(Trace { a, z })
    }

    /// Predicted classes (argmax of `z_L`, first maximum on ties) for `x` (`B × n_0`).
    ///
    /// # Errors
    /// As [`FixedModel::forward`].
    pub fn predict(&self, scales: &Scales, x: ArrayView2<'_, i128>) -> Result<Vec<usize>> {
        if !self.spec.is_dense() {
            return self.conv_net(scales)?.predict(scales, x);
        }
        let trace = self.forward(scales, x)?;
        let z = trace.z.last().ok_or_else(|| Error::InvalidSpec {
            reason: "no layers".into(),
        })?;
        Ok(z.rows().into_iter().map(argmax).collect())
    }

    /// Accuracy of [`FixedModel::predict`] against `labels`.
    ///
    /// # Errors
    /// As [`FixedModel::forward`]; [`Error::ShapeMismatch`] if `labels.len() ≠ B`.
    pub fn accuracy(
        &self,
        scales: &Scales,
        x: ArrayView2<'_, i128>,
        labels: &[usize],
    ) -> Result<f64> {
        let p = self.predict(scales, x)?;
        if p.len() != labels.len() {
            return Err(shape_err(
                "labels",
                p.len().to_string(),
                labels.len().to_string(),
            ));
        }
        if p.is_empty() {
            return Ok(0.0);
        }
        let ok = p.iter().zip(labels).filter(|(a, b)| a == b).count();
        Ok(ok as f64 / p.len() as f64)
    }

    /// Backpropagation through a trace of this model (paper Eq. 1, Alg. 2 in plaintext).
    ///
    /// # Errors
    /// Label, shape, range and overflow errors.
    ///
    /// [`Error::InvalidConfig`] for a spec with conv layers ([`FixedModel::gradients`]).
    pub fn backward(&self, scales: &Scales, trace: &Trace, labels: &[usize]) -> Result<Gradients> {
        self.dense_only()?;
        let l_count = self.layers.len();
        let mut grads = Vec::with_capacity(l_count);
        let z_last = trace.z.last().ok_or_else(|| Error::InvalidSpec {
            reason: "no layers".into(),
        })?;
        let mut delta = output_error(z_last.view(), labels, scales)?;
        for i in (0..l_count).rev() {
            grads.push(layer_gradients(delta.view(), trace.a[i].view(), scales)?);
            if i > 0 {
                let q = backward_product(delta.view(), self.layers[i].w.view(), scales)?;
                let act = self.spec.activation(i).unwrap_or(Activation::Identity);
                delta = hidden_error(q.view(), trace.z[i - 1].view(), act, scales)?;
            }
        }
        grads.reverse();
        Ok(Gradients { layers: grads })
    }

    /// The gradients of a mini-batch `x` (`B × n_0`, at `2^fa`) with `labels`, summed over
    /// the batch at the "as sent" scales: [`FixedModel::forward`] then
    /// [`FixedModel::backward`] for a dense spec, [`ConvNet::gradients`] for a spec with
    /// conv layers (bit for bit the same on dense layers).
    ///
    /// # Errors
    /// Label, shape, range and overflow errors.
    pub fn gradients(
        &self,
        scales: &Scales,
        x: ArrayView2<'_, i128>,
        labels: &[usize],
    ) -> Result<Gradients> {
        if self.spec.is_dense() {
            let trace = self.forward(scales, x)?;
            return self.backward(scales, &trace, labels);
        }
        Ok(Gradients {
            layers: self.conv_net(scales)?.gradients(scales, x, labels)?,
        })
    }

    /// The real logits `z_L` of each sample of `x` (`B × n_0`, at `2^fa`), decoded from
    /// their fixed-point scale (`B × classes`).
    ///
    /// # Errors
    /// As [`FixedModel::predict`].
    pub fn logits(&self, scales: &Scales, x: ArrayView2<'_, i128>) -> Result<Array2<f64>> {
        if !self.spec.is_dense() {
            return self.conv_net(scales)?.logits(scales, x);
        }
        let trace = self.forward(scales, x)?;
        let z = trace.z.last().ok_or_else(|| Error::InvalidSpec {
            reason: "no layers".into(),
        })?;
        Ok(z.mapv(|q| scales.decode(ValueKind::PreActivation, q)))
    }

    /// The [`ConvNet`] of a spec with conv layers and these parameters.
    fn conv_net(&self, scales: &Scales) -> Result<ConvNet> {
        ConvNet::from_spec(&self.spec, scales, self.layers.clone())
    }

    fn dense_only(&self) -> Result<()> {
        if self.spec.is_dense() {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                reason: "the dense forward and backward passes do not run conv layers".into(),
            })
        }
    }

    /// Applies `w ← w − η·Δw`, `b ← b − η·Δb` to every layer, all or nothing.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `η` or an updated parameter leaves its range;
    /// [`Error::ShapeMismatch`] for gradients of another shape.
    pub fn apply_update(&mut self, scales: &Scales, eta: i128, grads: &Gradients) -> Result<()> {
        if grads.layers.len() != self.layers.len() {
            return Err(shape_err(
                "gradient layers",
                self.layers.len().to_string(),
                grads.layers.len().to_string(),
            ));
        }
        let mut new = Vec::with_capacity(self.layers.len());
        for (l, g) in self.layers.iter().zip(&grads.layers) {
            let (dw, db) = scaled_step(scales, eta, g)?;
            new.push(subtract(scales, l, &dw, &db)?);
        }
        self.layers = new;
        Ok(())
    }
}

/// `(η·Δw, η·Δb)` at the weight and bias scales (`2^fw`, `2^(fa+fw)`), exact.
///
/// # Errors
/// [`Error::OutOfRange`] for `η` or a gradient out of range; [`Error::Overflow`].
pub fn scaled_step(
    scales: &Scales,
    eta: i128,
    g: &LayerGradients,
) -> Result<(Array2<i128>, Array1<i128>)> {
    scales.check_learning_rate(eta)?;
    let mut dw = Array2::zeros(g.w.dim());
    for (o, &v) in dw.iter_mut().zip(&g.w) {
        *o = mul(eta, scales.check(ValueKind::WeightGradient, v)?, "eta * dw")?;
    }
    let mut db = Array1::zeros(g.b.len());
    for (o, &v) in db.iter_mut().zip(&g.b) {
        *o = mul(eta, scales.check(ValueKind::BiasGradient, v)?, "eta * db")?;
    }
    Ok((dw, db))
}

/// `(w − dw, b − db)` with the result range-checked.
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for a parameter leaving its range.
pub fn subtract(
    scales: &Scales,
    l: &LayerParams,
    dw: &Array2<i128>,
    db: &Array1<i128>,
) -> Result<LayerParams> {
    if dw.dim() != l.w.dim() || db.len() != l.b.len() {
        return Err(shape_err(
            "update",
            format!("{:?}", l.w.dim()),
            format!("{:?}", dw.dim()),
        ));
    }
    let mut w = l.w.clone();
    for (o, &d) in w.iter_mut().zip(dw) {
        *o = scales.check(
            ValueKind::Weight,
            o.checked_sub(d).ok_or_else(Error::overflow("w - dw"))?,
        )?;
    }
    let mut b = l.b.clone();
    for (o, &d) in b.iter_mut().zip(db) {
        *o = scales.check(
            ValueKind::Bias,
            o.checked_sub(d).ok_or_else(Error::overflow("b - db"))?,
        )?;
    }
    Ok(LayerParams { w, b })
}

impl Gradients {
    /// All-zero gradients shaped like `spec`.
    pub fn zeros(spec: &ModelSpec) -> Self {
        Self {
            layers: (1..=spec.num_layers())
                .map(|i| {
                    let (m, n) = spec.param_shape(i);
                    LayerGradients {
                        w: Array2::zeros((m, n)),
                        b: Array1::zeros(m),
                    }
                })
                .collect(),
        }
    }

    /// `self + other`, range-checked as gradients (the session accumulators `ΔW^c`,
    /// `Δb^c` of Alg. 2 line 8 obey the same range as one gradient).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for a sum out of range.
    pub fn checked_add(&self, scales: &Scales, other: &Self) -> Result<Self> {
        if self.layers.len() != other.layers.len() {
            return Err(shape_err(
                "gradient layers",
                self.layers.len().to_string(),
                other.layers.len().to_string(),
            ));
        }
        let mut out = self.clone();
        for (o, g) in out.layers.iter_mut().zip(&other.layers) {
            if o.w.dim() != g.w.dim() || o.b.len() != g.b.len() {
                return Err(shape_err(
                    "gradients",
                    format!("{:?}", o.w.dim()),
                    format!("{:?}", g.w.dim()),
                ));
            }
            for (a, &b) in o.w.iter_mut().zip(&g.w) {
                *a = scales.check(ValueKind::WeightGradient, add(*a, b, "sum of dw")?)?;
            }
            for (a, &b) in o.b.iter_mut().zip(&g.b) {
                *a = scales.check(ValueKind::BiasGradient, add(*a, b, "sum of db")?)?;
            }
        }
        Ok(out)
    }
}

/// `z = a·Wᵀ + b` for a batch `a` (`B × n`), `W` (`m × n`), `b` (`m`): `B × m` at
/// `2^(fa+fw)` (paper Alg. 1 line 5 without masks).
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for a pre-activation out of range;
/// [`Error::Overflow`].
pub fn linear(
    w: ArrayView2<'_, i128>,
    b: ArrayView1<'_, i128>,
    a: ArrayView2<'_, i128>,
    scales: &Scales,
) -> Result<Array2<i128>> {
    let (m, n) = w.dim();
    if a.ncols() != n || b.len() != m {
        return Err(shape_err(
            "linear layer",
            format!("B×{n} inputs, {m} biases"),
            format!("{:?} inputs, {} biases", a.dim(), b.len()),
        ));
    }
    let mut z = Array2::zeros((a.nrows(), m));
    for (s, row) in a.rows().into_iter().enumerate() {
        for j in 0..m {
            let mut acc = b[j];
            for k in 0..n {
                acc = add(acc, mul(w[[j, k]], row[k], "w * a")?, "sum of w * a")?;
            }
            z[[s, j]] = scales.check(ValueKind::PreActivation, acc)?;
        }
    }
    Ok(z)
}

/// `a = round(f(z / 2^(fa+fw)) · 2^fa)` elementwise (paper Alg. 1 line 10).
///
/// # Errors
/// [`Error::OutOfRange`] / [`Error::NotFinite`] if an activation leaves its range.
pub fn activate(act: Activation, z: ArrayView2<'_, i128>, scales: &Scales) -> Result<Array2<i128>> {
    activate_at(act, z, scales.frac_bits(ValueKind::PreActivation), scales)
}

/// `a = round(f(z / 2^frac) · 2^fa)` elementwise for pre-activations at `2^frac` (a
/// pooled conv layer's are at `2^(fa+fw+2)`, [`crate::linear_layer`]); [`activate`] at
/// `frac = fa + fw`.
///
/// # Errors
/// [`Error::OutOfRange`] / [`Error::NotFinite`] if an activation leaves its range.
pub fn activate_at(
    act: Activation,
    z: ArrayView2<'_, i128>,
    frac: u32,
    scales: &Scales,
) -> Result<Array2<i128>> {
    let mut a = Array2::zeros(z.dim());
    for (o, &v) in a.iter_mut().zip(z.iter()) {
        *o = activation_value(act, v, frac, scales)?;
    }
    Ok(a)
}

/// One activation `round(f(z / 2^frac) · 2^fa)`, the expression of the dense math and
/// of [`crate::conv_net::ConvNet`].
pub(crate) fn activation_value(
    act: Activation,
    z: i128,
    frac: u32,
    scales: &Scales,
) -> Result<i128> {
    scales.encode(ValueKind::Activation, act.apply(decode_at(z, frac)))
}

/// One error `round_shift(q · round(f'(z / 2^z_frac)·2^fa), q_frac + fa − fd)` at
/// `2^fd`, for `q` at `2^q_frac`: the expression of [`hidden_error_at`] and of
/// [`crate::conv_net::ConvNet`]'s backward pass.
pub(crate) fn error_value(
    act: Activation,
    (q, q_frac): (i128, u32),
    (z, z_frac): (i128, u32),
    scales: &Scales,
) -> Result<i128> {
    let fp = scales.encode(ValueKind::Derivative, act.derivative(decode_at(z, z_frac)))?;
    let prod = mul(q, fp, "q * f'")?;
    let shift = (q_frac + scales.fa)
        .checked_sub(scales.fd)
        .ok_or_else(Error::overflow("error scale"))?;
    scales.check(ValueKind::Error, round_shift(prod, shift)?)
}

/// `v / 2^frac` as the nearest `f64` (the expression of [`Scales::decode`]).
pub(crate) fn decode_at(v: i128, frac: u32) -> f64 {
    (v as f64) / 2f64.powi(frac as i32)
}

/// The softmax of one row of real logits, in place:
/// `x_j ← e^(x_j − m) / Σ_k e^(x_k − m)` with `m = max_k x_k` (no overflow), the sum taken
/// left to right. The one real-valued softmax of the workspace: [`softmax`] (fixed point)
/// decodes, calls it and encodes, and the `f64` baselines (`gelunet-baselines`) call it
/// directly. Non-finite logits give non-finite (NaN) outputs; an empty row is left empty.
pub fn softmax_in_place(mut x: ArrayViewMut1<'_, f64>) {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    x.mapv_inplace(|v| (v - max).exp());
    let sum: f64 = x.iter().sum();
    x.mapv_inplace(|e| e / sum);
}

/// The softmax outputs `y = softmax(z / 2^(fa+fw))` at `2^fd` (rows of `z`, `B × classes`),
/// through [`softmax_in_place`].
///
/// # Errors
/// [`Error::OutOfRange`] (cannot happen for `fd` within the limits).
pub fn softmax(z: ArrayView2<'_, i128>, scales: &Scales) -> Result<Array2<i128>> {
    let mut p = z.mapv(|v| scales.decode(ValueKind::PreActivation, v));
    let mut y = Array2::zeros(z.dim());
    for (mut row, mut out) in p.rows_mut().into_iter().zip(y.rows_mut()) {
        softmax_in_place(row.view_mut());
        for (o, &pj) in out.iter_mut().zip(row.iter()) {
            *o = scales.encode(ValueKind::Error, pj)?;
        }
    }
    Ok(y)
}

/// `δ_L = y − t` at `2^fd` for softmax with cross-entropy (paper Alg. 2 line 2), with `t`
/// the one-hot labels.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `labels.len() ≠ B`; [`Error::InvalidLabel`].
pub fn output_error(
    z: ArrayView2<'_, i128>,
    labels: &[usize],
    scales: &Scales,
) -> Result<Array2<i128>> {
    if labels.len() != z.nrows() {
        return Err(shape_err(
            "labels",
            z.nrows().to_string(),
            labels.len().to_string(),
        ));
    }
    let classes = z.ncols();
    if let Some(&label) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::InvalidLabel { label, classes });
    }
    let mut d = softmax(z, scales)?;
    let one = shl_checked(1, scales.fd)?;
    for (s, &t) in labels.iter().enumerate() {
        d[[s, t]] -= one;
    }
    Ok(d)
}

/// `q = δ·W` (`B × m` times `m × n`) at `2^(fd+fw)` (paper Alg. 2 line 6 without masks).
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for a product out of range.
pub fn backward_product(
    delta: ArrayView2<'_, i128>,
    w: ArrayView2<'_, i128>,
    scales: &Scales,
) -> Result<Array2<i128>> {
    let (m, n) = w.dim();
    if delta.ncols() != m {
        return Err(shape_err(
            "backward product",
            format!("B×{m}"),
            format!("{:?}", delta.dim()),
        ));
    }
    let mut q = Array2::zeros((delta.nrows(), n));
    for (s, row) in delta.rows().into_iter().enumerate() {
        for k in 0..n {
            let mut acc = 0i128;
            for j in 0..m {
                acc = add(
                    acc,
                    mul(row[j], w[[j, k]], "delta * w")?,
                    "sum of delta * w",
                )?;
            }
            q[[s, k]] = scales.check(ValueKind::Product, acc)?;
        }
    }
    Ok(q)
}

/// `δ_i = round_shift(q ⊙ round(f'(z_i)·2^fa), fw + fa)` at `2^fd` (paper Alg. 2 line 7).
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for an error out of range.
pub fn hidden_error(
    q: ArrayView2<'_, i128>,
    z: ArrayView2<'_, i128>,
    act: Activation,
    scales: &Scales,
) -> Result<Array2<i128>> {
    hidden_error_at(
        (q, scales.frac_bits(ValueKind::Product)),
        (z, scales.frac_bits(ValueKind::PreActivation)),
        act,
        scales,
    )
}

/// `δ = round_shift(q ⊙ round(f'(z / 2^z_frac)·2^fa), q_frac + fa − fd)` at `2^fd` for
/// products `q` at `2^q_frac` and pre-activations `z` at `2^z_frac` (conv layers,
/// [`crate::linear_layer`]); [`hidden_error`] at the dense scales.
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::OutOfRange`] for an error out of range.
pub fn hidden_error_at(
    (q, q_frac): (ArrayView2<'_, i128>, u32),
    (z, z_frac): (ArrayView2<'_, i128>, u32),
    act: Activation,
    scales: &Scales,
) -> Result<Array2<i128>> {
    if q.dim() != z.dim() {
        return Err(shape_err(
            "hidden error",
            format!("{:?}", z.dim()),
            format!("{:?}", q.dim()),
        ));
    }
    let mut d = Array2::zeros(q.dim());
    for ((o, &qv), &zv) in d.iter_mut().zip(q.iter()).zip(z.iter()) {
        *o = error_value(act, (qv, q_frac), (zv, z_frac), scales)?;
    }
    Ok(d)
}

/// `Δw = Σ_batch δᵀ·a_{i−1}` and `Δb = Σ_batch δ`, rescaled to the "as sent" scales
/// `2^(fw−fe)` and `2^(fa+fw−fe)` (paper Eq. 1; one rounding, after the batch sum).
///
/// # Errors
/// [`Error::ShapeMismatch`] if the batch sizes differ; range and overflow errors.
pub fn layer_gradients(
    delta: ArrayView2<'_, i128>,
    a_prev: ArrayView2<'_, i128>,
    scales: &Scales,
) -> Result<LayerGradients> {
    if delta.nrows() != a_prev.nrows() {
        return Err(shape_err(
            "gradient batch",
            delta.nrows().to_string(),
            a_prev.nrows().to_string(),
        ));
    }
    let (m, n) = (delta.ncols(), a_prev.ncols());
    let mut w = Array2::zeros((m, n));
    for j in 0..m {
        for k in 0..n {
            let mut acc = 0i128;
            for s in 0..delta.nrows() {
                acc = add(
                    acc,
                    mul(delta[[s, j]], a_prev[[s, k]], "delta * a")?,
                    "sum of delta * a",
                )?;
            }
            // δ·a is at 2^(fd+fa).
            let from_bits = scales.fd + scales.fa;
            let to_bits = scales.frac_bits(ValueKind::WeightGradient);
            let v = if to_bits >= from_bits {
                shl_checked(acc, to_bits - from_bits)?
            } else {
                round_shift(acc, from_bits - to_bits)?
            };
            w[[j, k]] = scales.check(ValueKind::WeightGradient, v)?;
        }
    }
    let mut b = Array1::zeros(m);
    for (j, col) in delta.axis_iter(Axis(1)).enumerate() {
        let mut acc = 0i128;
        for &v in col {
            acc = add(acc, v, "sum of delta")?;
        }
        b[j] = scales.rescale(acc, ValueKind::Error, ValueKind::BiasGradient)?;
    }
    Ok(LayerGradients { w, b })
}

/// Index of the first maximum of `row` (an `ArrayView1`, a slice, any iterator of
/// ordered values; 0 for an empty row).
pub fn argmax<T: PartialOrd>(row: impl IntoIterator<Item = T>) -> usize {
    let mut best: Option<(usize, T)> = None;
    for (i, v) in row.into_iter().enumerate() {
        if best.as_ref().is_none_or(|(_, b)| v > *b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};

    #[test]
    fn real_softmax_is_a_distribution_without_overflow() {
        let mut p = Array1::from(vec![1000.0, 1001.0, 999.0]);
        softmax_in_place(p.view_mut());
        assert!((p.sum() - 1.0).abs() < 1e-15, "{p}");
        assert!(p[1] > p[0] && p[0] > p[2], "{p}");
        // Shifting every logit leaves it unchanged: the max is subtracted first.
        let mut q = Array1::from(vec![1.0, 2.0, 0.0]);
        softmax_in_place(q.view_mut());
        assert_eq!(p, q);
        let mut nan = Array1::from(vec![f64::INFINITY, 0.0]);
        softmax_in_place(nan.view_mut());
        assert!(nan.iter().any(|v| v.is_nan()));
    }

    #[test]
    fn fixed_softmax_is_pinned() {
        // The training run's error δ_L starts from these bits: a change of the softmax's
        // arithmetic (order of the sum, the shift) shows here first.
        let scales = Scales::default();
        let z = array![[1.5, -0.25, 3.0], [0.0, 0.0, 0.0]]
            .mapv(|x| scales.encode(ValueKind::PreActivation, x).unwrap());
        let y = softmax(z.view(), &scales).unwrap();
        assert_eq!(
            y,
            array![
                [2_966_550, 515_509, 13_295_156],
                [5_592_405, 5_592_405, 5_592_405]
            ]
        );
    }
}
