//! `--lr-schedule` through the command line (docs/DESIGN.md "Learning-rate schedule"): a
//! scheduled run trains encrypted to the model file `--plaintext` writes, byte for byte,
//! which differs from the constant-rate model; the report names the schedule; bad
//! schedules are refused before any work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::time::Duration;

use net_support::{read_json, run, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// Iris, 12 sessions (with B = 4 and 3 clients about 0.4 epochs), a step every 0.1 epoch.
fn train(dir: &TempDir, tag: &str, schedule: &str, extra: &[&str]) -> Vec<u8> {
    let report = dir.join(&format!("{tag}.json"));
    let model = dir.join(&format!("{tag}.model"));
    let mut p = run(
        tag,
        &[
            &["train", "--dataset", "iris", "--sessions", "12", "--quiet"][..],
            &["--lr-schedule", schedule],
            &["--report", report.to_str().unwrap()],
            &["--model-out", model.to_str().unwrap()],
            extra,
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    let r = read_json(&report);
    assert_eq!(r["lr_schedule"], schedule, "{r}");
    assert_eq!(r["sessions"], 12, "{r}");
    if !extra.contains(&"--plaintext") {
        assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    }
    std::fs::read(&model).unwrap()
}

#[test]
fn a_scheduled_run_trains_encrypted_to_the_reference_model() {
    let dir = TempDir::new("lr-schedule");
    let plain = train(&dir, "plain", "step:0.5:0.1", &["--plaintext"]);
    let encrypted = train(&dir, "encrypted", "step:0.5:0.1", &TEST_KEYS);
    assert_eq!(
        encrypted, plain,
        "the encrypted scheduled run is the reference"
    );
    let paper = train(
        &dir,
        "paper",
        "step:0.5:0.1",
        &[&TEST_KEYS[..], &["--protocol", "paper"]].concat(),
    );
    assert_eq!(paper, plain, "the paper's protocol applies the same rates");
    let constant = train(&dir, "constant", "constant", &["--plaintext"]);
    assert_ne!(constant, plain, "the schedule changed the model");
}

#[test]
fn bad_schedules_are_refused_before_any_work() {
    for (schedule, needle) in [
        ("step:2:1", "not in (0, 1]"),
        ("cosine", "expected constant"),
        ("cosine:0", "not a positive number"),
        ("exp:0.9", "expected constant"),
    ] {
        let mut p = run(
            "bad schedule",
            &["train", "--dataset", "iris", "--lr-schedule", schedule],
        );
        let e = p.expect_failure(MIN);
        assert!(
            e.contains("--lr-schedule") && e.contains(needle),
            "{schedule}: {e}"
        );
    }
}
