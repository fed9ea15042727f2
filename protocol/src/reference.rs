//! The plaintext reference trainer: the same fixed-point arithmetic as the encrypted run,
//! without encryption. It is the project's plaintext baseline and the oracle of the
//! exactness tests.
//!
//! It follows the session structure of the encrypted run: a session of client `c` with
//! `d` iterations draws `d` mini-batches from `c`'s [`BatchSampler`] (seeded with
//! [`sampler_seed`] of the client's seed, as the client does) and applies
//! `w ← w − η·Δw` after each iteration. By the Alg. 5 invariant this gives the weights the
//! encrypted run has after each session, bit for bit.

use crate::data::{sampler_seed, BatchSampler, Dataset};
use crate::fixed::Scales;
use crate::math::FixedModel;
use crate::schedule::SessionPlan;
use crate::spec::ModelSpec;
use crate::{Error, Result};

/// Plaintext fixed-point trainer over several clients' data.
#[derive(Clone, Debug)]
pub struct ReferenceTrainer {
    scales: Scales,
    eta: i128,
    model: FixedModel,
    clients: Vec<(Dataset, BatchSampler)>,
}

impl ReferenceTrainer {
    /// A trainer whose model is [`FixedModel::init`]`(spec, scales, model_seed)` (the
    /// server's initialization), `η` at `2^fe`, and one `(dataset, client seed)` per
    /// client.
    ///
    /// # Errors
    /// Spec, scale and range errors; [`Error::InvalidConfig`] for a batch larger than a
    /// client's data.
    pub fn new(
        spec: &ModelSpec,
        scales: Scales,
        model_seed: u64,
        eta: i128,
        batch: usize,
        clients: Vec<(Dataset, u64)>,
    ) -> Result<Self> {
        scales.validate()?;
        scales.check_learning_rate(eta)?;
        let model = FixedModel::init(spec, &scales, model_seed)?;
        let clients = clients
            .into_iter()
            .map(|(d, seed)| {
                let s = BatchSampler::new(d.len(), batch, sampler_seed(seed))?;
                Ok((d, s))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            scales,
            eta,
            model,
            clients,
        })
    }

    /// The current model.
    pub fn model(&self) -> &FixedModel {
        &self.model
    }

    /// The scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// One session: `plan.iterations` mini-batches of `plan.client`, one SGD step each at
    /// the trainer's `η`. All or nothing: on error the model and the sampler are
    /// unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown client; the math's errors.
    pub fn run_session(&mut self, plan: SessionPlan) -> Result<()> {
        self.run_session_at(plan, self.eta)
    }

    /// [`Self::run_session`] at the session's rate `η_s` (at `2^fe`, at most the
    /// trainer's `η`: [`crate::LearningRateSchedule::eta_at`]).
    ///
    /// # Errors
    /// As [`Self::run_session`]; [`Error::OutOfRange`] for `η_s ≤ 0` or beyond the scales'
    /// range.
    pub fn run_session_at(&mut self, plan: SessionPlan, eta: i128) -> Result<()> {
        self.scales.check_learning_rate(eta)?;
        let (data, sampler) =
            self.clients
                .get(plan.client)
                .ok_or_else(|| Error::InvalidConfig {
                    reason: format!("no client {}", plan.client),
                })?;
        let mut sampler = sampler.clone();
        let mut model = self.model.clone();
        for _ in 0..plan.iterations {
            let idx = sampler.next_batch();
            let (x, labels) = data.select(&idx);
            let grads = model.gradients(&self.scales, x.view(), &labels)?;
            model.apply_update(&self.scales, eta, &grads)?;
        }
        self.model = model;
        self.clients[plan.client].1 = sampler;
        Ok(())
    }
}
