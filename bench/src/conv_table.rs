//! Part 6, convolutional networks (GELU-Net paper §5.2, Table 4; issue #15): Conv-1 and
//! LeNet-5 on MNIST (`Arch::named`), GELU-Net against CryptoNets.
//!
//! - **GELU-Net**: the fixed-point reference trained on the run's MNIST share for a
//!   fixed number of samples (encrypted training equals it bit for bit: `sim/tests/conv.rs`,
//!   `gelunet bench train --arch`), then served by [`gelunet_server::Server`] to an
//!   in-memory inference client (paper Alg. 1 with the true weights). One sample packs
//!   each conv layer's output positions in plaintext slots (position packing,
//!   [`gelunet_protocol::packing::position_packing`]) and each dense layer's outputs by
//!   rows; a batch uses sample packing. Timed as part 4 does ([`crate::inference`]): on
//!   the spot and online (client obfuscators precomputed), predictions checked against
//!   the model in the clear.
//! - **CryptoNets**: the square-activation network of the same architecture under BFV in
//!   CryptoNets' layout (one sample per SIMD slot, sum pooling, plaintext weights;
//!   `gelunet_baselines::square_conv_bfv`), with parameters that keep its outputs exact
//!   (checked for every sample). Its weights are seeded in `{−1, 0, 1}` and its inputs
//!   binary: the time depends on the architecture and the parameters, not on trained
//!   values; its accuracy is not measured here (no square conv net is trained), the
//!   paper's is quoted. LeNet-5's square network is the paper's list: a square after each
//!   pooled conv layer, the three dense layers linear (CryptoNets' depth budget). `--quick`
//!   leaves CryptoNets out ([`QUICK_SKIP`]).
//!
//! Next to the paper's Table 4 (GELU-Net 67.5 s / 85.5 s, CryptoNets 1271.8 s / 3009.6 s
//! per inference; accuracy 0.936 / 0.989 and 0.909 / 0.967).

use std::path::Path;
use std::time::Instant;

use gelunet_baselines::square_conv_bfv::{measure_square_conv, SquareConvMeasurement};
use gelunet_plot::{bar_figure, BarGroup};
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::{Dataset, FixedModel, ModelSpec, Scales};
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::inference::{gelu_endpoints, gelu_endpoints_at, time_gelu, PartConfig, Timing};
use crate::pipeline::{prepare, Prepared, Schedule, TrainSetup};
use crate::runs::reference_trainer;
use crate::{mnist_limits, CLIENTS};

/// The paper's Table 4 row of one network.
#[derive(Clone, Debug, Serialize)]
pub struct PaperConvRow {
    /// GELU-Net, seconds per inference.
    pub gelu_secs: f64,
    /// GELU-Net accuracy.
    pub gelu_accuracy: f64,
    /// CryptoNets, seconds per inference.
    pub cryptonets_secs: f64,
    /// CryptoNets accuracy.
    pub cryptonets_accuracy: f64,
}

/// One network of part 6.
#[derive(Clone, Debug, Serialize)]
pub struct ConvRow {
    /// `conv1` or `lenet5`.
    pub network: String,
    /// Its layers (`Arch` syntax).
    pub arch: String,
    /// Weights and biases.
    pub parameters: usize,
    /// Samples the reference was trained on (mini-batches of `batch`).
    pub train_samples: usize,
    /// Mini-batch size of the training.
    pub batch: usize,
    /// Learning rate of the training.
    pub lr: f64,
    /// Test samples of the accuracy.
    pub test_samples: usize,
    /// GELU-Net's test accuracy (the reference's, which encrypted training equals).
    pub gelu_accuracy: Option<f64>,
    /// GELU-Net's inference timings.
    pub gelu: Option<Timing>,
    /// Why GELU-Net did not run.
    pub gelu_error: Option<String>,
    /// The same model served with weights rounded to [`SERVED_WEIGHT_BITS`] fractional
    /// bits ([`FixedModel::with_weight_frac_bits`]): its own accuracy and timings.
    pub coarse: Option<CoarseRow>,
    /// Why the coarse-weight run failed.
    pub coarse_error: Option<String>,
    /// CryptoNets' single-sample and full-batch timings.
    pub cryptonets: Option<SquareConvMeasurement>,
    /// Why CryptoNets did not run.
    pub cryptonets_error: Option<String>,
    /// CryptoNets' single-sample latency / GELU-Net's.
    pub latency_ratio: Option<f64>,
    /// CryptoNets' single-sample latency / GELU-Net's online latency.
    pub online_latency_ratio: Option<f64>,
    /// CryptoNets' per-sample time with every slot filled / GELU-Net's per-sample batch
    /// time (below 1: batched FHE wins).
    pub throughput_ratio_full: Option<f64>,
    /// The paper's row.
    pub paper: PaperConvRow,
}

