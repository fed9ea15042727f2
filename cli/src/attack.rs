//! `gelunet attack`: gradient inversion (paper §4.3), model extraction (paper §4.1), the
//! server's session-sum attack and the clients' output-layer extraction, run on real
//! in-memory training runs (real Paillier keys, the real server and client state
//! machines) by the `gelunet-attacks` crate, under either protocol (`--protocol`).
//!
//! Each prints its report as JSON on stdout and as a markdown table on stderr; with
//! `--out DIR` it also writes `DIR/<attack>.json` (`DIR/report.json` for `session-sum`),
//! the markdown table beside it and the PNG figures.

use std::path::{Path, PathBuf};

use gelunet_attacks::{data, drive, extraction, inversion, output_layer, plot, session_sum};

use crate::opts::ProtocolArg;

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
}

/// Options shared by both attacks.
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
    #[arg(long, value_enum, default_value_t = ProtocolArg::Paper)]
    pub protocol: ProtocolArg,
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
    #[arg(long, value_enum, default_value_t = ProtocolArg::Paper)]
    pub protocol: ProtocolArg,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `gelunet attack session-sum`.
#[derive(Debug, clap::Args)]
pub struct SessionSumArgs {
    /// The protocol attacked.
    #[arg(long, value_enum, default_value_t = ProtocolArg::V2)]
    pub protocol: ProtocolArg,
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
    #[arg(long, value_enum, default_value_t = ProtocolArg::V2)]
    pub protocol: ProtocolArg,
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

/// Runs `gelunet attack`.
///
/// # Errors
/// Bad options, missing data files, protocol errors, failures writing the outputs.
pub fn run(args: AttackArgs) -> Result<(), String> {
    match args.attack {
        AttackCommand::GradientInversion(a) => run_inversion(a),
        AttackCommand::ModelExtraction(a) => run_extraction(a),
        AttackCommand::SessionSum(a) => run_session_sum(a),
        AttackCommand::OutputLayer(a) => run_output_layer(a),
    }
}

fn keys(c: &CommonArgs) -> Result<Vec<gelunet_paillier::PrivateKey>, String> {
    if c.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    drive::generate_keys(c.key_bits, c.clients + 1, c.seed, c.insecure_test_keys)
        .map_err(|e| e.to_string())
}

fn data_dir(c: &CommonArgs) -> PathBuf {
    gelunet_datasets::resolve_data_dir(c.data_dir.as_deref())
}

fn emit<T: serde::Serialize>(
    name: &str,
    report: &T,
    table: &str,
    out: Option<&Path>,
) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    println!("{json}");
    eprintln!("{table}");
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (ext, body) in [("json", &json), ("md", &table.to_string())] {
            let p = dir.join(format!("{name}.{ext}"));
            std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn run_inversion(a: InversionArgs) -> Result<(), String> {
    if a.batch_sizes.is_empty() || a.batch_sizes.contains(&0) {
        return Err("--batch-sizes needs positive sizes".into());
    }
    if a.hidden == 0 || a.sessions == 0 {
        return Err("--hidden and --sessions must be positive".into());
    }
    let c = &a.common;
    let data =
        data::load(&a.dataset, &data_dir(c), a.samples, c.seed).map_err(|e| e.to_string())?;
    let keys = keys(c)?;
    let spec = gelunet_protocol::ModelSpec::new(
        vec![data.features(), a.hidden, data.classes],
        gelunet_protocol::Activation::Sigmoid,
    );
    let side = data.image_side;
    let protocol = a.protocol.protocol();
    let mut cases = inversion::default_cases(&spec, &a.batch_sizes);
    if protocol == gelunet_protocol::v2::Protocol::V2 {
        // v2 has no unmasked mode.
        cases.retain(|c| c.masked);
    }
    let setup = inversion::InversionSetup {
        cases,
        protocol,
        data,
        hidden: a.hidden,
        clients: c.clients,
        learning_rate: c.learning_rate,
        sessions: a.sessions,
        seed: c.seed,
    };
    let report = inversion::run_experiment(&setup, &keys).map_err(|e| e.to_string())?;
    emit(
        "gradient_inversion",
        &report,
        &inversion::render(&report),
        c.out.as_deref(),
    )?;
    if let (Some(dir), Some(side)) = (c.out.as_deref(), side) {
        for p in inversion::write_figures(&report, side, dir).map_err(|e| e.to_string())? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn run_extraction(a: ExtractionArgs) -> Result<(), String> {
    if a.max_samples == 0 || a.batch_size == 0 || a.trials == 0 || a.hidden == 0 {
        return Err("--max-samples, --batch-size, --trials and --hidden must be positive".into());
    }
    let c = &a.common;
    let data = match a.dataset.as_str() {
        "synthetic" => data::synthetic(a.samples, a.features, 3, c.seed),
        other => data::load(other, &data_dir(c), a.samples, c.seed).map_err(|e| e.to_string())?,
    };
    let keys = keys(c)?;
    let setup = extraction::ExtractionSetup {
        data,
        hidden: a.hidden,
        clients: c.clients,
        batch: a.batch_size,
        sizes: (1..=a.max_samples / a.batch_size)
            .map(|d| d * a.batch_size)
            .collect(),
        learning_rate: c.learning_rate,
        warmup: a.warmup,
        trials: a.trials,
        seed: c.seed,
        protocol: a.protocol.protocol(),
    };
    let report = extraction::run_experiment(&setup, &keys).map_err(|e| e.to_string())?;
    emit(
        "model_extraction",
        &report,
        &extraction::render(&report),
        c.out.as_deref(),
    )?;
    if let Some(dir) = c.out.as_deref() {
        let p = dir.join("model_extraction.png");
        plot::extraction_curve(&p, &report).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn run_session_sum(a: SessionSumArgs) -> Result<(), String> {
    if a.hidden == 0 || a.sessions == 0 {
        return Err("--hidden and --sessions must be positive".into());
    }
    let c = &a.common;
    let data =
        data::load(&a.dataset, &data_dir(c), a.samples, c.seed).map_err(|e| e.to_string())?;
    let keys = keys(c)?;
    let side = data.image_side;
    let setup = session_sum::SessionSumSetup {
        data,
        hidden: a.hidden,
        clients: c.clients,
        learning_rate: c.learning_rate,
        batch: 1,
        iterations: 2,
        sessions: a.sessions,
        seed: c.seed,
        protocol: a.protocol.protocol(),
    };
    let report = session_sum::run_experiment(&setup, &keys).map_err(|e| e.to_string())?;
    emit(
        "report",
        &report,
        &session_sum::render(&report),
        c.out.as_deref(),
    )?;
    if let (Some(dir), Some(side)) = (c.out.as_deref(), side) {
        let p = session_sum::write_grid(&report, side, dir).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn run_output_layer(a: OutputLayerArgs) -> Result<(), String> {
    if a.max_samples == 0 || a.batch_size == 0 || a.trials == 0 || a.hidden == 0 {
        return Err("--max-samples, --batch-size, --trials and --hidden must be positive".into());
    }
    if a.classes < 2 {
        return Err("--classes must be at least 2".into());
    }
    let c = &a.common;
    let data = match a.dataset.as_str() {
        "synthetic" => data::synthetic(a.samples, a.features, a.classes, c.seed),
        other => data::load(other, &data_dir(c), a.samples, c.seed).map_err(|e| e.to_string())?,
    };
    let keys = keys(c)?;
    let setup = output_layer::OutputLayerSetup {
        data,
        hidden: a.hidden,
        clients: c.clients,
        batch: a.batch_size,
        sizes: (1..=a.max_samples / a.batch_size)
            .map(|d| d * a.batch_size)
            .collect(),
        learning_rate: c.learning_rate,
        warmup: a.warmup,
        trials: a.trials,
        seed: c.seed,
        protocol: a.protocol.protocol(),
    };
    let report = output_layer::run_experiment(&setup, &keys).map_err(|e| e.to_string())?;
    emit(
        "output_layer",
        &report,
        &output_layer::render(&report),
        c.out.as_deref(),
    )
}
