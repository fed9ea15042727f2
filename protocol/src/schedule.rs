//! Which client trains next and for how many iterations (paper §4.1, DESIGN.md "Sessions
//! and the d_max bound").
//!
//! A session is `d` iterations of `B` samples. The client learns one linear equation per
//! output neuron per sample in the `n_i + 1` unknowns of a row (plus `η`), so the server
//! keeps `d·B ≤ min_i n_i` (the smallest fan-in) and draws `d` uniformly from
//! `1..=⌊min_i n_i / B⌋`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::spec::ModelSpec;
use crate::{Error, Result};

/// The order in which clients get sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClientOrder {
    /// `0, 1, …, K−1, 0, …`.
    #[default]
    RoundRobin,
    /// Uniformly random, from the scheduler's seed.
    SeededRandom,
}

/// How many iterations a session has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SessionLength {
    /// `d` uniform on `1..=⌊min fan-in / B⌋` (the default).
    #[default]
    Random,
    /// Always `d` iterations (must respect the bound unless the policy allows violations).
    Fixed(u32),
}

/// The session policy of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionPolicy {
    /// Client order.
    pub order: ClientOrder,
    /// Session length.
    pub length: SessionLength,
    /// Accept sessions longer than the bound (insecure: the client can solve for the
    /// weights, paper §4.1; the model-extraction demo needs it).
    pub insecure_allow_bound_violation: bool,
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
    /// [`Error::InvalidConfig`] for zero clients or a fixed length of 0.
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
        let wanted = match policy.length {
            SessionLength::Random => 1,
            SessionLength::Fixed(0) => {
                return Err(Error::InvalidConfig {
                    reason: "sessions of 0 iterations".into(),
                })
            }
            SessionLength::Fixed(d) => d as usize,
        };
        if wanted > bound && !policy.insecure_allow_bound_violation {
            return Err(Error::SessionBound {
                iterations: wanted,
                batch,
                min_fan_in: spec.min_fan_in(),
            });
        }
        Ok(Self {
            policy,
            clients,
            bound: bound.max(1),
            next_rr: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
        })
    }

    /// The largest number of iterations a random session may have.
    pub fn bound(&self) -> usize {
        self.bound
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
            SessionLength::Random => self.rng.gen_range(1..=self.bound) as u32,
        };
        SessionPlan { client, iterations }
    }
}
