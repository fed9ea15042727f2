//! The clients' side (`docs/DESIGN.md` "Protocol v2", what each party still learns): a
//! client extracts the output layer `W_L` from the backward products it decrypts.
//!
//! In iteration `t` the client sends `[δ_L]` (its softmax errors `y − t`, `B × m_L`) and
//! decrypts, after removing its masks, `q = δ_L·W_L^t` (`B × n_L`), where within a session
//! `W_L^t = W_L^0 − η·G^t` with `G^t = Σ_{τ<t} ΔW_L^τ` its own gradients and `η` public
//! under v2 (the handshake's `V2Params::eta`). So every sample `s` gives, for every column
//! `k` of `W_L^0`,
//!
//! ```text
//! δ_s · W_L^0[:, k] = q_s[k] + η·δ_s·G^t[:, k]
//! ```
//!
//! `m_L` unknowns per column, one equation per sample. Softmax errors sum to zero
//! (`Σ_j δ_sj = 0` up to the `2^−fd` rounding of `y`), so the rows `δ_s` lie in `1^⊥`:
//! `S ≥ m_L − 1` samples in general position determine `W_L^0` up to the shift
//! `W_L + 1·cᵀ` that softmax ignores, i.e. its row-centered form
//! `W_c = W_L − 1·mean_rows(W_L)`; `S < m_L − 1` leave `m_L − 1 − S` directions free.
//! The forward bound `d·B ≤ min fan-in` does not stop it (`m_L − 1` is usually far below).
//!
//! [`extract_output_layer`] solves every column by least squares ([`lstsq`]), centers the
//! result, and [`run_experiment`] scores it against the true `W_L` at the session start
//! ([`gelunet_sim::Simulation::model`]) for a range of session sizes.
//!
//! **Across its own sessions** a client then learns the others' updates: if it extracts
//! `W_c` at the start of its session `s_1` and of its next session `s_2`, and knows its own
//! update `η·ΣΔW_L` of `s_1`, then `W_c(s_2) − (W_c(s_1) − η·(ΣΔW_L)_c)` is the centered sum
//! of every other client's output-layer update in between, exactly as in FedAvg. With two
//! clients in round-robin that is the other client's session sum `η·Σ δ_L a_{L−1}ᵀ`
//! (centered), whose rows span that client's last hidden activations of the session.
//! [`run_experiment`] measures it ([`CrossSession`]).

use std::time::Instant;

use gelunet_paillier::PrivateKey;
use gelunet_protocol::Scales;
use ndarray::{Array1, Array2, Axis};
use serde::Serialize;

use crate::drive::{run_observed_session, AttackRun, ObservedSession, SessionSweep, SweepSummary};
use crate::extraction::relative_error;
use crate::linalg::lstsq;
use crate::{AttackError, Result};

/// Relative rank threshold of the least-squares solve.
pub const RCOND: f64 = 1e-12;

/// `W − 1·mean_rows(W)`: the row-centered form softmax cannot tell from `W`.
pub fn center_rows(w: &Array2<f64>) -> Array2<f64> {
    match w.mean_axis(Axis(0)) {
        Some(mean) => w - &mean,
        None => w.clone(),
    }
}

/// The output layer a client extracted from one session.
#[derive(Clone, Debug)]
pub struct ExtractedOutput {
    /// The row-centered `Ŵ_c` at the session start (`m_L × n_L`, real units).
    pub w_centered: Array2<f64>,
    /// The numerical rank of the system (at most `m_L`; `m_L − 1` for exact zero sums).
    pub rank: usize,
    /// Equations per column (samples in the session).
    pub samples: usize,
}

