//! Paper Alg. 3 on the client, preventing gradient leakage (Alg. 2 lines 9–10;
//! docs/DESIGN.md "One iteration", masked update): after every iteration of a session
//! but the last, for every weight and bias draw a mask `r` ([`MaskMode::draw`]), send
//! `[D]_s = ([η]_s ⊗ Δ) ⊕ Enc_s(r)` and add `r` to the ledger, `R ← R + r (mod N_c)`
//! ([`crate::ledger`]). The server decrypts `D = η·Δ + r` and sets `w~ ← w~ − D`, which
//! keeps `w~ = w − R^w` for the true weights `w` of plaintext training.
//!
//! `Enc_s(r)` is a fresh encryption, so `[D]_s` is re-randomized: the server, which knows
//! the randomness of its own `[η]_s`, cannot strip it. Packed, `k` parameters share a
//! ciphertext: `[Σ_i (η·Δ_i + r_i + G)·2^(β i)]_s = Π_i E_i^{Δ_i} ⊕ Enc_s(Σ_i (r_i +
//! G)·2^(β i))` with `E_i = [η]_s^{2^(β i)}` computed once per session (`eta_powers`; a
//! shared-base multi-exponentiation with small exponents per ciphertext).
//!
//! 1. *Private input* (client): the iteration's gradients `Δw_i, Δb_i`, the masks `r`, the
//!    ledger.
//! 2. *Private input* (server): `SK_s`, the masked weights.
//! 3. *Public input*: `PK_s`, `[η]_s` (from [`gelunet_protocol::messages::SessionStart`]),
//!    the mask mode and the update packing
//!    ([`gelunet_protocol::messages::UpdatePacking::masked`]).
//! 4. *Sent*: client → server [`MaskedUpdate`] `{ [D]_s }`; server → client
//!    [`gelunet_protocol::messages::UpdateApplied`].

use gelunet_paillier::{BigInt, BigUint, Ciphertext, PreparedCiphertext, PublicKey};
use gelunet_protocol::mask::{centered, MaskTarget};
use gelunet_protocol::messages::{ClientMessage, LayerCiphertexts, MaskedUpdate, Packing};
use gelunet_protocol::packing::mask_plaintext;
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::MaskMode;
use ndarray::Array2;
use num_traits::Zero;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use crate::backward::Finished;
use crate::error::Result;
use crate::role::{Awaiting, Client, Setup};

impl Client {
    /// Alg. 3: masks the iteration's gradients into `[D]_s` and adds the masks to the
    /// ledger; commits the ledger and `done` on success only ([`Client::commit_update`]).
    ///
    /// # Errors
    /// Mask, encryption and packing errors.
    pub(crate) fn masked_update(&mut self, mut done: Finished) -> Result<ClientMessage> {
        let setup = self.setup()?;
        let s = self.session.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let scales = &setup.scales;
        let n_c = self.key.public_key().n();
        let gw = MaskMode::g_bits(scales, MaskTarget::Weight);
        let gb = MaskMode::g_bits(scales, MaskTarget::Bias);
        let eta = s.eta.as_ref().ok_or(ProtocolViolation::NoSession)?;
        let mut ledger = s.ledger.clone();
        let mut layers = Vec::with_capacity(done.grads.layers.len());
        let layout = setup.masked_packing;
        for (i, g) in done.grads.layers.iter().enumerate() {
            let weights = mask_values(
                &mut done.rng,
                setup,
                eta,
                (layout.weights, &s.eta_powers.0),
                g.w.iter(),
                gw,
                ledger.w[i].iter_mut(),
                n_c,
            )?;
            let biases = mask_values(
                &mut done.rng,
                setup,
                eta,
                (layout.biases, &s.eta_powers.1),
                g.b.iter(),
                gb,
                ledger.b[i].iter_mut(),
                n_c,
            )?;
            layers.push(LayerCiphertexts { weights, biases });
        }
        let msg = ClientMessage::MaskedUpdate(MaskedUpdate {
            session: s.id,
            iteration: s.iteration,
            packing: layout,
            layers,
        });
        self.commit_update(done, Some(ledger), Awaiting::UpdateApplied)?;
        Ok(msg)
    }
}

