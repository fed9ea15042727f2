//! Part 1, training stability (GELU-Net paper, Fig. 3).
//!
//! For each hidden width and learning rate, GELU-Net (its exact fixed-point reference,
//! sigmoid applied by the client) and the polynomial baselines (square: CryptoNets;
//! Taylor-3 and Taylor-5 sigmoid: BGN-Net) train in plaintext from the same initial
//! weights on the same mini-batches; the training loss is recorded at the start and after
//! every epoch. A run *diverged* if a loss became NaN or infinite, the fixed-point
//! reference left its range (overflow), or the final loss is above the initial one.

use std::path::Path;

use gelunet_baselines::{PolyActivation, TrainActivation};
use gelunet_plot::{line_figure, Panel, Series};
use serde::Serialize;

use crate::error::Result;
use crate::pipeline::{Prepared, TrainSetup};
use crate::runs::train_side_by_side;

/// One training run of the figure.
#[derive(Clone, Debug, Serialize)]
pub struct StabilityRun {
    /// Hidden width.
    pub width: usize,
    /// Learning rate.
    pub lr: f64,
    /// Scheme and activation, e.g. `CryptoNets (square)`.
    pub scheme: String,
    /// Training loss at the start (index 0) and after each epoch (NaN: diverged).
    pub losses: Vec<f64>,
    /// Whether the run diverged (see the module docs).
    pub diverged: bool,
    /// Why, or `stable`.
    pub status: String,
}

/// Part 1's results.
#[derive(Clone, Debug, Serialize)]
pub struct StabilityReport {
    /// Dataset.
    pub dataset: String,
    /// Training samples.
    pub train_samples: usize,
    /// Clients the training set is split among.
    pub clients: usize,
    /// Mini-batch size.
    pub batch: usize,
    /// Epochs.
    pub epochs: usize,
    /// Seed.
    pub seed: u64,
    /// Learning rates.
    pub lrs: Vec<f64>,
    /// Hidden widths.
    pub widths: Vec<usize>,
    /// Every run.
    pub runs: Vec<StabilityRun>,
    /// Plot files (one per width), relative to the output directory.
    pub plots: Vec<String>,
    /// Seconds.
    pub seconds: f64,
}

/// The schemes compared, in plot order.
pub const SCHEMES: [&str; 4] = [
    "GELU-Net (sigmoid, fixed-point reference)",
    "CryptoNets (square)",
    "BGN-Net (Taylor-3)",
    "BGN-Net (Taylor-5)",
];

fn classify(losses: &[f64], error: Option<&str>) -> (bool, String) {
    if let Some(e) = error {
        return (true, format!("overflow (fixed-point range): {e}"));
    }
    if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
        return (true, format!("NaN/overflow at epoch {i}"));
    }
    match (losses.first(), losses.last()) {
        (Some(&a), Some(&b)) if b > a => {
            (true, format!("loss rose above its start ({a:.3} → {b:.3})"))
        }
        (Some(&a), Some(&b)) => (false, format!("stable ({a:.3} → {b:.3})")),
        _ => (false, "no data".into()),
    }
}

/// Runs part 1 and writes one plot per width into `out_dir`.
///
/// # Errors
/// Data, configuration and plotting errors.
#[allow(clippy::too_many_arguments)]
pub fn run(
    prep: &Prepared,
    widths: &[usize],
    lrs: &[f64],
    batch: usize,
    epochs: usize,
    seed: u64,
    out_dir: &Path,
    caption: &str,
) -> Result<StabilityReport> {
    let t = std::time::Instant::now();
    let acts = [
        TrainActivation::Poly(PolyActivation::Square),
        TrainActivation::Poly(PolyActivation::Taylor3),
        TrainActivation::Poly(PolyActivation::Taylor5),
    ];
    let mut runs = Vec::new();
    let mut plots = Vec::new();
    for &width in widths {
        let mut panels = Vec::new();
        for &lr in lrs {
            let setup = TrainSetup {
                arch: None,
                widths: vec![prep.features, width, prep.classes],
                lr,
                batch,
                epochs,
                seed,
            };
            let r = train_side_by_side(prep, &setup, &acts, true, true)?;
            let mut all = vec![(r.reference_losses.clone(), r.reference_error.clone())];
            all.extend(r.float_losses.iter().map(|l| (l.clone(), None)));
            let mut series = Vec::new();
            let mut start_max = 0.0f64;
            for (scheme, (losses, err)) in SCHEMES.iter().zip(all) {
                let (diverged, status) = classify(&losses, err.as_deref());
                if let Some(&l0) = losses.first() {
                    if l0.is_finite() {
                        start_max = start_max.max(l0);
                    }
                }
                #[allow(clippy::cast_precision_loss)]
                series.push(Series {
                    name: (*scheme).to_string(),
                    points: losses
                        .iter()
                        .enumerate()
                        .map(|(e, &l)| (e as f64, l))
                        .collect(),
                });
                runs.push(StabilityRun {
                    width,
                    lr,
                    scheme: (*scheme).to_string(),
                    losses,
                    diverged,
                    status,
                });
            }
            panels.push(Panel {
                title: format!("hidden {width}, η = {lr}"),
                x_label: "epoch".into(),
                y_label: "training loss (cross-entropy)".into(),
                y_max: (2.0 * start_max).max(1.0),
                series,
            });
        }
        let file = format!("stability_hidden{width}.png");
        line_figure(
            &out_dir.join(&file),
            &panels,
            &format!(
                "Fig. 3 — {}, hidden {width}, B = {batch}, {epochs} epochs, seed {seed}; {caption}",
                prep.name
            ),
        )?;
        plots.push(file);
    }
    Ok(StabilityReport {
        dataset: prep.name.clone(),
        train_samples: prep.train_len(),
        clients: prep.shares.len(),
        batch,
        epochs,
        seed,
        lrs: lrs.to_vec(),
        widths: widths.to_vec(),
        runs,
        plots,
        seconds: t.elapsed().as_secs_f64(),
    })
}
