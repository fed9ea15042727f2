//! Grouped bar charts with whiskers ([`bar_figure`]).

use std::path::Path;

use plotters::prelude::*;

use crate::{
    canvas, caption_strip, legend as draw_legend, register_font, series_color, Drawing, Result,
    FAMILY,
};

/// One group of bars (e.g. a dataset) with one bar per contestant.
#[derive(Clone, Debug)]
pub struct BarGroup {
    /// Group label.
    pub label: String,
    /// `(mean, std)` per contestant, in legend order; a non-finite mean draws no bar, a
    /// non-finite std no whisker.
    pub bars: Vec<(f64, f64)>,
}

/// Draws a grouped bar chart (means with ±std whiskers, 900 × 500 pixels) into a PNG at
/// `path`: `title` above, the Y axis over `y_range` labelled `y_label`, one colour per
/// `legend` entry, `caption` (the figure's parameters) under it.
///
/// # Errors
/// [`PlotError::Font`](crate::PlotError::Font) if the bundled font cannot be registered;
/// [`PlotError::Draw`](crate::PlotError::Draw) if drawing, encoding or writing fails
/// (e.g. an empty `y_range`).
pub fn bar_figure(
    path: &Path,
    title: &str,
    y_label: &str,
    legend: &[String],
    groups: &[BarGroup],
    y_range: (f64, f64),
    caption: &str,
) -> Result<()> {
    const WHAT: &str = "bar_figure";
    register_font()?;
    let root = canvas(path, (900, 500), WHAT)?;
    let top = caption_strip(&root, caption, WHAT)?;
    #[allow(clippy::cast_precision_loss)]
    let n_groups = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..n_groups, y_range.0..y_range.1)
        .drawing(WHAT)?;
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
        .drawing(WHAT)?;
    #[allow(clippy::cast_precision_loss)]
    let k = legend.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, name) in legend.iter().enumerate() {
        let color = series_color(j);
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
            .drawing(WHAT)?
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
        chart.draw_series(whiskers).drawing(WHAT)?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 13, WHAT)?;
    root.present().drawing(WHAT)?;
    Ok(())
}
