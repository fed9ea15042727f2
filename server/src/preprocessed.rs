//! Preprocessed inference: the server's linear layers computed offline on one-time masks,
//! the online answer one plaintext product (docs/DESIGN.md "Preprocessed inference";
//! the offline/online split of MiniONN, Liu et al. CCS 2017, and Delphi, Mishra et al.
//! USENIX Security 2020, here with Paillier): [`Server::prepare_infer`],
//! [`Server::infer_masked`], [`Preparations`].
//!
//! A layer's answer to a single-sample request is a linear function of the request's
//! plaintexts `m` plus constants (biases, slot offsets): `Ans(m) = L(m) + c` per answer
//! ciphertext, `L` the layer's product (and, row-packed, `Σ_r 2^{β r}·z_{c·k+r}`).
//!
//! ```text
//! offline  client: r ← Z_N uniform (one per plaintext), sends [r]_c       (InferPrepare)
//!          server: [A] = Ans([r]_c) = [L(r) + c], kept                     (InferPrepared)
//! online   client: d = m − r mod N                                         (InferMasked)
//!          server: [A] ⊕ L(d) = [L(r) + c + L(m − r)] = [L(m) + c]         (InferResponse)
//! ```
//!
//! The answer has the layout and the plaintexts of the plain request's answer, so the
//! client reads it as before. Online, the server computes `L(d)` on plaintexts (a
//! product of small weights with numbers below `N`, no exponentiation) and one
//! [`gelunet_paillier::PublicKey::add_plain`] per answer ciphertext.
//!
//! 1. *Private input* (server): the true model `W_i, b_i`.
//! 2. *Private input* (client): `SK_c`, its plaintexts `m`, the masks `r` (used once).
//! 3. *Public input*: `PK_c`, the spec and scales, the packings.
//! 4. *Sent*: client → server `[r]_c` offline and `d = m − r mod N` online; server →
//!    client the acknowledgement, then `[L(m) + c]_c`.
//!
//! The server sees `[r]_c` (semantically secure) and `d`, which is uniform in `Z_N` and
//! independent of `m` because `r` is (a one-time pad in `Z_N`); the client sees the same
//! answer as without preprocessing. A preparation is used once and then dropped; the
//! client never reuses a mask (two uses would give the server `m − m'`). Preparations
//! live with one connection ([`Preparations`], at most [`MAX_PREPARATIONS`]).

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use gelunet_paillier::{BigInt, Ciphertext, KeyId, PublicKey};
use gelunet_protocol::mask::reduce_centered;
use gelunet_protocol::math::LayerParams;
use gelunet_protocol::messages::{
    ClientMessage, InferMasked, InferPrepare, InferPrepared, InferRequest, InferResponse, Packing,
    ServerMessage,
};
use gelunet_protocol::violation::ProtocolViolation;
use ndarray::Array2;
use rayon::prelude::*;

use crate::error::{Result, ServerError};
use crate::role::{expect_len, Server};

/// Largest number of preparations one connection holds at once.
pub const MAX_PREPARATIONS: usize = 64;

/// One held preparation: its key, layer, mask count, the answer on the masks and a
/// fingerprint of the layer's parameters it was computed with.
struct Prepared {
    key: KeyId,
    layer: u32,
    masks: usize,
    answer: InferResponse,
    params: u64,
}

/// A fingerprint of one layer's parameters (SipHash of `W` and `b`): a preparation made
/// with other parameters (the model changed since) must not be combined with these.
fn fingerprint(layer: &LayerParams) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    layer.w.hash(&mut h);
    layer.b.hash(&mut h);
    h.finish()
}

/// The preparations of one inference client (one per connection), each used once.
/// Holds only ciphertexts under the client's key and public layouts.
#[derive(Default)]
pub struct Preparations {
    held: HashMap<u64, Prepared>,
}

impl fmt::Debug for Preparations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preparations")
            .field("held", &self.held.len())
            .finish()
    }
}

