//! `gelunet bench paper`: the paper's comparisons against the square-activation baselines.

/// Arguments of `gelunet bench paper`.
#[derive(Debug, clap::Args)]
pub struct PaperArgs {}

/// Runs `gelunet bench paper`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: PaperArgs) -> Result<(), String> {
    Err("gelunet bench paper is not implemented yet".into())
}
