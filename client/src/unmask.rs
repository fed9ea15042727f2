//! Paper Alg. 4, randomness cancellation by the client (docs/DESIGN.md "One
//! iteration"): the server computed with `w~ = w − R^w`, `b~ = b − R^b`, so the client
//! adds the masks back mod `N_c` before anything else touches the values:
//!
//! ```text
//! forward   z = z~ + R^w·a + R^b (mod N_c)        = W·a + b
//! backward  q = q~ + δ·R^w       (mod N_c)        = δ·W
//! ```
//!
//! With sample packing the masks are removed from the packed plaintexts
//! (`z~ + Σ_k R_jk·P_k + R^b_j·Σ_s 2^(β s)`) before they are split into the samples'
//! signed slots. A conv layer is the same with its own index map
//! ([`gelunet_protocol::linear_layer`]): `z = z~ + pool(conv(a, R^w) + R^b)` forward,
//! `q = q~ + convᵀ(pool_back(δ), R^w)` backward, on the packed values mod `N_c`.
//!
//! 1. *Private input* (client): the decrypted `z~` or `q~`, the ledger `R^w, R^b`
//!    ([`crate::ledger`]), its own `a` or `δ`.
//! 2. *Public input*: `N_c`, the sample packing, the scales.
//! 3. *Sent*: nothing (the result stays with the client).

use gelunet_paillier::{BigInt, BigUint};
use gelunet_protocol::linear_layer::LinearLayer;
use gelunet_protocol::mask::{centered, mod_n};
use gelunet_protocol::messages::Packing;
use gelunet_protocol::packing::{pack_samples, slot_sum, unpack_signed};
use gelunet_protocol::{Scales, ValueKind};
use ndarray::{Array1, Array2};
use num_traits::Zero;
use rayon::prelude::*;

use crate::error::Result;
use crate::role::expect_len;

/// Where the unmasked values go: their kind and the extra fractional bits a pooled conv
/// layer adds ([`LinearLayer::pool_bits`]), for the range check.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) scales: &'a Scales,
    pub(crate) kind: ValueKind,
    pub(crate) extra_bits: u32,
}

/// The mask term of one group of packed inputs `P` (mod `N_c`), `S = Σ_s 2^(β s)` over
/// its samples: one value per output.
type Terms<'f> = dyn Fn(&[BigUint], &BigUint) -> Result<Vec<BigUint>> + Sync + 'f;

/// The ledger's `f × c·k·k` masks as the flat kernel the index map walks.
fn flat(rw: &Array2<BigUint>) -> Result<&[BigUint]> {
    Ok(rw
        .as_slice()
        .ok_or(gelunet_protocol::Error::ShapeMismatch {
            what: "ledger layout",
            expected: "standard layout".into(),
            found: "strided".into(),
        })?)
}

/// Forward (Alg. 4): the term `pool(conv(P, R^w) + R^b·S)` of every output of `layer`
/// (dense: `R^w·P + R^b·S`), outputs in parallel.
pub(crate) fn forward_terms<'f>(
    layer: &'f LinearLayer,
    rw: &'f Array2<BigUint>,
    rb: &'f Array1<BigUint>,
) -> Result<Box<Terms<'f>>> {
    let kernel = flat(rw)?;
    Ok(Box::new(move |packed: &[BigUint], s_sum: &BigUint| {
        (0..layer.width())
            .into_par_iter()
            .map(|o| {
                Ok(layer.output_with(
                    o,
                    packed,
                    kernel,
                    |f, mult| {
                        Ok(if rb[f].is_zero() {
                            BigUint::zero()
                        } else {
                            &rb[f] * s_sum * mult
                        })
                    },
                    |acc, r, p| {
                        if !r.is_zero() {
                            *acc += r * p;
                        }
                        Ok(())
                    },
                )?)
            })
            .collect()
    }))
}

/// Backward (Alg. 4): the term `convᵀ(pool_back(P), R^w)` of every input of `layer`
/// (dense: `Pᵀ·R^w`, columns in parallel).
pub(crate) fn backward_terms<'f>(
    layer: &'f LinearLayer,
    rw: &'f Array2<BigUint>,
) -> Result<Box<Terms<'f>>> {
    let kernel = flat(rw)?;
    Ok(Box::new(move |packed: &[BigUint], _: &BigUint| {
        if layer.is_dense() {
            return Ok((0..rw.ncols())
                .into_par_iter()
                .map(|k| {
                    let mut acc = BigUint::zero();
                    for (j, p) in packed.iter().enumerate() {
                        let r = &rw[[j, k]];
                        if !r.is_zero() {
                            acc += r * p;
                        }
                    }
                    acc
                })
                .collect());
        }
        Ok(
            layer.transpose_with(packed, kernel, BigUint::zero, |acc, p, r| {
                if !r.is_zero() {
                    *acc += r * p;
                }
                Ok(())
            })?,
        )
    }))
}

/// Removes the masks mod `N_c` from decrypted packed values and unpacks them (Alg. 4 with
/// sample packing): for group `g` and output `o`, `raw[g·out + o] + terms(P_g, S_g)[o]`,
/// centered, split into the group's signed slots and range-checked as `target`.
/// `inputs` is the `B × in` matrix the request carried (packed here exactly as it was
/// for encryption).
///
/// # Errors
/// [`gelunet_protocol::ProtocolViolation::Shape`] for a wrong count; range errors for
/// slots or values out of range.
pub(crate) fn unmask_unpack(
    raw: &[BigUint],
    inputs: &Array2<i128>,
    packing: Packing,
    n_c: &BigUint,
    out: usize,
    terms: &Terms<'_>,
    target: Target<'_>,
) -> Result<Array2<i128>> {
    let (packed, groups) = pack_samples(inputs.view(), packing);
    let inn = inputs.ncols();
    let packed: Vec<BigUint> = packed.iter().map(|p| mod_n(p, n_c)).collect();
    expect_len("packed values", groups.len() * out, raw.len())?;
    let mut slots: Vec<Vec<BigInt>> = Vec::with_capacity(raw.len());
    for (g, &size) in groups.iter().enumerate() {
        let s_sum = slot_sum(size, packing.slot_bits);
        let t = terms(&packed[g * inn..(g + 1) * inn], &s_sum)?;
        expect_len("mask terms", out, t.len())?;
        let group: Vec<Vec<BigInt>> = t
            .into_par_iter()
            .zip(&raw[g * out..(g + 1) * out])
            .map(|(t, r)| {
                Ok(unpack_signed(
                    &centered(&(t + r), n_c),
                    size,
                    packing.slot_bits,
                )?)
            })
            .collect::<Result<_>>()?;
        slots.extend(group);
    }
    let (scales, kind) = (target.scales, target.kind);
    let mut res = Array2::<i128>::zeros((inputs.nrows(), out));
    let mut start = 0;
    for (g, &size) in groups.iter().enumerate() {
        for o in 0..out {
            for (s, v) in slots[g * out + o].iter().enumerate().take(size) {
                res[[start + s, o]] = scales.check_big_with(kind, v, target.extra_bits)?;
            }
        }
        start += size;
    }
    Ok(res)
}
