//! Checkpoint and resume through the real binaries (docs/DESIGN.md "Checkpoint and
//! resume"): `gelunet serve` + three `gelunet join` on loopback, the server killed with
//! SIGKILL in the middle of a session and restarted with `--resume STATE_DIR`; the clients
//! reconnect by themselves and the model file is byte for byte that of an uninterrupted
//! run. SIGTERM (as Ctrl-C) on `serve`, `join` and `train`: a non-zero exit with a
//! one-line message and a report marked partial; the server's checkpoint stays intact and
//! `serve --resume` ends the run. And `--resume` refuses a missing, damaged or mismatched
//! checkpoint, leaving it as it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::path::Path;
use std::time::{Duration, Instant};

use net_support::{gelunet, read_json, start_client, start_server, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);
const CLIENTS: [(&str, &str); 3] = [("alice", "ta"), ("bob", "tb"), ("carol", "tc")];
const SESSIONS: &str = "8";

/// The server's options for a run of `sessions` sessions.
fn server_args(state: &TempDir, sessions: &str) -> Vec<String> {
    [
        &TEST_KEYS[..],
        &[
            "--dataset",
            "iris",
            "--seed",
            "7",
            "--insecure-reproducible",
        ],
        &["--sessions", sessions, "--idle-timeout", "3"],
        &["--report", state.join("report.json").to_str().unwrap()],
        &["--model-out", state.join("model.bin").to_str().unwrap()],
    ]
    .concat()
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn creds() -> Vec<String> {
    CLIENTS.iter().map(|(n, t)| format!("{n}:{t}")).collect()
}

fn start_clients(state: &TempDir, addr: &str) -> Vec<Proc> {
    CLIENTS
        .iter()
        .enumerate()
        .map(|(k, (n, t))| {
            let k = k.to_string();
            let args = [
                &TEST_KEYS[..],
                &["--dataset", "iris", "--client-index", &k, "--clients", "3"],
                &[
                    "--seed",
                    "7",
                    "--insecure-reproducible",
                    "--idle-timeout",
                    "3",
                ],
                &["--connect-timeout", "120", "--reconnect", "50"],
            ]
            .concat();
            start_client(state, addr, n, t, &args)
        })
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Completed sessions in the checkpoint of `state`, if there is a readable one.
fn checkpointed(state: &Path) -> Option<u64> {
    let path = state.join(gelunet_run::CHECKPOINT_FILE);
    gelunet_run::load_checkpoint(&path)
        .ok()
        .map(|f| f.checkpoint.completed)
}

/// Checks that `p` exited non-zero after an interrupt with one line on stderr saying so
/// (the only `error:` line, and the last) and wrote `report` marked partial; returns
/// that line and the report.
fn interrupted(p: &mut Proc, report: &Path) -> (String, serde_json::Value) {
    let status = p.wait(MIN);
    assert!(!status.success(), "{}: exited successfully", p.name);
    let err = p.stderr();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{}: {err}", p.name);
    assert!(errors[0].starts_with("error: interrupted: "), "{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    let r = read_json(report);
    assert_eq!(r["partial"], true, "{r}");
    assert_eq!(r["stop_reason"], "interrupted", "{r}");
    (errors[0].to_string(), r)
}

/// Waits until two sessions of `server`'s run in `state` are checkpointed and the next
/// one has started; returns the checkpointed count.
fn mid_session(server: &mut Proc, state: &TempDir) -> u64 {
    wait_until(3 * MIN, "two checkpointed sessions", || {
        checkpointed(state.path()).is_some_and(|n| n >= 2)
    });
    let n = checkpointed(state.path()).unwrap();
    server.wait_line(MIN, |l| {
        l.contains("session started") && l.contains(&format!("session={}", n + 1))
    });
    n
}

/// `gelunet serve` of `sessions` Iris sessions for the one client `alice` (token `ta`).
fn alice_server(state: &TempDir, sessions: &str) -> (Proc, String) {
    start_server(
        state,
        &["alice:ta"],
        &[
            &TEST_KEYS[..],
            &["--dataset", "iris", "--seed", "7", "--sessions", sessions],
        ]
        .concat(),
    )
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `serve --resume` of `state` on `addr` with the run's options.
fn resume_server(state: &TempDir, addr: &str, args: &[String]) -> Proc {
    let mut cmd = gelunet();
    cmd.args(["serve", "--listen", addr, "--resume"])
        .arg(state.path());
    for c in creds() {
        cmd.args(["--client", &c]);
    }
    cmd.args(args);
    cmd.env("RUST_LOG", "gelunet_shell=info");
    Proc::spawn("serve --resume", cmd)
}

#[test]
fn a_server_killed_mid_session_and_resumed_ends_with_the_same_model_file() {
    // The uninterrupted run.
    let whole = TempDir::new("resume-whole");
    let (mut server, addr) = start_server(
        &whole,
        &strs(&creds()),
        &strs(&server_args(&whole, SESSIONS)),
    );
    let mut clients = start_clients(&whole, &addr);
    server.expect_success(5 * MIN);
    for c in &mut clients {
        c.expect_success(MIN);
    }
    let expected = std::fs::read(whole.join("model.bin")).unwrap();

    // The interrupted one: SIGKILL once two sessions are checkpointed and the third runs.
    let cut = TempDir::new("resume-cut");
    let args = server_args(&cut, SESSIONS);
    let (mut server, addr) = start_server(&cut, &strs(&creds()), &strs(&args));
    let mut clients = start_clients(&cut, &addr);
    mid_session(&mut server, &cut);
    server.kill();
    assert!(!cut.join("model.bin").exists());
    let before = checkpointed(cut.path()).unwrap();
    assert!(before < 8, "killed after the end");

    let mut resumed = resume_server(&cut, &addr, &args);
    resumed.wait_line(MIN, |l| l.contains("training started"));
    resumed.expect_success(5 * MIN);
    for c in &mut clients {
        c.expect_success(MIN);
    }
    let got = std::fs::read(cut.join("model.bin")).unwrap();
    assert!(got == expected, "the resumed run's model file differs");
    let r = read_json(&cut.join("report.json"));
    assert_eq!(r["sessions"], 8, "{r}");
    assert_eq!(r["partial"], false);
    for (name, _) in CLIENTS {
        assert!(
            r["sessions_per_client"][name].as_u64().unwrap() >= 1,
            "{name} took no part: {r}"
        );
    }
    // Exact: the plaintext reference replays the same sessions to the same model.
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    let parties = r["parties"].as_array().unwrap();
    assert!(
        parties
            .iter()
            .filter(|p| p["name"] != "server")
            .all(|p| p["registrations"].as_u64().unwrap() >= 2),
        "every client registered again with the resumed server: {r}"
    );
}

#[test]
fn a_server_stopped_by_sigterm_writes_a_partial_report_and_resumes_to_the_end() {
    // Long enough that the SIGTERM surely comes before the end (a session takes
    // milliseconds here).
    let state = TempDir::new("resume-term");
    let args = server_args(&state, "200");
    let (mut server, addr) = start_server(&state, &strs(&creds()), &strs(&args));
    let mut clients = start_clients(&state, &addr);
    let n = mid_session(&mut server, &state);
    server.terminate();
    let (line, r) = interrupted(&mut server, &state.join("report.json"));
    // The checkpoint is intact (it decodes and checks) and the message says how to go on.
    let kept = checkpointed(state.path()).expect("a readable checkpoint");
    assert!(kept >= n && kept < 200, "{kept} sessions checkpointed");
    assert!(line.contains("gelunet serve --resume"), "{line}");
    assert!(
        line.contains(&format!("{kept} sessions completed")),
        "{line}"
    );
    assert_eq!(r["sessions"].as_u64(), Some(kept), "{r}");
    assert!(
        !state.join("model.bin").exists(),
        "a model after an interrupt"
    );

    let mut resumed = resume_server(&state, &addr, &args);
    resumed.expect_success(5 * MIN);
    for c in &mut clients {
        c.expect_success(MIN);
    }
    let r = read_json(&state.join("report.json"));
    assert_eq!(r["partial"], false, "{r}");
    assert_eq!(r["sessions"], 200, "{r}");
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    assert!(state.join("model.bin").exists());
}

#[test]
fn a_client_stopped_by_sigterm_writes_a_partial_report() {
    let state = TempDir::new("term-join");
    let (mut server, addr) = alice_server(&state, "400");
    let report = state.join("join.json");
    let mut client = start_client(
        &state,
        &addr,
        "alice",
        "ta",
        &[
            &TEST_KEYS[..],
            &["--dataset", "iris", "--seed", "7", "--report"],
            &[report.to_str().unwrap()],
        ]
        .concat(),
    );
    server.wait_line(MIN, |l| l.contains("session started"));
    client.terminate();
    let (line, r) = interrupted(&mut client, &report);
    assert!(line.contains("alice"), "{line}");
    assert_eq!(r["name"], "alice", "{r}");
}

#[test]
fn train_stopped_by_sigterm_writes_a_partial_report() {
    let dir = TempDir::new("term-train");
    let report = dir.join("report.json");
    let mut cmd = gelunet();
    cmd.arg("train")
        .args(TEST_KEYS)
        .args(["--dataset", "iris", "--seed", "7", "--sessions", "400"])
        .arg("--report")
        .arg(&report)
        .arg("--model-out")
        .arg(dir.join("model.bin"))
        .env("RUST_LOG", "gelunet_shell=info");
    let mut train = Proc::spawn("train", cmd);
    train.wait_line(3 * MIN, |l| {
        l.contains("session started") && l.contains("session=2")
    });
    train.terminate();
    let (line, r) = interrupted(&mut train, &report);
    assert!(line.contains("sessions completed"), "{line}");
    let done = r["sessions"].as_u64().unwrap();
    assert!((1..400).contains(&done), "{r}");
    assert!(
        !dir.join("model.bin").exists(),
        "a model after an interrupt"
    );
}

#[test]
fn a_missing_damaged_or_mismatched_checkpoint_is_refused_and_left_alone() {
    let state = TempDir::new("resume-refused");
    let run = |extra: &[&str]| {
        let mut cmd = gelunet();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--resume"])
            .arg(state.path())
            .args(["--client", "alice:ta"])
            .args(TEST_KEYS)
            .args(extra);
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--dataset", "iris", "--sessions", "2"]);
    assert!(e.contains("no checkpoint to resume"), "{e}");

    // A real checkpoint: one session of a one-client run.
    let (mut server, addr) = alice_server(&state, "1");
    let mut client = start_client(
        &state,
        &addr,
        "alice",
        "ta",
        &[&TEST_KEYS[..], &["--dataset", "iris", "--seed", "7"]].concat(),
    );
    server.expect_success(3 * MIN);
    client.expect_success(MIN);
    let path = state.join(gelunet_run::CHECKPOINT_FILE);
    let good = std::fs::read(&path).unwrap();

    let ok = ["--dataset", "iris", "--seed", "7", "--sessions", "2"];
    // Another dataset, another model, another protocol: refused, file untouched.
    for (extra, what) in [
        (
            vec![
                "--dataset",
                "pima-diabetes",
                "--seed",
                "7",
                "--sessions",
                "2",
            ],
            "another dataset",
        ),
        ([&ok[..], &["--hidden", "9"]].concat(), "model spec"),
        ([&ok[..], &["--protocol", "paper"]].concat(), "protocol"),
        (
            vec!["--dataset", "iris", "--seed", "8", "--sessions", "2"],
            "",
        ),
    ] {
        let e = run(&extra);
        assert!(e.contains("not a checkpoint this run can resume"), "{e}");
        assert!(e.contains(what), "{what}: {e}");
        assert_eq!(std::fs::read(&path).unwrap(), good, "{what}: overwritten");
    }
    // Truncated, and one flipped bit.
    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    let e = run(&ok);
    assert!(e.contains("truncated"), "{e}");
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    let e = run(&ok);
    assert!(e.contains("checksum"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), flipped, "left as it was");
    // The error is one line.
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}