impl Preparations {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Preparations held (made and not used yet).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

impl Server {
    /// The offline part of a preprocessed layer ([`crate::preprocessed`]): computes the
    /// answer of layer `req.layer` to the single-sample request whose ciphertexts are
    /// `req.masks` ([`Server::infer`]'s checks and arithmetic) and keeps it in `held`
    /// under `req.prep_id` (an id already held is replaced). Dense layers (row-packed or
    /// not) and position-packed conv layers.
    ///
    /// # Errors
    /// [`ProtocolViolation::PreparationLimit`] when `held` is full; the errors of
    /// [`Server::infer`] for the layout and the ciphertexts
    /// ([`ProtocolViolation::Packing`] for a conv layer without position packing or a
    /// dense layer with a sample packing). On
    /// error `held` is unchanged.
    pub fn prepare_infer(
        &self,
        pk: &PublicKey,
        req: &InferPrepare,
        held: &mut Preparations,
    ) -> Result<InferPrepared> {
        self.prepare_answer(pk, req, held)
            .map_err(ServerError::blame_peer)
    }

    fn prepare_answer(
        &self,
        pk: &PublicKey,
        req: &InferPrepare,
        held: &mut Preparations,
    ) -> Result<InferPrepared> {
        if held.held.len() >= MAX_PREPARATIONS && !held.held.contains_key(&req.prep_id) {
            return Err(ProtocolViolation::PreparationLimit {
                limit: MAX_PREPARATIONS,
            }
            .into());
        }
        let map = self.layer_map(req.layer)?;
        // Dense layers take the row-packed (or plain) layout, conv layers the position
        // packing: the online step's linear part follows the layer kind.
        if map.is_dense() != (req.packing == Packing::NONE) {
            return Err(ProtocolViolation::Packing { found: req.packing }.into());
        }
        let params = fingerprint(&self.true_model()?.layers[req.layer as usize - 1]);
        let answer = self.infer(
            pk,
            &InferRequest {
                request_id: 0,
                layer: req.layer,
                samples: 1,
                packing: req.packing,
                row_packing: req.row_packing,
                activations: req.masks.clone(),
            },
        )?;
        held.held.insert(
            req.prep_id,
            Prepared {
                key: pk.id(),
                layer: req.layer,
                masks: req.masks.len(),
                answer,
                params,
            },
        );
        Ok(InferPrepared {
            prep_id: req.prep_id,
            layer: req.layer,
        })
    }

    /// The online part of a preprocessed layer: `[A] ⊕ L(d)` per answer ciphertext of
    /// preparation `req.prep_id`, which is then dropped. The answer equals (in layout and
    /// plaintexts) [`Server::infer`]'s to the request of plaintexts `m = d + r mod N`.
    ///
    /// # Errors
    /// [`ProtocolViolation::UnknownPreparation`] for an id not held, or held for another
    /// layer or key; [`ProtocolViolation::StalePreparation`] when the layer's parameters
    /// changed since the preparation (it is then of no use; drop it by preparing again);
    /// [`ProtocolViolation::Shape`] for a count of masked values other than
    /// the preparation's masks; [`ProtocolViolation::Range`] for a value `≥ N`. On error
    /// the preparation stays held.
    pub fn infer_masked(
        &self,
        pk: &PublicKey,
        req: &InferMasked,
        held: &mut Preparations,
    ) -> Result<InferResponse> {
        self.answer_masked(pk, req, held)
            .map_err(ServerError::blame_peer)
    }

