//! Plaintext `f64` training of a fully connected network with a chosen hidden activation.
//!
//! This is the training side of the baselines GELU-Net is compared with (paper §5.1,
//! Fig. 3 and Table 3): CryptoNets and BGN-Net cannot train under encryption, so they are
//! trained in plaintext with their polynomial activation and only *deployed* encrypted.
//! The trainer is generic over the hidden activation ([`HiddenActivation`]): the real
//! sigmoid ([`Sigmoid`], GELU-Net's activation seen in floating point) or one of the
//! polynomial activations of [`crate::poly`] (square, Taylor-3, Taylor-5).
//!
//! It follows GELU-Net's plaintext math (`gelunet-protocol`, `math.rs`; the sigmoid and
//! the softmax are the protocol's own functions) so that the runs are comparable:
//!
//! ```text
//! forward    z_i = a_{i−1}·W_iᵀ + b_i,   a_i = f(z_i)   (hidden),   y = softmax(z_L)
//! loss       mean over the batch of −log y_t            (reported, not differentiated)
//! backward   δ_L = y − t,   δ_i = (δ_{i+1}·W_{i+1}) ⊙ f'(z_i)
//! gradients  Δw_i = Σ_batch δ_iᵀ a_{i−1},   Δb_i = Σ_batch δ_i   (summed, not averaged)
//! SGD        w ← w − η·Δw,   b ← b − η·Δb
//! ```
//!
//! Initialization ([`FloatNet::xavier`]) draws exactly the numbers of
//! `gelunet_protocol::FixedModel::init`: Xavier-uniform `U(−l, l)`, `l = √(6/(n + m))`,
//! in order (layer, row, column) from `ChaCha20Rng::seed_from_u64(seed)`, biases 0; with
//! `Some(fw)` each weight is rounded to the grid `2^−fw` as the fixed-point model does,
//! so both start from the same weights. Mini-batches are given by the caller (index
//! lists), so the baselines can consume exactly the batches GELU-Net's clients drew.
//!
//! Divergence is not an error: the weights may overflow to `±∞` or NaN (the instability
//! the paper reports for polynomial activations, Fig. 3); [`FloatTrainer::diverged`]
//! says so and the loss becomes non-finite.

use gelunet_protocol::math::softmax_in_place;
use gelunet_protocol::Activation;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};
use crate::poly::PolyActivation;

/// A hidden-layer activation for the `f64` trainer.
pub trait HiddenActivation: Copy + std::fmt::Debug + Send + Sync {
    /// `f(x)`.
    fn apply(&self, x: f64) -> f64;
    /// `f'(x)`, at the pre-activation `x`.
    fn derivative(&self, x: f64) -> f64;
    /// Short name for reports.
    fn name(&self) -> &'static str;
}

/// The logistic sigmoid `1/(1 + e^{−x})` (GELU-Net's activation, applied by the client
/// in plaintext): the very function of the protocol,
/// [`gelunet_protocol::Activation::Sigmoid`], computed without overflow for large `|x|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sigmoid;

impl HiddenActivation for Sigmoid {
    fn apply(&self, x: f64) -> f64 {
        Activation::Sigmoid.apply(x)
    }

    fn derivative(&self, x: f64) -> f64 {
        Activation::Sigmoid.derivative(x)
    }

    fn name(&self) -> &'static str {
        "sigmoid"
    }
}

impl HiddenActivation for PolyActivation {
    fn apply(&self, x: f64) -> f64 {
        PolyActivation::apply(*self, x)
    }

    fn derivative(&self, x: f64) -> f64 {
        PolyActivation::derivative(*self, x)
    }

    fn name(&self) -> &'static str {
        PolyActivation::name(*self)
    }
}

/// A hidden activation chosen at run time: the sigmoid or a polynomial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrainActivation {
    /// [`Sigmoid`].
    Sigmoid,
    /// A polynomial activation of [`crate::poly`].
    Poly(PolyActivation),
}

