//! Labelled rows of grey-scale images ([`image_grid`]; paper Fig. 2's layout).

use std::path::Path;

use ndarray::Array1;
use plotters::prelude::*;

use crate::{canvas, register_font, Drawing, PlotError, Result, FAMILY};

/// One labelled row of images.
#[derive(Clone, Debug)]
pub struct ImageRow {
    /// Label drawn left of the row.
    pub label: String,
    /// Images (`side²` values each, row-major); each is drawn with its own min–max grey
    /// scale (white = low for values in `[0, 1]`-like data: MNIST's ink is high).
    /// Non-finite values are drawn mid-grey; values past `side²` are ignored.
    pub images: Vec<Array1<f64>>,
}

/// The figure's name in [`PlotError::Draw`].
const WHAT: &str = "image_grid";
/// Pixels per image value.
const PX: i32 = 4;
/// Width of the label column, pixels.
const LABEL_W: i32 = 330;
/// Height of the caption band above the rows, pixels.
const TOP: i32 = 50;

/// Draws `rows` of `side × side` images into a PNG at `path`, `caption` above them (16 px)
/// and each row's label to its left (15 px). Every image takes `4·side + 8` pixels square;
/// the picture is `340 + cols·(4·side + 8)` wide and `60 + rows·(4·side + 8)` high.
///
/// # Errors
/// [`PlotError::Font`] if the bundled font cannot be registered; [`PlotError::Draw`] if
/// the picture would be too large, or drawing, encoding or writing fails.
pub fn image_grid(path: &Path, rows: &[ImageRow], side: usize, caption: &str) -> Result<()> {
    register_font()?;
    let too_large = || PlotError::Draw {
        what: WHAT,
        reason: format!(
            "{} rows of images of side {side} do not fit a picture",
            rows.len()
        ),
    };
    let side_i = i32::try_from(side).map_err(|_| too_large())?;
    let cell = side_i
        .checked_mul(PX)
        .and_then(|v| v.checked_add(8))
        .ok_or_else(too_large)?;
    let cols = rows.iter().map(|r| r.images.len()).max().unwrap_or(0);
    let extent = |n: usize, before: i32| {
        i32::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(cell))
            .and_then(|v| v.checked_add(before + 10))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(too_large)
    };
    let (w, h) = (extent(cols, LABEL_W)?, extent(rows.len(), TOP)?);
    let root = canvas(path, (w, h), WHAT)?;
    root.draw(&Text::new(
        caption.to_string(),
        (10, 12),
        (FAMILY, 16).into_font().color(&BLACK),
    ))
    .drawing(WHAT)?;
    let mut y0 = TOP;
    for row in rows {
        root.draw(&Text::new(
            row.label.clone(),
            (10, y0 + cell / 2 - 8),
            (FAMILY, 15).into_font().color(&BLACK),
        ))
        .drawing(WHAT)?;
        let mut x0 = LABEL_W;
        for img in &row.images {
            draw_image(&root, img, side, (x0, y0))?;
            x0 += cell;
        }
        y0 += cell;
    }
    root.present().drawing(WHAT)?;
    Ok(())
}

/// One image at `(x0, y0)`, with a light grey frame.
fn draw_image(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    img: &Array1<f64>,
    side: usize,
    (x0, y0): (i32, i32),
) -> Result<()> {
    let (lo, hi) = img
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    let range = if hi > lo { hi - lo } else { 1.0 };
    let mut r = 0i32;
    let mut c = 0i32;
    for &v in img.iter().take(side * side) {
        let t = if v.is_finite() { (v - lo) / range } else { 0.5 };
        // In [0, 255] after the clamp.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let g = (255.0 * (1.0 - t.clamp(0.0, 1.0))).round() as u8;
        let tl = (x0 + c * PX, y0 + r * PX);
        let br = (tl.0 + PX, tl.1 + PX);
        root.draw(&Rectangle::new([tl, br], RGBColor(g, g, g).filled()))
            .drawing(WHAT)?;
        c += 1;
        if c as usize == side {
            (r, c) = (r + 1, 0);
        }
    }
    // `side` fits i32 (checked by the caller), and so does `side · PX` (the cell size).
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let extent = side as i32 * PX;
    let frame = [(x0 - 1, y0 - 1), (x0 + extent, y0 + extent)];
    root.draw(&Rectangle::new(frame, RGBColor(180, 180, 180)))
        .drawing(WHAT)
}
