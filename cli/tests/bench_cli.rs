//! The `gelunet bench paillier` report, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use net_support::{gelunet, output_ok};

#[test]
fn bench_paillier_json_reports_every_operation() {
    let out = output_ok(gelunet().args([
        "bench",
        "paillier",
        "--key-bits",
        "512",
        "--seconds",
        "0.02",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["key_bits"], 512);
    let ops: Vec<&str> = report["single_thread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    for op in [
        "keygen",
        "encrypt",
        "encrypt_crt",
        "decrypt",
        "decrypt_blinded",
        "add",
        "scalar_mul_32",
        "matvec_128x128",
    ] {
        assert!(ops.contains(&op), "missing {op} in {ops:?}");
    }
    for r in report["single_thread"].as_array().unwrap() {
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_rejects_bad_arguments() {
    let out = gelunet()
        .args(["bench", "paillier", "--seconds", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = gelunet()
        .args([
            "bench",
            "paillier",
            "--key-bits",
            "100",
            "--seconds",
            "0.01",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("below the minimum"));
}
