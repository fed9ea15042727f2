//! Several values per Paillier plaintext (docs/DESIGN.md "Batches and packing"; PROUD-style
//! slot packing).
//!
//! A plaintext `P = Σ_i v_i·2^(β·i)` holds `k` values in slots of `β` bits, slot 0 lowest.
//! Three layouts are used, each derived by *both* parties from public data (the spec, the
//! scales, the batch size, the key sizes and the `packing` switch of the
//! [`ServerHello`](crate::messages::ServerHello)), so nothing about them is negotiated
//! beyond that switch; every message states the layout it uses in its `packing` field and
//! the receiver refuses one that differs from the derived layout.
//!
//! | what | slots | width `β` | values per ciphertext |
//! | --- | --- | --- | --- |
//! | activations and errors of a mini-batch ([`sample_packing`]) | signed, one per sample | [`sample_slot_bits`] | `⌊(|N_c| − 2)/β⌋`, at most `B` |
//! | masked updates `η·Δ + r` (Alg. 3, [`UpdatePacking::masked`]) | shifted by `G`, non-negative | `σ + g + 1` (statistical), `g + 1` (none) | `⌊(|N_s| − 2)/β⌋`; the uniform mask is not packed |
//! | final updates `ΔW^c`, `Δb^c` (Alg. 5, [`UpdatePacking::final_update`]) | shifted by `2^max_bits`, non-negative | `max_bits + 1` | `⌊(|N_s| − 2)/β⌋` |
//! | pre-activations of one sample in inference ([`inference_row_packing`]) | shifted by `2^(β−1)`, non-negative | at most [`forward_bound_bits`] `+ 1`, chosen by the server from its weights | `⌊(|N_c| − 2)/β⌋` |
//!
//! The inference row packing is the one layout the server chooses: it states `β` in its
//! answer and the client accepts any `β` up to the static width ([`row_packing_is_valid`]).
//!
//! # Sample packing
//!
//! The `B` samples of a mini-batch share one ciphertext per feature:
//! `P_k = Σ_s a_{s,k}·2^(β s)`. The server computes, unchanged,
//! `[Σ_k w~_jk·P_k + b~_j·S]` with `S = Σ_s 2^(β s)` ([`slot_sum`]); the client removes the
//! masks mod `N_c` *before* unpacking (`+ Σ_k R_jk·P_k + R^b_j·S`), which leaves
//! `Σ_s z_{s,j}·2^(β s)` with the true, small `z`. The slot width comes from the scales'
//! range limits so that every true value fits its signed slot:
//! `|z| < (n + 1)·2^max(bits(W)+bits(a), bits(b))` ([`forward_bound_bits`]) and
//! `|q| < m·2^(bits(δ)+bits(W))` ([`backward_bound_bits`]). If `B·β` does not fit
//! `|N_c| − 2` bits, the batch is split into groups of `k` samples (the last one may be
//! smaller), each with its own ciphertexts: a message then holds `groups · width`
//! ciphertexts, group-major.
//!
//! Weights are range-checked by the reference and by Alg. 5, so the bound holds in every
//! run the plaintext reference accepts; a value that still overflowed its slot would
//! corrupt its neighbours, and the range checks after unpacking refuse it in all but
//! contrived cases.
//!
//! # Masked updates
//!
//! `[Σ_i (η·Δ_i + r_i + G)·2^(β i)]_s = ([η]_s ⊗ Σ_i Δ_i·2^(β i)) ⊕ Enc_s(Σ_i (r_i + G)·2^(β i))`:
//! the `+G` makes each slot non-negative, so slots never borrow from each other. The
//! client computes the first factor as `Π_i E_i^{Δ_i}` with `E_i = [η]_s^{2^(β i)}`
//! computed once per session, a shared-base multi-exponentiation with small exponents.
//! The server decrypts one plaintext per ciphertext, unpacks, subtracts `G` per slot
//! ([`MaskMode::interpret_slot`]) and goes on exactly as without packing.

use ndarray::ArrayView2;
use num_bigint::{BigInt, BigUint};
use num_integer::Integer;
use num_traits::{One, Zero};

use crate::fixed::{Scales, ValueKind};
use crate::linear_layer::LinearLayer;
use crate::mask::MaskMode;
use crate::messages::{Packing, UpdatePacking};
use crate::spec::ModelSpec;
use crate::{Error, Result};

