//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Directory holding the datasets, through the data directory mechanism
/// ([`gelunet_datasets::workspace_data_dir`]: `GELUNET_DATA_DIR`, else the checkout's `data/`).
pub fn shared_data_dir() -> PathBuf {
    gelunet_datasets::workspace_data_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// Writes `contents` to `dir/rel`, creating parent directories.
pub fn write_file(dir: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

/// Copies the real dataset file `rel` into `dir` after applying `edit` to its text.
pub fn copy_edited(dir: &Path, rel: &str, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(shared_data_dir().join(rel)).unwrap();
    write_file(dir, rel, edit(&text).as_bytes());
}

/// Asserts that `err` is [`gelunet_datasets::DatasetError::Malformed`] at `line`.
#[track_caller]
pub fn assert_malformed_at(err: &gelunet_datasets::DatasetError, line: usize) {
    assert!(
        matches!(err, gelunet_datasets::DatasetError::Malformed { line: l, .. } if *l == line),
        "expected a malformed line {line}: {err}"
    );
}

/// Gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// An uncompressed IDX image file with `n` images of `r`×`c` bytes (pixel value
/// = index mod 256) and the given magic number.
pub fn idx_images(magic: u32, n: u32, r: u32, c: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [magic, n, r, c] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v.extend((0..(n * r * c) as usize).map(|i| (i % 256) as u8));
    v
}

/// An uncompressed IDX label file.
pub fn idx_labels(magic: u32, labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}
