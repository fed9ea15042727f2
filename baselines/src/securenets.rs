//! SecureNets (Chen, Salinas, Li et al., "SecureNets: Secure inference of deep neural
//! networks on an untrusted cloud", ACML 2018; `../shared/papers/securenets.txt`):
//! outsourced matrix products hidden by pseudorandom scaling and permutation over a
//! prime field, verified with Freivalds' check.
//!
//! # Parties and inputs
//!
//! - **User** (owns the model *and* the data). Private: every weight matrix `W_l`
//!   (`n_l × k`, `k = n_{l−1} + 1` with the bias as the last column), every layer input
//!   `Y_l` (`k × m`, one column per sample, the last row all ones), the masks. Public:
//!   the layer shapes, the field `F_p`.
//! - **Cloud** (untrusted, possibly malicious). Sees only the masked matrices `Ŵ_l`,
//!   `Ŷ_l` and returns `Ẑ_l = Ŵ_l·Ŷ_l`.
//!
//! # The math (paper §3.2, §3.3)
//!
//! Over `F_p` with `p = 2^61 − 1` (a Mersenne prime; signed integers are embedded as
//! `z mod p` and decoded centred, so exact while `|z| < p/2`). Per layer the user draws,
//! from a ChaCha20 pseudorandom function keyed by a per-layer seed:
//! `D_W = diag(v)` (`v_i ∈ F_p^*`), a row permutation `E_W` (`π`), the inner scaling
//! `F_W = diag(f)` and inner permutation `U_W` (`σ`), the sample scaling `F_Y = diag(g)`
//! and sample permutation `U_Y` (`τ`). With the paper's Eq. (15)–(16)
//!
//! ```text
//! Ŵ = E_W·D_W·W·F_W·U_W        Ŵ[i,j] = v_π(i) · W[π(i), σ(j)] · f_σ(j)
//! Ŷ = U_W⁻¹·F_W⁻¹·Y·F_Y·U_Y    Ŷ[j,l] = f_σ(j)⁻¹ · Y[σ(j), τ(l)] · g_τ(l)
//! Ẑ = Ŵ·Ŷ = E_W·D_W·(W·Y)·F_Y·U_Y,  so  Z[π(i), τ(l)] = Ẑ[i,l] / (v_π(i) · g_τ(l))   (Eq. 18)
//! ```
//!
//! Verification (§3.3.3, Freivalds 1977): for `c` random vectors `r ∈ {0,1}^m` the user
//! checks `Ŵ·(Ŷ·r) = Ẑ·r` in `O(c·(n_l·k + k·m + n_l·m))`. A wrong `Ẑ` passes one
//! check with probability at most `1/2`, so all `c` with at most `2^−c` (the paper's
//! bound); for a single altered entry `(i, l)` the check fails exactly when `r_l = 1`,
//! so the detection rate is exactly `1 − 2^−c`. Then the user recovers `Z_l` (Eq. 18),
//! applies the activation locally and builds `Y_{l+1}`.
//!
//! # What it leaks
//!
//! The masks are a rank-one scaling plus permutations: `Ŷ = P·diag(a)·Y·diag(b)·Q`. The
//! zero pattern of `Y` survives (permuted), and within a row the ratios of entries are
//! the data's ratios up to a per-column constant, so the cross-ratios
//! `Ŷ[j,l]·Ŷ[j',l'] / (Ŷ[j,l']·Ŷ[j',l])` equal the data's cross-ratios exactly. For
//! low-precision data (quantized pixels) that determines `Y` up to the permutations;
//! [`ratio_attack`] recovers it.

use ndarray::{Array1, Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{BaselineError, Result};

/// The field modulus `p = 2^61 − 1`.
pub const P: u64 = (1u64 << 61) - 1;

/// `a·b mod p` (Mersenne reduction).
#[must_use]
pub fn mul_p(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    // Low 61 bits plus the rest; both parts are below 2^61·2 < 2^64.
    #[allow(clippy::cast_possible_truncation)]
    let lo = (x & u128::from(P)) as u64;
    #[allow(clippy::cast_possible_truncation)]
    let hi = (x >> 61) as u64;
    add_p(lo, hi)
}

/// `a + b mod p` for `a, b < 2^62`.
#[must_use]
pub fn add_p(a: u64, b: u64) -> u64 {
    let s = a + b;
    let s = (s & P) + (s >> 61);
    if s >= P {
        s - P
    } else {
        s
    }
}

/// `a^e mod p`.
#[must_use]
pub fn pow_p(mut a: u64, mut e: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_p(r, a);
        }
        a = mul_p(a, a);
        e >>= 1;
    }
    r
}

