//! `gelunet bench paper --quick` end to end (through the library), and the baselines'
//! claims: the trainer applies the activation it names, starts from GELU-Net's initial
//! weights, and the deployed square network's BFV predictions equal its plaintext ones.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gelunet_baselines::train::{FloatLayer, Sigmoid};
use gelunet_baselines::{
    FloatNet, FloatTrainer, HiddenActivation, PolyActivation, TrainActivation,
};
use gelunet_bench::{EncryptedSessions, PaperConfig, PaperReport};
use gelunet_protocol::{Activation, FixedModel, ModelSpec, Scales};
use ndarray::{array, Array2};

/// The data directory: `$GELUNET_DATA_DIR`, else `./data` of the workspace, else the
/// shared mirror beside the workspace.
fn data_dir() -> PathBuf {
    gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// One quick run shared by the tests of this file.
fn quick_run() -> &'static (PathBuf, PaperReport) {
    static RUN: OnceLock<(PathBuf, PaperReport)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("gelunet-paper-quick-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let config = PaperConfig::quick(out.clone(), data_dir(), vec![1, 2, 3, 4]);
        let report = gelunet_bench::run(&config).expect("quick run");
        (out, report)
    })
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000, "{} is too small", path.display());
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
}

#[test]
fn quick_report_and_plots_exist() {
    let (out, report) = quick_run();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for h in ["## 1.", "## 2.", "## 3.", "## 4."] {
        assert!(md.contains(h), "report.md lacks section {h}");
    }
    assert_eq!(json["environment"]["quick"], true);
    let stability = report.stability.as_ref().unwrap();
    assert_eq!(stability.plots.len(), 2, "one plot per width (5 and 12)");
    let mut plots: Vec<&String> = stability.plots.iter().collect();
    let acc_plot = report.accuracy.as_ref().unwrap().plot.as_ref().unwrap();
    plots.push(acc_plot);
    for p in plots {
        assert_png(&out.join(p));
        assert!(
            md.contains(&format!("]({p})")),
            "report.md does not show {p}"
        );
    }
    // Fig. 3: four schemes per (width, learning rate), losses from epoch 0.
    assert_eq!(stability.runs.len(), 2 * 2 * 4);
    assert!(stability
        .runs
        .iter()
        .all(|r| r.losses.len() == stability.epochs + 1));
    // At the large learning rate the square network diverges and GELU-Net does not.
    let big = stability.lrs.iter().copied().fold(0.0, f64::max);
    for r in stability.runs.iter().filter(|r| r.lr == big) {
        if r.scheme.starts_with("CryptoNets") {
            assert!(r.diverged, "{r:?}");
        }
        if r.scheme.starts_with("GELU-Net") {
            assert!(!r.diverged, "{r:?}");
        }
    }
}

#[test]
fn square_network_bfv_predictions_equal_plaintext() {
    let (_, report) = quick_run();
    let acc = report.accuracy.as_ref().unwrap();
    let iris = acc.rows.iter().find(|r| r.dataset == "iris").unwrap();
    let bfv = iris
        .bfv
        .as_ref()
        .expect("BFV check of the deployed square network");
    assert!(bfv.samples > 0);
    assert_eq!(
        bfv.agree, bfv.samples,
        "BFV predictions differ from plaintext"
    );
    assert!(bfv.logits_exact);
    // The encrypted GELU-Net run equalled its reference after every session.
    let enc = iris.encrypted.as_ref().expect("encrypted run");
    assert!(enc.identical_to_reference && enc.sessions > 0 && enc.iterations > 0);
    assert!(enc.test_keys, "quick mode uses test-size keys");
    // Part 4: both schemes' encrypted predictions equal their plaintext ones.
    let inf = report.inference.as_ref().unwrap();
    for row in &inf.rows {
        let g = row
            .gelu
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", row.gelu_error));
        let b = row
            .bfv
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", row.bfv_error));
        assert!(g.predictions_match_plaintext, "{row:?}");
        assert!(b.predictions_match_plaintext, "{row:?}");
        // Both latencies were measured, with the online ratio next to the plain one.
        for t in [g, b] {
            assert!(
                t.online_single_secs > 0.0 && t.offline_single_secs > 0.0,
                "{row:?}"
            );
        }
        assert!(row.latency_ratio.is_some() && row.online_latency_ratio.is_some());
    }
    // Part 3: every measurement was exact.
    let act = report.activation.as_ref().unwrap();
    assert!(act.gelu.iter().all(|g| g.correct));
    assert!(act.gelu.iter().any(|g| g.values_per_ciphertext > 1));
    assert!(act.bfv_square.correct && act.bfv_taylor5.correct);
}

