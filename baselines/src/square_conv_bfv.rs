//! CryptoNets' encrypted inference of a [`SquareConvNet`] under BFV (issue #15).
//!
//! Layout (CryptoNets, Gilad-Bachrach et al. 2016 §4), as [`crate::bfv`]: one sample
//! per SIMD slot, one ciphertext per input pixel (`c·h·w` ciphertexts, encrypted by
//! [`BfvContext::encrypt_batch`]). The server walks the taps of
//! [`SquareConvNet::forward`], but composes every run of consecutive linear layers
//! (conv, 2×2 sum pooling, dense) into one sparse integer map first (exact in `i128`;
//! a convolution followed by pooling becomes one convolution with the summed kernel,
//! `(k+1)²` taps on a quarter of the outputs): a convolution through
//! [`ConvGeometry::taps_of`](gelunet_protocol::conv::ConvGeometry::taps_of), pooling
//! through [`MeanPool2::sum_with`](gelunet_protocol::pool::MeanPool2::sum_with), a dense
//! layer as its rows. Each output of a block is a weighted sum of ciphertexts with
//! plaintext scalar weights: the taps are summed per distinct `|w|` with their signs
//! (ciphertext additions and subtractions only, so a `±1` weight costs one addition and
//! negative weights never multiply the noise by `t − |w|`), the sums for `|w| > 1`
//! multiplied by the constant plaintexts `|w|` in one lazy-reduction
//! [`dot_product_scalar`], plus the bias. The square after a block is a ciphertext
//! squaring with relinearization in the same parallel pass (rayon over the outputs),
//! so only the squared ciphertexts are kept, followed by a modulus switch: square `k`
//! runs on `L − k` moduli and the layers after it on one modulus fewer
//! ([`SquareConvNetBfv::new`], relinearization keys per level from
//! [`BfvContext::prepare_levels`]). DESIGN.md "Convolutional layers", "Other schemes".
//!
//! Parameters ([`SquareConvNetBfv::config_for`]): `t` is the smallest batching prime
//! (at least 17 bits) with `2·max|z| < t` for the worst case
//! [`SquareConvNet::output_bound`] over the input box, so the decrypted outputs are the
//! exact integers; `N = 8192` (four primes of 54–55 bits, 218 bits) for at most two
//! squares, `N = 16384` (438 bits) for three or four, all 128-bit secure
//! ([`BfvConfig::with_degree`]). More than four squares is refused; outputs beyond one
//! 61-bit `t` run once per residue ([`SquareConvNetBfv::new_residue`]) and are
//! recombined by CryptoNets' CRT ([`crate::square_conv_crt`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fhe::bfv::RelinearizationKey;
use fhe::bfv::{dot_product_scalar, BfvParameters, Ciphertext, Encoding, Plaintext};
use fhe_math::rns::ScalingFactor;
use fhe_math::rq::scaler::Scaler;
use fhe_math::rq::{Context, Representation};
use fhe_traits::FheEncoder;
use gelunet_protocol::arch::{Arch, Network, Op};
use gelunet_protocol::conv::Shape;
use gelunet_protocol::math::argmax;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bfv::{
    bits_u64, BfvConfig, BfvContext, BfvDescription, EncryptedBatch, EncryptedOutput, ServerKey,
    MAX_PLAINTEXT_BITS,
};
use crate::error::{BaselineError, Result};
use crate::square_conv::{LayerWeights, SquareConvNet};
use crate::square_conv_crt::{crt_configs, time_conv_inference_crt};

/// Smallest plaintext modulus size tried (bits), as [`BfvConfig::for_net`].
const MIN_T_BITS: u32 = 17;

/// Most square layers the parameter sets here have depth for.
pub const MAX_SQUARES: usize = 4;

/// Most square layers run at `N = 8192` (with modulus switching after each square).
const SQUARES_8192: usize = 2;

fn protocol_err(e: gelunet_protocol::Error) -> BaselineError {
    BaselineError::InvalidParameter {
        name: "square conv net",
        reason: e.to_string(),
    }
}

/// One row of a composed linear block: `Σ w·x[input] + bias` over the ciphertexts
/// the block starts from (zero weights dropped, inputs in increasing order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Row {
    terms: Vec<(usize, i128)>,
    bias: i128,
}

const COMPOSE_OVERFLOW: BaselineError = BaselineError::Overflow {
    what: "composed linear block",
};

impl Row {
    fn identity(i: usize) -> Self {
        Self {
            terms: vec![(i, 1)],
            bias: 0,
        }
    }

    /// `Σ w·rows[i] + bias` over `taps` `(i, w)`.
    fn combine(
        rows: &[Row],
        taps: impl Iterator<Item = (usize, i128)>,
        bias: i128,
    ) -> Result<Self> {
        let mut acc: BTreeMap<usize, i128> = BTreeMap::new();
        let mut b = bias;
        for (i, w) in taps {
            if w == 0 {
                continue;
            }
            let r = &rows[i];
            b = r
                .bias
                .checked_mul(w)
                .and_then(|v| b.checked_add(v))
                .ok_or(COMPOSE_OVERFLOW)?;
            for &(k, v) in &r.terms {
                let e = acc.entry(k).or_insert(0);
                *e = v
                    .checked_mul(w)
                    .and_then(|m| e.checked_add(m))
                    .ok_or(COMPOSE_OVERFLOW)?;
            }
        }
        Ok(Self {
            terms: acc.into_iter().filter(|&(_, w)| w != 0).collect(),
            bias: b,
        })
    }
}

