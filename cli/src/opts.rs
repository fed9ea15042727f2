//! The options shared by `train`, `serve`, `join`, `infer` and `serve-model`, and their
//! conversion into the configurations of `gelunet-run`.

use gelunet_protocol::arch::Arch;
use gelunet_protocol::v2::Protocol;
use std::net::SocketAddr;
use std::path::PathBuf;

use gelunet_protocol::{Activation, ClientOrder, LearningRateSchedule, MaskMode};
use gelunet_run::{
    Credential, DataOptions, KeyOptions, ListenOptions, ModelOptions, NetOptions, OutputOptions,
};

/// Where the data comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Dataset: iris (train's default), pima, kr-vs-kp, mnist, or csv:PATH. Iris, Pima
    /// and kr-vs-kp are built in and used when the data directory does not hold them;
    /// MNIST comes from scripts/fetch-datasets.sh.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Data directory (default: $GELUNET_DATA_DIR, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// CSV: 0-based label column, negative counts from the end.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub label_column: isize,
    /// CSV: columns to drop, comma-separated (same indexing as --label-column).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub ignore_columns: Vec<isize>,
    /// CSV: the first row is a header (default: auto-detect).
    #[arg(long)]
    pub header: bool,
    /// Fraction of the samples held out for testing (datasets without their own split).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// MNIST: use at most this many training samples.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// MNIST: use at most this many test samples.
    #[arg(long)]
    pub max_test: Option<usize>,
}

impl DataArgs {
    /// The library's data options.
    pub fn options(&self) -> DataOptions {
        DataOptions {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            label_column: self.label_column,
            ignore_columns: self.ignore_columns.clone(),
            header: self.header,
            test_fraction: self.test_fraction,
            max_train: self.max_train,
            max_test: self.max_test,
        }
    }
}

/// Gradient mask (docs/DESIGN.md "Masked update").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskArg {
    /// `r` uniform on `[0, 2^(σ+g))`, σ = 128 (default).
    Statistical,
    /// `r` uniform on `[G, N_s − G)` (the paper's mask).
    Uniform,
}

/// Model and training options (the server's side of the configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Hidden-layer widths, comma-separated (e.g. 12 or 64,32).
    #[arg(long, value_delimiter = ',', default_value = "12")]
    pub hidden: Vec<usize>,
    /// Hidden-layer activation.
    #[arg(long, value_enum, default_value_t = Activation::Sigmoid)]
    pub activation: Activation,
    /// Network architecture on square single-channel images (MNIST), replacing --hidden
    /// and --activation: `conv1` (the paper's Conv-1), `lenet5`, or comma-separated
    /// layers: conv<k>x<k>[s<stride>][p<pad>|p<before>+<after>]:<filters>, meanpool,
    /// dense:<units>, relu, sigmoid, tanh, identity, ending in dense:<classes> (softmax);
    /// e.g. conv5x5s2:5,relu,dense:100,relu,dense:10. A meanpool must follow a conv
    /// directly. Trains encrypted like a dense net (and with --plaintext).
    #[arg(long, conflicts_with_all = ["hidden", "activation"])]
    pub arch: Option<Arch>,
    /// Stop once the completed sessions have processed this many epochs (an epoch: as
    /// many samples as the clients hold together) [default: per dataset, see below, when
    /// --sessions is not given]. With --sessions too, training stops at whichever limit
    /// comes first. 0 is refused.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Stop after this many completed sessions (alone: no epoch limit; with --epochs:
    /// whichever limit comes first). 0 is refused.
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Mini-batch size B (sessions have d·B ≤ the smallest fan-in samples) [default: the
    /// largest the session bound and the packing allow].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate η [default: per dataset, see below].
    #[arg(long)]
    pub lr: Option<f64>,
    /// How each session's rate falls from --lr with the epochs completed before it:
    /// constant, step:F:E (times F ≤ 1 every E epochs) or cosine:E (to 0 over E epochs).
    #[arg(long, default_value = "constant")]
    pub lr_schedule: LearningRateSchedule,
    /// Gradient mask.
    #[arg(long, value_enum, default_value_t = MaskArg::Statistical)]
    pub mask: MaskArg,
    /// Client order of the session scheduler.
    #[arg(long, value_enum, default_value_t = ClientOrder::RoundRobin)]
    pub order: ClientOrder,
    /// Seed of the data split, the weight initialization and the scheduler.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The protocol: v2 (the server never holds a true weight) or the paper's form.
    #[arg(long, value_enum, default_value_t = Protocol::V2)]
    pub protocol: Protocol,
}

impl ModelArgs {
    /// The library's model options.
    pub fn options(&self) -> ModelOptions {
        ModelOptions {
            hidden: self.hidden.clone(),
            arch: self.arch.clone(),
            activation: self.activation,
            epochs: self.epochs,
            sessions: self.sessions,
            batch_size: self.batch_size,
            lr: self.lr,
            lr_schedule: self.lr_schedule,
            mask: match self.mask {
                MaskArg::Statistical => MaskMode::default(),
                MaskArg::Uniform => MaskMode::Uniform,
            },
            protocol: self.protocol,
            order: self.order,
            seed: self.seed,
        }
    }
}

/// The options `train` and `serve` share: model, keys, transport and outputs.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainingArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub keys: KeyOptions,
    #[command(flatten)]
    pub net: NetOptions,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// What a training run writes (`train`, `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Write the trained model here.
    #[arg(long)]
    pub model_out: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the loss and accuracy per epoch (encrypted run and plaintext reference) as
    /// PNG into this directory (loss.png, accuracy.png).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// No progress (a bar on a terminal, a line every few seconds elsewhere), errors only.
    #[arg(long)]
    pub quiet: bool,
}

impl OutputArgs {
    /// The library's output options.
    pub fn options(&self) -> OutputOptions {
        OutputOptions {
            model_out: self.model_out.clone(),
            report: self.report.clone(),
            progress: !self.quiet,
            plot: self.plot.clone(),
        }
    }
}

/// Where a server listens, its certificate and the clients it accepts (`serve`,
/// `serve-model`).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on (port 0: any free port, written to STATE_DIR/listen.addr).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Directory of the server's certificate (cert.der, given to clients) and key
    /// (key.der), generated on first use, and of its checkpoint (checkpoint.bin).
    /// Required (`serve --resume STATE_DIR` gives it too).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Extra names (DNS or IP) for a newly generated certificate, besides localhost and
    /// 127.0.0.1.
    #[arg(long = "cert-name")]
    pub cert_names: Vec<String>,
    /// File of client credentials, one `NAME:TOKEN` per line (# comments).
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// A client credential NAME:TOKEN (repeatable).
    #[arg(long = "client", value_name = "NAME:TOKEN", value_parser = gelunet_run::parse_credential)]
    pub client_creds: Vec<Credential>,
}

impl ListenArgs {
    /// The library's listening options; `resume` is the state directory of
    /// `serve --resume STATE_DIR`.
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] without a state directory, or with two different ones.
    pub fn options(
        &self,
        resume: Option<&std::path::Path>,
    ) -> Result<ListenOptions, gelunet_run::RunError> {
        Ok(ListenOptions {
            listen: self.listen,
            state_dir: gelunet_run::resolve_state_dir(self.state_dir.as_deref(), resume)?,
            cert_names: self.cert_names.clone(),
            tokens_file: self.tokens_file.clone(),
            credentials: self.client_creds.clone(),
        })
    }
}
