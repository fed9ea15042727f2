//! Paper Alg. 1 on the server, privacy-preserved forward propagation: for layer `i`,
//! `[z~_i]_c ← (W~_i ⊗ [a_{i−1}]_c) ⊕ b~_i` (Alg. 1 line 5; docs/DESIGN.md "One
//! iteration", forward). With sample packing the bias is added as `b~_j·Σ_s 2^(β s)`
//! reduced mod `N_c`, once per group of samples.
//!
//! A conv layer (with its pooling) runs the same way through [`crate::linear`], one
//! product per output position.
//!
//! 1. *Private input* (server): the masked weights `W~_i, b~_i = W_i − R^w_i, b_i − R^b_i`
//!    (mod `N_c`) of the active session.
//! 2. *Private input* (client): `a_{i−1}`, `SK_c`, the ledger `R^w_i, R^b_i`.
//! 3. *Public input*: `PK_c`, the layer shape, the sample packing both sides derived
//!    ([`gelunet_protocol::packing::sample_packing`]).
//! 4. *Sent*: client → server [`ForwardRequest`] `{ layer i, [a_{i−1}]_c }`; server →
//!    client [`ForwardResponse`] `{ [z~_i]_c }`, which the client unmasks (Alg. 4).

use gelunet_paillier::{BigInt, Ciphertext, PublicKey};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::messages::{ForwardRequest, ForwardResponse, Packing, ServerMessage};
use gelunet_protocol::packing::{group_sizes, slot_sum};

use crate::error::Result;
use crate::linear;
use crate::role::{expect_len, MaskedLayer, Phase, Server};

/// A forward or backward request that passed [`Server::check_layer_request`].
pub(crate) struct LayerRequest<'a> {
    /// `PK_c` of the session's client.
    pub(crate) pk: &'a PublicKey,
    /// The layer's masked weights `W~_i, b~_i` of the session.
    pub(crate) masked: &'a MaskedLayer,
    /// The layer's width `m = n_i`.
    pub(crate) width: usize,
    /// Its fan-in `n = n_{i−1}`.
    pub(crate) fan_in: usize,
    /// Its linear map (dense or conv, [`crate::linear`]).
    pub(crate) map: LinearLayer,
    /// Samples per ciphertext group of the mini-batch ([`group_sizes`]).
    pub(crate) groups: Vec<usize>,
}

impl Server {
    /// Checks a forward or backward request: its header against the session (`found`
    /// names the message, `want` the kind of phase; session, iteration, layer and sample
    /// packing, [`Server::check_header`]), `count(width, fan_in)` ciphertexts per group of
    /// samples (`what` names them), every one valid under `PK_c`.
    ///
    /// # Errors
    /// The [`gelunet_protocol::ProtocolViolation`]s of the header and the count;
    /// ciphertext errors under `PK_c`.
    pub(crate) fn check_layer_request(
        &self,
        (found, want): (&'static str, Phase),
        (sid, iteration, layer, packing): (u64, u32, u32, Packing),
        (what, count): (&'static str, fn(usize, usize) -> usize),
        cts: &[Ciphertext],
    ) -> Result<LayerRequest<'_>> {
        let s = self.check_header(found, want, sid, iteration, layer, packing)?;
        let (width, fan_in) = self.config.spec.layer_shape(layer as usize);
        let map = LinearLayer::of(&self.config.spec, layer as usize)?;
        let groups = group_sizes(self.config.batch_size, packing.samples_per_ciphertext);
        expect_len(what, count(width, fan_in) * groups.len(), cts.len())?;
        let pk = &self.clients[s.client];
        pk.validate_all(cts)?;
        Ok(LayerRequest {
            pk,
            masked: &s.masked[layer as usize - 1],
            width,
            fan_in,
            map,
            groups,
        })
    }

    /// Moves the active session (if any) to `next`.
    pub(crate) fn advance(&mut self, next: Phase) {
        if let Some(s) = self.session.as_mut() {
            s.phase = next;
        }
    }

    /// Alg. 1 line 5: `[z~] = W~ ⊗ [a] ⊕ b~` per group of samples; moves the session to
    /// the next layer's forward request, the output layer's backward request, or the
    /// update.
    ///
    /// # Errors
    /// [`gelunet_protocol::ProtocolViolation`]s of the header
    /// ([`Server::check_header`]) and counts, ciphertext errors under `PK_c`.
    pub(crate) fn forward(&mut self, m: &ForwardRequest) -> Result<ServerMessage> {
        let LayerRequest {
            pk,
            masked: ml,
            width,
            fan_in,
            map,
            groups,
        } = self.check_layer_request(
            ("ForwardRequest", Phase::Forward(0)),
            (m.session, m.iteration, m.layer, m.packing),
            ("activations", |_, fan_in| fan_in),
            &m.activations,
        )?;
        let mut out = Vec::with_capacity(width * groups.len());
        for (g, &size) in groups.iter().enumerate() {
            let cts = &m.activations[g * fan_in..(g + 1) * fan_in];
            let z = linear::forward(pk, &map, &ml.w, cts)?;
            // b~_f · mult · Σ_s 2^(β s), reduced mod N_c (b~_f itself without packing or
            // pooling); output o is of filter o / (width / f).
            let factor = BigInt::from(slot_sum(size, m.packing.slot_bits))
                * BigInt::from(map.bias_multiplicity());
            let per_filter = map.output_positions().max(1);
            let biases = ml.b.as_slice().unwrap_or(&[]);
            expect_len("biases", map.filters(), biases.len())?;
            out.extend(linear::add_biases(
                pk,
                z,
                biases,
                |o| o / per_filter,
                &factor,
            )?);
        }
        let l_count = self.config.spec.num_layers() as u32;
        let next = if m.layer < l_count {
            Phase::Forward(m.layer + 1)
        } else if l_count >= 2 {
            Phase::Backward(l_count)
        } else {
            Phase::Update
        };
        self.advance(next);
        Ok(ServerMessage::Forward(ForwardResponse {
            session: m.session,
            iteration: m.iteration,
            layer: m.layer,
            packing: m.packing,
            pre_activations: out,
        }))
    }
}