/// One step of the encrypted walk.
#[derive(Debug)]
enum Step {
    /// Consecutive linear layers (conv, pooling, dense) composed into one sparse map,
    /// evaluated on ciphertexts at `level`.
    Linear {
        names: String,
        rows: Vec<Row>,
        level: usize,
    },
    /// A square at `level` with `mults[mult]` (relinearization, then one modulus
    /// switch if `switch`).
    Square {
        level: usize,
        mult: usize,
        switch: bool,
    },
}

fn math_err(e: fhe_math::Error) -> BaselineError {
    BaselineError::from(fhe::Error::MathError(e))
}

/// A ciphertext squaring at one level: fhe.rs' default multiplication strategy
/// (`Multiplicator::default`: extend to `Q·P` with 62-bit primes `P` of at least
/// `log Q + 60` bits, tensor, scale by `t/Q`, relinearize), specialised to `a = b`:
/// two basis extensions instead of four and three products instead of four
/// (`c0 = a0²`, `c1 = 2·a0·a1`, `c2 = a1²`). Then one modulus switch if `switch`.
#[derive(Debug)]
struct Squarer {
    par: Arc<BfvParameters>,
    up: Scaler,
    down: Scaler,
    rk: RelinearizationKey,
    switch: bool,
}

impl Squarer {
    fn new(
        par: &Arc<BfvParameters>,
        rk: &RelinearizationKey,
        level: usize,
        switch: bool,
    ) -> Result<Self> {
        let ctx = par.context_at_level(level)?;
        let base = ctx.moduli();
        let modulus_size: usize = par.moduli_sizes()[..base.len()].iter().sum();
        let extra = (modulus_size + 60).div_ceil(62);
        let mut extended = base.to_vec();
        let mut upper = 1u64 << 62;
        while extended.len() < base.len() + extra {
            upper = fhe_math::zq::primes::generate_prime(62, 2 * par.degree() as u64, upper)
                .ok_or(BaselineError::InvalidParameter {
                    name: "moduli",
                    reason: "ran out of 62-bit primes for the multiplication basis".into(),
                })?;
            if !extended.contains(&upper) {
                extended.push(upper);
            }
        }
        let mul_ctx = Arc::new(Context::new(&extended, par.degree()).map_err(math_err)?);
        let up = Scaler::new(ctx, &mul_ctx, ScalingFactor::one()).map_err(math_err)?;
        // t as a big integer: the modulus of the one-prime context {t} (t ≡ 1 mod 2N).
        let t_ctx = Context::new(&[par.plaintext()], par.degree()).map_err(math_err)?;
        let factor = ScalingFactor::new(t_ctx.modulus(), ctx.modulus());
        let down = Scaler::new(&mul_ctx, ctx, factor).map_err(math_err)?;
        Ok(Self {
            par: par.clone(),
            up,
            down,
            rk: rk.clone(),
            switch,
        })
    }

    fn square(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        if ct.len() != 2 {
            return Err(BaselineError::InvalidParameter {
                name: "ciphertext",
                reason: format!("{} parts, a square needs 2", ct.len()),
            });
        }
        let a0 = ct[0].scale(&self.up).map_err(math_err)?;
        let a1 = ct[1].scale(&self.up).map_err(math_err)?;
        let mut c0 = &a0 * &a0;
        let mut c1 = &a0 * &a1;
        let c1_copy = c1.clone();
        c1 += &c1_copy;
        let mut c2 = &a1 * &a1;
        let mut parts = Vec::with_capacity(3);
        for c in [&mut c0, &mut c1, &mut c2] {
            c.change_representation(Representation::PowerBasis);
            let mut d = c.scale(&self.down).map_err(math_err)?;
            d.change_representation(Representation::Ntt);
            parts.push(d);
        }
        let mut out = Ciphertext::new(parts, &self.par)?;
        self.rk.relinearizes(&mut out)?;
        if self.switch {
            out.switch_down()?;
        }
        Ok(out)
    }
}

/// The server: a [`SquareConvNet`] with the BFV evaluation material.
#[derive(Debug)]
pub struct SquareConvNetBfv {
    net: SquareConvNet,
    config: BfvConfig,
    params: Arc<BfvParameters>,
    /// One squaring per square layer.
    mults: Vec<Squarer>,
    steps: Vec<Step>,
    input_bound: i64,
    output_bound: u128,
    /// Constant plaintext of every distinct `|w| > 1` and non-zero `|bias|` of the
    /// composed blocks, at the block's level.
    pts: BTreeMap<(usize, u64), Plaintext>,
}

/// Number of square (activation) layers of `net`.
fn squares(net: &SquareConvNet) -> usize {
    net.network()
        .layers
        .iter()
        .filter(|l| matches!(l.op, Op::Activation(_)))
        .count()
}

/// The worst-case `max|z|` over the outputs, `u128`.
fn worst(net: &SquareConvNet, input_bound: i64) -> Result<u128> {
    let b = net.output_bound(i128::from(input_bound))?;
    Ok(b.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Conv(_) => "conv",
        Op::Dense { .. } => "dense",
        Op::MeanPool(_) => "meanpool",
        Op::Activation(_) => "square",
    }
}

