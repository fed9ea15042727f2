//! Stratified train/test split, client split and standardization.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::collections::HashSet;

use common::shared_data_dir;
use gelunet_datasets::*;
use ndarray::{array, Array2, Axis};

fn toy(labels: Vec<usize>, n_classes: usize) -> Dataset {
    let n = labels.len();
    let features = Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f64);
    Dataset::new(
        "toy",
        features,
        labels,
        (0..n_classes).map(|c| c.to_string()).collect(),
        vec!["a".into(), "b".into()],
    )
    .unwrap()
}

#[test]
fn stratified_split_deterministic_and_seed_dependent() {
    let labels = load_pima(&shared_data_dir()).unwrap().labels;
    let a = stratified_split_indices(&labels, 0.2, 42).unwrap();
    let b = stratified_split_indices(&labels, 0.2, 42).unwrap();
    let c = stratified_split_indices(&labels, 0.2, 43).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.1, c.1);
    assert_ne!(a.0, c.0);
}

#[test]
fn stratified_split_partition_and_proportions() {
    let ds = load_pima(&shared_data_dir()).unwrap();
    let (train_idx, test_idx) = stratified_split_indices(&ds.labels, 0.2, 1).unwrap();
    let train_set: HashSet<_> = train_idx.iter().copied().collect();
    let test_set: HashSet<_> = test_idx.iter().copied().collect();
    assert_eq!(train_set.len(), train_idx.len(), "no duplicates in train");
    assert_eq!(test_set.len(), test_idx.len(), "no duplicates in test");
    assert!(train_set.is_disjoint(&test_set));
    let union: HashSet<_> = train_set.union(&test_set).copied().collect();
    assert_eq!(union, (0..ds.n_samples()).collect());

    let (train, test) = stratified_split(&ds, 0.2, 1).unwrap();
    // round(0.2*500) = 100, round(0.2*268) = 54.
    assert_eq!(test.class_counts(), vec![100, 54]);
    assert_eq!(train.class_counts(), vec![400, 214]);
    assert_eq!(train.name, "pima-train");
    assert_eq!(test.name, "pima-test");
    // Rows are carried with their labels.
    for (k, &i) in test_idx.iter().enumerate() {
        assert_eq!(test.features.row(k), ds.features.row(i));
        assert_eq!(test.labels[k], ds.labels[i]);
    }
    // Output is not left grouped by class.
    assert!(train.labels.windows(2).filter(|w| w[0] != w[1]).count() > 10);

    let iris = load_iris(&shared_data_dir()).unwrap();
    let (tr, te) = stratified_split(&iris, DEFAULT_TEST_FRACTION, 9).unwrap();
    assert_eq!(te.class_counts(), vec![10, 10, 10]);
    assert_eq!(tr.class_counts(), vec![40, 40, 40]);
}

#[test]
fn stratified_split_bad_fraction() {
    let ds = toy(vec![0, 1, 0, 1], 2);
    for f in [-0.1, 1.5, f64::NAN] {
        let err = stratified_split(&ds, f, 0).unwrap_err();
        assert!(matches!(err, DatasetError::BadOption { .. }), "{f}: {err}");
    }
}

fn assert_partition(clients: &[Vec<usize>], n: usize) {
    let mut seen = vec![0usize; n];
    for c in clients {
        for &i in c {
            seen[i] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 1), "every sample exactly once");
}

#[test]
fn client_split_equal_shares() {
    let ds = load_kr_vs_kp(&shared_data_dir()).unwrap();
    let clients = client_split_indices(&ds.labels, 3, None, 5).unwrap();
    assert_partition(&clients, ds.n_samples());
    let sizes: Vec<usize> = clients.iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 3196);
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
    // Class balance: each client's per-class count within 1 of 1/3 of the total.
    let parts = split_clients(&ds, 3, None, 5).unwrap();
    for p in &parts {
        let counts = p.class_counts();
        assert!((counts[0] as f64 - 1527.0 / 3.0).abs() <= 1.0, "{counts:?}");
        assert!((counts[1] as f64 - 1669.0 / 3.0).abs() <= 1.0, "{counts:?}");
    }
    assert_eq!(parts[2].name, "kr-vs-kp-client2");
    // Deterministic, seed-dependent.
    assert_eq!(
        clients,
        client_split_indices(&ds.labels, 3, None, 5).unwrap()
    );
    assert_ne!(
        clients,
        client_split_indices(&ds.labels, 3, None, 6).unwrap()
    );
}

