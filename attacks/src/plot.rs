//! PNG figures (plotters, bitmap backend): the reconstruction grid of paper Fig. 2 and the
//! extraction-error curve. Text uses the DejaVu Sans font shipped in `bench/assets/`
//! (Bitstream Vera license, `bench/assets/LICENSE-DejaVu.txt`), embedded in the binary and
//! registered with plotters' `ab_glyph` support, so no system font is needed at run time.

use std::path::Path;
use std::sync::OnceLock;

use ndarray::Array1;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::extraction::ExtractionReport;
use crate::{AttackError, Result};

static FONT: &[u8] = include_bytes!("../../bench/assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok =
        *OK.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(AttackError::Plot(
            "the bundled font could not be parsed".into(),
        ))
    }
}

fn perr<E: std::fmt::Display>(e: E) -> AttackError {
    AttackError::Plot(e.to_string())
}

/// One labelled row of images.
#[derive(Clone, Debug)]
pub struct ImageRow {
    /// Label drawn left of the row.
    pub label: String,
    /// Images (`side²` values each, row-major); each is drawn with its own min–max grey
    /// scale (white = low for values in `[0, 1]`-like data: MNIST's ink is high).
    pub images: Vec<Array1<f64>>,
}

/// Draws rows of `side × side` images into a PNG with a caption.
///
/// # Errors
/// [`AttackError::Plot`].
pub fn image_grid(path: &Path, rows: &[ImageRow], side: usize, caption: &str) -> Result<()> {
    register_font()?;
    let px = 4u32;
    let cell = side as u32 * px + 8;
    let label_w = 330u32;
    let cols = rows.iter().map(|r| r.images.len()).max().unwrap_or(0) as u32;
    let (w, h) = (
        label_w + cols * cell + 10,
        50 + rows.len() as u32 * cell + 10,
    );
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    root.draw(&Text::new(
        caption.to_string(),
        (10, 12),
        (FAMILY, 16).into_font().color(&BLACK),
    ))
    .map_err(perr)?;
    for (ri, row) in rows.iter().enumerate() {
        let y0 = 50 + ri as i32 * cell as i32;
        root.draw(&Text::new(
            row.label.clone(),
            (10, y0 + cell as i32 / 2 - 8),
            (FAMILY, 15).into_font().color(&BLACK),
        ))
        .map_err(perr)?;
        for (ci, img) in row.images.iter().enumerate() {
            let x0 = label_w as i32 + ci as i32 * cell as i32;
            let finite = img.iter().copied().filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
            let range = if hi > lo { hi - lo } else { 1.0 };
            for (k, &v) in img.iter().enumerate().take(side * side) {
                let t = if v.is_finite() { (v - lo) / range } else { 0.5 };
                let g = (255.0 * (1.0 - t.clamp(0.0, 1.0))).round() as u8;
                let (r, c) = ((k / side) as i32, (k % side) as i32);
                let tl = (x0 + c * px as i32, y0 + r * px as i32);
                let br = (tl.0 + px as i32, tl.1 + px as i32);
                root.draw(&Rectangle::new([tl, br], RGBColor(g, g, g).filled()))
                    .map_err(perr)?;
            }
            let frame = [
                (x0 - 1, y0 - 1),
                (
                    x0 + (side as u32 * px) as i32,
                    y0 + (side as u32 * px) as i32,
                ),
            ];
            root.draw(&Rectangle::new(frame, RGBColor(180, 180, 180)))
                .map_err(perr)?;
        }
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// The relative error of the extracted layer-1 weights against the samples per session
/// (log scale), η unknown and known, with the server's bound and `n_0 + 2` marked.
///
/// # Errors
/// [`AttackError::Plot`].
pub fn extraction_curve(path: &Path, report: &ExtractionReport) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let floor = 1e-16;
    let x_max = report.points.iter().map(|p| p.samples).max().unwrap_or(1) as f64 + 0.5;
    let y_max = report
        .points
        .iter()
        .flat_map(|p| [p.median.rel_error_w, p.median.rel_error_w_known_eta])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 3.0;
    let title = format!(
        "Model extraction, layer 1 of {:?} ({}, B = {})",
        report.widths, report.dataset, report.batch
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..x_max, (floor..y_max).log_scale())
        .map_err(perr)?;
    chart
        .configure_mesh()
        .x_desc("samples per session d·B")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .y_desc("‖Ŵ − W‖ / ‖W‖")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(perr)?;
    let n0 = report.widths.first().copied().unwrap_or(0) as f64;
    let marks = [
        (
            report.bound as f64,
            format!("server bound d·B ≤ {}", report.bound),
            RGBColor(200, 0, 0),
        ),
        (
            n0 + 2.0,
            format!("n₀ + 2 = {}", n0 + 2.0),
            RGBColor(90, 90, 90),
        ),
    ];
    for (x, label, color) in marks {
        chart
            .draw_series(LineSeries::new(
                vec![(x, floor), (x, y_max)],
                color.stroke_width(1),
            ))
            .map_err(perr)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    let series = [
        (
            "η unknown (n₀ + 2 unknowns per row)",
            RGBColor(0, 114, 178),
            report
                .points
                .iter()
                .map(|p| (p.samples as f64, p.median.rel_error_w.max(floor)))
                .collect::<Vec<_>>(),
        ),
        (
            "η known (n₀ + 1 unknowns per row)",
            RGBColor(213, 94, 0),
            report
                .points
                .iter()
                .map(|p| (p.samples as f64, p.median.rel_error_w_known_eta.max(floor)))
                .collect::<Vec<_>>(),
        ),
    ];
    for (name, color, pts) in series {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(perr)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(perr)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(())
}
