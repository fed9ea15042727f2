//! `train --plot DIR` and `serve --plot DIR`: the training loss and the test accuracy per
//! epoch, of the encrypted run and of the plaintext fixed-point reference replaying the
//! same sessions, on the same axes (`DIR/loss.png`, `DIR/accuracy.png`, gelunet-plot).
//!
//! The encrypted run's models between sessions: under protocol v2 nobody holds them in
//! the clear, so `train` (which holds the clients' group key in its process) unmasks the
//! server's masked state `W~` after the kept sessions with the clients' per-version
//! seeds, exactly as the release at the end does (docs/DESIGN.md "Protocol v2",
//! "Release"); `serve` has no group key and shows the encrypted run at its start (the
//! public initialization) and its end (the released model). The reference is replayed
//! wherever the run can be reproduced. Points are kept at most [`POINTS_PER_EPOCH`] per
//! epoch (and at the start and the end); loss and accuracy are measured on at most
//! [`MAX_EVAL_SAMPLES`] samples of each split.

use std::path::{Path, PathBuf};

use gelunet_plot::{line_figure, Panel, Series};
use gelunet_protocol::{Dataset, FixedModel, Scales};
use gelunet_server::ServerConfig;
use gelunet_shell::server::TrainingLog;
use ndarray::{Axis, Slice};

use crate::data::Prepared;
use crate::report::{quantize, replay_with};
use crate::{Result, RunError};

/// At most this many points per epoch on a curve.
pub(crate) const POINTS_PER_EPOCH: u64 = 20;
/// Loss and accuracy are measured on at most this many samples of a split (the first).
pub(crate) const MAX_EVAL_SAMPLES: usize = 5000;

/// Which sessions a curve keeps: the first session to reach each
/// `1/`[`POINTS_PER_EPOCH`] of an epoch.
#[derive(Clone, Debug)]
pub(crate) struct Buckets {
    held: u64,
    last: u64,
}

impl Buckets {
    /// For clients holding `held` samples together.
    pub(crate) fn new(held: u64) -> Self {
        Self { held, last: 0 }
    }

    /// Whether the session that brought the run to `samples` processed samples is kept.
    pub(crate) fn keep(&mut self, samples: u64) -> bool {
        if self.held == 0 {
            return false;
        }
        let bucket = u128::from(samples) * u128::from(POINTS_PER_EPOCH) / u128::from(self.held);
        let bucket = u64::try_from(bucket).unwrap_or(u64::MAX);
        let keep = bucket > self.last;
        if keep {
            self.last = bucket;
        }
        keep
    }
}

/// One point of a curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Point {
    /// Epochs completed.
    pub epochs: f64,
    /// Mean cross-entropy of the softmax outputs on the training split.
    pub loss: f64,
    /// Accuracy on the test split (the training split when there is no test split).
    pub accuracy: f64,
}

/// The first [`MAX_EVAL_SAMPLES`] samples of `d`.
fn head(d: &Dataset) -> (ndarray::ArrayView2<'_, i128>, &[usize]) {
    let n = d.labels.len().min(MAX_EVAL_SAMPLES);
    (d.x.slice_axis(Axis(0), Slice::from(..n)), &d.labels[..n])
}

/// The mean cross-entropy of `model`'s softmax outputs on `d` (log-sum-exp, in reals).
fn loss(model: &FixedModel, scales: &Scales, d: &Dataset) -> Result<f64> {
    let (x, labels) = head(d);
    if labels.is_empty() {
        return Ok(0.0);
    }
    let z = model
        .logits(scales, x)
        .map_err(RunError::protocol("loss"))?;
    let mut total = 0.0;
    for (row, &label) in z.rows().into_iter().zip(labels) {
        let v: Vec<f64> = row.to_vec();
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + v.iter().map(|&a| (a - max).exp()).sum::<f64>().ln();
        total += lse - v.get(label).copied().unwrap_or(f64::NAN);
    }
    Ok(total / labels.len() as f64)
}

/// The point of `model` after `epochs` epochs.
pub(crate) fn point(
    model: &FixedModel,
    scales: &Scales,
    train: &Dataset,
    test: &Dataset,
    epochs: f64,
) -> Result<Point> {
    let eval = if test.labels.is_empty() { train } else { test };
    let (x, labels) = head(eval);
    Ok(Point {
        epochs,
        loss: loss(model, scales, train)?,
        accuracy: model
            .accuracy(scales, x, labels)
            .map_err(RunError::protocol("accuracy"))?,
    })
}

