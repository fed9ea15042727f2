//! The server's attack on each session's summed update, under both protocols
//! (`docs/DESIGN.md` "Protocol v2", "Why").
//!
//! The server plays with its full view ([`run_observed_session`]): what it stores between
//! sessions, every update `D` it receives and the schedule (which client, `d`, `B`). From
//! the stored states it computes, for every session,
//!
//! - under the paper's protocol: `w^I − w^F = η·ΣΔw` (Alg. 5), in the clear whatever the
//!   gradient mask, because it holds the true model between sessions;
//! - under protocol v2: the analogous `W~_v − W~_{v+1} = η·ΣΔw + P_v − P_{v+1}`, where
//!   `P_v, P_{v+1}` are the group key's uniform masks of `λ = B + 128` bits.
//!
//! On layer 1 of that difference it runs the estimators of [`crate::inversion`]: for
//! two-sample sessions of box-bounded data (MNIST pixels in `[0, 1]`) the box unmixing
//! [`unmix_two`], otherwise the row ratio [`ratio_estimate`], every estimate clipped to the
//! public box. It also runs the ratio estimate on every single `D` it receives (Alg. 3's
//! decrypted `D = η·Δ + r`; v2's plaintext `D_j` and the rollover). Every estimate is
//! scored against the true inputs (the client's transcript, used for scoring only) and
//! against the *baseline*: guessing the data mean for every input.
//!
//! Measured ([`run_experiment`], the test `attacks/tests/session_sum.rs`): the paper's
//! protocol gives both MNIST digits of a two-sample session back (MSE ≈ 0); under v2 the
//! same attacker does no better than the mean guess.

use std::time::Instant;

use gelunet_paillier::PrivateKey;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::Scales;
use ndarray::{Array1, Axis};
use serde::Serialize;

use crate::drive::{build_simulation, run_observed_session, AttackRun, RunSummary};
use crate::inversion::{
    decode_inputs, ratio_estimate, score, span_basis, stored_difference, unmix_two, Score,
    UpdateRows,
};
use crate::{AttackError, Result};

/// The attack succeeds when its MSE is below this fraction of the mean guess's.
pub const SUCCESS_FRACTION: f64 = 0.1;

/// Settings of the session-sum attack.
#[derive(Clone, Debug)]
pub struct SessionSumSetup {
    /// The run attacked.
    pub run: AttackRun,
    /// Mini-batch size `B`.
    pub batch: usize,
    /// Iterations per session `d` (the box unmixing needs `d·B = 2`).
    pub iterations: u32,
    /// Sessions attacked.
    pub sessions: usize,
}

/// What the attack got out of one session.
#[derive(Clone, Debug, Serialize)]
pub struct SessionResult {
    /// Session id.
    pub session: u64,
    /// The client of the session.
    pub client: usize,
    /// Inputs of the session (`d·B`).
    pub inputs: usize,
    /// Which estimator produced the reconstruction: `unmix` or `ratio`.
    pub estimator: String,
    /// Mean score of the reconstruction of the session's inputs.
    pub score: Score,
    /// Mean score of the mean guess on the same inputs.
    pub baseline: Score,
    /// Dimension of the span of the stored difference's layer-1 rows (the paper's
    /// protocol: the number of inputs; v2: full, noise).
    pub span_dim: usize,
    /// `(true input, reconstruction)` pairs, for the figure.
    #[serde(skip)]
    pub pairs: Vec<(Array1<f64>, Array1<f64>)>,
}

/// The whole experiment.
#[derive(Clone, Debug, Serialize)]
pub struct SessionSumReport {
    /// The run: protocol, dataset, widths, samples, clients, key bits, learning rate.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Mini-batch size `B`.
    pub batch: usize,
    /// Iterations per session `d`.
    pub iterations: u32,
    /// Public feature bounds (the box of the unmixing and of the clipping).
    pub bounds: Option<(f64, f64)>,
    /// What the server subtracted: `w^I − w^F` (paper) or `W~_v − W~_{v+1}` (v2).
    pub observed: String,
    /// Mean squared error of the reconstructions from the stored differences, over every
    /// input of every attacked session.
    pub mse: f64,
    /// Mean Pearson correlation of those reconstructions.
    pub corr: f64,
    /// Mean squared error of guessing the data mean for the same inputs.
    pub baseline_mse: f64,
    /// `mse < SUCCESS_FRACTION · baseline_mse`.
    pub success: bool,
    /// [`SUCCESS_FRACTION`].
    pub success_fraction: f64,
    /// Mean MSE of the ratio estimate on every single update `D` the server received
    /// (clipped to the box), against the inputs of its iteration.
    pub per_update_mse: f64,
    /// Mean correlation of those estimates.
    pub per_update_corr: f64,
    /// Number of single updates attacked.
    pub updates: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One entry per attacked session.
    pub sessions: Vec<SessionResult>,
}

