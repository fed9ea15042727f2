//! Paper Alg. 5 on the server, the final parameter update: after the last iteration of a
//! session, decrypt the session's accumulated gradients and set
//! `w^F = w^I − η·ΔW^c`, `b^F = b^I − η·Δb^c` (docs/DESIGN.md "One iteration", final
//! update). The masked weights of the session are dropped: after Alg. 5 the server holds
//! true weights again, equal to `w~ + R^w` after the last iteration (the invariant the
//! tests check).
//!
//! 1. *Private input* (server): `SK_s`, the model `w^I, b^I` recorded at the session's
//!    start.
//! 2. *Private input* (client): the accumulators `ΔW^c, Δb^c`.
//! 3. *Public input*: `PK_s`, `η` (the server's), the update packing
//!    ([`gelunet_protocol::messages::UpdatePacking::final_update`]).
//! 4. *Sent*: client → server [`FinalUpdate`] `{ [ΔW^c]_s, [Δb^c]_s }`; server → client
//!    [`SessionEnd`]. The server learns the session's summed gradient (docs/DESIGN.md
//!    "Protocol v2" explains why v2 drops this step).

use gelunet_protocol::messages::{FinalUpdate, Packing, ServerMessage, SessionEnd};
use gelunet_protocol::packing::unpack_final;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Gradients, LayerGradients, ValueKind};

use crate::error::Result;
use crate::role::{ClientId, Server, SessionOutcome};

impl Server {
    /// Alg. 5: `w^F = w^I − η·ΔW^c`, `b^F = b^I − η·Δb^c`; ends the session
    /// ([`SessionOutcome::Completed`]).
    ///
    /// # Errors
    /// [`ProtocolViolation`]s of the turn ([`Server::check_update_turn`]), the layout
    /// and counts ([`Server::decrypt_layers`]), ciphertext errors under `PK_s`, gradients
    /// or updated weights out of their fixed-point ranges.
    pub(crate) fn final_update(&mut self, m: &FinalUpdate) -> Result<ServerMessage> {
        let s = self.session()?;
        let iteration = s.iteration;
        self.check_update_turn(m.session, iteration, "FinalUpdate", true)?;
        let layout = self.final_update_packing();
        let raw = self.decrypt_layers(&m.layers, m.packing, layout)?;
        let pk = self.paper_key()?.public_key();
        let scales = &self.config.scales;
        let mut grads = Gradients::zeros(&self.config.spec);
        for ((rw, rb), g) in raw.iter().zip(grads.layers.iter_mut()) {
            let LayerGradients { w, b } = g;
            if layout.weights == Packing::NONE {
                for (o, d) in w.iter_mut().zip(rw) {
                    *o = scales.check_big(ValueKind::WeightGradient, &pk.decode(d))?;
                }
            } else {
                let v = unpack_final(
                    scales,
                    ValueKind::WeightGradient,
                    layout.weights,
                    rw,
                    w.len(),
                )?;
                w.iter_mut().zip(v).for_each(|(o, v)| *o = v);
            }
            if layout.biases == Packing::NONE {
                for (o, d) in b.iter_mut().zip(rb) {
                    *o = scales.check_big(ValueKind::BiasGradient, &pk.decode(d))?;
                }
            } else {
                let v = unpack_final(scales, ValueKind::BiasGradient, layout.biases, rb, b.len())?;
                b.iter_mut().zip(v).for_each(|(o, v)| *o = v);
            }
        }
        let eta = self
            .session
            .as_ref()
            .ok_or(ProtocolViolation::NoSession)?
            .eta;
        let mut model = self.model.clone();
        model.apply_update(scales, eta, &grads)?;
        self.model = model;
        let s = self.session.take().ok_or(ProtocolViolation::NoSession)?;
        self.history.push(SessionOutcome::Completed {
            session: s.id,
            client: ClientId(s.client),
            iterations: s.iterations,
        });
        Ok(ServerMessage::SessionEnd(SessionEnd {
            session: s.id,
            iterations: s.iterations,
        }))
    }
}