#[test]
fn every_table_row_carries_its_parameters() {
    let (out, report) = quick_run();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let bits = format!("{} bits", report.environment.key_bits);
    let mut section = String::new();
    let mut rows = 0;
    for line in md.lines() {
        if line.starts_with("## ") {
            section = line.to_string();
            continue;
        }
        let is_row =
            line.starts_with("| ") && !line.starts_with("| --") && !line.starts_with("| |");
        let header = line.starts_with("| hidden |")
            || line.starts_with("| dataset |")
            || line.starts_with("| scheme |")
            || line.starts_with("| model |");
        if !is_row || header || section.is_empty() {
            continue;
        }
        rows += 1;
        assert!(line.contains("threads"), "{section}: no threads in {line}");
        assert!(line.contains("cores"), "{section}: no cores in {line}");
        if section.starts_with("## 1.") {
            assert!(line.contains("batch"), "{line}");
        }
        if section.starts_with("## 2.") {
            assert!(line.contains(&bits) && line.contains("batch"), "{line}");
            assert!(line.contains("BFV N = "), "{line}");
        }
        if section.starts_with("## 3.") {
            assert!(line.contains(&bits) || line.contains("N = "), "{line}");
            if line.contains("BFV") {
                assert!(line.contains("N = "), "{line}");
            }
        }
        if section.starts_with("## 4.") {
            assert!(line.contains(&bits) || line.contains("N = "), "{line}");
            if line.contains("CryptoNets") || line.contains("ratio") {
                assert!(line.contains("N = "), "{line}");
            }
        }
    }
    assert!(rows >= 16 + 1 + 8 + 3, "only {rows} table rows");
}

#[test]
fn trainer_uses_the_activation_it_claims() {
    for x in [-2.5, -1.0, 0.0, 0.3, 1.7] {
        let sq = TrainActivation::Poly(PolyActivation::Square);
        assert_eq!(sq.apply(x), x * x);
        assert_eq!(sq.derivative(x), 2.0 * x);
        let t3 = TrainActivation::Poly(PolyActivation::Taylor3);
        assert!((t3.apply(x) - (0.5 + x / 4.0 - x.powi(3) / 48.0)).abs() < 1e-15);
        let t5 = TrainActivation::Poly(PolyActivation::Taylor5);
        assert!(
            (t5.apply(x) - (0.5 + x / 4.0 - x.powi(3) / 48.0 + x.powi(5) / 480.0)).abs() < 1e-15
        );
        assert!((TrainActivation::Sigmoid.apply(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-15);
        assert!((Sigmoid.apply(x) - 1.0 / (1.0 + (-x).exp())).abs() < 1e-15);
    }
    assert_eq!(
        TrainActivation::Poly(PolyActivation::Square).name(),
        "square"
    );
    assert_eq!(
        TrainActivation::Poly(PolyActivation::Taylor5).name(),
        "taylor5"
    );

    // The network the trainer holds evaluates with that activation: z2 = W2·f(W1·x + b1) + b2.
    let net = FloatNet {
        widths: vec![2, 2, 2],
        layers: vec![
            FloatLayer {
                w: array![[1.0, 2.0], [-1.0, 0.5]],
                b: array![0.5, -1.0],
            },
            FloatLayer {
                w: array![[1.0, -1.0], [0.25, 2.0]],
                b: array![0.0, 1.0],
            },
        ],
    };
    let x: Array2<f64> = array![[1.0, -1.0], [0.5, 2.0]];
    for act in [
        TrainActivation::Poly(PolyActivation::Square),
        TrainActivation::Poly(PolyActivation::Taylor3),
        TrainActivation::Poly(PolyActivation::Taylor5),
        TrainActivation::Sigmoid,
    ] {
        let t = FloatTrainer::new(net.clone(), act, 0.1).unwrap();
        let z = t.net().logits(&t.activation(), x.view()).unwrap();
        for (s, row) in x.rows().into_iter().enumerate() {
            let h: Vec<f64> = (0..2)
                .map(|j| {
                    let l = &net.layers[0];
                    act.apply(l.w[[j, 0]] * row[0] + l.w[[j, 1]] * row[1] + l.b[j])
                })
                .collect();
            for c in 0..2 {
                let l = &net.layers[1];
                let want = l.w[[c, 0]] * h[0] + l.w[[c, 1]] * h[1] + l.b[c];
                assert!((z[[s, c]] - want).abs() < 1e-12, "{act:?}");
            }
        }
    }
    // The square network deployed as CryptoNets computes x² on integers.
    let sq = net.to_square_net(6, 6).unwrap();
    let xi = sq.quantize_inputs(&x).unwrap();
    let zf = sq.logits_to_f64(&sq.forward_plain(&xi).unwrap());
    let want = net
        .logits(&TrainActivation::Poly(PolyActivation::Square), x.view())
        .unwrap();
    for (a, b) in zf.iter().zip(want.iter()) {
        assert!((a - b).abs() < 0.2, "{a} vs {b}");
    }
}

#[test]
fn float_initialization_equals_gelunet_initialization() {
    let scales = Scales::default();
    for (widths, seed) in [(vec![4, 12, 3], 0u64), (vec![8, 300, 2], 7)] {
        let spec = ModelSpec::new(widths.clone(), Activation::Sigmoid);
        let fixed = FixedModel::init(&spec, &scales, seed).unwrap();
        let float = FloatNet::xavier(&widths, seed, Some(scales.fw)).unwrap();
        let s = f64::from(scales.fw).exp2();
        for (f, q) in float.layers.iter().zip(&fixed.layers) {
            for (a, &b) in f.w.iter().zip(q.w.iter()) {
                assert_eq!(a * s, b as f64);
            }
            assert!(f.b.iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn test_size_keys_need_quick_or_explicit_flag() {
    let out = std::env::temp_dir().join("gelunet-paper-refused");
    let config = PaperConfig {
        quick: false,
        key_bits: Some(512),
        encrypted_sessions: EncryptedSessions::None,
        ..PaperConfig::quick(out, data_dir(), vec![3])
    };
    let e = gelunet_bench::run(&config).unwrap_err().to_string();
    assert!(e.contains("test-size keys"), "{e}");
}