/// `a⁻¹ mod p` (Fermat); `0` for `a = 0`.
#[must_use]
pub fn inv_p(a: u64) -> u64 {
    pow_p(a, P - 2)
}

/// Embeds a signed integer: `z mod p`.
#[must_use]
pub fn encode(z: i64) -> u64 {
    if z >= 0 {
        z.unsigned_abs() % P
    } else {
        (P - z.unsigned_abs() % P) % P
    }
}

/// Centred decoding: a value above `p/2` is negative.
#[must_use]
pub fn decode(v: u64) -> i64 {
    // Both branches are below 2^60 in magnitude.
    #[allow(clippy::cast_possible_wrap)]
    if v > P / 2 {
        -((P - v) as i64)
    } else {
        v as i64
    }
}

/// A matrix over `F_p` (entries in `[0, p)`).
pub type FieldMatrix = Array2<u64>;

/// `A·B` over `F_p` (rows in parallel with rayon): the cloud's work.
///
/// # Errors
/// [`BaselineError::ShapeMismatch`] if the inner dimensions differ.
pub fn matmul_p(a: &FieldMatrix, b: &FieldMatrix) -> Result<FieldMatrix> {
    let (n, k) = a.dim();
    let (k2, m) = b.dim();
    if k != k2 {
        return Err(BaselineError::ShapeMismatch {
            what: "matrix product inner dimension",
            expected: vec![k],
            got: vec![k2],
        });
    }
    let bt = b.t().as_standard_layout().to_owned();
    let rows: Vec<Vec<u64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let ar = a.row(i);
            (0..m)
                .map(|l| {
                    let br = bt.row(l);
                    ar.iter()
                        .zip(br.iter())
                        .fold(0u64, |acc, (&x, &y)| add_p(acc, mul_p(x, y)))
                })
                .collect()
        })
        .collect();
    let flat: Vec<u64> = rows.into_iter().flatten().collect();
    FieldMatrix::from_shape_vec((n, m), flat).map_err(|_| BaselineError::Overflow {
        what: "matrix product shape",
    })
}

/// `A·v` over `F_p`.
fn matvec_p(a: ArrayView2<'_, u64>, v: &[u64]) -> Vec<u64> {
    a.outer_iter()
        .map(|row| {
            row.iter()
                .zip(v)
                .fold(0u64, |acc, (&x, &y)| add_p(acc, mul_p(x, y)))
        })
        .collect()
}

/// The cloud: multiplies the masked matrices it is given.
pub trait Cloud {
    /// Returns (what it claims is) `Ŵ·Ŷ`.
    ///
    /// # Errors
    /// Shape errors.
    fn multiply(&mut self, w_hat: &FieldMatrix, y_hat: &FieldMatrix) -> Result<FieldMatrix>;
}

/// An honest cloud.
#[derive(Clone, Copy, Debug, Default)]
pub struct HonestCloud;

impl Cloud for HonestCloud {
    fn multiply(&mut self, w_hat: &FieldMatrix, y_hat: &FieldMatrix) -> Result<FieldMatrix> {
        matmul_p(w_hat, y_hat)
    }
}

/// A malicious cloud that adds `delta` to one pseudorandomly chosen entry of the
/// honest product (seeded, for reproducible detection-rate experiments).
#[derive(Clone, Debug)]
pub struct CorruptingCloud {
    rng: ChaCha20Rng,
    /// Added to the chosen entry (mod p); non-zero.
    pub delta: u64,
}

impl CorruptingCloud {
    /// A cheating cloud with its own seed.
    #[must_use]
    pub fn new(seed: u64, delta: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            delta: delta % P,
        }
    }
}

impl Cloud for CorruptingCloud {
    fn multiply(&mut self, w_hat: &FieldMatrix, y_hat: &FieldMatrix) -> Result<FieldMatrix> {
        let mut z = matmul_p(w_hat, y_hat)?;
        let (n, m) = z.dim();
        let i = self.rng.gen_range(0..n);
        let l = self.rng.gen_range(0..m);
        z[[i, l]] = add_p(z[[i, l]], self.delta);
        Ok(z)
    }
}

