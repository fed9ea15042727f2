//! `gelunet bench train`: argument handling for [`gelunet_bench::train_throughput`].

use std::path::PathBuf;

use gelunet_bench::pipeline::MnistLimits;
use gelunet_bench::report_text;
use gelunet_bench::train_throughput::{render, run_train, TrainBenchConfig};

use gelunet_protocol::arch::Arch;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::LearningRateSchedule;
use gelunet_run::KeyOptions;

/// A short encrypted training run: samples/s and the split of an iteration.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    /// Dataset (mnist, iris, pima, kr-vs-kp).
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Hidden-layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128")]
    hidden: Vec<usize>,
    /// A conv architecture instead of --hidden: `conv1`, `lenet5` or the layer syntax
    /// (see `gelunet train --help`), on square one-channel images.
    #[arg(long, conflicts_with = "hidden")]
    arch: Option<Arch>,
    /// Clients (data owners).
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Mini-batch size [default: the largest the session bound and the packing allow, as
    /// for `gelunet train`; 23 for MNIST --hidden 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Sessions to run.
    #[arg(long, default_value_t = 3)]
    sessions: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// How each session's rate falls from --lr, as for `gelunet train`: constant,
    /// step:F:E or cosine:E; the reference follows the same rates.
    #[arg(long, default_value = "constant")]
    lr_schedule: LearningRateSchedule,
    /// The protocol.
    #[arg(long, value_enum, default_value_t = Protocol::V2)]
    protocol: Protocol,
    /// MNIST training samples loaded (the first ones).
    #[arg(long, default_value_t = 5000)]
    max_train: usize,
    /// MNIST test samples loaded (the first ones).
    #[arg(long, default_value_t = 100)]
    max_test: usize,
    /// Seed of the split, initialization, schedule and keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Data directory (default: $GELUNET_DATA_DIR or ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    keys: KeyOptions,
    /// Print the report as JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// Runs `gelunet bench train` and prints its report.
pub fn run(a: TrainBenchArgs) -> Result<(), String> {
    let config = TrainBenchConfig {
        data_dir: gelunet_bench::resolve_data_dir(a.data_dir.as_deref()),
        dataset: a.dataset,
        hidden: a.hidden,
        arch: a.arch,
        clients: a.clients,
        batch: a.batch_size,
        sessions: a.sessions,
        key_bits: a.keys.key_bits,
        allow_test_keys: a.keys.allow_test_keys,
        protocol: a.protocol,
        lr: a.lr,
        lr_schedule: a.lr_schedule,
        mnist: MnistLimits {
            train: a.max_train,
            test: a.max_test,
        },
        seed: a.seed,
    };
    let report = run_train(&config).map_err(|e| e.to_string())?;
    crate::out(report_text(&report, a.json, render).map_err(|e| e.to_string())?);
    Ok(())
}
