//! A fixed-point one-hidden-layer network with the square activation (CryptoNets).
//!
//! Shapes: `n` inputs, `h` hidden units, `c` classes; a batch is an `S × n` matrix
//! (one sample per row).
//!
//! ```text
//! z1 = W1·x + b1      W1: h × n at 2^fw,   x at 2^fx,  b1 at 2^(fx+fw)  →  z1 at 2^(fx+fw)
//! a1 = z1²                                                           →  a1 at 2^(2fx+2fw)
//! z2 = W2·a1 + b2     W2: c × h at 2^fw,   b2 at 2^(2fx+3fw)          →  z2 at 2^(2fx+3fw)
//! ```
//!
//! Every value is an exact integer; no rescaling happens inside the network, so the
//! same computation can be carried out modulo a BFV plaintext modulus `t` (see
//! [`crate::bfv`]) as long as the outputs satisfy `2·|z2| < t`. Only the *outputs*
//! need this headroom: the network is a polynomial in the inputs, so intermediate
//! values may wrap modulo `t` without affecting the result.
//! [`SquareNet::output_bound`] gives the worst case of `|z2|` over all inputs with
//! `|x| ≤ B`:
//!
//! ```text
//! H_j = Σ_k |W1_jk|·B + |b1_j|,     max|z2_c| ≤ Σ_j |W2_cj|·H_j² + |b2_c|.
//! ```
//!
//! Source: the square activation and the fixed-point, rescaling-free evaluation follow
//! CryptoNets (Gilad-Bachrach et al., ICML 2016).

use gelunet_protocol::math::argmax;
use ndarray::{Array, Array1, Array2, Dimension};
use serde::{Deserialize, Serialize};

use crate::error::{BaselineError, Result};

/// Largest accepted fractional scale (bits) for inputs and weights.
pub const MAX_SCALE_BITS: u32 = 24;

/// Largest magnitude of a quantized value (inputs, weights, biases): `2^62`.
const MAX_QUANTIZED: f64 = 4_611_686_018_427_387_904.0;

/// Fixed-point scales of a [`SquareNet`]: inputs at `2^fx`, weights at `2^fw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SquareScales {
    /// Fractional bits of the inputs `x`.
    pub fx: u32,
    /// Fractional bits of the weights `W1`, `W2`.
    pub fw: u32,
}

impl SquareScales {
    /// Checks that both scales are at most [`MAX_SCALE_BITS`].
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if a scale is too large.
    pub fn new(fx: u32, fw: u32) -> Result<Self> {
        for (name, v) in [("fx", fx), ("fw", fw)] {
            if v > MAX_SCALE_BITS {
                return Err(BaselineError::InvalidParameter {
                    name,
                    reason: format!("scale {v} exceeds {MAX_SCALE_BITS} bits"),
                });
            }
        }
        Ok(Self { fx, fw })
    }

    /// Scale bits of the first bias and of `z1`: `fx + fw`.
    #[must_use]
    pub fn hidden_pre(&self) -> u32 {
        self.fx + self.fw
    }

    /// Scale bits of the hidden activation `a1 = z1²`: `2fx + 2fw`.
    #[must_use]
    pub fn hidden_act(&self) -> u32 {
        2 * (self.fx + self.fw)
    }

    /// Scale bits of the second bias and of the outputs `z2`: `2fx + 3fw`.
    #[must_use]
    pub fn output(&self) -> u32 {
        2 * self.fx + 3 * self.fw
    }
}

/// A one-hidden-layer square-activation network on fixed-point integers.
///
/// Invariants (checked by the constructors): `w1` is `h × n`, `b1` has `h` entries,
/// `w2` is `c × h`, `b2` has `c` entries, `n, h, c ≥ 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SquareNet {
    w1: Array2<i64>,
    b1: Array1<i64>,
    w2: Array2<i64>,
    b2: Array1<i64>,
    scales: SquareScales,
}

fn shape_err(what: &'static str, expected: &[usize], got: &[usize]) -> BaselineError {
    BaselineError::ShapeMismatch {
        what,
        expected: expected.to_vec(),
        got: got.to_vec(),
    }
}

/// Quantizes `v·2^scale`, rounding to nearest, refusing non-finite or too large values.
fn quantize(what: &'static str, index: usize, v: f64, scale: u32) -> Result<i64> {
    if !v.is_finite() {
        return Err(BaselineError::NonFinite { what, index });
    }
    let s = (v * f64::from(scale).exp2()).round();
    if s.abs() >= MAX_QUANTIZED {
        return Err(BaselineError::QuantizationOverflow {
            what,
            value: v,
            bound: MAX_QUANTIZED,
        });
    }
    // In range by the check above, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    Ok(s as i64)
}

