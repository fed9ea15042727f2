//! Paper Alg. 2 on the server, privacy-preserved backpropagation: for layer `i ≥ 2`,
//! `[q~]_c ← [δ_i]_cᵀ ⊗ W~_i` (Alg. 2 line 6; docs/DESIGN.md "One iteration",
//! backward). The client removes `δ_i·R^w_i` from `q~` (Alg. 4) and computes
//! `δ_{i−1} = q ⊙ f'(z_{i−1})` and the gradients itself; the server sees only
//! ciphertexts under `PK_c`.
//!
//! Through a conv layer the product is the transposed convolution, the pooled errors
//! copied to their windows first ([`crate::linear::transpose`]).
//!
//! 1. *Private input* (server): the masked weights `W~_i` of the active session.
//! 2. *Private input* (client): `δ_i`, `SK_c`, the ledger `R^w_i`.
//! 3. *Public input*: `PK_c`, the layer shape, the sample packing.
//! 4. *Sent*: client → server [`BackwardRequest`] `{ layer i, [δ_i]_c }`; server →
//!    client [`BackwardResponse`] `{ [q~]_c }`.

use gelunet_protocol::messages::{BackwardRequest, BackwardResponse, ServerMessage};

use crate::error::Result;
use crate::linear;
use crate::role::{Phase, Server};

impl Server {
    /// Alg. 2 line 6: `[q~] = [δ]ᵀ ⊗ W~` per group of samples; moves the session to the
    /// layer below's backward request or to the update.
    ///
    /// # Errors
    /// [`gelunet_protocol::ProtocolViolation`]s of the header
    /// ([`Server::check_header`]) and counts, ciphertext errors under `PK_c`.
    pub(crate) fn backward(&mut self, m: &BackwardRequest) -> Result<ServerMessage> {
        let req = self.check_layer_request(
            ("BackwardRequest", Phase::Backward(0)),
            (m.session, m.iteration, m.layer, m.packing),
            ("errors", |width, _| width),
            &m.errors,
        )?;
        let mut out = Vec::with_capacity(req.fan_in * req.groups.len());
        for group in m.errors.chunks(req.width) {
            out.extend(linear::transpose(req.pk, &req.map, &req.masked.w, group)?);
        }
        let next = if m.layer > 2 {
            Phase::Backward(m.layer - 1)
        } else {
            Phase::Update
        };
        self.advance(next);
        Ok(ServerMessage::Backward(BackwardResponse {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            packing: m.packing,
            products: out,
        }))
    }
}
