//! `gelunet`: privacy-preserving collaborative training with GELU-Net (IJCAI-18).
//!
//! Subcommands: `train` (server and clients in one process over loopback QUIC), `serve`
//! and `join` (the same as separate processes), `infer` (encrypted inference), `bench`
//! (`paillier`: cryptosystem throughput; `paper`: the paper's comparisons; `train`: training
//! throughput and the split of an iteration), and `attack`
//! (the privacy attacks of paper §4.1 and §4.3). This crate only parses arguments into
//! the configurations of `gelunet-run` (training, inference), `gelunet-bench` and
//! `gelunet-attacks`, calls them, and prints. Keys below 2048 bits
//! (`--insecure-test-keys`) exist only in a binary built with the `insecure-test-keys`
//! feature.

mod inference;
mod keys;
mod opts;
mod paper;
mod train_bench;
mod training;

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gelunet_bench::paillier_throughput;

/// Privacy-preserving collaborative neural-network training (GELU-Net, IJCAI-18).
#[derive(Parser)]
#[command(name = "gelunet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands (no `Debug`: `join` and `infer` may hold a token).
#[derive(Subcommand)]
enum Command {
    /// Train a model: server and `--clients K` clients in one process over loopback QUIC.
    Train(training::TrainArgs),
    /// Run the server alone; clients join with `gelunet join`.
    Serve(training::ServeArgs),
    /// Join a running server as one client.
    Join(training::JoinArgs),
    /// Encrypted inference with a trained model (paper Alg. 1): in this process
    /// (`--model`) or against a `serve-model` server (`--server`).
    Infer(inference::InferArgs),
    /// Serve a trained model for encrypted inference by authenticated clients on other
    /// hosts (`gelunet infer --server`).
    ServeModel(inference::ServeModelArgs),
    /// Benchmarks and comparison reports.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// The privacy attacks (paper §4.1, §4.3) against the real protocol messages.
    Attack(gelunet_attacks::cli::AttackArgs),
    /// Paillier key files: generate, inspect, convert (gelunet and python-paillier JSON).
    Keys {
        #[command(subcommand)]
        what: keys::KeysCommand,
    },
    /// Print a shell completion script (e.g. `gelunet completions bash >
    /// ~/.local/share/bash-completion/completions/gelunet`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The clients' group key of protocol v2.
    GroupKey {
        #[command(subcommand)]
        what: GroupKeyCommand,
    },
}

#[derive(Subcommand)]
enum GroupKeyCommand {
    /// Make a new 256-bit group key (from the operating system's generator) and write it
    /// to a new file (mode 0600; an existing file is never overwritten). Give it to every
    /// data owner out of band, never to the server.
    New {
        /// The file to create.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Arguments of `gelunet bench paillier`.
#[derive(clap::Args)]
struct PaillierArgs {
    /// Size of N in bits (2048, 3072 or 4096; smaller sizes use test-only keys, in a
    /// binary built with the `insecure-test-keys` feature).
    #[arg(long, default_value_t = 2048)]
    key_bits: u64,
    /// Wall time spent on each operation, in seconds (positive).
    #[arg(long = "seconds", default_value = "2", value_parser = paillier_throughput::parse_budget)]
    budget: Duration,
    /// Seed of the key and data generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Throughput of the Paillier operations, one thread and all cores.
    Paillier(PaillierArgs),
    /// The paper's comparisons (Fig. 3, Tables 1, 3, 5) against the baselines.
    Paper(paper::PaperArgs),
    /// A short encrypted training run: samples/s and the split of an iteration.
    Train(train_bench::TrainBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(args) => exit(training::train(args)),
        Command::Serve(args) => exit(training::serve(args)),
        Command::Join(args) => exit(training::join(args)),
        Command::Infer(args) => exit(inference::infer(args)),
        Command::ServeModel(args) => exit(inference::serve_model(args)),
        Command::Attack(args) => exit(gelunet_attacks::cli::run(args).map(out)),
        Command::Keys { what } => exit(keys::run(what)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "gelunet", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::GroupKey {
            what: GroupKeyCommand::New { out },
        } => exit(
            gelunet_protocol::group_key::GroupKey::generate()
                .save_new(&out)
                .map(|()| crate::out(format_args!("wrote a new group key to {}\n", out.display()))),
        ),
        Command::Bench { what } => match what {
            BenchCommand::Paper(args) => exit(paper::run(args)),
            BenchCommand::Train(args) => exit(train_bench::run(args)),
            BenchCommand::Paillier(args) => exit(bench_paillier(&args)),
        },
    }
}

/// Runs `gelunet bench paillier` and prints its report (a table, or JSON).
fn bench_paillier(a: &PaillierArgs) -> Result<(), String> {
    let report = paillier_throughput::run_paillier(a.key_bits, a.budget, a.seed)
        .map_err(|e| e.to_string())?;
    let text = gelunet_bench::report_text(&report, a.json, paillier_throughput::render);
    out(text.map_err(|e| e.to_string())?);
    Ok(())
}

/// Writes `text` to standard output. A reader that went away (`gelunet attack … | head`)
/// ends the output, not the run: the write error is dropped instead of panicking as
/// `print!` does, and whatever the run writes to files is still written.
pub(crate) fn out(text: impl Display) {
    use std::io::Write;
    // Nothing useful can be done with a failed write to stdout; the exit code stays the
    // run's.
    let _ = write!(std::io::stdout().lock(), "{text}");
}

/// [`out`], unless `quiet`.
pub(crate) fn out_unless(quiet: bool, text: impl Display) {
    if !quiet {
        out(text);
    }
}

/// Prints the error and maps the outcome to the process exit code.
fn exit<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            // `eprintln!` would panic on a closed standard error; the exit code still
            // reports the failure.
            let _ = writeln!(std::io::stderr().lock(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}
