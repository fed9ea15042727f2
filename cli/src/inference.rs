//! `gelunet infer` and `gelunet serve-model`: arguments and printing. The runs are
//! `gelunet_run::{infer, serve_model}` (encrypted inference, paper Alg. 1).

use std::path::PathBuf;

use gelunet_net::Zeroizing;
use gelunet_run::{InferConfig, InferTarget, RunError, ServeModelConfig, Split};

use crate::opts::{DataArgs, ListenArgs};
use gelunet_run::{KeyOptions, NetOptions};

/// Arguments of `gelunet infer` (no `Debug`: it may hold a token).
#[derive(clap::Args)]
pub struct InferArgs {
    /// The trained model file (`--model-out` of train/serve): serve it in this process.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    model: Option<PathBuf>,
    /// Query a `gelunet serve-model` server at HOST:PORT instead.
    #[arg(long, requires_all = ["server_cert", "model_card", "name"])]
    server: Option<String>,
    /// The server's certificate (its STATE_DIR/cert.der), pinned.
    #[arg(long, requires = "server")]
    server_cert: Option<PathBuf>,
    /// Name the certificate is valid for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The served model's public card (its STATE_DIR/model-card.json).
    #[arg(long, requires = "server")]
    model_card: Option<PathBuf>,
    /// This client's name, as configured on the server.
    #[arg(long, requires = "server")]
    name: Option<String>,
    /// This client's token (visible in the process list; prefer --token-file).
    #[arg(long, conflicts_with = "token_file", requires = "server")]
    token: Option<String>,
    /// A file holding this client's token (first line).
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Classify the unlabeled samples of this CSV file instead of a dataset split: one row
    /// per sample, the model's input features as columns (for iris and pima the training
    /// file's columns without the class; an optional header must name them, as the model
    /// card's feature_names do), raw values (the model card's standardization is applied).
    #[arg(long, conflicts_with = "dataset")]
    input: Option<PathBuf>,
    /// Write each sample's predicted class name and class probabilities here (.csv or
    /// .json).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Which samples to classify.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// Classify at most this many samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Samples per encrypted request.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// One sample per request, each preceded by the preparation of its layers on
    /// one-time masks (docs/DESIGN.md "Preprocessed inference"): the server's answer to
    /// the sample is then one plaintext product per layer. Same predictions.
    #[arg(long, conflicts_with = "batch")]
    preprocess: bool,
    /// With --model: serve it with weights rounded to this many fractional bits (1 to
    /// the model's 32; fewer bits, faster server, a slightly different model whose
    /// plaintext accuracy the report gives).
    #[arg(long)]
    weight_frac_bits: Option<u32>,
    #[command(flatten)]
    keys: KeyOptions,
    #[command(flatten)]
    net: NetOptions,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `gelunet serve-model`.
#[derive(Debug, clap::Args)]
pub struct ServeModelArgs {
    /// The trained model file to serve (`--model-out` of train/serve).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    endpoint: ListenArgs,
    /// Stop after this many registered client connections have ended (refused ones do
    /// not count; default: serve until killed).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Serve the model with weights rounded to this many fractional bits (1 to the
    /// model's 32; fewer bits, faster answers, a slightly different model).
    #[arg(long)]
    weight_frac_bits: Option<u32>,
    #[command(flatten)]
    keys: KeyOptions,
    #[command(flatten)]
    net: NetOptions,
    /// Errors only.
    #[arg(long)]
    quiet: bool,
}

fn missing(option: &'static str) -> RunError {
    RunError::InvalidOption {
        option,
        reason: "needed with --server".into(),
    }
}

/// Runs `gelunet infer` and prints the predictions (unless `--quiet`) and the accuracy.
///
/// # Errors
/// The run's errors.
pub fn infer(args: InferArgs) -> Result<(), RunError> {
    gelunet_run::init_tracing(args.quiet);
    let target = match (args.model, args.server) {
        (Some(model), None) => InferTarget::Local { model },
        (None, Some(server)) => InferTarget::Remote {
            server,
            server_cert: args.server_cert.ok_or_else(|| missing("--server-cert"))?,
            server_name: args.server_name,
            model_card: args.model_card.ok_or_else(|| missing("--model-card"))?,
            name: args.name.ok_or_else(|| missing("--name"))?,
            token: args.token.map(Zeroizing::new),
            token_file: args.token_file,
        },
        _ => return Err(missing("--model FILE or --server ADDR")),
    };
    let config = InferConfig {
        target,
        data: args.data.options(),
        input: args.input,
        output: args.output,
        split: args.split,
        limit: args.limit,
        batch: if args.preprocess { 1 } else { args.batch },
        preprocess: args.preprocess,
        weight_frac_bits: args.weight_frac_bits,
        keys: args.keys,
        net: args.net,
        report: args.report,
    };
    let out = gelunet_run::infer(&config)?;
    if !args.quiet {
        // Formatted only when printed: the table has a line per sample.
        crate::out(out.predictions_table());
    }
    crate::out(out);
    Ok(())
}

/// Runs `gelunet serve-model` and prints what it served.
///
/// # Errors
/// The run's errors.
pub fn serve_model(args: ServeModelArgs) -> Result<(), RunError> {
    gelunet_run::init_tracing(args.quiet);
    let config = ServeModelConfig {
        model: args.model,
        listen: args.endpoint.options(None)?,
        max_connections: args.max_connections,
        weight_frac_bits: args.weight_frac_bits,
        keys: args.keys,
        net: args.net,
    };
    let quiet = args.quiet;
    let log = gelunet_run::serve_model(&config, &|s| {
        crate::out_unless(quiet, s);
    })?;
    crate::out_unless(quiet, log);
    Ok(())
}