/// The rows of linear layer `op` applied after `rows`.
fn compose(op: &Op, p: &LayerWeights, rows: &[Row]) -> Result<Vec<Row>> {
    match op {
        Op::Conv(g) => {
            if rows.len() != g.input_len() || p.weights.len() != g.kernel_len() {
                return Err(BaselineError::ShapeMismatch {
                    what: "conv input",
                    expected: vec![g.input_len()],
                    got: vec![rows.len()],
                });
            }
            (0..g.output_len())
                .into_par_iter()
                .map(|o| {
                    Row::combine(
                        rows,
                        g.taps_of(o).map(|t| (t.input, p.weights[t.kernel])),
                        p.bias[g.filter_of(o)],
                    )
                })
                .collect()
        }
        Op::Dense { inputs, units } => {
            if rows.len() != *inputs {
                return Err(BaselineError::ShapeMismatch {
                    what: "dense input",
                    expected: vec![*inputs],
                    got: vec![rows.len()],
                });
            }
            (0..*units)
                .into_par_iter()
                .map(|u| {
                    let w = &p.weights[u * inputs..(u + 1) * inputs];
                    Row::combine(rows, w.iter().copied().enumerate(), p.bias[u])
                })
                .collect()
        }
        Op::MeanPool(m) => m
            .sum_with(
                rows,
                |r| (r.clone(), None),
                |acc, v| {
                    // Sums of rows: merge the terms of `v` into the accumulated row.
                    let (row, err) = acc;
                    if err.is_none() {
                        let pair = [std::mem::take(row), v.clone()];
                        match Row::combine(&pair, [(0, 1), (1, 1)].into_iter(), 0) {
                            Ok(r) => *row = r,
                            Err(e) => *err = Some(e),
                        }
                    }
                    Ok(())
                },
            )
            .map_err(protocol_err)?
            .into_iter()
            .map(|(r, e)| e.map_or(Ok(r), Err))
            .collect(),
        Op::Activation(_) => Err(BaselineError::InvalidParameter {
            name: "square conv net",
            reason: "an activation is not a linear layer".into(),
        }),
    }
}

impl SquareConvNetBfv {
    /// The parameters for `net` on inputs `|x| ≤ input_bound` (module docs): the smallest
    /// batching prime `t ≥ 2^16` with `2·max|z| < t`, `N = 8192` for at most two square
    /// layers and `N = 16384` for up to [`MAX_SQUARES`].
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for more than [`MAX_SQUARES`] squares, a
    /// negative bound or an `i128` overflow of the bound;
    /// [`BaselineError::PlaintextModulusTooSmall`] if no `t` of at most 61 bits holds
    /// the outputs.
    pub fn config_for(net: &SquareConvNet, input_bound: i64) -> Result<BfvConfig> {
        let degree = degree_for(net)?;
        let bound = worst(net, input_bound)?;
        let needed = bits_u128(2 * bound + 1);
        // t < q_i ≤ 2^62 leaves at most 61 bits.
        for bits in needed.max(MIN_T_BITS)..MAX_PLAINTEXT_BITS {
            let t = BfvConfig::batching_prime(bits, degree)?;
            if bound.checked_mul(2).is_some_and(|b2| b2 < u128::from(t)) {
                return BfvConfig::with_degree(degree, bits);
            }
        }
        Err(BaselineError::PlaintextModulusTooSmall {
            needed_bits: needed,
            t_bits: MAX_PLAINTEXT_BITS - 1,
        })
    }

    /// The deepest level a square of `net` runs at under `config` when every square
    /// switches down one modulus, as long as two moduli remain for the next
    /// relinearization: the argument of [`BfvContext::prepare_levels`] before
    /// [`BfvContext::server_key`].
    #[must_use]
    pub fn relinearization_levels(net: &SquareConvNet, config: &BfvConfig) -> usize {
        let max_level = config.moduli().len().saturating_sub(1);
        squares(net)
            .saturating_sub(1)
            .min(max_level.saturating_sub(1))
    }

    /// Prepares `net` for encrypted inference on inputs `|x| ≤ input_bound` under `key`.
    ///
    /// Consecutive linear layers are composed into one sparse map per block (a
    /// convolution and the pooling after it become one convolution with the summed
    /// kernel). Square `k` runs at level `ℓ_k` and switches down one modulus when
    /// `key` holds a relinearization key for `ℓ_k + 1` (see
    /// [`SquareConvNetBfv::relinearization_levels`]); otherwise it stays at its level.
    ///
    /// # Errors
    /// [`BaselineError::PlaintextModulusTooSmall`] if `2·max|z| ≥ t` for the worst
    /// case; [`BaselineError::InvalidParameter`] as [`SquareConvNetBfv::config_for`] or
    /// for a composed weight with `|w| ≥ t`; [`BaselineError::Overflow`] if composing
    /// leaves `i128`; [`BaselineError::Fhe`] if encoding fails.
    pub fn new(net: &SquareConvNet, key: &ServerKey, input_bound: i64) -> Result<Self> {
        let t = key.params.plaintext();
        let output_bound = worst(net, input_bound)?;
        if output_bound
            .checked_mul(2)
            .is_none_or(|b| b >= u128::from(t))
        {
            return Err(BaselineError::PlaintextModulusTooSmall {
                needed_bits: bits_u128(output_bound.saturating_mul(2).saturating_add(1)),
                t_bits: bits_u64(t),
            });
        }
        Self::build(net, key, input_bound, output_bound)
    }

