//! The built-in copies of Iris, Pima and kr-vs-kp, and the unlabeled-CSV reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{assert_malformed_at, copy_edited, shared_data_dir, write_file};
use gelunet_datasets::*;

/// Without the files, the three small datasets load from the built-in copies, which give
/// exactly the datasets of the original files.
#[test]
fn builtin_copies_stand_in_for_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions::default();
    for name in ["iris", "pima", "kr-vs-kp"] {
        let (from_copy, source) = load_by_name_with_source(name, dir.path(), &opts).unwrap();
        let DataSource::Embedded(e) = source else {
            panic!("{name}: {source:?}");
        };
        assert_eq!(e.dataset, name);
        assert!(source.to_string().contains("built-in copy"), "{source}");
        let (from_file, source) =
            load_by_name_with_source(name, &shared_data_dir(), &opts).unwrap();
        assert_eq!(source, DataSource::File(shared_data_dir().join(e.file)));
        assert_eq!(from_copy, from_file, "{name}");
    }
    assert!(embedded_file("mnist").is_none());
}

/// The built-in bytes carry the digests the fetch script checks.
#[test]
fn builtin_copies_have_the_fetch_scripts_digests() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-datasets.sh");
    let script = std::fs::read_to_string(script).unwrap();
    for e in EMBEDDED_FILES {
        assert!(
            script.contains(&format!("\"{}|{}|", e.file, e.sha256)),
            "{}",
            e.file
        );
        let bytes = e.bytes().unwrap();
        let on_disk = std::fs::read(shared_data_dir().join(e.file)).unwrap();
        assert_eq!(bytes, &on_disk[..], "{}", e.file);
    }
}

/// A file that is present but malformed is an error, not a reason to use the copy.
#[test]
fn a_malformed_file_is_not_replaced_by_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    copy_edited(dir.path(), IRIS_FILE, |t| {
        t.replacen("5.1,3.5,1.4,0.2", "5.1,3.5,abc,0.2", 1)
    });
    let err = load_by_name("iris", dir.path(), &LoadOptions::default()).unwrap_err();
    assert_malformed_at(&err, 1);
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn unlabeled_rows_with_and_without_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let features = names(&["a", "b", "c"]);
    let plain = write_file(dir.path(), "plain.csv", b"1,2,3\n\n4.5, -6 ,7e1\n");
    let x = load_unlabeled_csv(&plain, &features, b',').unwrap();
    assert_eq!(x, ndarray::array![[1.0, 2.0, 3.0], [4.5, -6.0, 70.0]]);
    let header = write_file(dir.path(), "header.csv", b"a,b,c\n1,2,3\n");
    let y = load_unlabeled_csv(&header, &features, b',').unwrap();
    assert_eq!(y, ndarray::array![[1.0, 2.0, 3.0]]);
}

#[test]
fn unlabeled_rows_with_the_wrong_width_are_refused_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let features = names(&["a", "b", "c"]);
    for (file, text, line) in [
        ("short.csv", &b"1,2,3\n4,5\n"[..], 2),
        ("long.csv", b"a,b,c\n1,2,3\n1,2,3,4\n", 3),
    ] {
        let path = write_file(dir.path(), file, text);
        let err = load_unlabeled_csv(&path, &features, b',').unwrap_err();
        assert_malformed_at(&err, line);
        let msg = err.to_string();
        assert!(msg.contains(&format!("{file}:{line}")), "{msg}");
        assert!(msg.contains("3 input features (a, b, c)"), "{msg}");
    }
}

#[test]
fn bad_unlabeled_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let features = names(&["a", "b"]);
    // A header naming other columns (here: swapped) is refused.
    let swapped = write_file(dir.path(), "swapped.csv", b"b,a\n1,2\n");
    let err = load_unlabeled_csv(&swapped, &features, b',').unwrap_err();
    assert_malformed_at(&err, 1);
    assert!(err.to_string().contains("header"), "{err}");
    // A text field in a data row.
    let text = write_file(dir.path(), "text.csv", b"1,2\n3,x\n");
    let err = load_unlabeled_csv(&text, &features, b',').unwrap_err();
    assert_malformed_at(&err, 2);
    assert!(err.to_string().contains("field 2 (b)"), "{err}");
    // No data rows.
    let empty = write_file(dir.path(), "empty.csv", b"a,b\n");
    let err = load_unlabeled_csv(&empty, &features, b',').unwrap_err();
    assert_malformed_at(&err, 0);
    // A missing file.
    let err = load_unlabeled_csv(&dir.path().join("nope.csv"), &features, b',').unwrap_err();
    assert!(matches!(err, DatasetError::MissingFile { .. }), "{err}");
}
