//! `gelunet serve` and `gelunet join` as separate processes on loopback QUIC: the
//! end-to-end run with 2048-bit keys, refused clients (bad token, unknown name, untrusted
//! certificate), garbage and oversized frames, and a client killed mid-training.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::net::SocketAddr;
use std::time::Duration;

use gelunet_net::{Channel, NetError, TransportSettings};
use gelunet_protocol::envelope::{RefusalCode, Register, ToClient, ToServer, SHELL_VERSION};
use net_support::{read_json, start_client, start_server, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

fn iris_share(k: usize, clients: usize) -> Vec<String> {
    [
        "--dataset",
        "iris",
        "--client-index",
        &k.to_string(),
        "--clients",
        &clients.to_string(),
        "--seed",
        "7",
        "--insecure-reproducible",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Three client processes and a server process train on Iris with real 2048-bit keys;
/// the server's report shows every client took part and the model equals the plaintext
/// fixed-point reference exactly.
#[test]
fn serve_and_three_joins_with_2048_bit_keys_are_exact() {
    let state = TempDir::new("e2e");
    let report = state.join("report.json");
    let model = state.join("model.bin");
    let (mut server, addr) = start_server(
        &state,
        &["alice:ta", "bob:tb", "carol:tc"],
        &[
            "--dataset",
            "iris",
            "--seed",
            "7",
            "--insecure-reproducible",
            "--sessions",
            "9",
            "--report",
            report.to_str().unwrap(),
            "--model-out",
            model.to_str().unwrap(),
        ],
    );
    let mut clients: Vec<_> = [("alice", "ta"), ("bob", "tb"), ("carol", "tc")]
        .iter()
        .enumerate()
        .map(|(k, (n, t))| {
            let args = iris_share(k, 3);
            start_client(&state, &addr, n, t, &strs(&args))
        })
        .collect();
    server.expect_success(5 * MIN);
    for c in &mut clients {
        c.expect_success(MIN);
    }
    let r = read_json(&report);
    assert_eq!(r["key_bits"], 2048);
    // Protocol v2 by default: masked weights only, the model released by a client.
    assert_eq!(r["protocol"], "v2");
    assert_eq!(r["clients"], 3);
    assert_eq!(r["sessions"], 9);
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0));
    let acc = r["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    assert_eq!(r["test_accuracy"], r["plaintext_test_accuracy"]);
    for name in ["alice", "bob", "carol"] {
        assert!(
            r["sessions_per_client"][name].as_u64().unwrap() >= 1,
            "{name} took no part: {r}"
        );
    }
    assert!(r["bytes_sent"].as_u64().unwrap() > 0);
    // v2's plaintext updates are smaller than the paper's [D]_s: the server now sends
    // more (pre-activations) than it receives.
    assert!(r["bytes_received"].as_u64().unwrap() > 0);
    assert!(model.exists());
}

/// A wrong token, an unknown name and an untrusted server certificate are refused with
/// clear errors; the server keeps serving and trains with the legitimate client.
#[test]
fn unauthenticated_clients_and_untrusted_certificates_are_refused() {
    let state = TempDir::new("auth");
    let report = state.join("report.json");
    let (mut server, addr) = start_server(
        &state,
        &["alice:right-token"],
        &[
            &TEST_KEYS[..],
            &["--inputs", "4", "--classes", "3", "--sessions", "2"],
            &["--report", report.to_str().unwrap()],
        ]
        .concat(),
    );
    let data = [&["--dataset", "iris"][..], &TEST_KEYS[..]].concat();

    // A client in the insecure reproducible mode, which this server did not allow.
    let repro: Vec<String> = [
        iris_share(0, 1),
        TEST_KEYS.iter().map(|s| s.to_string()).collect(),
    ]
    .concat();
    let mut repro = start_client(&state, &addr, "alice", "right-token", &strs(&repro));
    let err = repro.expect_failure(MIN);
    assert!(
        err.contains("refused") && err.contains("insecure reproducible mode"),
        "{err}"
    );

    let mut bad = start_client(&state, &addr, "alice", "wrong-token", &data);
    let err = bad.expect_failure(MIN);
    assert!(
        err.contains("refused") && err.contains("not authorized"),
        "{err}"
    );

    let mut unknown = start_client(&state, &addr, "mallory", "right-token", &data);
    let err = unknown.expect_failure(MIN);
    assert!(err.contains("not authorized"), "{err}");

    // A certificate the client does not trust: another server's.
    let other = TempDir::new("auth-other");
    let id = gelunet_net::ServerIdentity::generate(&["localhost".into()]).unwrap();
    id.save(other.path()).unwrap();
    let mut cmd = net_support::gelunet();
    cmd.args(["join", "--server", &addr, "--server-cert"])
        .arg(other.join("cert.der"))
        .args(["--name", "alice", "--token", "right-token"])
        .args(&data);
    let mut untrusting = net_support::Proc::spawn("join untrusted", cmd);
    let err = untrusting.expect_failure(MIN);
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let mut good = start_client(&state, &addr, "alice", "right-token", &data);
    good.expect_success(2 * MIN);
    server.expect_success(MIN);
    let r = read_json(&report);
    assert_eq!(r["sessions"], 2);
    assert_eq!(r["sessions_per_client"]["alice"], 2);
}

async fn raw_channel(
    addr: SocketAddr,
    cert: &std::path::Path,
) -> (
    gelunet_net::quinn::Endpoint,
    gelunet_net::quinn::Connection,
    Channel,
) {
    let settings = TransportSettings::default();
    let ep = gelunet_net::client_endpoint(gelunet_net::client_bind_addr(addr)).unwrap();
    let pinned = gelunet_net::load_certificate(cert).unwrap();
    let conn = gelunet_net::connect(&ep, addr, "localhost", pinned, &settings)
        .await
        .unwrap();
    let ch = Channel::open(&conn, settings.max_frame_len).await.unwrap();
    (ep, conn, ch)
}

/// The server's answer to a bad connection: a typed refusal, or the connection closed.
async fn expect_refused(ch: &mut Channel) {
    match tokio::time::timeout(Duration::from_secs(20), ch.recv::<ToClient>()).await {
        Ok(Ok(ToClient::Refused(r))) => assert!(
            matches!(r.code, RefusalCode::Protocol | RefusalCode::Unauthenticated),
            "{r:?}"
        ),
        Ok(Ok(other)) => panic!("expected a refusal, got {other:?}"),
        Ok(Err(NetError::ConnectionLost(_) | NetError::Closed | NetError::StreamReset { .. })) => {}
        Ok(Err(e)) => panic!("unexpected error {e}"),
        Err(_) => panic!("the server neither refused nor closed"),
    }
}

/// Garbage, oversized, truncated and out-of-order frames are refused; the server survives
/// and trains with the real clients.
#[test]
fn server_survives_garbage_and_oversized_frames() {
    let state = TempDir::new("garbage");
    let report = state.join("report.json");
    let (mut server, addr) = start_server(
        &state,
        &["a:ta", "b:tb"],
        &[
            &TEST_KEYS[..],
            &["--dataset", "iris", "--sessions", "4"],
            &["--report", report.to_str().unwrap()],
        ]
        .concat(),
    );
    let sock: SocketAddr = addr.parse().unwrap();
    let cert = state.join("cert.der");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 1. A frame whose payload is not a message.
        let (_ep, _c, mut ch) = raw_channel(sock, &cert).await;
        let mut frame = 16u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 16]);
        ch.send_stream().write_all(&frame).await.unwrap();
        expect_refused(&mut ch).await;

        // 2. An oversized frame announcement (4 GiB − 16).
        let (_ep, _c, mut ch) = raw_channel(sock, &cert).await;
        ch.send_stream()
            .write_all(&0xffff_fff0u32.to_be_bytes())
            .await
            .unwrap();
        ch.send_stream().write_all(&[0u8; 1024]).await.unwrap();
        expect_refused(&mut ch).await;

        // 3. A truncated frame: 100 bytes announced, 10 sent, stream finished.
        let (_ep, _c, mut ch) = raw_channel(sock, &cert).await;
        let mut frame = 100u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[1u8; 10]);
        ch.send_stream().write_all(&frame).await.unwrap();
        ch.send_stream().finish().unwrap();
        expect_refused(&mut ch).await;

        // 4. Registered, then garbage instead of the protocol hello.
        let (_ep, _c, mut ch) = raw_channel(sock, &cert).await;
        ch.send(&ToServer::Register(Register {
            version: SHELL_VERSION,
            name: "a".into(),
            token: "ta".into(),
            samples: 40,
            reference: None,
        }))
        .await
        .unwrap();
        let welcome: ToClient = ch.recv().await.unwrap();
        assert!(matches!(welcome, ToClient::Welcome(_)), "{welcome:?}");
        let mut frame = 3u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[9, 9, 9]);
        ch.send_stream().write_all(&frame).await.unwrap();
        expect_refused(&mut ch).await;
    });
    let data = [&["--dataset", "iris"][..], &TEST_KEYS[..]].concat();
    let mut a = start_client(&state, &addr, "a", "ta", &data);
    let mut b = start_client(&state, &addr, "b", "tb", &data);
    a.expect_success(2 * MIN);
    b.expect_success(2 * MIN);
    server.expect_success(MIN);
    let r = read_json(&report);
    assert_eq!(r["sessions"], 4);
    assert_eq!(r["clients"], 2);
}

