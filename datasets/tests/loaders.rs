//! The four dataset loaders against the shared copies, checked against the
//! counts in /work/shared/datasets/README.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::shared_data_dir;
use gelunet_datasets::*;

#[test]
fn iris_rows_classes_and_values() {
    let ds = load_iris(&shared_data_dir()).unwrap();
    assert_eq!(ds.name, "iris");
    assert_eq!(ds.features.dim(), (150, 4));
    assert_eq!(ds.labels.len(), 150);
    assert_eq!(ds.class_counts(), vec![50, 50, 50]);
    assert_eq!(
        ds.class_names,
        vec!["Iris-setosa", "Iris-versicolor", "Iris-virginica"]
    );
    assert_eq!(ds.feature_names.len(), 4);
    assert_eq!(ds.features.row(0).to_vec(), vec![5.1, 3.5, 1.4, 0.2]);
    // Row 35 keeps the UCI transcription error (iris.data, not bezdekIris.data).
    assert_eq!(ds.features.row(34).to_vec(), vec![4.9, 3.1, 1.5, 0.1]);
    assert_eq!(ds.labels[0], 0);
    assert_eq!(ds.labels[149], 2);
}

#[test]
fn pima_rows_classes_and_values() {
    let ds = load_pima(&shared_data_dir()).unwrap();
    assert_eq!(ds.features.dim(), (768, 8));
    assert_eq!(ds.class_counts(), vec![500, 268]);
    assert_eq!(ds.class_names, vec!["0", "1"]);
    assert_eq!(
        ds.features.row(0).to_vec(),
        vec![6.0, 148.0, 72.0, 35.0, 0.0, 33.6, 0.627, 50.0]
    );
    assert_eq!(ds.labels[0], 1);
    assert_eq!(ds.labels[1], 0);
    // README: 5 zeros in the glucose column (kept as in the file).
    let zeros = ds.features.column(1).iter().filter(|&&v| v == 0.0).count();
    assert_eq!(zeros, 5);
}

#[test]
fn kr_vs_kp_rows_classes_and_encoding() {
    let ds = load_kr_vs_kp(&shared_data_dir()).unwrap();
    assert_eq!(ds.features.dim(), (3196, 38));
    assert_eq!(ds.class_names, vec!["nowin", "won"]);
    assert_eq!(ds.class_counts(), vec![1527, 1669]);
    assert!(ds.features.iter().all(|&v| v == 0.0 || v == 1.0));
    let col = |name: &str| ds.feature_names.iter().position(|n| n == name).unwrap();
    let (b, n, w) = (col("katri=b"), col("katri=n"), col("katri=w"));
    for row in ds.features.rows() {
        assert_eq!(row[b] + row[n] + row[w], 1.0, "katri must be one-hot");
    }
    // First row: f,...,f,l(dwipd),f,n(katri),f,f,t(r2ar8),...,t,t,n(wtoeg),won
    let r0 = ds.features.row(0);
    assert_eq!(r0[col("bkblk=t")], 0.0);
    assert_eq!(r0[col("dwipd=l")], 1.0);
    assert_eq!((r0[b], r0[n], r0[w]), (0.0, 1.0, 0.0));
    assert_eq!(r0[col("r2ar8=t")], 1.0);
    assert_eq!(r0[col("wkpos=t")], 1.0);
    assert_eq!(r0[col("wtoeg=t")], 0.0);
    assert_eq!(ds.labels[0], 1);
    // Second row differs from the first only in bkspr.
    assert_eq!(ds.features.row(1)[col("bkspr=t")], 1.0);
    assert_eq!(r0[col("bkspr=t")], 0.0);
}

#[test]
fn mnist_full_test_split_and_limited_train() {
    let m = load_mnist(
        &shared_data_dir(),
        MnistOptions {
            max_train: Some(1000),
            max_test: None,
        },
    )
    .unwrap();
    assert_eq!(m.train_total, 60000);
    assert_eq!(m.test_total, 10000);
    assert_eq!(m.train.features.dim(), (1000, 784));
    assert_eq!(m.test.features.dim(), (10000, 784));
    assert_eq!(
        m.test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(m.train.labels[..8], [5, 0, 4, 1, 9, 2, 1, 3]);
    assert_eq!(m.test.labels[..4], [7, 2, 1, 0]);
    assert_eq!(m.train.class_names.len(), 10);
    for ds in [&m.train, &m.test] {
        assert!(ds.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(ds.features.iter().any(|&v| v == 1.0));
    }
    // The first training image (a 5) has ink near the middle, none in the corner.
    assert_eq!(m.train.features[(0, 0)], 0.0);
    assert!(m.train.features.row(0).sum() > 50.0);
}

#[test]
fn mnist_train_header_declares_60000() {
    let dir = shared_data_dir();
    let h = read_idx_header(&dir.join(MNIST_TRAIN_IMAGES), IDX_IMAGES_MAGIC).unwrap();
    assert_eq!(h.magic, 0x803);
    assert_eq!(h.dims, vec![60000, 28, 28]);
    let h = read_idx_header(&dir.join(MNIST_TRAIN_LABELS), IDX_LABELS_MAGIC).unwrap();
    assert_eq!(h.dims, vec![60000]);
}

#[test]
fn load_by_name_all_builtins_and_aliases() {
    let dir = shared_data_dir();
    let opts = LoadOptions {
        mnist: MnistOptions {
            max_train: Some(50),
            max_test: Some(20),
        },
        ..LoadOptions::default()
    };
    for (name, rows) in [
        ("iris", 150),
        ("IRIS", 150),
        ("pima", 768),
        ("diabetes", 768),
        ("pima-diabetes", 768),
        ("kr-vs-kp", 3196),
    ] {
        match load_by_name(name, &dir, &opts).unwrap() {
            Loaded::Single(ds) => assert_eq!(ds.n_samples(), rows, "{name}"),
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
    let (train, test) = load_by_name("mnist", &dir, &opts)
        .unwrap()
        .into_train_test(0.2, 1)
        .unwrap();
    assert_eq!((train.n_samples(), test.n_samples()), (50, 20));

    let (train, test) = load_by_name("iris", &dir, &opts)
        .unwrap()
        .into_train_test(DEFAULT_TEST_FRACTION, 7)
        .unwrap();
    assert_eq!((train.n_samples(), test.n_samples()), (120, 30));

    let csv = format!("csv:{}", dir.join(PIMA_FILE).display());
    match load_by_name(&csv, &dir, &opts).unwrap() {
        Loaded::Single(ds) => {
            assert_eq!(ds.features.dim(), (768, 8));
            assert_eq!(ds.class_counts(), vec![500, 268]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A relative csv: path is also looked up inside the data directory.
    match load_by_name(&format!("csv:{IRIS_FILE}"), &dir, &opts).unwrap() {
        Loaded::Single(ds) => assert_eq!(ds.class_counts(), vec![50, 50, 50]),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn load_by_name_unknown() {
    let err = load_by_name("cifar", &shared_data_dir(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DatasetError::UnknownDataset { ref name } if name == "cifar"));
    assert!(err.to_string().contains("kr-vs-kp"));
    let err = load_by_name("csv:", &shared_data_dir(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DatasetError::BadOption { .. }));
}