    /// As [`SquareConvNetBfv::new`] without the check `2·max|z| < t`: the decrypted
    /// outputs are the exact outputs modulo `t` ([`forward_mod`]), one residue of
    /// CryptoNets' CRT over several plaintext moduli ([`crt_components`] of them, each
    /// a full run under its own key, recombined by [`crate::square_conv_crt`]). For nets
    /// whose outputs exceed 61 bits (LeNet-5 with four squares).
    /// [`SquareConvNetBfv::output_bound`] is `u128::MAX`.
    ///
    /// # Errors
    /// As [`SquareConvNetBfv::new`], less the plaintext-modulus check.
    pub fn new_residue(net: &SquareConvNet, key: &ServerKey, input_bound: i64) -> Result<Self> {
        Self::build(net, key, input_bound, u128::MAX)
    }

    fn build(
        net: &SquareConvNet,
        key: &ServerKey,
        input_bound: i64,
        output_bound: u128,
    ) -> Result<Self> {
        degree_for(net)?;
        let sq = squares(net);
        let params = key.params.clone();
        let t = params.plaintext();
        let max_level = params.max_level();
        let mut steps = Vec::new();
        let mut mults = Vec::new();
        let mut level = 0usize;
        let mut width = net.network().input.len();
        let mut block: Option<(String, Vec<Row>)> = None;
        for (l, p) in net.network().layers.iter().zip(net.params()) {
            if let Op::Activation(_) = l.op {
                if let Some((names, rows)) = block.take() {
                    width = rows.len();
                    steps.push(Step::Linear { names, rows, level });
                }
                let rk = if level == 0 {
                    Some(&key.rk)
                } else {
                    key.level_rks.get(level - 1)
                };
                let rk = rk.ok_or_else(|| BaselineError::InvalidParameter {
                    name: "server key",
                    reason: format!("no relinearization key for level {level}"),
                })?;
                // Switch down only if the next level keeps two moduli and, if another
                // square follows, has its relinearization key.
                let last = mults.len() + 1 == sq;
                let switch = level + 2 <= max_level && (last || key.level_rks.len() > level);
                let mult = Squarer::new(&params, rk, level, switch)?;
                steps.push(Step::Square {
                    level,
                    mult: mults.len(),
                    switch,
                });
                mults.push(mult);
                level += usize::from(switch);
                continue;
            }
            let (names, rows) = match block.take() {
                Some((names, rows)) => (format!("{names}+{}", op_name(&l.op)), rows),
                None => (
                    op_name(&l.op).to_string(),
                    (0..width).map(Row::identity).collect(),
                ),
            };
            block = Some((names, compose(&l.op, p, &rows)?));
        }
        if let Some((names, rows)) = block.take() {
            steps.push(Step::Linear { names, rows, level });
        }
        let mut pts = BTreeMap::new();
        for s in &steps {
            let Step::Linear { rows, level, .. } = s else {
                continue;
            };
            for r in rows {
                let ws = r.terms.iter().map(|&(_, w)| (w, true));
                for (w, is_weight) in ws.chain(std::iter::once((r.bias, false))) {
                    let a = w.unsigned_abs();
                    if a == 0 || (is_weight && a == 1) {
                        continue;
                    }
                    if a >= u128::from(t) {
                        return Err(BaselineError::InvalidParameter {
                            name: "weights",
                            reason: format!("composed |w| = {a} is not below t = {t}"),
                        });
                    }
                    // a < t < 2^62.
                    #[allow(clippy::cast_possible_truncation)]
                    let a = a as u64;
                    if let std::collections::btree_map::Entry::Vacant(e) = pts.entry((*level, a)) {
                        e.insert(Plaintext::try_encode(
                            &[a][..],
                            Encoding::poly_at_level(*level),
                            &params,
                        )?);
                    }
                }
            }
        }
        Ok(Self {
            net: net.clone(),
            config: key.config.clone(),
            params,
            mults,
            steps,
            input_bound,
            output_bound,
            pts,
        })
    }

    /// The plaintext model.
    #[must_use]
    pub fn net(&self) -> &SquareConvNet {
        &self.net
    }

    /// Worst-case `max|z|` over the outputs for the agreed input bound (`2·bound < t`).
    #[must_use]
    pub fn output_bound(&self) -> u128 {
        self.output_bound
    }

    /// Summary of the parameters for reports.
    #[must_use]
    pub fn describe(&self) -> BfvDescription {
        self.config.describe()
    }

