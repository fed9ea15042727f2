//! Attack 1 (paper §4.3, Fig. 2): the server reconstructs a client's training inputs from
//! the first layer's gradients.
//!
//! For one sample, layer 1's gradients are `Δw_1 = δ_1·xᵀ` and `Δb_1 = δ_1`, so every row
//! `j` with `Δb_1[j] ≠ 0` gives `x = Δw_1[j,:] / Δb_1[j]`. The estimators work on the rows
//! `(η·Δw_1[j,:], η·Δb_1[j])` of whatever update the server holds ([`UpdateRows`]):
//!
//! - [`ratio_estimate`]: the least-squares fit of `η·Δw_j ≈ η·Δb_j · x` over all rows, i.e.
//!   the average of the row ratios weighted by `(η·Δb_j)²` (exact for one sample; for a
//!   batch, an affine mixture of its inputs);
//! - [`span_basis`] + [`project`](crate::linalg::project): the span of the rows. For a
//!   batch of `k` inputs it is (at most) the span of those inputs; the best approximation
//!   of each true input in it measures how much the update leaks (an *oracle* score: the
//!   attacker still has to unmix);
//! - [`unmix_two`]: for `k = 2` and inputs with public bounds (MNIST pixels in `[0, 1]`),
//!   the rows `(Δw_j, Δb_j) = δ_1j·(x_1, 1) + δ_2j·(x_2, 1)`: the points with last
//!   coordinate 1 in their span form the line through `x_1` and `x_2`, and the two ends of
//!   the segment of that line inside the box are (almost always) `x_1` and `x_2` themselves.
//!
//! Two attackers are run on real training runs ([`run_experiment`]):
//! - *per-iteration*: on what the server decrypts in Alg. 3 every iteration but the last
//!   ([`Server::last_decrypted_update`](gelunet_server::Server::last_decrypted_update)):
//!   `η·Δw` without masking, `η·Δw + r` with it;
//! - *final-update*: on `w^I − w^F = η·ΣΔw` of each session (Alg. 5), which the server
//!   learns in the clear whatever the mask, because it holds the true weights between
//!   sessions. A session of one sample leaks it exactly; with `d·B` samples it leaks their
//!   span, and for `d·B = 2` box-constrained data, both inputs.
//!
//! Under protocol v2 ([`InversionSetup::protocol`]) the same attackers run on what that
//! server sees instead: every plaintext `D_j = η·Δ_j + r_j` and the rollover's
//! `D = η·Δ_last + P_{v+1} − R` (per-iteration), and the difference of its stored states
//! `W~_v − W~_{v+1} = η·ΣΔw + P_v − P_{v+1}` (final-update). v2 has no unmasked mode.

use std::time::Instant;

use gelunet_paillier::BigInt;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{MaskMode, ModelSpec, Scales};
use gelunet_server::DecryptedUpdate;
use ndarray::{Array1, Array2, ArrayView1, Axis, Slice};
use num_traits::ToPrimitive;
use serde::Serialize;

use crate::drive::{
    build_simulation, run_observed_session, AttackRun, ObservedSession, RunSummary,
};
use crate::linalg::{project, svd};
use crate::{AttackError, Result};

/// Relative rank threshold for spans of update rows.
pub const SPAN_RCOND: f64 = 1e-7;

/// Widening of the box in [`unmix_two`], relative to its width.
pub const UNMIX_TOLERANCE: f64 = 1e-4;

/// Layer-1 update rows `(η·Δw_j, η·Δb_j)` in real units, all multiplied by one common
/// positive factor (which no estimator depends on). Masked updates can be far outside
/// `f64`'s range otherwise.
#[derive(Clone, Debug)]
pub struct UpdateRows {
    /// `m × n` weight rows.
    pub w: Array2<f64>,
    /// `m` bias entries.
    pub b: Array1<f64>,
    /// One step of the fixed-point grid of the weight rows, in the same units: `η·Δw` is a
    /// multiple of `η` at `2^fw`, so rounding `Δw` leaves an error of up to half a step in
    /// each entry. Singular values below this noise floor are not counted in spans.
    pub quantum: f64,
}

/// `m · 2^e` without intermediate overflow or underflow.
fn ldexp(mut m: f64, mut e: i64) -> f64 {
    while e > 1000 {
        m *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        m *= 2f64.powi(-1000);
        e += 1000;
    }
    m * 2f64.powi(e as i32)
}

