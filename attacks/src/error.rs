//! The error type of the attacks.

/// Anything that can stop an attack run.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The server role refused something.
    #[error("server: {0}")]
    Server(#[from] gelunet_server::ServerError),
    /// The in-memory simulation failed (either party, or a broken invariant).
    #[error("simulation: {0}")]
    Sim(#[from] gelunet_sim::SimError),
    /// The client role refused something.
    #[error("client: {0}")]
    Client(#[from] gelunet_client::ClientError),
    /// Protocol configuration or fixed-point range.
    #[error("protocol: {0}")]
    Protocol(#[from] gelunet_protocol::Error),
    /// Key generation.
    #[error("paillier: {0}")]
    Paillier(#[from] gelunet_paillier::Error),
    /// Loading a dataset.
    #[error("dataset: {0}")]
    Dataset(#[from] gelunet_datasets::DatasetError),
    /// Drawing or encoding a PNG.
    #[error("plot: {0}")]
    Plot(#[from] gelunet_plot::PlotError),
    /// Writing a report.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A bad setting or an unexpected protocol flow.
    #[error("{0}")]
    Invalid(String),
}

/// Result with [`AttackError`].
pub type Result<T, E = AttackError> = std::result::Result<T, E>;
