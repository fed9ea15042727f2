//! Which client trains next and for how many iterations (paper §4.1, docs/DESIGN.md "Sessions
//! and the d_max bound").
//!
//! A session is `d` iterations of `B` samples. The client learns one linear equation per
//! output neuron per sample in the `n_i + 1` unknowns of a row (plus `η`), so the server
//! keeps `d·B ≤ min_i n_i` (the smallest fan-in).
//!
//! # The lower bound: at least two samples per session
//!
//! The server holds true weights between sessions, so Alg. 5 tells it each session's
//! summed gradient `w^F − w^I = −η·Σ Δw`. With a single sample in the session
//! (`d·B = 1`) that is one outer product `δ_1·xᵀ`, and the server rebuilds the input
//! exactly: `x = Δw_1[j,:] / Δb_1[j]` for any row `j` with `Δb_1[j] ≠ 0` (the
//! gradient-inversion attack of paper §4.3, which the masks of Alg. 3 do *not* stop
//! because Alg. 5 reveals the sum). The paper draws `d_max` from the open interval
//! `(1, m + 2)`, i.e. at least 2. So the scheduler also keeps `d·B ≥ s_min`
//! ([`SessionPolicy::min_samples`], default [`DEFAULT_MIN_SESSION_SAMPLES`] = 2):
//!
//! ```text
//! s_min ≤ d·B ≤ min_i n_i,      d uniform on ⌈s_min / B⌉ ..= ⌊min_i n_i / B⌋
//! ```
//!
//! A configuration where no `d` satisfies both (`min fan-in < s_min`, or a fixed `d` with
//! `d·B < s_min`) is refused ([`Error::SessionMinimum`]) unless
//! [`SessionPolicy::insecure_allow_few_samples`] is set (the attack demos).
//!
//! **Residual leak.** Even with `d·B ≥ 2`, the server learns `Σ_s δ_s·x_sᵀ` for the
//! session's samples: every row of the first layer's summed gradient lies in the span of
//! the session's inputs `x_1 … x_{dB}`, so the server learns that span (a `dB`-dimensional
//! subspace of the input space), and any input known to be in the session can be tested
//! against it. Mixing several samples hides the individual inputs, not their span; larger
//! sessions (up to the upper bound) make the span less informative.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::spec::ModelSpec;
use crate::{Error, Result};

/// The order in which clients get sessions.
///
/// With the `clap` feature it is a `clap::ValueEnum` (`round-robin`, `random`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ClientOrder {
    /// `0, 1, …, K−1, 0, …`.
    #[default]
    RoundRobin,
    /// Uniformly random, from the scheduler's seed.
    #[cfg_attr(feature = "clap", value(name = "random"))]
    SeededRandom,
}

/// How many iterations a session has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SessionLength {
    /// `d` uniform on `⌈min_samples / B⌉..=⌊min fan-in / B⌋` (the default).
    #[default]
    Random,
    /// Always `d` iterations (must respect the bound unless the policy allows violations).
    Fixed(u32),
}

/// The default minimum number of samples per session (see the module docs).
pub const DEFAULT_MIN_SESSION_SAMPLES: u32 = 2;

/// The session policy of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// Client order.
    pub order: ClientOrder,
    /// Session length.
    pub length: SessionLength,
    /// Accept sessions longer than the bound (insecure: the client can solve for the
    /// weights, paper §4.1; the model-extraction demo needs it).
    pub insecure_allow_bound_violation: bool,
    /// The least number of samples `d·B` a session may have (default
    /// [`DEFAULT_MIN_SESSION_SAMPLES`]; see the module docs).
    pub min_samples: u32,
    /// Accept sessions with fewer than `min_samples` samples (insecure: with one sample the
    /// server rebuilds the input from Alg. 5; the gradient-inversion demo needs it).
    pub insecure_allow_few_samples: bool,
}

impl Default for SessionPolicy {
    /// Round-robin, random `d` within both bounds, at least
    /// [`DEFAULT_MIN_SESSION_SAMPLES`] samples per session, everything secure.
    fn default() -> Self {
        Self {
            order: ClientOrder::default(),
            length: SessionLength::default(),
            insecure_allow_bound_violation: false,
            min_samples: DEFAULT_MIN_SESSION_SAMPLES,
            insecure_allow_few_samples: false,
        }
    }
}

