//! Part 2, accuracy (GELU-Net paper, Table 3).
//!
//! Per dataset and seed, from the same split, initial weights and mini-batches:
//!
//! - **GELU-Net**: trained by the protocol. Its accuracy is the one of the exact
//!   fixed-point reference (equal bit for bit to the encrypted run); the encrypted run
//!   itself ([`crate::runs::encrypted_run`], real Paillier keys) is run for seed 0, for
//!   as many sessions as asked, and checked against the reference after every session.
//! - **CryptoNets**: the square-activation network trained in plaintext (`f64`), then
//!   deployed as CryptoNets deploys it: quantized to a fixed-point [`SquareNet`]
//!   (largest scale `fx = fw` whose worst-case output fits a BFV plaintext modulus of at
//!   most [`MAX_DEPLOY_T_BITS`] bits) and evaluated exactly on integers; for seed 0 the
//!   whole test set also goes through BFV ([`SquareNetBfv`]) and the decrypted predictions
//!   are compared with the plaintext ones.
//! - **BGN-Net**: the Taylor-5 sigmoid network trained in plaintext, evaluated in plaintext
//!   (BGN evaluates the same polynomial on encrypted data).

use std::path::Path;
use std::time::Instant;

use gelunet_baselines::{
    BfvConfig, BfvContext, BfvDescription, FloatNet, PolyActivation, SquareNet, SquareNetBfv,
    TrainActivation,
};
use gelunet_plot::{bar_figure, BarGroup};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::pipeline::{mean_std, prepare, MnistLimits, Prepared, TrainSetup};
use crate::runs::{encrypted_run, fixed_accuracy, train_side_by_side, EncryptedCheck};

/// Largest BFV plaintext modulus the deployment of a square network may need (bits).
pub const MAX_DEPLOY_T_BITS: u32 = 50;

/// The paper's Table 3 (GELU-Net, CryptoNets, BGN-Net).
#[must_use]
pub fn paper_numbers(dataset: &str) -> Option<(f64, f64, f64)> {
    match dataset {
        "iris" => Some((0.986, 0.966, 0.96)),
        "pima" | "diabetes" => Some((0.760, 0.741, 0.723)),
        "kr-vs-kp" => Some((0.967, 0.948, 0.944)),
        "mnist" => Some((0.969, 0.919, 0.901)),
        _ => None,
    }
}

/// Mean ± std over seeds, with the values.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// One value per seed (NaN: failed or diverged).
    pub values: Vec<f64>,
}

impl Cell {
    fn of(values: Vec<f64>) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (mean, std) = mean_std(&finite);
        Self { mean, std, values }
    }

    /// `0.973 ± 0.012`.
    #[must_use]
    pub fn show(&self) -> String {
        if self.mean.is_finite() {
            let failed = self.values.iter().filter(|v| !v.is_finite()).count();
            let note = if failed > 0 {
                format!(" ({failed} of {} diverged/failed)", self.values.len())
            } else {
                String::new()
            };
            format!("{:.3} ± {:.3}{note}", self.mean, self.std)
        } else {
            "failed".into()
        }
    }
}

/// The deployed CryptoNets network checked through BFV.
#[derive(Clone, Debug, Serialize)]
pub struct BfvCheck {
    /// Samples encrypted (the whole test set, one per SIMD slot).
    pub samples: usize,
    /// Samples whose BFV prediction equals the plaintext fixed-point prediction.
    pub agree: usize,
    /// Whether the decrypted logits equal the plaintext integer logits exactly.
    pub logits_exact: bool,
    /// Accuracy of the BFV predictions.
    pub accuracy: f64,
    /// Wall time: encrypt + infer + decrypt, seconds.
    pub seconds: f64,
    /// BFV parameters.
    pub parameters: BfvDescription,
}

