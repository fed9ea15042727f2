//! The learning-rate schedule: a public `η_s` per session, decreasing from the run's `η`.
//!
//! docs/DESIGN.md "Learning-rate schedule". The run's learning rate `η` (at `2^fe`, the
//! value of the handshake) is the largest any session uses; the server's coordinator
//! computes the session's rate from the training progress *before* the session,
//! `e = samples processed in completed sessions / samples held` (both public, the epoch
//! accounting of the stop rule), as
//!
//! | schedule | `η_s` |
//! | --- | --- |
//! | `constant` | `η` |
//! | `step:F:E` | `η · F^⌊e / E⌋` (multiply by `F ∈ (0, 1]` every `E` epochs) |
//! | `cosine:E` | `η · ½(1 + cos(π · min(e / E, 1)))` (cosine annealing to 0 over `E` epochs, Loshchilov & Hutter 2017) |
//!
//! rounded to the nearest integer at `2^fe` and at least 1, so `1 ≤ η_s ≤ η`: every mask
//! bound sized for `η` (`MaskMode::g_bits`) holds for every session. The rate is applied
//! once per session (every iteration of a session uses the same `η_s`): under protocol v2
//! it travels in plaintext in `SessionStart::learning_rate` (the client computes
//! `D = η_s·Δ + r` and refuses a rate outside `[1, η]`); under the paper's protocol the
//! server encrypts `η_s` as `[η]_s` and applies it in the final update (Alg. 5). The
//! plaintext reference ([`crate::ReferenceTrainer::run_session_at`]) and the replay
//! recompute it from the same progress, so a scheduled run stays bit for bit the
//! reference.
//!
//! ```
//! use gelunet_protocol::learning_rate::LearningRateSchedule;
//!
//! let s: LearningRateSchedule = "step:0.5:1".parse()?;
//! // 655 = 0.01 at 2^16; after 1.5 of 1,000 samples' epochs: halved once.
//! assert_eq!(s.eta_at(655, 1_500, 1_000), 328);
//! let c: LearningRateSchedule = "cosine:3".parse()?;
//! assert_eq!(c.eta_at(655, 0, 1_000), 655);
//! assert_eq!(c.eta_at(655, 3_000, 1_000), 1); // never 0
//! // A factor above 1 would raise the rate past the masks' bound: refused.
//! assert!("step:2:1".parse::<LearningRateSchedule>().is_err());
//! # Ok::<(), gelunet_protocol::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How `η_s` falls with the training progress (module docs). Public: the server's
/// configuration, its checkpoint fingerprint and the report carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LearningRateSchedule {
    /// `η_s = η` (the paper's fixed rate).
    #[default]
    Constant,
    /// `η_s = η · factor^⌊e / every_epochs⌋`.
    Step {
        /// The factor per step, in `(0, 1]`.
        factor: f64,
        /// Epochs per step, positive.
        every_epochs: f64,
    },
    /// `η_s = η · ½(1 + cos(π · min(e / epochs, 1)))`.
    Cosine {
        /// Epochs to anneal over, positive.
        epochs: f64,
    },
}

impl LearningRateSchedule {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a factor outside `(0, 1]` or a period that is not a
    /// positive finite number of epochs.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        match *self {
            Self::Constant => Ok(()),
            Self::Step {
                factor,
                every_epochs,
            } => {
                if !(factor > 0.0 && factor <= 1.0) {
                    return bad(format!(
                        "learning-rate step factor {factor} is not in (0, 1]"
                    ));
                }
                positive_epochs(every_epochs)
            }
            Self::Cosine { epochs } => positive_epochs(epochs),
        }
    }

    /// The factor `η_s / η` after `samples_done` of `samples_held` samples (`e = 0` when
    /// nothing is held), in `[0, 1]`. `pow` and `cos` are the `libm` crate's (pure Rust,
    /// only IEEE 754 basic operations), not the platform's C library, so that the
    /// server, the reference and the replay compute the same `η_s` on every platform.
    pub fn factor_at(&self, samples_done: u64, samples_held: u64) -> f64 {
        let e = if samples_held == 0 {
            0.0
        } else {
            samples_done as f64 / samples_held as f64
        };
        match *self {
            Self::Constant => 1.0,
            Self::Step {
                factor,
                every_epochs,
            } => libm::pow(factor, libm::floor(e / every_epochs)),
            Self::Cosine { epochs } => {
                0.5 * (1.0 + libm::cos(std::f64::consts::PI * (e / epochs).min(1.0)))
            }
        }
    }

    /// The session's rate `η_s` at `2^fe` for the run's rate `eta` (at `2^fe`, positive)
    /// after `samples_done` of `samples_held` samples: `max(1, round(η · factor))`, hence
    /// in `[1, η]`. Schedules that fail [`Self::validate`] are never constructed by
    /// [`FromStr`]; for one built by hand the result is still clamped to `[1, η]`.
    pub fn eta_at(&self, eta: i128, samples_done: u64, samples_held: u64) -> i128 {
        if matches!(self, Self::Constant) {
            return eta;
        }
        let f = self.factor_at(samples_done, samples_held);
        let v = (eta as f64 * f).round();
        if v.is_nan() || v < 1.0 {
            1
        } else if v >= eta as f64 {
            eta.max(1)
        } else {
            v as i128
        }
    }
}

