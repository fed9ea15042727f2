//! Protocol v2 on the server (`docs/DESIGN.md` "Protocol v2"): the plaintext masked
//! update, the mask rollover that ends a session, and the release of a trained model.
//!
//! ```text
//! PlainUpdate { D_j }       W~ ← W~ − D_j                 every iteration but the last
//! Rollover { ν', D }        W~ ← W~ − D = W_{v+1} − P_{v+1},  (v, ν) ← (v + 1, ν')
//! release(v, s_v)           W_v = W~ + P_v, range-checked (the model in the clear)
//! ```
//!
//! The server never holds a true weight: `W~ = W_v − P_v` with `P_v` uniform on
//! `[0, 2^λ)` per parameter, and every `D` it sees is statistically hidden by a fresh
//! `r_j` or by `P_{v+1}`. Until the rollover the stored state is the session-start
//! `W~`, so an abandoned session restores it without copying, and any client may take
//! the next session. The masked weights are plain integers (not reduced mod any `N_c`),
//! so they are the same for every client key.
//!
//! 1. *Private input* (server): none.
//! 2. *Private input* (client): `Δ`, `r_j`, the ledger `R`, the group key.
//! 3. *Public input*: `W~`, `(v, ν_v)`, [`gelunet_protocol::v2::V2Params`].
//! 4. *Sent*: client → server [`PlainUpdate`], [`Rollover`]; server → client
//!    [`UpdateApplied`], [`SessionEnd`]. A release sends the per-version seed `s_v`
//!    (never the group key).
//!
//! # Range checks
//!
//! `|D_j| < 2^(σ+g+1)` for every plaintext update, `|D| < 2^(max(λ, σ+g) + 3 + log₂ d)`
//! for the rollover, and after the rollover every
//! `|W~| < 2^(λ+1)` (what `W_{v+1} ∈ (−2^B, 2^B)` and `P_{v+1} ∈ [0, 2^λ)` imply); a
//! message that breaks either is refused whole ([`ProtocolViolation::Range`]).

use gelunet_paillier::BigInt;
use gelunet_protocol::group_key::VersionSeed;
use gelunet_protocol::mask::MaskTarget;
use gelunet_protocol::messages::{ServerMessage, SessionEnd, UpdateApplied};
use gelunet_protocol::v2::{ModelVersion, PlainLayerUpdate, PlainUpdate, Rollover};
use gelunet_protocol::version_mask::VersionMasks;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{FixedModel, LayerParams, ValueKind};
use ndarray::{Array1, Array2};
use num_traits::Signed;

use crate::error::{Result, ServerError};
use crate::role::{expect_len, MaskedLayer, Phase, Server, SessionOutcome, V2State};

impl Server {
    fn v2_state(&self) -> Result<&V2State> {
        self.v2.as_ref().ok_or_else(|| {
            ProtocolViolation::OutOfTurn {
                expected: "a message of the paper's protocol".into(),
                found: "a protocol v2 update",
            }
            .into()
        })
    }

    /// `W~ − D` for every parameter, after checking the shapes and that every `|D|` has at
    /// most `max_bits` bits (weights) and `max_bits_b` bits (biases).
    fn subtract_plain(
        &self,
        masked: &[MaskedLayer],
        layers: &[PlainLayerUpdate],
        (max_bits_w, max_bits_b): (u64, u64),
    ) -> Result<Vec<MaskedLayer>> {
        let spec = &self.config.spec;
        expect_len("layers", spec.num_layers(), layers.len())?;
        let mut out = Vec::with_capacity(layers.len());
        for (i, (l, ml)) in layers.iter().zip(masked).enumerate() {
            let (m, n) = spec.param_shape(i + 1);
            expect_len("weight updates", m * n, l.weights.len())?;
            expect_len("bias updates", m, l.biases.len())?;
            let too_big = |d: &BigInt, max: u64, kind: ValueKind| {
                if d.bits() > max {
                    Err(ServerError::from(ProtocolViolation::Range {
                        kind: Some(kind),
                    }))
                } else {
                    Ok(())
                }
            };
            for d in &l.weights {
                too_big(d, max_bits_w, ValueKind::Weight)?;
            }
            for d in &l.biases {
                too_big(d, max_bits_b, ValueKind::Bias)?;
            }
            let dw = Array2::from_shape_vec((m, n), l.weights.clone()).map_err(|_| {
                ServerError::from(ProtocolViolation::Shape {
                    what: "weight updates",
                    expected: m * n,
                    found: l.weights.len(),
                })
            })?;
            let db = Array1::from(l.biases.clone());
            out.push(MaskedLayer {
                w: &ml.w - &dw,
                b: &ml.b - &db,
            });
        }
        Ok(out)
    }

