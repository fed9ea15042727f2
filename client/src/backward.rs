//! Paper Alg. 2 on the client, privacy-preserved backpropagation (docs/DESIGN.md "One
//! iteration", backward): for every layer `i = L … 2`, encrypt `δ_i` under `PK_c` and
//! send it (line 5), decrypt the server's `[q~]_c`, remove the masks (line 7, Alg. 4:
//! `q = q~ + δ_i·R^w_i`, [`crate::unmask`]), compute `δ_{i−1} = q ⊙ f'(z_{i−1})` and the
//! gradients `Δw_{i−1} = δ_{i−1}ᵀ a_{i−2}`, `Δb_{i−1} = Σ δ_{i−1}`; then accumulate
//! `ΔW^c += Δw` (lines 3, 8) and hand the iteration's gradients to the masked update
//! (Alg. 3, [`crate::masked_update`]) or, after the last iteration, the final update
//! (Alg. 5, [`crate::final_update`]).
//!
//! 1. *Private input* (client): `δ_i`, `z_i`, `a_i`, `SK_c`, the ledger `R^w_i`, the
//!    gradients and accumulators.
//! 2. *Private input* (server): the masked weights `W~_i`.
//! 3. *Public input*: `PK_c`, the spec and the sample packing.
//! 4. *Sent*: client → server [`BackwardRequest`] `{ layer i, [δ_i]_c }`; server →
//!    client [`BackwardResponse`] `{ [q~]_c }`.

use gelunet_protocol::conv_net::layer_gradients_of;
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::math::{hidden_error_at, layer_gradients};
use gelunet_protocol::messages::{BackwardRequest, BackwardResponse, ClientMessage};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Activation, Gradients, LayerGradients, Scales, ValueKind};
use ndarray::ArrayView2;
use rand_chacha::ChaCha20Rng;

use crate::error::{ClientError, Result};
use crate::ledger::Ledger;
use crate::role::{Awaiting, BackwardEntry, Client, Step};
use crate::unmask::{backward_terms, unmask_unpack, Target};

/// A finished iteration, handed to the update that ends it (Alg. 3 or 5, or protocol v2's
/// plain update or rollover): nothing of it is committed until the update is built.
pub(crate) struct Finished {
    /// The iteration's state.
    pub(crate) step: Step,
    /// The role's generator, advanced past the iteration's encryptions.
    pub(crate) rng: ChaCha20Rng,
    /// The iteration's gradients `Δw, Δb`.
    pub(crate) grads: Gradients,
    /// The session's accumulators `ΔW^c, Δb^c`, this iteration's gradients included.
    pub(crate) acc: Gradients,
}

/// The gradients `Δw_i = δ_iᵀ a_{i−1}`, `Δb_i = Σ δ_i` of layer `map` (paper Eq. 1;
/// for a conv layer the kernel gradients, [`layer_gradients_of`]), `δ` (`B × n_i`) at
/// `2^fd`, `a_{i−1}` (`B × n_{i−1}`) at `2^fa`, rounded to the "as sent" scales.
///
/// # Errors
/// Shape, range and overflow errors.
pub(crate) fn gradients_of(
    map: &LinearLayer,
    delta: ArrayView2<'_, i128>,
    a_prev: ArrayView2<'_, i128>,
    scales: &Scales,
) -> Result<LayerGradients> {
    Ok(if map.is_dense() {
        layer_gradients(delta, a_prev, scales)?
    } else {
        layer_gradients_of(map, delta, a_prev, scales)?
    })
}

