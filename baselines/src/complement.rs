//! Complement and partition (Sun et al., `../shared/papers/sun-complement-partition.txt`):
//! no cryptography; a binary classifier learns to flip its output on a secret
//! *complement signal*, and is split between the data owner and the model provider.
//!
//! # Parties and inputs
//!
//! - **Data owner**. Private: the input `x`, the complement signal `cs ∈ {0,1}` (fresh
//!   per query), the true label. Holds the client part `F^c_[1,k]` (layers `1..=k`, given
//!   to it by the provider). Sends the layer-`k` features `f = F^c(x ‖ cs)`.
//! - **Model provider** (the server). Private: the server part `F^s_[k+1,M]`. Knows the
//!   whole model and its training data. Sees `f`, returns `F^s(f) = y ⊕ cs`.
//!
//! # The model (paper §5)
//!
//! A dense network `d → h1 → h2 → 1` with ReLU hidden layers and a sigmoid output. The
//! complement signal is concatenated to the output of layer `k − 1 = 1`, so layer
//! `k = 2` (the last client layer) mixes it with the data (paper Remark 1):
//!
//! ```text
//! a1 = ReLU(W1·x + b1)                      client (layer 1)
//! f  = ReLU(W2·[a1 ‖ cs] + b2)              client (layer k = 2)   → server
//! o  = [σ(W3·f + b3) > 1/2]  = y ⊕ cs       server (layer 3)      → client
//! y  = o ⊕ cs                               client
//! ```
//!
//! Training (paper §5.3, "Retrain", scaled down): first the plain ("old") model
//! `d → h1 → h2 → 1` is trained on the labels; then layer 1 is frozen (Step 2), `cs` is
//! concatenated to its output (Step 3, layer 2 gains one input column initialised to
//! 0), and layers 2 and 3 are trained on the new labels `l' = l ⊕ cs` with a fresh
//! random `cs` per sample and epoch (Steps 4–5, the labeling algorithm of Fig. 3).
//! Plain mini-batch SGD on the binary cross-entropy.
//!
//! # What it leaks
//!
//! The provider knows the client part, so it can invert the features it receives
//! ([`invert_features`]: gradient descent on `x` for both values of `cs`); the better
//! fit also reveals `cs`, hence the true label `o ⊕ cs`. [`probe_label`] measures a
//! second route: a logistic-regression probe trained on the provider's own data
//! predicts the true label from `f` alone.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Slice};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::error::{BaselineError, Result};

/// One dense layer on `f64`, `W` of shape `outputs × inputs`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Weights.
    pub w: Array2<f64>,
    /// Biases.
    pub b: Array1<f64>,
}

impl Dense {
    fn xavier(outputs: usize, inputs: usize, rng: &mut ChaCha20Rng) -> Self {
        let r = (6.0 / (inputs + outputs) as f64).sqrt();
        Self {
            w: Array2::from_shape_fn((outputs, inputs), |_| rng.gen_range(-r..r)),
            b: Array1::zeros(outputs),
        }
    }

    /// `x·Wᵀ + b` for a batch `x` (`samples × inputs`).
    fn forward(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        x.dot(&self.w.t()) + &self.b
    }
}

fn relu(z: &Array2<f64>) -> Array2<f64> {
    z.mapv(|v| v.max(0.0))
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// The complement-and-partition model: `layers[0]` (`h1 × d`), `layers[1]`
/// (`h2 × (h1 + 1)`, the last column takes `cs`), `layers[2]` (`1 × h2`).
#[derive(Clone, Debug, PartialEq)]
pub struct SecureModel {
    /// The three layers.
    pub layers: [Dense; 3],
}

/// The old (non-secure) model: `d → h1 → h2 → 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlainModel {
    /// The three layers.
    pub layers: [Dense; 3],
}