/// `x · 2^e` as `f64`, keeping the top 64 bits of `x`.
fn big_ldexp(x: &BigInt, e: i64) -> f64 {
    let bits = x.bits() as i64;
    let drop = (bits - 64).max(0);
    let top = (x >> (drop as usize)).to_f64().unwrap_or(0.0);
    ldexp(top, e + drop)
}

impl UpdateRows {
    /// From integers at the weight scale `2^fw` and the bias scale `2^(fa+fw)`; `eta` is
    /// the learning rate at `2^fe` (the grid step of `η·Δw` at `2^fw`).
    pub fn from_big(w: &Array2<BigInt>, b: &Array1<BigInt>, scales: &Scales, eta: i128) -> Self {
        let max_bits = w
            .iter()
            .map(|x| x.bits() as i64)
            .chain(b.iter().map(|x| x.bits() as i64 - i64::from(scales.fa)))
            .max()
            .unwrap_or(0);
        // Common factor 2^-(shift): the largest entry lands near 2^0..2^64.
        let shift = max_bits - i64::from(scales.fw);
        let ew = -i64::from(scales.fw) - shift;
        let eb = -i64::from(scales.fa + scales.fw) - shift;
        Self {
            w: w.map(|x| big_ldexp(x, ew)),
            b: b.map(|x| big_ldexp(x, eb)),
            quantum: ldexp(eta.unsigned_abs() as f64, ew),
        }
    }

    /// Layer 1 of what the server decrypted in one masked update (Alg. 3).
    pub fn from_decrypted(d: &[DecryptedUpdate], scales: &Scales, eta: i128) -> Option<Self> {
        d.first().map(|l| Self::from_big(&l.w, &l.b, scales, eta))
    }

    /// Layer 1 of the difference of what the server stores before and after the session:
    /// under the paper's protocol `w^I − w^F` (Alg. 5), which is `η·ΔW^c` of the whole
    /// session; under v2 `W~_v − W~_{v+1} = η·ΔW^c + P_v − P_{v+1}`.
    pub fn from_final(obs: &ObservedSession, scales: &Scales, eta: i128) -> Option<Self> {
        let before = obs.stored_before.first()?;
        let after = obs.stored_after.first()?;
        let w = &before.w - &after.w;
        let b = &before.b - &after.b;
        Some(Self::from_big(&w, &b, scales, eta))
    }
}

/// `Σ_j b_j·w_j / Σ_j b_j²`: the least-squares `x` with `w_j ≈ b_j·x`.
pub fn ratio_estimate(rows: &UpdateRows) -> Option<Array1<f64>> {
    let den = rows.b.dot(&rows.b);
    if !(den > 0.0 && den.is_finite()) {
        return None;
    }
    Some(rows.w.t().dot(&rows.b) / den)
}

/// `w_j / b_j` for the row with the largest `|b_j|` (the paper's one-row attack).
pub fn max_row_estimate(rows: &UpdateRows) -> Option<Array1<f64>> {
    let (j, bj) = rows
        .b
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
    if *bj == 0.0 {
        return None;
    }
    Some(rows.w.row(j).mapv(|v| v / bj))
}

/// An orthonormal basis of the span of the weight rows: the right singular vectors whose
/// singular values exceed both `SPAN_RCOND·σ_max` and four times the largest singular value
/// the rounding noise alone would give (`≈ 0.29·quantum·(√m + √n)`).
pub fn span_basis(rows: &UpdateRows) -> Array2<f64> {
    let (m, n) = rows.w.dim();
    let dec = svd(rows.w.t());
    let top = dec.sigma.first().copied().unwrap_or(0.0);
    let noise = 4.0 * 0.29 * rows.quantum * ((m as f64).sqrt() + (n as f64).sqrt());
    let floor = (SPAN_RCOND * top).max(noise);
    let r = dec.sigma.iter().filter(|&&s| s > floor).count();
    dec.u.slice_axis(Axis(1), Slice::from(..r)).t().to_owned()
}

