//! Data directory lookup. Kept in its own test binary (one test) because it
//! changes the process environment.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::path::{Path, PathBuf};

use gelunet_datasets::{resolve_data_dir, DATA_DIR_ENV};

#[test]
fn resolve_data_dir_precedence() {
    let saved = std::env::var_os(DATA_DIR_ENV);
    std::env::set_var(DATA_DIR_ENV, "/from/env");
    assert_eq!(
        resolve_data_dir(Some(Path::new("/explicit"))),
        PathBuf::from("/explicit")
    );
    assert_eq!(resolve_data_dir(None), PathBuf::from("/from/env"));
    std::env::set_var(DATA_DIR_ENV, "");
    assert_eq!(resolve_data_dir(None), PathBuf::from("data"));
    std::env::remove_var(DATA_DIR_ENV);
    assert_eq!(resolve_data_dir(None), PathBuf::from("data"));
    if let Some(v) = saved {
        std::env::set_var(DATA_DIR_ENV, v);
    }
}
