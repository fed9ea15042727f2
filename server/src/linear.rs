//! The server's linear layers on ciphertexts under `PK_c`, dense and convolutional
//! (paper Alg. 1 line 5 and Alg. 2 line 6; docs/DESIGN.md "Convolutional layers").
//!
//! A dense layer is one matrix–vector product, `[z~] = W~ ⊗ [a]`
//! ([`PublicKey::matvec`]), and its backward product `[q~] = [δ]ᵀ ⊗ W~`
//! ([`PublicKey::vecmat`]). A convolution is one small product per output position `p`
//! over the kernel matrix `W~` (`f × c·k·k`, [`LinearLayer::position_taps`]):
//!
//! ```text
//! forward    [z~[·, p]] = W~[·, cols(p)] ⊗ [a[in(p, ·)]]          (f outputs of position p)
//!            pooled: [Σ_window] = Π_window [z~]                   (no exponentiation)
//! backward   [c_p] = [δ[·, p]]ᵀ ⊗ W~[·, cols(p)]                  (one per column of p)
//!            [q~[i]] = Π_{(p, u) : in(p, u) = i} [c_p[u]]         (col2im; [0] = 1 if none)
//! ```
//!
//! with the pooled errors copied to the window's four positions first. Positions run in
//! parallel; every product is a shared-base multi-exponentiation. Biases are the
//! callers' (Alg. 1 adds `b~·mult·Σ_s 2^(β s)` per output, [`LinearLayer::bias_multiplicity`]).
//!
//! 1. *Private input* (server): the masked kernel matrix `W~` of the session (or, at
//!    inference, the true weights).
//! 2. *Public input*: `PK_c`, the layer's geometry (in the spec), the ciphertexts.

use gelunet_paillier::{BigInt, BigUint, Ciphertext, PublicKey};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::mask::reduce_centered;
use ndarray::{Array2, Axis};
use num_traits::One;
use rayon::prelude::*;

use crate::error::Result;

/// `W~[·, cols]` for a position whose taps leave out some columns (zero padding), or
/// `None` when it has them all.
fn columns_of(w: &Array2<BigInt>, taps: &[(usize, usize)]) -> Option<Array2<BigInt>> {
    (taps.len() != w.ncols()).then(|| {
        let cols: Vec<usize> = taps.iter().map(|&(u, _)| u).collect();
        w.select(Axis(1), &cols)
    })
}

/// The (pooled) linear outputs `pool(conv([a], W))` of one sample or group of packed
/// samples: `layer.width()` ciphertexts, output order as [`LinearLayer`] (filter-major),
/// without biases.
///
/// # Errors
/// Shape and ciphertext errors of the products.
pub(crate) fn forward(
    pk: &PublicKey,
    layer: &LinearLayer,
    w: &Array2<BigInt>,
    input: &[Ciphertext],
) -> Result<Vec<Ciphertext>> {
    if layer.is_dense() {
        return Ok(pk.matvec(w.view(), input)?);
    }
    let positions = layer.positions();
    let per_position = (0..positions)
        .into_par_iter()
        .map(|p| {
            let taps = layer.position_taps(p);
            let bases: Vec<Ciphertext> = taps.iter().map(|&(_, i)| input[i].clone()).collect();
            Ok(match columns_of(w, &taps) {
                Some(sub) => pk.matvec(sub.view(), &bases)?,
                None => pk.matvec(w.view(), &bases)?,
            })
        })
        .collect::<Result<Vec<Vec<Ciphertext>>>>()?;
    let conv: Vec<&Ciphertext> = (0..layer.filters() * positions)
        .map(|o| &per_position[o % positions][o / positions])
        .collect();
    let Some(pool) = layer.pool() else {
        return Ok(conv.into_iter().cloned().collect());
    };
    (0..layer.width())
        .into_par_iter()
        .map(|o| {
            let window = pool.window(o).unwrap_or_default();
            let mut acc = conv[window[0]].clone();
            for &i in &window[1..] {
                acc = pk.add(&acc, conv[i])?;
            }
            Ok(acc)
        })
        .collect()
}

/// The backward products `convᵀ(pool_back([δ]), W)` of one sample or group: for the
/// `layer.width()` error ciphertexts, `layer.fan_in()` ciphertexts (an input no tap
/// touches gets `1`, the trivial encryption of 0).
///
/// # Errors
/// Shape and ciphertext errors of the products.
pub(crate) fn transpose(
    pk: &PublicKey,
    layer: &LinearLayer,
    w: &Array2<BigInt>,
    delta: &[Ciphertext],
) -> Result<Vec<Ciphertext>> {
    if layer.is_dense() {
        return Ok(pk.vecmat(delta, w.view())?);
    }
    let unpooled = match layer.pool() {
        Some(pool) => pool.backward(delta)?,
        None => delta.to_vec(),
    };
    let positions = layer.positions();
    let contributions = (0..positions)
        .into_par_iter()
        .map(|p| {
            let taps = layer.position_taps(p);
            let errors: Vec<Ciphertext> = (0..layer.filters())
                .map(|f| unpooled[layer.conv_output(f, p)].clone())
                .collect();
            let c = match columns_of(w, &taps) {
                Some(sub) => pk.vecmat(&errors, sub.view())?,
                None => pk.vecmat(&errors, w.view())?,
            };
            Ok(taps.into_iter().map(|(_, i)| i).zip(c).collect())
        })
        .collect::<Result<Vec<Vec<(usize, Ciphertext)>>>>()?;
    let mut q: Vec<Option<Ciphertext>> = vec![None; layer.fan_in()];
    for (i, c) in contributions.into_iter().flatten() {
        q[i] = Some(match q[i].take() {
            Some(acc) => pk.add(&acc, &c)?,
            None => c,
        });
    }
    q.into_iter()
        .map(|c| match c {
            Some(c) => Ok(c),
            None => Ok(pk.ciphertext_from_raw(BigUint::one())?),
        })
        .collect()
}

/// `[z_o] ⊕ b_{f(o)}·mult·S` for every output `o` of `layer` (Alg. 1's biases, each
/// entering `mult` times per output, [`LinearLayer::bias_multiplicity`]; `S = Σ_s 2^(β s)`
/// over the group's slots, 1 unpacked), the plaintext reduced mod `N_c`. `filter_of(o)`
/// names the bias of output `o`.
///
/// # Errors
/// Ciphertext errors.
pub(crate) fn add_biases(
    pk: &PublicKey,
    z: Vec<Ciphertext>,
    biases: &[BigInt],
    filter_of: impl Fn(usize) -> usize + Sync,
    factor: &BigInt,
) -> Result<Vec<Ciphertext>> {
    let one = BigInt::one();
    z.into_par_iter()
        .enumerate()
        .map(|(o, c)| {
            let b = &biases[filter_of(o)];
            let plain = if factor == &one {
                b.clone()
            } else {
                reduce_centered(&(b * factor), pk.n())
            };
            Ok(pk.add_plain(&c, &plain)?)
        })
        .collect()
}
