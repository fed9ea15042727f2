//! `--arch` through the command line (issue #15): a conv architecture trains with
//! `train --plaintext` and encrypted to the same model file, which reads back and
//! classifies encrypted as in plaintext; contradictory or bad `--arch` values are
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use std::time::Duration;

use net_support::{gelunet, read_json, Proc, TempDir, TEST_KEYS};

const MIN: Duration = Duration::from_secs(60);

/// A 16-feature CSV (a 4×4 "image"), two classes.
fn image_csv(dir: &TempDir) -> String {
    let mut text: String = (0..16).map(|i| format!("p{i},")).collect();
    text.push_str("y\n");
    for s in 0..40 {
        for i in 0..16 {
            let on = (i % 4 < 2) == (s % 2 == 0);
            text.push_str(if on { "1," } else { "0," });
        }
        text.push_str(&format!("{}\n", s % 2));
    }
    let path = dir.join("img.csv");
    std::fs::write(&path, text).unwrap();
    format!("csv:{}", path.display())
}

fn run(tag: &str, args: &[&str]) -> Proc {
    let mut cmd = gelunet();
    cmd.args(args);
    Proc::spawn(tag, cmd)
}

/// `train` of `arch` on `data` for 4 sessions; the run's other flags follow.
fn train_args<'a>(data: &'a str, arch: &'a str) -> [&'a str; 7] {
    [
        "train",
        "--dataset",
        data,
        "--arch",
        arch,
        "--sessions",
        "4",
    ]
}

#[test]
fn a_conv_architecture_trains_in_plaintext_and_its_model_reads_back() {
    let dir = TempDir::new("arch");
    let data = image_csv(&dir);
    let report = dir.join("r.json");
    let model = dir.join("m.model");
    let arch = "conv3x3:2,meanpool,relu,dense:2";
    let mut p = run(
        "arch plaintext",
        &[
            &train_args(&data, arch)[..],
            &["--plaintext", "--quiet"],
            &["--report", report.to_str().unwrap()],
            &["--model-out", model.to_str().unwrap()],
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    let r = read_json(&report);
    assert_eq!(r["arch"], arch, "{r}");
    // The dense-model fields the architecture replaces are not written.
    assert!(
        r.get("hidden").is_none() && r.get("activation").is_none(),
        "{r}"
    );
    assert_eq!(r["sessions"], 4, "{r}");
    let file = gelunet_run::ModelFile::load(&model).unwrap();
    assert!(!file.model.spec.is_dense());
    assert_eq!(file.model.spec.widths, vec![16, 2, 2]);

    // Encrypted training of the same architecture (3 clients, Paillier, protocol v2)
    // writes the same model file, byte for byte, and says it equals the reference.
    let enc_report = dir.join("enc.json");
    let enc_model = dir.join("enc.model");
    let mut p = run(
        "arch encrypted",
        &[
            &train_args(&data, arch)[..],
            &["--clients", "3", "--quiet"],
            &["--report", enc_report.to_str().unwrap()],
            &["--model-out", enc_model.to_str().unwrap()],
            &TEST_KEYS[..],
        ]
        .concat(),
    );
    p.expect_success(3 * MIN);
    let r = read_json(&enc_report);
    assert_eq!(r["arch"], arch, "{r}");
    assert_eq!(r["protocol"], "v2", "{r}");
    assert_eq!(r["max_abs_weight_diff"].as_f64(), Some(0.0), "{r}");
    assert_eq!(r["test_accuracy"], r["plaintext_test_accuracy"], "{r}");
    assert_eq!(
        std::fs::read(&enc_model).unwrap(),
        std::fs::read(&model).unwrap(),
        "the encrypted run's model is the reference's"
    );

    // Encrypted inference of the conv model (one sample per request: its conv layer's
    // output positions packed in slots) classifies as the plaintext model does; served with
    // weights rounded to 2^-12, as the rounded model does (its plaintext accuracy is
    // computed from the same rounded model).
    for extra in [&[][..], &["--weight-frac-bits", "12"][..]] {
        let infer_report = dir.join("infer.json");
        let mut p = run(
            "arch infer",
            &[
                &["infer", "--model", model.to_str().unwrap()][..],
                &["--dataset", &data, "--batch", "1", "--limit", "6"],
                &["--report", infer_report.to_str().unwrap()],
                extra,
                &TEST_KEYS[..],
            ]
            .concat(),
        );
        p.expect_success(3 * MIN);
        let r = read_json(&infer_report);
        assert_eq!(r["samples"], 6, "{extra:?}: {r}");
        assert_eq!(r["accuracy"], r["plaintext_accuracy"], "{extra:?}: {r}");
        // The single-sample latency, and no preparation figure without --preprocess.
        let median = r["median_batch_secs"].as_f64().unwrap_or(0.0);
        assert!(
            median > 0.0 && median <= r["max_batch_secs"].as_f64().unwrap_or(0.0),
            "{r}"
        );
        assert!(r.get("median_preparation_secs").is_none(), "{r}");
    }

    // Widths the model cannot be served at, and a remote server, are refused before any
    // key is made.
    for (extra, needle) in [
        (
            &[
                "--model",
                model.to_str().unwrap(),
                "--weight-frac-bits",
                "0",
            ][..],
            "fractional bits",
        ),
        (
            &[
                "--model",
                model.to_str().unwrap(),
                "--weight-frac-bits",
                "33",
            ][..],
            "fractional bits",
        ),
        (
            &[
                "--server",
                "127.0.0.1:9",
                "--server-cert",
                "missing.der",
                "--model-card",
                "missing.json",
                "--name",
                "x",
                "--token",
                "t",
                "--weight-frac-bits",
                "12",
            ][..],
            "a remote server chooses",
        ),
    ] {
        let mut p = run(
            "arch infer bad weight bits",
            &[&["infer"][..], extra, &["--dataset", &data], &TEST_KEYS[..]].concat(),
        );
        let err = p.expect_failure(MIN);
        assert!(
            err.contains("--weight-frac-bits") && err.contains(needle),
            "{err}"
        );
    }
}

#[test]
fn bad_or_unsupported_architectures_are_refused_before_any_work() {
    let dir = TempDir::new("arch-bad");
    let data = image_csv(&dir);
    let cases: [(&[&str], &str); 3] = [
        // --arch replaces --hidden and --activation.
        (
            &[
                "--arch",
                "conv3x3:2,relu,dense:2",
                "--hidden",
                "4",
                "--plaintext",
            ],
            "cannot be used with",
        ),
        (
            &["--arch", "conv3x3:x,relu,dense:2", "--plaintext"],
            "not a number",
        ),
        (
            &["--arch", "conv3x3:2,relu,meanpool,dense:2", "--plaintext"],
            "pooling must follow a convolution",
        ),
    ];
    for (extra, needle) in cases {
        let args = [
            &["train", "--dataset", &data, "--sessions", "1", "--quiet"][..],
            extra,
            &TEST_KEYS[..],
        ]
        .concat();
        let mut p = run("arch bad", &args);
        assert!(!p.wait(MIN).success(), "{extra:?} accepted");
        let err = p.stderr();
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    // Data that is not a square image.
    let mut p = run(
        "arch iris",
        &[
            "train",
            "--plaintext",
            "--dataset",
            "iris",
            "--arch",
            "conv1",
            "--quiet",
        ],
    );
    assert!(!p.wait(MIN).success());
    let err = p.stderr();
    assert!(err.contains("--arch"), "{err}");
}