/// The masks of one layer (secret, the user's).
#[derive(Clone, Debug)]
pub struct LayerMasks {
    /// `v` of `D_W` (indexed by original row).
    pub v: Vec<u64>,
    /// `π` of `E_W`: masked row `i` is original row `π[i]`.
    pub pi: Vec<usize>,
    /// `f` of `F_W` (indexed by original inner index).
    pub f: Vec<u64>,
    /// `σ` of `U_W`: masked inner index `j` is original `σ[j]`.
    pub sigma: Vec<usize>,
    /// `g` of `F_Y` (indexed by original sample).
    pub g: Vec<u64>,
    /// `τ` of `U_Y`: masked column `l` is original sample `τ[l]`.
    pub tau: Vec<usize>,
}

fn nonzero_field(rng: &mut ChaCha20Rng) -> u64 {
    rng.gen_range(1..P)
}

fn permutation(rng: &mut ChaCha20Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(rng);
    p
}

impl LayerMasks {
    /// Draws the masks for a `rows × inner` weight matrix and `inner × samples` input
    /// from a ChaCha20 PRF keyed by `seed` (the paper's `F_c`, `F'_c`).
    #[must_use]
    pub fn draw(seed: u64, rows: usize, inner: usize, samples: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        Self {
            v: (0..rows).map(|_| nonzero_field(&mut rng)).collect(),
            pi: permutation(&mut rng, rows),
            f: (0..inner).map(|_| nonzero_field(&mut rng)).collect(),
            sigma: permutation(&mut rng, inner),
            g: (0..samples).map(|_| nonzero_field(&mut rng)).collect(),
            tau: permutation(&mut rng, samples),
        }
    }

    /// `Ŵ = E_W·D_W·W·F_W·U_W` (paper Eq. 15).
    #[must_use]
    pub fn mask_weights(&self, w: &FieldMatrix) -> FieldMatrix {
        let (n, k) = (self.pi.len(), self.sigma.len());
        FieldMatrix::from_shape_fn((n, k), |(i, j)| {
            let (r, c) = (self.pi[i], self.sigma[j]);
            mul_p(mul_p(self.v[r], w[[r, c]]), self.f[c])
        })
    }

    /// `Ŷ = U_W⁻¹·F_W⁻¹·Y·F_Y·U_Y` (paper Eq. 16).
    #[must_use]
    pub fn mask_inputs(&self, y: &FieldMatrix) -> FieldMatrix {
        let (k, m) = (self.sigma.len(), self.tau.len());
        let f_inv: Vec<u64> = self.f.iter().map(|&x| inv_p(x)).collect();
        FieldMatrix::from_shape_fn((k, m), |(j, l)| {
            let (r, c) = (self.sigma[j], self.tau[l]);
            mul_p(mul_p(f_inv[r], y[[r, c]]), self.g[c])
        })
    }

    /// `Z` from `Ẑ` (paper Eq. 18): `Z[π(i), τ(l)] = Ẑ[i,l] / (v_π(i)·g_τ(l))`.
    #[must_use]
    pub fn recover(&self, z_hat: &FieldMatrix) -> FieldMatrix {
        let (n, m) = (self.pi.len(), self.tau.len());
        let v_inv: Vec<u64> = self.v.iter().map(|&x| inv_p(x)).collect();
        let g_inv: Vec<u64> = self.g.iter().map(|&x| inv_p(x)).collect();
        let mut z = FieldMatrix::zeros((n, m));
        for i in 0..n {
            for l in 0..m {
                let (r, c) = (self.pi[i], self.tau[l]);
                z[[r, c]] = mul_p(mul_p(z_hat[[i, l]], v_inv[r]), g_inv[c]);
            }
        }
        z
    }
}

/// Freivalds' check with `c` random vectors `r ∈ {0,1}^m`: `true` if
/// `Ŵ·(Ŷ·r) = Ẑ·r` for all of them (paper §3.3.3).
#[must_use]
pub fn freivalds(
    w_hat: &FieldMatrix,
    y_hat: &FieldMatrix,
    z_hat: &FieldMatrix,
    c: usize,
    rng: &mut ChaCha20Rng,
) -> bool {
    let m = y_hat.ncols();
    (0..c).all(|_| {
        let r: Vec<u64> = (0..m).map(|_| u64::from(rng.gen::<bool>())).collect();
        let yr = matvec_p(y_hat.view(), &r);
        matvec_p(w_hat.view(), &yr) == matvec_p(z_hat.view(), &r)
    })
}

