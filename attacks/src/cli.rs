//! `gelunet attack` (feature `cli`): the arguments of the five attacks (clap) and their
//! runs: gradient inversion (paper §4.3), model extraction (paper §4.1), the server's
//! session-sum attack and the clients' output-layer extraction, under either protocol
//! (`--protocol`). The `gelunet-cli` binary only parses and calls [`run`].
//!
//! Each prints its report as JSON on stdout and as a markdown table on stderr; with
//! `--out DIR` it also writes `DIR/<attack>.json` (`DIR/report.json` for `session-sum`),
//! the markdown table beside it and the PNG figures.

/// `eprintln!` that drops the line when standard error is closed instead of panicking.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

use std::path::{Path, PathBuf};

use gelunet_protocol::v2::Protocol;

use crate::data::{self, AttackData};
use crate::drive::{self, AttackRun, SessionSweep};
use crate::{
    extraction, inversion, kernel_extraction, output_layer, plot, session_sum, AttackError, Result,
};

/// Arguments of `gelunet attack`.
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Which attack.
    #[command(subcommand)]
    pub attack: AttackCommand,
}

/// The attacks.
#[derive(Debug, clap::Subcommand)]
pub enum AttackCommand {
    /// The server reconstructs clients' inputs from layer-1 gradients (paper §4.3, Fig. 2):
    /// per-iteration updates without and with masking, and the per-session summed update
    /// of Alg. 5.
    GradientInversion(InversionArgs),
    /// A client solves for the server's layer-1 weights from its decrypted pre-activations
    /// (paper §4.1), against the number of samples per session, with the server's bound
    /// disabled to go past it.
    ModelExtraction(ExtractionArgs),
    /// The server rebuilds each session's inputs from the difference of its stored states
    /// (`w^I − w^F` under the paper's protocol, `W~_v − W~_{v+1}` under v2), two-sample
    /// sessions; writes `report.json` and `session_sum_grid.png`.
    SessionSum(SessionSumArgs),
    /// A client extracts the row-centered output layer from its backward products
    /// `q = δ_L·W_L`, against the samples per session, and the others' updates between
    /// its own sessions.
    OutputLayer(OutputLayerArgs),
    /// A client recovers the first conv layer's kernels and biases from one sample's
    /// pre-activations (weight sharing over-determines them), against a dense row.
    KernelExtraction(KernelExtractionArgs),
}

/// Options shared by every attack.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Bits of every Paillier modulus (below 2048 only with --insecure-test-keys).
    #[arg(long, default_value_t = 2048)]
    pub key_bits: u64,
    /// Allow test-only key sizes below 2048 bits (fast; the attacks' outcome does not
    /// depend on the key size; only in a binary built with `--features insecure-test-keys`).
    #[arg(long)]
    pub insecure_test_keys: bool,
    /// Directory for the JSON and markdown reports and the PNG figures.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the keys, the data split, the model and the clients.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Data directory (else GELUNET_DATA_DIR, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of clients (sessions go round-robin).
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Learning rate η.
    #[arg(long, default_value_t = 0.5)]
    pub learning_rate: f64,
}