/// Two-input unmixing under public box bounds `[lo, hi]` (see the module docs). `None` if
/// the rows do not span a two-dimensional space with a line of last coordinate 1, or the
/// line misses the box. An end of the segment is an input exactly when that input has a
/// coordinate on a bound where the other input is not on the same bound (typical for
/// images with blank pixels); otherwise it lies beyond the input on the same line.
pub fn unmix_two(rows: &UpdateRows, lo: f64, hi: f64) -> Option<[Array1<f64>; 2]> {
    let n = rows.w.ncols();
    let mut aug = Array2::<f64>::zeros((rows.w.nrows(), n + 1));
    aug.slice_axis_mut(Axis(1), Slice::from(..n))
        .assign(&rows.w);
    aug.column_mut(n).assign(&rows.b);
    let dec = svd(aug.t());
    if dec.sigma.len() < 2 || dec.sigma[1] <= SPAN_RCOND * dec.sigma[0] {
        return None;
    }
    let v1 = dec.u.column(0);
    let v2 = dec.u.column(1);
    let (l1, l2) = (v1[n], v2[n]);
    let den = l1 * l1 + l2 * l2;
    if den <= 1e-24 {
        return None;
    }
    let p: Array1<f64> = (&v1.mapv(|x| x * l1) + &v2.mapv(|x| x * l2)) / den;
    let u: Array1<f64> = &v1.mapv(|x| x * l2) - &v2.mapv(|x| x * l1);
    let (mut t_lo, mut t_hi) = (f64::NEG_INFINITY, f64::INFINITY);
    let scale = u.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    // Rounding noise: coordinates where both inputs sit on the same bound are only
    // approximately constant along the line, so the box is widened by a small tolerance.
    let tol = UNMIX_TOLERANCE * (hi - lo);
    for k in 0..n {
        if u[k].abs() <= 1e-7 * scale {
            continue;
        }
        let a = (lo - tol - p[k]) / u[k];
        let b = (hi + tol - p[k]) / u[k];
        t_lo = t_lo.max(a.min(b));
        t_hi = t_hi.min(a.max(b));
    }
    if !(t_lo.is_finite() && t_hi.is_finite() && t_lo <= t_hi) {
        return None;
    }
    let at = |t: f64| Array1::from_iter((0..n).map(|k| p[k] + t * u[k]));
    Some([at(t_lo), at(t_hi)])
}

/// Mean squared error and Pearson correlation of a reconstruction against the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// `mean((x̂ − x)²)`.
    pub mse: f64,
    /// Pearson correlation of `x̂` and `x` (0 if either is constant or not finite).
    pub corr: f64,
}