/// [`quantize`] elementwise, keeping the shape (`index` counts in logical order).
fn quantize_all<D: Dimension>(
    what: &'static str,
    a: &Array<f64, D>,
    scale: u32,
) -> Result<Array<i64, D>> {
    let v = a
        .iter()
        .enumerate()
        .map(|(i, &x)| quantize(what, i, x, scale))
        .collect::<Result<Vec<i64>>>()?;
    Array::from_shape_vec(a.raw_dim(), v).map_err(|_| shape_err(what, a.shape(), &[a.len()]))
}

impl SquareNet {
    /// Builds a network from already quantized integer parameters.
    ///
    /// `w1`: `h × n` at `2^fw`; `b1`: `h` at `2^(fx+fw)`; `w2`: `c × h` at `2^fw`;
    /// `b2`: `c` at `2^(2fx+3fw)`.
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if the shapes do not chain or a dimension is
    /// zero; [`BaselineError::InvalidParameter`] for invalid scales.
    pub fn new(
        w1: Array2<i64>,
        b1: Array1<i64>,
        w2: Array2<i64>,
        b2: Array1<i64>,
        scales: SquareScales,
    ) -> Result<Self> {
        let scales = SquareScales::new(scales.fx, scales.fw)?;
        let (h, n) = w1.dim();
        let (c, h2) = w2.dim();
        if h == 0 || n == 0 || c == 0 {
            return Err(shape_err("w1/w2 (non-empty)", &[1, 1], &[h, n, c]));
        }
        if b1.len() != h {
            return Err(shape_err("b1", &[h], &[b1.len()]));
        }
        if h2 != h {
            return Err(shape_err("w2", &[c, h], &[c, h2]));
        }
        if b2.len() != c {
            return Err(shape_err("b2", &[c], &[b2.len()]));
        }
        Ok(Self {
            w1,
            b1,
            w2,
            b2,
            scales,
        })
    }

    /// Quantizes real parameters: `round(w·2^fw)` for `w1`, `w2`,
    /// `round(b1·2^(fx+fw))`, `round(b2·2^(2fx+3fw))`.
    ///
    /// # Errors
    /// [`BaselineError::NonFinite`] for NaN/infinite values,
    /// [`BaselineError::QuantizationOverflow`] if a scaled value reaches `2^62`,
    /// [`BaselineError::ShapeMismatch`] and [`BaselineError::InvalidParameter`] as in
    /// [`SquareNet::new`].
    pub fn from_f64(
        w1: &Array2<f64>,
        b1: &Array1<f64>,
        w2: &Array2<f64>,
        b2: &Array1<f64>,
        fx: u32,
        fw: u32,
    ) -> Result<Self> {
        let scales = SquareScales::new(fx, fw)?;
        Self::new(
            quantize_all("w1", w1, scales.fw)?,
            quantize_all("b1", b1, scales.hidden_pre())?,
            quantize_all("w2", w2, scales.fw)?,
            quantize_all("b2", b2, scales.output())?,
            scales,
        )
    }

    /// Number of inputs `n`.
    #[must_use]
    pub fn inputs(&self) -> usize {
        self.w1.ncols()
    }

    /// Number of hidden units `h`.
    #[must_use]
    pub fn hidden(&self) -> usize {
        self.w1.nrows()
    }

    /// Number of classes (outputs) `c`.
    #[must_use]
    pub fn classes(&self) -> usize {
        self.w2.nrows()
    }

    /// The fixed-point scales.
    #[must_use]
    pub fn scales(&self) -> SquareScales {
        self.scales
    }

    /// First-layer weights, `h × n` at `2^fw`.
    #[must_use]
    pub fn w1(&self) -> &Array2<i64> {
        &self.w1
    }

    /// First-layer bias, `h` at `2^(fx+fw)`.
    #[must_use]
    pub fn b1(&self) -> &Array1<i64> {
        &self.b1
    }

    /// Output-layer weights, `c × h` at `2^fw`.
    #[must_use]
    pub fn w2(&self) -> &Array2<i64> {
        &self.w2
    }

    /// Output-layer bias, `c` at `2^(2fx+3fw)`.
    #[must_use]
    pub fn b2(&self) -> &Array1<i64> {
        &self.b2
    }

    /// Quantizes a real batch (`S × n`) to integers at `2^fx`.
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if the batch does not have `n` columns,
    /// [`BaselineError::NonFinite`] / [`BaselineError::QuantizationOverflow`] for
    /// values that cannot be encoded.
    pub fn quantize_inputs(&self, x: &Array2<f64>) -> Result<Array2<i64>> {
        if x.ncols() != self.inputs() {
            return Err(shape_err("inputs", &[x.nrows(), self.inputs()], x.shape()));
        }
        quantize_all("inputs", x, self.scales.fx)
    }