#[test]
fn client_split_unequal_shares() {
    let ds = load_pima(&shared_data_dir()).unwrap();
    let shares = parse_client_shares("0.5, 0.3,0.2").unwrap();
    assert_eq!(shares, vec![0.5, 0.3, 0.2]);
    let clients = client_split_indices(&ds.labels, 3, Some(&shares), 11).unwrap();
    assert_partition(&clients, 768);
    let sizes: Vec<usize> = clients.iter().map(Vec::len).collect();
    // 768 × (0.5, 0.3, 0.2) = 384, 230.4, 153.6 → largest remainder 384, 230, 154.
    assert_eq!(sizes, vec![384, 230, 154]);
    let parts = split_clients(&ds, 3, Some(&shares), 11).unwrap();
    for (p, w) in parts.iter().zip(&shares) {
        let counts = p.class_counts();
        assert!((counts[0] as f64 - 500.0 * w).abs() <= 1.5, "{counts:?}");
        assert!((counts[1] as f64 - 268.0 * w).abs() <= 1.5, "{counts:?}");
    }
    // Single client gets everything.
    let one = client_split_indices(&ds.labels, 1, None, 0).unwrap();
    assert_eq!(one[0].len(), 768);
}

#[test]
fn client_split_errors() {
    let labels = vec![0, 1, 0, 1, 0];
    let bad = |r: Result<Vec<Vec<usize>>>| {
        assert!(matches!(r, Err(DatasetError::BadOption { .. })), "{r:?}");
    };
    bad(client_split_indices(&labels, 0, None, 0));
    bad(client_split_indices(&labels, 2, Some(&[]), 0));
    bad(client_split_indices(&labels, 2, Some(&[0.5, 0.3, 0.2]), 0));
    bad(client_split_indices(&labels, 2, Some(&[1.2, -0.2]), 0));
    bad(client_split_indices(&labels, 2, Some(&[0.5, 0.2]), 0));
    bad(client_split_indices(&labels, 2, Some(&[1.0, 0.0]), 0));
    bad(client_split_indices(&labels, 2, Some(&[0.5, f64::NAN]), 0));
    // More clients than samples: a clear error naming both counts.
    let err = client_split_indices(&labels, 6, None, 0).unwrap_err();
    assert!(matches!(err, DatasetError::TooLittleData { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("5 samples cannot be shared among 6 clients"),
        "{err}"
    );
    assert!(client_split_indices(&labels, 5, None, 0).is_ok());
    assert!(parse_client_shares("").is_err());
    assert!(parse_client_shares("0.5,x").is_err());
}

#[test]
fn standardizer_fits_on_train_only() {
    let ds = load_pima(&shared_data_dir()).unwrap();
    let (train, test) = stratified_split(&ds, 0.2, 3).unwrap();
    let (strain, stest, s) = standardize_train_test(&train, &test).unwrap();
    let mean = strain.features.mean_axis(Axis(0)).unwrap();
    let std = strain.features.std_axis(Axis(0), 0.0);
    assert!(mean.iter().all(|m| m.abs() < 1e-9), "{mean}");
    assert!(std.iter().all(|s| (s - 1.0).abs() < 1e-9), "{std}");
    // Test uses the training statistics (so its mean is not exactly 0).
    let expected = (&test.features - s.mean()) / s.std();
    assert!((&stest.features - &expected)
        .iter()
        .all(|d| d.abs() < 1e-12));
    let test_mean = stest.features.mean_axis(Axis(0)).unwrap();
    assert!(test_mean.iter().any(|m| m.abs() > 1e-3));
    assert_eq!(stest.labels, test.labels);
    let train_mean = train.features.mean_axis(Axis(0)).unwrap();
    assert!((s.mean() - &train_mean).iter().all(|d| d.abs() < 1e-12));
}

#[test]
fn standardizer_constant_column_and_errors() {
    let x = array![[1.0, 5.0], [3.0, 5.0]];
    let s = Standardizer::fit(&x).unwrap();
    assert_eq!(s.std().to_vec(), vec![1.0, 1.0]);
    assert_eq!(s.mean().to_vec(), vec![2.0, 5.0]);
    let y = s.transform(&x).unwrap();
    assert_eq!(y, array![[-1.0, 0.0], [1.0, 0.0]]);
    let err = s.transform(&array![[1.0, 2.0, 3.0]]).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }));
    let err = Standardizer::fit(&Array2::zeros((0, 3))).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }));
}

