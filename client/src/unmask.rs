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
//! signed slots.
//!
//! 1. *Private input* (client): the decrypted `z~` or `q~`, the ledger `R^w, R^b`
//!    ([`crate::ledger`]), its own `a` or `δ`.
//! 2. *Public input*: `N_c`, the sample packing, the scales.
//! 3. *Sent*: nothing (the result stays with the client).

use gelunet_paillier::{BigInt, BigUint};
use gelunet_protocol::mask::{centered, mod_n};
use gelunet_protocol::messages::Packing;
use gelunet_protocol::packing::{pack_samples, slot_sum, unpack_signed};
use gelunet_protocol::{Scales, ValueKind};
use ndarray::{Array1, Array2};
use num_traits::Zero;
use rayon::prelude::*;

use crate::error::Result;
use crate::role::expect_len;

/// Removes the masks mod `N_c` from decrypted packed values and unpacks them (Alg. 4 with
/// sample packing): for group `g` and output `o`,
/// `raw[g·out + o] + Σ_i coef(o, i)·P_{g,i} (+ R^b_o·S_g)`, centered, split into the
/// group's signed slots and range-checked as `kind`. `inputs` is the `B × in` matrix the
/// request carried (packed here exactly as it was for encryption).
///
/// # Errors
/// [`gelunet_protocol::ProtocolViolation::Shape`] for a wrong count; range errors for
/// slots or values out of range.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unmask_unpack<'r>(
    raw: &[BigUint],
    inputs: &Array2<i128>,
    packing: Packing,
    n_c: &BigUint,
    out: usize,
    coef: impl Fn(usize, usize) -> &'r BigUint + Sync,
    bias: Option<&'r Array1<BigUint>>,
    scales: &Scales,
    kind: ValueKind,
) -> Result<Array2<i128>> {
    let (packed, groups) = pack_samples(inputs.view(), packing);
    let inn = inputs.ncols();
    let packed: Vec<BigUint> = packed.iter().map(|p| mod_n(p, n_c)).collect();
    expect_len("packed values", groups.len() * out, raw.len())?;
    let slots: Vec<Vec<BigInt>> = (0..groups.len() * out)
        .into_par_iter()
        .map(|idx| {
            let (g, o) = (idx / out, idx % out);
            let mut acc = raw[idx].clone();
            if let Some(rb) = bias {
                if !rb[o].is_zero() {
                    acc += &rb[o] * slot_sum(groups[g], packing.slot_bits);
                }
            }
            for i in 0..inn {
                let r = coef(o, i);
                if !r.is_zero() {
                    acc += r * &packed[g * inn + i];
                }
            }
            Ok(unpack_signed(
                &centered(&acc, n_c),
                groups[g],
                packing.slot_bits,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut res = Array2::<i128>::zeros((inputs.nrows(), out));
    let mut start = 0;
    for (g, &size) in groups.iter().enumerate() {
        for o in 0..out {
            for (s, v) in slots[g * out + o].iter().enumerate().take(size) {
                res[[start + s, o]] = scales.check_big(kind, v)?;
            }
        }
        start += size;
    }
    Ok(res)
}