/// Work and bytes of one outsourced product.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LayerCost {
    /// User: masking `W` and `Y` (seconds).
    pub user_mask_secs: f64,
    /// Cloud: the product (seconds).
    pub cloud_secs: f64,
    /// User: Freivalds' check (seconds).
    pub user_verify_secs: f64,
    /// User: recovery of `Z` (seconds).
    pub user_recover_secs: f64,
    /// User → cloud bytes (`Ŵ`, `Ŷ`, 8 bytes per field element).
    pub bytes_up: usize,
    /// Cloud → user bytes (`Ẑ`).
    pub bytes_down: usize,
}

impl LayerCost {
    /// Adds another layer's cost.
    pub fn add(&mut self, o: &Self) {
        self.user_mask_secs += o.user_mask_secs;
        self.cloud_secs += o.cloud_secs;
        self.user_verify_secs += o.user_verify_secs;
        self.user_recover_secs += o.user_recover_secs;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
    }

    /// The user's seconds (mask + verify + recover).
    #[must_use]
    pub fn user_secs(&self) -> f64 {
        self.user_mask_secs + self.user_verify_secs + self.user_recover_secs
    }
}

/// The user's side of SecureNets (paper Alg. 1).
#[derive(Debug)]
pub struct SecureNetsUser {
    rng: ChaCha20Rng,
    /// Freivalds check vectors per product.
    pub checks: usize,
    /// Recomputation requests allowed per product before giving up.
    pub max_retries: usize,
}

impl SecureNetsUser {
    /// A user with its mask-seed generator and `checks` Freivalds vectors per product.
    #[must_use]
    pub fn new(seed: u64, checks: usize) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            checks,
            max_retries: 3,
        }
    }

    /// One outsourced product `Z = W·Y` over `F_p`: mask, send, verify, recover. On a
    /// failed check the user asks the cloud to recompute (up to `max_retries` times).
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] for mismatched shapes;
    /// [`BaselineError::VerificationFailed`] if every answer failed the check.
    pub fn outsource(
        &mut self,
        w: &FieldMatrix,
        y: &FieldMatrix,
        cloud: &mut dyn Cloud,
    ) -> Result<(FieldMatrix, LayerCost)> {
        let (n, k) = w.dim();
        let (k2, m) = y.dim();
        if k != k2 || n == 0 || k == 0 || m == 0 {
            return Err(BaselineError::ShapeMismatch {
                what: "SecureNets layer (W: n×k, Y: k×m, non-empty)",
                expected: vec![k],
                got: vec![k2],
            });
        }
        let mut cost = LayerCost::default();
        let t = std::time::Instant::now();
        let masks = LayerMasks::draw(self.rng.gen(), n, k, m);
        let w_hat = masks.mask_weights(w);
        let y_hat = masks.mask_inputs(y);
        cost.user_mask_secs = t.elapsed().as_secs_f64();
        cost.bytes_up = 8 * (w_hat.len() + y_hat.len());
        for _ in 0..=self.max_retries {
            let t = std::time::Instant::now();
            let z_hat = cloud.multiply(&w_hat, &y_hat)?;
            cost.cloud_secs += t.elapsed().as_secs_f64();
            cost.bytes_down += 8 * z_hat.len();
            if z_hat.dim() != (n, m) {
                return Err(BaselineError::ShapeMismatch {
                    what: "cloud product",
                    expected: vec![n, m],
                    got: z_hat.shape().to_vec(),
                });
            }
            let t = std::time::Instant::now();
            let ok = freivalds(&w_hat, &y_hat, &z_hat, self.checks, &mut self.rng);
            cost.user_verify_secs += t.elapsed().as_secs_f64();
            if ok {
                let t = std::time::Instant::now();
                let z = masks.recover(&z_hat);
                cost.user_recover_secs = t.elapsed().as_secs_f64();
                return Ok((z, cost));
            }
        }
        Err(BaselineError::VerificationFailed {
            attempts: self.max_retries + 1,
        })
    }

    /// Runs a dense network on a batch: `x` is `m × n_0` integers (samples as rows),
    /// `layers` are `(W_l, b_l)` with `W_l` of shape `n_l × n_{l−1}`, and `activation`
    /// maps a layer's integer pre-activations (`n_l × m`) to the next layer's integer
    /// inputs (applied locally by the user; not after the last layer). Returns the
    /// logits (`m × n_L`) and the summed cost.
    ///
    /// # Errors
    /// As [`SecureNetsUser::outsource`]; [`BaselineError::ShapeMismatch`] if the layer
    /// widths do not chain.
    pub fn infer(
        &mut self,
        layers: &[(Array2<i64>, Array1<i64>)],
        x: &Array2<i64>,
        activation: &dyn Fn(usize, &Array2<i64>) -> Array2<i64>,
        cloud: &mut dyn Cloud,
    ) -> Result<(Array2<i64>, LayerCost)> {
        let mut y = x.t().to_owned();
        let mut total = LayerCost::default();
        for (l, (w, b)) in layers.iter().enumerate() {
            let y_field = with_ones_row(&y);
            let w_field = with_bias_column(w, b)?;
            let (z, cost) = self.outsource(&w_field, &y_field, cloud)?;
            total.add(&cost);
            let z_int = z.mapv(decode);
            y = if l + 1 < layers.len() {
                activation(l, &z_int)
            } else {
                z_int
            };
        }
        Ok((y.t().to_owned(), total))
    }
}

