//! `gelunet bench paper --quick --parts 5` end to end: the tables of the other schemes
//! (PROUD, SecureNets, complement and partition) next to GELU-Net, on both workloads,
//! are written, every scheme's outputs equal its plaintext computation, and the leakage
//! measurements are in range.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use gelunet_bench::PaperConfig;

#[test]
fn quick_part_5_writes_the_scheme_tables() {
    let out = std::env::temp_dir().join(format!("gelunet-schemes-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let data_dir = gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let config = PaperConfig {
        command: "test quick part 5".into(),
        verbose: true,
        ..PaperConfig::quick(out.clone(), data_dir, vec![5])
    };
    let report = gelunet_bench::run(&config).expect("quick run");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let s = report.schemes.as_ref().expect("part 5");
    assert_eq!(s.workloads.len(), 2);
    let names: Vec<&str> = s.workloads[0]
        .rows
        .iter()
        .map(|r| r.scheme.as_str())
        .collect();
    assert_eq!(names, ["GELU-Net", "PROUD (BFV for CKKS)", "SecureNets"]);
    for w in &s.workloads {
        for r in &w.rows {
            assert_ne!(
                r.exact,
                Some(false),
                "{} on {} is not exact",
                r.scheme,
                w.name
            );
            assert!(
                r.accuracy.is_some_and(|a| a > 0.5),
                "{}: {:?}",
                r.scheme,
                r.accuracy
            );
            assert!(!r.parameters.is_empty() && !r.hides.is_empty());
        }
    }
    for r in &s.workloads[0].rows {
        assert!(
            r.latency_secs > 0.0 && r.bytes_up > 0 && r.bytes_down > 0,
            "{r:?}"
        );
    }
    // The binary task has its GELU-Net row, encrypted and exact, with its split.
    let binary: Vec<&str> = s.workloads[1]
        .rows
        .iter()
        .map(|r| r.scheme.as_str())
        .collect();
    assert_eq!(
        binary,
        [
            "GELU-Net",
            "unsplit model (no protection)",
            "complement and partition"
        ]
    );
    let gelu = &s.workloads[1].rows[0];
    assert_eq!(gelu.exact, Some(true), "{gelu:?}");
    assert!(gelu.accuracy.is_some_and(|a| a > 0.8), "{gelu:?}");
    let split = gelu.split.expect("GELU-Net split on the binary task");
    assert!(split.server_secs > 0.0 && split.bytes_up > 0 && split.bytes_down > 0);
    assert!(
        gelu.parameters.starts_with("784-32-16-2 "),
        "{}",
        gelu.parameters
    );
    assert!(gelu.leakage.contains("ciphertexts only"));
    let proud = s.workloads[0].rows[1].split.expect("PROUD split");
    assert!(proud.server_secs > 0.0 && proud.bytes_up > 0);
    // Freivalds: the detection rate of one altered entry is near 1 − 2^−c.
    for d in &s.detection {
        let sd = (d.expected * (1.0 - d.expected) / d.trials as f64).sqrt();
        assert!((d.rate - d.expected).abs() < 5.0 * sd + 1e-9, "{d:?}");
    }
    // The ratio attack recovers most of the masked MNIST input.
    let attack = s.ratio_attack.as_ref().unwrap();
    assert!(attack.exact_fraction > 0.5, "{attack:?}");
    let leak = s.complement.as_ref().unwrap();
    assert!((0.3..0.7).contains(&leak.output_as_label), "{leak:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## 5.")
            && md.contains("Table 3 split")
            && md.contains("SecureNets verification")
    );
    let png = std::fs::read(out.join(s.plot.as_ref().unwrap())).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let _ = std::fs::remove_dir_all(&out);
}