    /// Step 3 of a v2 session: `W~ ← W~ − D_j` with `D_j = η·Δ_j + r_j` in plaintext;
    /// moves the session to the next iteration.
    ///
    /// # Errors
    /// [`ProtocolViolation`]s: out of turn (also under the paper's protocol), wrong
    /// session or iteration, shapes, `|D_j| ≥ 2^(σ+g+1)`. State unchanged on error.
    pub(crate) fn plain_update(&mut self, m: &PlainUpdate) -> Result<ServerMessage> {
        let params = self.v2_state()?.params;
        let s = self.check_update_turn(m.session, m.iteration, "PlainUpdate", false)?;
        let scales = &self.config.scales;
        let bits = (
            u64::from(params.update_mask_bits(scales, MaskTarget::Weight)) + 1,
            u64::from(params.update_mask_bits(scales, MaskTarget::Bias)) + 1,
        );
        let new_masked = self.subtract_plain(&s.masked, &m.layers, bits)?;
        let s = self
            .session
            .as_mut()
            .ok_or(ServerError::Violation(ProtocolViolation::NoSession))?;
        s.masked = new_masked;
        s.iteration += 1;
        s.phase = Phase::Forward(1);
        Ok(ServerMessage::UpdateApplied(UpdateApplied {
            session: m.session,
            iteration: m.iteration,
        }))
    }

    /// Step 4: the last iteration's update, `W~ ← W~ − D = W_{v+1} − P_{v+1}`, then
    /// `(v, ν) ← (v + 1, ν')`; the session is over and its state is the new stored state.
    ///
    /// # Errors
    /// As [`Server::plain_update`], and [`ProtocolViolation::Range`] if a resulting
    /// `|W~|` reaches `2^(λ+1)`. State unchanged on error.
    pub(crate) fn rollover(&mut self, m: &Rollover) -> Result<ServerMessage> {
        let state = self.v2_state()?;
        let (params, from) = (state.params, state.version);
        let s = self.check_update_turn(m.session, m.iteration, "Rollover", true)?;
        let (lw, lb) = (
            u64::from(params.widths.weight_bits),
            u64::from(params.widths.bias_bits),
        );
        // |D| = |η·Δ + P' − R| < 2^g + 2^λ + |R|, and R = P_v + Σ r_j < 2^λ + d·2^(σ+g).
        let scales = &self.config.scales;
        let rw = u64::from(params.update_mask_bits(scales, MaskTarget::Weight));
        let rb = u64::from(params.update_mask_bits(scales, MaskTarget::Bias));
        let slack = 3 + u64::from(32 - s.iterations.leading_zeros());
        let new_masked = self.subtract_plain(
            &s.masked,
            &m.layers,
            (lw.max(rw) + slack, lb.max(rb) + slack),
        )?;
        for l in &new_masked {
            if l.w.iter().any(|w| w.abs().bits() > lw + 1) {
                return Err(ProtocolViolation::Range {
                    kind: Some(ValueKind::Weight),
                }
                .into());
            }
            if l.b.iter().any(|b| b.abs().bits() > lb + 1) {
                return Err(ProtocolViolation::Range {
                    kind: Some(ValueKind::Bias),
                }
                .into());
            }
        }
        let s = self
            .session
            .take()
            .ok_or(ServerError::Violation(ProtocolViolation::NoSession))?;
        if let Some(v2) = self.v2.as_mut() {
            v2.masked = new_masked;
            v2.version = ModelVersion {
                version: from.version + 1,
                nonce: m.nonce,
            };
        }
        self.history.push(SessionOutcome::Completed {
            session: s.id,
            client: crate::ClientId(s.client),
            iterations: s.iterations,
        });
        Ok(ServerMessage::SessionEnd(SessionEnd {
            session: s.id,
            iterations: s.iterations,
        }))
    }

