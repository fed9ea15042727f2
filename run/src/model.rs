//! Model and training options: the architecture, the optimizer, the mask, the scheduler
//! and the stop rule ([`gelunet_server::StopRule`]) of `train`, `train --plaintext` and
//! `serve`.

use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{
    Activation, ClientOrder, LearningRateSchedule, MaskMode, ModelSpec, Scales, SessionLength,
    SessionPolicy,
};
use gelunet_server::{InsecureOptions, ServerConfig, ServerError, StopRule};

use crate::data::derive_seed;
use crate::defaults::{defaults_for, largest_batch_size, CSV_DEFAULTS};
use crate::keys::KeyOptions;
use crate::{Result, RunError};

/// Model and training options (the server's side of the configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Hidden-layer widths (each positive).
    pub hidden: Vec<usize>,
    /// `--arch`: a named or written architecture ([`gelunet_protocol::arch`]), which
    /// replaces `hidden` and `activation`; `None`: the dense `[inputs, hidden…, classes]`.
    pub arch: Option<Arch>,
    /// Hidden-layer activation.
    pub activation: Activation,
    /// Epoch limit (`--epochs`; an epoch: as many samples as the clients hold together,
    /// processed in completed sessions). See [`ModelOptions::stop_rule`]; with neither
    /// limit, [`ModelOptions::resolve`] sets the dataset's default
    /// ([`crate::defaults_for`]).
    pub epochs: Option<u32>,
    /// Session limit (`--sessions`, completed sessions). See [`ModelOptions::stop_rule`].
    pub sessions: Option<u64>,
    /// Mini-batch size `B` (sessions have `d·B ≤` the smallest fan-in samples); `None`:
    /// the largest the session bound and the packing allow
    /// ([`crate::largest_batch_size`], set by [`ModelOptions::resolve`]).
    pub batch_size: Option<usize>,
    /// Learning rate `η` (real, positive); `None`: the dataset's default
    /// ([`crate::defaults_for`], set by [`ModelOptions::resolve`]).
    pub lr: Option<f64>,
    /// `--lr-schedule`: how each session's rate falls from `η` with the epochs completed
    /// ([`gelunet_protocol::learning_rate`]; constant by default).
    pub lr_schedule: LearningRateSchedule,
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
            arch: None,
            activation: Activation::Sigmoid,
            epochs: None,
            sessions: None,
            batch_size: None,
            lr_schedule: LearningRateSchedule::Constant,
            lr: None,
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

    /// The mini-batch size: `--batch-size`, else 1 (a resolved configuration,
    /// [`ModelOptions::resolve`], always has one).
    pub fn batch(&self) -> usize {
        self.batch_size.unwrap_or(1)
    }

    /// The learning rate: `--lr`, else the [`CSV_DEFAULTS`] one (a resolved
    /// configuration, [`ModelOptions::resolve`], always has one).
    pub fn learning_rate(&self) -> f64 {
        self.lr.unwrap_or(CSV_DEFAULTS.lr)
    }

    /// Fills every value not given: with neither `--epochs` nor `--sessions` the
    /// dataset's default epochs, the dataset's default learning rate
    /// ([`crate::defaults_for`] of `dataset`, the name as given), and the largest batch
    /// size [`crate::largest_batch_size`] allows for `[inputs, hidden…, classes]` with
    /// clients' keys of `keys.key_bits` bits. Returns the resolved options and one note
    /// per default used, for the report. Values given explicitly are kept, so a run with
    /// every value given trains what it trained before the defaults existed.
    ///
    /// # Errors
    /// [`RunError::Protocol`] for an invalid spec.
    pub fn resolve(
        &self,
        dataset: Option<&str>,
        (inputs, classes): (usize, usize),
        keys: &KeyOptions,
    ) -> Result<(ModelOptions, Vec<String>)> {
        let d = defaults_for(dataset);
        let mut out = self.clone();
        let mut notes = Vec::new();
        if self.epochs.is_none() && self.sessions.is_none() {
            out.epochs = Some(d.epochs);
            notes.push(format!("{} epochs ({} default)", d.epochs, d.dataset));
        }
        if self.lr.is_none() {
            out.lr = Some(d.lr);
            notes.push(format!("learning rate {} ({} default)", d.lr, d.dataset));
        }
        if self.batch_size.is_none() {
            let spec = self.spec(inputs, classes)?;
            let b = largest_batch_size(&spec, &Scales::default(), keys.key_bits);
            out.batch_size = Some(b);
            notes.push(format!(
                "batch size {b} (the largest the session bound and the packing allow)"
            ));
        }
        Ok((out, notes))
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
        if self.batch_size == Some(0) {
            return Err(RunError::option("--batch-size", "must be at least 1"));
        }
        if self.protocol == Protocol::V2 && !matches!(self.mask, MaskMode::Statistical { .. }) {
            return Err(RunError::option(
                "--mask",
                "protocol v2 works with the statistical mask only; add --protocol paper for the paper's uniform mask",
            ));
        }
        if let Some(lr) = self.lr {
            check_learning_rate(lr, &Scales::default())?;
        }
        Ok(rule)
    }

    /// `[inputs, hidden…, classes]` with the chosen activation.
    ///
    /// # Errors
    /// [`RunError::Protocol`] for an invalid spec.
    ///
    /// With `--arch`, the spec of that architecture ([`ModelSpec::from_arch`]) on the
    /// data's image shape: `1 × s × s` for `inputs = s²` features (MNIST's `1×28×28`).
    /// [`RunError::InvalidOption`] (`--arch`) for data that is not a square image, an
    /// architecture that does not fit it, or an output layer of another width than
    /// `classes`.
    pub fn spec(&self, inputs: usize, classes: usize) -> Result<ModelSpec> {
        if let Some(arch) = &self.arch {
            let side = (inputs as f64).sqrt().round() as usize;
            if side * side != inputs {
                return Err(RunError::option(
                    "--arch",
                    format!(
                        "needs image data (a square single-channel input); the data has \
                         {inputs} features"
                    ),
                ));
            }
            let input = Shape {
                channels: 1,
                height: side,
                width: side,
            };
            let spec = ModelSpec::from_arch(arch, input)
                .map_err(|e| RunError::option("--arch", format!("`{arch}` on {input}: {e}")))?;
            if spec.classes() != classes {
                return Err(RunError::option(
                    "--arch",
                    format!(
                        "`{arch}` ends in {} classes, the data has {classes}",
                        spec.classes()
                    ),
                ));
            }
            return Ok(spec);
        }
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
        let mut cfg = ServerConfig::new(spec, self.learning_rate(), self.batch());
        cfg.lr_schedule = self.lr_schedule;
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

/// `--lr`: a positive number whose value at the learning rate's scale `2^fe` is at least 1
/// and below `2^max_bits(LearningRate)` (docs/DESIGN.md "Fixed-point numbers"), checked
/// before any data is loaded.
///
/// # Errors
/// [`RunError::InvalidOption`] (`--lr`) for NaN, ±∞, zero, a negative rate, a rate that
/// rounds to 0 at `2^fe` or one at or above `2^(max_bits − fe)`; the message gives the
/// usable range.
fn check_learning_rate(lr: f64, scales: &Scales) -> Result<()> {
    use gelunet_protocol::ValueKind;
    let fe = scales.frac_bits(ValueKind::LearningRate);
    let top = scales.max_bits(ValueKind::LearningRate) - fe;
    let (low, high) = (0.5f64.powi(fe as i32), 2f64.powi(top as i32));
    let range = format!("from 2^-{fe} ({low:.3e}) to below 2^{top} ({high})");
    if !(lr.is_finite() && lr > 0.0) {
        return Err(RunError::option(
            "--lr",
            format!("{lr:?}: must be a positive number {range}"),
        ));
    }
    // The protocol's own range check of `η` (positive, below `2^max_bits`) decides; this
    // only words its refusal for the option.
    match scales.encode(ValueKind::LearningRate, lr) {
        Ok(eta) if scales.check_learning_rate(eta).is_ok() => Ok(()),
        Ok(_) => Err(RunError::option(
            "--lr",
            format!("{lr:?} rounds to 0 at the learning rate's scale 2^-{fe}: it must be {range}"),
        )),
        Err(_) => Err(RunError::option(
            "--lr",
            format!("{lr:?} is too large: it must be {range}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_fills_only_what_was_not_given() {
        let keys = KeyOptions::default();
        let (iris, notes) = ModelOptions::default()
            .resolve(Some("iris"), (4, 3), &keys)
            .unwrap();
        assert_eq!(
            (iris.epochs, iris.batch_size, iris.lr),
            (Some(8), Some(4), Some(0.2))
        );
        assert_eq!(notes.len(), 3, "{notes:?}");
        let given = ModelOptions {
            epochs: Some(1),
            batch_size: Some(1),
            lr: Some(0.5),
            ..ModelOptions::default()
        };
        let (same, notes) = given.resolve(Some("iris"), (4, 3), &keys).unwrap();
        assert_eq!(same, given);
        assert!(notes.is_empty(), "{notes:?}");
        // --sessions alone: no epoch limit is added.
        let sessions = ModelOptions {
            sessions: Some(5),
            ..ModelOptions::default()
        };
        let (r, _) = sessions.resolve(Some("csv:x.csv"), (38, 2), &keys).unwrap();
        assert_eq!((r.epochs, r.batch_size), (None, Some(12)));
        assert_eq!(r.lr, Some(crate::CSV_DEFAULTS.lr));
    }

    #[test]
    fn learning_rates_outside_the_scale_are_refused_with_the_range() {
        let m = |lr| ModelOptions {
            lr: Some(lr),
            ..ModelOptions::default()
        };
        for (lr, says) in [
            (f64::NAN, "NaN: must be a positive number from 2^-16"),
            (f64::INFINITY, "inf: must be a positive number"),
            (0.0, "0.0: must be a positive number"),
            (-1.0, "-1.0: must be a positive number"),
            (
                1e-30,
                "1e-30 rounds to 0 at the learning rate's scale 2^-16",
            ),
            (
                16.0,
                "16.0 is too large: it must be from 2^-16 (1.526e-5) to below 2^4 (16)",
            ),
        ] {
            match m(lr).validate() {
                Err(RunError::InvalidOption { option, reason }) => {
                    assert_eq!(option, "--lr");
                    assert!(reason.contains(says), "{lr}: {reason}");
                }
                other => panic!("{lr}: {other:?}"),
            }
        }
        // The ends of the range are accepted: 2^-16 (η = 1) and just below 16.
        for lr in [0.5f64.powi(16), 15.99, 0.01] {
            assert!(m(lr).validate().is_ok(), "{lr}");
        }
    }

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