/// Scores `est` against `truth`.
pub fn score(est: ArrayView1<'_, f64>, truth: ArrayView1<'_, f64>) -> Score {
    let n = truth.len().max(1) as f64;
    let mse = est
        .iter()
        .zip(truth.iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        / n;
    let (ma, mb) = (est.sum() / n, truth.sum() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (a, b) in est.iter().zip(truth.iter()) {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
    }
    let corr = if saa > 0.0 && sbb > 0.0 && sab.is_finite() {
        sab / (saa.sqrt() * sbb.sqrt())
    } else {
        0.0
    };
    Score {
        mse: if mse.is_finite() { mse } else { f64::MAX },
        corr,
    }
}

/// The true input `est` is closest to (smallest MSE), and its score.
pub fn best_match(est: ArrayView1<'_, f64>, truths: &[Array1<f64>]) -> (usize, Score) {
    truths
        .iter()
        .enumerate()
        .map(|(i, t)| (i, score(est, t.view())))
        .min_by(|a, b| a.1.mse.total_cmp(&b.1.mse))
        .unwrap_or((0, Score::default()))
}

/// What one attacker got out of one observed update.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateAttack {
    /// Number of inputs mixed in the update.
    pub inputs: usize,
    /// [`ratio_estimate`] against the closest true input.
    pub ratio: Score,
    /// Dimension of the span of the update's weight rows.
    pub span_dim: usize,
    /// Oracle: each true input replaced by its projection on the span (mean over inputs).
    pub span: Score,
    /// [`unmix_two`] (two inputs, public bounds only), mean over the two inputs after the
    /// best assignment.
    pub unmix: Option<Score>,
    /// The estimates, for the figures: `(true input, estimate)` pairs (the unmixed ones
    /// when [`unmix_two`] ran, else the ratio estimate).
    #[serde(skip)]
    pub pairs: Vec<(Array1<f64>, Array1<f64>)>,
    /// The [`ratio_estimate`] itself.
    #[serde(skip)]
    pub mixture: Array1<f64>,
}

/// Runs every estimator on `rows` against `truths`.
pub fn attack_update(
    rows: &UpdateRows,
    truths: &[Array1<f64>],
    bounds: Option<(f64, f64)>,
) -> UpdateAttack {
    let n = rows.w.ncols();
    let ratio_est = ratio_estimate(rows).unwrap_or_else(|| Array1::zeros(n));
    let (ratio_idx, ratio) = best_match(ratio_est.view(), truths);
    let basis = span_basis(rows);
    let mut span = Score::default();
    for t in truths {
        let sc = score(project(basis.view(), t.view()).view(), t.view());
        span.mse += sc.mse / truths.len() as f64;
        span.corr += sc.corr / truths.len() as f64;
    }
    let mut pairs = vec![(truths[ratio_idx].clone(), ratio_est.clone())];
    let unmix = match (bounds, truths.len()) {
        (Some((lo, hi)), 2) => Some(match unmix_two(rows, lo, hi) {
            Some([e0, e1]) => {
                let straight = [
                    score(e0.view(), truths[0].view()),
                    score(e1.view(), truths[1].view()),
                ];
                let swapped = [
                    score(e1.view(), truths[0].view()),
                    score(e0.view(), truths[1].view()),
                ];
                let total = |s: &[Score; 2]| s[0].mse + s[1].mse;
                let (best, est) = if total(&straight) <= total(&swapped) {
                    (straight, [e0, e1])
                } else {
                    (swapped, [e1, e0])
                };
                pairs = vec![
                    (truths[0].clone(), est[0].clone()),
                    (truths[1].clone(), est[1].clone()),
                ];
                Score {
                    mse: (best[0].mse + best[1].mse) / 2.0,
                    corr: (best[0].corr + best[1].corr) / 2.0,
                }
            }
            None => Score {
                mse: f64::MAX,
                corr: 0.0,
            },
        }),
        _ => None,
    };
    UpdateAttack {
        inputs: truths.len(),
        ratio,
        span_dim: basis.nrows(),
        span,
        unmix,
        pairs,
        mixture: ratio_est,
    }
}

/// One configuration of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Case {
    /// Mini-batch size `B`.
    pub batch: usize,
    /// Iterations per session `d`.
    pub iterations: u32,
    /// Whether gradients are masked (statistical mask, σ = 128) or sent with
    /// [`MaskMode::InsecureNone`].
    pub masked: bool,
}

/// The cases run for `batch_sizes` on `spec`: for each `B`, sessions of
/// `d = clamp(⌊min fan-in / B⌋, 2, 4)` iterations (at least 2, so that there is a
/// per-iteration update to attack), without and with masking; then the final-update cases
/// `d·B = 2` and `d·B = 1` (`B = 1`, masked).
pub fn default_cases(spec: &ModelSpec, batch_sizes: &[usize]) -> Vec<Case> {
    let mut out = Vec::new();
    for &b in batch_sizes {
        let bound = spec.min_fan_in() / b.max(1);
        let d = bound.clamp(2, 4) as u32;
        for masked in [false, true] {
            out.push(Case {
                batch: b,
                iterations: d,
                masked,
            });
        }
    }
    for d in [2, 1] {
        out.push(Case {
            batch: 1,
            iterations: d,
            masked: true,
        });
    }
    out
}

/// The experiment's settings.
#[derive(Clone, Debug)]
pub struct InversionSetup {
    /// The run attacked (the historic figures: [`Protocol::Paper`]).
    pub run: AttackRun,
    /// Sessions observed per case.
    pub sessions: usize,
    /// The cases ([`default_cases`]).
    pub cases: Vec<Case>,
}

/// Mean scores of one attacker over the updates it saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackSummary {
    /// Updates attacked.
    pub updates: usize,
    /// Inputs mixed in each update.
    pub inputs_per_update: usize,
    /// Mean [`ratio_estimate`] score (against the closest true input).
    pub ratio: Score,
    /// Mean span dimension.
    pub span_dim: f64,
    /// Mean oracle span score.
    pub span: Score,
    /// Mean [`unmix_two`] score, when it applies.
    pub unmix: Option<Score>,
}

