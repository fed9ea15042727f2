//! Paper Alg. 1 on the client, privacy-preserved forward propagation (docs/DESIGN.md "One
//! iteration", forward): draw a mini-batch `a_0 = x`, then for every layer `i` encrypt
//! `a_{i−1}` under `PK_c` and send it (line 4), decrypt the server's `[z~_i]_c`, remove
//! the masks (line 6, Alg. 4: [`crate::unmask`]) and apply the real activation
//! `a_i = f(z_i)` (line 9); at the output layer the softmax and the error `δ_L = y − t`
//! (Alg. 2 line 2) start the backpropagation ([`crate::backward`]).
//!
//! 1. *Private input* (client): its data share, `SK_c`, the ledger `R^w_i, R^b_i`, every
//!    `a_i` and `z_i`.
//! 2. *Private input* (server): the masked weights `W~_i, b~_i`.
//! 3. *Public input*: `PK_c`, the spec and the sample packing.
//! 4. *Sent*: client → server [`ForwardRequest`] `{ layer i, [a_{i−1}]_c }`; server →
//!    client [`gelunet_protocol::messages::ForwardResponse`] `{ [z~_i]_c }`. With a
//!    single layer, the update follows directly (`Client::finish_iteration`).

use gelunet_paillier::{BigUint, Ciphertext};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::math::{activate_at, output_error};
use gelunet_protocol::messages::{
    BackwardRequest, ClientMessage, ForwardRequest, ForwardResponse, Packing,
};
use gelunet_protocol::packing::group_sizes;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Activation, BatchSampler, ValueKind};
use rand_chacha::ChaCha20Rng;

use crate::backward::gradients_of;
use crate::error::Result;
use crate::role::{expect_len, Awaiting, Client, Session, Setup, Step, TranscriptEntry};
use crate::unmask::{forward_terms, unmask_unpack, Target};