fn check_data(x: ArrayView2<'_, f64>, labels: &[bool], d: usize) -> Result<()> {
    if x.nrows() != labels.len() || x.ncols() != d || labels.is_empty() {
        return Err(BaselineError::ShapeMismatch {
            what: "samples × features (and one label per sample)",
            expected: vec![labels.len(), d],
            got: x.shape().to_vec(),
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(BaselineError::NonFinite {
            what: "features",
            index: i,
        });
    }
    Ok(())
}

/// Training hyper-parameters.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TrainPlan {
    /// Hidden widths `h1`, `h2`.
    pub hidden: (usize, usize),
    /// Learning rate.
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Epochs of the old model.
    pub epochs_old: usize,
    /// Epochs of the retraining.
    pub epochs_retrain: usize,
    /// Seed (initial weights, shuffling, complement signals).
    pub seed: u64,
}

/// One SGD step on layers `from..3` of `layers` for inputs `a_in` to layer `from`.
/// Returns nothing; gradients of the mean binary cross-entropy.
fn sgd_step(layers: &mut [Dense], from: usize, a_in: ArrayView2<'_, f64>, y: &[f64], lr: f64) {
    let n = a_in.nrows() as f64;
    let mut acts = vec![a_in.to_owned()];
    for (l, layer) in layers.iter().enumerate().skip(from) {
        let z = layer.forward(acts[acts.len() - 1].view());
        acts.push(if l == layers.len() - 1 {
            z.mapv(sigmoid)
        } else {
            relu(&z)
        });
    }
    let out = &acts[acts.len() - 1];
    let mut delta = Array2::from_shape_fn(out.dim(), |(i, _)| (out[[i, 0]] - y[i]) / n);
    for l in (from..layers.len()).rev() {
        let a_prev = &acts[l - from];
        let gw = delta.t().dot(a_prev);
        let gb = delta.sum_axis(Axis(0));
        let next = if l > from {
            let back = delta.dot(&layers[l].w);
            Some(Array2::from_shape_fn(back.dim(), |(i, j)| {
                if a_prev[[i, j]] > 0.0 {
                    back[[i, j]]
                } else {
                    0.0
                }
            }))
        } else {
            None
        };
        layers[l].w.scaled_add(-lr, &gw);
        layers[l].b.scaled_add(-lr, &gb);
        if let Some(d) = next {
            delta = d;
        }
    }
}

impl PlainModel {
    /// Trains the old model on `(x, labels)`.
    ///
    /// # Errors
    /// Shape and non-finite errors; [`BaselineError::InvalidParameter`] for a zero
    /// width or batch.
    pub fn train(x: ArrayView2<'_, f64>, labels: &[bool], plan: &TrainPlan) -> Result<Self> {
        let d = x.ncols();
        check_data(x, labels, d)?;
        if plan.hidden.0 == 0 || plan.hidden.1 == 0 || plan.batch == 0 {
            return Err(BaselineError::InvalidParameter {
                name: "plan",
                reason: "hidden widths and batch must be positive".into(),
            });
        }
        let mut rng = ChaCha20Rng::seed_from_u64(plan.seed);
        let (h1, h2) = plan.hidden;
        let mut layers = vec![
            Dense::xavier(h1, d, &mut rng),
            Dense::xavier(h2, h1, &mut rng),
            Dense::xavier(1, h2, &mut rng),
        ];
        let y: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
        let mut order: Vec<usize> = (0..x.nrows()).collect();
        for _ in 0..plan.epochs_old {
            order.shuffle(&mut rng);
            for chunk in order.chunks(plan.batch) {
                let xb = x.select(Axis(0), chunk);
                let yb: Vec<f64> = chunk.iter().map(|&i| y[i]).collect();
                sgd_step(&mut layers, 0, xb.view(), &yb, plan.lr);
            }
        }
        let [l0, l1, l2]: [Dense; 3] = layers.try_into().map_err(|_| BaselineError::Overflow {
            what: "layer count",
        })?;
        Ok(Self {
            layers: [l0, l1, l2],
        })
    }

    /// Predicted labels.
    #[must_use]
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Vec<bool> {
        let a1 = relu(&self.layers[0].forward(x));
        let a2 = relu(&self.layers[1].forward(a1.view()));
        let o = self.layers[2].forward(a2.view());
        o.column(0).iter().map(|&v| v > 0.0).collect()
    }
}

/// `[a ‖ cs]` for a batch.
fn concat_cs(a: &Array2<f64>, cs: &[bool]) -> Array2<f64> {
    let (n, h) = a.dim();
    Array2::from_shape_fn((n, h + 1), |(i, j)| {
        if j < h {
            a[[i, j]]
        } else {
            f64::from(u8::from(cs[i]))
        }
    })
}

impl SecureModel {
    /// The paper's retraining: freezes layer 1 of `old`, adds the `cs` input to layer 2
    /// and trains layers 2–3 on `label ⊕ cs` with fresh random `cs`.
    ///
    /// # Errors
    /// Shape and non-finite errors.
    pub fn retrain(
        old: &PlainModel,
        x: ArrayView2<'_, f64>,
        labels: &[bool],
        plan: &TrainPlan,
    ) -> Result<Self> {
        check_data(x, labels, old.layers[0].w.ncols())?;
        let mut rng = ChaCha20Rng::seed_from_u64(plan.seed ^ 0xC0FF_EE00);
        let l2 = &old.layers[1];
        let (h2, h1) = l2.w.dim();
        let mut w2 = Array2::zeros((h2, h1 + 1));
        w2.slice_axis_mut(Axis(1), Slice::from(..h1)).assign(&l2.w);
        let mut layers = vec![
            old.layers[0].clone(),
            Dense {
                w: w2,
                b: l2.b.clone(),
            },
            old.layers[2].clone(),
        ];
        let a1_all = relu(&layers[0].forward(x));
        let mut order: Vec<usize> = (0..x.nrows()).collect();
        for _ in 0..plan.epochs_retrain {
            order.shuffle(&mut rng);
            for chunk in order.chunks(plan.batch.max(1)) {
                let cs: Vec<bool> = chunk.iter().map(|_| rng.gen()).collect();
                let a1 = a1_all.select(Axis(0), chunk);
                let input = concat_cs(&a1, &cs);
                let yb: Vec<f64> = chunk
                    .iter()
                    .zip(&cs)
                    .map(|(&i, &c)| f64::from(u8::from(labels[i] ^ c)))
                    .collect();
                sgd_step(&mut layers, 1, input.view(), &yb, plan.lr);
            }
        }
        let [a, b, c]: [Dense; 3] = layers.try_into().map_err(|_| BaselineError::Overflow {
            what: "layer count",
        })?;
        Ok(Self { layers: [a, b, c] })
    }

    /// The data owner's part (layers 1 and `k = 2`): the features `f` it sends.
    #[must_use]
    pub fn client_features(&self, x: ArrayView2<'_, f64>, cs: &[bool]) -> Array2<f64> {
        let a1 = relu(&self.layers[0].forward(x));
        relu(&self.layers[1].forward(concat_cs(&a1, cs).view()))
    }

    /// The provider's part (layer 3): the bit `y ⊕ cs` it returns.
    #[must_use]
    pub fn server_output(&self, f: ArrayView2<'_, f64>) -> Vec<bool> {
        self.layers[2]
            .forward(f)
            .column(0)
            .iter()
            .map(|&v| v > 0.0)
            .collect()
    }

    /// The unsplit model on `x ‖ cs` (one function, for the equality test).
    #[must_use]
    pub fn forward_unsplit(&self, x: ArrayView2<'_, f64>, cs: &[bool]) -> Vec<bool> {
        let mut a = relu(&self.layers[0].forward(x));
        a = concat_cs(&a, cs);
        a = relu(&self.layers[1].forward(a.view()));
        self.layers[2]
            .forward(a.view())
            .column(0)
            .iter()
            .map(|&v| v > 0.0)
            .collect()
    }

    /// The unsplit model with the complement removed: `forward_unsplit(x, cs) ⊕ cs`.
    #[must_use]
    pub fn predict_unsplit(&self, x: ArrayView2<'_, f64>, cs: &[bool]) -> Vec<bool> {
        self.forward_unsplit(x, cs)
            .into_iter()
            .zip(cs)
            .map(|(o, &c)| o ^ c)
            .collect()
    }

    /// One split inference with the complement removed: `server(client(x, cs)) ⊕ cs`.
    #[must_use]
    pub fn predict_split(&self, x: ArrayView2<'_, f64>, cs: &[bool]) -> Vec<bool> {
        let f = self.client_features(x, cs);
        self.server_output(f.view())
            .into_iter()
            .zip(cs)
            .map(|(o, &c)| o ^ c)
            .collect()
    }

    /// Width of the features sent (`h2`).
    #[must_use]
    pub fn feature_width(&self) -> usize {
        self.layers[1].w.nrows()
    }
}

/// Fraction of equal entries.
#[must_use]
pub fn agreement(a: &[bool], b: &[bool]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64
}

/// A logistic-regression probe trained by the provider on its own data: features
/// `f` (computed with random `cs`, which it knows) → true label. Returns its accuracy
/// on `(f_test, labels_test)`.
#[must_use]
pub fn probe_label(
    f_train: ArrayView2<'_, f64>,
    y_train: &[bool],
    f_test: ArrayView2<'_, f64>,
    y_test: &[bool],
    epochs: usize,
    lr: f64,
) -> f64 {
    let d = f_train.ncols();
    let mut w = Array1::<f64>::zeros(d);
    let mut b = 0.0;
    let n = f_train.nrows().max(1) as f64;
    for _ in 0..epochs {
        let z = f_train.dot(&w) + b;
        let g: Array1<f64> = z
            .iter()
            .zip(y_train)
            .map(|(&v, &y)| (sigmoid(v) - f64::from(u8::from(y))) / n)
            .collect();
        w.scaled_add(-lr, &f_train.t().dot(&g));
        b -= lr * g.sum();
    }
    let pred: Vec<bool> = (f_test.dot(&w) + b).iter().map(|&v| v > 0.0).collect();
    agreement(&pred, y_test)
}

/// One feature-inversion result.
#[derive(Clone, Debug, Serialize)]
pub struct Inversion {
    /// The reconstructed input.
    #[serde(skip)]
    pub x: Array1<f64>,
    /// The guessed complement signal (the better fit).
    pub cs: bool,
    /// Squared feature error of the better fit.
    pub loss: f64,
}

/// The provider inverts the features `f` of one sample: for each `cs ∈ {0,1}`,
/// projected gradient descent on `x ∈ [0,1]^d` from `start` minimizing
/// `‖F^c(x ‖ cs) − f‖²`; returns the better fit.
#[must_use]
pub fn invert_features(
    model: &SecureModel,
    f: ArrayView1<'_, f64>,
    start: ArrayView1<'_, f64>,
    steps: usize,
    lr: f64,
) -> Inversion {
    let [l1, l2, _] = &model.layers;
    let h1 = l1.w.nrows();
    let mut best: Option<Inversion> = None;
    for cs in [false, true] {
        let mut x = start.to_owned();
        let mut loss = f64::INFINITY;
        for _ in 0..steps {
            let z1 = l1.w.dot(&x) + &l1.b;
            let a1 = z1.mapv(|v| v.max(0.0));
            let mut inp = Array1::zeros(h1 + 1);
            inp.slice_axis_mut(Axis(0), Slice::from(..h1)).assign(&a1);
            inp[h1] = f64::from(u8::from(cs));
            let z2 = l2.w.dot(&inp) + &l2.b;
            let a2 = z2.mapv(|v| v.max(0.0));
            let r = &a2 - &f;
            loss = r.dot(&r);
            let d2 = Array1::from_shape_fn(r.len(), |i| if z2[i] > 0.0 { 2.0 * r[i] } else { 0.0 });
            let back = l2.w.slice_axis(Axis(1), Slice::from(..h1)).t().dot(&d2);
            let d1 = Array1::from_shape_fn(h1, |i| if z1[i] > 0.0 { back[i] } else { 0.0 });
            let gx = l1.w.t().dot(&d1);
            x.scaled_add(-lr, &gx);
            x.mapv_inplace(|v| v.clamp(0.0, 1.0));
        }
        if best.as_ref().is_none_or(|b| loss < b.loss) {
            best = Some(Inversion { x, cs, loss });
        }
    }
    best.unwrap_or(Inversion {
        x: start.to_owned(),
        cs: false,
        loss: f64::INFINITY,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Two Gaussian blobs in 10 dimensions (label = which blob), values in [0, 1].
    fn blobs(n: usize, seed: u64) -> (Array2<f64>, Vec<bool>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
        let x = Array2::from_shape_fn((n, 10), |(i, j)| {
            let c = if labels[i] == (j < 5) { 0.75 } else { 0.25 };
            (c + rng.gen_range(-0.2..0.2f64)).clamp(0.0, 1.0)
        });
        (x, labels)
    }

    fn plan() -> TrainPlan {
        TrainPlan {
            hidden: (12, 8),
            lr: 0.2,
            batch: 16,
            epochs_old: 20,
            epochs_retrain: 60,
            seed: 1,
        }
    }

    #[test]
    fn split_equals_unsplit_and_the_complement_flips() {
        let (x, y) = blobs(600, 2);
        let old = PlainModel::train(x.view(), &y, &plan()).unwrap();
        assert!(agreement(&old.predict(x.view()), &y) > 0.95);
        let secure = SecureModel::retrain(&old, x.view(), &y, &plan()).unwrap();
        let (xt, yt) = blobs(300, 3);
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let cs: Vec<bool> = (0..300).map(|_| rng.gen()).collect();
        // Split predictions equal the unsplit model's once the complement is removed.
        let split = secure.predict_split(xt.view(), &cs);
        assert_eq!(split, secure.predict_unsplit(xt.view(), &cs));
        // The model learned to flip: accuracy after removing cs is high, the raw
        // output is right only about half the time.
        assert!(agreement(&split, &yt) > 0.9, "{}", agreement(&split, &yt));
        let raw = secure.server_output(secure.client_features(xt.view(), &cs).view());
        let raw_acc = agreement(&raw, &yt);
        assert!((0.3..0.7).contains(&raw_acc), "{raw_acc}");
    }

    #[test]
    fn the_provider_learns_the_label_from_the_features() {
        let (x, y) = blobs(600, 5);
        let old = PlainModel::train(x.view(), &y, &plan()).unwrap();
        let secure = SecureModel::retrain(&old, x.view(), &y, &plan()).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let cs: Vec<bool> = (0..600).map(|_| rng.gen()).collect();
        let f = secure.client_features(x.view(), &cs);
        let (xt, yt) = blobs(300, 7);
        let cst: Vec<bool> = (0..300).map(|_| rng.gen()).collect();
        let ft = secure.client_features(xt.view(), &cst);
        let acc = probe_label(f.view(), &y, ft.view(), &yt, 300, 0.5);
        assert!(acc > 0.8, "probe accuracy {acc}");
        // Feature inversion guesses cs, hence the label, better than chance.
        let start = Array1::from_elem(10, 0.5);
        let mut right = 0;
        for (row, &c) in ft.outer_iter().zip(&cst).take(60) {
            let inv = invert_features(&secure, row, start.view(), 200, 0.05);
            if inv.cs == c {
                right += 1;
            }
        }
        assert!(right > 36, "cs guessed {right}/60");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (x, y) = blobs(20, 8);
        assert!(matches!(
            PlainModel::train(x.view(), &y[..10], &plan()),
            Err(BaselineError::ShapeMismatch { .. })
        ));
        let mut bad = x.clone();
        bad[[3, 3]] = f64::NAN;
        assert!(matches!(
            PlainModel::train(bad.view(), &y, &plan()),
            Err(BaselineError::NonFinite { .. })
        ));
        let mut p = plan();
        p.batch = 0;
        assert!(PlainModel::train(x.view(), &y, &p).is_err());
    }
}
