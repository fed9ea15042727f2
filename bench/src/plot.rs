//! PNG line plots (plotters, bitmap backend). Text is drawn with the DejaVu Sans font
//! shipped in `bench/assets/` (registered once through plotters' `ab_glyph` support), so no
//! system font is needed at run time.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{BenchError, Result};

/// DejaVu Sans (Bitstream Vera license, see `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

static REGISTER: Once = Once::new();

/// The font family name the plots use.
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    let mut ok = true;
    REGISTER.call_once(|| {
        ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err(BenchError::Plot(
            "the bundled font could not be parsed".into(),
        ))
    }
}

fn perr<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Plot(e.to_string())
}

/// One line of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points; non-finite `y` values are drawn as a cross at the top of the
    /// panel (divergence), values above the panel's top are clipped to it.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Top of the Y axis.
    pub y_max: f64,
    /// The lines.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Draws `panels` side by side into a PNG at `path`, with `caption` (the figure's
/// parameters) written under them.
///
/// # Errors
/// [`BenchError::Plot`] if drawing or encoding fails.
pub fn line_figure(path: &Path, panels: &[Panel], caption: &str) -> Result<()> {
    register_font()?;
    let n = u32::try_from(panels.len().max(1)).map_err(perr)?;
    let (w, h) = (560 * n, 460);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let (top, bottom) = root.split_vertically(h - 40);
    bottom
        .draw_text(
            caption,
            &TextStyle::from((FAMILY, 13).into_font()).color(&BLACK),
            (10, 12),
        )
        .map_err(perr)?;
    let areas = top.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let x_max = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0f64, f64::max);
        let y_max = if panel.y_max.is_finite() && panel.y_max > 0.0 {
            panel.y_max
        } else {
            1.0
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FAMILY, 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.05)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .draw()
            .map_err(perr)?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut line = Vec::new();
            let mut crosses = Vec::new();
            for &(x, y) in &s.points {
                if y.is_finite() {
                    line.push((x, y.min(y_max)));
                } else {
                    crosses.push((x, y_max));
                    break;
                }
            }
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(perr)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(perr)?;
            chart
                .draw_series(
                    crosses
                        .iter()
                        .map(|&p| Cross::new(p, 6, color.stroke_width(2))),
                )
                .map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// One group of bars (e.g. a dataset) with one bar per contestant.
#[derive(Clone, Debug)]
pub struct BarGroup {
    /// Group label.
    pub label: String,
    /// `(mean, std)` per contestant, in legend order.
    pub bars: Vec<(f64, f64)>,
}

/// Draws a grouped bar chart (means with ±std whiskers) into a PNG at `path`.
///
/// # Errors
/// [`BenchError::Plot`] if drawing or encoding fails.
pub fn bar_figure(
    path: &Path,
    title: &str,
    y_label: &str,
    legend: &[String],
    groups: &[BarGroup],
    y_range: (f64, f64),
    caption: &str,
) -> Result<()> {
    register_font()?;
    let (w, h) = (900u32, 500u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let (top, bottom) = root.split_vertically(h - 40);
    bottom
        .draw_text(
            caption,
            &TextStyle::from((FAMILY, 13).into_font()).color(&BLACK),
            (10, 12),
        )
        .map_err(perr)?;
    #[allow(clippy::cast_precision_loss)]
    let n_groups = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n_groups, y_range.0..y_range.1)
        .map_err(perr)?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let f = x - x.floor();
            if (f - 0.5).abs() < 1e-6 {
                // Group index: exact for the small counts used here.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let i = x.floor() as usize;
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()
        .map_err(perr)?;
    #[allow(clippy::cast_precision_loss)]
    let k = legend.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, name) in legend.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        #[allow(clippy::cast_precision_loss)]
        let off = 0.1 + width * j as f64;
        let rects: Vec<_> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| grp.bars.get(j).map(|&(m, _)| (g, m)))
            .filter(|(_, m)| m.is_finite())
            .map(|(g, m)| {
                #[allow(clippy::cast_precision_loss)]
                let x0 = g as f64 + off;
                Rectangle::new([(x0, y_range.0), (x0 + width * 0.9, m)], color.filled())
            })
            .collect();
        chart
            .draw_series(rects)
            .map_err(perr)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let whiskers: Vec<_> = groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| grp.bars.get(j).map(|&(m, s)| (g, m, s)))
            .filter(|(_, m, s)| m.is_finite() && s.is_finite())
            .map(|(g, m, s)| {
                #[allow(clippy::cast_precision_loss)]
                let x = g as f64 + off + width * 0.45;
                PathElement::new(vec![(x, m - s), (x, m + s)], BLACK.stroke_width(1))
            })
            .collect();
        chart.draw_series(whiskers).map_err(perr)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(perr)?;
    root.present().map_err(perr)?;
    Ok(())
}