fn clip(x: Array1<f64>, bounds: Option<(f64, f64)>) -> Array1<f64> {
    match bounds {
        Some((lo, hi)) => x.mapv(|v| if v.is_nan() { lo } else { v.clamp(lo, hi) }),
        None => x,
    }
}

fn mean_score(scores: &[Score]) -> Score {
    let n = scores.len().max(1) as f64;
    Score {
        mse: scores.iter().map(|s| s.mse).sum::<f64>() / n,
        corr: scores.iter().map(|s| s.corr).sum::<f64>() / n,
    }
}

/// The attacker's reconstruction of the `k` inputs behind `rows`: the box unmixing for
/// `k = 2` with public bounds when it finds a segment, else the ratio estimate (the data
/// mean when even that fails) for every input; clipped to the box. Returns the name of
/// the estimator and the estimates.
pub fn reconstruct(
    rows: &UpdateRows,
    k: usize,
    bounds: Option<(f64, f64)>,
    mean: &Array1<f64>,
) -> (&'static str, Vec<Array1<f64>>) {
    if let (2, Some((lo, hi))) = (k, bounds) {
        if let Some([a, b]) = unmix_two(rows, lo, hi) {
            return ("unmix", vec![clip(a, bounds), clip(b, bounds)]);
        }
    }
    let est = ratio_estimate(rows).unwrap_or_else(|| mean.clone());
    ("ratio", vec![clip(est, bounds); k.max(1)])
}

/// Scores estimates against truths with the best assignment (two of each: both orders;
/// otherwise every truth against its closest estimate).
fn assign(est: &[Array1<f64>], truths: &[Array1<f64>]) -> Vec<(Array1<f64>, Array1<f64>, Score)> {
    if est.len() == 2 && truths.len() == 2 {
        let s = |e: &Array1<f64>, t: &Array1<f64>| score(e.view(), t.view());
        let straight = [s(&est[0], &truths[0]), s(&est[1], &truths[1])];
        let swapped = [s(&est[1], &truths[0]), s(&est[0], &truths[1])];
        let (order, sc) = if straight[0].mse + straight[1].mse <= swapped[0].mse + swapped[1].mse {
            ([0, 1], straight)
        } else {
            ([1, 0], swapped)
        };
        return (0..2)
            .map(|i| (truths[i].clone(), est[order[i]].clone(), sc[i]))
            .collect();
    }
    truths
        .iter()
        .map(|t| {
            let (e, sc) = est
                .iter()
                .map(|e| (e, score(e.view(), t.view())))
                .min_by(|a, b| a.1.mse.total_cmp(&b.1.mse))
                .map_or((t.mapv(|_| 0.0), Score::default()), |(e, s)| (e.clone(), s));
            (t.clone(), e, sc)
        })
        .collect()
}