/// Solves for the output layer at the start of the session from the client's view: the
/// backward products of layer `L` ([`gelunet_client::Client::backward_transcript`]) of
/// session `obs.session` of client `obs.client`, and its own gradients; `eta` is the
/// learning rate in real units (public under v2).
///
/// # Errors
/// [`AttackError::Invalid`] if the transcript holds no backward product of the output
/// layer for the session or the shapes disagree.
pub fn extract_output_layer(
    sim: &gelunet_sim::Simulation,
    obs: &ObservedSession,
    scales: &Scales,
    eta: f64,
) -> Result<ExtractedOutput> {
    let client = sim
        .clients()
        .get(obs.client)
        .ok_or_else(|| AttackError::Invalid(format!("no client {}", obs.client)))?;
    let spec = &sim.server().config().spec;
    let l = spec.widths.len() - 1;
    if l < 2 {
        return Err(AttackError::Invalid(
            "one layer: there is no backward product".into(),
        ));
    }
    let (m, n) = spec.layer_shape(l);
    let fd = 2f64.powi(scales.fd as i32);
    let fq = 2f64.powi((scales.fd + scales.fw) as i32);
    let fg = 2f64.powi(scales.fw as i32 - scales.fe as i32);
    let mut a_rows: Vec<Array1<f64>> = Vec::new();
    let mut rhs: Vec<Array1<f64>> = Vec::new();
    for e in client
        .backward_transcript()
        .iter()
        .filter(|e| e.session == obs.session && e.layer as usize == l)
    {
        if e.errors.ncols() != m || e.products.ncols() != n {
            return Err(AttackError::Invalid("backward transcript shape".into()));
        }
        // G^t: the client's own output-layer gradients of the iterations before t.
        let mut g = Array2::<f64>::zeros((m, n));
        for grads in obs.client_gradients.iter().take(e.iteration as usize) {
            let gl = grads
                .layers
                .get(l - 1)
                .ok_or_else(|| AttackError::Invalid("gradient layers".into()))?;
            g += &gl.w.mapv(|v| v as f64 / fg);
        }
        for (d, q) in e.errors.rows().into_iter().zip(e.products.rows()) {
            let d = d.mapv(|v| v as f64 / fd);
            let y = q.mapv(|v| v as f64 / fq) + d.dot(&g) * eta;
            a_rows.push(d);
            rhs.push(y);
        }
    }
    let s = a_rows.len();
    if s == 0 {
        return Err(AttackError::Invalid(format!(
            "session {}: no backward product of layer {l} recorded",
            obs.session
        )));
    }
    let mut a = Array2::<f64>::zeros((s, m));
    for (i, r) in a_rows.iter().enumerate() {
        a.row_mut(i).assign(r);
    }
    let mut w = Array2::<f64>::zeros((m, n));
    let mut rank = usize::MAX;
    for k in 0..n {
        let y = Array1::from_iter(rhs.iter().map(|r| r[k]));
        let sol = lstsq(a.view(), y.view(), RCOND);
        rank = rank.min(sol.rank);
        w.column_mut(k).assign(&sol.x);
    }
    Ok(ExtractedOutput {
        w_centered: center_rows(&w),
        rank,
        samples: s,
    })
}

/// Settings of the output-layer experiment.
#[derive(Clone, Debug)]
pub struct OutputLayerSetup {
    /// The run attacked (the clients' view is the same under both protocols; default
    /// v2; `W_L` is `classes × hidden`).
    pub run: AttackRun,
    /// The session sizes attacked (at least `clients + 1` trials for a cross-session
    /// pair).
    pub sweep: SessionSweep,
}

/// The cross-session measurement at one size: a client's estimate of the others' summed
/// output-layer updates between two of its sessions.
#[derive(Clone, Debug, Serialize)]
pub struct CrossSession {
    /// Pairs of consecutive sessions of one client measured.
    pub pairs: usize,
    /// Median `‖ΔŴ_c − ΔW_c‖ / ‖ΔW_c‖` of the others' centered summed update.
    pub median_rel_error: f64,
    /// Largest relative error.
    pub max_rel_error: f64,
}

/// One size's results.
#[derive(Clone, Debug, Serialize)]
pub struct OutputLayerPoint {
    /// Samples per session `S = d·B`.
    pub samples: usize,
    /// Iterations per session.
    pub iterations: u32,
    /// Whether `S` exceeds the forward bound (smallest fan-in).
    pub exceeds_bound: bool,
    /// Smallest rank of the sessions' systems.
    pub rank: usize,
    /// Median `‖Ŵ_c − W_c‖ / ‖W_c‖` over the attacked sessions.
    pub median_rel_error: f64,
    /// Largest one.
    pub max_rel_error: f64,
    /// Every attacked session's relative error.
    pub rel_errors: Vec<f64>,
    /// The others' updates between a client's sessions (`None` without a pair).
    pub cross_session: Option<CrossSession>,
}