    /// The level (moduli dropped) each square runs at, in order.
    #[must_use]
    pub fn square_levels(&self) -> Vec<usize> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Square { level, .. } => Some(*level),
                Step::Linear { .. } => None,
            })
            .collect()
    }

    /// The level of the returned ciphertexts.
    #[must_use]
    pub fn output_level(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Square { level, switch, .. } => level + usize::from(*switch),
                Step::Linear { level, .. } => *level,
            })
            .max()
            .unwrap_or(0)
    }

    fn pt(&self, level: usize, a: u64) -> Result<&Plaintext> {
        self.pts
            .get(&(level, a))
            .ok_or(BaselineError::InvalidParameter {
                name: "weights",
                reason: format!("no plaintext encoded for |w| = {a} at level {level}"),
            })
    }

    /// One row on `x` (at `level`): the taps summed per distinct `|w|` with their
    /// signs (additions only), the sums for `|w| > 1` multiplied by the constants in
    /// one lazy-reduction [`dot_product_scalar`], plus the bias.
    fn row(&self, r: &Row, x: &[Ciphertext], level: usize) -> Result<Ciphertext> {
        let mut groups: BTreeMap<u64, Ciphertext> = BTreeMap::new();
        for &(i, w) in &r.terms {
            let c = x.get(i).ok_or(BaselineError::ShapeMismatch {
                what: "block input",
                expected: vec![i + 1],
                got: vec![x.len()],
            })?;
            // |w| < t < 2^62, checked in `new`.
            #[allow(clippy::cast_possible_truncation)]
            let a = w.unsigned_abs() as u64;
            match groups.entry(a) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(if w > 0 { c.clone() } else { -c });
                }
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    if w > 0 {
                        *e.get_mut() += c;
                    } else {
                        *e.get_mut() -= c;
                    }
                }
            }
        }
        let ones = groups.remove(&1);
        let scaled = if groups.is_empty() {
            None
        } else {
            let p = groups
                .keys()
                .map(|&a| self.pt(level, a))
                .collect::<Result<Vec<_>>>()?;
            Some(dot_product_scalar(groups.values(), p.into_iter())?)
        };
        let mut acc = match (ones, scaled) {
            (Some(o), Some(s)) => o + &s,
            (Some(o), None) => o,
            (None, Some(s)) => s,
            (None, None) => {
                let c0 = x.first().ok_or(BaselineError::ShapeMismatch {
                    what: "ciphertexts (non-empty)",
                    expected: vec![1],
                    got: vec![0],
                })?;
                c0 * &Plaintext::zero(Encoding::poly_at_level(level), &self.params)?
            }
        };
        if r.bias != 0 {
            // |bias| < t < 2^62, checked in `new`.
            #[allow(clippy::cast_possible_truncation)]
            let b = self.pt(level, r.bias.unsigned_abs() as u64)?;
            if r.bias > 0 {
                acc += b;
            } else {
                acc -= b;
            }
        }
        Ok(acc)
    }

    /// Encrypted forward pass (server side, no secret key): `c·h·w` input ciphertexts
    /// to one ciphertext per output, the composed blocks of [`SquareConvNet::forward`].
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] for a batch with the wrong number of features;
    /// [`BaselineError::InputOutOfRange`] if it was encrypted for a larger input bound;
    /// [`BaselineError::InvalidParameter`] for a batch under other parameters;
    /// [`BaselineError::Fhe`] on a homomorphic failure.
    pub fn infer(&self, batch: &EncryptedBatch) -> Result<EncryptedOutput> {
        Ok(self.infer_timed(batch)?.0)
    }

    /// As [`SquareConvNetBfv::infer`], with the seconds of every step (a block and
    /// the square after it are one step, e.g. `conv+meanpool+square@0`).
    ///
    /// # Errors
    /// As [`SquareConvNetBfv::infer`].
    pub fn infer_timed(
        &self,
        batch: &EncryptedBatch,
    ) -> Result<(EncryptedOutput, Vec<(String, f64)>)> {
        let n = self.net.network().input.len();
        batch.check_for(n, self.input_bound, &self.params)?;
        let mut owned: Option<Vec<Ciphertext>> = None;
        let mut times = Vec::new();
        let mut i = 0;
        while let Some(step) = self.steps.get(i) {
            let start = Instant::now();
            let x: &[Ciphertext] = owned.as_deref().unwrap_or(&batch.cts);
            let (name, next) = match step {
                Step::Linear { names, rows, level } => {
                    if let Some(Step::Square { mult, .. }) = self.steps.get(i + 1) {
                        // The block and its square in one pass: only the squared
                        // (switched-down) ciphertexts are kept.
                        let m = &self.mults[*mult];
                        i += 2;
                        let y = rows
                            .par_iter()
                            .map(|r| {
                                let z = self.row(r, x, *level)?;
                                m.square(&z)
                            })
                            .collect::<Result<Vec<_>>>()?;
                        (format!("{names}+square@{level}"), y)
                    } else {
                        i += 1;
                        let y = rows
                            .par_iter()
                            .map(|r| self.row(r, x, *level))
                            .collect::<Result<Vec<_>>>()?;
                        (format!("{names}@{level}"), y)
                    }
                }
                Step::Square { level, mult, .. } => {
                    i += 1;
                    let m = &self.mults[*mult];
                    let y = x
                        .par_iter()
                        .map(|c| m.square(c))
                        .collect::<Result<Vec<_>>>()?;
                    (format!("square@{level}"), y)
                }
            };
            owned = Some(next);
            times.push((name, start.elapsed().as_secs_f64()));
        }
        Ok((
            EncryptedOutput {
                cts: owned.unwrap_or_else(|| batch.cts.clone()),
                samples: batch.samples,
            },
            times,
        ))
    }
}

fn bits_u128(v: u128) -> u32 {
    128 - v.leading_zeros()
}

/// Plaintext modulus size of [`residue_config`] (bits): the largest `t` below the
/// 54–55-bit primes of [`BfvConfig::with_degree`].
pub const RESIDUE_T_BITS: u32 = 53;

/// The parameters for a residue run of `net` ([`SquareConvNetBfv::new_residue`]):
/// the degree of [`SquareConvNetBfv::config_for`] and a `t` of [`RESIDUE_T_BITS`].
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for more than [`MAX_SQUARES`] squares; as
/// [`BfvConfig::with_degree`].
pub fn residue_config(net: &SquareConvNet) -> Result<BfvConfig> {
    BfvConfig::with_degree(degree_for(net)?, RESIDUE_T_BITS)
}