/// `[Y; 1…1]` over `F_p` (the bias row of the paper's `Y_l`).
fn with_ones_row(y: &Array2<i64>) -> FieldMatrix {
    let (k, m) = y.dim();
    FieldMatrix::from_shape_fn(
        (k + 1, m),
        |(j, l)| if j < k { encode(y[[j, l]]) } else { 1 },
    )
}

/// `[W | b]` over `F_p`.
fn with_bias_column(w: &Array2<i64>, b: &Array1<i64>) -> Result<FieldMatrix> {
    let (n, k) = w.dim();
    if b.len() != n {
        return Err(BaselineError::ShapeMismatch {
            what: "bias",
            expected: vec![n],
            got: vec![b.len()],
        });
    }
    Ok(FieldMatrix::from_shape_fn((n, k + 1), |(i, j)| {
        encode(if j < k { w[[i, j]] } else { b[i] })
    }))
}

/// `W·x + b` on integers (the plaintext reference), `x` as `k × m` columns.
///
/// # Errors
/// [`BaselineError::Overflow`] if an `i64` overflows; shape errors.
pub fn plain_layer(w: &Array2<i64>, b: &Array1<i64>, y: &Array2<i64>) -> Result<Array2<i64>> {
    let (n, k) = w.dim();
    if y.nrows() != k || b.len() != n {
        return Err(BaselineError::ShapeMismatch {
            what: "plain layer",
            expected: vec![k],
            got: vec![y.nrows()],
        });
    }
    let m = y.ncols();
    let mut z = Array2::<i64>::zeros((n, m));
    for i in 0..n {
        for l in 0..m {
            let mut acc = b[i];
            for j in 0..k {
                acc = w[[i, j]]
                    .checked_mul(y[[j, l]])
                    .and_then(|p| acc.checked_add(p))
                    .ok_or(BaselineError::Overflow {
                        what: "plain layer",
                    })?;
            }
            z[[i, l]] = acc;
        }
    }
    Ok(z)
}

/// What [`ratio_attack`] recovered from a masked input `Ŷ` (`k × m`, data in
/// `0..=max_level`).
#[derive(Clone, Debug, Serialize)]
pub struct RatioAttack {
    /// Entries of `Y` recovered exactly (value and, through the truth, position up to
    /// the permutations), as a fraction of all entries.
    pub exact_fraction: f64,
    /// Fraction of the non-zero entries recovered exactly.
    pub nonzero_exact_fraction: f64,
    /// Fraction of columns (samples) the attack could align with the reference.
    pub aligned_columns: f64,
    /// Mean Pearson correlation between each reconstructed sample (pixels placed by
    /// matching the recovered rows' mean to a public mean image) and the true sample.
    pub mean_image_correlation: f64,
    /// Zero pattern leaked outright: fraction of zero entries of `Y` (they stay zero).
    pub zero_fraction: f64,
}

