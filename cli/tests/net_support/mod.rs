//! Helpers for the process-spawning tests of the `gelunet` binary (`train`, `serve`,
//! `join`, `infer`, `bench`): commands that must succeed, children killed on drop,
//! bounded waits, temporary directories, the shared datasets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The data directory, through the data directory mechanism
/// ([`gelunet_datasets::workspace_data_dir`]: `GELUNET_DATA_DIR`, else the checkout's `data/`).
pub fn data_dir() -> PathBuf {
    gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// The raw (unstandardized) feature rows of Iris's test split for `seed` (20%), as an
/// unlabeled CSV with a header of the feature names: input for `infer --input`.
pub fn iris_test_rows_csv(seed: u64) -> String {
    let loaded = gelunet_datasets::load_by_name("iris", &data_dir(), &Default::default()).unwrap();
    let (_, test) = loaded.into_train_test(0.2, seed).unwrap();
    let mut csv = test.feature_names.join(",") + "\n";
    for row in test.features.rows() {
        let fields: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    csv
}

/// Flags for fast, insecure test keys.
pub const TEST_KEYS: [&str; 3] = ["--key-bits", "512", "--insecure-test-keys"];

/// A `gelunet` command with the shared data directory.
pub fn gelunet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gelunet"));
    c.env("GELUNET_DATA_DIR", data_dir());
    c.env_remove("RUST_LOG");
    c
}

/// Spawns `gelunet ARGS` as a child named `name` (killed on drop).
pub fn run(name: &str, args: &[&str]) -> Proc {
    let mut cmd = gelunet();
    cmd.args(args);
    Proc::spawn(name, cmd)
}

/// Runs `cmd` to its end and returns its output; fails the test, showing its stderr,
/// unless it exited successfully.
pub fn output_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("gelunet-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed on drop, with its output collected.
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    status: Option<ExitStatus>,
}

fn pump<R: Read + Send + 'static>(r: R, buf: Arc<Mutex<String>>, tx: Option<mpsc::Sender<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
}

impl Proc {
    /// Spawns `cmd` with piped output; stderr lines are also available through
    /// [`Proc::wait_line`].
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        pump(child.stdout.take().unwrap(), Arc::clone(&stdout), None);
        pump(child.stderr.take().unwrap(), Arc::clone(&stderr), Some(tx));
        Self {
            name: name.into(),
            child,
            stdout,
            stderr,
            lines,
            status: None,
        }
    }

    /// Collected stdout.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Collected stderr.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for exit within `limit`; panics (and kills via drop) on timeout.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the output threads catch up.
                thread::sleep(Duration::from_millis(100));
                self.status = Some(s);
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for success within `limit`; panics with the output otherwise.
    pub fn expect_success(&mut self, limit: Duration) {
        let s = self.wait(limit);
        assert!(
            s.success(),
            "{} failed ({s})\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.stdout(),
            self.stderr()
        );
    }

    /// Waits for a failure (a non-zero exit) within `limit` and returns the stderr;
    /// panics if it succeeded.
    pub fn expect_failure(&mut self, limit: Duration) -> String {
        assert!(!self.wait(limit).success(), "{} succeeded", self.name);
        self.stderr()
    }

    /// Waits until a stderr line satisfies `pred` (panics after `limit`).
    pub fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "{}: no matching line within {limit:?}\nstderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            }
        }
    }

    /// Sends SIGTERM (`kill -TERM PID`), as a service manager or `kill` does; the
    /// process stops at its next safe point ([`Proc::wait`] for its exit).
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let s = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(s.success(), "kill -TERM {pid}: {s}");
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.status = Some(s);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for a file to appear and returns its contents.
pub fn wait_for_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {limit:?}",
            path.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a JSON report.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Starts `gelunet serve` for `clients` (`NAME:TOKEN`) in `state`, listening on a free
/// loopback port; returns the process and the address.
pub fn start_server(state: &TempDir, clients: &[&str], extra: &[&str]) -> (Proc, String) {
    let mut cmd = gelunet();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path());
    for c in clients {
        cmd.args(["--client", c]);
    }
    cmd.args(extra);
    cmd.env("RUST_LOG", "gelunet_shell=info");
    let p = Proc::spawn("serve", cmd);
    let addr = wait_for_file(&state.join("listen.addr"), Duration::from_secs(120));
    (p, addr.trim().to_string())
}

/// The clients' group key file of a run (protocol v2), made once per state directory
/// (`state/group.key`) the way a data owner would: `gelunet group-key new`.
pub fn group_key_file(state: &TempDir) -> PathBuf {
    let path = state.join("group.key");
    if !path.exists() {
        output_ok(gelunet().args(["group-key", "new", "--out"]).arg(&path));
    }
    path
}

/// Starts `gelunet join` against `addr` with the certificate of `state` and the run's
/// group key ([`group_key_file`]).
pub fn start_client(state: &TempDir, addr: &str, name: &str, token: &str, extra: &[&str]) -> Proc {
    let group_key = group_key_file(state);
    let mut cmd = gelunet();
    cmd.args(["join", "--server", addr, "--server-cert"])
        .arg(state.join("cert.der"))
        .args(["--name", name, "--token", token])
        .arg("--group-key")
        .arg(group_key);
    cmd.args(extra);
    Proc::spawn(&format!("join {name}"), cmd)
}