/// Fractional weight bits of the coarse-weight GELU-Net row (the trained models are at
/// `fw = 32`; at 12 bits, 1 and 0 of part 6's 2,000 test predictions changed for Conv-1
/// and LeNet-5 in session 12's run; the report counts them every time).
pub const SERVED_WEIGHT_BITS: u32 = 12;

/// GELU-Net serving the model with coarser weights.
#[derive(Clone, Debug, Serialize)]
pub struct CoarseRow {
    /// Fractional bits of the served weights (biases at `fa` more).
    pub weight_frac_bits: u32,
    /// Test accuracy of the rounded model (same test set as the row's).
    pub accuracy: f64,
    /// Test samples whose prediction differs from the full-precision model's.
    pub changed_predictions: usize,
    /// Its inference timings (predictions checked against the rounded model in the clear).
    pub timing: Timing,
}

/// Part 6's results.
#[derive(Clone, Debug, Serialize)]
pub struct ConvReport {
    /// Paillier key size.
    pub key_bits: u64,
    /// One row per network.
    pub rows: Vec<ConvRow>,
    /// The targets (`None`: not evaluated on test-size keys or not measured).
    pub targets: Vec<(String, Option<bool>)>,
    /// Plot file.
    pub plot: Option<String>,
    /// Rayon threads.
    pub threads: usize,
}

/// One network's plan.
struct Plan {
    name: &'static str,
    /// CryptoNets' square network of the paper's list (§5.2): a square after each
    /// pooled conv layer only, the dense layers linear.
    cryptonets: &'static str,
    samples: usize,
    latency_target: f64,
    paper: PaperConvRow,
}

fn plans(quick: bool) -> Vec<Plan> {
    vec![
        Plan {
            name: "conv1",
            cryptonets: "conv1",
            samples: if quick { 96 } else { 10_000 },
            latency_target: 0.25,
            paper: PaperConvRow {
                gelu_secs: 67.5,
                gelu_accuracy: 0.936,
                cryptonets_secs: 1271.8,
                cryptonets_accuracy: 0.909,
            },
        },
        Plan {
            name: "lenet5",
            cryptonets:
                "conv5x5p2:6,meanpool,relu,conv5x5:16,meanpool,relu,dense:120,dense:84,dense:10",
            samples: if quick { 48 } else { 10_000 },
            latency_target: 0.6,
            paper: PaperConvRow {
                gelu_secs: 85.5,
                gelu_accuracy: 0.989,
                cryptonets_secs: 3009.6,
                cryptonets_accuracy: 0.967,
            },
        },
    ]
}

/// Why `--quick` leaves CryptoNets out.
pub const QUICK_SKIP: &str =
    "skipped in --quick: the BFV networks on 28×28 take 40–120 s here with their keys (run without --quick)";

/// MNIST's `1 × 28 × 28`.
const MNIST: Shape = Shape {
    channels: 1,
    height: 28,
    width: 28,
};

/// Trains the fixed-point reference of `setup` for at least `samples` samples (whole
/// sessions of the seeded schedule); returns the model and the samples trained on.
fn train_reference(
    prep: &Prepared,
    setup: &TrainSetup,
    samples: usize,
) -> Result<(FixedModel, usize)> {
    let mut reference = reference_trainer(prep, setup)?;
    let mut schedule = Schedule::new(setup, &prep.shares)?;
    let mut done = 0;
    while done < samples {
        let plan = schedule.next_session().plan;
        reference.run_session(plan)?;
        done += plan.iterations as usize * setup.batch;
    }
    Ok((reference.model().clone(), done))
}