/// Starts the server of the fault tests (a killed client, a rejoining client) in `state`:
/// Iris, seed 7, 32 hidden units, masks known to the server, 12 sessions of batch size 1,
/// idle timeout 3 s, the report in `state/report.json`, then `extra`.
fn start_fault_server(state: &TempDir, clients: &[&str], extra: &[&str]) -> (Proc, String) {
    let report = state.join("report.json");
    let fixed = [
        &["--dataset", "iris", "--seed", "7", "--hidden", "32"][..],
        &[
            "--insecure-reproducible",
            "--sessions",
            "12",
            "--idle-timeout",
            "3",
        ],
        &["--batch-size", "1", "--report", report.to_str().unwrap()],
    ];
    start_server(
        state,
        clients,
        &[&TEST_KEYS[..], &fixed.concat(), extra].concat(),
    )
}

/// The arguments of client `k` of `clients` in the fault tests: its Iris share, test
/// keys, idle timeout 3 s, then `extra`.
fn fault_client_args(k: usize, clients: usize, extra: &[&str]) -> Vec<String> {
    let mut args = iris_share(k, clients);
    let fixed = TEST_KEYS
        .iter()
        .chain(&["--idle-timeout", "3"])
        .chain(extra);
    args.extend(fixed.map(|s| s.to_string()));
    args
}

