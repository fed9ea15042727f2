//! `gelunet bench train` on Iris with test-only keys: the report's figures add up and the
//! encrypted run equals the reference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use gelunet_bench::pipeline::MnistLimits;
use gelunet_bench::train_throughput::{render, run_train, TrainBenchConfig};
use gelunet_bench::BenchError;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::LearningRateSchedule;

fn config(protocol: Protocol) -> TrainBenchConfig {
    TrainBenchConfig {
        data_dir: gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR"))),
        dataset: "iris".into(),
        hidden: vec![5],
        arch: None,
        clients: 3,
        batch: Some(4),
        sessions: 2,
        key_bits: 256,
        allow_test_keys: true,
        protocol,
        lr: 0.2,
        lr_schedule: LearningRateSchedule::Constant,
        mnist: MnistLimits { train: 0, test: 0 },
        seed: 3,
    }
}

#[test]
fn train_bench_reports_a_consistent_split() {
    for protocol in [Protocol::V2, Protocol::Paper] {
        let r = run_train(&config(protocol)).unwrap();
        assert!(r.identical_to_reference);
        assert_eq!(r.widths, vec![4, 5, 3]);
        assert_eq!(r.sessions, 2);
        assert!(r.iterations >= 2, "{}", r.iterations);
        assert_eq!(r.samples, r.iterations * 4);
        assert!(r.samples_per_second > 0.0);
        let expected_epoch = r.epoch_samples as f64 / r.samples_per_second;
        assert!((r.epoch_seconds_extrapolated - expected_epoch).abs() < 1e-9 * expected_epoch);
        let has = |party: &str, message: &str| {
            r.split
                .iter()
                .any(|p| p.party == party && p.message == message && p.seconds_per_iteration > 0.0)
        };
        assert!(has("server", "ForwardRequest"));
        assert!(has("server", "BackwardRequest"));
        assert!(has("client", "ForwardResponse"));
        // Multi-iteration sessions send updates, the last iteration ends the session.
        let (update, last) = if protocol == Protocol::V2 {
            ("PlainUpdate", "Rollover")
        } else {
            ("MaskedUpdate", "FinalUpdate")
        };
        assert!(has("server", last), "{:?}", r.split);
        assert!(
            r.iterations == r.sessions || has("server", update),
            "{:?}",
            r.split
        );
        // The parties take turns: their handlers never add up to more than the wall time.
        let server: f64 = r
            .split
            .iter()
            .filter(|p| p.party == "server")
            .map(|p| p.share)
            .sum();
        assert!(server > 0.0 && server <= 1.0 + 1e-9, "{server}");
        assert!(r.bytes_to_server_per_iteration > 0.0 && r.bytes_to_client_per_iteration > 0.0);
        let table = render(&r);
        assert!(table.contains("| server | ForwardRequest |"), "{table}");
        assert!(table.contains("samples/s"));
    }
}

/// With a schedule the sessions run at falling rates, and the encrypted run still equals
/// the reference that follows the same rates (under both protocols).
#[test]
fn train_bench_follows_the_learning_rate_schedule() {
    for protocol in [Protocol::V2, Protocol::Paper] {
        let c = TrainBenchConfig {
            sessions: 6,
            lr_schedule: "cosine:1".parse().unwrap(),
            ..config(protocol)
        };
        let r = run_train(&c).unwrap();
        assert!(r.identical_to_reference, "{protocol:?}");
        assert_eq!(r.lr_schedule, "cosine:1");
        assert_eq!(r.session_rates.len(), 6);
        // The first session runs at η; the later ones lower, never rising.
        assert!(
            (r.session_rates[0] - 0.2).abs() < 1e-4,
            "{:?}",
            r.session_rates
        );
        assert!(
            r.session_rates[5] < r.session_rates[0],
            "{:?}",
            r.session_rates
        );
        assert!(
            r.session_rates.windows(2).all(|w| w[1] <= w[0]),
            "{:?}",
            r.session_rates
        );
        assert!(
            render(&r).contains(", η schedule cosine:1 (0.2000 → "),
            "{}",
            render(&r)
        );
    }
    let constant = run_train(&config(Protocol::V2)).unwrap();
    assert_eq!(constant.lr_schedule, "constant");
    assert!(constant
        .session_rates
        .iter()
        .all(|&e| (e - 0.2).abs() < 1e-4));
    assert!(!render(&constant).contains("η schedule"));
}

/// Without `batch`, the run takes the largest mini-batch `gelunet train` would.
#[test]
fn train_bench_defaults_to_the_largest_batch() {
    let c = TrainBenchConfig {
        batch: None,
        sessions: 1,
        key_bits: 512,
        ..config(Protocol::V2)
    };
    let r = run_train(&c).unwrap();
    let spec =
        gelunet_protocol::ModelSpec::new(r.widths.clone(), gelunet_protocol::Activation::Sigmoid);
    let largest = gelunet_protocol::packing::largest_batch_size(
        &spec,
        &gelunet_protocol::Scales::default(),
        512,
    );
    assert!(largest > 1, "{largest}");
    assert_eq!(r.batch, largest);
    assert_eq!(r.samples, r.iterations * largest);
    assert!(r.identical_to_reference);
}

#[test]
fn train_bench_refuses_empty_runs() {
    for bad in [
        TrainBenchConfig {
            sessions: 0,
            ..config(Protocol::V2)
        },
        TrainBenchConfig {
            hidden: vec![],
            ..config(Protocol::V2)
        },
        TrainBenchConfig {
            batch: Some(0),
            ..config(Protocol::V2)
        },
    ] {
        assert!(matches!(run_train(&bad), Err(BenchError::Config(_))));
    }
    // Test-size keys without permission.
    let r = run_train(&TrainBenchConfig {
        allow_test_keys: false,
        ..config(Protocol::V2)
    });
    assert!(r.is_err());
}

/// `--arch`: a small conv net on MNIST trains encrypted, equal to the reference, and the
/// report names it; data that is not a square image is refused before any key.
#[test]
fn train_bench_runs_a_conv_architecture() {
    let arch: gelunet_protocol::arch::Arch = "conv5x5s3:2,meanpool,relu,dense:10".parse().unwrap();
    let c = TrainBenchConfig {
        dataset: "mnist".into(),
        arch: Some(arch.clone()),
        batch: Some(2),
        sessions: 1,
        mnist: MnistLimits {
            train: 60,
            test: 10,
        },
        ..config(Protocol::V2)
    };
    let r = run_train(&c).unwrap();
    assert!(r.identical_to_reference);
    assert_eq!(r.arch.as_deref(), Some(arch.to_string().as_str()));
    // 28×28, 5×5 stride 3: 8×8 positions pooled to 4×4, two filters.
    assert_eq!(r.widths, vec![784, 32, 10]);
    assert!(render(&r).contains(&arch.to_string()));
    let bad = TrainBenchConfig {
        dataset: "pima".into(),
        arch: Some(arch),
        ..config(Protocol::V2)
    };
    let err = run_train(&bad).unwrap_err();
    assert!(
        matches!(err, BenchError::Config(_)) && err.to_string().contains("square"),
        "{err}"
    );
}
