//! Fixed-point codec (docs/DESIGN.md, "Fixed-point numbers").
//!
//! Every protocol value is a signed integer at a power-of-two scale:
//!
//! | [`ValueKind`] | scale | default |
//! | --- | --- | --- |
//! | `Activation` (`a_i`, input `x`) | `2^fa` | `2^24` |
//! | `Weight` (`w_i`) | `2^fw` | `2^32` |
//! | `Bias`, `PreActivation` (`b_i`, `z_i`) | `2^(fa+fw)` | `2^56` |
//! | `Error` (`δ_i`, softmax output `y`) | `2^fd` | `2^24` |
//! | `Product` (`q = δ·W`) | `2^(fd+fw)` | `2^56` |
//! | `Derivative` (`f'(z)`) | `2^fa` | `2^24` |
//! | `LearningRate` (`η`) | `2^fe` | `2^16` |
//! | `WeightGradient` as sent (`Δw`) | `2^(fw−fe)` | `2^16` |
//! | `BiasGradient` as sent (`Δb`) | `2^(fa+fw−fe)` | `2^40` |
//!
//! so that `z = W·a + b` needs no rescaling, and `η·Δw` lands at `2^fw`, `η·Δb` at
//! `2^(fa+fw)`, exactly.
//!
//! Each kind also has a range: its *real* magnitude must stay below `2^k` for the kind's
//! limit `k` in [`Limits`], i.e. the integer below `2^(k + scale)`. [`Scales::encode`] and
//! [`Scales::check`] return [`Error::OutOfRange`] instead of wrapping.
//!
//! Rounding: real → fixed rounds to nearest with ties away from zero
//! ([`f64::round`]); fixed → coarser fixed uses [`round_shift`], the same rule on
//! integers. These are the only two rounding rules of the project.

use num_bigint::BigInt;
use num_traits::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a fixed-point value is; selects its scale and range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueKind {
    /// Activation `a_i` or input `x`, at `2^fa`.
    Activation,
    /// Weight `w_i`, at `2^fw`.
    Weight,
    /// Bias `b_i`, at `2^(fa+fw)`.
    Bias,
    /// Pre-activation `z_i = W_i a_{i−1} + b_i`, at `2^(fa+fw)`.
    PreActivation,
    /// Error `δ_i` (and the softmax output `y`), at `2^fd`.
    Error,
    /// Backward product `q = Σ_j δ_j w_jk`, at `2^(fd+fw)`.
    Product,
    /// Activation derivative `f'(z)`, at `2^fa`.
    Derivative,
    /// Learning rate `η`, at `2^fe`.
    LearningRate,
    /// Weight gradient as sent, summed over the mini-batch (or a session), at `2^(fw−fe)`.
    WeightGradient,
    /// Bias gradient as sent, summed over the mini-batch (or a session), at `2^(fa+fw−fe)`.
    BiasGradient,
}

impl ValueKind {
    /// Every kind, in declaration order.
    pub const ALL: [ValueKind; 10] = [
        ValueKind::Activation,
        ValueKind::Weight,
        ValueKind::Bias,
        ValueKind::PreActivation,
        ValueKind::Error,
        ValueKind::Product,
        ValueKind::Derivative,
        ValueKind::LearningRate,
        ValueKind::WeightGradient,
        ValueKind::BiasGradient,
    ];
}

/// Range of each kind, as the number of bits of its *real* magnitude: a value `v` of
/// kind `k` must satisfy `|v| < 2^limit(k)` (in real units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Activations and inputs (default 8: `|a| < 256`; normalize inputs).
    pub activation: u32,
    /// Weights and biases (default 12).
    pub weight: u32,
    /// Pre-activations and backward products (default 20).
    pub pre_activation: u32,
    /// Errors `δ` (default 12).
    pub error: u32,
    /// Learning rate (default 4: `η < 16`).
    pub learning_rate: u32,
    /// Weight and bias gradients as sent, also the session accumulators (default 24).
    pub gradient: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            activation: 8,
            weight: 12,
            pre_activation: 20,
            error: 12,
            learning_rate: 4,
            gradient: 24,
        }
    }
}

/// The fixed-point scales of a run (docs/DESIGN.md table), sent in the session handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scales {
    /// Fractional bits of activations and inputs.
    pub fa: u32,
    /// Fractional bits of weights.
    pub fw: u32,
    /// Fractional bits of errors `δ`.
    pub fd: u32,
    /// Fractional bits of the learning rate `η`.
    pub fe: u32,
    /// The range of each kind.
    pub limits: Limits,
}