/// The cloud's attack on a masked input `Ŷ = P·diag(a)·Y·diag(b)·Q` with `Y` in
/// `0..=max_level`: (1) align every column to a reference column by the mode of the
/// entry ratios (ratio 1 is the most frequent, e.g. two saturated pixels), (2) scale
/// each row so that all its entries are levels in `0..=max_level` with the maximum at
/// `max_level`, (3) place rows at pixels by sorting their mean against the public
/// `mean_image` (length `k`). `truth` (`k × m`, unpermuted) and `masks` are used only
/// to score the recovery.
#[must_use]
pub fn ratio_attack(
    y_hat: &FieldMatrix,
    max_level: u64,
    mean_image: &[f64],
    truth: &Array2<i64>,
    masks: &LayerMasks,
) -> RatioAttack {
    let (k, m) = y_hat.dim();
    // (1) reference column: the most non-zeros; align every column to it by the mode
    // of the entry ratios.
    let nnz = |l: usize| y_hat.column(l).iter().filter(|&&v| v != 0).count();
    let l0 = (0..m).max_by_key(|&l| nnz(l)).unwrap_or(0);
    let mut aligned = vec![false; m];
    let mut norm = y_hat.clone();
    let ref_inv: Vec<u64> = (0..k).map(|j| inv_p(y_hat[[j, l0]])).collect();
    for l in 0..m {
        let mut counts: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        for j in 0..k {
            let (a, b) = (y_hat[[j, l]], y_hat[[j, l0]]);
            if a != 0 && b != 0 {
                *counts.entry(mul_p(a, ref_inv[j])).or_default() += 1;
            }
        }
        if let Some((&c, _)) = counts.iter().max_by_key(|&(&v, &n)| (n, v)) {
            aligned[l] = true;
            let ci = inv_p(c);
            for j in 0..k {
                norm[[j, l]] = mul_p(norm[[j, l]], ci);
            }
        }
    }
    // (2) per row a scale putting the most entries into 1..=max_level (one of the
    // non-zero entries is at max_level); (3) re-fit every column the same way against
    // the scaled rows (repairs misaligned columns); (4) the rows once more.
    let fit_rows = |norm: &FieldMatrix| -> Vec<u64> {
        (0..k)
            .into_par_iter()
            .map(|j| best_scale(norm.row(j).iter().copied(), max_level))
            .collect()
    };
    let scales = fit_rows(&norm);
    let scaled = FieldMatrix::from_shape_fn((k, m), |(j, l)| mul_p(scales[j], norm[[j, l]]));
    let col_fix: Vec<u64> = (0..m)
        .into_par_iter()
        .map(|l| best_scale(scaled.column(l).iter().copied(), max_level))
        .collect();
    // Column fits are relative to max_level; rescale so that the fix is 1 for a column
    // already right (the in-range count decides between the fit and the identity).
    for l in 0..m {
        let fixed = scaled
            .column(l)
            .iter()
            .filter(|&&v| in_range(mul_p(col_fix[l], v), max_level))
            .count();
        let now = scaled
            .column(l)
            .iter()
            .filter(|&&v| in_range(v, max_level))
            .count();
        if fixed > now {
            for j in 0..k {
                norm[[j, l]] = mul_p(norm[[j, l]], col_fix[l]);
            }
        }
    }
    let scales = fit_rows(&norm);
    let mut rec = Array2::<i64>::zeros((k, m));
    for j in 0..k {
        for l in (0..m).filter(|&l| aligned[l]) {
            let v = mul_p(scales[j], norm[[j, l]]);
            rec[[j, l]] = if in_range(v, max_level) {
                i64::try_from(v).unwrap_or(0)
            } else {
                0
            };
        }
    }
    // Score: masked (j, l) holds Y[σ(j), τ(l)].
    let mut exact = 0usize;
    let mut nz = 0usize;
    let mut nz_exact = 0usize;
    let mut zeros = 0usize;
    for j in 0..k {
        for l in 0..m {
            let t = truth[[masks.sigma[j], masks.tau[l]]];
            if rec[[j, l]] == t {
                exact += 1;
            }
            if t == 0 {
                zeros += 1;
            } else {
                nz += 1;
                if rec[[j, l]] == t {
                    nz_exact += 1;
                }
            }
        }
    }
    // (3) rows to pixels by rank of the mean.
    let row_mean: Vec<f64> = (0..k)
        .map(|j| rec.row(j).iter().map(|&v| v as f64).sum::<f64>() / m as f64)
        .collect();
    let mut rows_by_mean: Vec<usize> = (0..k).collect();
    rows_by_mean.sort_by(|&a, &b| row_mean[a].total_cmp(&row_mean[b]));
    let mut pixels_by_mean: Vec<usize> = (0..k.min(mean_image.len())).collect();
    pixels_by_mean.sort_by(|&a, &b| mean_image[a].total_cmp(&mean_image[b]));
    let mut placed = vec![0usize; k];
    for (r, p) in rows_by_mean.iter().zip(&pixels_by_mean) {
        placed[*r] = *p;
    }
    let mut corr_sum = 0.0;
    for l in 0..m {
        let mut img = vec![0.0; k];
        for j in 0..k {
            img[placed[j]] = rec[[j, l]] as f64;
        }
        let truth_col: Vec<f64> = (0..k).map(|p| truth[[p, masks.tau[l]]] as f64).collect();
        corr_sum += pearson(&img, &truth_col);
    }
    let total = (k * m).max(1) as f64;
    RatioAttack {
        exact_fraction: exact as f64 / total,
        nonzero_exact_fraction: nz_exact as f64 / nz.max(1) as f64,
        aligned_columns: aligned.iter().filter(|&&a| a).count() as f64 / m.max(1) as f64,
        mean_image_correlation: corr_sum / m.max(1) as f64,
        zero_fraction: zeros as f64 / total,
    }
}

