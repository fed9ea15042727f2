//! Attack 2 (paper §4.1, Prop. 2): a client extracts the server's first layer by solving
//! the linear equations its decrypted pre-activations give.
//!
//! In iteration `t` of a session the client sends `a` (its own input) and decrypts
//! `z_j = w_j·a + b_j` for the weights *of that iteration*. Within a session the weights
//! move by the client's own updates, `w^t = w^0 − η·Σ_{τ<t} Δw^τ` (and likewise `b`), with
//! gradients the client computed itself. So every sample gives, for every row `j`,
//!
//! ```text
//! a·w_j + b_j − η·(G^t_j·a + g^t_j) = z_j,     G^t = Σ_{τ<t} Δw_1^τ,  g^t = Σ_{τ<t} Δb_1^τ
//! ```
//!
//! linear in the `n_0 + 2` unknowns `(w_j, b_j, η)` of the row's values at the session
//! start. With `d·B ≥ n_0 + 2` samples (independent in general) the row is determined;
//! docs/DESIGN.md's bound `d·B ≤ min fan-in` keeps it underdetermined. [`extract_layer1`] solves
//! every row by column-scaled least squares ([`lstsq`]; the minimum-norm solution when
//! underdetermined) and [`run_experiment`] scores it against the true weights
//! ([`Server::model`](gelunet_server::Server::model) when the session started) for a range
//! of session sizes, with the server's bound disabled to go past it.

use std::time::Instant;

use gelunet_protocol::{MaskMode, Scales};
use ndarray::{Array1, Array2, Axis, Slice};
use serde::Serialize;

use crate::drive::{run_observed_session, AttackRun, ObservedSession, SessionSweep, SweepSummary};
use crate::linalg::lstsq;
use crate::{AttackError, Result};

/// Relative rank threshold of the least-squares solve.
pub const RCOND: f64 = 1e-10;

/// The extracted layer 1 of one session.
#[derive(Clone, Debug)]
pub struct Extracted {
    /// `Ŵ_1` (`m × n_0`, real units).
    pub w: Array2<f64>,
    /// `b̂_1` (`m`).
    pub b: Array1<f64>,
    /// `η̂` of each row (`None` when `η` was given).
    pub eta: Option<Array1<f64>>,
    /// Smallest numerical rank over the rows' systems.
    pub rank: usize,
    /// Unknowns per row.
    pub unknowns: usize,
    /// Equations per row (samples in the session).
    pub equations: usize,
}

/// Solves every row of layer 1 from the client's view of one session. With
/// `known_eta = Some(η)` the learning rate is taken as known (one unknown less).
pub fn extract_layer1(
    obs: &ObservedSession,
    scales: &Scales,
    known_eta: Option<f64>,
) -> Result<Extracted> {
    let fa = 2f64.powi(scales.fa as i32);
    let fz = 2f64.powi((scales.fa + scales.fw) as i32);
    let fgw = 2f64.powi(scales.fw as i32 - scales.fe as i32);
    let fgb = 2f64.powi((scales.fa + scales.fw) as i32 - scales.fe as i32);
    let first = obs
        .inputs
        .first()
        .ok_or_else(|| AttackError::Invalid("empty session".into()))?;
    let n0 = first.ncols();
    let m = obs
        .pre_activations
        .first()
        .map(|z| z.ncols())
        .unwrap_or_default();
    let g_shape = obs
        .client_gradients
        .first()
        .and_then(|g| g.layers.first())
        .map(|l| l.w.dim());
    if g_shape != Some((m, n0)) {
        return Err(AttackError::Invalid("gradient shape".into()));
    }
    // Rows of the systems (shared by all j except the η column and the right-hand side).
    let mut a_rows: Vec<Array1<f64>> = Vec::new();
    let mut eta_cols: Vec<Array1<f64>> = Vec::new(); // per sample: −(G_j·a + g_j) for all j
    let mut rhs: Vec<Array1<f64>> = Vec::new();
    let mut gw = Array2::<f64>::zeros((m, n0));
    let mut gb = Array1::<f64>::zeros(m);
    for (t, (a_int, z_int)) in obs.inputs.iter().zip(&obs.pre_activations).enumerate() {
        for (a_row, z_row) in a_int.rows().into_iter().zip(z_int.rows()) {
            let a = a_row.mapv(|v| v as f64 / fa);
            eta_cols.push(-(gw.dot(&a) + &gb));
            rhs.push(z_row.mapv(|v| v as f64 / fz));
            a_rows.push(a);
        }
        if let Some(g) = obs.client_gradients.get(t).and_then(|g| g.layers.first()) {
            gw += &g.w.mapv(|v| v as f64 / fgw);
            gb += &g.b.mapv(|v| v as f64 / fgb);
        }
    }
    let s = a_rows.len();
    let unknowns = n0 + 1 + usize::from(known_eta.is_none());
    let mut w = Array2::zeros((m, n0));
    let mut b = Array1::zeros(m);
    let mut eta = Array1::zeros(m);
    let mut rank = usize::MAX;
    for j in 0..m {
        let mut a = Array2::<f64>::zeros((s, unknowns));
        let mut y = Array1::<f64>::zeros(s);
        for i in 0..s {
            for (k, &v) in a_rows[i].iter().enumerate() {
                a[[i, k]] = v;
            }
            a[[i, n0]] = 1.0;
            match known_eta {
                None => {
                    a[[i, n0 + 1]] = eta_cols[i][j];
                    y[i] = rhs[i][j];
                }
                Some(e) => y[i] = rhs[i][j] - e * eta_cols[i][j],
            }
        }
        let sol = lstsq(a.view(), y.view(), RCOND);
        rank = rank.min(sol.rank);
        w.row_mut(j)
            .assign(&sol.x.slice_axis(Axis(0), Slice::from(..n0)));
        b[j] = sol.x[n0];
        if known_eta.is_none() {
            eta[j] = sol.x[n0 + 1];
        }
    }
    Ok(Extracted {
        w,
        b,
        eta: known_eta.is_none().then_some(eta),
        rank,
        unknowns,
        equations: s,
    })
}

