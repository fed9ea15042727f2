//! When training stops: one rule for `gelunet train`, `gelunet serve` and
//! `gelunet train --plaintext` (the coordinator and the plaintext replay both ask it).
//!
//! # Meaning of the limits
//!
//! - `epochs` only: stop once the samples processed in *completed* sessions reach the
//!   epoch target `⌈epochs × samples held by the registered clients⌉`.
//! - `max_sessions` only: stop after that many completed sessions.
//! - both: stop at whichever limit is reached first.
//! - neither: one epoch.
//!
//! A limit of zero (or a negative, infinite or NaN number of epochs) would train nothing
//! and is refused by [`StopRule::new`] before any key is generated.

use std::fmt;

use crate::error::{Result, ServerError};

/// The stop rule of a training run (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopRule {
    epochs: Option<f64>,
    max_sessions: Option<u64>,
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// `max_sessions` sessions completed.
    Sessions {
        /// The limit reached.
        sessions: u64,
    },
    /// The epoch target was reached.
    Samples {
        /// The target `⌈epochs × samples held⌉` reached.
        target: u64,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sessions { sessions } => write!(f, "{sessions} sessions completed"),
            Self::Samples { target } => write!(f, "{target} samples processed"),
        }
    }
}

impl StopRule {
    /// The rule for `epochs` and `max_sessions` (module docs; neither given: one epoch).
    ///
    /// # Errors
    /// [`ServerError::Config`] for `epochs` that is zero, negative, infinite or NaN, or a
    /// `max_sessions` of zero.
    pub fn new(epochs: Option<f64>, max_sessions: Option<u64>) -> Result<Self> {
        if let Some(e) = epochs {
            if !(e.is_finite() && e > 0.0) {
                return Err(ServerError::Config {
                    reason: format!("epochs must be a positive number, got {e}"),
                });
            }
        }
        if max_sessions == Some(0) {
            return Err(ServerError::Config {
                reason: "the session limit must be at least 1".into(),
            });
        }
        let epochs = match (epochs, max_sessions) {
            (None, None) => Some(1.0),
            (e, _) => e,
        };
        Ok(Self {
            epochs,
            max_sessions,
        })
    }

    /// The epoch limit, if any.
    pub fn epochs(&self) -> Option<f64> {
        self.epochs
    }

    /// The session limit, if any.
    pub fn max_sessions(&self) -> Option<u64> {
        self.max_sessions
    }

    /// The epoch target in samples, `⌈epochs × held⌉`, for clients holding `held`
    /// training samples together; `None` when the run is bound by sessions only.
    pub fn target_samples(&self, held: u64) -> Option<u64> {
        self.epochs.map(|e| (e * held as f64).ceil() as u64)
    }

    /// Why training stops after `completed` completed sessions that processed `samples`
    /// samples, for clients holding `held` samples; `None` to go on. The session limit is
    /// checked first.
    pub fn check(&self, completed: u64, samples: u64, held: u64) -> Option<StopReason> {
        if let Some(m) = self.max_sessions {
            if completed >= m {
                return Some(StopReason::Sessions { sessions: m });
            }
        }
        match self.target_samples(held) {
            Some(t) if samples >= t => Some(StopReason::Samples { target: t }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_one_epoch() {
        let r = StopRule::new(None, None).unwrap();
        assert_eq!(r.target_samples(120), Some(120));
        assert_eq!(r.check(3, 119, 120), None);
        assert_eq!(
            r.check(3, 120, 120),
            Some(StopReason::Samples { target: 120 })
        );
    }

    #[test]
    fn sessions_only_ignores_epochs() {
        let r = StopRule::new(None, Some(7)).unwrap();
        assert_eq!(r.target_samples(120), None);
        assert_eq!(r.check(6, 10_000, 120), None);
        assert_eq!(
            r.check(7, 0, 120).unwrap().to_string(),
            "7 sessions completed"
        );
    }

    #[test]
    fn both_stop_at_whichever_comes_first() {
        let r = StopRule::new(Some(100.0), Some(7)).unwrap();
        assert_eq!(
            r.check(7, 18, 120),
            Some(StopReason::Sessions { sessions: 7 })
        );
        let r = StopRule::new(Some(0.1), Some(7)).unwrap();
        assert_eq!(
            r.check(3, 12, 120).unwrap().to_string(),
            "12 samples processed"
        );
    }

    #[test]
    fn refuses_limits_that_train_nothing() {
        for e in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                StopRule::new(Some(e), None),
                Err(ServerError::Config { .. })
            ));
        }
        assert!(matches!(
            StopRule::new(Some(1.0), Some(0)),
            Err(ServerError::Config { .. })
        ));
    }
}