    /// Releases model version `version` with its seed `s_v` (sent by a client; never the
    /// group key): `W_v = W~ + P_v`, every parameter checked against the scales' ranges.
    /// From then on [`Server::true_model`] is `W_v` and inference may use it.
    ///
    /// # Errors
    /// [`ServerError::Config`] under the paper's protocol or during a session;
    /// [`ServerError::Release`] for another version than the current one, or a seed
    /// whose masks do not unmask to weights within range (a wrong seed, with
    /// overwhelming probability). Nothing is released on error.
    pub fn release(&mut self, version: u64, seed: &VersionSeed) -> Result<&FixedModel> {
        let v2 = self.v2_between_sessions(
            "a model is released between sessions only",
            "the paper's protocol holds the true model: nothing to release",
        )?;
        if version != v2.version.version {
            return Err(ServerError::Release {
                reason: format!(
                    "version {version} asked, the server holds version {}",
                    v2.version.version
                ),
            });
        }
        let spec = &self.config.spec;
        let masks = if version == 0 {
            VersionMasks::zero(spec)
        } else {
            VersionMasks::derive(seed, spec, v2.params.widths)
        };
        let scales = &self.config.scales;
        let out_of_range = || ServerError::Release {
            reason: "the seed does not unmask to weights within the scales' ranges".into(),
        };
        let mut layers = Vec::with_capacity(v2.masked.len());
        for (ml, p) in v2.masked.iter().zip(masks.layers()) {
            let w = ndarray::Zip::from(&ml.w)
                .and(&p.weights)
                .map_collect(|w, r| {
                    scales.check_big(ValueKind::Weight, &(w + BigInt::from(r.clone())))
                });
            let b = ndarray::Zip::from(&ml.b)
                .and(&p.biases)
                .map_collect(|b, r| {
                    scales.check_big(ValueKind::Bias, &(b + BigInt::from(r.clone())))
                });
            let w = w
                .into_iter()
                .collect::<std::result::Result<Vec<i128>, _>>()
                .map_err(|_| out_of_range())?;
            let b = b
                .into_iter()
                .collect::<std::result::Result<Vec<i128>, _>>()
                .map_err(|_| out_of_range())?;
            let w = Array2::from_shape_vec(ml.w.dim(), w).map_err(|_| out_of_range())?;
            layers.push(LayerParams {
                w,
                b: Array1::from(b),
            });
        }
        let model = FixedModel {
            spec: spec.clone(),
            layers,
        };
        model.validate(scales).map_err(|_| out_of_range())?;
        let v2 = self.v2.as_mut().ok_or(ServerError::NotReleased)?;
        v2.released = Some((version, model));
        v2.released
            .as_ref()
            .map(|(_, m)| m)
            .ok_or(ServerError::NotReleased)
    }

    /// Protocol v2: the version of the released model, if any.
    pub fn released_version(&self) -> Option<u64> {
        self.v2.as_ref()?.released.as_ref().map(|(v, _)| *v)
    }
}

/// What a protocol v2 server persists after every completed session (`docs/DESIGN.md`
/// "Protocol v2", "Dropouts and crashes"): the public parameters, the version and the
/// masked model `W~`. It contains no true weight and no secret.
///
/// Serde: a struct of `params`, `version` and `masked` (a list of `{ w, b }`, ndarray's
/// serde form of big integers); it is part of the server's [`crate::Checkpoint`]
/// (`STATE_DIR/checkpoint.bin`). Deserialization checks each
/// array's shape against its data; [`Server::restore_v2`] checks the model's shapes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "CheckpointOnDisk", from = "CheckpointOnDisk")]
pub struct V2Checkpoint {
    /// The run's public parameters.
    pub params: gelunet_protocol::v2::V2Params,
    /// `(v, ν_v)`.
    pub version: ModelVersion,
    /// `W~ = W_v − P_v`.
    pub masked: Vec<MaskedLayer>,
}