/// Runs part 6.
///
/// # Errors
/// MNIST loading errors; a network's failures are recorded in its row.
pub fn run(config: &PartConfig, log: &dyn Fn(&str)) -> Result<ConvReport> {
    let quick = config.quick;
    let prep = prepare(&config.data_dir, "mnist", 0, CLIENTS, mnist_limits(quick))?;
    let real_keys = config.key_bits >= gelunet_paillier::MIN_KEY_BITS;
    let (batch, lr, reps) = (16, 0.02, if quick { 1 } else { 5 });
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for plan in plans(quick) {
        let arch = Arch::named(plan.name)
            .ok_or_else(|| BenchError::Config(format!("no network {}", plan.name)))?;
        log(&format!("part 6: {} training", plan.name));
        let setup = TrainSetup {
            arch: Some(arch.clone()),
            widths: vec![prep.features],
            lr,
            batch,
            epochs: 1,
            seed: 0,
        };
        let spec = setup.spec()?;
        let scales = setup.scales();
        let test = Dataset::quantize(prep.test_x.view(), &prep.test_y, prep.classes, &scales)?;
        let trained = train_reference(&prep, &setup, plan.samples);
        let (model, train_samples, accuracy, mut gelu_error) = match trained {
            Ok((m, n)) => {
                let acc = m.accuracy(&scales, test.x.view(), &test.labels)?;
                (Some(m), n, Some(acc), None)
            }
            Err(e) => (None, 0, None, Some(format!("training: {e}"))),
        };
        log(&format!("part 6: {} GELU-Net inference", plan.name));
        let t0 = Instant::now();
        let gelu = match gelu_endpoints(
            config.key_bits,
            config.allow_test_keys,
            spec.clone(),
            model.clone(),
        )
            .and_then(|mut e| {
                let mut t = time_gelu(&e.server, &mut e.client, &e.key, &test, (reps, batch))?;
                t.note = format!(
                    "median of {reps} single-sample runs, conv layers position-packed and dense layers row-packed; online: the {} obfuscators of one inference precomputed; batch of {batch} with sample packing; {} rayon threads",
                    e.client.obfuscators_per_inference(1),
                    rayon::current_num_threads()
                );
                Ok(t)
            }) {
            Ok(t) => Some(t),
            Err(e) => {
                gelu_error = Some(e.to_string());
                None
            }
        };
        let (coarse, coarse_error) = match &model {
            Some(m) => match serve_coarse(config, &spec, (m, &scales), &test, (reps, batch)) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, gelu_error.clone()),
        };
        log(&format!(
            "part 6: {} GELU-Net done in {:.1} s; CryptoNets",
            plan.name,
            t0.elapsed().as_secs_f64()
        ));
        let (cryptonets, cryptonets_error) = if quick {
            (None, Some(QUICK_SKIP.to_string()))
        } else {
            match Arch::named(plan.cryptonets)
                .map_or_else(|| plan.cryptonets.parse::<Arch>(), Ok)
                .map_err(|e| e.to_string())
                .and_then(|a| {
                    measure_square_conv(&a, MNIST, 1, 1, 8192, 1).map_err(|e| e.to_string())
                }) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(e)),
            }
        };
        let ratio = |f: fn(&Timing) -> f64| match (&gelu, &cryptonets) {
            (Some(g), Some(c)) => Some(c.single.latency_secs() / f(g)),
            _ => None,
        };
        let latency_ratio = ratio(|g| g.single_secs);
        let online_latency_ratio = ratio(|g| g.online_single_secs);
        let throughput_ratio_full = match (&gelu, &cryptonets) {
            (Some(g), Some(c)) => Some(c.batch.per_sample_secs() / g.batch_per_sample_secs),
            _ => None,
        };
        if let Some(g) = &gelu {
            targets.push((
                format!(
                    "{}: GELU-Net single-sample latency ≤ {} s at {} bits: {} (online {})",
                    plan.name,
                    plan.latency_target,
                    config.key_bits,
                    crate::report_ms(g.single_secs),
                    crate::report_ms(g.online_single_secs)
                ),
                real_keys.then_some(g.single_secs <= plan.latency_target),
            ));
        }
        if let Some((g, pre)) = gelu
            .as_ref()
            .and_then(|g| g.preprocessed_single_secs.map(|p| (g, p)))
        {
            targets.push((
                format!(
                    "{}: GELU-Net single-sample latency ≤ {} s at {} bits with the layers preprocessed (docs/DESIGN.md \"Preprocessed inference\"): {} (preprocessing {})",
                    plan.name,
                    plan.latency_target,
                    config.key_bits,
                    crate::report_ms(pre),
                    crate::report_ms(g.preprocessing_secs.unwrap_or(f64::NAN))
                ),
                real_keys.then_some(pre <= plan.latency_target),
            ));
            if let Some(c) = &cryptonets {
                let r = c.single.latency_secs() / pre;
                targets.push((
                    format!(
                        "{}: GELU-Net with the layers preprocessed ≥ 20× faster than CryptoNets for one sample: {r:.1}×",
                        plan.name
                    ),
                    real_keys.then_some(r >= 20.0),
                ));
            }
        }
        if let Some(c) = &coarse {
            targets.push((
                format!(
                    "{}: GELU-Net single-sample latency ≤ {} s at {} bits, weights at 2^-{}: {} (online {}), accuracy {:.4}",
                    plan.name,
                    plan.latency_target,
                    config.key_bits,
                    c.weight_frac_bits,
                    crate::report_ms(c.timing.single_secs),
                    crate::report_ms(c.timing.online_single_secs),
                    c.accuracy
                ),
                real_keys.then_some(c.timing.single_secs <= plan.latency_target),
            ));
        }
        if let Some(r) = latency_ratio {
            targets.push((
                format!(
                    "{}: GELU-Net ≥ 20× faster than CryptoNets for one sample: {r:.1}×",
                    plan.name
                ),
                real_keys.then_some(r >= 20.0),
            ));
        }
        rows.push(ConvRow {
            network: plan.name.to_string(),
            arch: arch.to_string(),
            parameters: spec.num_parameters(),
            train_samples,
            batch,
            lr,
            test_samples: test.len(),
            gelu_accuracy: accuracy,
            gelu,
            gelu_error,
            coarse,
            coarse_error,
            cryptonets,
            cryptonets_error,
            latency_ratio,
            online_latency_ratio,
            throughput_ratio_full,
            paper: plan.paper,
        });
    }
    let plot = plot_latency(&rows, &config.out_dir, config.key_bits).ok();
    Ok(ConvReport {
        key_bits: config.key_bits,
        rows,
        targets,
        plot,
        threads: rayon::current_num_threads(),
    })
}

