//! `gelunet`: privacy-preserving collaborative training with GELU-Net (IJCAI-18).
//!
//! Subcommands: `bench paillier` (cryptosystem throughput report). Training, inference
//! and the paper benchmarks arrive with their issues.

mod bench;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Privacy-preserving collaborative neural-network training (GELU-Net, IJCAI-18).
#[derive(Debug, Parser)]
#[command(name = "gelunet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks and comparison reports.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Throughput of the Paillier operations, one thread and all cores.
    Paillier {
        /// Size of N in bits (2048, 3072 or 4096; smaller sizes use test-only keys).
        #[arg(long, default_value_t = 2048)]
        key_bits: u64,
        /// Wall time spent on each operation, in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Seed of the key and data generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            what:
                BenchCommand::Paillier {
                    key_bits,
                    seconds,
                    seed,
                    json,
                },
        } => {
            if !(seconds.is_finite() && seconds > 0.0) {
                eprintln!("error: --seconds must be a positive number");
                return ExitCode::from(2);
            }
            match bench::run_paillier(key_bits, Duration::from_secs_f64(seconds), seed) {
                Ok(report) => {
                    if json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(s) => println!("{s}"),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        print!("{}", bench::render(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