/// Bits of headroom kept below `|N|` in every packed plaintext: with `k·β ≤ |N| − 2`, a
/// packed value of signed slots stays below `N/2` in magnitude and one of non-negative
/// slots below `N`, so it decodes without wrapping.
pub const PACKING_MARGIN_BITS: u32 = 2;

/// How many `slot_bits`-wide slots fit a plaintext of a `key_bits`-bit modulus.
pub fn slots_per_plaintext(key_bits: u64, slot_bits: u32) -> u32 {
    if slot_bits == 0 {
        return 1;
    }
    let k = key_bits.saturating_sub(u64::from(PACKING_MARGIN_BITS)) / u64::from(slot_bits);
    u32::try_from(k).unwrap_or(u32::MAX)
}

/// The largest mini-batch size `B` for `spec` with clients' keys of `key_bits` bits:
/// at most the smallest fan-in (one iteration per session then keeps `d·B ≤ min_i n_i`,
/// docs/DESIGN.md "Sessions and the d_max bound") and at most the samples one plaintext
/// holds ([`sample_packing`], docs/DESIGN.md "Batches and packing"), and
/// at least 1.
pub fn largest_batch_size(spec: &ModelSpec, scales: &Scales, key_bits: u64) -> usize {
    let bound = crate::schedule::session_bound(spec, 1);
    let slots = slots_per_plaintext(key_bits, sample_slot_bits(spec, scales)) as usize;
    bound.min(slots).max(1)
}

/// Number of bits of `x` (`0` for `0`).
fn bits_of(x: usize) -> u32 {
    usize::BITS - x.leading_zeros()
}

/// `b` with `|z| < 2^b` for every pre-activation of a layer of fan-in `fan_in` whose
/// weights, biases and inputs are within the scales' ranges:
/// `max(bits(W) + bits(a), bits(b)) + bits(fan_in + 1)`.
pub fn forward_bound_bits(scales: &Scales, fan_in: usize) -> u32 {
    let prod = scales.max_bits(ValueKind::Weight) + scales.max_bits(ValueKind::Activation);
    prod.max(scales.max_bits(ValueKind::Bias)) + bits_of(fan_in.saturating_add(1))
}

/// `b` with `|q| < 2^b` for every backward product through a layer of width `width`:
/// `bits(δ) + bits(W) + bits(width)`.
pub fn backward_bound_bits(scales: &Scales, width: usize) -> u32 {
    scales.max_bits(ValueKind::Error) + scales.max_bits(ValueKind::Weight) + bits_of(width)
}

/// The signed slot width of sample packing for a whole network: one more bit than the
/// largest forward or backward bound of any layer (a conv layer's bounds count the terms
/// of one output, [`LinearLayer::forward_terms`] and [`LinearLayer::backward_terms`]).
pub fn sample_slot_bits(spec: &ModelSpec, scales: &Scales) -> u32 {
    let mut b = 0;
    for i in 1..=spec.num_layers() {
        // A dense layer's terms are its fan-in and width, as before conv layers existed.
        let (fwd, bwd) = match LinearLayer::of(spec, i) {
            Ok(l) if !l.is_dense() => (l.forward_terms() - 1, l.backward_terms()),
            _ => {
                let (m, n) = spec.layer_shape(i);
                (n, m)
            }
        };
        b = b.max(forward_bound_bits(scales, fwd));
        if i >= 2 {
            b = b.max(backward_bound_bits(scales, bwd));
        }
    }
    b + 1
}

/// The sample packing of a training run: [`Packing::NONE`] when packing is off, for
/// batches of one sample, or when fewer than two slots fit; otherwise
/// `min(k, B)` samples per ciphertext in slots of [`sample_slot_bits`].
pub fn sample_packing(
    spec: &ModelSpec,
    scales: &Scales,
    batch: usize,
    client_key_bits: u64,
    enabled: bool,
) -> Packing {
    if !enabled || batch < 2 {
        return Packing::NONE;
    }
    let beta = sample_slot_bits(spec, scales);
    let k = (slots_per_plaintext(client_key_bits, beta) as usize).min(batch);
    if k < 2 {
        return Packing::NONE;
    }
    Packing {
        samples_per_ciphertext: k as u32,
        slot_bits: beta,
    }
}

