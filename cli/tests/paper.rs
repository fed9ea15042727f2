//! `gelunet bench paper` run as a user would (quick mode, part 1 only: the library's
//! own tests in `bench/tests` cover every part).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod net_support;

use net_support::{data_dir, gelunet, output_ok};

#[test]
fn bench_paper_quick_part1_writes_report_and_plots() {
    let out = std::env::temp_dir().join(format!("gelunet-cli-paper-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    output_ok(
        gelunet()
            .args([
                "bench", "paper", "--quick", "--parts", "1", "--quiet", "--out",
            ])
            .arg(&out)
            .arg("--data-dir")
            .arg(data_dir()),
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## 1. Training stability"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["environment"]["quick"], true);
    for w in [5, 12] {
        let png = std::fs::read(out.join(format!("stability_hidden{w}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
}

#[test]
fn bench_paper_refuses_test_keys_without_quick() {
    let out = gelunet()
        .args([
            "bench",
            "paper",
            "--key-bits",
            "512",
            "--parts",
            "3",
            "--quiet",
        ])
        .arg("--out")
        .arg(std::env::temp_dir().join("gelunet-cli-paper-refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("test-size keys"));
}
