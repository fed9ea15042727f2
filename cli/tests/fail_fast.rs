//! Fail fast (issue #13): bad data and bad output paths are refused before any key is
//! generated, with the file, row and column; MNIST (pixels in [0, 1]) trains through the
//! issue's command without leaving the fixed-point range.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::time::Duration;

use net_support::{read_json, run, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// `gelunet train --dataset csv:FILE` with a `nan` cell exits non-zero with a one-line
/// error naming the file, the row and the column, encrypted or not; so do `inf` and an
/// empty field.
#[test]
fn train_refuses_a_csv_with_a_nan_cell_naming_row_and_column() {
    let dir = TempDir::new("nan-csv");
    let cases = [
        ("nan", "row 4, column 1 (b)"),
        ("inf", "row 4, column 1 (b)"),
        ("", "row 4, column 1 (b)"),
    ];
    for (cell, expected) in cases {
        let csv = dir.join("data.csv");
        let mut text = String::from("a,b,y\n1,2,0\n3,4,1\n");
        text.push_str(&format!("5,{cell},0\n"));
        for i in 0..20 {
            text.push_str(&format!("{i},{},{}\n", i * 2, i % 2));
        }
        std::fs::write(&csv, text).unwrap();
        let dataset = format!("csv:{}", csv.display());
        for extra in [&["--plaintext"][..], &TEST_KEYS[..]] {
            let mut p = run(
                "train nan",
                &[&["train", "--dataset", &dataset, "--quiet"][..], extra].concat(),
            );
            assert!(!p.wait(MIN).success(), "{cell:?} accepted");
            let err = p.stderr();
            assert!(err.contains(expected), "{cell:?}: {err}");
            assert!(err.contains("data.csv"), "{err}");
        }
    }
}

/// Labels of one class, fewer samples than clients, and an unwritable report path: each
/// a clear error before any work.
#[test]
fn train_refuses_too_little_data_and_unwritable_outputs() {
    let dir = TempDir::new("little");
    let one_class = dir.join("one.csv");
    std::fs::write(&one_class, "a,y\n1,0\n2,0\n3,0\n4,0\n5,0\n").unwrap();
    let few = dir.join("few.csv");
    std::fs::write(&few, "a,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n").unwrap();
    let (one_class, few) = (
        format!("csv:{}", one_class.display()),
        format!("csv:{}", few.display()),
    );
    let missing = dir.join("no-such-dir").join("report.json");
    let iris = ["--dataset", "iris"];
    let report = [
        &iris[..],
        &["--report", missing.to_str().unwrap()],
        &TEST_KEYS[..],
    ]
    .concat();
    let model_out = [
        &iris[..],
        &["--plaintext", "--model-out", dir.path().to_str().unwrap()],
    ]
    .concat();
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "one class",
            &["--dataset", &one_class, "--plaintext"],
            &["single class"],
        ),
        (
            "few samples",
            &["--dataset", &few, "--clients", "9", "--plaintext"],
            &["cannot be shared among 9 clients"],
        ),
        ("unwritable report", &report, &["--report", "no-such-dir"]),
        ("directory as model", &model_out, &["--model-out"]),
    ];
    for (name, args, needles) in cases {
        let mut p = run(name, &[&["train", "--quiet"][..], args].concat());
        assert!(!p.wait(MIN).success(), "{name} accepted");
        let err = p.stderr();
        assert!(needles.iter().all(|n| err.contains(n)), "{name}: {err}");
    }
    assert!(!missing.exists());
}

/// `train` on MNIST with `hidden` units and `clients` clients, on the first `max_train`
/// training and `max_test` test samples, in mini-batches of 8; the run's other flags
/// follow.
fn mnist_train(
    hidden: &'static str,
    clients: &'static str,
    max_train: &'static str,
    max_test: &'static str,
) -> [&'static str; 13] {
    [
        "train",
        "--dataset",
        "mnist",
        "--hidden",
        hidden,
        "--clients",
        clients,
        "--max-train",
        max_train,
        "--max-test",
        max_test,
        "--batch-size",
        "8",
    ]
}

/// The issue's MNIST command (`--hidden 128 --clients 3 --max-train 2000 --max-test 500
/// --batch-size 8 --sessions 2`) passes every check and completes with its report. Here
/// through the plaintext fixed-point reference (the same data, checks, sessions and
/// model as the encrypted run, without its hours of Paillier work); the encrypted path on
/// MNIST is covered by the smaller run below.
#[test]
fn the_issue_mnist_command_completes_and_writes_its_report() {
    let dir = TempDir::new("mnist");
    let report = dir.join("report.json");
    let model = dir.join("model.bin");
    let mut p = run(
        "train mnist",
        &[
            &mnist_train("128", "3", "2000", "500")[..],
            &["--sessions", "2", "--plaintext", "--quiet"],
            &["--report", report.to_str().unwrap()],
            &["--model-out", model.to_str().unwrap()],
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    let r = read_json(&report);
    assert_eq!(r["dataset"], "mnist");
    assert_eq!(r["sessions"], 2);
    assert_eq!(r["train_samples"], 2000);
    assert_eq!(r["test_samples"], 500);
    assert!(r["test_accuracy"].as_f64().unwrap() > 0.0, "{r}");
    assert!(model.exists());
}

/// Encrypted training on MNIST pixels in [0, 1] (small: 16 hidden units, one session):
/// the report is written and the model equals the plaintext reference exactly.
#[test]
fn encrypted_mnist_training_stays_in_range_and_is_exact() {
    let dir = TempDir::new("mnist-enc");
    let report = dir.join("report.json");
    let mut p = run(
        "train mnist encrypted",
        &[
            &mnist_train("16", "2", "200", "100")[..],
            &["--sessions", "1", "--quiet"],
            &TEST_KEYS[..],
            &["--report", report.to_str().unwrap()],
        ]
        .concat(),
    );
    p.expect_success(5 * MIN);
    let r = read_json(&report);
    assert_eq!(r["sessions"], 1);
    assert_eq!(r["test_samples"], 100);
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
}
