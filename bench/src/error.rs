//! The crate's error type.

use thiserror::Error;

/// Everything that can stop a benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    /// Invalid configuration (flags).
    #[error("configuration: {0}")]
    Config(String),
    /// A dataset could not be loaded or prepared.
    #[error("dataset: {0}")]
    Dataset(#[from] gelunet_datasets::DatasetError),
    /// The protocol math or codec failed.
    #[error("protocol: {0}")]
    Protocol(#[from] gelunet_protocol::Error),
    /// The server role failed.
    #[error("server: {0}")]
    Server(#[from] gelunet_server::ServerError),
    /// The in-memory simulation failed (either party, or a broken invariant).
    #[error("simulation: {0}")]
    Sim(#[from] gelunet_sim::SimError),
    /// The client role failed.
    #[error("client: {0}")]
    Client(#[from] gelunet_client::ClientError),
    /// The cryptosystem failed.
    #[error("paillier: {0}")]
    Paillier(#[from] gelunet_paillier::Error),
    /// A baseline failed.
    #[error("baseline: {0}")]
    Baseline(#[from] gelunet_baselines::BaselineError),
    /// The QUIC transport failed.
    #[error("network: {0}")]
    Net(#[from] gelunet_net::NetError),
    /// Writing the report failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// JSON encoding failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(#[from] gelunet_plot::PlotError),
    /// A check the benchmark makes on its own results failed (e.g. the encrypted run
    /// differs from the reference, or BFV predictions differ from plaintext).
    #[error("check failed: {0}")]
    Check(String),
}

/// Result with [`BenchError`].
pub type Result<T> = std::result::Result<T, BenchError>;
