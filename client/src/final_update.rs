//! Paper Alg. 5 on the client, the final parameter update (docs/DESIGN.md "One
//! iteration", final update): after the last iteration of a session, encrypt the
//! session's accumulated gradients under `PK_s` and send `[ΔW^c]_s, [Δb^c]_s`; the server
//! sets `w^F = w^I − η·ΔW^c`, `b^F = b^I − η·Δb^c`. The ledger is not sent: it is
//! dropped (zeroized) with the session. Packed, several accumulators share a ciphertext,
//! each offset by `2^max_bits` ([`final_plaintext`]).
//!
//! 1. *Private input* (client): the accumulators `ΔW^c, Δb^c` (the server learns them:
//!    docs/DESIGN.md "Protocol v2" explains why v2 drops this step).
//! 2. *Private input* (server): `SK_s`, `w^I, b^I`.
//! 3. *Public input*: `PK_s` and the update packing
//!    ([`gelunet_protocol::messages::UpdatePacking::final_update`]).
//! 4. *Sent*: client → server [`FinalUpdate`] `{ [ΔW^c]_s, [Δb^c]_s }`; server → client
//!    [`gelunet_protocol::messages::SessionEnd`].

use gelunet_paillier::BigInt;
use gelunet_protocol::messages::{ClientMessage, FinalUpdate, LayerCiphertexts, Packing};
use gelunet_protocol::packing::final_plaintext;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::ValueKind;

use crate::backward::Finished;
use crate::error::Result;
use crate::role::{Awaiting, Client};

impl Client {
    /// Alg. 5: encrypts the accumulators (which include the last iteration's gradients)
    /// under `PK_s`; commits `done` on success only ([`Client::commit_update`]).
    ///
    /// # Errors
    /// Accumulators out of range for their packing, encryption errors.
    pub(crate) fn final_update(&mut self, mut done: Finished) -> Result<ClientMessage> {
        let setup = self.setup()?;
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let scales = &setup.scales;
        let pk_s = setup
            .server_key
            .as_ref()
            .ok_or(ProtocolViolation::NoHandshake)?;
        let mut layers = Vec::with_capacity(done.acc.layers.len());
        let layout = setup.final_packing;
        let pack = |kind: ValueKind, values: Vec<i128>, p: Packing| -> Result<Vec<BigInt>> {
            if p == Packing::NONE {
                return Ok(values.into_iter().map(BigInt::from).collect());
            }
            values
                .chunks((p.samples_per_ciphertext as usize).max(1))
                .map(|c| Ok(BigInt::from(final_plaintext(scales, kind, c, p.slot_bits)?)))
                .collect()
        };
        for g in &done.acc.layers {
            let w = pack(
                ValueKind::WeightGradient,
                g.w.iter().copied().collect(),
                layout.weights,
            )?;
            let b = pack(
                ValueKind::BiasGradient,
                g.b.iter().copied().collect(),
                layout.biases,
            )?;
            layers.push(LayerCiphertexts {
                weights: pk_s.encrypt_batch(&w, &mut done.rng)?,
                biases: pk_s.encrypt_batch(&b, &mut done.rng)?,
            });
        }
        let msg = ClientMessage::FinalUpdate(FinalUpdate {
            session: s.id,
            packing: layout,
            layers,
        });
        self.commit_update(done, None, Awaiting::SessionEnd)?;
        Ok(msg)
    }
}
