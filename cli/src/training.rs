//! `gelunet train`, `serve` and `join`: arguments, and the printed summaries. The runs are
//! `gelunet_run::{train, train_plaintext, serve, join}`.

use std::path::PathBuf;
use std::time::Duration;

use gelunet_net::Zeroizing;
use gelunet_run::{parse_shares, JoinConfig, RunError, ServeConfig, TrainConfig};

use crate::opts::{DataArgs, ListenArgs, TrainingArgs};
use gelunet_run::{KeyOptions, NetOptions};

/// Randomness of `gelunet train` (shown after its options).
const TRAIN_RANDOMNESS_HELP: &str = "Randomness: every client's masks, encryption obfuscators \
and decryption blinding factors come from the operating system (ChaCha20 seeded with 256 bits \
from it); only the clients' mini-batch order derives from the public --seed, so that the \
plaintext reference can replay it (the order, never the masks, determines the model). The \
report says so (\"randomness\").";

/// Randomness of `gelunet join` and `gelunet serve` (shown after their options).
const JOIN_RANDOMNESS_HELP: &str = "Randomness: by default every secret of a client (masks, \
obfuscators, blinding factors) and its mini-batch order come from the operating system. \
`join --insecure-reproducible` derives them from the public --seed instead, so that a server \
started with `serve --insecure-reproducible` can check the run against the plaintext \
reference: the masks are then known to the server, and both reports say \
\"masks known to the server\". Experiments only.";

/// Arguments of `gelunet train`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{}\n\n{TRAIN_RANDOMNESS_HELP}", gelunet_run::DEFAULTS_HELP))]
pub struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Number of clients K.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Fractions of the training set per client, comma-separated (default: equal).
    #[arg(long)]
    client_shares: Option<String>,
    #[command(flatten)]
    run: TrainingArgs,
    /// Train only the plaintext fixed-point reference: no keys, no network, seconds
    /// instead of minutes. Same data split, initialization, client samplers, session
    /// plans and stop rule as an encrypted run with the same options, hence the same
    /// model (clients are scheduled in index order here, in registration order over
    /// QUIC). For choosing hyper-parameters before an encrypted run.
    #[arg(long)]
    plaintext: bool,
    /// Keep the run's state in this directory (created if missing), so that it can be
    /// resumed: the server's checkpoint after every completed session (checkpoint.bin,
    /// under protocol v2 the masked state only) and, written once before the first
    /// session, the clients' group key (group.key) and Paillier key pairs
    /// (client-K.key), all mode 0600. A directory holding an earlier run's checkpoint is
    /// refused. Without it nothing is written but the outputs asked for, no key touches
    /// the disk, and an interrupted run must start again.
    #[arg(long, value_name = "DIR", conflicts_with = "plaintext")]
    state_dir: Option<PathBuf>,
    /// Continue the run whose state is in DIR (after a crash, `kill -9`, Ctrl-C or
    /// SIGTERM), with the same options: the final model is the uninterrupted run's. A
    /// missing, damaged or mismatched state (other options, keys of another run) is
    /// refused before any key is generated and left as it is.
    #[arg(long, value_name = "DIR", conflicts_with = "plaintext")]
    resume: Option<PathBuf>,
}

/// Arguments of `gelunet serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{}\n\n{JOIN_RANDOMNESS_HELP}", gelunet_run::DEFAULTS_HELP))]
pub struct ServeArgs {
    #[command(flatten)]
    endpoint: ListenArgs,
    /// Clients to wait for before training (default: all configured).
    #[arg(long)]
    wait_for: Option<usize>,
    /// Number of shares the public seeded split has (default: configured clients); with
    /// --dataset, lets the server rebuild the plaintext reference of reproducible clients.
    #[arg(long)]
    clients: Option<usize>,
    /// Share fractions of the public split.
    #[arg(long)]
    client_shares: Option<String>,
    /// Input width, when no --dataset is given.
    #[arg(long)]
    inputs: Option<usize>,
    /// Number of classes, when no --dataset is given.
    #[arg(long)]
    classes: Option<usize>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    run: TrainingArgs,
    /// Admit clients that join with --insecure-reproducible (their masks derive from the
    /// public --seed: known to this server), to check the run against the plaintext
    /// reference. Without it such clients are refused. Experiments only.
    #[arg(long)]
    insecure_reproducible: bool,
    /// Continue the run whose checkpoint is in STATE_DIR (after a crash, `kill -9`,
    /// Ctrl-C or SIGTERM) with the same options: the clients reconnect by themselves
    /// and training goes on after the last completed session. A missing, damaged or
    /// mismatched checkpoint is refused and left as it is.
    #[arg(long, value_name = "STATE_DIR")]
    resume: Option<PathBuf>,
}

