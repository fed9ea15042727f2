//! Paper Alg. 3 on the server (Alg. 2 line 11), the masked update: decrypt
//! `D = Dec_s([D]_s) = η·Δ + r` and set `w~ ← w~ − D (mod N_c)` for every weight and
//! bias, after every iteration of a session but the last (docs/DESIGN.md "One
//! iteration", masked update). `D` is decrypted mod `N_s` and used mod `N_c`: the mask
//! `r` keeps `η·Δ + r` from wrapping ([`MaskMode`]), and the unpacking checks it.
//!
//! 1. *Private input* (server): `SK_s`, the masked weights `w~, b~`.
//! 2. *Private input* (client): the gradients `Δ` and the masks `r` (added to its ledger
//!    `R ← R + r`).
//! 3. *Public input*: `PK_s`, `PK_c`, the mask mode and the update packing
//!    ([`gelunet_protocol::messages::UpdatePacking::masked`]).
//! 4. *Sent*: client → server [`MaskedUpdate`] `{ [D]_s }`; server → client
//!    [`UpdateApplied`]. The server learns `D = η·Δ + r` (kept as
//!    [`Server::last_decrypted_update`]), never `Δ`.

use gelunet_protocol::mask::{reduce_centered, MaskTarget};
use gelunet_protocol::messages::{MaskedUpdate, ServerMessage, UpdateApplied};
use gelunet_protocol::packing::unpack_masked;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::MaskMode;
use ndarray::{Array1, Array2};

use crate::error::Result;
use crate::role::{DecryptedUpdate, MaskedLayer, Phase, Server};

impl Server {
    /// Alg. 3 (server side): `D = Dec_s([D]_s)`, `w~ ← w~ − D (mod N_c)`; moves the
    /// session to the next iteration.
    ///
    /// # Errors
    /// [`ProtocolViolation`]s of the turn ([`Server::check_update_turn`]), the layout
    /// and counts ([`Server::decrypt_layers`]), ciphertext errors under `PK_s`, a `D`
    /// outside the mask's interval.
    pub(crate) fn masked_update(&mut self, m: &MaskedUpdate) -> Result<ServerMessage> {
        let s = self.check_update_turn(m.session, m.iteration, "MaskedUpdate", false)?;
        let n_c = self.clients[s.client].n().clone();
        let layout = self.masked_update_packing();
        let raw = self.decrypt_layers(&m.layers, m.packing, layout)?;
        let n_s = self.paper_key()?.public_key().n();
        let scales = &self.config.scales;
        let gw = MaskMode::g_bits(scales, MaskTarget::Weight);
        let gb = MaskMode::g_bits(scales, MaskTarget::Bias);
        let mode = self.config.mask;
        let mut new_masked = Vec::with_capacity(raw.len());
        let mut seen = Vec::with_capacity(raw.len());
        for ((rw, rb), ml) in raw.iter().zip(&s.masked) {
            let dw = unpack_masked(mode, gw, n_s, layout.weights, rw, ml.w.len())?;
            let db = unpack_masked(mode, gb, n_s, layout.biases, rb, ml.b.len())?;
            let dw =
                Array2::from_shape_vec(ml.w.dim(), dw).map_err(|_| ProtocolViolation::Shape {
                    what: "weight updates",
                    expected: ml.w.len(),
                    found: rw.len(),
                })?;
            let db = Array1::from(db);
            let w = ndarray::Zip::from(&ml.w)
                .and(&dw)
                .map_collect(|w, d| reduce_centered(&(w - d), &n_c));
            let b = ndarray::Zip::from(&ml.b)
                .and(&db)
                .map_collect(|b, d| reduce_centered(&(b - d), &n_c));
            new_masked.push(MaskedLayer { w, b });
            seen.push(DecryptedUpdate { w: dw, b: db });
        }
        let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
        s.masked = new_masked;
        s.iteration += 1;
        s.phase = Phase::Forward(1);
        self.last_update = Some(seen);
        Ok(ServerMessage::UpdateApplied(UpdateApplied {
            session: m.session,
            iteration: m.iteration,
        }))
    }
}