impl HiddenActivation for TrainActivation {
    fn apply(&self, x: f64) -> f64 {
        match self {
            Self::Sigmoid => Sigmoid.apply(x),
            Self::Poly(p) => p.apply(x),
        }
    }

    fn derivative(&self, x: f64) -> f64 {
        match self {
            Self::Sigmoid => Sigmoid.derivative(x),
            Self::Poly(p) => p.derivative(x),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Poly(p) => p.name(),
        }
    }
}

/// Parameters of one layer: `w` (`m × n`) and `b` (`m`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloatLayer {
    /// Weights, `m × n` (width × fan-in).
    pub w: Array2<f64>,
    /// Biases, length `m`.
    pub b: Array1<f64>,
}

/// A fully connected network in `f64`: `widths = [n_0, …, n_L]`, softmax output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloatNet {
    /// Layer widths, input first, classes last.
    pub widths: Vec<usize>,
    /// `layers[i − 1]` is layer `i`.
    pub layers: Vec<FloatLayer>,
}

fn invalid(name: &'static str, reason: String) -> BaselineError {
    BaselineError::InvalidParameter { name, reason }
}

impl FloatNet {
    /// Xavier-uniform initialization with the draws of
    /// `gelunet_protocol::FixedModel::init` (see the module docs); `weight_frac_bits =
    /// Some(fw)` rounds every weight to the grid `2^−fw` (ties away from zero), giving
    /// exactly the fixed-point model's initial weights.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for fewer than two widths or a zero width.
    pub fn xavier(widths: &[usize], seed: u64, weight_frac_bits: Option<u32>) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(invalid(
                "widths",
                format!("{widths:?}: need at least two non-zero widths"),
            ));
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(widths.len() - 1);
        for i in 1..widths.len() {
            let (m, n) = (widths[i], widths[i - 1]);
            // Widths are small; the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            let l = (6.0 / (m + n) as f64).sqrt();
            let mut w = Array2::zeros((m, n));
            for v in &mut w {
                let x: f64 = rng.gen_range(-l..l);
                *v = match weight_frac_bits {
                    Some(fw) => {
                        let s = f64::from(fw).exp2();
                        (x * s).round() / s
                    }
                    None => x,
                };
            }
            layers.push(FloatLayer {
                w,
                b: Array1::zeros(m),
            });
        }
        Ok(Self {
            widths: widths.to_vec(),
            layers,
        })
    }

    /// Number of inputs `n_0`.
    #[must_use]
    pub fn inputs(&self) -> usize {
        self.widths.first().copied().unwrap_or(0)
    }

    /// Number of classes `n_L`.
    #[must_use]
    pub fn classes(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// Whether every parameter is finite.
    #[must_use]
    pub fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.w.iter().chain(l.b.iter()).all(|v| v.is_finite()))
    }

    fn check_inputs(&self, x: &ArrayView2<'_, f64>) -> Result<()> {
        if x.ncols() != self.inputs() {
            return Err(BaselineError::ShapeMismatch {
                what: "inputs",
                expected: vec![x.nrows(), self.inputs()],
                got: x.shape().to_vec(),
            });
        }
        Ok(())
    }

    /// Forward pass: the pre-activations `z_1 … z_L` and the inputs `a_0 … a_{L−1}` of
    /// every layer.
    fn trace<A: HiddenActivation>(
        &self,
        act: &A,
        x: ArrayView2<'_, f64>,
    ) -> (Vec<Array2<f64>>, Vec<Array2<f64>>) {
        let mut a = vec![x.to_owned()];
        let mut z = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let zi = a[i].dot(&l.w.t()) + &l.b;
            if i + 1 < self.layers.len() {
                a.push(zi.mapv(|v| act.apply(v)));
            }
            z.push(zi);
        }
        (a, z)
    }

    /// The logits `z_L` (`B × classes`) of a batch `x` (`B × n_0`).
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] for a wrong input width.
    pub fn logits<A: HiddenActivation>(
        &self,
        act: &A,
        x: ArrayView2<'_, f64>,
    ) -> Result<Array2<f64>> {
        self.check_inputs(&x)?;
        let (_, mut z) = self.trace(act, x);
        z.pop().ok_or_else(|| invalid("layers", "no layers".into()))
    }

    /// Predicted classes (argmax of the logits, first maximum on ties; a row with a NaN
    /// logit predicts class 0).
    ///
    /// # Errors
    /// As [`FloatNet::logits`].
    pub fn predict<A: HiddenActivation>(
        &self,
        act: &A,
        x: ArrayView2<'_, f64>,
    ) -> Result<Vec<usize>> {
        let z = self.logits(act, x)?;
        Ok(z.rows().into_iter().map(|r| argmax_f64(r.iter())).collect())
    }

    /// Fraction of correct predictions.
    ///
    /// # Errors
    /// As [`FloatNet::logits`]; [`BaselineError::ShapeMismatch`] if `labels` does not
    /// have one entry per row.
    pub fn accuracy<A: HiddenActivation>(
        &self,
        act: &A,
        x: ArrayView2<'_, f64>,
        labels: &[usize],
    ) -> Result<f64> {
        check_labels(x.nrows(), labels)?;
        let p = self.predict(act, x)?;
        Ok(accuracy_of(&p, labels))
    }

    /// Mean cross-entropy `−log softmax(z_L)_t` over the rows of `x` (`+∞` or NaN once the
    /// network has diverged).
    ///
    /// # Errors
    /// As [`FloatNet::accuracy`].
    pub fn loss<A: HiddenActivation>(
        &self,
        act: &A,
        x: ArrayView2<'_, f64>,
        labels: &[usize],
    ) -> Result<f64> {
        check_labels(x.nrows(), labels)?;
        let z = self.logits(act, x)?;
        Ok(mean_cross_entropy(&z, labels))
    }
}