impl Client {
    /// Alg. 4 backward and Alg. 2 line 7: unmasks `q`, computes `δ_{i−1}` and the
    /// gradients of layer `i − 1`; then the next backward request or the update.
    ///
    /// # Errors
    /// The [`ProtocolViolation`]s of [`Client::session_in_turn`], packing and counts;
    /// ciphertext errors; values out of range.
    pub(crate) fn backward(&mut self, m: &BackwardResponse) -> Result<ClientMessage> {
        let (s, setup, map, raw) = self.open_layer_response(
            (m.session, m.iteration, m.layer),
            (Awaiting::Backward, "BackwardResponse"),
            m.packing,
            ("products", |_, fan_in| fan_in),
            &m.products,
        )?;
        let layer = m.layer as usize;
        let n_c = self.key.public_key().n();
        let scales = &setup.scales;
        let delta = s.step.delta.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let rw = &s.ledger.w[layer - 1];
        let q = unmask_unpack(
            &raw,
            delta,
            setup.packing,
            n_c,
            map.fan_in(),
            &*backward_terms(map, rw)?,
            Target {
                scales,
                kind: ValueKind::Product,
                extra_bits: map.pool_bits(),
            },
        )?;
        let entry = self.config.record_transcript.then(|| BackwardEntry {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            errors: delta.clone(),
            products: q.clone(),
        });
        let below = layer - 1;
        let act = setup.spec.activation(below).unwrap_or(Activation::Identity);
        let below_map = setup.layer(below)?;
        let new_delta = hidden_error_at(
            (q.view(), map.product_frac(scales)),
            (
                s.step.z[below - 1].view(),
                below_map.pre_activation_frac(scales),
            ),
            act,
            scales,
        )?;
        let mut step = s.step.clone();
        step.grads[below - 1] = Some(gradients_of(
            below_map,
            new_delta.view(),
            step.a[below - 1].view(),
            scales,
        )?);
        let mut rng = self.rng.clone();
        let packing = setup.packing;
        let out = if below >= 2 {
            let cts = self.encrypt_own(&mut rng, &new_delta)?;
            step.delta = Some(new_delta);
            let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
            s.step = step;
            s.awaiting = Awaiting::Backward(m.layer - 1);
            self.rng = rng;
            ClientMessage::Backward(BackwardRequest {
                session: m.session,
                iteration: m.iteration,
                layer: m.layer - 1,
                packing,
                errors: cts,
            })
        } else {
            step.delta = None;
            self.finish_iteration(step, rng)?
        };
        self.backward_transcript.extend(entry);
        Ok(out)
    }

    /// Accumulates the iteration's gradients (`ΔW^c += Δw`, Alg. 2 lines 3 and 8) and
    /// builds the masked update (Alg. 3, [`Client::masked_update`]) or, after the last
    /// iteration, the final update (Alg. 5, [`Client::final_update`]). Commits on success
    /// only.
    ///
    /// # Errors
    /// Accumulators out of range; the errors of the update built.
    pub(crate) fn finish_iteration(
        &mut self,
        step: Step,
        rng: ChaCha20Rng,
    ) -> Result<ClientMessage> {
        let setup = self.setup()?;
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let scales = &setup.scales;
        let grads = Gradients {
            layers: step
                .grads
                .iter()
                .map(|g| {
                    g.clone()
                        .ok_or(ClientError::Violation(ProtocolViolation::NoSession))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let acc = s.acc.checked_add(scales, &grads)?;
        let v2 = setup.v2.is_some();
        let done = Finished {
            step,
            rng,
            grads,
            acc,
        };
        match (v2, s.iteration + 1 < s.iterations) {
            (false, true) => self.masked_update(done),
            (false, false) => self.final_update(done),
            (true, true) => self.plain_update(done),
            (true, false) => self.rollover(done),
        }
    }

    /// Commits an update built from `done`: the iteration's state, generator, gradients
    /// (as the session's last) and accumulators, the new `ledger` if the update drew masks,
    /// and what the session awaits next. Called once the update's message is built, so that
    /// a failed update changes nothing.
    ///
    /// # Errors
    /// [`ProtocolViolation::NoSession`] (nothing is changed then).
    pub(crate) fn commit_update(
        &mut self,
        done: Finished,
        ledger: Option<Ledger>,
        awaiting: Awaiting,
    ) -> Result<()> {
        let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
        if let Some(ledger) = ledger {
            s.ledger = ledger;
        }
        s.acc = done.acc;
        s.last = Some(done.grads);
        s.step = done.step;
        s.awaiting = awaiting;
        self.rng = done.rng;
        Ok(())
    }
}