/// One dataset's row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct AccuracyRow {
    /// Dataset.
    pub dataset: String,
    /// Layer widths.
    pub widths: Vec<usize>,
    /// Learning rate (gradients summed over the mini-batch).
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Clients.
    pub clients: usize,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Training / test samples.
    pub samples: (usize, usize),
    /// GELU-Net (fixed-point reference; see `gelu_source`).
    pub gelu: Cell,
    /// Where GELU-Net's numbers come from.
    pub gelu_source: String,
    /// The encrypted run of seed 0.
    pub encrypted: Option<EncryptedCheck>,
    /// CryptoNets: the deployed fixed-point square network.
    pub cryptonets: Cell,
    /// CryptoNets before quantization (`f64` square network).
    pub cryptonets_f64: Cell,
    /// Fixed-point scale `fx = fw` of the deployed square network, per seed.
    pub cryptonets_scale_bits: Vec<Option<u32>>,
    /// BFV check of seed 0.
    pub bfv: Option<BfvCheck>,
    /// BGN-Net: the Taylor-5 network in plaintext.
    pub bgn: Cell,
    /// The same network with the exact sigmoid in `f64` (GELU-Net's float view).
    pub sigmoid_f64: Cell,
    /// The paper's numbers (GELU-Net, CryptoNets, BGN-Net).
    pub paper: Option<(f64, f64, f64)>,
    /// Seconds.
    pub seconds: f64,
}

/// Part 2's results.
#[derive(Clone, Debug, Serialize)]
pub struct AccuracyReport {
    /// One row per dataset.
    pub rows: Vec<AccuracyRow>,
    /// Plot file, relative to the output directory.
    pub plot: Option<String>,
}

/// Hyper-parameters of one dataset.
#[derive(Clone, Debug)]
pub struct DatasetPlan {
    /// Dataset name.
    pub name: String,
    /// Hidden width.
    pub hidden: usize,
    /// Learning rate.
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Seeds to run.
    pub seeds: usize,
}

/// What part 2 runs encrypted.
#[derive(Clone, Copy, Debug)]
pub struct EncryptedPlan {
    /// Paillier key size.
    pub key_bits: u64,
    /// Whether test-size keys are allowed.
    pub allow_test_keys: bool,
    /// Sessions to run encrypted for seed 0 (`None`: the whole training run).
    pub max_sessions: Option<usize>,
    /// Datasets to run encrypted (by name).
    pub enabled: bool,
}

/// The BFV parameters for `net` on inputs `|x| ≤ bound`: ring degree `degree`, the
/// smallest batching prime `t` (at least 17 bits) with `2·max|z2| < t`.
///
/// # Errors
/// [`BenchError::Check`] if `t` would need more than `max_t_bits` bits.
pub fn bfv_config_for(
    net: &SquareNet,
    bound: i64,
    degree: usize,
    max_t_bits: u32,
) -> Result<BfvConfig> {
    let out = net.output_bound(bound)?;
    let needed = net.required_plaintext_bits(bound)?;
    for bits in needed.max(17)..=max_t_bits {
        let t = BfvConfig::batching_prime(bits, degree)?;
        if out.checked_mul(2).is_some_and(|b| b < u128::from(t)) {
            return Ok(BfvConfig::with_degree(degree, bits)?);
        }
    }
    Err(BenchError::Check(format!(
        "the square network needs a {needed}-bit plaintext modulus (> {max_t_bits})"
    )))
}