    /// Exact integer forward pass of a batch `x` (`S × n`, at `2^fx`); returns the
    /// logits `z2` (`S × c`, at `2^(2fx+3fw)`).
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if `x` does not have `n` columns;
    /// [`BaselineError::Overflow`] if an intermediate value leaves `i128` (checked
    /// arithmetic throughout, never wraps).
    pub fn forward_plain(&self, x: &Array2<i64>) -> Result<Array2<i128>> {
        if x.ncols() != self.inputs() {
            return Err(shape_err("inputs", &[x.nrows(), self.inputs()], x.shape()));
        }
        let (s_count, h, c) = (x.nrows(), self.hidden(), self.classes());
        let mut out = Array2::<i128>::zeros((s_count, c));
        let mut a1 = vec![0i128; h];
        let of = |what| BaselineError::Overflow { what };
        for (s, xs) in x.outer_iter().enumerate() {
            for (j, (wj, &bj)) in self.w1.outer_iter().zip(self.b1.iter()).enumerate() {
                let mut z = i128::from(bj);
                for (&w, &xi) in wj.iter().zip(xs.iter()) {
                    z = z
                        .checked_add(i128::from(w) * i128::from(xi))
                        .ok_or_else(|| of("z1"))?;
                }
                a1[j] = z.checked_mul(z).ok_or_else(|| of("a1 = z1²"))?;
            }
            for (k, (wk, &bk)) in self.w2.outer_iter().zip(self.b2.iter()).enumerate() {
                let mut z = i128::from(bk);
                for (&w, &a) in wk.iter().zip(a1.iter()) {
                    let p = i128::from(w).checked_mul(a).ok_or_else(|| of("W2·a1"))?;
                    z = z.checked_add(p).ok_or_else(|| of("z2"))?;
                }
                out[[s, k]] = z;
            }
        }
        Ok(out)
    }

    /// Predicted class of every sample: the argmax of [`SquareNet::forward_plain`]
    /// (the first maximal class on ties).
    ///
    /// # Errors
    /// As [`SquareNet::forward_plain`].
    pub fn predict_plain(&self, x: &Array2<i64>) -> Result<Vec<usize>> {
        let z = self.forward_plain(x)?;
        Ok(z.outer_iter().map(argmax).collect())
    }

    /// Converts integer logits (at `2^(2fx+3fw)`) back to reals.
    #[must_use]
    pub fn logits_to_f64(&self, z: &Array2<i128>) -> Array2<f64> {
        let scale = f64::from(self.scales.output()).exp2();
        // Precision loss is accepted: this is for display and accuracy only.
        #[allow(clippy::cast_precision_loss)]
        z.mapv(|v| v as f64 / scale)
    }

    /// Worst case of `max_c |z2_c|` over all inputs with `|x_k| ≤ input_bound`
    /// (formula in the module docs).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for a negative bound,
    /// [`BaselineError::Overflow`] if the bound exceeds `u128`.
    pub fn output_bound(&self, input_bound: i64) -> Result<u128> {
        if input_bound < 0 {
            return Err(BaselineError::InvalidParameter {
                name: "input_bound",
                reason: format!("must be non-negative, got {input_bound}"),
            });
        }
        let of = |what| BaselineError::Overflow { what };
        let bx = u128::from(input_bound.unsigned_abs());
        let mut h2 = Vec::with_capacity(self.hidden());
        for (wj, &bj) in self.w1.outer_iter().zip(self.b1.iter()) {
            let mut hj = u128::from(bj.unsigned_abs());
            for &w in wj {
                let p = u128::from(w.unsigned_abs()) * bx;
                hj = hj.checked_add(p).ok_or_else(|| of("bound on |z1|"))?;
            }
            h2.push(hj.checked_mul(hj).ok_or_else(|| of("bound on a1"))?);
        }
        let mut best = 0u128;
        for (wk, &bk) in self.w2.outer_iter().zip(self.b2.iter()) {
            let mut o = u128::from(bk.unsigned_abs());
            for (&w, &a) in wk.iter().zip(h2.iter()) {
                let p = u128::from(w.unsigned_abs())
                    .checked_mul(a)
                    .ok_or_else(|| of("bound on |z2|"))?;
                o = o.checked_add(p).ok_or_else(|| of("bound on |z2|"))?;
            }
            best = best.max(o);
        }
        Ok(best)
    }

    /// Bits of the smallest plaintext modulus that holds the outputs without
    /// wrapping: the bit length of `2·output_bound(input_bound) + 1`.
    ///
    /// # Errors
    /// As [`SquareNet::output_bound`]; [`BaselineError::Overflow`] if doubling
    /// overflows.
    pub fn required_plaintext_bits(&self, input_bound: i64) -> Result<u32> {
        let b = self.output_bound(input_bound)?;
        let need =
            b.checked_mul(2)
                .and_then(|v| v.checked_add(1))
                .ok_or(BaselineError::Overflow {
                    what: "2·bound + 1",
                })?;
        Ok(128 - need.leading_zeros())
    }
}
