//! `gelunet train`, `serve`, `join` and `infer`: GELU-Net over QUIC.

/// Arguments of `gelunet train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {}
/// Arguments of `gelunet serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}
/// Arguments of `gelunet join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {}
/// Arguments of `gelunet infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {}

/// Runs `gelunet train`.
///
/// # Errors
/// Not implemented yet.
pub fn train(_args: TrainArgs) -> Result<(), String> {
    Err("gelunet train is not implemented yet".into())
}
/// Runs `gelunet serve`.
///
/// # Errors
/// Not implemented yet.
pub fn serve(_args: ServeArgs) -> Result<(), String> {
    Err("gelunet serve is not implemented yet".into())
}
/// Runs `gelunet join`.
///
/// # Errors
/// Not implemented yet.
pub fn join(_args: JoinArgs) -> Result<(), String> {
    Err("gelunet join is not implemented yet".into())
}
/// Runs `gelunet infer`.
///
/// # Errors
/// Not implemented yet.
pub fn infer(_args: InferArgs) -> Result<(), String> {
    Err("gelunet infer is not implemented yet".into())
}
