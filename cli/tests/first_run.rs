//! A newcomer's first commands: `gelunet train` with no arguments (built-in Iris, three
//! clients, 2048-bit keys, no data directory) and `gelunet infer --input` on new,
//! unlabeled samples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::process::Command;
use std::time::Duration;

use net_support::{gelunet, iris_test_rows_csv, read_json, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// The percentage after `label` in the summary (`test accuracy 96.67% …`), as a fraction.
fn percent_after(text: &str, label: &str) -> f64 {
    let rest = &text[text
        .find(label)
        .unwrap_or_else(|| panic!("{label}: {text}"))
        + label.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse::<f64>().unwrap() / 100.0
}

/// `gelunet train` alone, from a directory without data and without `GELUNET_DATA_DIR`:
/// it trains the built-in Iris with 3 clients and 2048-bit keys, says so, and the model
/// is good (test accuracy ≥ 0.93) and equals the plaintext reference exactly.
#[test]
fn train_without_arguments_trains_builtin_iris_with_2048_bit_keys() {
    let dir = TempDir::new("first-run");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gelunet"));
    cmd.arg("train")
        .current_dir(dir.path())
        .env_remove("GELUNET_DATA_DIR")
        .env_remove("RUST_LOG");
    let mut p = Proc::spawn("train", cmd);
    p.expect_success(5 * MIN);
    let out = p.stdout();
    assert!(
        out.contains("trained on iris with 3 clients, 2048-bit keys"),
        "{out}"
    );
    assert!(out.contains("built-in copy of iris/iris.data"), "{out}");
    assert!(
        out.contains("defaults used: dataset iris, 8 epochs"),
        "{out}"
    );
    assert!(out.contains("mini-batch 4, learning rate 0.2"), "{out}");
    assert!(
        out.contains("120 training samples, 30 test samples"),
        "{out}"
    );
    let acc = percent_after(&out, "test accuracy");
    let reference = percent_after(&out, "plaintext fixed-point reference");
    assert!(acc >= 0.93, "test accuracy {acc}: {out}");
    assert_eq!(acc, reference, "{out}");
    assert!(out.contains("max |w - w_ref| = 0\n"), "{out}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written without --model-out / --report"
    );
}

/// `infer --input` on the raw, unlabeled test rows gives, row for row, the classes and
/// probabilities of `infer --dataset iris --split test`; a row with the wrong number of
/// columns is refused naming the row.
#[test]
fn infer_on_an_unlabeled_csv_matches_infer_on_the_same_rows() {
    let dir = TempDir::new("infer-input");
    let model = dir.join("model.bin");
    let mut p = Proc::spawn("train", {
        let mut c = gelunet();
        c.args(["train", "--dataset", "iris", "--clients", "2", "--quiet"])
            .args(["--sessions", "12", "--seed", "4"])
            .args(TEST_KEYS)
            .arg("--model-out")
            .arg(&model);
        c
    });
    p.expect_success(3 * MIN);
    // The raw test rows of the model's split (seed 4, 20%), with a header.
    let input = dir.join("new.csv");
    std::fs::write(&input, iris_test_rows_csv(4)).unwrap();
    let infer = |name: &str, what: &[&str], output: &std::path::Path| {
        let mut c = gelunet();
        c.args(["infer", "--model", model.to_str().unwrap(), "--batch", "8"])
            .args(what)
            .args(TEST_KEYS)
            .arg("--output")
            .arg(output)
            .arg("--quiet");
        let mut p = Proc::spawn(name, c);
        p.expect_success(2 * MIN);
        p
    };
    let new_json = dir.join("new.json");
    let p = infer("input", &["--input", input.to_str().unwrap()], &new_json);
    assert!(
        p.stdout().contains("classified 30 unlabeled samples"),
        "{}",
        p.stdout()
    );
    // The latency of the 4 request batches (8, 8, 8 and 6 samples).
    assert!(
        p.stdout()
            .contains(" ms per request of 8 samples (median; slowest "),
        "{}",
        p.stdout()
    );
    let split_json = dir.join("split.json");
    infer(
        "split",
        &["--dataset", "iris", "--split", "test"],
        &split_json,
    );
    let (new, split) = (read_json(&new_json), read_json(&split_json));
    assert_eq!(new["classes"], split["classes"]);
    assert_eq!(new["predictions"].as_array().unwrap().len(), 30);
    assert_eq!(new["predictions"], split["predictions"]);
    // Preprocessed (one sample per request, layers prepared on one-time masks over the
    // same QUIC connection): the same predictions, every layer from a preparation.
    let pre_json = dir.join("pre.json");
    let pre_report = dir.join("pre-report.json");
    let mut c = gelunet();
    c.args(["infer", "--model", model.to_str().unwrap(), "--preprocess"])
        .args(["--dataset", "iris", "--split", "test"])
        .args(TEST_KEYS)
        .arg("--output")
        .arg(&pre_json)
        .arg("--report")
        .arg(&pre_report)
        .arg("--quiet");
    Proc::spawn("preprocess", c).expect_success(2 * MIN);
    assert_eq!(read_json(&pre_json)["predictions"], split["predictions"]);
    let r = read_json(&pre_report);
    assert_eq!(r["prepared_layers"], 60, "2 layers × 30 samples: {r}");
    assert_eq!(r["requests"], 60);
    // Per-sample timings: the online part and the preparation, each within the command.
    assert_eq!(r["batch"], 1);
    let secs = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
    let (median, max, total) = (
        secs("median_batch_secs"),
        secs("max_batch_secs"),
        secs("seconds"),
    );
    assert!(0.0 < median && median <= max && max < total, "{r}");
    let prep = secs("median_preparation_secs");
    assert!(0.0 < prep && prep < total, "{r}");
    let mut c = gelunet();
    c.args(["infer", "--model", model.to_str().unwrap(), "--preprocess"])
        .args(["--batch", "4", "--dataset", "iris"])
        .args(TEST_KEYS);
    let err = Proc::spawn("preprocess batch", c).expect_failure(MIN);
    assert!(err.contains("cannot be used with"), "{err}");
    // The CSV form: a header and one line per row, the same classes.
    let new_csv = dir.join("new-preds.csv");
    infer("input csv", &["--input", input.to_str().unwrap()], &new_csv);
    let text = std::fs::read_to_string(&new_csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "sample,predicted,Iris-setosa,Iris-versicolor,Iris-virginica"
    );
    assert_eq!(lines.len(), 31);
    for (i, line) in lines[1..].iter().enumerate() {
        let class = &split["predictions"][i]["class"];
        assert!(
            line.starts_with(&format!("{i},{}", class.as_str().unwrap())),
            "{line}"
        );
    }
    // A row with three fields instead of four.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "5.1,3.5,1.4,0.2\n6.2,2.9,4.3\n").unwrap();
    let mut c = gelunet();
    c.args(["infer", "--model", model.to_str().unwrap(), "--input"])
        .arg(&bad)
        .args(TEST_KEYS);
    let mut p = Proc::spawn("bad", c);
    let err = p.expect_failure(MIN);
    assert!(err.contains("bad.csv:2:"), "{err}");
    assert!(err.contains("row has 3 fields, the model takes 4"), "{err}");
}