/// Serves `model` rounded to [`SERVED_WEIGHT_BITS`] fractional weight bits and times it
/// as the full-precision row (`runs = (reps, batch)`).
fn serve_coarse(
    config: &PartConfig,
    spec: &ModelSpec,
    (model, fine): (&FixedModel, &Scales),
    test: &Dataset,
    runs: (usize, usize),
) -> Result<CoarseRow> {
    let (coarse, scales) = model.with_weight_frac_bits(fine, SERVED_WEIGHT_BITS)?;
    let before = model.predict(fine, test.x.view())?;
    let after = coarse.predict(&scales, test.x.view())?;
    let changed_predictions = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let correct = after
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    #[allow(clippy::cast_precision_loss)]
    let accuracy = correct as f64 / after.len().max(1) as f64;
    let mut e = gelu_endpoints_at(
        config.key_bits,
        config.allow_test_keys,
        spec.clone(),
        Some(coarse),
        scales,
    )?;
    let mut timing = time_gelu(&e.server, &mut e.client, &e.key, test, runs)?;
    timing.note = format!("as the full-precision row, weights rounded to 2^-{SERVED_WEIGHT_BITS}");
    Ok(CoarseRow {
        weight_frac_bits: SERVED_WEIGHT_BITS,
        accuracy,
        changed_predictions,
        timing,
    })
}

/// `conv_latency.png`: log10 of the single-sample latency, GELU-Net (measured, online),
/// CryptoNets (measured), and the paper's two.
fn plot_latency(rows: &[ConvRow], out: &Path, key_bits: u64) -> Result<String> {
    let legend = [
        "GELU-Net (here)",
        "GELU-Net online (here)",
        "CryptoNets BFV (here)",
        "GELU-Net (paper)",
        "CryptoNets (paper)",
    ]
    .map(String::from);
    let lg = |v: Option<f64>| v.map_or(f64::NAN, f64::log10);
    let groups: Vec<BarGroup> = rows
        .iter()
        .map(|r| BarGroup {
            label: r.network.clone(),
            bars: vec![
                (lg(r.gelu.as_ref().map(|g| g.single_secs)), f64::NAN),
                (lg(r.gelu.as_ref().map(|g| g.online_single_secs)), f64::NAN),
                (
                    lg(r.cryptonets.as_ref().map(|c| c.single.latency_secs())),
                    f64::NAN,
                ),
                (lg(Some(r.paper.gelu_secs)), f64::NAN),
                (lg(Some(r.paper.cryptonets_secs)), f64::NAN),
            ],
        })
        .collect();
    let file = "conv_latency.png";
    bar_figure(
        &out.join(file),
        "Table 4: single-sample inference latency, log10 seconds",
        "log10 s",
        &legend,
        &groups,
        (-2.0, 4.0),
        &format!(
            "MNIST, Paillier {key_bits} bits, {} rayon threads",
            rayon::current_num_threads()
        ),
    )
    .map_err(|e| BenchError::Check(e.to_string()))?;
    Ok(file.into())
}