impl Default for Scales {
    /// `fa = 24, fw = 32, fd = 24, fe = 16` with [`Limits::default`].
    fn default() -> Self {
        Self {
            fa: 24,
            fw: 32,
            fd: 24,
            fe: 16,
            limits: Limits::default(),
        }
    }
}

/// Largest magnitude, in bits, any kind may reach (keeps every product of two values and
/// their sums inside `i128`).
pub const MAX_VALUE_BITS: u32 = 100;

impl Scales {
    /// Checks that the scales fit together.
    ///
    /// # Errors
    /// [`Error::InvalidScales`] if `fe > fw` (the weight gradient would have a negative
    /// scale), a kind's bound exceeds [`MAX_VALUE_BITS`], or the products the math forms
    /// (`w·a`, `δ·w`, `q·f'`, `δ·a`, `η·Δw`, `η·Δb`) could overflow `i128`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidScales { reason });
        if self.fe > self.fw {
            return bad(format!("fe = {} exceeds fw = {}", self.fe, self.fw));
        }
        if self.fa == 0 || self.fw == 0 || self.fd == 0 {
            return bad("fa, fw and fd must be positive".into());
        }
        for k in ValueKind::ALL {
            let b = self.max_bits(k);
            if b > MAX_VALUE_BITS {
                return bad(format!("{k:?} needs {b} bits > {MAX_VALUE_BITS}"));
            }
        }
        // Products of two values, plus (for sums) up to 2^16 terms (MAX_WIDTH) times a
        // batch factor of 2^16, must stay below 2^127.
        let pairs = [
            (ValueKind::Weight, ValueKind::Activation, 32),
            (ValueKind::Error, ValueKind::Weight, 32),
            (ValueKind::Error, ValueKind::Activation, 32),
            (ValueKind::Product, ValueKind::Derivative, 0),
            (ValueKind::LearningRate, ValueKind::WeightGradient, 0),
            (ValueKind::LearningRate, ValueKind::BiasGradient, 0),
        ];
        for (a, b, slack) in pairs {
            let bits = self.max_bits(a) + self.max_bits(b) + slack;
            if bits > 126 {
                return bad(format!("{a:?}·{b:?} sums may need {bits} bits"));
            }
        }
        Ok(())
    }

    /// The scale exponent `f` of a kind (values are `round(x · 2^f)`).
    pub fn frac_bits(&self, kind: ValueKind) -> u32 {
        match kind {
            ValueKind::Activation | ValueKind::Derivative => self.fa,
            ValueKind::Weight => self.fw,
            ValueKind::Bias | ValueKind::PreActivation => self.fa + self.fw,
            ValueKind::Error => self.fd,
            ValueKind::Product => self.fd + self.fw,
            ValueKind::LearningRate => self.fe,
            ValueKind::WeightGradient => self.fw - self.fe.min(self.fw),
            ValueKind::BiasGradient => self.fa + self.fw - self.fe.min(self.fa + self.fw),
        }
    }

    /// The real-magnitude limit of a kind, in bits.
    pub fn limit_bits(&self, kind: ValueKind) -> u32 {
        let l = &self.limits;
        match kind {
            ValueKind::Activation => l.activation,
            ValueKind::Weight | ValueKind::Bias => l.weight,
            ValueKind::PreActivation | ValueKind::Product => l.pre_activation,
            ValueKind::Error => l.error,
            ValueKind::Derivative => 1,
            ValueKind::LearningRate => l.learning_rate,
            ValueKind::WeightGradient | ValueKind::BiasGradient => l.gradient,
        }
    }

    /// Integer magnitude bound in bits: a value of this kind satisfies
    /// `|v| < 2^max_bits(kind)`.
    pub fn max_bits(&self, kind: ValueKind) -> u32 {
        self.frac_bits(kind) + self.limit_bits(kind)
    }

    /// `round(x · 2^f)` for the kind's scale, ties away from zero.
    ///
    /// # Errors
    /// [`Error::NotFinite`] for NaN or ±∞; [`Error::OutOfRange`] if the result reaches
    /// `2^max_bits(kind)`.
    pub fn encode(&self, kind: ValueKind, x: f64) -> Result<i128> {
        if !x.is_finite() {
            return Err(Error::NotFinite { kind, value: x });
        }
        let scaled = (x * pow2(self.frac_bits(kind))).round();
        let max_bits = self.max_bits(kind);
        if scaled.abs() >= pow2(max_bits) {
            return Err(Error::OutOfRange {
                kind,
                value: x.to_string(),
                max_bits,
            });
        }
        // |scaled| < 2^100: exact conversion.
        Ok(scaled as i128)
    }

    /// `v / 2^f` as the nearest `f64` (exact when `|v| < 2^53`).
    pub fn decode(&self, kind: ValueKind, v: i128) -> f64 {
        (v as f64) / pow2(self.frac_bits(kind))
    }

    /// Checks that `v` is within the kind's range.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `|v| ≥ 2^max_bits(kind)`.
    pub fn check(&self, kind: ValueKind, v: i128) -> Result<i128> {
        let max_bits = self.max_bits(kind);
        if v.unsigned_abs() >> max_bits != 0 {
            return Err(Error::OutOfRange {
                kind,
                value: v.to_string(),
                max_bits,
            });
        }
        Ok(v)
    }

    /// Converts a big integer (e.g. a decrypted plaintext) to `i128` within the kind's
    /// range.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] if `|v| ≥ 2^max_bits(kind)`.
    pub fn check_big(&self, kind: ValueKind, v: &BigInt) -> Result<i128> {
        let max_bits = self.max_bits(kind);
        match v.to_i128() {
            Some(x) if v.bits() <= u64::from(max_bits) => self.check(kind, x),
            _ => Err(Error::OutOfRange {
                kind,
                value: v.to_string(),
                max_bits,
            }),
        }
    }

    /// [`Scales::check_big`] for a value of the kind at `extra_bits` more fractional bits
    /// (a pooled conv layer's pre-activations, [`crate::linear_layer::LinearLayer::pool_bits`]):
    /// `|v| < 2^(max_bits(kind) + extra_bits)`.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] outside that range.
    pub fn check_big_with(&self, kind: ValueKind, v: &BigInt, extra_bits: u32) -> Result<i128> {
        if extra_bits == 0 {
            return self.check_big(kind, v);
        }
        let max_bits = self.max_bits(kind) + extra_bits;
        match v.to_i128() {
            Some(x) if v.bits() <= u64::from(max_bits) && max_bits < 127 => Ok(x),
            _ => Err(Error::OutOfRange {
                kind,
                value: v.to_string(),
                max_bits,
            }),
        }
    }

    /// Rescales `v` from kind `from` to kind `to` (exact when the target scale is finer,
    /// [`round_shift`] when it is coarser), then checks the target range.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the exact scaling overflows; [`Error::OutOfRange`] outside
    /// the range of `to`.
    pub fn rescale(&self, v: i128, from: ValueKind, to: ValueKind) -> Result<i128> {
        let (ff, ft) = (self.frac_bits(from), self.frac_bits(to));
        let r = if ft >= ff {
            shl_checked(v, ft - ff)?
        } else {
            round_shift(v, ff - ft)?
        };
        self.check(to, r)
    }

    /// The range check of `η` (must be positive, at `2^fe`).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for `η ≤ 0` or `η ≥ 2^(fe + limits.learning_rate)`.
    pub fn check_learning_rate(&self, eta: i128) -> Result<i128> {
        if eta <= 0 {
            return Err(Error::OutOfRange {
                kind: ValueKind::LearningRate,
                value: eta.to_string(),
                max_bits: self.max_bits(ValueKind::LearningRate),
            });
        }
        self.check(ValueKind::LearningRate, eta)
    }
}