/// Arguments of `gelunet attack gradient-inversion`.
#[derive(Debug, clap::Args)]
pub struct InversionArgs {
    /// Dataset.
    #[arg(long, default_value = "mnist", value_parser = ["mnist", "iris", "synthetic"])]
    pub dataset: String,
    /// Mini-batch sizes to attack (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch_sizes: Vec<usize>,
    /// Samples loaded and shared among the clients (MNIST: the first N training images).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Sessions observed per configuration.
    #[arg(long, default_value_t = 3)]
    pub sessions: usize,
    /// Width of the (sigmoid) hidden layer.
    #[arg(long, default_value_t = 16)]
    pub hidden: usize,
    /// The protocol attacked (default paper, the historic figures; v2 has no unmasked
    /// runs, so only the masked cases run).
    #[arg(long, value_enum, default_value_t = Protocol::Paper)]
    pub protocol: Protocol,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `gelunet attack model-extraction`.
#[derive(Debug, clap::Args)]
pub struct ExtractionArgs {
    /// Dataset (MNIST's 784 inputs would need 786 samples per session).
    #[arg(long, default_value = "synthetic", value_parser = ["synthetic", "iris"])]
    pub dataset: String,
    /// Features of the synthetic dataset (the fan-in of layer 1).
    #[arg(long, default_value_t = 8)]
    pub features: usize,
    /// Width of the (sigmoid) hidden layer.
    #[arg(long, default_value_t = 10)]
    pub hidden: usize,
    /// Largest number of samples per session.
    #[arg(long, default_value_t = 14)]
    pub max_samples: usize,
    /// Mini-batch size (sessions of S / B iterations).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Sessions run before the attacked ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Attacked sessions per session size (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// Samples of the dataset shared among the clients.
    #[arg(long, default_value_t = 150)]
    pub samples: usize,
    /// The protocol of the runs (default paper, the historic figures; the client's view
    /// is the same under v2).
    #[arg(long, value_enum, default_value_t = Protocol::Paper)]
    pub protocol: Protocol,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `gelunet attack session-sum`.
#[derive(Debug, clap::Args)]
pub struct SessionSumArgs {
    /// The protocol attacked.
    #[arg(long, value_enum, default_value_t = Protocol::V2)]
    pub protocol: Protocol,
    /// Dataset.
    #[arg(long, default_value = "mnist", value_parser = ["mnist", "iris", "synthetic"])]
    pub dataset: String,
    /// Samples loaded and shared among the clients (MNIST: the first N training images).
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Sessions attacked (each of 2 samples: B = 1, d = 2).
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Width of the (sigmoid) hidden layer.
    #[arg(long, default_value_t = 16)]
    pub hidden: usize,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `gelunet attack output-layer`.
#[derive(Debug, clap::Args)]
pub struct OutputLayerArgs {
    /// The protocol of the runs (the clients' view is the same under both).
    #[arg(long, value_enum, default_value_t = Protocol::V2)]
    pub protocol: Protocol,
    /// Dataset (the output layer has one row per class).
    #[arg(long, default_value = "synthetic", value_parser = ["synthetic", "iris", "mnist"])]
    pub dataset: String,
    /// Features of the synthetic dataset.
    #[arg(long, default_value_t = 12)]
    pub features: usize,
    /// Classes of the synthetic dataset (`m_L`).
    #[arg(long, default_value_t = 6)]
    pub classes: usize,
    /// Width of the (sigmoid) hidden layer (the output layer's fan-in).
    #[arg(long, default_value_t = 10)]
    pub hidden: usize,
    /// Largest number of samples per session.
    #[arg(long, default_value_t = 8)]
    pub max_samples: usize,
    /// Mini-batch size (sessions of S / B iterations).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Sessions run before the attacked ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Attacked sessions per session size (at least clients + 1 for the cross-session
    /// measurement).
    #[arg(long, default_value_t = 4)]
    pub trials: usize,
    /// Samples of the dataset shared among the clients.
    #[arg(long, default_value_t = 150)]
    pub samples: usize,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `gelunet attack kernel-extraction` (no keys: the client's unmasked view
/// is computed in plaintext, exactly what it decrypts).
#[derive(Debug, clap::Args)]
pub struct KernelExtractionArgs {
    /// Architecture: `lenet5`, `conv1` or a layer list (gelunet_protocol::arch::SYNTAX);
    /// its first weight layer must be a convolution on MNIST's 1×28×28.
    #[arg(long, default_value = "lenet5")]
    pub arch: String,
    /// Seed of the net's weights and biases (and of the random input without MNIST).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Data directory for the MNIST sample (else GELUNET_DATA_DIR, else ./data; a seeded
    /// random image in [0, 1] if MNIST cannot be loaded).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the markdown table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `gelunet attack` and returns what goes to standard output (the JSON report, or
/// the kernel-extraction table); tables and the paths written go to standard error as the
/// run goes. The caller prints the returned text, so that a closed pipe (`| head`) ends
/// the output, not the run.
///
/// # Errors
/// [`AttackError::Invalid`] for bad options and failures writing the outputs; missing
/// data files, protocol and role errors.
pub fn run(args: AttackArgs) -> Result<String> {
    match args.attack {
        AttackCommand::GradientInversion(a) => run_inversion(a),
        AttackCommand::ModelExtraction(a) => run_extraction(a),
        AttackCommand::SessionSum(a) => run_session_sum(a),
        AttackCommand::OutputLayer(a) => run_output_layer(a),
        AttackCommand::KernelExtraction(a) => run_kernel_extraction(a),
    }
}

fn invalid(reason: &str) -> AttackError {
    AttackError::Invalid(reason.into())
}

impl CommonArgs {
    /// `clients + 1` keys: the server's, then one per client.
    fn keys(&self) -> Result<Vec<gelunet_paillier::PrivateKey>> {
        if self.clients == 0 {
            return Err(invalid("--clients must be at least 1"));
        }
        drive::generate_keys(
            self.key_bits,
            self.clients + 1,
            self.seed,
            self.insecure_test_keys,
        )
    }

    /// `dataset` ([`data::load`]); `synthetic` with `(features, classes)` if given.
    fn data(
        &self,
        dataset: &str,
        samples: usize,
        blobs: Option<(usize, usize)>,
    ) -> Result<AttackData> {
        match (dataset, blobs) {
            ("synthetic", Some((features, classes))) => {
                Ok(data::synthetic(samples, features, classes, self.seed))
            }
            _ => {
                let dir = gelunet_datasets::resolve_data_dir(self.data_dir.as_deref());
                data::load(dataset, &dir, samples, self.seed)
            }
        }
    }

    fn run(&self, data: AttackData, hidden: usize, protocol: Protocol) -> AttackRun {
        AttackRun {
            data,
            hidden,
            clients: self.clients,
            learning_rate: self.learning_rate,
            seed: self.seed,
            protocol,
        }
    }

    /// The run of `gelunet attack gradient-inversion` and `session-sum` on `dataset`, and
    /// its keys.
    fn dataset_run(
        &self,
        dataset: &str,
        samples: usize,
        hidden: usize,
        sessions: usize,
        protocol: Protocol,
    ) -> Result<(AttackRun, Vec<gelunet_paillier::PrivateKey>)> {
        if hidden == 0 || sessions == 0 {
            return Err(invalid("--hidden and --sessions must be positive"));
        }
        let data = self.data(dataset, samples, None)?;
        Ok((self.run(data, hidden, protocol), self.keys()?))
    }

    /// Prints `table` on stderr, writes the report and the table to
    /// `--out/<name>.{json,md}`, and returns the JSON report for stdout.
    fn emit<T: serde::Serialize>(&self, name: &str, report: &T, table: &str) -> Result<String> {
        let json = serde_json::to_string_pretty(report).map_err(|e| invalid(&e.to_string()))?;
        note!("{table}");
        if let Some(dir) = self.out.as_deref() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, &e))?;
            for (ext, body) in [("json", json.as_str()), ("md", table)] {
                let p = dir.join(format!("{name}.{ext}"));
                std::fs::write(&p, body).map_err(|e| io_error(&p, &e))?;
                note!("wrote {}", p.display());
            }
        }
        Ok(json + "\n")
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> AttackError {
    AttackError::Invalid(format!("{}: {e}", path.display()))
}

fn sweep_checks(max_samples: usize, batch: usize, trials: usize, hidden: usize) -> Result<()> {
    if max_samples == 0 || batch == 0 || trials == 0 || hidden == 0 {
        return Err(invalid(
            "--max-samples, --batch-size, --trials and --hidden must be positive",
        ));
    }
    Ok(())
}

fn run_inversion(a: InversionArgs) -> Result<String> {
    if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
        return Err(invalid("--batch-sizes needs positive sizes"));
    }
    let c = &a.common;
    let (run, keys) = c.dataset_run(&a.dataset, a.samples, a.hidden, a.sessions, a.protocol)?;
    let side = run.data.image_side;
    let mut cases = inversion::default_cases(&run.spec(), &a.batch_sizes);
    if a.protocol == Protocol::V2 {
        // v2 has no unmasked mode.
        cases.retain(|c| c.masked);
    }
    let setup = inversion::InversionSetup {
        run,
        sessions: a.sessions,
        cases,
    };
    let report = inversion::run_experiment(&setup, &keys)?;
    let json = c.emit("gradient_inversion", &report, &inversion::render(&report))?;
    if let (Some(dir), Some(side)) = (c.out.as_deref(), side) {
        for p in inversion::write_figures(&report, side, dir)? {
            note!("wrote {}", p.display());
        }
    }
    Ok(json)
}

fn run_extraction(a: ExtractionArgs) -> Result<String> {
    sweep_checks(a.max_samples, a.batch_size, a.trials, a.hidden)?;
    let c = &a.common;
    let setup = extraction::ExtractionSetup {
        run: c.run(
            c.data(&a.dataset, a.samples, Some((a.features, 3)))?,
            a.hidden,
            a.protocol,
        ),
        sweep: SessionSweep::up_to(a.max_samples, a.batch_size, a.warmup, a.trials),
    };
    let report = extraction::run_experiment(&setup, &c.keys()?)?;
    let json = c.emit("model_extraction", &report, &extraction::render(&report))?;
    if let Some(dir) = c.out.as_deref() {
        let p = dir.join("model_extraction.png");
        plot::extraction_curve(&p, &report)?;
        note!("wrote {}", p.display());
    }
    Ok(json)
}

fn run_session_sum(a: SessionSumArgs) -> Result<String> {
    let c = &a.common;
    let (run, keys) = c.dataset_run(&a.dataset, a.samples, a.hidden, a.sessions, a.protocol)?;
    let side = run.data.image_side;
    let setup = session_sum::SessionSumSetup {
        run,
        batch: 1,
        iterations: 2,
        sessions: a.sessions,
    };
    let report = session_sum::run_experiment(&setup, &keys)?;
    let json = c.emit("report", &report, &session_sum::render(&report))?;
    if let (Some(dir), Some(side)) = (c.out.as_deref(), side) {
        let p = session_sum::write_grid(&report, side, dir)?;
        note!("wrote {}", p.display());
    }
    Ok(json)
}

fn run_output_layer(a: OutputLayerArgs) -> Result<String> {
    sweep_checks(a.max_samples, a.batch_size, a.trials, a.hidden)?;
    if a.classes < 2 {
        return Err(invalid("--classes must be at least 2"));
    }
    let c = &a.common;
    let setup = output_layer::OutputLayerSetup {
        run: c.run(
            c.data(&a.dataset, a.samples, Some((a.features, a.classes)))?,
            a.hidden,
            a.protocol,
        ),
        sweep: SessionSweep::up_to(a.max_samples, a.batch_size, a.warmup, a.trials),
    };
    let report = output_layer::run_experiment(&setup, &c.keys()?)?;
    c.emit("output_layer", &report, &output_layer::render(&report))
}

/// The setup of `gelunet attack kernel-extraction`.
///
/// # Errors
/// [`AttackError::Protocol`] wrapping the [`gelunet_protocol::arch::ArchError`] of a bad
/// `--arch`.
pub fn kernel_extraction_setup(
    a: &KernelExtractionArgs,
) -> Result<kernel_extraction::KernelExtractionSetup> {
    let arch: gelunet_protocol::arch::Arch =
        a.arch.parse().map_err(gelunet_protocol::Error::from)?;
    Ok(kernel_extraction::KernelExtractionSetup {
        arch,
        input: kernel_extraction::InputSource::MnistOrRandom(gelunet_datasets::resolve_data_dir(
            a.data_dir.as_deref(),
        )),
        seed: a.seed,
        scales: gelunet_protocol::Scales::default(),
    })
}

fn run_kernel_extraction(a: KernelExtractionArgs) -> Result<String> {
    let report = kernel_extraction::run_experiment(&kernel_extraction_setup(&a)?)?;
    if a.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| invalid(&e.to_string()))?;
        Ok(json + "\n")
    } else {
        Ok(kernel_extraction::render(&report))
    }
}