fn summarize(attacks: &[UpdateAttack]) -> AttackSummary {
    let n = attacks.len().max(1) as f64;
    let mean = |f: &dyn Fn(&UpdateAttack) -> Score| {
        let (m, c) = attacks.iter().fold((0.0, 0.0), |(m, c), a| {
            let s = f(a);
            (m + s.mse / n, c + s.corr / n)
        });
        Score { mse: m, corr: c }
    };
    let unmix = attacks.iter().all(|a| a.unmix.is_some()) && !attacks.is_empty();
    AttackSummary {
        updates: attacks.len(),
        inputs_per_update: attacks.first().map_or(0, |a| a.inputs),
        ratio: mean(&|a| a.ratio),
        span_dim: attacks.iter().map(|a| a.span_dim as f64).sum::<f64>() / n,
        span: mean(&|a| a.span),
        unmix: unmix.then(|| mean(&|a| a.unmix.unwrap_or_default())),
    }
}

/// The results of one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    /// The case.
    pub case: Case,
    /// `d·B`.
    pub samples_per_session: usize,
    /// `min fan-in`: the secure bound on `d·B`.
    pub bound: usize,
    /// Whether the run needed the insecure policy (`d·B` above the bound, or a single
    /// sample per session, which the server refuses once it enforces at least 2).
    pub insecure_policy: bool,
    /// The mask the run used.
    pub mask: String,
    /// Attacker on each masked update (the paper's protocol: Alg. 3, `None` if the
    /// sessions have one iteration; v2: every plaintext `D`, the rollover's included).
    pub per_iteration: Option<AttackSummary>,
    /// Attacker on the stored difference of each session (the paper's protocol:
    /// `w^I − w^F` of Alg. 5; v2: `W~_v − W~_{v+1}`).
    pub final_update: AttackSummary,
    /// Wall time of the case.
    pub seconds: f64,
    /// Per-iteration attack details, for the figures.
    #[serde(skip)]
    pub per_iteration_attacks: Vec<UpdateAttack>,
    /// Final-update attack details, for the figures.
    #[serde(skip)]
    pub final_attacks: Vec<UpdateAttack>,
}

/// The whole experiment.
#[derive(Clone, Debug, Serialize)]
pub struct InversionReport {
    /// The run: protocol, dataset, widths, samples, clients, key bits, learning rate.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Sessions observed per case.
    pub sessions: usize,
    /// MSE of guessing the data mean for every input (what an attacker gets from knowing
    /// the data distribution only).
    pub mean_guess_mse: f64,
    /// Public feature bounds used by the unmixing attack.
    pub bounds: Option<(f64, f64)>,
    /// One report per case.
    pub cases: Vec<CaseReport>,
}

/// The rows of `a` (at `2^fa`) as real inputs.
pub(crate) fn decode_inputs(a: &Array2<i128>, scales: &Scales) -> Vec<Array1<f64>> {
    let f = 2f64.powi(scales.fa as i32);
    a.rows()
        .into_iter()
        .map(|r| r.mapv(|v| v as f64 / f))
        .collect()
}

/// The server's view of a session, the layer-1 rows of its stored difference
/// ([`UpdateRows::from_final`]), and the session's true inputs (the ground truth).
///
/// # Errors
/// [`AttackError::Invalid`] for a model without layers.
pub(crate) fn stored_difference(
    obs: &ObservedSession,
    scales: &Scales,
    eta: i128,
) -> Result<(UpdateRows, Vec<Array1<f64>>)> {
    let rows = UpdateRows::from_final(obs, scales, eta)
        .ok_or_else(|| AttackError::Invalid("empty model".into()))?;
    let truths = obs
        .inputs
        .iter()
        .flat_map(|a| decode_inputs(a, scales))
        .collect();
    Ok((rows, truths))
}