/// The ring degree for `net`'s squares: `N = 8192` for at most two, `16384` for up to
/// [`MAX_SQUARES`].
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for more than [`MAX_SQUARES`] squares.
pub(crate) fn degree_for(net: &SquareConvNet) -> Result<usize> {
    let sq = squares(net);
    if sq > MAX_SQUARES {
        return Err(BaselineError::InvalidParameter {
            name: "square layers",
            reason: format!("{sq} squares, the parameter sets have depth for {MAX_SQUARES}"),
        });
    }
    Ok(if sq <= SQUARES_8192 { 8192 } else { 16384 })
}

/// The walk of [`SquareConvNet::forward`] (protocol's `forward_with` and `sum_with`, not
/// the composed blocks of [`SquareConvNetBfv`]) in any commutative ring: `lift` maps
/// the integer weights and biases into it, `add` accumulates, `mul` multiplies, and a
/// square layer is `mul(v, v)`. [`forward_mod`] (integers mod `t`), [`crt_components`]
/// (`f64` bounds) and [`crate::square_conv_crt`] (big integers) are its instances.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for a wrong-length input or a layer whose
/// parameters do not fit it.
pub(crate) fn walk<T: Clone>(
    net: &SquareConvNet,
    input: Vec<T>,
    lift: impl Fn(i128) -> T,
    add: impl Fn(&mut T, &T),
    mul: impl Fn(&T, &T) -> T,
) -> Result<Vec<T>> {
    if input.len() != net.network().input.len() {
        return Err(BaselineError::InvalidParameter {
            name: "input",
            reason: format!(
                "expected {} values, got {}",
                net.network().input.len(),
                input.len()
            ),
        });
    }
    let mut x = input;
    for (l, p) in net.network().layers.iter().zip(net.params()) {
        let w: Vec<T> = p.weights.iter().map(|&v| lift(v)).collect();
        let b: Vec<T> = p.bias.iter().map(|&v| lift(v)).collect();
        x = match l.op {
            Op::Conv(g) => g
                .forward_with(
                    &x,
                    &w,
                    |f| Ok(b[f].clone()),
                    |acc, a, k| {
                        add(acc, &mul(a, k));
                        Ok(())
                    },
                )
                .map_err(protocol_err)?,
            Op::MeanPool(mp) => mp
                .sum_with(&x, T::clone, |acc, v| {
                    add(acc, v);
                    Ok(())
                })
                .map_err(protocol_err)?,
            Op::Dense { inputs, units } => (0..units)
                .map(|u| {
                    let mut acc = b[u].clone();
                    for (wk, a) in w[u * inputs..(u + 1) * inputs].iter().zip(&x) {
                        add(&mut acc, &mul(wk, a));
                    }
                    acc
                })
                .collect(),
            Op::Activation(_) => x.iter().map(|v| mul(v, v)).collect(),
        };
    }
    Ok(x)
}

/// The outputs of `net` on one input modulo `t` (`0..t`): the ring walk of
/// [`SquareConvNet::forward`] in `u128` arithmetic modulo `t`, for nets whose outputs
/// leave `i128`.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for a wrong-length input or `t = 0`.
pub fn forward_mod(net: &SquareConvNet, input: &[i64], t: u64) -> Result<Vec<u64>> {
    if t == 0 {
        return Err(BaselineError::InvalidParameter {
            name: "t",
            reason: "zero modulus".into(),
        });
    }
    let m = i128::from(t);
    let tm = u128::from(t);
    // Residues are below t < 2^64, so products and sums fit in u128.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let red = |v: i128| -> u64 { v.rem_euclid(m) as u64 };
    let x = input.iter().map(|&v| red(i128::from(v))).collect();
    #[allow(clippy::cast_possible_truncation)]
    walk(
        net,
        x,
        red,
        |acc, v| *acc = ((u128::from(*acc) + u128::from(*v)) % tm) as u64,
        |a, b| (u128::from(*a) * u128::from(*b) % tm) as u64,
    )
}

/// Plaintext moduli of `t_bits` bits that CryptoNets' CRT would need for the exact
/// outputs of `net` on `|x| ≤ input_bound`: `⌈log2(2·max|z| + 1) / (t_bits − 1)⌉`,
/// with the worst case [`SquareConvNet::output_bound`] estimated in `f64` (it may
/// leave `i128`); [`crate::square_conv_crt::crt_configs`] picks the moduli exactly.
#[must_use]
pub fn crt_components(net: &SquareConvNet, input_bound: i64, t_bits: u32) -> usize {
    // The worst case in log2: the |w| net on the all-bound input, in f64.
    #[allow(clippy::cast_precision_loss)]
    let x = vec![input_bound as f64; net.network().input.len()];
    #[allow(clippy::cast_precision_loss)]
    let abs = |v: i128| v.unsigned_abs() as f64;
    let x = walk(net, x, abs, |acc, v| *acc += v, |a, b| a * b).unwrap_or_default();
    let max = x.iter().copied().fold(0.0f64, f64::max);
    let bits = (2.0 * max + 1.0).log2().ceil().max(1.0);
    // bits ≤ 2^11 for any finite f64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bits = bits as usize;
    bits.div_ceil(t_bits.saturating_sub(1).max(1) as usize)
}