/// Runs the attack on `setup.sessions` sessions of a fresh run (keys: `clients + 1`; the
/// first is the server's, unused under v2).
///
/// # Errors
/// [`AttackError::Invalid`] for zero sizes; protocol, role and data errors.
pub fn run_experiment(setup: &SessionSumSetup, keys: &[PrivateKey]) -> Result<SessionSumReport> {
    let t0 = Instant::now();
    if setup.batch == 0 || setup.iterations == 0 || setup.sessions == 0 || setup.run.hidden == 0 {
        return Err(AttackError::Invalid(
            "batch, iterations, sessions and hidden must be positive".into(),
        ));
    }
    let run = &setup.run;
    let data = &run.data;
    let spec = run.spec();
    let scales = Scales::default();
    let (eta, _) = run.eta(&scales)?;
    let shares = run.shares()?;
    let cfg = run.config(&spec, setup.batch, setup.iterations);
    let mut sim = build_simulation(&cfg, keys, &shares)?;
    let mean = data
        .x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(data.features()));
    let mut sessions = Vec::new();
    let mut per_update = Vec::new();
    for _ in 0..setup.sessions {
        let obs = run_observed_session(&mut sim)?;
        // Single updates: one iteration's inputs each.
        for (t, d) in obs.decrypted.iter().enumerate() {
            let (Some(layer), Some(inputs)) = (d.first(), obs.inputs.get(t)) else {
                continue;
            };
            let rows = UpdateRows::from_big(&layer.w, &layer.b, &scales, eta);
            let truths = decode_inputs(inputs, &scales);
            let est = clip(
                ratio_estimate(&rows).unwrap_or_else(|| mean.clone()),
                data.bounds,
            );
            per_update.extend(truths.iter().map(|x| score(est.view(), x.view())));
        }
        // The session's stored difference.
        let (rows, truths) = stored_difference(&obs, &scales, eta)?;
        let (estimator, est) = reconstruct(&rows, truths.len(), data.bounds, &mean);
        let matched = assign(&est, &truths);
        let scores: Vec<Score> = matched.iter().map(|m| m.2).collect();
        let baseline: Vec<Score> = truths
            .iter()
            .map(|x| score(mean.view(), x.view()))
            .collect();
        sessions.push(SessionResult {
            session: obs.session,
            client: obs.client,
            inputs: truths.len(),
            estimator: estimator.into(),
            score: mean_score(&scores),
            baseline: mean_score(&baseline),
            span_dim: span_basis(&rows).nrows(),
            pairs: matched.into_iter().map(|(t, e, _)| (t, e)).collect(),
        });
    }
    // Means over inputs (every session has d·B of them).
    let all =
        |f: fn(&SessionResult) -> Score| mean_score(&sessions.iter().map(f).collect::<Vec<_>>());
    let total = all(|s| s.score);
    let baseline = all(|s| s.baseline);
    let single = mean_score(&per_update);
    Ok(SessionSumReport {
        run: run.summary(keys),
        batch: setup.batch,
        iterations: setup.iterations,
        bounds: data.bounds,
        observed: match run.protocol {
            Protocol::Paper => "w^I − w^F (Alg. 5)".into(),
            Protocol::V2 => "W~_v − W~_{v+1} (stored masked states)".into(),
        },
        mse: total.mse,
        corr: total.corr,
        baseline_mse: baseline.mse,
        success: total.mse < SUCCESS_FRACTION * baseline.mse,
        success_fraction: SUCCESS_FRACTION,
        per_update_mse: single.mse,
        per_update_corr: single.corr,
        updates: per_update.len(),
        seconds: t0.elapsed().as_secs_f64(),
        sessions,
    })
}

/// Renders the report as a short markdown table.
pub fn render(r: &SessionSumReport) -> String {
    let mut s = format!(
        "session-sum attack (protocol {}): {} {:?}, {} samples, {} clients, {}-bit keys, \
         B = {}, d = {}; the server subtracts {}\n\n",
        r.run.protocol,
        r.run.dataset,
        r.run.widths,
        r.run.samples,
        r.run.clients,
        r.run.key_bits,
        r.batch,
        r.iterations,
        r.observed
    );
    s.push_str(&format!(
        "| attacker | MSE | corr | mean-guess MSE | success |\n| --- | --- | --- | --- | --- |\n\
         | per-session stored difference | {:.2e} | {:.3} | {:.4} | {} |\n\
         | every single update D ({}) | {:.2e} | {:.3} | {:.4} | {} |\n\n",
        r.mse,
        r.corr,
        r.baseline_mse,
        r.success,
        r.updates,
        r.per_update_mse,
        r.per_update_corr,
        r.baseline_mse,
        r.per_update_mse < SUCCESS_FRACTION * r.baseline_mse
    ));
    s.push_str("| session | client | inputs | estimator | span dim | MSE | corr |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for x in &r.sessions {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2e} | {:.3} |\n",
            x.session, x.client, x.inputs, x.estimator, x.span_dim, x.score.mse, x.score.corr
        ));
    }
    s
}

/// Writes `session_sum_grid.png` into `dir` for square images of side `side`: the
/// attacked sessions' inputs and the server's reconstructions (at most 8 images a row).
/// Returns the path.
///
/// # Errors
/// [`AttackError::Plot`].
pub fn write_grid(
    r: &SessionSumReport,
    side: usize,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    use gelunet_plot::{image_grid, ImageRow};
    let pairs: Vec<_> = r
        .sessions
        .iter()
        .flat_map(|s| s.pairs.iter())
        .take(8)
        .collect();
    let rows = [
        ImageRow {
            label: "original inputs".into(),
            images: pairs.iter().map(|p| p.0.clone()).collect(),
        },
        ImageRow {
            label: format!("from {}", r.observed),
            images: pairs.iter().map(|p| p.1.clone()).collect(),
        },
    ];
    let path = dir.join("session_sum_grid.png");
    image_grid(
        &path,
        &rows,
        side,
        &format!(
            "Session-sum attack, protocol {}: MSE {:.2e} vs mean guess {:.3} ({}, d·B = {}, {}-bit keys)",
            r.run.protocol,
            r.mse,
            r.baseline_mse,
            r.run.dataset,
            r.batch * r.iterations as usize,
            r.run.key_bits
        ),
    )?;
    Ok(path)
}