fn secs(v: f64) -> String {
    crate::report_ms(v)
}

/// Part 6 as Markdown (the table, the targets and the plot).
#[must_use]
pub fn markdown(r: &ConvReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "GELU-Net: the fixed-point reference trained on MNIST (encrypted training equals it bit for bit), served to an in-memory inference client with Paillier {} bits; one sample with each conv layer's output positions packed in slots and dense layers row-packed; *online*: the client's obfuscators of one inference precomputed. CryptoNets: the square network of the same architecture under BFV in CryptoNets' layout (one sample per slot), exact outputs checked, seeded {{−1, 0, 1}} weights (the time does not depend on their values; its accuracy is the paper's, not measured). Ratio = CryptoNets / GELU-Net (> 1: GELU-Net faster).\n",
        r.key_bits
    );
    let _ = writeln!(o, "| network | parameters | GELU-Net accuracy (trained samples) | GELU-Net 1 sample | online (offline); layers preprocessed (offline) | GELU-Net per sample, batch | CryptoNets 1 sample (encrypt / infer / decrypt) | CryptoNets per sample, full batch | latency ratio | online ratio | paper: GELU-Net / CryptoNets s, accuracy |");
    let _ = writeln!(
        o,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in &r.rows {
        let acc = row.gelu_accuracy.map_or("–".into(), |a| {
            format!(
                "{a:.4} ({} samples, {} test)",
                row.train_samples, row.test_samples
            )
        });
        let (g1, gon, gb) = match &row.gelu {
            Some(g) => (
                secs(g.single_secs),
                format!(
                    "{} ({}){}",
                    secs(g.online_single_secs),
                    secs(g.offline_single_secs),
                    g.preprocessed_suffix(secs)
                ),
                format!("{} ({})", secs(g.batch_per_sample_secs), g.batch_samples),
            ),
            None => {
                let e = row.gelu_error.clone().unwrap_or_default();
                (format!("failed: {e}"), "–".into(), "–".into())
            }
        };
        let (c1, cb) = match &row.cryptonets {
            Some(c) => (
                format!(
                    "{} ({} / {} / {})",
                    secs(c.single.latency_secs()),
                    secs(c.single.encrypt_secs),
                    secs(c.single.infer_secs),
                    secs(c.single.decrypt_secs)
                ),
                format!(
                    "{} ({} samples)",
                    secs(c.batch.per_sample_secs()),
                    c.batch.samples
                ),
            ),
            None => (
                format!(
                    "failed: {}",
                    row.cryptonets_error.clone().unwrap_or_default()
                ),
                "–".into(),
            ),
        };
        let x = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}×"));
        let _ = writeln!(
            o,
            "| {} | {} | {acc} | {g1} | {gon} | {gb} | {c1} | {cb} | {} | {} | {} / {} s, {} / {} |",
            row.network,
            row.parameters,
            x(row.latency_ratio),
            x(row.online_latency_ratio),
            row.paper.gelu_secs,
            row.paper.cryptonets_secs,
            row.paper.gelu_accuracy,
            row.paper.cryptonets_accuracy
        );
    }
    for row in &r.rows {
        let _ = writeln!(o, "\n- {}: `{}`", row.network, row.arch);
        if let Some(c) = &row.cryptonets {
            let _ = writeln!(o, "  CryptoNets parameters: {}", c.batch.parameters);
        }
        match (&row.coarse, &row.coarse_error) {
            (Some(c), _) => {
                let _ = writeln!(
                    o,
                    "  served with weights rounded to 2^-{} (a different model, same test set): accuracy {:.4} ({} of {} predictions changed), 1 sample {} (online {}), per sample in a batch {}",
                    c.weight_frac_bits,
                    c.accuracy,
                    c.changed_predictions,
                    row.test_samples,
                    secs(c.timing.single_secs),
                    secs(c.timing.online_single_secs),
                    secs(c.timing.batch_per_sample_secs)
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(o, "  coarse-weight serving failed: {e}");
            }
            (None, None) => {}
        }
        if let Some(t) = row.throughput_ratio_full {
            let _ = writeln!(
                o,
                "  throughput with a full BFV batch: CryptoNets / GELU-Net per sample = {t:.3}× ({})",
                if t < 1.0 { "batched FHE wins per sample" } else { "GELU-Net wins per sample" }
            );
        }
    }
    let _ = writeln!(o, "\nTargets:\n");
    crate::report::targets_list(&mut o, &r.targets);
    if let Some(p) = &r.plot {
        let _ = writeln!(o, "\n![{p}]({p})\n");
    }
    o
}