/// A trained square network deployed as CryptoNets would: the largest `fx = fw ≤ 10`
/// whose BFV plaintext modulus fits in [`MAX_DEPLOY_T_BITS`] bits. Returns the network,
/// the input bound (at `2^fx`), the scale and the BFV configuration.
///
/// # Errors
/// [`BenchError::Check`] if no scale works (e.g. the network diverged).
pub fn deploy_square(
    net: &FloatNet,
    max_abs_input: f64,
    degree: usize,
) -> Result<(SquareNet, i64, u32, BfvConfig)> {
    let mut last = String::from("no scale tried");
    for f in (2..=10u32).rev() {
        let sq = match net.to_square_net(f, f) {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let b = (max_abs_input * f64::from(f).exp2()).ceil();
        if !(b.is_finite() && b < 1e15) {
            return Err(BenchError::Check("input bound out of range".into()));
        }
        // Checked above: finite and small.
        #[allow(clippy::cast_possible_truncation)]
        let bound = b as i64;
        match bfv_config_for(&sq, bound, degree, MAX_DEPLOY_T_BITS) {
            Ok(cfg) => return Ok((sq, bound, f, cfg)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(BenchError::Check(format!(
        "the square network cannot be deployed under BFV: {last}"
    )))
}

/// Runs `net` over the whole test set under BFV and compares with the plaintext
/// fixed-point predictions.
///
/// # Errors
/// BFV errors; [`BenchError::Check`] for a test set larger than the slots.
pub fn bfv_check(
    net: &SquareNet,
    bound: i64,
    cfg: &BfvConfig,
    prep: &Prepared,
    seed: u64,
) -> Result<BfvCheck> {
    let x = net.quantize_inputs(&prep.test_x)?;
    let mut key_seed = [7u8; 32];
    key_seed[..8].copy_from_slice(&seed.to_le_bytes());
    let mut ctx = BfvContext::new(cfg, key_seed)?;
    let t = Instant::now();
    let model = SquareNetBfv::new(net, &ctx.server_key(), bound)?;
    let batch = ctx.encrypt_batch(&x, bound)?;
    let out = model.infer(&batch)?;
    let logits = ctx.decrypt_logits(&out)?;
    let seconds = t.elapsed().as_secs_f64();
    let plain = net.forward_plain(&x)?;
    let bfv_pred = ctx.predict(&out)?;
    let plain_pred = net.predict_plain(&x)?;
    let agree = bfv_pred
        .iter()
        .zip(&plain_pred)
        .filter(|(a, b)| a == b)
        .count();
    Ok(BfvCheck {
        samples: x.nrows(),
        agree,
        logits_exact: logits == plain,
        accuracy: gelunet_baselines::train::accuracy_of(&bfv_pred, &prep.test_y),
        seconds,
        parameters: ctx.describe(),
    })
}

/// Runs one dataset over `plan.seeds` seeds.
///
/// # Errors
/// Data, protocol, baseline and check errors.
pub fn run_dataset(
    data_dir: &Path,
    plan: &DatasetPlan,
    clients: usize,
    mnist: MnistLimits,
    encrypted: EncryptedPlan,
    bfv_degree: usize,
    log: &dyn Fn(&str),
) -> Result<AccuracyRow> {
    let t = Instant::now();
    let acts = [
        TrainActivation::Poly(PolyActivation::Square),
        TrainActivation::Poly(PolyActivation::Taylor5),
        TrainActivation::Sigmoid,
    ];
    let (mut gelu, mut cn, mut cn_f, mut bgn, mut sig) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut scale_bits = Vec::new();
    let mut bfv = None;
    let mut enc = None;
    let mut samples = (0, 0);
    let mut widths = Vec::new();
    let mut reference_failures = Vec::new();
    for seed in 0..plan.seeds as u64 {
        let prep = prepare(data_dir, &plan.name, seed, clients, mnist)?;
        samples = (prep.train_len(), prep.test_y.len());
        let setup = TrainSetup {
            arch: None,
            widths: vec![prep.features, plan.hidden, prep.classes],
            lr: plan.lr,
            batch: plan.batch,
            epochs: plan.epochs,
            seed,
        };
        widths.clone_from(&setup.widths);
        let r = train_side_by_side(&prep, &setup, &acts, true, false)?;
        let scales = setup.scales();
        let g = match &r.reference {
            Some(m) => fixed_accuracy(m, &scales, prep.test_x.view(), &prep.test_y, prep.classes)?,
            None => {
                reference_failures.push(format!(
                    "seed {seed}: {}",
                    r.reference_error.clone().unwrap_or_default()
                ));
                f64::NAN
            }
        };
        gelu.push(g);
        let (tx, ty) = (prep.test_x.view(), &prep.test_y);
        let [square, taylor5, sigmoid] = &r.floats[..] else {
            return Err(BenchError::Check("three baselines expected".into()));
        };
        // A diverged network (non-finite weights) counts as failed, not as chance level.
        let acc = |f: &gelunet_baselines::FloatTrainer<TrainActivation>| -> Result<f64> {
            Ok(if f.diverged() {
                f64::NAN
            } else {
                f.accuracy(tx, ty)?
            })
        };
        cn_f.push(acc(square)?);
        bgn.push(acc(taylor5)?);
        sig.push(acc(sigmoid)?);
        match deploy_square(square.net(), prep.max_abs_feature(), bfv_degree) {
            Ok((sq, bound, f, cfg)) => {
                let x = sq.quantize_inputs(&prep.test_x)?;
                let p = sq.predict_plain(&x)?;
                cn.push(gelunet_baselines::train::accuracy_of(&p, ty));
                scale_bits.push(Some(f));
                if seed == 0 && !plan.name.eq_ignore_ascii_case("mnist") {
                    log(&format!(
                        "  {}: BFV check of the deployed square network",
                        plan.name
                    ));
                    bfv = Some(bfv_check(&sq, bound, &cfg, &prep, seed)?);
                }
            }
            Err(e) => {
                log(&format!(
                    "  {} seed {seed}: CryptoNets not deployable: {e}",
                    plan.name
                ));
                cn.push(f64::NAN);
                scale_bits.push(None);
            }
        }
        if seed == 0 && encrypted.enabled {
            log(&format!(
                "  {}: encrypted GELU-Net run, {}-bit keys, {} sessions",
                plan.name,
                encrypted.key_bits,
                encrypted
                    .max_sessions
                    .map_or_else(|| "all".to_string(), |m| m.to_string())
            ));
            enc = Some(encrypted_run(
                &prep,
                &setup,
                encrypted.key_bits,
                encrypted.allow_test_keys,
                encrypted.max_sessions,
            )?);
        }
        log(&format!(
            "  {} seed {seed}: GELU-Net {g:.3}, CryptoNets {:.3}, BGN-Net {:.3}",
            plan.name,
            cn.last().copied().unwrap_or(f64::NAN),
            bgn.last().copied().unwrap_or(f64::NAN)
        ));
    }
    let n = plan.seeds;
    let mut gelu_source = match &enc {
        Some(e) if e.sessions == e.sessions_in_training => format!(
            "seed 0 trained encrypted ({}-bit Paillier{}), identical bit for bit to the fixed-point reference after each of its {} sessions; {} other seed(s) from the reference",
            e.key_bits,
            if e.test_keys { ", TEST-SIZE KEYS" } else { "" },
            e.sessions,
            n.saturating_sub(1)
        ),
        Some(e) => format!(
            "fixed-point reference for all {n} seed(s); the encrypted run ({}-bit Paillier{}) was run for the first {} of {} sessions of seed 0 and was identical bit for bit to the reference after each",
            e.key_bits,
            if e.test_keys { ", TEST-SIZE KEYS" } else { "" },
            e.sessions,
            e.sessions_in_training
        ),
        None => format!("fixed-point reference for all {n} seed(s) (no encrypted run)"),
    };
    if !reference_failures.is_empty() {
        gelu_source.push_str(&format!(
            "; reference failed: {}",
            reference_failures.join("; ")
        ));
    }
    Ok(AccuracyRow {
        dataset: plan.name.clone(),
        widths,
        lr: plan.lr,
        batch: plan.batch,
        epochs: plan.epochs,
        clients,
        seeds: (0..plan.seeds as u64).collect(),
        samples,
        gelu: Cell::of(gelu),
        gelu_source,
        encrypted: enc,
        cryptonets: Cell::of(cn),
        cryptonets_f64: Cell::of(cn_f),
        cryptonets_scale_bits: scale_bits,
        bfv,
        bgn: Cell::of(bgn),
        sigmoid_f64: Cell::of(sig),
        paper: paper_numbers(&plan.name),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Draws the accuracy bar chart.
///
/// # Errors
/// Plotting errors.
pub fn plot(rows: &[AccuracyRow], path: &Path, caption: &str) -> Result<()> {
    let legend = vec![
        "GELU-Net".to_string(),
        "CryptoNets (square, deployed)".to_string(),
        "BGN-Net (Taylor-5)".to_string(),
    ];
    let groups: Vec<BarGroup> = rows
        .iter()
        .map(|r| BarGroup {
            label: r.dataset.clone(),
            bars: vec![
                (r.gelu.mean, r.gelu.std),
                (r.cryptonets.mean, r.cryptonets.std),
                (r.bgn.mean, r.bgn.std),
            ],
        })
        .collect();
    bar_figure(
        path,
        "Table 3 — test accuracy (mean ± std over seeds)",
        "accuracy",
        &legend,
        &groups,
        (0.0, 1.0),
        caption,
    )?;
    Ok(())
}