/// `0 < v ≤ max_level`.
fn in_range(v: u64, max_level: u64) -> bool {
    v != 0 && v <= max_level
}

/// The scale `s = max_level / v` (over the first 32 distinct non-zero `v`) that puts
/// the most values into `1..=max_level`; 0 if all values are 0.
fn best_scale(values: impl Iterator<Item = u64>, max_level: u64) -> u64 {
    let vals: Vec<u64> = values.filter(|&v| v != 0).collect();
    let mut cands: Vec<u64> = Vec::new();
    for &v in &vals {
        if !cands.contains(&v) {
            cands.push(v);
            if cands.len() == 32 {
                break;
            }
        }
    }
    let mut best = (0usize, 0u64);
    for c in cands {
        let s = mul_p(max_level % P, inv_p(c));
        let n = vals
            .iter()
            .filter(|&&v| in_range(mul_p(s, v), max_level))
            .count();
        if n > best.0 {
            best = (n, s);
        }
    }
    best.1
}

/// Pearson correlation (0 if either side is constant).
#[must_use]
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn random_int(rng: &mut ChaCha20Rng, shape: (usize, usize), r: i64) -> Array2<i64> {
        Array2::from_shape_fn(shape, |_| rng.gen_range(-r..=r))
    }

    #[test]
    fn field_arithmetic() {
        for a in [1u64, 2, 12345, P - 1, P / 2] {
            assert_eq!(mul_p(a, inv_p(a)), 1);
        }
        for z in [-5i64, 0, 7, -(1 << 59), 1 << 59] {
            assert_eq!(decode(encode(z)), z);
        }
        assert_eq!(add_p(P - 1, 1), 0);
    }

    #[test]
    fn outsourced_layer_equals_plain_product() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let w = random_int(&mut rng, (7, 11), 1000);
        let b = Array1::from_shape_fn(7, |_| rng.gen_range(-1000..=1000));
        let y = random_int(&mut rng, (11, 5), 1000);
        let mut user = SecureNetsUser::new(2, 4);
        let (z, cost) = user
            .outsource(
                &with_bias_column(&w, &b).unwrap(),
                &with_ones_row(&y),
                &mut HonestCloud,
            )
            .unwrap();
        assert_eq!(z.mapv(decode), plain_layer(&w, &b, &y).unwrap());
        assert_eq!(cost.bytes_up, 8 * (7 * 12 + 12 * 5));
        assert_eq!(cost.bytes_down, 8 * 7 * 5);
    }

    #[test]
    fn network_equals_plain_network() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let layers = vec![
            (
                random_int(&mut rng, (6, 9), 50),
                Array1::from_shape_fn(6, |_| rng.gen_range(-50..=50)),
            ),
            (
                random_int(&mut rng, (3, 6), 50),
                Array1::from_shape_fn(3, |_| rng.gen_range(-50..=50)),
            ),
        ];
        let x = random_int(&mut rng, (4, 9), 20);
        let relu = |_: usize, z: &Array2<i64>| z.mapv(|v| v.max(0) / 16);
        let mut user = SecureNetsUser::new(4, 3);
        let (out, _) = user.infer(&layers, &x, &relu, &mut HonestCloud).unwrap();
        let h = relu(
            0,
            &plain_layer(&layers[0].0, &layers[0].1, &x.t().to_owned()).unwrap(),
        );
        let z = plain_layer(&layers[1].0, &layers[1].1, &h).unwrap();
        assert_eq!(out, z.t().to_owned());
    }

    #[test]
    fn masked_matrices_hide_values_but_keep_zero_count() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let y = Array2::from_shape_fn((20, 6), |_| rng.gen_range(0..3i64));
        let masks = LayerMasks::draw(9, 4, 20, 6);
        let y_hat = masks.mask_inputs(&y.mapv(encode));
        let zeros = |a: &FieldMatrix| a.iter().filter(|&&v| v == 0).count();
        assert_eq!(zeros(&y_hat), zeros(&y.mapv(encode)));
        // No non-zero masked entry equals a small data value.
        assert!(y_hat.iter().all(|&v| v == 0 || v > 2));
    }

    /// A single altered entry passes `c` checks with probability exactly `2^−c`
    /// (paper §3.3.3). 4000 trials per `c` with a fixed seed; the observed miss rate
    /// must be within 5 standard deviations of `2^−c`.
    #[test]
    fn freivalds_detects_a_single_altered_entry_at_the_stated_rate() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let w = random_int(&mut rng, (5, 8), 100).mapv(encode);
        let y = random_int(&mut rng, (8, 6), 100).mapv(encode);
        let mut cheat = CorruptingCloud::new(12, 1);
        let trials = 4000usize;
        for c in [1usize, 2, 3] {
            let mut missed = 0usize;
            for _ in 0..trials {
                let z = cheat.multiply(&w, &y).unwrap();
                if freivalds(&w, &y, &z, c, &mut rng) {
                    missed += 1;
                }
            }
            let p = 0.5f64.powi(i32::try_from(c).unwrap());
            let sd = (p * (1.0 - p) / trials as f64).sqrt();
            let rate = missed as f64 / trials as f64;
            assert!(
                (rate - p).abs() < 5.0 * sd,
                "c = {c}: miss rate {rate}, expected {p}"
            );
        }
        // The honest product always passes.
        let z = matmul_p(&w, &y).unwrap();
        assert!(freivalds(&w, &y, &z, 10, &mut rng));
    }

    #[test]
    fn a_cheating_cloud_is_refused_after_retries() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let w = random_int(&mut rng, (5, 8), 100);
        let b = Array1::zeros(5);
        let y = random_int(&mut rng, (8, 6), 100);
        let mut user = SecureNetsUser::new(14, 40);
        let err = user
            .outsource(
                &with_bias_column(&w, &b).unwrap(),
                &with_ones_row(&y),
                &mut CorruptingCloud::new(15, 7),
            )
            .unwrap_err();
        assert!(matches!(err, BaselineError::VerificationFailed { .. }));
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut user = SecureNetsUser::new(1, 1);
        let w = FieldMatrix::zeros((2, 3));
        let y = FieldMatrix::zeros((4, 2));
        assert!(matches!(
            user.outsource(&w, &y, &mut HonestCloud),
            Err(BaselineError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn ratio_attack_recovers_low_precision_data() {
        // Synthetic "images": 30 pixels, 40 samples, levels 0..=4 with many saturated.
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let (k, m) = (30usize, 40usize);
        let intensity: Vec<f64> = (0..k).map(|j| j as f64 / k as f64).collect();
        let y = Array2::from_shape_fn((k, m), |(j, _)| {
            if rng.gen::<f64>() < intensity[j] {
                if rng.gen::<f64>() < 0.6 {
                    4
                } else {
                    rng.gen_range(1..4)
                }
            } else {
                0
            }
        });
        let masks = LayerMasks::draw(22, 3, k, m);
        let y_hat = masks.mask_inputs(&y.mapv(encode));
        let r = ratio_attack(&y_hat, 4, &intensity, &y, &masks);
        assert!(r.exact_fraction > 0.9, "{r:?}");
        assert!(r.mean_image_correlation > 0.3, "{r:?}");
    }
}