/// The experiment's results.
#[derive(Clone, Debug, Serialize)]
pub struct OutputLayerReport {
    /// The runs: protocol, dataset, widths, key bits, mini-batch size.
    #[serde(flatten)]
    pub run: SweepSummary,
    /// Clients.
    pub clients: usize,
    /// `m_L − 1`: the samples that determine the centered `W_L`.
    pub needed: usize,
    /// The forward bound on `d·B` (smallest fan-in).
    pub bound: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One point per size.
    pub points: Vec<OutputLayerPoint>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn layer_real(
    obs_model: &gelunet_protocol::FixedModel,
    l: usize,
    scales: &Scales,
) -> Result<Array2<f64>> {
    let fw = 2f64.powi(scales.fw as i32);
    obs_model
        .layers
        .get(l - 1)
        .map(|p| p.w.mapv(|v| v as f64 / fw))
        .ok_or_else(|| AttackError::Invalid("model layers".into()))
}

/// What a client keeps of its last session for the cross-session measurement: its
/// estimate of the centered `W_L` at the start, its own centered update `η·ΣΔW_L`, and
/// (for scoring only) the true `W_L` after the session.
type OwnSession = (Array2<f64>, Array2<f64>, Array2<f64>);

/// Runs the experiment for every size (keys: `clients + 1`; the first is the server's,
/// unused under v2).
///
/// # Errors
/// [`AttackError::Invalid`] for a size that is not a positive multiple of `B` or a model
/// of one layer; protocol, role and data errors.
pub fn run_experiment(setup: &OutputLayerSetup, keys: &[PrivateKey]) -> Result<OutputLayerReport> {
    let t0 = Instant::now();
    let run = &setup.run;
    let spec = run.spec();
    let l = spec.widths.len() - 1;
    let scales = Scales::default();
    let (_, eta) = run.eta(&scales)?;
    let mut points = Vec::new();
    let batch = setup.sweep.run_sizes(run, &spec, keys, |d, cfg, mut sim| {
        let mut rel_errors = Vec::new();
        let mut rank = usize::MAX;
        let mut last: Vec<Option<OwnSession>> = vec![None; run.clients];
        let mut cross = Vec::new();
        for _ in 0..setup.sweep.trials {
            let obs = run_observed_session(&mut sim)?;
            let ex = extract_output_layer(&sim, &obs, &scales, eta)?;
            rank = rank.min(ex.rank);
            let truth = center_rows(&layer_real(&obs.model_before, l, &scales)?);
            rel_errors.push(relative_error(ex.w_centered.iter(), truth.iter()));
            // The others' updates since this client's previous session.
            if let Some(Some((prev_est, own, prev_after))) = last.get(obs.client) {
                let est = &ex.w_centered - &(prev_est - own);
                let truth_sum =
                    center_rows(&(layer_real(&obs.model_before, l, &scales)? - prev_after));
                cross.push(relative_error(est.iter(), truth_sum.iter()));
            }
            // The client's own update of the session, η·ΣΔW_L (centered), which it knows.
            let fg = 2f64.powi(scales.fw as i32 - scales.fe as i32);
            let mut own = Array2::<f64>::zeros(ex.w_centered.dim());
            for g in &obs.client_gradients {
                if let Some(gl) = g.layers.get(l - 1) {
                    own += &gl.w.mapv(|v| v as f64 * eta / fg);
                }
            }
            if let Some(slot) = last.get_mut(obs.client) {
                *slot = Some((
                    ex.w_centered,
                    center_rows(&own),
                    layer_real(&obs.model_after, l, &scales)?,
                ));
            }
        }
        points.push(OutputLayerPoint {
            samples: cfg.samples_per_session(),
            iterations: d,
            exceeds_bound: cfg.breaks_bound(),
            rank: if rank == usize::MAX { 0 } else { rank },
            median_rel_error: median(&rel_errors),
            max_rel_error: rel_errors.iter().copied().fold(0.0, f64::max),
            rel_errors,
            cross_session: (!cross.is_empty()).then(|| CrossSession {
                pairs: cross.len(),
                median_rel_error: median(&cross),
                max_rel_error: cross.iter().copied().fold(0.0, f64::max),
            }),
        });
        Ok(())
    })?;
    Ok(OutputLayerReport {
        run: SweepSummary::new(run, keys, batch),
        clients: run.clients,
        needed: run.data.classes.saturating_sub(1),
        bound: spec.min_fan_in(),
        seconds: t0.elapsed().as_secs_f64(),
        points,
    })
}

/// Renders the report as a markdown table.
pub fn render(r: &OutputLayerReport) -> String {
    let mut s = format!(
        "output-layer extraction from q = δ_L·W_L (protocol {}): {} {:?}, B = {}, {} clients, \
         {}-bit keys; m_L − 1 = {} samples should determine the row-centered W_L; forward bound d·B ≤ {}\n\n",
        r.run.protocol, r.run.dataset, r.run.widths, r.run.batch, r.clients, r.run.key_bits, r.needed, r.bound
    );
    s.push_str(
        "| samples d·B | d | beyond bound | rank | rel. error of centered W_L (median) | max | others' update between own sessions: rel. error (median, pairs) |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for p in &r.points {
        let cross = p.cross_session.as_ref().map_or("–".to_string(), |c| {
            format!("{:.2e} ({})", c.median_rel_error, c.pairs)
        });
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2e} | {:.2e} | {} |\n",
            p.samples,
            p.iterations,
            if p.exceeds_bound { "yes" } else { "no" },
            p.rank,
            p.median_rel_error,
            p.max_rel_error,
            cross
        ));
    }
    s
}