/// Decrypts the outputs (`S × outputs`, exact integers, centred) and the argmax per
/// sample (first maximal class on ties).
///
/// # Errors
/// As [`BfvContext::decrypt_logits`].
pub fn decrypt_and_predict(
    ctx: &BfvContext,
    out: &EncryptedOutput,
) -> Result<(Array2<i128>, Vec<usize>)> {
    let z = ctx.decrypt_logits(out)?;
    let pred = z.outer_iter().map(argmax).collect();
    Ok((z, pred))
}

/// A square conv net with weights and biases drawn uniformly from
/// `[−weight_bound, weight_bound]` (seeded ChaCha20), the fixed-point integers of a
/// net whose weights are at scale `2^fw` with `weight_bound ≈ 2^fw`.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] if `arch` does not fit `input` or the bound is
/// negative.
pub fn random_net(
    arch: &Arch,
    input: Shape,
    weight_bound: i128,
    seed: u64,
) -> Result<SquareConvNet> {
    if weight_bound < 0 {
        return Err(BaselineError::InvalidParameter {
            name: "weight_bound",
            reason: format!("{weight_bound} is negative"),
        });
    }
    let network: Network = arch
        .infer(input)
        .map_err(|e| BaselineError::InvalidParameter {
            name: "arch",
            reason: e.to_string(),
        })?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<i128> {
        (0..n)
            .map(|_| rng.gen_range(-weight_bound..=weight_bound))
            .collect()
    };
    let params = network
        .layers
        .iter()
        .map(|l| match l.op {
            Op::Conv(g) => LayerWeights {
                weights: draw(g.kernel_len()),
                bias: draw(g.filters()),
            },
            Op::Dense { inputs, units } => LayerWeights {
                weights: draw(inputs * units),
                bias: draw(units),
            },
            Op::MeanPool(_) | Op::Activation(_) => LayerWeights::default(),
        })
        .collect();
    SquareConvNet::new(network, params)
}

/// Timing of one encrypted batch inference through [`SquareConvNetBfv`], the fields of
/// [`crate::measure::InferenceTiming`] with the architecture in place of the dense
/// shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvInferenceTiming {
    /// Samples in the batch.
    pub samples: usize,
    /// The architecture (`Arch` syntax) and its input shape.
    pub arch: String,
    /// Server-side model preparation (composing the linear blocks, encoding the
    /// constants), seconds.
    pub prepare_secs: f64,
    /// Client-side encryption of the batch (`c·h·w` ciphertexts), seconds.
    pub encrypt_secs: f64,
    /// Server-side encrypted forward pass, seconds.
    pub infer_secs: f64,
    /// Client-side decryption and argmax, seconds.
    pub decrypt_secs: f64,
    /// Whether the decrypted outputs equal [`SquareConvNet::forward`] exactly.
    pub correct: bool,
    /// The parameter set.
    pub parameters: BfvDescription,
    /// The level (moduli dropped by modulus switching) each square ran at.
    pub square_levels: Vec<usize>,
    /// Seconds of each step of the forward pass ([`SquareConvNetBfv::infer_timed`]).
    pub steps: Vec<(String, f64)>,
    /// 1 for an exact run under one `t`; for a residue run
    /// ([`time_conv_inference_residue`]) the plaintext moduli of this size CryptoNets'
    /// CRT needs for exact outputs, each a run like this one; for a CRT inference
    /// ([`crate::square_conv_crt::time_conv_inference_crt`], the sums of its runs) the
    /// number of runs.
    pub crt_components: usize,
}

impl ConvInferenceTiming {
    /// Encrypt + infer + decrypt, seconds (preparation excluded).
    #[must_use]
    pub fn latency_secs(&self) -> f64 {
        self.encrypt_secs + self.infer_secs + self.decrypt_secs
    }

    /// [`ConvInferenceTiming::latency_secs`] per sample of the batch.
    #[must_use]
    pub fn per_sample_secs(&self) -> f64 {
        // Batches hold at most N ≤ 2^15 samples, exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let s = self.samples.max(1) as f64;
        self.latency_secs() / s
    }
}

/// CryptoNets' two figures for one architecture: one sample (latency) and a full batch
/// (amortized throughput), same net, same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquareConvMeasurement {
    /// One sample.
    pub single: ConvInferenceTiming,
    /// `batch` samples.
    pub batch: ConvInferenceTiming,
}

/// Times one encrypted inference of `inputs` (`S × c·h·w`, `|x| ≤ input_bound`) and
/// checks it against [`SquareConvNet::forward`] for every sample.
///
/// # Errors
/// Every error of [`SquareConvNetBfv::new`], [`BfvContext::encrypt_batch`],
/// [`SquareConvNetBfv::infer`] and [`SquareConvNet::forward`].
pub fn time_conv_inference(
    ctx: &mut BfvContext,
    net: &SquareConvNet,
    arch: &str,
    inputs: &Array2<i64>,
    input_bound: i64,
) -> Result<ConvInferenceTiming> {
    time_inner(ctx, net, arch, inputs, input_bound, false).map(|(t, _)| t)
}

/// As [`time_conv_inference`] for a residue run ([`SquareConvNetBfv::new_residue`]):
/// `correct` says whether the decrypted outputs equal [`forward_mod`] modulo `t`.
///
/// # Errors
/// As [`time_conv_inference`], [`forward_mod`] in place of [`SquareConvNet::forward`].
pub fn time_conv_inference_residue(
    ctx: &mut BfvContext,
    net: &SquareConvNet,
    arch: &str,
    inputs: &Array2<i64>,
    input_bound: i64,
) -> Result<ConvInferenceTiming> {
    time_inner(ctx, net, arch, inputs, input_bound, true).map(|(t, _)| t)
}

