//! One stop rule (`gelunet_server::StopRule`) for `train` and `train --plaintext`, run as a
//! user would: `--epochs` and `--sessions` stop both modes after the same sessions, the
//! report says why, and limits that would train nothing are refused before any work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::time::Duration;

use net_support::{gelunet, read_json, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// Trains on Iris with 3 clients, encrypted (test keys) or `--plaintext`; returns the
/// report and the model file's bytes.
fn train(dir: &TempDir, plaintext: bool, limits: &[&str]) -> (serde_json::Value, Vec<u8>) {
    let tag = format!(
        "{}-{}",
        if plaintext { "plain" } else { "enc" },
        limits.join("")
    );
    let report = dir.join(&format!("{tag}.json"));
    let model = dir.join(&format!("{tag}.model"));
    let mode: &[&str] = if plaintext { &["--plaintext"] } else { &[] };
    let mut cmd = gelunet();
    cmd.args(["train", "--dataset", "iris", "--clients", "3", "--quiet"])
        .args(limits)
        .args(mode)
        .args(TEST_KEYS)
        .arg("--report")
        .arg(&report)
        .arg("--model-out")
        .arg(&model);
    let mut p = Proc::spawn(&tag, cmd);
    p.expect_success(3 * MIN);
    (read_json(&report), std::fs::read(&model).unwrap())
}

/// Both modes with the same limits: the same sessions, stop reason and model.
fn both(limits: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let dir = TempDir::new("stop");
    let (plain, plain_model) = train(&dir, true, limits);
    let (enc, enc_model) = train(&dir, false, limits);
    assert_eq!(
        plain["sessions"], enc["sessions"],
        "{limits:?}\n{plain}\n{enc}"
    );
    assert_eq!(plain["stop_reason"], enc["stop_reason"], "{limits:?}");
    assert_eq!(plain["samples_processed"], enc["samples_processed"]);
    assert_eq!(enc["max_abs_weight_diff"].as_f64(), Some(0.0), "{enc}");
    assert_eq!(plain_model, enc_model, "{limits:?}: the same model");
    (plain, enc)
}

#[test]
fn sessions_reached_before_the_epochs_stop_both_modes() {
    let (plain, enc) = both(&["--epochs", "100", "--sessions", "7"]);
    for r in [&plain, &enc] {
        assert_eq!(r["sessions"], 7, "{r}");
        assert_eq!(r["stop_reason"], "7 sessions completed", "{r}");
        assert_eq!(r["epochs"], 100);
        assert_eq!(r["max_sessions"], 7);
    }
}

#[test]
fn sessions_alone_train_exactly_that_many() {
    let (plain, enc) = both(&["--sessions", "5"]);
    for r in [&plain, &enc] {
        assert_eq!(r["sessions"], 5, "{r}");
        assert_eq!(r["stop_reason"], "5 sessions completed");
        assert!(
            r["epochs"].is_null(),
            "no epoch limit with --sessions alone: {r}"
        );
    }
}

#[test]
fn epochs_alone_stop_at_the_epoch_target() {
    let (plain, enc) = both(&["--epochs", "1"]);
    for r in [&plain, &enc] {
        // One epoch: the 120 training samples of Iris (80/20 split).
        assert_eq!(r["stop_reason"], "120 samples processed", "{r}");
        assert!(r["samples_processed"].as_u64().unwrap() >= 120);
        assert!(r["max_sessions"].is_null());
    }
}

/// An epoch target reached before a generous session limit stops both modes (the
/// plaintext mode used to drop the epoch target when --sessions was given).
#[test]
fn epochs_reached_before_the_sessions_stop_both_modes() {
    let (plain, enc) = both(&["--epochs", "1", "--sessions", "1000"]);
    for r in [&plain, &enc] {
        assert_eq!(r["stop_reason"], "120 samples processed", "{r}");
        assert!(r["sessions"].as_u64().unwrap() < 1000, "{r}");
    }
}

/// `--epochs 0` and `--sessions 0` are refused with a message naming the option, before
/// the data is even looked at (so before any key is generated).
#[test]
fn limits_that_train_nothing_are_refused() {
    let dir = TempDir::new("stop-refused");
    let nowhere = dir.join("no-data");
    for (limits, needle) in [
        (&["--epochs", "0"][..], "--epochs"),
        (&["--epochs", "0", "--sessions", "4"], "--epochs"),
        (&["--sessions", "0"], "--sessions"),
        (&["--epochs", "2", "--sessions", "0"], "--sessions"),
    ] {
        for plaintext in [false, true] {
            let mut cmd = gelunet();
            cmd.args(["train", "--dataset", "iris", "--data-dir"])
                .arg(&nowhere)
                .args(limits)
                .args(TEST_KEYS);
            if plaintext {
                cmd.arg("--plaintext");
            }
            let mut p = Proc::spawn("refused", cmd);
            assert!(!p.wait(MIN).success(), "{limits:?} was accepted");
            let err = p.stderr();
            assert!(err.contains(needle), "{limits:?}: {err}");
            assert!(!err.contains("iris.data"), "checked before the data: {err}");
        }
    }
}

#[test]
fn help_states_the_stop_rule() {
    let out = gelunet().args(["train", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).replace(char::is_whitespace, " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("per dataset, see below, when --sessions is not given"),
        "{help}"
    );
    assert!(help.contains("iris 8 epochs, --lr 0.2"), "{help}");
    assert!(help.contains("whichever limit comes first"), "{help}");
}