/// Runs every case of `setup` with the given keys (`clients + 1` of them).
///
/// # Errors
/// [`AttackError::Invalid`] for an unmasked case under protocol v2 (which has no
/// unmasked mode); protocol, role and data errors.
pub fn run_experiment(
    setup: &InversionSetup,
    keys: &[gelunet_paillier::PrivateKey],
) -> Result<InversionReport> {
    let run = &setup.run;
    let data = &run.data;
    let spec = run.spec();
    let shares = run.shares()?;
    let scales = Scales::default();
    let (eta, _) = run.eta(&scales)?;
    let mean = data
        .x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(0));
    let mean_guess_mse = data
        .x
        .rows()
        .into_iter()
        .map(|r| score(mean.view(), r).mse)
        .sum::<f64>()
        / data.x.nrows().max(1) as f64;
    let mut cases = Vec::new();
    for case in &setup.cases {
        if run.protocol == Protocol::V2 && !case.masked {
            return Err(AttackError::Invalid(
                "protocol v2 has no unmasked mode: drop the unmasked cases".into(),
            ));
        }
        let t0 = Instant::now();
        let mut cfg = run.config(&spec, case.batch, case.iterations);
        if !case.masked {
            cfg.mask = MaskMode::InsecureNone;
        }
        let mut sim = build_simulation(&cfg, keys, &shares)?;
        let mut per_it = Vec::new();
        let mut fin = Vec::new();
        for _ in 0..setup.sessions {
            let obs = run_observed_session(&mut sim)?;
            for (t, d) in obs.decrypted.iter().enumerate() {
                let rows = UpdateRows::from_decrypted(d, &scales, eta)
                    .ok_or_else(|| AttackError::Invalid("empty update".into()))?;
                let truths = decode_inputs(&obs.inputs[t], &scales);
                per_it.push(attack_update(&rows, &truths, data.bounds));
            }
            let (rows, truths) = stored_difference(&obs, &scales, eta)?;
            fin.push(attack_update(&rows, &truths, data.bounds));
        }
        cases.push(CaseReport {
            case: *case,
            samples_per_session: cfg.samples_per_session(),
            bound: spec.min_fan_in(),
            insecure_policy: cfg.allow_bound_violation || cfg.allow_few_samples,
            mask: format!("{:?}", cfg.mask),
            per_iteration: (!per_it.is_empty()).then(|| summarize(&per_it)),
            final_update: summarize(&fin),
            seconds: t0.elapsed().as_secs_f64(),
            per_iteration_attacks: per_it,
            final_attacks: fin,
        });
    }
    Ok(InversionReport {
        run: run.summary(keys),
        sessions: setup.sessions,
        mean_guess_mse,
        bounds: data.bounds,
        cases,
    })
}

/// Renders the report as a markdown table.
pub fn render(report: &InversionReport) -> String {
    let mut s = format!(
        "gradient inversion (protocol {}): {} {:?}, {} samples, {} clients, {}-bit keys, {} sessions per case; \
         guessing the mean gives MSE {:.4}\n\n",
        report.run.protocol,
        report.run.dataset,
        report.run.widths,
        report.run.samples,
        report.run.clients,
        report.run.key_bits,
        report.sessions,
        report.mean_guess_mse
    );
    s.push_str(
        "| B | d | d·B | mask | policy | attacker | updates | inputs/update | ratio MSE | ratio corr | span dim | span-oracle MSE | span corr | unmix MSE | unmix corr |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for c in &report.cases {
        let policy = if c.insecure_policy {
            "insecure"
        } else {
            "secure"
        };
        let mask = if c.case.masked { "on" } else { "off" };
        let (per_name, final_name) = labels(&report.run.protocol);
        let rows = [
            (per_name, c.per_iteration.as_ref()),
            (final_name, Some(&c.final_update)),
        ];
        for (name, sum) in rows {
            let Some(a) = sum else { continue };
            let (um, uc) = a.unmix.map_or(("–".into(), "–".into()), |u| {
                (format!("{:.2e}", u.mse), format!("{:.3}", u.corr))
            });
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2e} | {:.3} | {:.1} | {:.2e} | {:.3} | {} | {} |\n",
                c.case.batch,
                c.case.iterations,
                c.samples_per_session,
                mask,
                policy,
                name,
                a.updates,
                a.inputs_per_update,
                a.ratio.mse,
                a.ratio.corr,
                a.span_dim,
                a.span.mse,
                a.span.corr,
                um,
                uc
            ));
        }
    }
    s
}

/// The attackers' names in tables and figures: per-iteration and per-session, for the
/// protocol named `protocol`.
fn labels(protocol: &str) -> (&'static str, &'static str) {
    if protocol == Protocol::V2.name() {
        ("per-iteration plain D (v2)", "stored W~_v − W~_{v+1} (v2)")
    } else {
        ("per-iteration D (Alg. 3)", "final w^I−w^F (Alg. 5)")
    }
}

