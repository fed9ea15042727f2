//! `gelunet bench paper`: the paper's comparisons against the square-activation baselines
//! (GELU-Net paper Fig. 3, Tables 1, 3, 5). The work is done by `gelunet-bench`; this
//! module only parses the flags.

use std::path::PathBuf;

use gelunet_bench::{EncryptedSessions, PaperConfig};

/// Arguments of `gelunet bench paper`.
#[derive(Debug, clap::Args)]
pub struct PaperArgs {
    /// Output directory for `report.md`, `report.json` and the PNG plots (created).
    #[arg(long, default_value = "paper-report")]
    pub out: PathBuf,
    /// Data directory (else `$GELUNET_DATA_DIR`, else `./data`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Small sizes for tests: few epochs, widths 5 and 12, one seed, Iris only, test-size
    /// keys (512 bits unless `--key-bits` is given); under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Allow Paillier keys below 2048 bits outside `--quick` (insecure; stated in the
    /// report). Test-size keys (also those of `--quick`) need a binary built with
    /// `--features insecure-test-keys`.
    #[arg(long)]
    pub insecure_test_keys: bool,
    /// Parts to run: 1 = training stability (Fig. 3), 2 = accuracy (Table 3), 3 = cost of
    /// one activation (Table 1), 4 = inference latency and throughput (Table 5), 5 = the
    /// other schemes of the seed papers (PROUD, SecureNets, complement and partition),
    /// 6 = convolutional networks, Conv-1 and LeNet-5 against CryptoNets (Table 4).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6")]
    pub parts: Vec<u8>,
    /// Seeds for the accuracy table (default 5; 1 with `--quick`; at most 2 for MNIST).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Paillier key size in bits (default 2048; 512 with `--quick`).
    #[arg(long)]
    pub key_bits: Option<u64>,
    /// Datasets of the accuracy table (default iris,pima,kr-vs-kp,mnist; iris with `--quick`).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// Sessions of seed 0 trained encrypted in the accuracy part: `all`, `none` or a
    /// number (default: all with `--quick`, 4 at 2048 bits, where a full encrypted run
    /// takes hours; the other sessions and seeds use the bit-identical fixed-point
    /// reference, and the report says so).
    #[arg(long)]
    pub encrypted_sessions: Option<EncryptedSessions>,
    /// Learning rate of every dataset of the accuracy table (default per dataset: Iris
    /// 0.05, Pima 0.01, kr-vs-kp 0.001, MNIST 0.01; gradients summed over B = 4).
    #[arg(long)]
    pub lr: Option<f64>,
    /// No progress messages on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `gelunet bench paper`.
///
/// # Errors
/// Invalid flags, or a failure writing the report (a failing part is recorded in the
/// report instead).
pub fn run(args: PaperArgs) -> Result<(), String> {
    let config = PaperConfig {
        out_dir: args.out.clone(),
        data_dir: gelunet_bench::resolve_data_dir(args.data_dir.as_deref()),
        quick: args.quick,
        parts: args.parts,
        seeds: args.seeds,
        key_bits: args.key_bits,
        insecure_test_keys: args.insecure_test_keys,
        datasets: args.datasets,
        encrypted_sessions: args
            .encrypted_sessions
            .unwrap_or(EncryptedSessions::Default),
        lr: args.lr,
        backend: gelunet_paillier::BACKEND.to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        verbose: !args.quiet,
    };
    let report = gelunet_bench::run(&config).map_err(|e| e.to_string())?;
    crate::out(format_args!(
        "wrote {} (report.md, report.json, plots)\n",
        args.out.display()
    ));
    report.check_failures()
}