/// The reference's curve: `log` replayed, measured after the kept sessions (see
/// [`Buckets`]), at the start and at the end; `None` when some client's data cannot be
/// reproduced.
///
/// # Errors
/// Reference and evaluation errors.
pub(crate) fn reference_curve(
    cfg: &ServerConfig,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
    (train, test): (&Dataset, &Dataset),
) -> Result<Option<Vec<Point>>> {
    let done: Vec<u64> = log
        .sessions
        .iter()
        .filter(|s| s.completed)
        .map(|s| s.samples)
        .collect();
    let held = log.samples_held;
    let epochs = |samples: u64| {
        if held == 0 {
            0.0
        } else {
            samples as f64 / held as f64
        }
    };
    let mut buckets = Buckets::new(held);
    let last = done.len() as u64;
    let mut points = Vec::new();
    let model = replay_with(cfg, log, share_of, |k, m| {
        let samples = match k {
            0 => 0,
            k => done.get(k as usize - 1).copied().unwrap_or(0),
        };
        if k == 0 || buckets.keep(samples) || k == last {
            points.push(point(m, &cfg.scales, train, test, epochs(samples))?);
        }
        Ok(())
    })?;
    Ok(model.map(|_| points))
}

/// Writes `dir/loss.png` and `dir/accuracy.png`: the encrypted run's points (none for
/// `train --plaintext`) and the reference's (if any) on the same axes, `caption` under
/// them. Returns the two paths.
///
/// # Errors
/// [`RunError::Io`] creating `dir`; [`RunError::Plot`] drawing or writing a figure.
pub(crate) fn write_plots(
    dir: &Path,
    caption: &str,
    encrypted: &[Point],
    reference: Option<&[Point]>,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(RunError::io("--plot", dir))?;
    let series = |pick: fn(&Point) -> f64| {
        let mut out = Vec::new();
        if let Some(r) = reference {
            out.push(Series {
                name: "plaintext fixed-point reference".into(),
                points: r.iter().map(|p| (p.epochs, pick(p))).collect(),
            });
        }
        if !encrypted.is_empty() {
            out.push(Series {
                name: "encrypted run".into(),
                points: encrypted.iter().map(|p| (p.epochs, pick(p))).collect(),
            });
        }
        out
    };
    let top = |s: &[Series]| {
        s.iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(0.0f64, f64::max)
    };
    let loss = series(|p| p.loss);
    let accuracy = series(|p| p.accuracy);
    let figures = [
        (
            "loss.png",
            Panel {
                title: "training loss per epoch".into(),
                x_label: "epoch".into(),
                y_label: "cross-entropy (training split)".into(),
                y_max: top(&loss),
                series: loss,
            },
        ),
        (
            "accuracy.png",
            Panel {
                title: "test accuracy per epoch".into(),
                x_label: "epoch".into(),
                y_label: "accuracy (test split)".into(),
                y_max: 1.0,
                series: accuracy,
            },
        ),
    ];
    let mut written = Vec::new();
    for (name, panel) in figures {
        let path = dir.join(name);
        line_figure(&path, &[panel], caption).map_err(|source| RunError::Plot {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Everything [`plot_run`] draws from.
pub(crate) struct PlotInput<'a> {
    /// The server role's configuration.
    pub cfg: &'a ServerConfig,
    /// The sessions run.
    pub log: &'a TrainingLog,
    /// The run's data.
    pub prepared: &'a Prepared,
    /// The encrypted run's models: `(epochs completed, model)`, in order.
    pub encrypted: &'a [(f64, FixedModel)],
    /// The caption under the figures.
    pub caption: String,
}

/// `--plot DIR` of a finished run: the encrypted run's points, the reference replayed
/// with `share_of` (as in [`crate::report::replay`]), both figures written.
///
/// # Errors
/// Quantization, reference, evaluation and figure errors.
pub(crate) fn plot_run(
    dir: &Path,
    i: &PlotInput<'_>,
    share_of: impl Fn(usize) -> Option<(Dataset, u64)>,
) -> Result<Vec<PathBuf>> {
    let classes = i.cfg.spec.classes();
    let train = quantize(&i.prepared.train, classes, &i.cfg.scales)?;
    let test = quantize(&i.prepared.test, classes, &i.cfg.scales)?;
    let encrypted = i
        .encrypted
        .iter()
        .map(|(e, m)| point(m, &i.cfg.scales, &train, &test, *e))
        .collect::<Result<Vec<_>>>()?;
    let reference = reference_curve(i.cfg, i.log, share_of, (&train, &test))?;
    write_plots(dir, &i.caption, &encrypted, reference.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_at_most_the_points_per_epoch() {
        let mut b = Buckets::new(100);
        let kept: Vec<u64> = (1..=200).filter(|&s| b.keep(s)).collect();
        assert_eq!(kept.len() as u64, 2 * POINTS_PER_EPOCH);
        assert_eq!(kept[0], 5);
        assert!(!Buckets::new(0).keep(10));
    }

    #[test]
    fn plots_are_png_files() {
        let dir = std::env::temp_dir().join(format!("gelunet-curves-{}", std::process::id()));
        let p = |e, l, a| Point {
            epochs: e,
            loss: l,
            accuracy: a,
        };
        let enc = [p(0.0, 1.1, 0.3), p(1.0, 0.4, 0.9)];
        let files = write_plots(&dir, "test", &enc, Some(&enc)).unwrap();
        assert_eq!(files.len(), 2);
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
