//! Encrypted inference with the trained model (paper Alg. 1 with the true weights, no
//! masks; docs/DESIGN.md "One iteration", forward): [`Server::infer`],
//! [`Server::inference_key`].
//!
//! For a layer `i`, `[z_i]_c = W_i ⊗ [a_{i−1}]_c ⊕ b_i` per group of samples, at any
//! time, for any client key: between sessions with the current weights, during one with
//! `w^I, b^I`. For requests of one sample per group the server can *row-pack* the `m`
//! outputs of a sample into `⌈m·β/(|N_c| − 2)⌉` ciphertexts by Horner
//! (`acc ← acc^{2^β} ⊕ [z_j + 2^(β−1)]`, `β` squarings and one multiplication per row,
//! [`PublicKey::matvec_row_packed`]), so the client decrypts one ciphertext per layer
//! instead of `m`. A conv layer runs through [`crate::linear`] (one product per output
//! position, pooled, `b·4` for a pooled output); one sample through a conv layer comes
//! *position-packed* (`samples = 1` with a packing,
//! [`gelunet_protocol::packing::position_packing`]): the client's im2col columns packed
//! by groups of output positions, multiplied by the kernel matrix repeated once per pooling
//! window, one answer per filter and group (docs/DESIGN.md "Convolutional layers").
//!
//! 1. *Private input* (server): the true model `W_i, b_i`.
//! 2. *Private input* (client): its inputs `a_{i−1}` and `SK_c`.
//! 3. *Public input*: `PK_c` (from the client's hello), the spec and scales, the sample
//!    and row packings ([`gelunet_protocol::packing::inference_packing`],
//!    [`inference_row_packing`]).
//! 4. *Sent*: client → server [`InferRequest`] `{ layer i, [a_{i−1}]_c }`; server →
//!    client [`InferResponse`] `{ [z_i]_c }` (row-packed on request).
//!
//! Note what inference gives the client: the pre-activations `z_1 = W_1·x + b_1` in clear
//! for inputs of its choice, i.e. `m_1` linear equations in the weights per query;
//! `n_0 + 1` queries determine `W_1, b_1` (model extraction, paper §4.1). The d_max bound
//! protects training sessions, not inference; the server refuses inference from the
//! client of the active session ([`Server::handle`]) so that a session's view stays
//! within the bound, and an operator who cares must limit queries per client.

use gelunet_paillier::{BigInt, PublicKey};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::messages::{ClientHello, InferRequest, InferResponse, Packing};
use gelunet_protocol::packing::{
    group_sizes, inference_row_packing, position_packing, sample_slot_bits, slot_sum,
    slots_per_plaintext,
};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::ValueKind;

use crate::error::{Result, ServerError};
use crate::linear;
use crate::role::{expect_len, to_big, Server, MAX_INFER_SAMPLES};

impl Server {
    /// Checks a client hello for inference only (version, server key, key size) and
    /// returns the client's key, without registering it: inference works at any time,
    /// also after registration closed ([`Server::infer`]).
    ///
    /// # Errors
    /// As [`Server::register_client`], except registration being closed.
    pub fn inference_key(&self, hello: &ClientHello) -> Result<PublicKey> {
        self.check_hello(hello)?;
        let needed = u64::from(
            self.config
                .scales
                .max_bits(ValueKind::PreActivation)
                .max(self.config.scales.max_bits(ValueKind::Product)),
        ) + 2;
        self.client_key(hello, needed)
    }

    /// Encrypted inference (paper Alg. 1 with the true model, no masks) for a client with
    /// key `pk`: `[z_i] = W_i ⊗ [a_{i−1}] ⊕ b_i` per group of samples, row-packed on
    /// request ([`crate::inference`]) with slots as narrow as the weights allow
    /// ([`gelunet_protocol::packing::inference_row_packing`]) through
    /// [`PublicKey::matvec_row_packed`]. Stateless: any layer, any time, in any order.
    ///
    /// # Errors
    /// [`ServerError::Violation`] with [`ProtocolViolation::UnknownLayer`],
    /// [`ProtocolViolation::Shape`] (sample count, number of ciphertexts),
    /// [`ProtocolViolation::Packing`] for a layout that is not the derived one,
    /// [`ProtocolViolation::Ciphertext`] for ciphertexts not valid under `pk`.
    pub fn infer(&self, pk: &PublicKey, req: &InferRequest) -> Result<InferResponse> {
        self.answer_infer(pk, req).map_err(ServerError::blame_peer)
    }