fn check_labels(rows: usize, labels: &[usize]) -> Result<()> {
    if labels.len() != rows {
        return Err(BaselineError::ShapeMismatch {
            what: "labels",
            expected: vec![rows],
            got: vec![labels.len()],
        });
    }
    Ok(())
}

/// Index of the first maximum; NaN entries are skipped (all NaN: 0).
pub fn argmax_f64<'a>(row: impl Iterator<Item = &'a f64>) -> usize {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    let mut seen = false;
    for (i, &v) in row.enumerate() {
        if v.is_nan() {
            continue;
        }
        if !seen || v > best_v {
            best = i;
            best_v = v;
            seen = true;
        }
    }
    best
}

/// Fraction of `predictions` equal to `labels` (0 for empty inputs).
#[must_use]
pub fn accuracy_of(predictions: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let ok = predictions
        .iter()
        .zip(labels)
        .filter(|(a, b)| a == b)
        .count();
    // Counts are small; precision loss is irrelevant.
    #[allow(clippy::cast_precision_loss)]
    let r = ok as f64 / labels.len() as f64;
    r
}

/// Mean cross-entropy of softmax logits `z` (`B × classes`) against `labels`, with a
/// numerically stable log-sum-exp; non-finite logits give a non-finite loss.
#[must_use]
pub fn mean_cross_entropy(z: &Array2<f64>, labels: &[usize]) -> f64 {
    if z.nrows() == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for (row, &t) in z.rows().into_iter().zip(labels) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() || row.iter().any(|v| v.is_nan()) {
            return f64::NAN;
        }
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse - row.get(t).copied().unwrap_or(f64::NAN);
    }
    // Batch sizes are small; precision loss is irrelevant.
    #[allow(clippy::cast_precision_loss)]
    let r = total / z.nrows() as f64;
    r
}

/// Mini-batch SGD on a [`FloatNet`] with hidden activation `A` (see the module docs).
#[derive(Clone, Debug)]
pub struct FloatTrainer<A: HiddenActivation> {
    net: FloatNet,
    act: A,
    lr: f64,
    steps: u64,
}

