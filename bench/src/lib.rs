//! The GELU-Net paper's comparisons (Zhang et al., IJCAI-18, §5), run on this machine in
//! one process: `gelunet bench paper`.
//!
//! | part | paper | what is measured | module |
//! | --- | --- | --- | --- |
//! | 1 | Fig. 3 | training loss per epoch of GELU-Net vs square / Taylor-3 / Taylor-5 activations, hidden widths 5, 12, 15, 300; which runs diverge | [`stability`] |
//! | 2 | Table 3 | test accuracy, mean ± std over seeds: GELU-Net (encrypted run checked against its exact reference) vs CryptoNets (deployed fixed-point square network, BFV-checked) vs BGN-Net (Taylor-5) | [`accuracy`] |
//! | 3 | Table 1 | cost of one activation: GELU-Net's outsourced activation over loopback QUIC (communication / crypto / activation) vs BFV square and degree-5 polynomial | [`activation`] |
//! | 4 | Table 5 | inference latency (one sample) and throughput (a batch): GELU-Net vs CryptoNets under BFV, Dense(12) on Iris and Dense(300) on MNIST | [`inference`] |
//! | 5 | PROUD Table 3, SecureNets, Sun et al. | the other schemes of the seed papers next to GELU-Net: one table per workload (what each hides from whom, accuracy, latency, throughput, bytes, measured leakage) | [`schemes`] |
//!
//! [`run`] executes the selected parts and writes `report.md`, `report.json` and PNG plots
//! (drawn by `gelunet-plot`)
//! into the output directory. Every table states the key size, BFV parameters, batch size,
//! threads and the machine's core count.

pub mod accuracy;
pub mod activation;
pub mod conv_table;
pub mod error;
pub mod inference;
pub mod paillier_throughput;
pub mod pipeline;
pub mod report;
pub mod runs;
pub mod schemes;
pub mod stability;
pub mod train_throughput;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gelunet_baselines::{BfvConfig, BfvDescription};
use serde::Serialize;

pub use error::{BenchError, Result};
pub use gelunet_datasets::resolve_data_dir;

use crate::accuracy::{AccuracyReport, DatasetPlan, EncryptedPlan};
use crate::activation::ActivationReport;
use crate::inference::InferenceReport;
use crate::pipeline::{prepare, MnistLimits};
use crate::stability::StabilityReport;

/// How many sessions of seed 0 part 2 runs encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EncryptedSessions {
    /// The mode's default (all of them for `--quick`, a few at full size).
    Default,
    /// Every session of the training run.
    All,
    /// The first `n` sessions.
    First(usize),
    /// No encrypted run.
    None,
}

/// `--encrypted-sessions`: `all`, `none` or a number (absent: [`EncryptedSessions::Default`]).
impl std::str::FromStr for EncryptedSessions {
    type Err = String;

    /// # Errors
    /// Anything else, as `` `x` is not all, none or a number ``.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            n => n
                .parse()
                .map(Self::First)
                .map_err(|_| format!("`{n}` is not all, none or a number")),
        }
    }
}

/// What `gelunet bench paper` runs.
#[derive(Clone, Debug)]
pub struct PaperConfig {
    /// Output directory (created).
    pub out_dir: PathBuf,
    /// Data directory (laid out as `iris/`, `pima-diabetes/`, `kr-vs-kp/`, `mnist/`).
    pub data_dir: PathBuf,
    /// Small sizes for tests (test keys allowed, few epochs, Iris only).
    pub quick: bool,
    /// Parts to run (1–6).
    pub parts: Vec<u8>,
    /// Seeds for part 2 (default 5, quick 1).
    pub seeds: Option<usize>,
    /// Paillier key size (default 2048; quick 512).
    pub key_bits: Option<u64>,
    /// Allow keys below 2048 bits outside `--quick`.
    pub insecure_test_keys: bool,
    /// Datasets of part 2 (default iris, pima, kr-vs-kp, mnist; quick iris).
    pub datasets: Option<Vec<String>>,
    /// Encrypted sessions of part 2.
    pub encrypted_sessions: EncryptedSessions,
    /// Learning rate of every dataset of part 2 (default: per dataset, see
    /// [`dataset_plans`]).
    pub lr: Option<f64>,
    /// Big-integer backend of the Paillier hot loops (for the report).
    pub backend: String,
    /// The command line (for the report).
    pub command: String,
    /// Progress messages go here.
    pub verbose: bool,
}