#[test]
fn dataset_new_checks_invariants() {
    let f = Array2::zeros((2, 1));
    assert!(Dataset::new("x", f.clone(), vec![0], vec!["a".into()], vec!["f".into()]).is_err());
    assert!(Dataset::new(
        "x",
        f.clone(),
        vec![0, 1],
        vec!["a".into()],
        vec!["f".into()]
    )
    .is_err());
    assert!(Dataset::new("x", f.clone(), vec![0, 0], vec!["a".into()], vec![]).is_err());
    let ds = Dataset::new("x", f, vec![0, 0], vec!["a".into()], vec!["f".into()]).unwrap();
    assert!(ds.select(&[2], "").is_err());
    assert_eq!(ds.one_hot_labels(), array![[1.0], [1.0]]);
}

/// A column almost constant on the training split cannot blow a test value out of the
/// fixed-point range: z-scores are clipped to ±CLIP_Z; training values (Samuelson's
/// bound sqrt(n−1) < CLIP_Z) are unchanged.
#[test]
fn standardizer_clips_outliers_of_near_constant_columns() {
    let mut x = Array2::zeros((100, 2));
    x[[0, 0]] = 0.01; // one tiny non-zero training value: std ≈ 0.001
    for i in 0..100 {
        x[[i, 1]] = i as f64;
    }
    let s = Standardizer::fit(&x).unwrap();
    let train = s.transform(&x).unwrap();
    let unclipped = (&x - s.mean()) / s.std();
    assert_eq!(train, unclipped, "no training value is clipped");
    let max = train.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(max <= 99f64.sqrt() + 1e-9, "{max}");
    // A test value of 1.0 in the first column would be about a 1000 standard deviations.
    let test = array![[1.0, 50.0], [-1.0, 1e9]];
    let t = s.transform(&test).unwrap();
    assert_eq!(t[[0, 0]], CLIP_Z);
    assert_eq!(t[[1, 0]], -CLIP_Z);
    assert_eq!(t[[1, 1]], CLIP_Z);
    assert!((t[[0, 1]] - unclipped_value(50.0, &s, 1)).abs() < 1e-12);
    assert!(standardize_value(f64::NAN, 0.0, 1.0).is_nan());
}

fn unclipped_value(x: f64, s: &Standardizer, j: usize) -> f64 {
    (x - s.mean()[j]) / s.std()[j]
}

/// Image data keeps its [0, 1] pixels (no standardization); tabular data is standardized.
#[test]
fn images_keep_their_pixels_tabular_data_is_standardized() {
    let dir = shared_data_dir();
    let opts = LoadOptions {
        mnist: MnistOptions {
            max_train: Some(60),
            max_test: Some(30),
        },
        ..LoadOptions::default()
    };
    let loaded = load_by_name("mnist", &dir, &opts).unwrap();
    assert!(loaded.is_image());
    let (raw_train, raw_test) = loaded.clone().into_train_test(0.2, 1).unwrap();
    let (train, test, s) = loaded.into_scaled_train_test(0.2, 1).unwrap();
    assert!(s.is_identity());
    assert_eq!(train, raw_train);
    assert_eq!(test, raw_test);
    assert!(train.features.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(train.features.iter().any(|&p| p == 1.0));

    let loaded = load_by_name("iris", &dir, &opts).unwrap();
    assert!(!loaded.is_image());
    let (raw_train, raw_test) = loaded.clone().into_train_test(0.2, 1).unwrap();
    let (train, test, s) = loaded.into_scaled_train_test(0.2, 1).unwrap();
    assert!(!s.is_identity());
    let (etrain, etest, es) = standardize_train_test(&raw_train, &raw_test).unwrap();
    assert_eq!((train, test, s), (etrain, etest, es));
}
