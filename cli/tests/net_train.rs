//! `gelunet train` (server and clients in one process over loopback QUIC) and
//! `gelunet infer`, run as a user would: the report's fields, exactness against the
//! plaintext reference, model files, and clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::time::Duration;

use net_support::{gelunet, read_json, run, wait_for_file, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// One epoch on Iris with uneven client shares: every report field is present and the
/// encrypted model equals the plaintext fixed-point reference exactly.
#[test]
fn train_in_process_reports_an_exact_run() {
    let dir = TempDir::new("train");
    let report = dir.join("report.json");
    let model = dir.join("model.bin");
    let mut p = run(
        "train",
        &[
            &["train", "--dataset", "iris", "--clients", "3"][..],
            &["--client-shares", "0.5,0.3,0.2", "--quiet"],
            // The defaults before per-dataset ones existed: one quick epoch.
            &["--epochs", "1", "--batch-size", "1", "--lr", "0.5"],
            &TEST_KEYS[..],
            &["--report", report.to_str().unwrap()],
            &["--model-out", model.to_str().unwrap()],
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    assert!(!p.stderr().contains("progress:"), "--quiet: {}", p.stderr());
    let r = read_json(&report);
    assert_eq!(r["dataset"], "iris");
    assert_eq!(r["clients"], 3);
    assert_eq!(r["key_bits"], 512);
    assert_eq!(r["mask"], "statistical");
    assert_eq!(r["epochs"], 1);
    assert_eq!(r["batch_size"], 1);
    assert_eq!(r["hidden"], serde_json::json!([12]));
    assert_eq!(r["activation"], "sigmoid");
    assert_eq!(r["seed"], 1);
    let backend = r["backend"].as_str().unwrap();
    assert!(backend == "gmp" || backend == "num-bigint", "{backend}");
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    assert_eq!(r["test_accuracy"], r["plaintext_test_accuracy"]);
    let acc = r["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.6, "test accuracy {acc} after one epoch on Iris");
    assert!(r["epochs_completed"].as_f64().unwrap() >= 1.0);
    assert_eq!(r["train_samples"], 120);
    assert_eq!(r["test_samples"], 30);
    assert!(r["samples_processed"].as_u64().unwrap() >= 120);
    for k in ["wall_seconds", "seconds_per_epoch", "training_seconds"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}");
    }
    let sent = r["bytes_sent"].as_u64().unwrap();
    let received = r["bytes_received"].as_u64().unwrap();
    assert!(sent > 0 && received > 0);
    let sessions = r["sessions"].as_u64().unwrap();
    let per: Vec<u64> = (0..3)
        .map(|k| {
            r["sessions_per_client"][format!("client-{k}")]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(per.iter().all(|&s| s > 0), "{per:?}");
    assert_eq!(per.iter().sum::<u64>(), sessions);
    assert_eq!(r["sessions_abandoned"], 0);
    // The parties' counters agree: what the clients sent is what the server received.
    let parties = r["parties"].as_array().unwrap();
    let clients_sent: u64 = parties[1..]
        .iter()
        .map(|p| p["bytes_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(clients_sent, received);
    assert!(model.exists());
}

/// Exact training does not depend on the mask: the statistical and the uniform mask give
/// byte-identical model files for the same seed.
/// Both masks and `--plaintext` (the reference alone, no keys) give the same model file.
#[test]
fn masks_and_the_plaintext_mode_train_the_same_model() {
    let dir = TempDir::new("masks");
    let models: Vec<_> = ["statistical", "uniform", "plaintext"]
        .iter()
        .map(|mode| {
            let model = dir.join(&format!("{mode}.bin"));
            let report = dir.join(&format!("{mode}.json"));
            let how: &[&str] = match *mode {
                "plaintext" => &["--plaintext"],
                // The paper's uniform mask exists only in the paper's protocol.
                "uniform" => &["--mask", "uniform", "--protocol", "paper"],
                _ => &["--mask", mode],
            };
            let mut p = run(
                mode,
                &[
                    &["train", "--dataset", "iris", "--clients", "2", "--quiet"][..],
                    &["--sessions", "6", "--seed", "3"],
                    how,
                    &TEST_KEYS[..],
                    &["--model-out", model.to_str().unwrap()],
                    &["--report", report.to_str().unwrap()],
                ]
                .concat(),
            );
            p.expect_success(3 * MIN);
            let r = read_json(&report);
            assert_eq!(r["sessions"], 6, "{mode}");
            assert_eq!(r["test_accuracy"], r["plaintext_test_accuracy"], "{mode}");
            if *mode == "plaintext" {
                assert_eq!(r["key_bits"], 0);
                assert!(
                    r["max_abs_weight_diff"].is_null(),
                    "no encrypted model to compare"
                );
                assert_eq!(r["bytes_sent"], 0);
            } else {
                assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0));
            }
            std::fs::read(&model).unwrap()
        })
        .collect();
    assert_eq!(models[0], models[1]);
    assert_eq!(
        models[0], models[2],
        "--plaintext gives the encrypted run's model"
    );
}

/// MNIST (not built in) missing from the data directory names the file and how to get
/// it; non-zero exit.
#[test]
fn missing_mnist_is_a_clear_error() {
    let dir = TempDir::new("nodata");
    let missing = dir.join("no-such-dir");
    let mut p = run(
        "train",
        &[
            &[
                "train",
                "--dataset",
                "mnist",
                "--data-dir",
                missing.to_str().unwrap(),
            ][..],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    let err = p.expect_failure(MIN);
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("fetch-datasets"), "{err}");
    assert!(err.contains("--mirror"), "{err}");
}

/// Bad option values are refused before any work.
#[test]
fn bad_options_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["--key-bits", "1024"], "insecure-test-keys"),
        (
            &[
                "--clients",
                "0",
                "--key-bits",
                "512",
                "--insecure-test-keys",
            ],
            "--clients",
        ),
        (
            &[
                "--client-shares",
                "0.5,0.6,0.2",
                "--key-bits",
                "512",
                "--insecure-test-keys",
            ],
            "shares",
        ),
        (
            &["--lr=-1", "--key-bits", "512", "--insecure-test-keys"],
            "--lr",
        ),
        (
            &["--hidden", "0", "--key-bits", "512", "--insecure-test-keys"],
            "--hidden",
        ),
        (&["--activation", "softsign"], "softsign"),
        (&["--key-bits", "1001", "--insecure-test-keys"], "even"),
    ];
    for (extra, needle) in cases {
        let mut p = run(
            "train",
            &[&["train", "--dataset", "iris"][..], extra].concat(),
        );
        assert!(!p.wait(MIN).success(), "{extra:?} was accepted");
        let err = p.stderr();
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

fn train_model(dir: &TempDir, extra: &[&str]) -> (std::path::PathBuf, serde_json::Value) {
    let model = dir.join("model.bin");
    let report = dir.join("train.json");
    let mut p = run(
        "train",
        &[
            &["train", "--dataset", "iris", "--clients", "2", "--quiet"][..],
            &TEST_KEYS[..],
            &["--model-out", model.to_str().unwrap()],
            &["--report", report.to_str().unwrap()],
            extra,
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    (model, read_json(&report))
}

/// Truncated, extended, corrupted, foreign and mismatched model files are refused by
/// `infer` with a clear error.
#[test]
fn corrupt_model_files_are_refused_by_infer() {
    let dir = TempDir::new("corrupt");
    let (model, _) = train_model(&dir, &["--sessions", "2"]);
    let good = std::fs::read(&model).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut magic = good.clone();
    magic[0] = b'X';
    let mut extended = good.clone();
    extended.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 7].to_vec(), "truncated"),
        ("header", good[..20].to_vec(), "header"),
        ("extended", extended, "truncated or corrupt"),
        ("flipped", flipped, "checksum"),
        ("magic", magic, "magic"),
        ("empty", Vec::new(), "header"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(&format!("{name}.bin"));
        std::fs::write(&path, bytes).unwrap();
        let mut p = run(
            name,
            &[
                &[
                    "infer",
                    "--model",
                    path.to_str().unwrap(),
                    "--dataset",
                    "iris",
                ][..],
                &TEST_KEYS[..],
            ]
            .concat(),
        );
        assert!(!p.wait(MIN).success(), "{name} accepted");
        let err = p.stderr();
        assert!(
            err.contains("not a valid gelunet model file") && err.contains(needle),
            "{name}: {err}"
        );
    }
    // A model for another dataset.
    let mut p = run(
        "mismatch",
        &[
            &[
                "infer",
                "--model",
                model.to_str().unwrap(),
                "--dataset",
                "pima",
            ][..],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    let err = p.expect_failure(MIN);
    assert!(err.contains("classes"), "{err}");
    // A missing file.
    let mut p = run(
        "missing",
        &[
            &["infer", "--model", dir.join("nope.bin").to_str().unwrap()][..],
            &["--dataset", "iris"],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    let err = p.expect_failure(MIN);
    assert!(err.contains("nope.bin"), "{err}");
}

/// Encrypted inference on the test split gives the accuracy the training report states.
#[test]
fn infer_on_the_test_split_matches_the_training_report() {
    let dir = TempDir::new("infer");
    let (model, train) = train_model(&dir, &["--seed", "5"]);
    let report = dir.join("infer.json");
    let mut p = run(
        "infer",
        &[
            &["infer", "--model", model.to_str().unwrap()][..],
            &["--dataset", "iris", "--split", "test", "--batch", "8"],
            &TEST_KEYS[..],
            &["--report", report.to_str().unwrap()],
        ]
        .concat(),
    );
    p.expect_success(2 * MIN);
    let r = read_json(&report);
    assert_eq!(r["samples"], 30);
    assert_eq!(r["accuracy"], train["test_accuracy"], "{r}\n{train}");
    assert_eq!(r["accuracy"], r["plaintext_accuracy"]);
    assert!(p.stdout().contains("predicted"), "{}", p.stdout());
}

/// `serve-model` in one process, `infer --server` in another: the remote client classifies
/// the test split exactly as the local `infer` does, with only the public model card;
/// a wrong token and a damaged card are refused with clear errors.
#[test]
fn remote_inference_matches_local_inference() {
    let dir = TempDir::new("serve-model");
    let (model, train) = train_model(&dir, &["--seed", "7"]);
    let state = TempDir::new("serve-model-state");
    let mut cmd = gelunet();
    cmd.args(["serve-model", "--model", model.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .args([
            "--client",
            "reader:s3cret",
            "--max-connections",
            "2",
            "--quiet",
        ])
        .args(TEST_KEYS);
    let mut server = Proc::spawn("serve-model", cmd);
    let addr = wait_for_file(&state.join("listen.addr"), 2 * MIN);
    let addr = addr.trim();
    let card = state.join("model-card.json");
    let card_json = read_json(&card);
    assert_eq!(card_json["inputs"], 4);
    assert_eq!(card_json["classes"], 3);
    assert!(card_json.get("model").is_none() && card_json.get("layers").is_none());
    let remote = |name: &str, token: &str, card: &std::path::Path, report: &std::path::Path| {
        run(
            name,
            &[
                &["infer", "--server", addr, "--server-cert"][..],
                &[state.join("cert.der").to_str().unwrap()],
                &["--model-card", card.to_str().unwrap()],
                &["--name", "reader", "--token", token],
                &[
                    "--dataset",
                    "iris",
                    "--split",
                    "test",
                    "--batch",
                    "8",
                    "--quiet",
                ],
                &TEST_KEYS[..],
                &["--report", report.to_str().unwrap()],
            ]
            .concat(),
        )
    };
    // A damaged card is refused before any connection.
    let bad_card = dir.join("bad-card.json");
    let mut damaged: serde_json::Value = card_json.clone();
    damaged["std"] = serde_json::json!([1.0, 0.0, 1.0, 1.0]);
    std::fs::write(&bad_card, damaged.to_string()).unwrap();
    let mut p = remote("bad card", "s3cret", &bad_card, &dir.join("none.json"));
    let err = p.expect_failure(MIN);
    assert!(err.contains("model card"), "{err}");
    // A wrong token is refused by the server (it does not count as a served connection).
    let mut p = remote("wrong token", "guess", &card, &dir.join("none.json"));
    let err = p.expect_failure(MIN);
    assert!(
        err.to_lowercase().contains("token") || err.contains("refused"),
        "{err}"
    );
    // The real client, then the same rows unlabeled (`--input`); the server stops after
    // serving both.
    let report = dir.join("remote.json");
    let mut p = remote("remote infer", "s3cret", &card, &report);
    p.expect_success(2 * MIN);
    let input = dir.join("new.csv");
    std::fs::write(&input, net_support::iris_test_rows_csv(7)).unwrap();
    let predictions = dir.join("remote-predictions.json");
    let mut p = run(
        "remote infer --input",
        &[
            &["infer", "--server", addr, "--server-cert"][..],
            &[state.join("cert.der").to_str().unwrap()],
            &["--model-card", card.to_str().unwrap()],
            &["--name", "reader", "--token", "s3cret", "--quiet"],
            &["--input", input.to_str().unwrap()],
            &["--output", predictions.to_str().unwrap()],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    p.expect_success(2 * MIN);
    server.expect_success(MIN);
    let unlabeled = read_json(&predictions);
    let r = read_json(&report);
    assert_eq!(r["samples"], 30);
    assert!(
        r["plaintext_accuracy"].is_null(),
        "the remote client has no weights"
    );
    assert_eq!(r["accuracy"], train["test_accuracy"], "{r}\n{train}");
    // The unlabeled rows get the classes of the labelled test split, row for row.
    let classes = unlabeled["classes"].as_array().unwrap();
    let rows = unlabeled["predictions"].as_array().unwrap();
    assert_eq!(rows.len(), 30);
    for (row, p) in rows.iter().zip(r["predictions"].as_array().unwrap()) {
        assert_eq!(row["class"], classes[p.as_u64().unwrap() as usize], "{row}");
    }
    // And equal, classes and probabilities, to the local `infer --input` on the same rows.
    let local = dir.join("local-predictions.json");
    let mut p = run(
        "local infer --input",
        &[
            &["infer", "--model", model.to_str().unwrap(), "--quiet"][..],
            &["--input", input.to_str().unwrap()],
            &["--output", local.to_str().unwrap()],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    p.expect_success(2 * MIN);
    let local = read_json(&local);
    assert_eq!(local["classes"], unlabeled["classes"]);
    assert_eq!(local["predictions"], unlabeled["predictions"]);
}

/// `--plot DIR` writes the loss and accuracy figures (valid PNG), and off a terminal the
/// progress comes as log lines with sessions, samples/s and the time left; `--quiet`
/// (the other tests) silences them.
#[test]
fn train_plots_and_logs_its_progress() {
    let dir = TempDir::new("plot");
    let plots = dir.join("plots");
    let report = dir.join("report.json");
    let mut p = run(
        "train-plot",
        &[
            &[
                "train",
                "--dataset",
                "iris",
                "--clients",
                "2",
                "--epochs",
                "2",
            ][..],
            &["--batch-size", "4", "--plot", plots.to_str().unwrap()],
            &["--report", report.to_str().unwrap()],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    let r = read_json(&report);
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    assert_eq!(r["plots"].as_array().unwrap().len(), 2, "{r}");
    for name in ["loss.png", "accuracy.png"] {
        let bytes = std::fs::read(plots.join(name)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        assert!(bytes.len() > 10_000, "{name}: {} bytes", bytes.len());
    }
    let err = p.stderr();
    assert!(err.contains("progress: session"), "{err}");
    assert!(err.contains("samples/s"), "{err}");
    assert!(err.contains("left"), "{err}");
}
