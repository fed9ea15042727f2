//! Line charts: panels side by side ([`line_figure`]) and one chart with a logarithmic
//! Y axis and vertical marks ([`log_line_figure`]).

use std::path::Path;

use plotters::coord::ranged1d::Ranged;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::{
    canvas, caption_strip, legend, register_font, series_color, Drawing, PlotError, Result, Rgb,
    FAMILY,
};

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points. In [`line_figure`], the first non-finite `y` ends the line and is
    /// drawn as a cross at the top of the panel (divergence), and values above the panel's
    /// top are clipped to it; in [`log_line_figure`], `y` below the floor is drawn at it.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a [`line_figure`].
#[derive(Clone, Debug)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Top of the Y axis (the axis runs to `1.05·y_max`; `1` if not finite and positive).
    pub y_max: f64,
    /// The lines, coloured from [`PALETTE`](crate::PALETTE) in order.
    pub series: Vec<Series>,
}

/// Draws `panels` side by side into a PNG at `path` (560 × 460 pixels per panel), with
/// `caption` (the figure's parameters) written under them. The X axes run from 0 to the
/// largest `x` of the panel (at least 1).
///
/// # Errors
/// [`PlotError::Font`](crate::PlotError::Font) if the bundled font cannot be registered;
/// [`PlotError::Draw`](crate::PlotError::Draw) if drawing, encoding or writing fails.
pub fn line_figure(path: &Path, panels: &[Panel], caption: &str) -> Result<()> {
    const WHAT: &str = "line_figure";
    register_font()?;
    let n = u32::try_from(panels.len().max(1)).drawing(WHAT)?;
    let root = canvas(path, (560 * n, 460), WHAT)?;
    let top = caption_strip(&root, caption, WHAT)?;
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
            .drawing(WHAT)?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .draw()
            .drawing(WHAT)?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = series_color(i);
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
            draw_line(&mut chart, &line, &s.name, color, (2, 18), WHAT)?;
            chart
                .draw_series(
                    crosses
                        .iter()
                        .map(|&p| Cross::new(p, 6, color.stroke_width(2))),
                )
                .drawing(WHAT)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 13, WHAT)?;
    }
    root.present().drawing(WHAT)?;
    Ok(())
}

/// Draws `points` as a 2-pixel line of `color` with dots of `radius` pixels, and its
/// legend entry `name` (a stroke of `legend_len` pixels).
fn draw_line<'a, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    points: &[(f64, f64)],
    name: &str,
    color: RGBColor,
    (radius, legend_len): (u32, i32),
    what: &'static str,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(points.to_vec(), color.stroke_width(2)))
        .drawing(what)?
        .label(name)
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + legend_len, y)], color.stroke_width(2))
        });
    chart
        .draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, radius, color.filled())),
        )
        .drawing(what)?;
    Ok(())
}

/// A vertical line across a [`LogFigure`], with a legend entry.
#[derive(Clone, Debug)]
pub struct Mark {
    /// Where it stands on the X axis.
    pub x: f64,
    /// Legend entry.
    pub label: String,
    /// Its colour.
    pub color: Rgb,
}

/// One line chart with a logarithmic Y axis (820 × 520 pixels).
#[derive(Clone, Debug)]
pub struct LogFigure {
    /// Caption above the chart.
    pub title: String,
    /// X axis label (ticks are written as whole numbers).
    pub x_label: String,
    /// Y axis label (ticks are written as `1e-3`, …).
    pub y_label: String,
    /// The X axis, `(from, to)`.
    pub x_range: (f64, f64),
    /// The bottom of the Y axis (positive); smaller values are drawn at it. The top is
    /// three times the largest finite `y` of the series (at least 3).
    pub y_floor: f64,
    /// Vertical marks, drawn first, in their own colours.
    pub marks: Vec<Mark>,
    /// The lines with their points, coloured from [`PALETTE`](crate::PALETTE) in order.
    pub series: Vec<Series>,
}

/// Draws `figure` into a PNG at `path`, the legend in the lower left corner.
///
/// # Errors
/// [`PlotError::Font`](crate::PlotError::Font) if the bundled font cannot be registered;
/// [`PlotError::Axis`](crate::PlotError::Axis) for an X range that is empty or not
/// finite, or a floor that is not positive and finite (checked before anything is
/// written); [`PlotError::Draw`](crate::PlotError::Draw) if drawing, encoding or writing
/// fails.
pub fn log_line_figure(path: &Path, figure: &LogFigure) -> Result<()> {
    const WHAT: &str = "log_line_figure";
    let floor = figure.y_floor;
    let y_max = figure
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 3.0;
    let (x0, x1) = figure.x_range;
    if !(x0.is_finite() && x1.is_finite() && x0 < x1) {
        return Err(PlotError::Axis {
            what: WHAT,
            axis: "x",
            from: x0,
            to: x1,
        });
    }
    if !(floor.is_finite() && floor > 0.0 && floor < y_max) {
        return Err(PlotError::Axis {
            what: WHAT,
            axis: "y",
            from: floor,
            to: y_max,
        });
    }
    register_font()?;
    let root = canvas(path, (820, 520), WHAT)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&figure.title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            figure.x_range.0..figure.x_range.1,
            (floor..y_max).log_scale(),
        )
        .drawing(WHAT)?;
    chart
        .configure_mesh()
        .x_desc(figure.x_label.as_str())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .y_desc(figure.y_label.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .drawing(WHAT)?;
    for mark in &figure.marks {
        let color = RGBColor::from(mark.color);
        chart
            .draw_series(LineSeries::new(
                vec![(mark.x, floor), (mark.x, y_max)],
                color.stroke_width(1),
            ))
            .drawing(WHAT)?
            .label(mark.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    for (i, s) in figure.series.iter().enumerate() {
        let color = series_color(i);
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x, y.max(floor))).collect();
        draw_line(&mut chart, &pts, &s.name, color, (4, 20), WHAT)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft, 14, WHAT)?;
    root.present().drawing(WHAT)?;
    Ok(())
}