    /// The linear map of layer `layer` (`1..=L`).
    ///
    /// # Errors
    /// [`ProtocolViolation::UnknownLayer`] outside `1..=L`.
    pub(crate) fn layer_map(&self, layer: u32) -> Result<LinearLayer> {
        let spec = &self.config.spec;
        let layers = spec.num_layers() as u32;
        if layer == 0 || layer > layers {
            return Err(ProtocolViolation::UnknownLayer { layer, layers }.into());
        }
        Ok(LinearLayer::of(spec, layer as usize)?)
    }

    /// [`Server::infer`] before the faults of the request are classified as violations.
    fn answer_infer(&self, pk: &PublicKey, req: &InferRequest) -> Result<InferResponse> {
        let spec = &self.config.spec;
        let scales = &self.config.scales;
        let map = self.layer_map(req.layer)?;
        if req.samples == 0 || req.samples > MAX_INFER_SAMPLES {
            return Err(ProtocolViolation::Shape {
                what: "inference samples (1..=65536)",
                expected: 1,
                found: req.samples as usize,
            }
            .into());
        }
        let (_, fan_in) = spec.layer_shape(req.layer as usize);
        let p = req.packing;
        let packed = p != Packing::NONE;
        // One sample through a conv layer, packed: output positions in the slots.
        let positions = packed && req.samples == 1 && !map.is_dense();
        if positions {
            if p != position_packing(spec, scales, req.layer as usize, pk.bits()) {
                return Err(ProtocolViolation::Packing { found: p }.into());
            }
        } else if packed {
            let beta = sample_slot_bits(spec, scales);
            let fits = slots_per_plaintext(pk.bits(), beta);
            if p.slot_bits != beta
                || p.samples_per_ciphertext < 2
                || p.samples_per_ciphertext > fits
            {
                return Err(ProtocolViolation::Packing { found: p }.into());
            }
        }
        let layer = &self.true_model()?.layers[req.layer as usize - 1];
        let biases = layer.b.as_slice().unwrap_or(&[]);
        expect_len("biases", map.filters(), biases.len())?;
        let rows = if req.row_packing {
            if packed || !map.is_dense() {
                return Err(ProtocolViolation::Packing { found: p }.into());
            }
            inference_row_packing(
                spec,
                scales,
                req.layer as usize,
                layer.w.view(),
                biases,
                pk.bits(),
            )
        } else {
            Packing::NONE
        };
        // Position packing: groups of output positions over the im2col columns.
        let (groups, per_group) = if positions {
            (
                group_sizes(map.output_positions(), p.samples_per_ciphertext),
                map.windows() * map.columns(),
            )
        } else {
            (
                group_sizes(req.samples as usize, p.samples_per_ciphertext),
                fan_in,
            )
        };
        expect_len(
            "activations",
            per_group * groups.len(),
            req.activations.len(),
        )?;
        pk.validate_all(&req.activations)?;
        let w = to_big(&layer.w);
        let big_biases: Vec<BigInt> = biases.iter().map(|&b| BigInt::from(b)).collect();
        let w_positions = positions.then(|| map.expanded_kernel(&w));
        let mult = BigInt::from(map.bias_multiplicity());
        let per_filter = map.output_positions().max(1);
        let mut out = Vec::new();
        for (g, &size) in groups.iter().enumerate() {
            let cts = &req.activations[g * per_group..(g + 1) * per_group];
            let s = BigInt::from(slot_sum(size, p.slot_bits));
            if let Some(we) = &w_positions {
                // One ciphertext per filter: its outputs at the group's positions.
                let z = pk.matvec(we.view(), cts)?;
                out.extend(linear::add_biases(
                    pk,
                    z,
                    &big_biases,
                    |f| f,
                    &(&s * &mult),
                )?);
            } else if rows == Packing::NONE {
                let z = linear::forward(pk, &map, &w, cts)?;
                out.extend(linear::add_biases(
                    pk,
                    z,
                    &big_biases,
                    |o| o / per_filter,
                    &(&s * &mult),
                )?);
            } else {
                // One sample: slots hold z_j + 2^(β−1) ≥ 0 (see `row_packing`).
                let shift = BigInt::from(1u8) << (rows.slot_bits - 1);
                let offsets: Vec<BigInt> = biases
                    .iter()
                    .map(|&b| BigInt::from(b) * &s + &shift)
                    .collect();
                out.extend(pk.matvec_row_packed(
                    w.view(),
                    cts,
                    &offsets,
                    rows.slot_bits,
                    (rows.samples_per_ciphertext as usize).max(1),
                )?);
            }
        }
        Ok(InferResponse {
            request_id: req.request_id,
            layer: req.layer,
            samples: req.samples,
            packing: p,
            row_packing: rows,
            pre_activations: out,
        })
    }
}
