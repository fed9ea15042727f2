//! `gelunet bench paper --quick --parts 6` end to end: the Table 4 rows of Conv-1 and
//! LeNet-5 are written with their parameters, GELU-Net's encrypted predictions equal
//! the model in the clear, CryptoNets is left out with its reason (minutes per BFV conv
//! inference; its exactness is `gelunet-baselines`' `square_conv_bfv` test), and the
//! report and the plot name them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use gelunet_bench::PaperConfig;

#[test]
fn quick_part_6_writes_the_table_4_rows() {
    let out = std::env::temp_dir().join(format!("gelunet-conv-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let data_dir = gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let config = PaperConfig {
        command: "test quick part 6".into(),
        verbose: true,
        ..PaperConfig::quick(out.clone(), data_dir, vec![6])
    };
    let report = gelunet_bench::run(&config).expect("quick run");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let conv = report.conv.as_ref().expect("part 6");
    let names: Vec<&str> = conv.rows.iter().map(|r| r.network.as_str()).collect();
    assert_eq!(names, ["conv1", "lenet5"]);
    for r in &conv.rows {
        let g = r
            .gelu
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", r.network, r.gelu_error));
        assert!(g.predictions_match_plaintext, "{}", r.network);
        // The coarse-weight model: its encrypted predictions equal it in the clear.
        let c = r
            .coarse
            .as_ref()
            .unwrap_or_else(|| panic!("{}: {:?}", r.network, r.coarse_error));
        assert_eq!(
            c.weight_frac_bits,
            gelunet_bench::conv_table::SERVED_WEIGHT_BITS
        );
        assert!(c.timing.predictions_match_plaintext, "{}", r.network);
        assert!((0.0..=1.0).contains(&c.accuracy) && c.changed_predictions <= r.test_samples);
        assert!(g.single_secs > 0.0 && g.online_single_secs > 0.0, "{g:?}");
        let acc = r.gelu_accuracy.expect("accuracy");
        assert!((0.0..=1.0).contains(&acc) && r.train_samples > 0, "{r:?}");
        // CryptoNets takes minutes per conv inference: not in --quick, and it says so.
        assert!(r.cryptonets.is_none() && r.latency_ratio.is_none());
        assert_eq!(
            r.cryptonets_error.as_deref(),
            Some(gelunet_bench::conv_table::QUICK_SKIP)
        );
        assert!(r.parameters > 60_000, "{}: {}", r.network, r.parameters);
    }
    // Test-size keys: the targets are listed, not evaluated.
    assert!(!conv.targets.is_empty() && conv.targets.iter().all(|(_, ok)| ok.is_none()));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## 6. Convolutional networks") && md.contains("lenet5"),
        "{md}"
    );
    assert!(md.contains("1271.8"), "the paper's CryptoNets figure");
    assert!(md.contains("served with weights rounded to 2^-12"), "{md}");
    let plot = conv.plot.as_ref().expect("plot");
    assert!(out.join(plot).is_file());
    let _ = std::fs::remove_dir_all(&out);
}