impl PaperConfig {
    /// The `--quick` configuration of `parts` (no other flag given): default seeds, key
    /// size, datasets and encrypted sessions, this crate's backend name, quiet; the
    /// command recorded is `test quick`.
    #[must_use]
    pub fn quick(out_dir: PathBuf, data_dir: PathBuf, parts: Vec<u8>) -> Self {
        Self {
            out_dir,
            data_dir,
            quick: true,
            parts,
            seeds: None,
            key_bits: None,
            insecure_test_keys: false,
            datasets: None,
            encrypted_sessions: EncryptedSessions::Default,
            lr: None,
            backend: gelunet_paillier::BACKEND.to_string(),
            command: "test quick".into(),
            verbose: false,
        }
    }
}

/// The machine and the run.
#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// Rayon's thread pool size (the Paillier batch operations).
    pub rayon_threads: usize,
    /// Paillier big-integer backend.
    pub backend: String,
    /// Paillier key size.
    pub key_bits: u64,
    /// Whether keys below 2048 bits were used.
    pub test_keys: bool,
    /// Quick mode.
    pub quick: bool,
    /// Command line.
    pub command: String,
    /// OS / architecture.
    pub platform: String,
    /// Total wall time, seconds.
    pub seconds: f64,
}

/// Everything `gelunet bench paper` measured.
#[derive(Clone, Debug, Serialize)]
pub struct PaperReport {
    /// The machine and the run.
    pub environment: Environment,
    /// Part 1.
    pub stability: Option<StabilityReport>,
    /// Part 2.
    pub accuracy: Option<AccuracyReport>,
    /// Part 3.
    pub activation: Option<ActivationReport>,
    /// Part 4.
    pub inference: Option<InferenceReport>,
    /// Part 5.
    pub schemes: Option<schemes::SchemesReport>,
    /// Part 6 (conv networks, paper Table 4).
    pub conv: Option<conv_table::ConvReport>,
    /// Parts that failed, with the error.
    pub failures: Vec<(u8, String)>,
}

impl PaperReport {
    /// `Err("some parts failed: part P: ERROR; …")` when a part failed, else `Ok`.
    ///
    /// # Errors
    /// One or more entries in [`PaperReport::failures`].
    pub fn check_failures(&self) -> std::result::Result<(), String> {
        if self.failures.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .failures
            .iter()
            .map(|(p, e)| format!("part {p}: {e}"))
            .collect();
        Err(format!("some parts failed: {}", parts.join("; ")))
    }
}

/// A bench report as the command line prints it: pretty JSON (with a final newline) when
/// `json`, else `render(report)`.
///
/// # Errors
/// A report that does not serialize (not expected: reports are plain data).
pub fn report_text<T: Serialize>(
    report: &T,
    json: bool,
    render: fn(&T) -> String,
) -> serde_json::Result<String> {
    if json {
        Ok(serde_json::to_string_pretty(report)? + "\n")
    } else {
        Ok(render(report))
    }
}

/// The machine's core count.
#[must_use]
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Clients every training run splits the data among.
pub const CLIENTS: usize = 3;

/// Mini-batch size of every training run (`B·d ≤` the smallest fan-in, 4 on Iris).
pub const BATCH: usize = 4;

/// Per-dataset training plans of part 2.
#[must_use]
pub fn dataset_plans(names: &[String], seeds: usize, quick: bool) -> Vec<DatasetPlan> {
    names
        .iter()
        .map(|n| {
            let name = n.to_ascii_lowercase();
            let (hidden, lr, epochs, seeds) = match name.as_str() {
                "iris" => (12, 0.05, if quick { 8 } else { 50 }, seeds),
                "pima" | "diabetes" => (12, 0.01, if quick { 3 } else { 30 }, seeds),
                "kr-vs-kp" => (12, 0.001, if quick { 2 } else { 30 }, seeds),
                "mnist" => (300, 0.01, if quick { 1 } else { 2 }, seeds.min(2)),
                _ => (12, 0.01, if quick { 3 } else { 30 }, seeds),
            };
            DatasetPlan {
                name,
                hidden,
                lr,
                batch: BATCH,
                epochs,
                seeds,
            }
        })
        .collect()
}

/// MNIST samples used (first of each split).
#[must_use]
pub fn mnist_limits(quick: bool) -> MnistLimits {
    if quick {
        MnistLimits {
            train: 1000,
            test: 200,
        }
    } else {
        MnistLimits {
            train: 10_000,
            test: 2_000,
        }
    }
}

