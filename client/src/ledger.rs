//! The randomness ledger of paper Alg. 3–5 (docs/DESIGN.md "Parties and keys", "One
//! iteration"): the accumulated masks `R^w_i, R^b_i` mod `N_c` (paper `r^wc, r^bc`) of
//! the active session, `R ← R + r` after every masked update
//! ([`crate::masked_update`]), used to unmask every pre-activation and backward product
//! ([`crate::unmask`]).
//!
//! 1. *Private* (client): the whole ledger. Revealing it to the server unmasks the
//!    server's weights `w~ + R^w = w`; it never appears in `Debug` and is overwritten with
//!    zeros on drop (best effort).
//! 2. *Public*: its shapes (the layer shapes of the spec).
//! 3. *Sent*: nothing.

use gelunet_paillier::BigUint;
use gelunet_protocol::ModelSpec;
use ndarray::{Array1, Array2};
use num_traits::Zero;

/// A copy of the ledger: `R^w_i` (`m × n`, a conv layer's `f × c·k·k`,
/// [`ModelSpec::param_shape`]) and `R^b_i` (`m`) per layer, mod `N_c`.
pub type LedgerCopy = (Vec<Array2<BigUint>>, Vec<Array1<BigUint>>);

/// The accumulated masks `R^w_i, R^b_i` mod `N_c` (secret; zeroized on drop).
#[derive(Clone)]
pub(crate) struct Ledger {
    /// `R^w_i`, `m × n` per layer.
    pub(crate) w: Vec<Array2<BigUint>>,
    /// `R^b_i`, `m` per layer.
    pub(crate) b: Vec<Array1<BigUint>>,
}

use gelunet_protocol::version_mask::wipe;

impl Drop for Ledger {
    fn drop(&mut self) {
        self.w.iter_mut().flat_map(|a| a.iter_mut()).for_each(wipe);
        self.b.iter_mut().flat_map(|a| a.iter_mut()).for_each(wipe);
    }
}

impl Ledger {
    /// `R = P_v`: a protocol v2 session starts from the version's masks
    /// ([`gelunet_protocol::version_mask`]).
    pub(crate) fn from_masks(p: &gelunet_protocol::version_mask::VersionMasks) -> Self {
        Self {
            w: p.layers().iter().map(|l| l.weights.clone()).collect(),
            b: p.layers().iter().map(|l| l.biases.clone()).collect(),
        }
    }

    /// `R = 0` for every layer of `spec` (a session's start).
    pub(crate) fn zeros(spec: &ModelSpec) -> Self {
        let shapes: Vec<_> = (1..=spec.num_layers())
            .map(|i| spec.param_shape(i))
            .collect();
        Self {
            w: shapes
                .iter()
                .map(|&(m, n)| Array2::from_elem((m, n), BigUint::zero()))
                .collect(),
            b: shapes
                .iter()
                .map(|&(m, _)| Array1::from_elem(m, BigUint::zero()))
                .collect(),
        }
    }
}
