//! The generic CSV loader's options, on small files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::{assert_malformed_at, write_file};
use gelunet_datasets::*;

fn load(contents: &str, opts: &CsvOptions) -> Result<Dataset> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "small.csv", contents.as_bytes());
    load_csv(&path, opts)
}

/// [`load`] with the default options changed by `set`.
fn load_with(contents: &str, set: impl FnOnce(&mut CsvOptions)) -> Result<Dataset> {
    let mut opts = CsvOptions::default();
    set(&mut opts);
    load(contents, &opts)
}

#[test]
fn defaults_last_column_label_no_header() {
    let ds = load("1,2,a\n3,4,b\n\n5,6,a\n", &CsvOptions::default()).unwrap();
    assert_eq!(ds.name, "small");
    assert_eq!(ds.features.dim(), (3, 2));
    assert_eq!(ds.features.row(2).to_vec(), vec![5.0, 6.0]);
    assert_eq!(ds.labels, vec![0, 1, 0]);
    assert_eq!(ds.class_names, vec!["a", "b"]);
    assert_eq!(ds.feature_names, vec!["col0", "col1"]);
}

#[test]
fn label_column_negative_and_positive_index() {
    let text = "x,1.5,10\ny,2.5,20\nx,3.5,10\n";
    let a = load_with(text, |o| o.label_column = -3).unwrap();
    let b = load_with(text, |o| o.label_column = 0).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.labels, vec![0, 1, 0]);
    assert_eq!(a.features.dim(), (3, 2));
    assert_eq!(a.features.column(0).to_vec(), vec![1.5, 2.5, 3.5]);

    // -2 = middle column: numeric labels in numeric (not string) order.
    let c = load_with("1,10,0\n2,9,0\n3,10,0\n", |o| o.label_column = -2).unwrap();
    assert_eq!(c.class_names, vec!["9", "10"]);
    assert_eq!(c.labels, vec![1, 0, 1]);

    let err = load_with(text, |o| o.label_column = -4).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }), "{err}");
    let err = load_with(text, |o| o.label_column = 3).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }), "{err}");
}

#[test]
fn ignore_columns() {
    let opts = CsvOptions {
        ignore_columns: vec![0, -2],
        header: Some(true),
        ..CsvOptions::default()
    };
    let ds = load("id,a,b,junk,y\n1,0.5,7,zz,p\n2,1.5,8,qq,n\n", &opts).unwrap();
    assert_eq!(ds.feature_names, vec!["a", "b"]);
    assert_eq!(ds.features.row(1).to_vec(), vec![1.5, 8.0]);
    assert_eq!(ds.class_names, vec!["n", "p"]);
    assert_eq!(ds.labels, vec![1, 0]);

    let err = load_with("1,2,3\n", |o| o.ignore_columns = vec![-1]).unwrap_err();
    assert!(
        matches!(err, DatasetError::BadOption { .. }),
        "label ignored: {err}"
    );
    let err = load_with("1,2,3\n", |o| o.ignore_columns = vec![5]).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }), "{err}");
}

#[test]
fn header_auto_detection() {
    // A header with names over numeric columns is detected.
    let ds = load("len,width,class\n1,2,a\n3,4,b\n", &CsvOptions::default()).unwrap();
    assert_eq!(ds.n_samples(), 2);
    assert_eq!(ds.feature_names, vec!["len", "width"]);
    // Header over a numeric label column only is detected too.
    let ds = load("color,y\nred,0\nblue,1\n", &CsvOptions::default()).unwrap();
    assert_eq!(ds.n_samples(), 2);
    assert_eq!(ds.feature_names, vec!["color=blue", "color=red"]);
    // All-numeric first row: no header.
    let ds = load("1,2,0\n3,4,1\n", &CsvOptions::default()).unwrap();
    assert_eq!(ds.n_samples(), 2);
    assert_eq!(ds.feature_names, vec!["col0", "col1"]);
    // A text field over an ignored column is not a reason to detect a header.
    let text = "id,1,0\n7,2,1\n";
    assert_eq!(load(text, &CsvOptions::default()).unwrap().n_samples(), 1);
    let ds = load_with(text, |o| o.ignore_columns = vec![0]).unwrap();
    assert_eq!(ds.n_samples(), 2);
}