/// Kills `client` (named `name`) as soon as the server logs its first session.
fn kill_at_first_session(server: &mut Proc, client: &mut Proc, name: &str) {
    let who = format!("client={name}");
    server.wait_line(2 * MIN, |l| {
        l.contains("session started") && l.contains(&who)
    });
    client.kill();
}

/// A client process killed during training costs the model nothing: its session is
/// abandoned (rolled back), training completes with the others, and the model still
/// equals the plaintext reference replaying the completed sessions.
#[test]
fn client_killed_mid_training_leaves_the_model_exact() {
    let state = TempDir::new("kill");
    let report = state.join("report.json");
    let model = state.join("model.bin");
    let (mut server, addr) = start_fault_server(
        &state,
        &["c0:t0", "c1:t1", "c2:t2"],
        &["--model-out", model.to_str().unwrap()],
    );
    let mut clients: Vec<_> = (0..3)
        .map(|k| {
            let args = fault_client_args(k, 3, &["--reconnect", "0"]);
            start_client(
                &state,
                &addr,
                &format!("c{k}"),
                &format!("t{k}"),
                &strs(&args),
            )
        })
        .collect();
    kill_at_first_session(&mut server, &mut clients[1], "c1");
    server.expect_success(3 * MIN);
    clients[0].expect_success(MIN);
    clients[2].expect_success(MIN);
    let r = read_json(&report);
    assert_eq!(r["sessions"], 12);
    assert!(r["sessions_abandoned"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["sessions_per_client"]["c1"], 0, "{r}");
    assert!(r["sessions_per_client"]["c0"].as_u64().unwrap() >= 1);
    assert!(r["sessions_per_client"]["c2"].as_u64().unwrap() >= 1);
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    assert_eq!(r["test_accuracy"], r["plaintext_test_accuracy"]);
    assert_eq!(
        r["randomness"], "masks known to the server (insecure reproducible mode)",
        "{r}"
    );
    v2_state_holds_no_true_weight(&state, &model, 12);
}

/// The server's `STATE_DIR/checkpoint.bin` after a v2 run of `sessions` completed
/// sessions: it decodes, holds the last version and the masked model of the released
/// model's shapes, no entry of which is the true weight, and is readable by its owner
/// only; a truncated copy is refused clearly.
fn v2_state_holds_no_true_weight(state: &TempDir, model: &std::path::Path, sessions: u64) {
    let path = state.join(gelunet_run::CHECKPOINT_FILE);
    let file = gelunet_run::load_checkpoint(&path).unwrap();
    assert_eq!(file.checkpoint.completed, sessions);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let cp = file.checkpoint.v2().unwrap();
    assert_eq!(cp.version.version, sessions);
    let released = gelunet_run::ModelFile::load(model).unwrap().model;
    assert_eq!(cp.masked.len(), released.layers.len());
    let mut entries = 0;
    for (masked, true_layer) in cp.masked.iter().zip(&released.layers) {
        assert_eq!(masked.w.dim(), true_layer.w.dim());
        assert_eq!(masked.b.len(), true_layer.b.len());
        let pairs = masked
            .w
            .iter()
            .zip(true_layer.w.iter())
            .chain(masked.b.iter().zip(true_layer.b.iter()));
        for (m, t) in pairs {
            // W~ = W_v − P_v with P_v uniform on [0, 2^λ), λ ≥ 128 + the weight bits.
            assert_ne!(*m, gelunet_paillier::BigInt::from(*t));
            assert!(m.bits() > 64, "a masked value of {} bits", m.bits());
            entries += 1;
        }
    }
    assert!(entries > 0);
    let bytes = std::fs::read(&path).unwrap();
    let truncated = state.join("checkpoint-truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = gelunet_run::load_checkpoint(&truncated)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a checkpoint this run can resume") && e.contains("truncated"),
        "{e}"
    );
}

