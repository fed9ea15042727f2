//! Model and training options: the architecture, the optimizer, the mask, the scheduler
//! and the stop rule ([`gelunet_server::StopRule`]) of `train`, `train --plaintext` and
//! `serve`.

use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{
    Activation, ClientOrder, MaskMode, ModelSpec, SessionLength, SessionPolicy,
};
use gelunet_server::{InsecureOptions, ServerConfig, ServerError, StopRule};

use crate::data::derive_seed;
use crate::keys::KeyOptions;
use crate::{Result, RunError};

/// Model and training options (the server's side of the configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Hidden-layer widths (each positive).
    pub hidden: Vec<usize>,
    /// Hidden-layer activation.
    pub activation: Activation,
    /// Epoch limit (`--epochs`; an epoch: as many samples as the clients hold together,
    /// processed in completed sessions). See [`ModelOptions::stop_rule`].
    pub epochs: Option<u32>,
    /// Session limit (`--sessions`, completed sessions). See [`ModelOptions::stop_rule`].
    pub sessions: Option<u64>,
    /// Mini-batch size `B` (sessions have `d·B ≤` the smallest fan-in samples).
    pub batch_size: usize,
    /// Learning rate `η` (real, positive).
    pub lr: f64,
    /// Gradient mask (docs/DESIGN.md "Masked update").
    pub mask: MaskMode,
    /// Client order of the session scheduler.
    pub order: ClientOrder,
    /// Seed of the data split, the weight initialization and the scheduler.
    pub seed: u64,
    /// The protocol (`--protocol`; v2 by default, docs/DESIGN.md "Protocol v2").
    pub protocol: Protocol,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            hidden: vec![12],
            activation: Activation::Sigmoid,
            epochs: None,
            sessions: None,
            batch_size: 1,
            lr: 0.5,
            mask: MaskMode::default(),
            order: ClientOrder::RoundRobin,
            seed: 1,
            protocol: Protocol::V2,
        }
    }
}

/// Lower-case name of an activation, as in the reports.
pub fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Sigmoid => "sigmoid",
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
        Activation::Identity => "identity",
    }
}

/// Lower-case name of a mask, as in the reports.
pub fn mask_name(m: MaskMode) -> &'static str {
    match m {
        MaskMode::Statistical { .. } => "statistical",
        MaskMode::Uniform => "uniform",
        MaskMode::InsecureNone => "none",
    }
}

impl ModelOptions {
    /// The stop rule of the run (`gelunet_server::StopRule`, server/src/stop.rs):
    /// `--epochs` only → the epoch target; `--sessions` only → that many completed
    /// sessions; both → whichever comes first; neither → one epoch.
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] for `--epochs 0` or `--sessions 0` (they would train
    /// nothing).
    pub fn stop_rule(&self) -> Result<StopRule> {
        StopRule::new(self.epochs.map(f64::from), self.sessions).map_err(|e| {
            let option = if self.sessions == Some(0) {
                "--sessions"
            } else {
                "--epochs"
            };
            let reason = match e {
                ServerError::Config { reason } => reason,
                other => other.to_string(),
            };
            RunError::option(option, reason)
        })
    }

    /// The epoch limit as the reports state it: `--epochs`, or 1 when neither limit is
    /// given; `None` for a run bound by `--sessions` alone.
    pub fn epoch_limit(&self) -> Option<u32> {
        match (self.epochs, self.sessions) {
            (None, None) => Some(1),
            (e, _) => e,
        }
    }

    /// Checks the values, the stop rule included (before any key is generated).
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] naming the bad option.
    pub fn validate(&self) -> Result<StopRule> {
        if self.hidden.contains(&0) {
            return Err(RunError::option("--hidden", "widths must be positive"));
        }
        let rule = self.stop_rule()?;
        if self.batch_size == 0 {
            return Err(RunError::option("--batch-size", "must be at least 1"));
        }
        if self.protocol == Protocol::V2 && !matches!(self.mask, MaskMode::Statistical { .. }) {
            return Err(RunError::option(
                "--mask",
                "protocol v2 works with the statistical mask only; add --protocol paper for the paper's uniform mask",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(RunError::option(
                "--lr",
                format!("{}: must be a positive number", self.lr),
            ));
        }
        Ok(rule)
    }

    /// `[inputs, hidden…, classes]` with the chosen activation.
    ///
    /// # Errors
    /// [`RunError::Protocol`] for an invalid spec.
    pub fn spec(&self, inputs: usize, classes: usize) -> Result<ModelSpec> {
        let mut widths = vec![inputs];
        widths.extend(&self.hidden);
        widths.push(classes);
        let spec = ModelSpec::new(widths, self.activation);
        spec.validate().map_err(RunError::protocol("model"))?;
        Ok(spec)
    }

    /// The server role's configuration: model seed `seed`, schedule seed
    /// `derive_seed(seed, 0x5c4e_d01e)`, a fresh random role seed, random session lengths
    /// within the bound, and test keys accepted from peers exactly when `keys` are test
    /// keys.
    pub fn server_config(&self, spec: ModelSpec, keys: &KeyOptions) -> ServerConfig {
        let mut cfg = ServerConfig::new(spec, self.lr, self.batch_size);
        cfg.mask = self.mask;
        cfg.protocol = self.protocol;
        cfg.model_seed = self.seed;
        cfg.schedule_seed = derive_seed(self.seed, 0x5c4e_d01e);
        // The server's [η]_s randomness from the operating system (256 bits).
        cfg.rng_seed = None;
        cfg.policy = SessionPolicy {
            order: self.order,
            length: SessionLength::Random,
            ..SessionPolicy::default()
        };
        cfg.insecure = InsecureOptions {
            allow_test_keys: keys.test_keys(),
            allow_unmasked_gradients: false,
        };
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_train_nothing_are_refused() {
        let m = |epochs, sessions| ModelOptions {
            epochs,
            sessions,
            ..ModelOptions::default()
        };
        for (e, s, option) in [
            (Some(0), None, "--epochs"),
            (Some(0), Some(5), "--epochs"),
            (None, Some(0), "--sessions"),
            (Some(3), Some(0), "--sessions"),
        ] {
            match m(e, s).validate() {
                Err(RunError::InvalidOption { option: o, .. }) => assert_eq!(o, option),
                other => panic!("{e:?} {s:?}: {other:?}"),
            }
        }
        let rule = m(None, Some(5)).validate().unwrap();
        assert_eq!(
            rule.target_samples(120),
            None,
            "--sessions alone: no epoch target"
        );
        assert_eq!(m(None, Some(5)).epoch_limit(), None);
        assert_eq!(m(None, None).epoch_limit(), Some(1));
        let rule = m(Some(100), Some(7)).validate().unwrap();
        assert_eq!(rule.max_sessions(), Some(7));
        assert_eq!(rule.target_samples(120), Some(12_000));
    }
}