fn positive_epochs(e: f64) -> Result<()> {
    if e.is_finite() && e > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            reason: format!("learning-rate schedule period {e} is not a positive number of epochs"),
        })
    }
}

impl fmt::Display for LearningRateSchedule {
    /// The syntax [`FromStr`] reads: `constant`, `step:F:E`, `cosine:E`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Constant => f.write_str("constant"),
            Self::Step {
                factor,
                every_epochs,
            } => write!(f, "step:{factor}:{every_epochs}"),
            Self::Cosine { epochs } => write!(f, "cosine:{epochs}"),
        }
    }
}

impl FromStr for LearningRateSchedule {
    type Err = Error;

    /// `constant`, `step:F:E` (factor `F ∈ (0, 1]` every `E` epochs) or `cosine:E`
    /// (annealing over `E` epochs).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for another word, a missing or extra field, a field that is
    /// not a number, and the failures of [`Self::validate`].
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str, what: &str| -> Result<f64> {
            p.trim().parse::<f64>().map_err(|_| Error::InvalidConfig {
                reason: format!("learning-rate schedule {s:?}: {what} {p:?} is not a number"),
            })
        };
        let schedule = match parts.as_slice() {
            ["constant"] => Self::Constant,
            ["step", f, e] => Self::Step {
                factor: num(f, "factor")?,
                every_epochs: num(e, "period")?,
            },
            ["cosine", e] => Self::Cosine {
                epochs: num(e, "period")?,
            },
            _ => {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "learning-rate schedule {s:?}: expected constant, step:FACTOR:EPOCHS \
                         or cosine:EPOCHS"
                    ),
                })
            }
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_fall_from_eta_and_never_reach_zero() {
        let step: LearningRateSchedule = "step:0.5:1".parse().unwrap();
        let cos: LearningRateSchedule = "cosine:2".parse().unwrap();
        let eta = 6554; // 0.1 at 2^16
        assert_eq!(step.eta_at(eta, 0, 100), eta);
        assert_eq!(step.eta_at(eta, 99, 100), eta);
        assert_eq!(step.eta_at(eta, 100, 100), 3277);
        assert_eq!(step.eta_at(eta, 250, 100), 1639);
        assert_eq!(cos.eta_at(eta, 100, 100), 3277);
        assert_eq!(cos.eta_at(eta, 10_000, 100), 1);
        let mut last = eta;
        for done in (0..=300).step_by(7) {
            let v = cos.eta_at(eta, done, 100);
            assert!((1..=last).contains(&v), "{done}: {v} after {last}");
            last = v;
        }
        assert_eq!(LearningRateSchedule::Constant.eta_at(eta, 10_000, 1), eta);
        assert_eq!(step.eta_at(eta, 5, 0), eta);
    }

    #[test]
    fn cosine_rates_over_a_run_are_pinned() {
        // LeNet-5's run: η = 0.01 at 2^16, 60,000 samples held, cosine over 15 epochs;
        // the η_s of sessions starting after 0, 1.5, 3, …, 15 epochs.
        let cos: LearningRateSchedule = "cosine:15".parse().unwrap();
        let held = 60_000;
        let got: Vec<i128> = (0..=60)
            .step_by(6)
            .map(|quarters: u64| cos.eta_at(655, quarters * held / 4, held))
            .collect();
        assert_eq!(got, [655, 639, 592, 520, 429, 328, 226, 135, 63, 16, 1]);
    }

    #[test]
    fn bad_schedules_are_refused_with_their_reason() {
        for (s, needle) in [
            ("linear:3", "expected constant"),
            ("step:0.5", "expected constant"),
            ("cosine", "expected constant"),
            ("cosine:3:1", "expected constant"),
            ("step:x:1", "factor \"x\" is not a number"),
            ("step:0:1", "not in (0, 1]"),
            ("step:1.5:1", "not in (0, 1]"),
            ("step:0.5:0", "not a positive number"),
            ("cosine:-1", "not a positive number"),
            ("cosine:inf", "not a positive number"),
            ("cosine:NaN", "not a positive number"),
        ] {
            let e = s.parse::<LearningRateSchedule>().unwrap_err();
            assert!(matches!(e, Error::InvalidConfig { .. }), "{s}: {e:?}");
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn the_display_form_parses_back() {
        for s in ["constant", "step:0.5:1", "step:0.25:0.5", "cosine:3"] {
            let v: LearningRateSchedule = s.parse().unwrap();
            assert_eq!(v.to_string(), s);
            assert_eq!(v.to_string().parse::<LearningRateSchedule>().unwrap(), v);
        }
    }
}