/// `‖x̂ − x‖ / ‖x‖` (or `‖x̂‖` if `x = 0`) over all entries.
pub fn relative_error<'a>(
    est: impl IntoIterator<Item = &'a f64>,
    truth: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (e, t) in est.into_iter().zip(truth) {
        num += (e - t) * (e - t);
        den += t * t;
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

/// Scores of one session's extraction.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SessionScore {
    /// `‖Ŵ_1 − W_1‖_F / ‖W_1‖_F`, `η` unknown.
    pub rel_error_w: f64,
    /// `‖[Ŵ b̂] − [W b]‖ / ‖[W b]‖`, `η` unknown.
    pub rel_error_wb: f64,
    /// Median `η̂` over the rows.
    pub eta_hat: f64,
    /// `‖Ŵ_1 − W_1‖_F / ‖W_1‖_F` with `η` known.
    pub rel_error_w_known_eta: f64,
    /// Smallest rank of a row's system, `η` unknown.
    pub rank: usize,
}

/// Extracts layer 1 from `obs` (η unknown and known) and scores it.
///
/// # Errors
/// [`AttackError::Invalid`] for an inconsistent observation.
pub fn score_session(obs: &ObservedSession, scales: &Scales, eta: f64) -> Result<SessionScore> {
    let layer = obs
        .model_before
        .layers
        .first()
        .ok_or_else(|| AttackError::Invalid("empty model".into()))?;
    let fw = 2f64.powi(scales.fw as i32);
    let fz = 2f64.powi((scales.fa + scales.fw) as i32);
    let w_true = layer.w.mapv(|v| v as f64 / fw);
    let b_true = layer.b.mapv(|v| v as f64 / fz);
    let ex = extract_layer1(obs, scales, None)?;
    let known = extract_layer1(obs, scales, Some(eta))?;
    let wb_est: Vec<f64> = ex.w.iter().chain(ex.b.iter()).copied().collect();
    let wb_true: Vec<f64> = w_true.iter().chain(b_true.iter()).copied().collect();
    let mut etas: Vec<f64> = ex.eta.map(|e| e.to_vec()).unwrap_or_default();
    etas.sort_by(f64::total_cmp);
    Ok(SessionScore {
        rel_error_w: relative_error(ex.w.iter(), w_true.iter()),
        rel_error_wb: relative_error(wb_est.iter(), wb_true.iter()),
        eta_hat: etas.get(etas.len() / 2).copied().unwrap_or(f64::NAN),
        rel_error_w_known_eta: relative_error(known.w.iter(), w_true.iter()),
        rank: ex.rank,
    })
}

/// Settings of the extraction experiment.
#[derive(Clone, Debug)]
pub struct ExtractionSetup {
    /// The run attacked (the client's view is the same under both protocols; the
    /// historic figures: [`Protocol::Paper`](gelunet_protocol::v2::Protocol::Paper)).
    pub run: AttackRun,
    /// The session sizes attacked.
    pub sweep: SessionSweep,
}