    fn answer_masked(
        &self,
        pk: &PublicKey,
        req: &InferMasked,
        held: &mut Preparations,
    ) -> Result<InferResponse> {
        let unknown = ProtocolViolation::UnknownPreparation {
            id: req.prep_id,
            layer: req.layer,
        };
        let prep = held
            .held
            .get(&req.prep_id)
            .filter(|p| p.layer == req.layer && p.key == pk.id())
            .ok_or(unknown)?;
        expect_len("masked plaintexts", prep.masks, req.masked.len())?;
        if req.masked.iter().any(|d| &d.0 >= pk.n()) {
            return Err(ProtocolViolation::Range { kind: None }.into());
        }
        let map = self.layer_map(req.layer)?;
        let layer = &self.true_model()?.layers[req.layer as usize - 1];
        if fingerprint(layer) != prep.params {
            return Err(ProtocolViolation::StalePreparation { id: req.prep_id }.into());
        }
        let w = &layer.w;
        let d: Vec<BigInt> = req
            .masked
            .iter()
            .map(|x| BigInt::from(x.0.clone()))
            .collect();
        let a = &prep.answer;
        let linear: Vec<BigInt> = if !map.is_dense() {
            // Position-packed conv: per group g and filter f, Σ_c W_e[f, c]·d[g, c].
            let we = map.expanded_kernel(w);
            let per_group = we.ncols();
            d.chunks(per_group)
                .flat_map(|g| (0..we.nrows()).map(move |f| (f, g)))
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|(f, g)| dot(&we, f, g))
                .collect()
        } else {
            let z: Vec<BigInt> = (0..w.nrows())
                .into_par_iter()
                .map(|j| dot(w, j, &d))
                .collect();
            if a.row_packing == Packing::NONE {
                z
            } else {
                // Slot r of answer c holds row c·k + r at 2^{β r}.
                let k = (a.row_packing.samples_per_ciphertext as usize).max(1);
                z.chunks(k)
                    .map(|rows| {
                        rows.iter().rev().fold(BigInt::from(0u8), |acc, v| {
                            (acc << a.row_packing.slot_bits) + v
                        })
                    })
                    .collect()
            }
        };
        expect_len("answer ciphertexts", a.pre_activations.len(), linear.len())?;
        let n = pk.n();
        let out = a
            .pre_activations
            .par_iter()
            .zip(linear.par_iter())
            .map(|(c, v)| pk.add_plain(c, &reduce_centered(v, n)))
            .collect::<std::result::Result<Vec<Ciphertext>, _>>()?;
        let answer = InferResponse {
            request_id: req.request_id,
            layer: req.layer,
            samples: 1,
            packing: a.packing,
            row_packing: a.row_packing,
            pre_activations: out,
        };
        held.held.remove(&req.prep_id);
        Ok(answer)
    }

    /// Answers one message of an inference connection (the shell's and the in-memory
    /// driver's one dispatch): `Infer` by [`Server::infer`], `InferPrepare` by
    /// [`Server::prepare_infer`], `InferMasked` by [`Server::infer_masked`], with `held`
    /// the connection's preparations.
    ///
    /// # Errors
    /// The errors of those; [`ProtocolViolation::OutOfTurn`] for any other message.
    pub fn handle_inference(
        &self,
        pk: &PublicKey,
        held: &mut Preparations,
        msg: &ClientMessage,
    ) -> Result<ServerMessage> {
        match msg {
            ClientMessage::Infer(req) => self.infer(pk, req).map(ServerMessage::Inferred),
            ClientMessage::InferPrepare(req) => self
                .prepare_infer(pk, req, held)
                .map(ServerMessage::InferPrepared),
            ClientMessage::InferMasked(req) => self
                .infer_masked(pk, req, held)
                .map(ServerMessage::Inferred),
            _ => Err(ProtocolViolation::OutOfTurn {
                expected: "InferRequest, InferPrepare or InferMasked".into(),
                found: msg.kind(),
            }
            .into()),
        }
    }
}

/// `Σ_c w[row, c]·d[c]` over the integers (fixed-point weights times numbers below `N`).
fn dot(w: &Array2<i128>, row: usize, d: &[BigInt]) -> BigInt {
    w.row(row)
        .iter()
        .zip(d)
        .fold(BigInt::from(0u8), |acc, (&wc, dc)| acc + dc * wc)
}
