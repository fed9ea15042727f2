//! PNG figures for gelunet (plotters, bitmap backend), shared by `gelunet-bench` (paper
//! Fig. 3 and Table 3) and `gelunet-attacks` (paper Fig. 2 and the extraction curve).
//!
//! | function | figure |
//! | --- | --- |
//! | [`line_figure`] | panels of line charts side by side (training loss per epoch) |
//! | [`log_line_figure`] | one line chart with a logarithmic Y axis and vertical marks |
//! | [`bar_figure`] | grouped bars with ±std whiskers |
//! | [`image_grid`] | labelled rows of grey-scale images |
//!
//! Text is drawn with the DejaVu Sans font shipped in `plot/assets/` (Bitstream Vera
//! license, `plot/assets/LICENSE-DejaVu.txt`), embedded in the binary and registered once
//! with plotters' `ab_glyph` support, so no system font is needed at run time.

mod bar;
mod grid;
mod line;

use std::sync::OnceLock;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::FontStyle;

pub use bar::{bar_figure, BarGroup};
pub use grid::{image_grid, ImageRow};
pub use line::{line_figure, log_line_figure, LogFigure, Mark, Panel, Series};

/// DejaVu Sans (Bitstream Vera license, see `assets/LICENSE-DejaVu.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The font family name the figures use (the bundled font is registered under it).
pub const FAMILY: &str = "sans-serif";

/// Why a figure could not be drawn.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The font could not be registered with plotters (its bytes do not parse as a font).
    /// Reported by every later call too, not only the first.
    #[error("the font of family {family:?} could not be parsed")]
    Font {
        /// The family name it was to be registered under.
        family: String,
    },
    /// An axis of the figure cannot be drawn (empty, not finite, or a logarithmic axis that
    /// does not start above zero).
    #[error("{what}: the {axis} axis {from}..{to} cannot be drawn")]
    Axis {
        /// The figure's function.
        what: &'static str,
        /// `"x"` or `"y"`.
        axis: &'static str,
        /// Where the axis starts.
        from: f64,
        /// Where it ends.
        to: f64,
    },
    /// plotters could not draw the figure or encode or write the PNG.
    #[error("drawing {what}: {reason}")]
    Draw {
        /// What was being drawn (the figure's function).
        what: &'static str,
        /// plotters' message.
        reason: String,
    },
}

/// Result with [`PlotError`].
pub type Result<T, E = PlotError> = std::result::Result<T, E>;

/// An sRGB colour, `(red, green, blue)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl From<Rgb> for RGBColor {
    fn from(c: Rgb) -> Self {
        RGBColor(c.0, c.1, c.2)
    }
}

/// The series colours, in legend order (Okabe–Ito palette, colour-blind safe).
pub const PALETTE: [Rgb; 6] = [
    Rgb(0, 114, 178),
    Rgb(213, 94, 0),
    Rgb(0, 158, 115),
    Rgb(204, 121, 167),
    Rgb(230, 159, 0),
    Rgb(86, 180, 233),
];

/// The colour of the `i`-th series (the palette, repeated).
#[must_use]
pub fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()].into()
}

/// Registers the bundled font as [`FAMILY`]; the figure functions call it first. The
/// outcome of the first call is kept: a failed registration fails every call.
///
/// # Errors
/// [`PlotError::Font`] if the bundled font does not parse.
pub fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<()>> = OnceLock::new();
    register_once(&REGISTERED, FAMILY, FONT)
}

/// Registers `bytes` as `family` the first time `cell` is asked, and returns that first
/// outcome on every call.
fn register_once(cell: &OnceLock<Result<()>>, family: &str, bytes: &'static [u8]) -> Result<()> {
    cell.get_or_init(|| {
        plotters::style::register_font(family, FontStyle::Normal, bytes).map_err(|_| {
            PlotError::Font {
                family: family.to_string(),
            }
        })
    })
    .clone()
}

/// Turns plotters' errors into [`PlotError::Draw`] for the figure `what`.
trait Drawing<T> {
    fn drawing(self, what: &'static str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Drawing<T> for std::result::Result<T, E> {
    fn drawing(self, what: &'static str) -> Result<T> {
        self.map_err(|e| PlotError::Draw {
            what,
            reason: e.to_string(),
        })
    }
}

/// A white `w × h` PNG canvas at `path`.
fn canvas<'a>(
    path: &'a std::path::Path,
    (w, h): (u32, u32),
    what: &'static str,
) -> Result<DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>> {
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).drawing(what)?;
    Ok(root)
}

/// Splits a 40-pixel strip off the bottom of `root` and writes `caption` into it (13 px);
/// returns the area above.
fn caption_strip<'a>(
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    caption: &str,
    what: &'static str,
) -> Result<DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>> {
    let (_, h) = root.dim_in_pixel();
    let (top, bottom) = root.split_vertically(h.saturating_sub(40));
    bottom
        .draw_text(
            caption,
            &TextStyle::from((FAMILY, 13).into_font()).color(&BLACK),
            (10, 12),
        )
        .drawing(what)?;
    Ok(top)
}

/// Draws the legend of `chart` at `position` with labels of `font_size` pixels, on a
/// light background with a black border.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    position: SeriesLabelPosition,
    font_size: u32,
    what: &'static str,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, font_size))
        .position(position)
        .draw()
        .drawing(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_registration_is_reported_every_time() {
        static CELL: OnceLock<Result<()>> = OnceLock::new();
        let want = Err(PlotError::Font {
            family: "gelunet-test-not-a-font".into(),
        });
        assert_eq!(
            register_once(&CELL, "gelunet-test-not-a-font", b"not a font"),
            want
        );
        // The second call must not report success (the bug of a bare `Once`).
        assert_eq!(
            register_once(&CELL, "gelunet-test-not-a-font", b"not a font"),
            want
        );
    }

    #[test]
    fn the_bundled_font_registers() {
        assert_eq!(register_font(), Ok(()));
        assert_eq!(register_font(), Ok(()));
    }

    #[test]
    fn draw_errors_name_the_figure() {
        let e = Err::<(), _>("backend gone")
            .drawing("bar_figure")
            .unwrap_err();
        assert_eq!(e.to_string(), "drawing bar_figure: backend gone");
    }
}
