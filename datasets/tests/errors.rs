//! Missing and malformed files give the typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::path::Path;

use common::{assert_malformed_at, copy_edited, gzip, idx_images, idx_labels, write_file};
use gelunet_datasets::*;

#[test]
fn missing_data_dir_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    // MNIST is not built in; the loaders of the built-in datasets still need their file.
    let mnist = load_by_name("mnist", &missing, &LoadOptions::default()).unwrap_err();
    assert!(mnist.to_string().contains("--mirror"), "{mnist}");
    let strict = [
        load_iris(&missing).unwrap_err(),
        load_pima(&missing).unwrap_err(),
        load_kr_vs_kp(&missing).unwrap_err(),
    ];
    for (name, err) in ["mnist", "iris", "pima", "kr-vs-kp"]
        .iter()
        .zip([mnist].into_iter().chain(strict))
    {
        let DatasetError::MissingFile { ref path, ref hint } = err else {
            panic!("{name}: expected MissingFile, got {err:?}");
        };
        assert!(path.starts_with(&missing), "{name}: {}", path.display());
        assert!(hint.contains("no-such-dir"), "{hint}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("scripts/fetch-datasets.sh"), "{msg}");
        assert!(msg.contains("--data-dir"), "{msg}");
        assert!(msg.contains("GELUNET_DATA_DIR"), "{msg}");
    }
    let err = load_iris(&missing).unwrap_err();
    assert!(err.to_string().contains("iris.data"), "{err}");
}

