//! `gelunet attack`: gradient inversion (paper §4.3) and model extraction (paper §4.1).

/// Arguments of `gelunet attack`.
#[derive(Debug, clap::Args)]
pub struct AttackArgs {}

/// Runs `gelunet attack`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: AttackArgs) -> Result<(), String> {
    Err("gelunet attack is not implemented yet".into())
}
