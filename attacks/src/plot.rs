//! The extraction-error curve (PNG). The figures themselves, and the reconstruction grid
//! of paper Fig. 2 ([`gelunet_plot::image_grid`]), are drawn by `gelunet-plot`.

use std::path::Path;

use gelunet_plot::{log_line_figure, LogFigure, Mark, Rgb, Series};

use crate::extraction::{ExtractionPoint, ExtractionReport};
use crate::Result;

/// The relative error of the extracted layer-1 weights against the samples per session
/// (log scale, floored at `1e-16`), η unknown and known, with the server's bound and
/// `n_0 + 2` marked.
///
/// # Errors
/// [`AttackError::Plot`](crate::AttackError::Plot) if the figure cannot be drawn or
/// written.
pub fn extraction_curve(path: &Path, report: &ExtractionReport) -> Result<()> {
    // Sample counts and widths are small: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let x_max = report.points.iter().map(|p| p.samples).max().unwrap_or(1) as f64 + 0.5;
    #[allow(clippy::cast_precision_loss)]
    let n0 = report.run.widths.first().copied().unwrap_or(0) as f64;
    #[allow(clippy::cast_precision_loss)]
    let series = |name: &str, error: fn(&ExtractionPoint) -> f64| Series {
        name: name.into(),
        points: report
            .points
            .iter()
            .map(|p| (p.samples as f64, error(p)))
            .collect(),
    };
    #[allow(clippy::cast_precision_loss)]
    let bound = report.bound as f64;
    let figure = LogFigure {
        title: format!(
            "Model extraction, layer 1 of {:?} ({}, B = {})",
            report.run.widths, report.run.dataset, report.run.batch
        ),
        x_label: "samples per session d·B".into(),
        y_label: "‖Ŵ − W‖ / ‖W‖".into(),
        x_range: (0.5, x_max),
        y_floor: 1e-16,
        marks: vec![
            Mark {
                x: bound,
                label: format!("server bound d·B ≤ {}", report.bound),
                color: Rgb(200, 0, 0),
            },
            Mark {
                x: n0 + 2.0,
                label: format!("n₀ + 2 = {}", n0 + 2.0),
                color: Rgb(90, 90, 90),
            },
        ],
        series: vec![
            series("η unknown (n₀ + 2 unknowns per row)", |p| {
                p.median.rel_error_w
            }),
            series("η known (n₀ + 1 unknowns per row)", |p| {
                p.median.rel_error_w_known_eta
            }),
        ],
    };
    log_line_figure(path, &figure)?;
    Ok(())
}
