//! `gelunet train --state-dir` / `--resume` through the real binary (docs/DESIGN.md
//! "Checkpoint and resume"): a run stopped by SIGTERM and later killed with SIGKILL,
//! resumed each time, ends with the model file of an uninterrupted run, byte for byte;
//! the key files are mode 0600; and `--resume` refuses a missing directory, a corrupt
//! file, a foreign group key and other options, leaving every file as it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::path::Path;
use std::time::{Duration, Instant};

use net_support::{gelunet, output_ok, read_json, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);
const SESSIONS: &str = "120";

/// The options of every run of these tests (`sessions` sessions of Iris, seed 7).
fn options(sessions: &str) -> Vec<&str> {
    [
        &TEST_KEYS[..],
        &["--dataset", "iris", "--seed", "7", "--sessions", sessions],
    ]
    .concat()
}

/// A `gelunet train` with `options`, then `extra`, its model written to `model`.
fn train(name: &str, options: &[&str], extra: &[&str], model: &Path) -> Proc {
    let mut cmd = gelunet();
    cmd.arg("train")
        .args(options)
        .args(extra)
        .arg("--model-out")
        .arg(model)
        .env("RUST_LOG", "gelunet_shell=info");
    Proc::spawn(name, cmd)
}

/// Completed sessions in the checkpoint of `state`, if there is a readable one.
fn checkpointed(state: &Path) -> Option<u64> {
    let path = state.join(gelunet_run::CHECKPOINT_FILE);
    gelunet_run::load_checkpoint(&path)
        .ok()
        .map(|f| f.checkpoint.completed)
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file of the state directory and its contents, to check nothing was rewritten.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn train_interrupted_by_sigterm_and_sigkill_resumes_to_the_uninterrupted_model_file() {
    let dir = TempDir::new("train-resume");
    let whole = dir.join("whole.bin");
    train("train", &options(SESSIONS), &[], &whole).expect_success(3 * MIN);

    // SIGTERM once two sessions are checkpointed.
    let state = dir.join("state");
    let state_s = state.to_str().unwrap();
    let model = dir.join("resumed.bin");
    let report = dir.join("report.json");
    let mut first = train(
        "train --state-dir",
        &options(SESSIONS),
        &["--state-dir", state_s, "--report", report.to_str().unwrap()],
        &model,
    );
    wait_until(3 * MIN, "two checkpointed sessions", || {
        checkpointed(&state).is_some_and(|n| n >= 2)
    });
    first.terminate();
    let status = first.wait(MIN);
    assert!(!status.success(), "exited successfully after SIGTERM");
    let err = first.stderr();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].starts_with("error: interrupted: "), "{err}");
    assert!(
        errors[0].contains(&format!("gelunet train --resume {state_s}")),
        "{err}"
    );
    assert_eq!(read_json(&report)["partial"], true);
    assert!(!model.exists(), "a model after an interrupt");
    let stopped_at = checkpointed(&state).unwrap();
    assert!(stopped_at < 120, "{stopped_at}");
    #[cfg(unix)]
    for f in [
        "checkpoint.bin",
        "group.key",
        "client-0.key",
        "client-1.key",
        "client-2.key",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }

    // A fresh run in the same directory is refused: it would replace the keys.
    let before = files(&state);
    let out = gelunet()
        .arg("train")
        .args(options(SESSIONS))
        .args(["--state-dir", state_s])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--resume"), "{e}");
    assert_eq!(files(&state), before, "a refused run changed the state");

    // Resumed, then killed (SIGKILL) two sessions later.
    let mut second = train(
        "train --resume",
        &options(SESSIONS),
        &["--resume", state_s],
        &model,
    );
    wait_until(3 * MIN, "two more checkpointed sessions", || {
        checkpointed(&state).is_some_and(|n| n >= stopped_at + 2)
    });
    second.kill();
    assert!(!model.exists(), "a model after a kill");

    // Resumed to the end: the uninterrupted run's model file.
    let mut third = train(
        "train --resume (2)",
        &options(SESSIONS),
        &["--resume", state_s],
        &model,
    );
    third.expect_success(3 * MIN);
    assert!(third.stderr().contains("rejoined"), "{}", third.stderr());
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&whole).unwrap(),
        "the resumed model file differs from the uninterrupted run's"
    );
}