/// `2^e` as `f64`.
fn pow2(e: u32) -> f64 {
    2f64.powi(e as i32)
}

/// `x · 2^s`, checked.
///
/// # Errors
/// [`Error::Overflow`].
pub fn shl_checked(x: i128, s: u32) -> Result<i128> {
    let overflow = Error::Overflow { op: "shift left" };
    if s >= 127 {
        return if x == 0 { Ok(0) } else { Err(overflow) };
    }
    let r = x.checked_mul(1i128 << s).ok_or(overflow)?;
    Ok(r)
}

/// `x / 2^s` rounded to nearest, ties away from zero: the project's one integer rounding
/// rule (docs/DESIGN.md; used for `δ_i = q·f'` and for the gradients as sent).
///
/// # Errors
/// [`Error::Overflow`] only for `|x|` within `2^(s−1)` of `i128::MAX`.
pub fn round_shift(x: i128, s: u32) -> Result<i128> {
    if s == 0 {
        return Ok(x);
    }
    if s >= 127 {
        return Ok(0);
    }
    let half = 1i128 << (s - 1);
    let mag = x.unsigned_abs();
    let rounded = mag
        .checked_add(half as u128)
        .ok_or_else(Error::overflow("round shift"))?
        >> s;
    // rounded < 2^127: fits.
    let r = rounded as i128;
    Ok(if x < 0 { -r } else { r })
}