#[test]
fn header_forced() {
    // Forced header on an all-numeric first row drops that row.
    let ds = load_with("1,2,0\n3,4,1\n5,6,1\n", |o| o.header = Some(true)).unwrap();
    assert_eq!(ds.n_samples(), 2);
    assert_eq!(ds.feature_names, vec!["1", "2"]);
    // Forced no-header on a text first row keeps it: the column becomes text
    // and is one-hot encoded... unless it is mostly numeric, which is an error.
    let err = load_with("a,b,y\n1,2,0\n3,4,1\n", |o| o.header = Some(false)).unwrap_err();
    assert_malformed_at(&err, 1);
}

#[test]
fn text_column_one_hot_sorted() {
    let ds = load(
        "size,color,y\n1,red,0\n2,green,1\n3,blue,0\n4,red,1\n",
        &CsvOptions::default(),
    )
    .unwrap();
    assert_eq!(
        ds.feature_names,
        vec!["size", "color=blue", "color=green", "color=red"]
    );
    assert_eq!(ds.features.dim(), (4, 4));
    assert_eq!(ds.features.row(0).to_vec(), vec![1.0, 0.0, 0.0, 1.0]);
    assert_eq!(ds.features.row(1).to_vec(), vec![2.0, 0.0, 1.0, 0.0]);
    assert_eq!(ds.features.row(2).to_vec(), vec![3.0, 1.0, 0.0, 0.0]);
    assert_eq!(ds.labels, vec![0, 1, 0, 1]);
}

#[test]
fn malformed_csv_inputs() {
    let err = load("1,2,a\n3,b\n", &CsvOptions::default()).unwrap_err();
    assert_malformed_at(&err, 2);
    let err = load("1,2,a\n3,?,b\n4,5,a\n6,7,b\n", &CsvOptions::default()).unwrap_err();
    assert_malformed_at(&err, 2);
    assert!(err.to_string().contains("\"?\""), "{err}");
    let err = load("\n\n", &CsvOptions::default()).unwrap_err();
    assert!(matches!(err, DatasetError::Malformed { .. }), "{err}");
    // An empty label is an empty field: refused with its row and column.
    let err = load("1,2,a\n3,4,\n", &CsvOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::BadValue {
                line: 2,
                column: 2,
                ..
            }
        ),
        "{err}"
    );
}

/// `nan`, `inf` and empty fields are refused with the file, the row and the column, in
/// numeric and text columns alike (`nan` no longer becomes a category), but not in
/// ignored columns.
#[test]
fn non_finite_and_empty_fields_are_refused() {
    let cases = [
        ("a,b,y\n1,2,0\n3,nan,1\n5,6,0\n", 3, 1, "\"nan\""),
        ("a,b,y\n1,2,0\n3,4,1\ninf,6,0\n", 4, 0, "\"inf\""),
        ("a,b,y\n1,-Infinity,0\n3,4,1\n", 2, 1, "\"-Infinity\""),
        ("a,b,y\n1,,0\n3,4,1\n", 2, 1, "empty field"),
        // A text column whose values are mostly `NaN` used to be one-hot encoded.
        ("a,b,y\nx,NaN,0\ny,NaN,1\nz,1,0\n", 2, 1, "\"NaN\""),
        ("a,b,y\n1,2,0\n3,4,nan\n", 3, 2, "\"nan\""),
    ];
    for (text, row, col, what) in cases {
        let err = load(text, &CsvOptions::default()).unwrap_err();
        match &err {
            DatasetError::BadValue { line, column, .. } => {
                assert_eq!((*line, *column), (row, col), "{text:?}: {err}");
            }
            other => panic!("{text:?}: expected BadValue, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("row {row}, column {col}")), "{msg}");
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("small.csv"), "{msg}");
    }
    // An ignored column may hold anything.
    let ds = load_with("a,b,y\n1,nan,0\n3,,1\n", |o| o.ignore_columns = vec![1]).unwrap();
    assert_eq!(ds.n_samples(), 2);
}