#[test]
fn train_resume_refuses_missing_corrupt_foreign_or_mismatched_state() {
    let dir = TempDir::new("train-resume-refused");
    let resume = |state: &Path, extra: &[&str]| -> String {
        let mut args = options("2");
        if extra.contains(&"--key-bits") {
            args.drain(..2);
        }
        let out = gelunet()
            .arg("train")
            .args(args)
            .args(extra)
            .arg("--resume")
            .arg(state)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(e.trim().lines().count(), 1, "not one line: {e}");
        e
    };
    // A missing directory.
    let e = resume(&dir.join("nowhere"), &[]);
    assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");

    // Two finished runs of one session each, with their state.
    let (a, b) = (dir.join("a"), dir.join("b"));
    for state in [&a, &b] {
        let mut cmd = gelunet();
        cmd.arg("train")
            .args(options("1"))
            .arg("--state-dir")
            .arg(state)
            .arg("--quiet");
        output_ok(&mut cmd);
    }
    let good = files(&a);

    // Other options.
    for (extra, what) in [
        (&["--hidden", "9"][..], "model spec"),
        (&["--clients", "4"][..], "3 clients, not --clients 4"),
        (
            &["--client-shares", "0.5,0.25,0.25"][..],
            "other --client-shares",
        ),
        (&["--key-bits", "768"][..], "not --key-bits 768"),
        (&["--protocol", "paper"][..], "protocol"),
        (&["--lr-schedule", "cosine:2"][..], "learning-rate schedule"),
    ] {
        let e = resume(&a, extra);
        assert!(e.contains(what), "{what}: {e}");
        assert_eq!(files(&a), good, "{what}: the state changed");
    }

    // A foreign group key: b's, valid in itself.
    std::fs::copy(b.join("group.key"), a.join("group.key")).unwrap();
    let e = resume(&a, &[]);
    assert!(e.contains("group key"), "{e}");
    std::fs::write(a.join("group.key"), &good[get(&good, "group.key")].1).unwrap();
    // A foreign client key.
    std::fs::copy(b.join("client-1.key"), a.join("client-1.key")).unwrap();
    let e = resume(&a, &[]);
    assert!(e.contains("client 1's key"), "{e}");
    std::fs::write(a.join("client-1.key"), &good[get(&good, "client-1.key")].1).unwrap();

    // Damaged files: truncated, flipped, missing.
    let ckpt = &good[get(&good, "checkpoint.bin")].1;
    std::fs::write(a.join("checkpoint.bin"), &ckpt[..ckpt.len() - 2]).unwrap();
    let e = resume(&a, &[]);
    assert!(
        e.contains("checkpoint.bin") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(a.join("checkpoint.bin"), ckpt).unwrap();
    let key = &good[get(&good, "client-2.key")].1;
    let mut flipped = key.clone();
    *flipped.last_mut().unwrap() ^= 1;
    std::fs::write(a.join("client-2.key"), &flipped).unwrap();
    let e = resume(&a, &[]);
    assert!(e.contains("client-2.key") && e.contains("checksum"), "{e}");
    assert_eq!(std::fs::read(a.join("client-2.key")).unwrap(), flipped);
    std::fs::remove_file(a.join("client-2.key")).unwrap();
    let e = resume(&a, &[]);
    assert!(e.contains("client-2.key") && e.contains("missing"), "{e}");
    std::fs::write(a.join("client-2.key"), key).unwrap();

    // Repaired, it resumes to its end.
    assert_eq!(files(&a), good);
    let mut cmd = gelunet();
    cmd.arg("train")
        .args(options("2"))
        .arg("--resume")
        .arg(&a)
        .arg("--quiet");
    output_ok(&mut cmd);
}

/// The index of `name` in `files`.
fn get(files: &[(String, Vec<u8>)], name: &str) -> usize {
    files.iter().position(|(n, _)| n == name).unwrap()
}