/// The *position packing* of a single-sample inference request for conv layer `layer`
/// (docs/DESIGN.md "Convolutional layers", inference): the request carries the packed
/// columns of [`LinearLayer::im2col`], output positions in signed slots of
/// `forward_bound_bits(forward_terms − 1) + 1` bits, as many per ciphertext as fit; the
/// answer one ciphertext per filter and group of positions. [`Packing::NONE`] for a dense
/// layer, a layer outside the spec, or when fewer than two slots fit.
pub fn position_packing(
    spec: &ModelSpec,
    scales: &Scales,
    layer: usize,
    client_key_bits: u64,
) -> Packing {
    let Ok(map) = LinearLayer::of(spec, layer) else {
        return Packing::NONE;
    };
    if map.is_dense() {
        return Packing::NONE;
    }
    let beta = forward_bound_bits(scales, map.forward_terms() - 1) + 1;
    let k = (slots_per_plaintext(client_key_bits, beta) as usize).min(map.output_positions());
    if k < 2 {
        return Packing::NONE;
    }
    Packing {
        samples_per_ciphertext: k as u32,
        slot_bits: beta,
    }
}

/// The sample packing of an inference request of `samples` samples (as
/// [`sample_packing`]).
pub fn inference_packing(
    spec: &ModelSpec,
    scales: &Scales,
    samples: usize,
    client_key_bits: u64,
    enabled: bool,
) -> Packing {
    sample_packing(spec, scales, samples, client_key_bits, enabled)
}

/// The largest row packing of one sample's `width` pre-activations of a layer of fan-in
/// `fan_in`, for inference (no masks): slots of [`forward_bound_bits`] `+ 1` bits holding
/// `z + 2^(β−1) ≥ 0`. [`Packing::NONE`] if fewer than two rows fit. The server may use
/// narrower slots ([`inference_row_packing`]); the client accepts any layout that
/// [`row_packing_is_valid`] allows.
pub fn row_packing(scales: &Scales, fan_in: usize, width: usize, client_key_bits: u64) -> Packing {
    row_packing_with_slots(
        forward_bound_bits(scales, fan_in) + 1,
        width,
        client_key_bits,
    )
}

/// Row packing with slots of `slot_bits` bits: `min(⌊(|N_c| − 2)/β⌋, width)` rows per
/// ciphertext, [`Packing::NONE`] if fewer than two fit.
pub fn row_packing_with_slots(slot_bits: u32, width: usize, client_key_bits: u64) -> Packing {
    let k = (slots_per_plaintext(client_key_bits, slot_bits) as usize).min(width.max(1));
    if k < 2 || slot_bits < 2 {
        return Packing::NONE;
    }
    Packing {
        samples_per_ciphertext: k as u32,
        slot_bits,
    }
}

/// The row packing the server uses for layer `layer` (1-based) of `spec`, with its
/// weights `w` (`width × fan_in`, at `2^fw`) and biases `b` (at `2^(fa+fw)`): slots of
/// `β = bits(max_j Σ_k |w_jk|·A + |b_j|) + 1` bits, where `A` bounds the layer's inputs —
/// `2^fa` after a sigmoid or tanh layer (`|f(z)| ≤ 1`), `2^max_bits(Activation)` otherwise —
/// capped at the static width of [`row_packing`]. Every pre-activation of an input within
/// the scales' ranges then satisfies `|z_j| < 2^(β−1)`.
///
/// Narrower slots mean fewer squarings in the server's Horner packing (`β` per row). The
/// width tells the client a bound on the row sums `Σ_k |w_jk|`, far less than the
/// pre-activations it decrypts anyway. Values that do not fit `i128` fall back to the
/// static width.
pub fn inference_row_packing(
    spec: &ModelSpec,
    scales: &Scales,
    layer: usize,
    w: ArrayView2<'_, i128>,
    b: &[i128],
    client_key_bits: u64,
) -> Packing {
    let (width, fan_in) = (w.nrows(), w.ncols());
    let max_beta = forward_bound_bits(scales, fan_in) + 1;
    let input_bits = match layer.checked_sub(1).and_then(|l| spec.activation(l)) {
        Some(crate::Activation::Sigmoid | crate::Activation::Tanh) => scales.fa,
        _ => scales.max_bits(ValueKind::Activation),
    };
    let bound = w
        .rows()
        .into_iter()
        .zip(b.iter().chain(std::iter::repeat(&0)))
        .try_fold(0u128, |max, (row, &bj)| {
            let sum = row
                .iter()
                .try_fold(0u128, |acc, &x| acc.checked_add(x.unsigned_abs()))?;
            let z = sum
                .checked_mul(1u128.checked_shl(input_bits)?)?
                .checked_add(bj.unsigned_abs())?;
            Some(max.max(z))
        });
    let beta = match bound {
        Some(v) => (u128::BITS - v.leading_zeros() + 1).clamp(2, max_beta),
        None => max_beta,
    };
    row_packing_with_slots(beta, width, client_key_bits)
}