/// The BFV parameters of the per-operation measurements (part 3): `N = 8192`, a 20-bit
/// `t` (room for the depth-3 Taylor-5 polynomial).
///
/// # Errors
/// Parameter errors.
pub fn ops_bfv_config() -> Result<BfvConfig> {
    Ok(BfvConfig::n8192(20)?)
}

/// One line of a figure's parameters, as written under every table and plot.
#[must_use]
pub fn parameters_line(
    env: &Environment,
    bfv: Option<&BfvDescription>,
    batch: Option<usize>,
) -> String {
    let mut s = format!(
        "Paillier {} bits{} ({}), threads {} (rayon), cores {}",
        env.key_bits,
        if env.test_keys { " TEST-SIZE KEYS" } else { "" },
        env.backend,
        env.rayon_threads,
        env.cores
    );
    if let Some(b) = batch {
        s.push_str(&format!(", batch {b}"));
    }
    if let Some(d) = bfv {
        s.push_str(&format!(
            "; BFV N = {}, log q = {} {:?}, t = {} ({} bits)",
            d.degree, d.log_q, d.moduli_bits, d.plaintext_modulus, d.t_bits
        ));
    }
    s
}

/// Runs the selected parts and writes `report.md`, `report.json` and the plots into
/// `config.out_dir`. A part that fails is recorded in [`PaperReport::failures`] and the
/// others still run; the function fails only on configuration and output errors.
///
/// # Errors
/// [`BenchError::Config`] for invalid flags; I/O errors writing the report.
pub fn run(config: &PaperConfig) -> Result<PaperReport> {
    let t0 = Instant::now();
    let quick = config.quick;
    let key_bits = config.key_bits.unwrap_or(if quick { 512 } else { 2048 });
    let test_keys = key_bits < gelunet_paillier::MIN_KEY_BITS;
    let allow_test_keys = quick || config.insecure_test_keys;
    if test_keys && !allow_test_keys {
        return Err(BenchError::Config(format!(
            "--key-bits {key_bits} is below 2048: test-size keys need --quick or --insecure-test-keys"
        )));
    }
    if let Some(p) = config.parts.iter().find(|p| !(1..=6).contains(*p)) {
        return Err(BenchError::Config(format!(
            "unknown part {p} (parts are 1, 2, 3, 4, 5, 6)"
        )));
    }
    let seeds = config.seeds.unwrap_or(if quick { 1 } else { 5 });
    if seeds == 0 {
        return Err(BenchError::Config("--seeds must be at least 1".into()));
    }
    std::fs::create_dir_all(&config.out_dir)?;
    let log = |s: &str| {
        if config.verbose {
            use std::io::Write;
            // A closed standard error drops the log line; the run goes on.
            let _ = writeln!(
                std::io::stderr().lock(),
                "[{:>7.1}s] {s}",
                t0.elapsed().as_secs_f64()
            );
        }
    };
    let mut env = Environment {
        cores: cores(),
        rayon_threads: rayon::current_num_threads(),
        backend: config.backend.clone(),
        key_bits,
        test_keys,
        quick,
        command: config.command.clone(),
        platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        seconds: 0.0,
    };
    let mut report = PaperReport {
        environment: env.clone(),
        stability: None,
        accuracy: None,
        activation: None,
        inference: None,
        schemes: None,
        conv: None,
        failures: Vec::new(),
    };
    let out = config.out_dir.as_path();
    // Parts 4 and 5 take the same configuration.
    let part_config = inference::PartConfig {
        data_dir: config.data_dir.clone(),
        quick,
        key_bits,
        allow_test_keys,
        out_dir: out.to_path_buf(),
    };
    for &part in &config.parts {
        log(&format!("part {part}"));
        let r = match part {
            1 => run_stability(config, &env, out).map(|r| report.stability = Some(r)),
            2 => run_accuracy(config, &env, seeds, key_bits, allow_test_keys, out, &log)
                .map(|r| report.accuracy = Some(r)),
            3 => {
                let reps = if quick { 3 } else { 50 };
                ops_bfv_config()
                    .and_then(|cfg| {
                        activation::run(
                            key_bits,
                            allow_test_keys,
                            reps,
                            &cfg,
                            if quick { 1 } else { 5 },
                        )
                    })
                    .map(|r| report.activation = Some(r))
            }
            4 => inference::run(&part_config, &log).map(|r| report.inference = Some(r)),
            5 => schemes::run(&part_config, &log).map(|r| report.schemes = Some(r)),
            _ => conv_table::run(&part_config, &log).map(|r| report.conv = Some(r)),
        };
        if let Err(e) = r {
            log(&format!("part {part} failed: {e}"));
            report.failures.push((part, e.to_string()));
        }
        // Write after every part, so a long run leaves partial results behind.
        env.seconds = t0.elapsed().as_secs_f64();
        report.environment = env.clone();
        write_outputs(&report, out)?;
    }
    env.seconds = t0.elapsed().as_secs_f64();
    report.environment = env;
    write_outputs(&report, out)?;
    Ok(report)
}