/// `⌊min_i n_i / B⌋`, the largest secure number of iterations per session.
pub fn session_bound(spec: &ModelSpec, batch: usize) -> usize {
    spec.min_fan_in().checked_div(batch).unwrap_or(0)
}

/// One planned session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPlan {
    /// Index of the client.
    pub client: usize,
    /// Number of iterations `d`.
    pub iterations: u32,
}

/// Seeded session planner, used by the server and by the reference trainer.
#[derive(Clone, Debug)]
pub struct Scheduler {
    policy: SessionPolicy,
    clients: usize,
    lower: usize,
    bound: usize,
    next_rr: usize,
    rng: ChaCha20Rng,
}

impl Scheduler {
    /// A scheduler for `clients` clients.
    ///
    /// # Errors
    /// [`Error::SessionBound`] if even one iteration breaks the bound (`B > min fan-in`)
    /// or a fixed length exceeds it, unless the policy allows violations;
    /// [`Error::SessionMinimum`] if no session length reaches `min_samples` within the
    /// bound (`min fan-in < min_samples`) or a fixed length falls below it, unless the
    /// policy allows few samples; [`Error::InvalidConfig`] for zero clients or a fixed
    /// length of 0.
    pub fn new(
        policy: SessionPolicy,
        spec: &ModelSpec,
        batch: usize,
        clients: usize,
        seed: u64,
    ) -> Result<Self> {
        if clients == 0 {
            return Err(Error::InvalidConfig {
                reason: "no clients".into(),
            });
        }
        if batch == 0 {
            return Err(Error::InvalidConfig {
                reason: "batch size 0".into(),
            });
        }
        let bound = session_bound(spec, batch);
        let min_samples = (policy.min_samples as usize).max(1);
        let lower = if policy.insecure_allow_few_samples {
            1
        } else {
            min_samples.div_ceil(batch)
        };
        let too_few = |iterations: usize| Error::SessionMinimum {
            iterations,
            batch,
            min_samples,
            min_fan_in: spec.min_fan_in(),
        };
        let too_many = |iterations: usize| Error::SessionBound {
            iterations,
            batch,
            min_fan_in: spec.min_fan_in(),
        };
        let (lower, upper) = match policy.length {
            SessionLength::Fixed(0) => {
                return Err(Error::InvalidConfig {
                    reason: "sessions of 0 iterations".into(),
                })
            }
            SessionLength::Fixed(d) => {
                let d = d as usize;
                if d > bound && !policy.insecure_allow_bound_violation {
                    return Err(too_many(d));
                }
                if d < lower {
                    return Err(too_few(d));
                }
                (d, d)
            }
            SessionLength::Random => {
                if bound == 0 && !policy.insecure_allow_bound_violation {
                    return Err(too_many(1));
                }
                if lower > bound {
                    if !policy.insecure_allow_bound_violation {
                        return Err(too_few(bound));
                    }
                    (lower, lower)
                } else {
                    (lower, bound.max(lower))
                }
            }
        };
        Ok(Self {
            policy,
            clients,
            lower,
            bound: upper,
            next_rr: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
        })
    }

    /// The largest number of iterations a random session may have.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// The smallest number of iterations a session may have (`⌈min_samples / B⌉`, or 1
    /// when few samples are allowed).
    pub fn lower_bound(&self) -> usize {
        self.lower
    }

    /// The next session.
    pub fn next_session(&mut self) -> SessionPlan {
        let client = match self.policy.order {
            ClientOrder::RoundRobin => {
                let c = self.next_rr;
                self.next_rr = (self.next_rr + 1) % self.clients;
                c
            }
            ClientOrder::SeededRandom => self.rng.gen_range(0..self.clients),
        };
        let iterations = match self.policy.length {
            SessionLength::Fixed(d) => d,
            SessionLength::Random => self.rng.gen_range(self.lower..=self.bound) as u32,
        };
        SessionPlan { client, iterations }
    }
}