impl<A: HiddenActivation> FloatTrainer<A> {
    /// A trainer starting from `net`, with learning rate `lr` (`η`).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] unless `lr` is finite and positive.
    pub fn new(net: FloatNet, act: A, lr: f64) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(invalid("lr", format!("{lr} must be finite and positive")));
        }
        Ok(Self {
            net,
            act,
            lr,
            steps: 0,
        })
    }

    /// The current network.
    #[must_use]
    pub fn net(&self) -> &FloatNet {
        &self.net
    }

    /// The hidden activation.
    #[must_use]
    pub fn activation(&self) -> A {
        self.act
    }

    /// The learning rate.
    #[must_use]
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// SGD steps taken.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether a parameter has become non-finite (overflow or NaN).
    #[must_use]
    pub fn diverged(&self) -> bool {
        !self.net.is_finite()
    }

    /// One SGD step on the batch `x` (`B × n_0`) with `labels`, gradients summed over the
    /// batch. A diverged network stays diverged (the step still runs, on non-finite
    /// values).
    ///
    /// # Errors
    /// Shape errors of [`FloatNet::accuracy`].
    pub fn step(&mut self, x: ArrayView2<'_, f64>, labels: &[usize]) -> Result<()> {
        self.net.check_inputs(&x)?;
        check_labels(x.nrows(), labels)?;
        let classes = self.net.classes();
        if let Some(&l) = labels.iter().find(|&&l| l >= classes) {
            return Err(invalid("labels", format!("label {l} ≥ {classes} classes")));
        }
        let (a, z) = self.net.trace(&self.act, x);
        let last = z.len() - 1;
        // y = softmax(z_L), row by row, with the protocol's softmax.
        let mut delta = z[last].clone();
        delta.rows_mut().into_iter().for_each(softmax_in_place);
        for (s, &t) in labels.iter().enumerate() {
            delta[[s, t]] -= 1.0;
        }
        let mut grads: Vec<(Array2<f64>, Array1<f64>)> = Vec::with_capacity(z.len());
        for i in (0..=last).rev() {
            grads.push((delta.t().dot(&a[i]), delta.sum_axis(Axis(0))));
            if i > 0 {
                let q = delta.dot(&self.net.layers[i].w);
                let fp = z[i - 1].mapv(|v| self.act.derivative(v));
                delta = q * fp;
            }
        }
        grads.reverse();
        for (l, (dw, db)) in self.net.layers.iter_mut().zip(grads) {
            l.w.scaled_add(-self.lr, &dw);
            l.b.scaled_add(-self.lr, &db);
        }
        self.steps += 1;
        Ok(())
    }

    /// Mean cross-entropy on `(x, labels)` (see [`FloatNet::loss`]).
    ///
    /// # Errors
    /// As [`FloatNet::loss`].
    pub fn loss(&self, x: ArrayView2<'_, f64>, labels: &[usize]) -> Result<f64> {
        self.net.loss(&self.act, x, labels)
    }

    /// Accuracy on `(x, labels)` (see [`FloatNet::accuracy`]).
    ///
    /// # Errors
    /// As [`FloatNet::accuracy`].
    pub fn accuracy(&self, x: ArrayView2<'_, f64>, labels: &[usize]) -> Result<f64> {
        self.net.accuracy(&self.act, x, labels)
    }
}

impl FloatNet {
    /// The fixed-point [`crate::SquareNet`] of a one-hidden-layer network trained with
    /// the square activation, at input scale `2^fx` and weight scale `2^fw` (CryptoNets'
    /// deployment: the same network evaluated on integers, then under BFV).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] unless the network has exactly one hidden
    /// layer; the quantization errors of [`crate::SquareNet::from_f64`] (non-finite or
    /// too large parameters, e.g. after divergence).
    pub fn to_square_net(&self, fx: u32, fw: u32) -> Result<crate::SquareNet> {
        match self.layers.as_slice() {
            [l1, l2] => crate::SquareNet::from_f64(&l1.w, &l1.b, &l2.w, &l2.b, fx, fw),
            _ => Err(invalid(
                "layers",
                format!(
                    "{} weight layers; the square network has exactly two",
                    self.layers.len()
                ),
            )),
        }
    }
}