/// Whether `found`, the row packing of an answer for a layer of fan-in `fan_in` and
/// width `width`, is one the client accepts: the layout [`row_packing_with_slots`] gives
/// for its slot width, with that width at most the static one of [`row_packing`]
/// (narrower slots are the server's choice, [`inference_row_packing`]); or no row packing
/// when the static layout has none.
pub fn row_packing_is_valid(
    found: Packing,
    scales: &Scales,
    fan_in: usize,
    width: usize,
    client_key_bits: u64,
) -> bool {
    let max = row_packing(scales, fan_in, width, client_key_bits);
    if max == Packing::NONE || found == Packing::NONE {
        return found == max;
    }
    found.slot_bits <= max.slot_bits
        && found == row_packing_with_slots(found.slot_bits, width, client_key_bits)
}

/// The sizes of the groups `values` values fall into with `per` per ciphertext (the last
/// group may be smaller).
pub fn group_sizes(values: usize, per: u32) -> Vec<usize> {
    let per = (per as usize).max(1);
    let mut out = Vec::with_capacity(values.div_ceil(per));
    let mut left = values;
    while left > 0 {
        let g = left.min(per);
        out.push(g);
        left -= g;
    }
    out
}

/// `Σ_i v_i·2^(β i)` for signed values (`v_0` itself when there is one value).
pub fn pack_signed(values: &[BigInt], slot_bits: u32) -> BigInt {
    let mut acc = BigInt::zero();
    for v in values.iter().rev() {
        acc = (acc << slot_bits) + v;
    }
    acc
}

/// `Σ_i v_i·2^(β i)` for non-negative values.
pub fn pack_unsigned(values: &[BigUint], slot_bits: u32) -> BigUint {
    let mut acc = BigUint::zero();
    for v in values.iter().rev() {
        acc = (acc << slot_bits) + v;
    }
    acc
}

/// `S = Σ_{s < count} 2^(β s)`, the packed plaintext with a 1 in every slot (the bias
/// multiplier of sample packing).
pub fn slot_sum(count: usize, slot_bits: u32) -> BigUint {
    let mut acc = BigUint::zero();
    for _ in 0..count {
        acc = (acc << slot_bits) + 1u8;
    }
    acc
}

/// Splits `v = Σ_i v_i·2^(β i)` into `count` signed slots `v_i ∈ [−2^(β−1), 2^(β−1))`.
/// With one slot of width 0 (no packing) it returns `[v]`.
///
/// # Errors
/// [`Error::Packing`] if something remains above the last slot (a value did not fit).
pub fn unpack_signed(v: &BigInt, count: usize, slot_bits: u32) -> Result<Vec<BigInt>> {
    if slot_bits == 0 {
        if count != 1 {
            return Err(Error::Packing {
                reason: format!("{count} values in slots of 0 bits"),
            });
        }
        return Ok(vec![v.clone()]);
    }
    let modulus = BigInt::one() << slot_bits;
    let half = BigInt::one() << (slot_bits - 1);
    let mut rest = v.clone();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut low = rest.mod_floor(&modulus);
        if low >= half {
            low -= &modulus;
        }
        rest = (rest - &low) >> slot_bits;
        out.push(low);
    }
    if !rest.is_zero() {
        return Err(Error::Packing {
            reason: format!("a {}-bit excess above {count} slots", rest.bits()),
        });
    }
    Ok(out)
}