/// Arguments of `gelunet join` (no `Debug`: it holds the token).
#[derive(clap::Args)]
#[command(after_help = JOIN_RANDOMNESS_HELP)]
pub struct JoinArgs {
    /// The server's address (HOST:PORT).
    #[arg(long)]
    server: String,
    /// The server's certificate (its STATE_DIR/cert.der), pinned.
    #[arg(long)]
    server_cert: PathBuf,
    /// Name the certificate is valid for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// This client's name, as configured on the server.
    #[arg(long)]
    name: String,
    /// This client's token (visible to other local users in the process list; prefer
    /// --token-file).
    #[arg(
        long,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding this client's token (first line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Take share i of the public seeded split of the training set (with --clients K);
    /// without it, the whole training split of --dataset is this client's data.
    #[arg(long)]
    client_index: Option<usize>,
    /// Number of shares of the public split.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Share fractions of the public split.
    #[arg(long)]
    client_shares: Option<String>,
    /// Seed of the public split (same as the server's --seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// INSECURE reproducible run: derive this client's masks, obfuscators and batch order
    /// from --seed and --client-index and tell the server, which can then check
    /// exactness against the plaintext reference. The masks are then known to the
    /// server; it must be started with --insecure-reproducible. Experiments only.
    #[arg(long)]
    insecure_reproducible: bool,
    #[command(flatten)]
    keys: KeyOptions,
    /// Keep this client's Paillier key pair here (loaded if present, else generated and
    /// saved), so that a restarted client can rejoin.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The clients' group key file of protocol v2 (made once by `gelunet group-key new`
    /// and shared by the data owners, never with the server). Read before connecting.
    #[arg(long)]
    group_key: Option<PathBuf>,
    /// The protocol this client takes part in: v2 (default; a server of the paper's
    /// protocol is refused) or paper (either is accepted).
    #[arg(long, value_enum, default_value_t = gelunet_protocol::v2::Protocol::V2)]
    protocol: gelunet_protocol::v2::Protocol,
    /// Reconnection attempts after a lost connection, per outage (pauses of 250 ms
    /// doubling up to 5 s; the count starts again once registered).
    #[arg(long, default_value_t = 3)]
    reconnect: u32,
    /// How long to keep trying to reach the server, in seconds: at the start and in
    /// every outage (e.g. while the server restarts with --resume).
    #[arg(long, default_value_t = 120)]
    connect_timeout: u64,
    #[command(flatten)]
    net: NetOptions,
    /// Write a JSON report of this client's run here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress (a bar on a terminal, a line every few seconds elsewhere), errors only.
    #[arg(long)]
    quiet: bool,
}

/// Runs `gelunet train` (or `train --plaintext`) and prints its summary.
///
/// # Errors
/// The run's errors.
pub fn train(args: TrainArgs) -> Result<(), RunError> {
    let run = &args.run;
    gelunet_run::init_tracing(run.out.quiet);
    let config = TrainConfig {
        data: args.data.options(),
        clients: args.clients,
        client_shares: parse_shares(args.client_shares.as_deref())?,
        model: run.model.options(),
        keys: run.keys,
        net: run.net,
        output: run.out.options(),
        state_dir: match (&args.state_dir, &args.resume) {
            (Some(d), Some(r)) if d != r => {
                return Err(RunError::option(
                    "--resume",
                    format!("{} is not the --state-dir {}", r.display(), d.display()),
                ))
            }
            (d, r) => d.clone().or_else(|| r.clone()),
        },
        resume: args.resume.is_some(),
    };
    let report = if args.plaintext {
        gelunet_run::train_plaintext(&config)?
    } else {
        gelunet_run::train(&config)?
    };
    crate::out_unless(run.out.quiet, report);
    Ok(())
}

/// Runs `gelunet serve` and prints its summary.
///
/// # Errors
/// The run's errors.
pub fn serve(args: ServeArgs) -> Result<(), RunError> {
    let run = &args.run;
    gelunet_run::init_tracing(run.out.quiet);
    let config = ServeConfig {
        listen: args.endpoint.options(args.resume.as_deref())?,
        wait_for: args.wait_for,
        clients: args.clients,
        client_shares: parse_shares(args.client_shares.as_deref())?,
        inputs: args.inputs,
        classes: args.classes,
        data: args.data.options(),
        model: run.model.options(),
        keys: run.keys,
        net: run.net,
        output: run.out.options(),
        insecure_reproducible: args.insecure_reproducible,
        resume: args.resume.is_some(),
    };
    let quiet = run.out.quiet;
    let report = gelunet_run::serve(&config, &|l| {
        crate::out_unless(quiet, format_args!("{l}\n"));
    })?;
    crate::out_unless(quiet, report);
    Ok(())
}

/// Runs `gelunet join` and prints its summary.
///
/// # Errors
/// The run's errors.
pub fn join(args: JoinArgs) -> Result<(), RunError> {
    gelunet_run::init_tracing(args.quiet);
    let config = JoinConfig {
        server: args.server,
        server_cert: args.server_cert,
        server_name: args.server_name,
        name: args.name,
        token: args.token.map(Zeroizing::new),
        token_file: args.token_file,
        data: args.data.options(),
        client_index: args.client_index,
        clients: args.clients,
        client_shares: parse_shares(args.client_shares.as_deref())?,
        seed: args.seed,
        insecure_reproducible: args.insecure_reproducible,
        keys: args.keys,
        key_file: args.key_file,
        group_key_file: args.group_key,
        protocol: args.protocol,
        reconnect: args.reconnect,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        net: args.net,
        report: args.report,
        progress: !args.quiet,
    };
    let report = gelunet_run::join(&config)?;
    crate::out_unless(args.quiet, report);
    Ok(())
}