/// Writes the figures of `report` for square images of side `side` into `dir`:
/// `inversion_grid.png` (paper Fig. 2: originals, reconstructions from the per-iteration
/// updates without and with masking, `B = 1`; the paper's protocol only, v2 has no
/// unmasked run) and `final_update_grid.png` (what Alg. 5's `w^I − w^F` gives away with
/// masking on: `d·B = 1` and `d·B = 2`; under v2 what `W~_v − W~_{v+1}` gives). Returns
/// the paths written.
///
/// # Errors
/// [`AttackError::Plot`].
pub fn write_figures(
    report: &InversionReport,
    side: usize,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>> {
    use gelunet_plot::{image_grid, ImageRow};
    let mut written = Vec::new();
    let cols = 8;
    let find = |batch: usize, masked: bool| {
        report
            .cases
            .iter()
            .find(|c| c.case.batch == batch && c.case.masked == masked && c.case.iterations >= 2)
    };
    if let (Some(off), Some(on)) = (find(1, false), find(1, true)) {
        let take = |c: &CaseReport, truth: bool| -> Vec<Array1<f64>> {
            c.per_iteration_attacks
                .iter()
                .take(cols)
                .filter_map(|a| a.pairs.first())
                .map(|(t, e)| if truth { t.clone() } else { e.clone() })
                .collect()
        };
        let rows = [
            ImageRow {
                label: "original inputs".into(),
                images: take(off, true),
            },
            ImageRow {
                label: "server's reconstruction, no mask".into(),
                images: take(off, false),
            },
            ImageRow {
                label: "server's reconstruction, masked (Alg. 3)".into(),
                images: take(on, false),
            },
        ];
        let path = dir.join("inversion_grid.png");
        image_grid(
            &path,
            &rows,
            side,
            &format!(
                "Gradient inversion from per-iteration updates, B = 1, d = {} ({} {:?}, {}-bit keys)",
                off.case.iterations, report.run.dataset, report.run.widths, report.run.key_bits
            ),
        )?;
        written.push(path);
    }
    let fin = |spb: usize| {
        report
            .cases
            .iter()
            .find(|c| c.case.masked && c.samples_per_session == spb && c.case.batch == 1)
    };
    let source = labels(&report.run.protocol).1;
    let mut rows = Vec::new();
    if let Some(c) = fin(1) {
        let pairs: Vec<_> = c
            .final_attacks
            .iter()
            .filter_map(|a| a.pairs.first())
            .take(cols)
            .collect();
        rows.push(ImageRow {
            label: "d·B = 1: original".into(),
            images: pairs.iter().map(|p| p.0.clone()).collect(),
        });
        rows.push(ImageRow {
            label: format!("d·B = 1: from {source}"),
            images: pairs.iter().map(|p| p.1.clone()).collect(),
        });
    }
    if let Some(c) = fin(2) {
        let pairs: Vec<_> = c
            .final_attacks
            .iter()
            .flat_map(|a| a.pairs.iter())
            .take(cols)
            .collect();
        let mixtures: Vec<_> = c
            .final_attacks
            .iter()
            .take(cols / 2)
            .flat_map(|a| {
                let m = ratio_estimate_of(a);
                [m.clone(), m]
            })
            .collect();
        rows.push(ImageRow {
            label: "d·B = 2: originals (pairs)".into(),
            images: pairs.iter().map(|p| p.0.clone()).collect(),
        });
        rows.push(ImageRow {
            label: "d·B = 2: row-ratio mixture".into(),
            images: mixtures,
        });
        rows.push(ImageRow {
            label: format!("d·B = 2: box unmixing of {source}"),
            images: pairs.iter().map(|p| p.1.clone()).collect(),
        });
    }
    if !rows.is_empty() {
        let path = dir.join("final_update_grid.png");
        image_grid(
            &path,
            &rows,
            side,
            &format!(
                "Summed-gradient leak per session, protocol {}, masking on ({}, {}-bit keys)",
                report.run.protocol, report.run.dataset, report.run.key_bits
            ),
        )?;
        written.push(path);
    }
    Ok(written)
}

fn ratio_estimate_of(a: &UpdateAttack) -> Array1<f64> {
    a.mixture.clone()
}