/// Splits `v = Σ_i v_i·2^(β i)` into `count` non-negative slots of `β` bits.
///
/// # Errors
/// [`Error::Packing`] if `v ≥ 2^(β·count)` or `β = 0`.
pub fn unpack_unsigned(v: &BigUint, count: usize, slot_bits: u32) -> Result<Vec<BigUint>> {
    if slot_bits == 0 {
        return Err(Error::Packing {
            reason: "slots of 0 bits".into(),
        });
    }
    if v.bits() > u64::from(slot_bits) * count as u64 {
        return Err(Error::Packing {
            reason: format!(
                "a {}-bit value in {count} slots of {slot_bits} bits",
                v.bits()
            ),
        });
    }
    let mask = (BigUint::one() << slot_bits) - 1u8;
    Ok((0..count)
        .map(|i| (v >> (slot_bits as usize * i)) & &mask)
        .collect())
}

/// Packs a `B × n` matrix of signed values by groups of samples: returns the
/// `groups · n` plaintexts `P_{g,k} = Σ_s v_{s,k}·2^(β s)` (group-major) and the group
/// sizes. Without packing, the values themselves, sample-major.
pub fn pack_samples(v: ArrayView2<'_, i128>, packing: Packing) -> (Vec<BigInt>, Vec<usize>) {
    let groups = group_sizes(v.nrows(), packing.samples_per_ciphertext);
    let n = v.ncols();
    let mut out = Vec::with_capacity(groups.len() * n);
    let mut start = 0;
    for &g in &groups {
        for k in 0..n {
            let vals: Vec<BigInt> = (start..start + g)
                .map(|s| BigInt::from(v[[s, k]]))
                .collect();
            out.push(pack_signed(&vals, packing.slot_bits));
        }
        start += g;
    }
    (out, groups)
}

/// The slot width of the packed masked update for a mask with `G = 2^g`:
/// `σ + g + 1` (statistical: `η·Δ + r + G ∈ (0, 2^(σ+g) + 2G)`), `g + 1` (none:
/// `η·Δ + G ∈ (0, 2G)`), `None` for the uniform mask (`r` has `|N_s|` bits).
pub fn mask_slot_bits(mode: MaskMode, g_bits: u32) -> Option<u32> {
    match mode {
        MaskMode::Statistical { sigma } => Some(sigma + g_bits + 1),
        MaskMode::InsecureNone => Some(g_bits + 1),
        MaskMode::Uniform => None,
    }
}

/// `Σ_i (r_i + G)·2^(β i)`, the plaintext of the fresh encryption in a packed masked
/// update (client side of Alg. 3).
pub fn mask_plaintext(rs: &[BigUint], g_bits: u32, slot_bits: u32) -> BigUint {
    let g = BigUint::one() << g_bits;
    let shifted: Vec<BigUint> = rs.iter().map(|r| r + &g).collect();
    pack_unsigned(&shifted, slot_bits)
}

/// Unpacks decrypted masked updates (server side of Alg. 3): `raw[c]` is the plaintext of
/// ciphertext `c`; returns the `total` values `D_i = η·Δ_i + r_i`, each checked by
/// [`MaskMode::interpret_decrypted`] (unpacked) or [`MaskMode::interpret_slot`] (packed).
///
/// # Errors
/// [`Error::Packing`] for a plaintext that does not fit its slots;
/// [`Error::MaskOutOfRange`] for a value outside the mode's interval;
/// [`Error::ShapeMismatch`] if `raw` has the wrong number of plaintexts.
pub fn unpack_masked(
    mode: MaskMode,
    g_bits: u32,
    n_s: &BigUint,
    packing: Packing,
    raw: &[BigUint],
    total: usize,
) -> Result<Vec<BigInt>> {
    let groups = group_sizes(total, packing.samples_per_ciphertext);
    check_count(groups.len(), raw.len())?;
    if packing == Packing::NONE {
        return raw
            .iter()
            .map(|d| mode.interpret_decrypted(g_bits, n_s, d))
            .collect();
    }
    let mut out = Vec::with_capacity(total);
    for (d, &count) in raw.iter().zip(&groups) {
        for slot in unpack_unsigned(d, count, packing.slot_bits)? {
            out.push(mode.interpret_slot(g_bits, &slot)?);
        }
    }
    Ok(out)
}

fn check_count(expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::ShapeMismatch {
            what: "packed ciphertexts",
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }
    Ok(())
}

/// `2^max_bits(kind)`, the shift of the final update's slots.
pub fn final_shift(scales: &Scales, kind: ValueKind) -> BigUint {
    BigUint::one() << scales.max_bits(kind)
}