fn run_stability(config: &PaperConfig, env: &Environment, out: &Path) -> Result<StabilityReport> {
    let quick = config.quick;
    let prep = prepare(&config.data_dir, "iris", 0, CLIENTS, mnist_limits(quick))?;
    let widths: &[usize] = if quick { &[5, 12] } else { &[5, 12, 15, 300] };
    let lrs: &[f64] = if quick {
        &[0.05, 0.5]
    } else {
        &[0.05, 0.2, 1.0]
    };
    let epochs = if quick { 5 } else { 30 };
    let caption = format!(
        "plaintext training ({} clients); threads {}, cores {}",
        CLIENTS, env.rayon_threads, env.cores
    );
    stability::run(&prep, widths, lrs, BATCH, epochs, 0, out, &caption)
}

fn run_accuracy(
    config: &PaperConfig,
    env: &Environment,
    seeds: usize,
    key_bits: u64,
    allow_test_keys: bool,
    out: &Path,
    log: &dyn Fn(&str),
) -> Result<AccuracyReport> {
    let quick = config.quick;
    let names = config.datasets.clone().unwrap_or_else(|| {
        if quick {
            vec!["iris".into()]
        } else {
            vec![
                "iris".into(),
                "pima".into(),
                "kr-vs-kp".into(),
                "mnist".into(),
            ]
        }
    });
    let mut plans = dataset_plans(&names, seeds, quick);
    if let Some(lr) = config.lr {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(BenchError::Config(format!("--lr {lr} must be positive")));
        }
        for p in &mut plans {
            p.lr = lr;
        }
    }
    let mut rows = Vec::new();
    for plan in &plans {
        let is_mnist = plan.name == "mnist";
        let max_sessions = match config.encrypted_sessions {
            EncryptedSessions::Default if quick => Some(Some(10)),
            EncryptedSessions::Default => {
                Some(Some(if test_keys_only(key_bits) { 100 } else { 10 }))
            }
            EncryptedSessions::All => Some(None),
            EncryptedSessions::First(n) => Some(Some(n)),
            EncryptedSessions::None => None,
        };
        let enc = EncryptedPlan {
            key_bits,
            allow_test_keys,
            max_sessions: max_sessions.flatten(),
            enabled: max_sessions.is_some() && !is_mnist,
        };
        log(&format!("accuracy: {}", plan.name));
        match accuracy::run_dataset(
            &config.data_dir,
            plan,
            CLIENTS,
            mnist_limits(quick),
            enc,
            8192,
            log,
        ) {
            Ok(row) => rows.push(row),
            Err(e) => {
                log(&format!("accuracy: {} failed: {e}", plan.name));
                return Err(e);
            }
        }
    }
    let plot_file = "accuracy.png".to_string();
    accuracy::plot(
        &rows,
        &out.join(&plot_file),
        &format!(
            "{}; {} clients, B = {BATCH}, seeds {seeds}",
            parameters_line(
                env,
                rows.iter()
                    .find_map(|r| r.bfv.as_ref().map(|b| &b.parameters)),
                Some(BATCH)
            ),
            CLIENTS
        ),
    )?;
    Ok(AccuracyReport {
        rows,
        plot: Some(plot_file),
    })
}

fn test_keys_only(key_bits: u64) -> bool {
    key_bits < gelunet_paillier::MIN_KEY_BITS
}

/// Seconds as `12.34 ms` / `1.23 s` / `12.34 µs` (for notes).
#[must_use]
pub fn report_ms(s: f64) -> String {
    if !s.is_finite() {
        "–".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// Writes `report.json` and `report.md` into `out`.
///
/// # Errors
/// I/O and JSON errors.
pub fn write_outputs(report: &PaperReport, out: &Path) -> Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report.md"), report::markdown(report))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_sessions_parse() {
        assert_eq!("all".parse(), Ok(EncryptedSessions::All));
        assert_eq!("none".parse(), Ok(EncryptedSessions::None));
        assert_eq!("7".parse(), Ok(EncryptedSessions::First(7)));
        let e = "some".parse::<EncryptedSessions>().unwrap_err();
        assert_eq!(e, "`some` is not all, none or a number");
    }
}