/// One timed run under `ctx`'s key, with the decrypted (centred) outputs `S × outputs`.
pub(crate) fn time_inner(
    ctx: &mut BfvContext,
    net: &SquareConvNet,
    arch: &str,
    inputs: &Array2<i64>,
    input_bound: i64,
    residue: bool,
) -> Result<(ConvInferenceTiming, Array2<i128>)> {
    // Client side, once per key: the relinearization keys for the lower levels.
    ctx.prepare_levels(SquareConvNetBfv::relinearization_levels(net, ctx.config()))?;
    let start = Instant::now();
    let key = ctx.server_key();
    let model = if residue {
        SquareConvNetBfv::new_residue(net, &key, input_bound)?
    } else {
        SquareConvNetBfv::new(net, &key, input_bound)?
    };
    let prepare_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let batch = ctx.encrypt_batch(inputs, input_bound)?;
    let encrypt_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (out, steps) = model.infer_timed(&batch)?;
    let infer_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (z, _) = decrypt_and_predict(ctx, &out)?;
    let decrypt_secs = start.elapsed().as_secs_f64();
    let t = ctx.config().plaintext_modulus();
    // The plaintext check, samples in parallel (not timed).
    let rows: Vec<(Vec<i64>, Vec<i128>)> = inputs
        .outer_iter()
        .zip(z.outer_iter())
        .map(|(x, got)| (x.to_vec(), got.to_vec()))
        .collect();
    let checks = rows
        .par_iter()
        .map(|(x, got)| -> Result<bool> {
            if residue {
                let got: Vec<u64> = got
                    .iter()
                    // Centred values in (−t/2, t/2], back to 0..t.
                    .map(|&v| {
                        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                        let r = v.rem_euclid(i128::from(t)) as u64;
                        r
                    })
                    .collect();
                Ok(forward_mod(net, x, t)? == got)
            } else {
                let x: Vec<i128> = x.iter().map(|&v| i128::from(v)).collect();
                Ok(net.forward(&x)? == *got)
            }
        })
        .collect::<Result<Vec<bool>>>()?;
    let correct = checks.iter().all(|&c| c);
    let timing = ConvInferenceTiming {
        samples: inputs.nrows(),
        arch: arch.to_string(),
        prepare_secs,
        encrypt_secs,
        infer_secs,
        decrypt_secs,
        correct,
        parameters: ctx.describe(),
        square_levels: model.square_levels(),
        steps,
        crt_components: if residue {
            crt_components(net, input_bound, bits_u64(t))
        } else {
            1
        },
    };
    Ok((timing, z))
}

/// Measures `arch` on `input` with random weights in `[−weight_bound, weight_bound]`
/// and random inputs in `[0, input_bound]` (seeded): one sample, then `batch` samples,
/// under the parameters of [`SquareConvNetBfv::config_for`]. If the worst-case outputs
/// need more than one 61-bit `t` (or leave `i128`), CryptoNets' CRT instead: one run per
/// plaintext modulus of [`crt_configs`] (53, 52, … bits), timings summed,
/// `crt_components` = the number of runs
/// ([`time_conv_inference_crt`]).
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for `batch = 0`; [`BaselineError::TooManySamples`]
/// above `N`; the errors of [`random_net`], [`SquareConvNetBfv::config_for`] and
/// [`time_conv_inference`], [`crt_configs`] and [`time_conv_inference_crt`].
pub fn measure_square_conv(
    arch: &Arch,
    input: Shape,
    weight_bound: i128,
    input_bound: i64,
    batch: usize,
    seed: u64,
) -> Result<SquareConvMeasurement> {
    if batch == 0 {
        return Err(BaselineError::InvalidParameter {
            name: "batch",
            reason: "zero samples".into(),
        });
    }
    let net = random_net(arch, input, weight_bound, seed)?;
    // Outputs beyond one 61-bit t (or beyond i128): CryptoNets' CRT instead.
    let exact = match SquareConvNetBfv::config_for(&net, input_bound) {
        Ok(c) => Some(c),
        Err(BaselineError::PlaintextModulusTooSmall { .. }) => None,
        Err(e) => {
            if squares(&net) <= MAX_SQUARES && worst(&net, input_bound).is_err() {
                None
            } else {
                return Err(e);
            }
        }
    };
    let mut key_seed = [0u8; 32];
    key_seed[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    let n = input.len();
    let x = Array2::from_shape_fn((batch, n), |_| rng.gen_range(0..=input_bound));
    let one = x.select(ndarray::Axis(0), &[0]);
    let name = format!("{arch} on {input}");
    let (single, batch) = if let Some(config) = exact {
        let mut ctx = BfvContext::new(&config, key_seed)?;
        (
            time_conv_inference(&mut ctx, &net, &name, &one, input_bound)?,
            time_conv_inference(&mut ctx, &net, &name, &x, input_bound)?,
        )
    } else {
        let configs = crt_configs(&net, input_bound, RESIDUE_T_BITS)?;
        let run = |x: &Array2<i64>| {
            time_conv_inference_crt(&configs, key_seed, &net, &name, x, input_bound)
                .map(|c| c.timing)
        };
        (run(&one)?, run(&x)?)
    };
    Ok(SquareConvMeasurement { single, batch })
}