#[test]
fn missing_single_file_in_existing_dir() {
    let dir = tempfile::tempdir().unwrap();
    // Only the test labels are missing.
    for f in [MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS, MNIST_TEST_IMAGES] {
        std::fs::create_dir_all(dir.path().join("mnist")).unwrap();
        std::fs::copy(common::shared_data_dir().join(f), dir.path().join(f)).unwrap();
    }
    let opts = MnistOptions {
        max_train: Some(10),
        max_test: Some(10),
    };
    let err = load_mnist(dir.path(), opts).unwrap_err();
    match err {
        DatasetError::MissingFile { ref path, .. } => {
            assert_eq!(path, &dir.path().join(MNIST_TEST_LABELS))
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte.gz"));
    let err = load_csv(&dir.path().join("nope.csv"), &CsvOptions::default()).unwrap_err();
    assert!(matches!(err, DatasetError::MissingFile { .. }), "{err}");
}

#[test]
fn iris_bad_numeric_value() {
    let dir = tempfile::tempdir().unwrap();
    copy_edited(dir.path(), IRIS_FILE, |t| {
        t.replacen("5.1,3.5,1.4,0.2", "5.1,3.5,abc,0.2", 1)
    });
    let err = load_iris(dir.path()).unwrap_err();
    match &err {
        DatasetError::Malformed { path, line, reason } => {
            assert_eq!(*line, 1);
            assert!(path.ends_with(IRIS_FILE));
            assert!(reason.contains("abc"), "{reason}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn iris_wrong_column_count_and_unknown_class() {
    let dir = tempfile::tempdir().unwrap();
    copy_edited(dir.path(), IRIS_FILE, |t| {
        t.replacen("4.9,3.0,1.4,0.2,", "4.9,3.0,1.4,", 1)
    });
    let err = load_iris(dir.path()).unwrap_err();
    assert_malformed_at(&err, 2);
    assert!(
        err.to_string().contains("expected 5 fields, found 4"),
        "{err}"
    );

    copy_edited(dir.path(), IRIS_FILE, |t| {
        t.replacen("Iris-setosa", "Iris-unknown", 1)
    });
    let err = load_iris(dir.path()).unwrap_err();
    assert_malformed_at(&err, 1);
}

#[test]
fn pima_and_kr_vs_kp_malformed() {
    let dir = tempfile::tempdir().unwrap();
    copy_edited(dir.path(), PIMA_FILE, |t| t.replacen("50,1\n", "50,2\n", 1));
    let err = load_pima(dir.path()).unwrap_err();
    assert_malformed_at(&err, 1);
    copy_edited(dir.path(), PIMA_FILE, |t| t.replacen("85,66", "85,x6", 1));
    let err = load_pima(dir.path()).unwrap_err();
    assert_malformed_at(&err, 2);

    // katri (attribute 15) = 'x' on the first row.
    copy_edited(dir.path(), KR_VS_KP_FILE, |t| {
        t.replacen("l,f,n,", "l,f,x,", 1)
    });
    let err = load_kr_vs_kp(dir.path()).unwrap_err();
    assert_malformed_at(&err, 1);
    assert!(err.to_string().contains("katri"), "{err}");
    write_file(dir.path(), KR_VS_KP_FILE, b"f,t,won\n");
    let err = load_kr_vs_kp(dir.path()).unwrap_err();
    assert_malformed_at(&err, 1);
    write_file(dir.path(), KR_VS_KP_FILE, b"\n");
    let err = load_kr_vs_kp(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::Malformed { .. }), "{err}");
}

/// A temporary directory holding a small, valid 4-file MNIST set ([`tiny_mnist`]).
fn tiny_mnist_dir(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_mnist(dir.path(), n);
    dir
}

/// Writes a small, valid 4-file MNIST set (images `n`×2×2) into `dir`.
fn tiny_mnist(dir: &Path, n: u32) {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (img, lab) in [
        (MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS),
        (MNIST_TEST_IMAGES, MNIST_TEST_LABELS),
    ] {
        write_file(dir, img, &gzip(&idx_images(IDX_IMAGES_MAGIC, n, 2, 2)));
        write_file(dir, lab, &gzip(&idx_labels(IDX_LABELS_MAGIC, &labels)));
    }
}

/// Replaces the file `rel` of the MNIST set in `dir` by `contents` and returns the
/// loader's error.
fn mnist_error_with(dir: &Path, rel: &str, contents: &[u8]) -> DatasetError {
    write_file(dir, rel, contents);
    load_mnist(dir, MnistOptions::default()).unwrap_err()
}

#[test]
fn tiny_mnist_loads() {
    let dir = tiny_mnist_dir(12);
    let m = load_mnist(dir.path(), MnistOptions::default()).unwrap();
    assert_eq!(m.train.features.dim(), (12, 4));
    assert_eq!(m.train_total, 12);
    assert_eq!(
        m.train.features.row(1).to_vec(),
        vec![4.0 / 255.0, 5.0 / 255.0, 6.0 / 255.0, 7.0 / 255.0]
    );
    assert_eq!(m.test.labels[11], 1);
    assert_eq!(
        m.train.feature_names,
        vec!["px_0_0", "px_0_1", "px_1_0", "px_1_1"]
    );
}

#[test]
fn mnist_bad_magic() {
    let dir = tiny_mnist_dir(3);
    // A label file where an image file is expected.
    let err = mnist_error_with(
        dir.path(),
        MNIST_TRAIN_IMAGES,
        &gzip(&idx_labels(IDX_LABELS_MAGIC, &[1, 2, 3])),
    );
    match err {
        DatasetError::BadMagic {
            ref path,
            expected,
            found,
        } => {
            assert!(path.ends_with(MNIST_TRAIN_IMAGES));
            assert_eq!((expected, found), (0x803, 0x801));
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert!(err.to_string().contains("0x00000801"), "{err}");
}

#[test]
fn mnist_truncated_gzip() {
    let dir = tiny_mnist_dir(3);
    let gz = gzip(&idx_images(IDX_IMAGES_MAGIC, 50, 28, 28));
    write_file(dir.path(), MNIST_TEST_IMAGES, &gz[..gz.len() / 2]);
    let opts = MnistOptions::default();
    tiny_mnist_labels(dir.path(), 50);
    let err = load_mnist(dir.path(), opts).unwrap_err();
    match &err {
        DatasetError::BadBinary { path, reason } => {
            assert!(path.ends_with(MNIST_TEST_IMAGES));
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("expected BadBinary, got {other:?}"),
    }
    // The real file cut short: still a typed error, even with a limit that
    // stays inside the available data for the first samples.
    let real = std::fs::read(common::shared_data_dir().join(MNIST_TEST_IMAGES)).unwrap();
    write_file(dir.path(), MNIST_TEST_IMAGES, &real[..100_000]);
    tiny_mnist_labels(dir.path(), 10000);
    let err = load_mnist(dir.path(), opts).unwrap_err();
    assert!(matches!(err, DatasetError::BadBinary { .. }), "{err:?}");
    // ... while a limit inside the intact prefix loads fine.
    let ok = load_mnist(
        dir.path(),
        MnistOptions {
            max_train: None,
            max_test: Some(5),
        },
    )
    .unwrap();
    assert_eq!(ok.test.n_samples(), 5);
}

fn tiny_mnist_labels(dir: &Path, n: usize) {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    write_file(
        dir,
        MNIST_TEST_LABELS,
        &gzip(&idx_labels(IDX_LABELS_MAGIC, &labels)),
    );
}

#[test]
fn mnist_other_binary_errors() {
    let dir = tiny_mnist_dir(3);
    // Not gzip at all.
    let err = mnist_error_with(
        dir.path(),
        MNIST_TRAIN_LABELS,
        &idx_labels(IDX_LABELS_MAGIC, &[1, 2, 3]),
    );
    assert!(matches!(err, DatasetError::BadBinary { .. }), "{err:?}");
    // Label count differs from image count.
    let err = mnist_error_with(
        dir.path(),
        MNIST_TRAIN_LABELS,
        &gzip(&idx_labels(IDX_LABELS_MAGIC, &[1, 2])),
    );
    assert!(matches!(err, DatasetError::BadBinary { .. }), "{err:?}");
    // Label out of range.
    let err = mnist_error_with(
        dir.path(),
        MNIST_TRAIN_LABELS,
        &gzip(&idx_labels(IDX_LABELS_MAGIC, &[1, 2, 10])),
    );
    assert!(err.to_string().contains("label 10"), "{err}");
    // Trailing bytes after the declared data.
    let mut labels = idx_labels(IDX_LABELS_MAGIC, &[1, 2, 3]);
    labels.push(4);
    let err = mnist_error_with(dir.path(), MNIST_TRAIN_LABELS, &gzip(&labels));
    assert!(err.to_string().contains("trailing"), "{err}");
    // Corrupted compressed payload (CRC / deflate error).
    let mut gz = gzip(&idx_labels(IDX_LABELS_MAGIC, &[1, 2, 3]));
    let last = gz.len() - 5;
    gz[last] ^= 0xff; // inside the CRC32 trailer
    let err = mnist_error_with(dir.path(), MNIST_TRAIN_LABELS, &gz);
    assert!(matches!(err, DatasetError::BadBinary { .. }), "{err:?}");
}

#[test]
fn mnist_header_of_huge_or_no_images_is_refused_before_allocating() {
    let dir = tiny_mnist_dir(3);
    // A header that declares 0 images of 65536 × 65536 pixels (found by the decoder fuzz
    // harness: it used to allocate one feature name per declared pixel).
    let mut huge = Vec::new();
    for w in [IDX_IMAGES_MAGIC, 0, 65536, 65536] {
        huge.extend_from_slice(&w.to_be_bytes());
    }
    let err = mnist_error_with(dir.path(), MNIST_TRAIN_IMAGES, &gzip(&huge));
    assert!(err.to_string().contains("pixels per image"), "{err}");
    write_file(
        dir.path(),
        MNIST_TRAIN_LABELS,
        &gzip(&idx_labels(IDX_LABELS_MAGIC, &[])),
    );
    let err = mnist_error_with(
        dir.path(),
        MNIST_TRAIN_IMAGES,
        &gzip(&idx_images(IDX_IMAGES_MAGIC, 0, 2, 2)),
    );
    assert!(err.to_string().contains("no image"), "{err}");
}