/// `E_i = [η]_s^{2^(β i)}`, `i < k`, for a packed masked-update layout (empty when unpacked).
///
/// # Errors
/// Ciphertext errors of `[η]_s`.
pub(crate) fn eta_powers(
    pk_s: &PublicKey,
    eta: &Ciphertext,
    p: Packing,
) -> Result<Vec<Ciphertext>> {
    if p == Packing::NONE {
        return Ok(Vec::new());
    }
    let step = BigInt::from(1u8) << p.slot_bits;
    let mut out = Vec::with_capacity(p.samples_per_ciphertext as usize);
    let mut e = eta.clone();
    for i in 0..p.samples_per_ciphertext {
        if i > 0 {
            e = pk_s.mul_scalar(&e, &step)?;
        }
        out.push(e.clone());
    }
    Ok(out)
}

/// `[D]_s = ([η]_s ⊗ Δ) ⊕ Enc_s(r)` for each value (unpacked), or
/// `Π_i E_i^{Δ_i} ⊕ Enc_s(Σ_i (r_i + G)·2^(β i))` per group of `k` values (packed), and
/// `R ← R + r (mod N_c)` on the given ledger entries (Alg. 3).
///
/// # Errors
/// Mask, encryption and packing errors.
#[allow(clippy::too_many_arguments)]
fn mask_values<'a>(
    rng: &mut ChaCha20Rng,
    setup: &Setup,
    eta: &PreparedCiphertext,
    (layout, powers): (Packing, &[Ciphertext]),
    values: impl Iterator<Item = &'a i128>,
    g_bits: u32,
    ledger: impl Iterator<Item = &'a mut BigUint>,
    n_c: &BigUint,
) -> Result<Vec<Ciphertext>> {
    let pk_s = setup
        .server_key
        .as_ref()
        .ok_or(ProtocolViolation::NoHandshake)?;
    let values: Vec<BigInt> = values.map(|&v| BigInt::from(v)).collect();
    let mut rs = Vec::with_capacity(values.len());
    for _ in &values {
        rs.push(setup.mask.draw(g_bits, pk_s.n(), rng)?);
    }
    let out = if layout == Packing::NONE {
        let r_signed: Vec<BigInt> = rs.iter().map(|r| centered(r, pk_s.n())).collect();
        let enc_r = pk_s.encrypt_batch(&r_signed, rng)?;
        values
            .par_iter()
            .zip(enc_r.par_iter())
            .map(|(v, er)| {
                let scaled = pk_s.mul_scalar_prepared(eta, v)?;
                pk_s.add(&scaled, er)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        let k = (layout.samples_per_ciphertext as usize).max(1);
        if powers.len() < k {
            return Err(ProtocolViolation::Packing { found: layout }.into());
        }
        let groups = values.len().div_ceil(k);
        let masks: Vec<BigInt> = rs
            .chunks(k)
            .map(|c| BigInt::from(mask_plaintext(c, g_bits, layout.slot_bits)))
            .collect();
        let enc_m = pk_s.encrypt_batch(&masks, rng)?;
        let mut deltas = Array2::from_elem((groups, k), BigInt::zero());
        for (i, v) in values.iter().enumerate() {
            deltas[[i / k, i % k]] = v.clone();
        }
        let scaled = pk_s.matvec(deltas.view(), &powers[..k])?;
        scaled
            .par_iter()
            .zip(enc_m.par_iter())
            .map(|(sc, em)| pk_s.add(sc, em))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    for (entry, r) in ledger.zip(&rs) {
        *entry = (&*entry + r) % n_c;
    }
    Ok(out)
}