impl Server {
    /// The v2 state, between sessions only.
    ///
    /// # Errors
    /// [`ServerError::Config`] with `during_session` during a session, with `paper` under
    /// the paper's protocol.
    fn v2_between_sessions(&self, during_session: &str, paper: &str) -> Result<&V2State> {
        if self.session.is_some() {
            return Err(ServerError::Config {
                reason: during_session.into(),
            });
        }
        self.v2.as_ref().ok_or_else(|| ServerError::Config {
            reason: paper.into(),
        })
    }

    /// The state to persist between sessions (protocol v2).
    ///
    /// # Errors
    /// [`ServerError::Config`] under the paper's protocol or during a session.
    pub fn v2_checkpoint(&self) -> Result<V2Checkpoint> {
        let v2 = self.v2_between_sessions(
            "a checkpoint is taken between sessions only",
            "the paper's protocol has no v2 state",
        )?;
        Ok(V2Checkpoint {
            params: v2.params,
            version: v2.version,
            masked: v2.masked.clone(),
        })
    }

    /// Restores a state written by [`Server::v2_checkpoint`] (after a crash, or to go
    /// back to an older version). The next rollover draws a fresh nonce, so no mask is
    /// reused even when an old checkpoint is restored.
    ///
    /// # Errors
    /// [`ServerError::Config`] under the paper's protocol, during a session, or for a
    /// checkpoint of another model (parameters or shapes).
    pub fn restore_v2(&mut self, cp: &V2Checkpoint) -> Result<()> {
        if self.session.is_some() {
            return Err(ServerError::Config {
                reason: "a checkpoint is restored between sessions only".into(),
            });
        }
        let spec = self.config.spec.clone();
        let v2 = self.v2.as_mut().ok_or_else(|| ServerError::Config {
            reason: "the paper's protocol has no v2 state".into(),
        })?;
        let shapes_ok = cp.masked.len() == spec.num_layers()
            && cp.masked.iter().enumerate().all(|(i, l)| {
                let (m, n) = spec.param_shape(i + 1);
                l.w.dim() == (m, n) && l.b.len() == m
            });
        if cp.params.widths != v2.params.widths || cp.params.eta != v2.params.eta || !shapes_ok {
            return Err(ServerError::Config {
                reason: "the checkpoint is of another model or configuration".into(),
            });
        }
        v2.params = cp.params;
        v2.version = cp.version;
        v2.masked = cp.masked.clone();
        v2.released = None;
        Ok(())
    }
}

/// The serde form of [`V2Checkpoint`] (a [`MaskedLayer`] has no serde of its own).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "V2Checkpoint")]
struct CheckpointOnDisk {
    params: gelunet_protocol::v2::V2Params,
    version: ModelVersion,
    masked: Vec<LayerOnDisk>,
}

/// The serde form of one [`MaskedLayer`]: `W~` (`m × n`) and `b~` (length `m`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "MaskedLayer")]
struct LayerOnDisk {
    w: ndarray::Array2<num_bigint::BigInt>,
    b: ndarray::Array1<num_bigint::BigInt>,
}

impl From<V2Checkpoint> for CheckpointOnDisk {
    fn from(cp: V2Checkpoint) -> Self {
        Self {
            params: cp.params,
            version: cp.version,
            masked: cp
                .masked
                .into_iter()
                .map(|l| LayerOnDisk { w: l.w, b: l.b })
                .collect(),
        }
    }
}

impl From<CheckpointOnDisk> for V2Checkpoint {
    fn from(cp: CheckpointOnDisk) -> Self {
        Self {
            params: cp.params,
            version: cp.version,
            masked: cp
                .masked
                .into_iter()
                .map(|l| MaskedLayer { w: l.w, b: l.b })
                .collect(),
        }
    }
}