/// A killed client restarted with the same key file rejoins (a new incarnation that
/// re-seeds its sampler and fast-forwards it to the batches of its completed sessions)
/// and is scheduled again; the model stays exact.
#[test]
fn killed_client_rejoins_with_its_key_file() {
    let state = TempDir::new("rejoin");
    let report = state.join("report.json");
    let key = state.join("c1.key");
    let (mut server, addr) = start_fault_server(&state, &["c0:t0", "c1:t1"], &[]);
    let args = |k: usize| match k {
        1 => fault_client_args(k, 2, &["--key-file", key.to_str().unwrap()]),
        _ => fault_client_args(k, 2, &[]),
    };
    let mut c0 = start_client(&state, &addr, "c0", "t0", &strs(&args(0)));
    let mut c1 = start_client(&state, &addr, "c1", "t1", &strs(&args(1)));
    kill_at_first_session(&mut server, &mut c1, "c1");
    let mut again = start_client(&state, &addr, "c1", "t1", &strs(&args(1)));
    server.expect_success(3 * MIN);
    c0.expect_success(MIN);
    again.expect_success(MIN);
    let r = read_json(&report);
    assert_eq!(r["sessions"], 12);
    assert!(r["sessions_per_client"]["c1"].as_u64().unwrap() >= 1, "{r}");
    let c1 = r["parties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "c1")
        .unwrap();
    assert_eq!(c1["registrations"], 2, "{r}");
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
}

/// A missing or malformed group-key file is a clear error before anything connects
/// (nothing listens at the address given).
#[test]
fn join_refuses_a_missing_or_malformed_group_key_before_connecting() {
    let dir = TempDir::new("group-key");
    let bad = dir.join("bad.key");
    std::fs::write(&bad, "gelunet-group-key-v1 not-hex").unwrap();
    for key in [dir.join("missing.key"), bad] {
        let out = net_support::gelunet()
            .args(["join", "--server", "127.0.0.1:9", "--server-cert"])
            .arg(dir.join("cert.der"))
            .args(["--name", "alice", "--token", "t", "--group-key"])
            .arg(&key)
            .args(["--dataset", "iris"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--group-key"), "{err}");
        assert!(
            !err.contains("not-hex"),
            "the file's contents are not echoed: {err}"
        );
    }
    // `group-key new` never overwrites a key.
    let key = net_support::group_key_file(&dir);
    let before = std::fs::read(&key).unwrap();
    let out = net_support::gelunet()
        .args(["group-key", "new", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

/// `serve --plot DIR` with 512-bit test keys: after two joined clients finish, the loss
/// and accuracy figures are valid PNG files; a `--plot` that cannot be a directory (it
/// lies under a regular file) fails before the server listens.
#[test]
fn serve_plots_its_run_and_refuses_an_unwritable_plot_dir_first() {
    let state = TempDir::new("serve-plot");
    let (report, plots) = (state.join("report.json"), state.join("plots"));
    let (mut server, addr) = start_server(
        &state,
        &["alice:ta", "bob:tb"],
        &[
            &["--dataset", "iris", "--seed", "7", "--epochs", "1"][..],
            &["--report", report.to_str().unwrap()],
            &["--plot", plots.to_str().unwrap()],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    let mut clients: Vec<_> = [("alice", "ta"), ("bob", "tb")]
        .iter()
        .enumerate()
        .map(|(k, (n, t))| {
            let args = [&["--dataset", "iris", "--seed", "7"][..], &TEST_KEYS[..]].concat();
            let index = k.to_string();
            let share = [&args[..], &["--client-index", &index, "--clients", "2"]].concat();
            start_client(&state, &addr, n, t, &share)
        })
        .collect();
    server.expect_success(3 * MIN);
    for c in &mut clients {
        c.expect_success(MIN);
    }
    let r = read_json(&report);
    assert_eq!(r["plots"].as_array().unwrap().len(), 2, "{r}");
    for name in ["loss.png", "accuracy.png"] {
        let bytes = std::fs::read(plots.join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        assert!(bytes.len() > 1_000, "{name}: {} bytes", bytes.len());
    }

    let bad = TempDir::new("serve-plot-bad");
    std::fs::write(bad.join("file"), b"x").unwrap();
    let out = net_support::gelunet()
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(bad.path())
        .args(["--client", "alice:ta", "--dataset", "iris", "--plot"])
        .arg(bad.join("file").join("plots"))
        .args(TEST_KEYS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plot"), "{err}");
    assert!(!bad.join("listen.addr").exists());
    assert!(
        !bad.join("cert.der").exists(),
        "the server made its keys first"
    );
}