/// One point of the curve.
#[derive(Clone, Debug, Serialize)]
pub struct ExtractionPoint {
    /// Samples per session `S = d·B`.
    pub samples: usize,
    /// Iterations per session `d`.
    pub iterations: u32,
    /// Whether `S` exceeds the bound the server enforces (smallest fan-in).
    pub exceeds_bound: bool,
    /// Unknowns per row (`n_0 + 2`).
    pub unknowns: usize,
    /// Median over the attacked sessions.
    pub median: SessionScore,
    /// Largest `rel_error_w` over the attacked sessions.
    pub max_rel_error_w: f64,
    /// Every attacked session.
    pub sessions: Vec<SessionScore>,
}

/// The extraction experiment's results.
#[derive(Clone, Debug, Serialize)]
pub struct ExtractionReport {
    /// The runs: protocol, dataset, widths, key bits, mini-batch size.
    #[serde(flatten)]
    pub run: SweepSummary,
    /// The true learning rate (as encoded).
    pub eta: f64,
    /// The bound on `d·B` the server enforces when secure (smallest fan-in).
    pub bound: usize,
    /// Mask of the runs.
    pub mask: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One point per session size.
    pub points: Vec<ExtractionPoint>,
}

fn median_by(scores: &[SessionScore], key: impl Fn(&SessionScore) -> f64) -> SessionScore {
    let mut v: Vec<&SessionScore> = scores.iter().collect();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len() / 2).map_or(
        SessionScore {
            rel_error_w: f64::NAN,
            rel_error_wb: f64::NAN,
            eta_hat: f64::NAN,
            rel_error_w_known_eta: f64::NAN,
            rank: 0,
        },
        |s| **s,
    )
}

/// Runs the experiment for every session size in `setup.sizes` (keys: `clients + 1`).
///
/// # Errors
/// [`AttackError::Invalid`] for a size that is not a positive multiple of `B`; protocol,
/// role and data errors.
pub fn run_experiment(
    setup: &ExtractionSetup,
    keys: &[gelunet_paillier::PrivateKey],
) -> Result<ExtractionReport> {
    let t0 = Instant::now();
    let run = &setup.run;
    let spec = run.spec();
    let scales = Scales::default();
    let (_, eta) = run.eta(&scales)?;
    let mut points = Vec::new();
    let batch = setup.sweep.run_sizes(run, &spec, keys, |d, cfg, mut sim| {
        let mut sessions = Vec::new();
        for _ in 0..setup.sweep.trials {
            let obs = run_observed_session(&mut sim)?;
            sessions.push(score_session(&obs, &scales, eta)?);
        }
        let median = SessionScore {
            rel_error_w_known_eta: median_by(&sessions, |s| s.rel_error_w_known_eta)
                .rel_error_w_known_eta,
            ..median_by(&sessions, |s| s.rel_error_w)
        };
        points.push(ExtractionPoint {
            samples: cfg.samples_per_session(),
            iterations: d,
            exceeds_bound: cfg.breaks_bound(),
            unknowns: spec.inputs() + 2,
            max_rel_error_w: sessions.iter().map(|s| s.rel_error_w).fold(0.0, f64::max),
            median,
            sessions,
        });
        Ok(())
    })?;
    Ok(ExtractionReport {
        run: SweepSummary::new(run, keys, batch),
        eta,
        bound: spec.min_fan_in(),
        mask: format!("{:?}", MaskMode::default()),
        seconds: t0.elapsed().as_secs_f64(),
        points,
    })
}

/// Renders the report as a markdown table.
pub fn render(r: &ExtractionReport) -> String {
    let mut s = format!(
        "model extraction (layer 1, protocol {}): {} {:?}, B = {}, {}-bit keys, η = {}, bound d·B ≤ {} \
         (server bound disabled), unknowns per row n_0 + 2 = {}\n\n",
        r.run.protocol,
        r.run.dataset,
        r.run.widths,
        r.run.batch,
        r.run.key_bits,
        r.eta,
        r.bound,
        r.run.widths.first().copied().unwrap_or(0) + 2
    );
    s.push_str(
        "| samples d·B | d | beyond bound | rank | rel. error W (η unknown, median) | max | rel. error [W b] | η̂ | rel. error W (η known) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for p in &r.points {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2e} | {:.2e} | {:.2e} | {:.4} | {:.2e} |\n",
            p.samples,
            p.iterations,
            if p.exceeds_bound { "yes" } else { "no" },
            p.median.rank,
            p.median.rel_error_w,
            p.max_rel_error_w,
            p.median.rel_error_wb,
            p.median.eta_hat,
            p.median.rel_error_w_known_eta
        ));
    }
    s
}