/// `Σ_i (v_i + 2^max_bits)·2^(β i)` for the final update (client side of Alg. 5).
///
/// # Errors
/// [`Error::OutOfRange`] for a value outside the kind's range.
pub fn final_plaintext(
    scales: &Scales,
    kind: ValueKind,
    values: &[i128],
    slot_bits: u32,
) -> Result<BigUint> {
    let shift = BigInt::from(final_shift(scales, kind));
    let shifted = values
        .iter()
        .map(|&v| {
            scales.check(kind, v)?;
            Ok((BigInt::from(v) + &shift).magnitude().clone())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(pack_unsigned(&shifted, slot_bits))
}

/// Unpacks a decrypted packed final update (server side of Alg. 5): the `total` signed
/// values, each range-checked as `kind`.
///
/// # Errors
/// [`Error::Packing`], [`Error::OutOfRange`], [`Error::ShapeMismatch`].
pub fn unpack_final(
    scales: &Scales,
    kind: ValueKind,
    packing: Packing,
    raw: &[BigUint],
    total: usize,
) -> Result<Vec<i128>> {
    let groups = group_sizes(total, packing.samples_per_ciphertext);
    check_count(groups.len(), raw.len())?;
    let shift = BigInt::from(final_shift(scales, kind));
    let mut out = Vec::with_capacity(total);
    for (d, &count) in raw.iter().zip(&groups) {
        for slot in unpack_unsigned(d, count, packing.slot_bits)? {
            out.push(scales.check_big(kind, &(BigInt::from(slot) - &shift))?);
        }
    }
    Ok(out)
}

impl UpdatePacking {
    /// The layout of the masked updates (Alg. 3) for `mode` with a server key of
    /// `server_key_bits` bits: [`mask_slot_bits`] per target, as many slots as fit;
    /// [`UpdatePacking::NONE`] when `enabled` is false or for the uniform mask.
    pub fn masked(mode: MaskMode, scales: &Scales, server_key_bits: u64, enabled: bool) -> Self {
        use crate::mask::MaskTarget;
        let one = |target| {
            let g = MaskMode::g_bits(scales, target);
            match mask_slot_bits(mode, g) {
                Some(beta) if enabled => layout(server_key_bits, beta),
                _ => Packing::NONE,
            }
        };
        Self {
            weights: one(MaskTarget::Weight),
            biases: one(MaskTarget::Bias),
        }
    }

    /// The layout of the final update (Alg. 5): slots of `max_bits + 1` bits;
    /// [`UpdatePacking::NONE`] when `enabled` is false.
    pub fn final_update(scales: &Scales, server_key_bits: u64, enabled: bool) -> Self {
        if !enabled {
            return Self::NONE;
        }
        let one = |kind| layout(server_key_bits, scales.max_bits(kind) + 1);
        Self {
            weights: one(ValueKind::WeightGradient),
            biases: one(ValueKind::BiasGradient),
        }
    }

    /// The number of ciphertexts for `m · n` weights and `m` biases.
    pub fn counts(&self, m: usize, n: usize) -> (usize, usize) {
        (
            group_sizes(m * n, self.weights.samples_per_ciphertext).len(),
            group_sizes(m, self.biases.samples_per_ciphertext).len(),
        )
    }
}

fn layout(key_bits: u64, beta: u32) -> Packing {
    let k = slots_per_plaintext(key_bits, beta);
    if k < 2 {
        Packing::NONE
    } else {
        Packing {
            samples_per_ciphertext: k,
            slot_bits: beta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_is_bounded_by_the_fan_in_and_the_packing() {
        let scales = Scales::default();
        let iris = ModelSpec::new(vec![4, 12, 3], crate::Activation::Sigmoid);
        assert_eq!(largest_batch_size(&iris, &scales, 2048), 4);
        let krkp = ModelSpec::new(vec![38, 12, 2], crate::Activation::Sigmoid);
        assert_eq!(largest_batch_size(&krkp, &scales, 2048), 12);
        // A small key holds fewer slots than the fan-in allows.
        let wide = ModelSpec::new(vec![784, 128, 10], crate::Activation::Sigmoid);
        let slots = slots_per_plaintext(512, sample_slot_bits(&wide, &scales)) as usize;
        assert!(slots < 128, "{slots}");
        assert_eq!(largest_batch_size(&wide, &scales, 512), slots.max(1));
    }

    #[test]
    fn inference_row_packing_bounds_every_pre_activation_and_is_accepted() {
        use crate::Activation;
        use ndarray::array;
        let scales = Scales::default();
        let spec = ModelSpec::new(vec![3, 4, 2], Activation::Sigmoid);
        let fw = 1i128 << scales.fw;
        // Layer 1: inputs up to the activation range; row sums 3.5 and 0.25.
        let w1 = array![
            [fw, -2 * fw, fw / 2],
            [fw / 4, 0, 0],
            [0, 0, 0],
            [-fw, fw, fw]
        ];
        let b1 = [1i128 << 50, 0, 0, -(1i128 << 40)];
        let p1 = inference_row_packing(&spec, &scales, 1, w1.view(), &b1, 2048);
        let a_max = (1i128 << scales.max_bits(ValueKind::Activation)) - 1;
        for (row, &b) in w1.rows().into_iter().zip(&b1) {
            // The worst input: each |a_k| at the bound with the weight's sign.
            let z: i128 = row.iter().map(|&w| w.abs() * a_max).sum::<i128>() + b.abs();
            assert!(z < 1i128 << (p1.slot_bits - 1));
        }
        let max1 = row_packing(&scales, 3, 4, 2048);
        assert!(p1.slot_bits < max1.slot_bits, "{p1:?} vs {max1:?}");
        assert!(row_packing_is_valid(p1, &scales, 3, 4, 2048));
        // Layer 2 follows a sigmoid: inputs in [0, 2^fa], narrower still.
        let w2 = array![[fw, fw, fw, fw], [-fw, 0, 0, 0]];
        let p2 = inference_row_packing(&spec, &scales, 2, w2.view(), &[0, 0], 2048);
        // Σ|w| = 4 at 2^fw, times 2^fa: a value of fw + fa + 3 bits, plus the sign bit.
        assert_eq!(p2.slot_bits, scales.fw + scales.fa + 3 + 1);
        assert!(row_packing_is_valid(p2, &scales, 4, 2, 2048));
        // Weights too large for i128 arithmetic fall back to the static width.
        let huge = array![[i128::MAX / 2, i128::MAX / 2, 0, 0]];
        let spec1 = ModelSpec::new(vec![4, 1], Activation::Sigmoid);
        let p = inference_row_packing(&spec1, &scales, 1, huge.view(), &[0], 2048);
        assert_eq!(p, row_packing(&scales, 4, 1, 2048));
        // The client refuses wider slots, a row count that does not follow from the width,
        // and a missing packing where one fits.
        let wider = Packing {
            slot_bits: max1.slot_bits + 1,
            ..max1
        };
        assert!(!row_packing_is_valid(wider, &scales, 3, 4, 2048));
        let odd = Packing {
            samples_per_ciphertext: 3,
            ..p1
        };
        assert!(!row_packing_is_valid(odd, &scales, 3, 4, 2048));
        assert!(!row_packing_is_valid(Packing::NONE, &scales, 3, 4, 2048));
        assert!(row_packing_is_valid(max1, &scales, 3, 4, 2048));
    }

    #[test]
    fn signed_round_trip() {
        let vals: Vec<BigInt> = [-5i64, 7, -(1 << 40), 0, (1 << 40) - 1]
            .iter()
            .map(|&v| BigInt::from(v))
            .collect();
        let p = pack_signed(&vals, 42);
        assert_eq!(unpack_signed(&p, 5, 42).ok(), Some(vals.clone()));
        assert!(unpack_signed(&p, 4, 42).is_err());
        assert_eq!(
            unpack_signed(&BigInt::from(-3), 1, 0).ok(),
            Some(vec![BigInt::from(-3)])
        );
        assert_eq!(group_sizes(7, 3), vec![3, 3, 1]);
        assert_eq!(group_sizes(0, 3), Vec::<usize>::new());
        assert_eq!(slot_sum(3, 4), BigUint::from(0x111u32));
    }

    #[test]
    fn unsigned_round_trip_and_overflow() {
        let vals: Vec<BigUint> = [3u32, 0, 255, 17]
            .iter()
            .map(|&v| BigUint::from(v))
            .collect();
        let p = pack_unsigned(&vals, 8);
        assert_eq!(unpack_unsigned(&p, 4, 8).ok(), Some(vals));
        assert!(unpack_unsigned(&p, 3, 8).is_err());
    }
}
