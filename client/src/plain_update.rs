//! Protocol v2's masked update and mask rollover on the client (`docs/DESIGN.md`
//! "Protocol v2", steps 3 and 4; the v2 form of paper Alg. 3, replacing Alg. 5).
//!
//! Every iteration `j < d − 1`: for every weight and bias draw `r_j` uniform on
//! `[0, 2^(σ+g))` (`g` bounds `|η·Δ|`, [`gelunet_protocol::MaskMode::g_bits`]), send
//! `D_j = η·Δ_j + r_j` **in plaintext** and set `R ← R + r_j`. After the last iteration draw
//! a fresh nonce `ν'`, derive `P_{v+1}` from `(k, model_id, v + 1, ν')`
//! ([`gelunet_protocol::version_mask`]) and send `(ν', D = η·Δ_last + P_{v+1} − R)`: the
//! server's `W~ − D` is then `W_{v+1} − P_{v+1}`. No Paillier operation on either side.
//!
//! `η·Δ` is computed exactly as the plaintext reference computes its SGD step
//! ([`gelunet_protocol::math::scaled_step`]), so `W~ + P_v` equals the reference bit for
//! bit after every completed session.
//!
//! 1. *Private input* (client): the gradients `Δ`, the masks `r_j`, the ledger `R`, the
//!    group key `k` (hence `P_{v+1}`).
//! 2. *Private input* (server): none; it holds the public `W~`.
//! 3. *Public input*: `η`, `σ`, the mask widths, `model_id`, `v`, `ν_v` ([`V2Params`],
//!    [`gelunet_protocol::messages::SessionStart`]).
//! 4. *Sent*: client → server [`PlainUpdate`] `{ D_j }` or [`Rollover`] `{ ν', D }`;
//!    server → client [`gelunet_protocol::messages::UpdateApplied`] or
//!    [`gelunet_protocol::messages::SessionEnd`].

use gelunet_paillier::{BigInt, BigUint};
use gelunet_protocol::group_key::VersionNonce;
use gelunet_protocol::mask::MaskTarget;
use gelunet_protocol::math::scaled_step;
use gelunet_protocol::messages::ClientMessage;
use gelunet_protocol::v2::{ModelVersion, PlainLayerUpdate, PlainUpdate, Rollover, V2Params};
use gelunet_protocol::version_mask::VersionMasks;
use gelunet_protocol::violation::ProtocolViolation;
use num_bigint::RandBigInt;
use rand::RngCore;

use crate::backward::Finished;
use crate::error::{ClientError, Result};
use crate::role::{Awaiting, Client};

impl Client {
    fn v2_params(&self) -> Result<V2Params> {
        self.setup()?
            .v2
            .ok_or(ClientError::Violation(ProtocolViolation::NoHandshake))
    }

    /// Steps 3 (v2 Alg. 3): `D_j = η·Δ_j + r_j` in plaintext, `R ← R + r_j`; commits the
    /// ledger and `done` on success only ([`Client::commit_update`]).
    ///
    /// # Errors
    /// Gradients out of range ([`gelunet_protocol::Error::OutOfRange`]).
    pub(crate) fn plain_update(&mut self, mut done: Finished) -> Result<ClientMessage> {
        let p = self.v2_params()?;
        let setup = self.setup()?;
        let scales = &setup.scales;
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let n_c = self.key.public_key().n();
        let (bw, bb) = (
            u64::from(p.update_mask_bits(scales, MaskTarget::Weight)),
            u64::from(p.update_mask_bits(scales, MaskTarget::Bias)),
        );
        let mut ledger = s.ledger.clone();
        let mut layers = Vec::with_capacity(done.grads.layers.len());
        for (i, g) in done.grads.layers.iter().enumerate() {
            let (dw, db) = scaled_step(scales, s.learning_rate, g)?;
            let mut mask = |v: i128, bits: u64, entry: &mut BigUint| -> BigInt {
                let r = done.rng.gen_biguint(bits);
                *entry = (&*entry + &r) % n_c;
                BigInt::from(v) + BigInt::from(r)
            };
            let weights = dw
                .iter()
                .zip(ledger.w[i].iter_mut())
                .map(|(&v, e)| mask(v, bw, e))
                .collect();
            let biases = db
                .iter()
                .zip(ledger.b[i].iter_mut())
                .map(|(&v, e)| mask(v, bb, e))
                .collect();
            layers.push(PlainLayerUpdate { weights, biases });
        }
        let msg = ClientMessage::PlainUpdate(PlainUpdate {
            session: s.id,
            iteration: s.iteration,
            layers,
        });
        self.commit_update(done, Some(ledger), Awaiting::UpdateApplied)?;
        Ok(msg)
    }

    /// Step 4: the last iteration's update rolls the mask over,
    /// `D = η·Δ_last + P_{v+1} − R` with a fresh nonce `ν'`.
    ///
    /// # Errors
    /// [`ClientError::NoGroupKey`]; gradients out of range.
    pub(crate) fn rollover(&mut self, mut done: Finished) -> Result<ClientMessage> {
        let p = self.v2_params()?;
        let setup = self.setup()?;
        let scales = &setup.scales;
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let k = self.group_key.as_ref().ok_or(ClientError::NoGroupKey)?;
        let from = s.version.ok_or(ProtocolViolation::NoSession)?;
        let mut nonce = [0u8; 16];
        done.rng.fill_bytes(&mut nonce);
        let next = ModelVersion {
            version: from.version + 1,
            nonce: VersionNonce(nonce),
        };
        let seed = k.version_seed(p.model_id, next.version, next.nonce);
        let masks = VersionMasks::derive(&seed, &setup.spec, p.widths);
        let mut layers = Vec::with_capacity(done.grads.layers.len());
        for ((g, pl), (rw, rb)) in done
            .grads
            .layers
            .iter()
            .zip(masks.layers())
            .zip(s.ledger.w.iter().zip(&s.ledger.b))
        {
            let (dw, db) = scaled_step(scales, s.learning_rate, g)?;
            let d = |v: i128, pv: &BigUint, r: &BigUint| -> BigInt {
                BigInt::from(v) + BigInt::from(pv.clone()) - BigInt::from(r.clone())
            };
            let weights = dw
                .iter()
                .zip(pl.weights.iter().zip(rw.iter()))
                .map(|(&v, (pv, r))| d(v, pv, r))
                .collect();
            let biases = db
                .iter()
                .zip(pl.biases.iter().zip(rb.iter()))
                .map(|(&v, (pv, r))| d(v, pv, r))
                .collect();
            layers.push(PlainLayerUpdate { weights, biases });
        }
        let msg = ClientMessage::Rollover(Rollover {
            session: s.id,
            iteration: s.iteration,
            nonce: next.nonce,
            layers,
        });
        let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
        s.next_version = Some(next);
        self.commit_update(done, None, Awaiting::SessionEnd)?;
        Ok(msg)
    }
}