impl Client {
    /// Checks a layer's answer, a [`ForwardResponse`] or
    /// [`gelunet_protocol::messages::BackwardResponse`]: in turn (its session, iteration
    /// and layer, awaited as `want(layer)`; [`Client::session_in_turn`]), in the session's
    /// sample packing, and `count(width, fan_in)` ciphertexts of that layer per group of
    /// samples (`what` names them); then decrypts them under `SK_c`. Returns the session,
    /// the handshake's setup, the layer's linear map and the decrypted values (raw, still
    /// masked).
    ///
    /// # Errors
    /// The [`ProtocolViolation`]s of [`Client::session_in_turn`], `Packing` and `Shape`;
    /// ciphertext errors.
    pub(crate) fn open_layer_response(
        &self,
        (sid, iteration, layer): (u64, u32, u32),
        (want, found): (fn(u32) -> Awaiting, &'static str),
        packing: Packing,
        (what, count): (&'static str, fn(usize, usize) -> usize),
        cts: &[Ciphertext],
    ) -> Result<(&Session, &Setup, &LinearLayer, Vec<BigUint>)> {
        let s = self.session_in_turn(sid, iteration, want(layer), found)?;
        let setup = self.setup()?;
        if packing != setup.packing {
            return Err(ProtocolViolation::Packing { found: packing }.into());
        }
        let (width, fan_in) = setup.spec.layer_shape(layer as usize);
        let groups = group_sizes(setup.batch, setup.packing.samples_per_ciphertext).len();
        expect_len(what, count(width, fan_in) * groups, cts.len())?;
        let raw = self.decrypt_own(cts)?;
        Ok((s, setup, setup.layer(layer as usize)?, raw))
    }

    /// Alg. 1 lines 2–4: draws the next mini-batch `a_0 = x_d` and builds the first
    /// forward request.
    ///
    /// # Errors
    /// [`ProtocolViolation::NoHandshake`], encryption errors.
    pub(crate) fn begin_iteration(
        &self,
        sampler: &mut BatchSampler,
        rng: &mut ChaCha20Rng,
        sid: u64,
        iteration: u32,
    ) -> Result<(Step, ClientMessage)> {
        let setup = self.setup()?;
        let idx = sampler.next_batch();
        let (x, labels) = setup.data.select(&idx);
        let cts = self.encrypt_own(rng, &x)?;
        let l_count = setup.spec.num_layers();
        let step = Step {
            labels,
            a: vec![x],
            z: Vec::new(),
            delta: None,
            grads: vec![None; l_count],
        };
        Ok((
            step,
            ClientMessage::Forward(ForwardRequest {
                session: sid,
                iteration,
                layer: 1,
                packing: setup.packing,
                activations: cts,
            }),
        ))
    }

    /// Alg. 4 forward and Alg. 1 lines 6–10: unmasks `z_i`, then the next forward
    /// request, the output layer's backward request, or the update.
    ///
    /// # Errors
    /// The [`ProtocolViolation`]s of [`Client::session_in_turn`], packing and counts;
    /// ciphertext errors; values out of range.
    pub(crate) fn forward(&mut self, m: &ForwardResponse) -> Result<ClientMessage> {
        let (s, setup, map, raw) = self.open_layer_response(
            (m.session, m.iteration, m.layer),
            (Awaiting::Forward, "ForwardResponse"),
            m.packing,
            ("pre-activations", |width, _| width),
            &m.pre_activations,
        )?;
        let layer = m.layer as usize;
        let n_c = self.key.public_key().n();
        let scales = &setup.scales;
        let a_prev = &s.step.a[layer - 1];
        let rw = &s.ledger.w[layer - 1];
        let rb = &s.ledger.b[layer - 1];
        let z = unmask_unpack(
            &raw,
            a_prev,
            setup.packing,
            n_c,
            map.width(),
            &*forward_terms(map, rw, rb)?,
            Target {
                scales,
                kind: ValueKind::PreActivation,
                extra_bits: map.pool_bits(),
            },
        )?;
        let l_count = setup.spec.num_layers();
        let mut step = s.step.clone();
        let mut rng = self.rng.clone();
        let (msg, awaiting, finished) = if layer < l_count {
            let act = setup.spec.activation(layer).unwrap_or(Activation::Identity);
            let a = activate_at(act, z.view(), map.pre_activation_frac(scales), scales)?;
            let cts = self.encrypt_own(&mut rng, &a)?;
            step.a.push(a);
            step.z.push(z.clone());
            (
                Some(ClientMessage::Forward(ForwardRequest {
                    session: m.session,
                    iteration: m.iteration,
                    layer: m.layer + 1,
                    packing: setup.packing,
                    activations: cts,
                })),
                Awaiting::Forward(m.layer + 1),
                false,
            )
        } else {
            let delta = output_error(z.view(), &step.labels, scales)?;
            step.grads[layer - 1] = Some(gradients_of(map, delta.view(), a_prev.view(), scales)?);
            step.z.push(z.clone());
            if l_count >= 2 {
                let cts = self.encrypt_own(&mut rng, &delta)?;
                step.delta = Some(delta);
                (
                    Some(ClientMessage::Backward(BackwardRequest {
                        session: m.session,
                        iteration: m.iteration,
                        layer: m.layer,
                        packing: setup.packing,
                        errors: cts,
                    })),
                    Awaiting::Backward(m.layer),
                    false,
                )
            } else {
                (None, Awaiting::UpdateApplied, true)
            }
        };
        let entry = self.config.record_transcript.then(|| TranscriptEntry {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            inputs: a_prev.clone(),
            pre_activations: z,
        });
        let out = if finished {
            self.finish_iteration(step, rng)?
        } else {
            let s = self.session.as_mut().ok_or(ProtocolViolation::NoSession)?;
            s.step = step;
            s.awaiting = awaiting;
            self.rng = rng;
            msg.ok_or(ProtocolViolation::NoSession)?
        };
        self.transcript.extend(entry);
        Ok(out)
    }
}
