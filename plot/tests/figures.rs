//! Every figure is written as a PNG that decodes with the documented size.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use gelunet_plot::{
    bar_figure, image_grid, line_figure, log_line_figure, BarGroup, ImageRow, LogFigure, Mark,
    Panel, PlotError, Rgb, Series,
};
use ndarray::Array1;

/// `(width, height)` of the PNG at `path`, and whether any pixel is not white.
fn decode(path: &Path) -> (u32, u32, bool) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let inked = buf[..info.buffer_size()].iter().any(|&b| b != 255);
    (info.width, info.height, inked)
}

fn series(name: &str, ys: &[f64]) -> Series {
    Series {
        name: name.into(),
        points: ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect(),
    }
}

#[test]
fn line_figure_is_560_by_460_per_panel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.png");
    let panel = |title: &str| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        y_max: 2.0,
        // A diverging series (NaN) ends in a cross; values above the top are clipped.
        series: vec![
            series("a", &[1.0, 0.5, 0.25]),
            series("b", &[1.0, 3.0, f64::NAN]),
        ],
    };
    line_figure(&path, &[panel("one"), panel("two")], "caption").unwrap();
    assert_eq!(decode(&path), (1120, 460, true));
}

#[test]
fn log_line_figure_is_820_by_520() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.png");
    let figure = LogFigure {
        title: "error".into(),
        x_label: "samples".into(),
        y_label: "relative error".into(),
        x_range: (0.5, 6.5),
        y_floor: 1e-16,
        marks: vec![Mark {
            x: 4.0,
            label: "bound".into(),
            color: Rgb(200, 0, 0),
        }],
        series: vec![series("s", &[1.0, 0.1, 1e-20, f64::NAN, 1e-12])],
    };
    log_line_figure(&path, &figure).unwrap();
    assert_eq!(decode(&path), (820, 520, true));
    // A floor that is not positive cannot be drawn on a log axis, nor an empty X range;
    // nothing is written.
    let bad = dir.path().join("bad.png");
    let zero_floor = LogFigure {
        y_floor: 0.0,
        ..figure.clone()
    };
    assert!(matches!(
        log_line_figure(&bad, &zero_floor),
        Err(PlotError::Axis { axis: "y", .. })
    ));
    let empty_x = LogFigure {
        x_range: (2.0, 2.0),
        ..figure
    };
    assert!(matches!(
        log_line_figure(&bad, &empty_x),
        Err(PlotError::Axis { axis: "x", .. })
    ));
    assert!(!bad.exists());
}

#[test]
fn bar_figure_is_900_by_500() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.png");
    let groups = vec![
        BarGroup {
            label: "iris".into(),
            bars: vec![(0.9, 0.02), (0.8, f64::NAN)],
        },
        BarGroup {
            label: "pima".into(),
            bars: vec![(0.7, 0.05), (f64::NAN, 0.0)],
        },
    ];
    let legend = vec!["x".to_string(), "y".to_string()];
    bar_figure(&path, "t", "accuracy", &legend, &groups, (0.0, 1.0), "c").unwrap();
    assert_eq!(decode(&path), (900, 500, true));
}

#[test]
fn image_grid_size_follows_rows_columns_and_side() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    let side = 3;
    let img = |k: f64| Array1::from_iter((0..side * side).map(|i| k * i as f64));
    let rows = vec![
        ImageRow {
            label: "first".into(),
            images: vec![img(1.0), img(-1.0), img(0.0)],
        },
        ImageRow {
            label: "second".into(),
            images: vec![Array1::from_elem(side * side, f64::NAN)],
        },
    ];
    image_grid(&path, &rows, side, "caption").unwrap();
    let cell = 4 * side as u32 + 8;
    assert_eq!(decode(&path), (340 + 3 * cell, 60 + 2 * cell, true));
}

#[test]
fn an_unwritable_path_is_a_draw_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("x.png");
    let e = image_grid(&path, &[], 2, "c").unwrap_err();
    assert!(
        matches!(
            e,
            PlotError::Draw {
                what: "image_grid",
                ..
            }
        ),
        "{e:?}"
    );
}
