//! The crate's error type.

use std::path::PathBuf;

use gelunet_client::ClientError;
use gelunet_datasets::DatasetError;
use gelunet_net::NetError;
use gelunet_server::ServerError;
use gelunet_shell::client::ClientShellError;
use gelunet_shell::server::ServerShellError;

use crate::model_file::ModelFileError;

/// Everything a run can fail with. Messages name the command-line option or the file at
/// fault; none carries a token, a private key or other secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A configuration value that is out of range or inconsistent, refused before any
    /// work (in particular before any key is generated).
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The command-line option it comes from (e.g. `--epochs`).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Test-size keys were asked for (`--insecure-test-keys`), but this build has no
    /// test-only keys (paillier's `hazmat` feature, off in shipping builds).
    #[error(
        "--key-bits {bits} --insecure-test-keys: this gelunet was built without test-only keys; \
         rebuild it with `--features insecure-test-keys` (tests and experiments only)"
    )]
    TestKeysUnavailable {
        /// The requested size of `N`, in bits.
        bits: u64,
    },
    /// Loading, splitting or standardizing the data.
    #[error("dataset: {0}")]
    Dataset(#[from] DatasetError),
    /// Generating a Paillier key pair.
    #[error("key generation: {0}")]
    KeyGeneration(#[source] gelunet_paillier::Error),
    /// A key file that does not hold a usable private key.
    #[error("--key-file `{}`: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: gelunet_paillier::Error,
    },
    /// A python-paillier JSON key or ciphertext file that was refused (the error never
    /// quotes a private key).
    #[error("`{}`: {source}", path.display())]
    PheJson {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: gelunet_paillier::phe_json::PheJsonError,
    },
    /// A figure of `--plot` that could not be drawn or written.
    #[error("--plot `{}`: {source}", path.display())]
    Plot {
        /// The figure's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: gelunet_plot::PlotError,
    },
    /// An output file that exists already (key files are replaced only when asked to).
    #[error("`{}` exists already: pass --force to replace it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A values file (`gelunet keys encrypt --input`) that does not hold numbers.
    #[error("`{}`: {reason}", path.display())]
    Values {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line and column (or the JSON position).
        reason: String,
    },
    /// A file-system error.
    #[error("{what} `{}`: {source}", path.display())]
    Io {
        /// What was being done (an option name or an operation).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A malformed credential (`NAME:TOKEN`); `at` says where it came from.
    #[error("{at}credential{}: {reason}", .name.as_ref().map(|n| format!(" `{n}`")).unwrap_or_default())]
    Credential {
        /// `FILE:LINE: ` for a tokens file, empty for a command-line value.
        at: String,
        /// The credential's name part, if it has one (never its token).
        name: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// The server role refused its configuration or failed.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// A client role refused its configuration.
    #[error("client {name}: {source}")]
    Client {
        /// The client's name or index.
        name: String,
        /// The error.
        #[source]
        source: ClientError,
    },
    /// The server's QUIC shell failed.
    #[error("server: {0}")]
    ServerShell(#[from] ServerShellError),
    /// A client's QUIC shell failed (refused, unreachable, lost).
    #[error("client `{name}`: {source}")]
    ClientShell {
        /// The client's name.
        name: String,
        /// The error.
        #[source]
        source: ClientShellError,
    },
    /// Encrypted inference failed.
    #[error("inference: {0}")]
    Inference(#[source] ClientShellError),
    /// Transport, certificate or identity errors; `what` names the option or step.
    #[error("{what}: {source}")]
    Net {
        /// The option or step (e.g. `--server-cert`).
        what: &'static str,
        /// The error.
        #[source]
        source: NetError,
    },
    /// A server address that does not resolve.
    #[error("--server {addr}: {reason}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// Fixed-point, model or reference errors; `what` says where.
    #[error("{what}: {source}")]
    Protocol {
        /// Where (e.g. `quantizing iris`, `evaluation`, `reference`).
        what: String,
        /// The error.
        #[source]
        source: gelunet_protocol::Error,
    },
    /// A model file or model card that was refused, or could not be written.
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    /// A checkpoint (`STATE_DIR/checkpoint.bin`), or a key file of `train --state-dir`
    /// ([`crate::train_state`]), that was refused: missing, truncated, corrupt, of
    /// another format, undecodable, or of another run (model, dataset, protocol,
    /// clients, keys). It is left as it is.
    #[error("`{}` is not a checkpoint this run can resume: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Ctrl-C or SIGTERM stopped the command at a safe point; what it wrote says how
    /// to continue.
    #[error("interrupted: {resume}")]
    Interrupted {
        /// How to continue (the checkpoint and the command), or that there is nothing
        /// to resume.
        resume: String,
    },
    /// Data that does not fit the model (classes, feature count, no samples).
    #[error("{reason}")]
    DataMismatch {
        /// What does not fit.
        reason: String,
    },
    /// The async runtime could not start.
    #[error("tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A task of the in-process run panicked or was cancelled.
    #[error("{what} task: {source}")]
    Task {
        /// `server` or `client`.
        what: &'static str,
        /// The error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

impl RunError {
    /// A refused option value.
    pub fn option(option: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidOption {
            option,
            reason: reason.into(),
        }
    }

    /// A [`gelunet_protocol::Error`] in context.
    pub(crate) fn protocol(
        what: impl Into<String>,
    ) -> impl FnOnce(gelunet_protocol::Error) -> Self {
        let what = what.into();
        move |source| Self::Protocol { what, source }
    }

    /// A [`NetError`] in context.
    pub(crate) fn net(what: &'static str) -> impl FnOnce(NetError) -> Self {
        move |source| Self::Net { what, source }
    }

    /// An I/O error on `path` in context.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}
