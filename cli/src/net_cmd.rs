//! `gelunet train`, `serve`, `join` and `infer`: GELU-Net over QUIC.
//!
//! * `train` runs the server and `--clients K` clients in one process over loopback QUIC
//!   (real TLS, real Paillier keys), then evaluates the model, replays the same session
//!   plans with the plaintext fixed-point reference and writes the model and a JSON
//!   report.
//! * `serve` and `join` are the same training with the server and each client as
//!   separate processes (on separate hosts): the server's certificate lives in
//!   `--state-dir` and clients pin it with `--server-cert`.
//! * `infer` is encrypted inference with a trained model (paper Alg. 1).

mod infer_cmd;
mod model_file;
mod opts;
mod progress;
mod report;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig};
use gelunet_net::{ServerIdentity, TransportSettings, Zeroizing};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::envelope::ReferenceHint;
use gelunet_protocol::{FixedModel, Scales, ValueKind};
use gelunet_server::{Server, ServerConfig};
use gelunet_shell::client::{run_client, ClientRunStats, ClientShellConfig};
use gelunet_shell::server::{run_server, Credential, ServerShellConfig, TrainingLog};
use tokio::sync::mpsc;

pub use infer_cmd::{infer, serve_model, InferArgs, ServeModelArgs};
use model_file::ModelFile;
use opts::{client_name, client_seed, parse_shares, DataArgs, KeyArgs, ModelArgs, Prepared};
use report::{PartyReport, TrainReport};

/// Transport options.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// QUIC idle timeout in seconds: a peer that vanishes without closing its connection
    /// is detected after this long (keep-alives are sent every idle/4 s, at most 5 s).
    #[arg(long, default_value_t = 60)]
    pub idle_timeout: u64,
    /// Longest wait for one protocol answer, in seconds.
    #[arg(long, default_value_t = 600)]
    pub response_timeout: u64,
}

impl NetArgs {
    /// The transport settings.
    ///
    /// # Errors
    /// A message for an idle timeout below 2 s.
    pub fn transport(&self) -> Result<TransportSettings, String> {
        if self.idle_timeout < 2 {
            return Err("--idle-timeout must be at least 2 seconds".into());
        }
        if self.response_timeout == 0 {
            return Err("--response-timeout must be positive".into());
        }
        let idle = Duration::from_secs(self.idle_timeout);
        Ok(TransportSettings {
            idle_timeout: idle,
            keep_alive_interval: (idle / 4).min(Duration::from_secs(5)),
            ..TransportSettings::default()
        })
    }
}

/// Arguments of `gelunet train`.
#[derive(Debug, clap::Args)]
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
    model: ModelArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Train only the plaintext fixed-point reference: no keys, no network, seconds
    /// instead of minutes. Same data split, initialization, client samplers and session
    /// plans as an encrypted run with the same options, hence the same model (clients
    /// are scheduled in index order here, in registration order over QUIC). For choosing
    /// hyper-parameters before an encrypted run.
    #[arg(long)]
    plaintext: bool,
}

/// What a training run writes (`train`, `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Write the trained model here.
    #[arg(long)]
    model_out: Option<PathBuf>,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar, errors only.
    #[arg(long)]
    quiet: bool,
}

impl OutputArgs {
    /// The end of a training run: the JSON report if asked for (written whole, or an
    /// error), then the summary unless `--quiet`.
    ///
    /// # Errors
    /// The report's I/O errors.
    fn finish(&self, report: &TrainReport) -> Result<(), String> {
        if let Some(path) = &self.report {
            report::write_json(path, report)?;
        }
        if !self.quiet {
            print_summary(report);
        }
        Ok(())
    }
}

/// Where a server listens, its certificate and the clients it accepts (`serve`,
/// `serve-model`).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on (port 0: any free port, written to STATE_DIR/listen.addr).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Directory of the server's certificate (cert.der, given to clients) and key
    /// (key.der); generated on first use.
    #[arg(long)]
    state_dir: PathBuf,
    /// Extra names (DNS or IP) for a newly generated certificate, besides localhost and
    /// 127.0.0.1.
    #[arg(long = "cert-name")]
    cert_names: Vec<String>,
    /// File of client credentials, one `NAME:TOKEN` per line (# comments).
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// A client credential NAME:TOKEN (repeatable).
    #[arg(long = "client", value_name = "NAME:TOKEN")]
    client_creds: Vec<String>,
}

/// Arguments of `gelunet serve`.
#[derive(Debug, clap::Args)]
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
    model: ModelArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// Arguments of `gelunet join`.
#[derive(Debug, clap::Args)]
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
    /// Reproducible run: derive this client's role seed from --seed and --client-index
    /// and tell the server (which can then check exactness against the plaintext
    /// reference). The masks then come from a public seed: experiments only.
    #[arg(long)]
    reproducible: bool,
    #[command(flatten)]
    keys: KeyArgs,
    /// Keep this client's Paillier key pair here (loaded if present, else generated and
    /// saved), so that a restarted client can rejoin.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Reconnections allowed after a lost connection.
    #[arg(long, default_value_t = 3)]
    reconnect: u32,
    /// How long to keep trying to reach the server, in seconds.
    #[arg(long, default_value_t = 120)]
    connect_timeout: u64,
    #[command(flatten)]
    net: NetArgs,
    /// Write a JSON report of this client's run here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Errors only.
    #[arg(long)]
    quiet: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn eta(cfg: &ServerConfig) -> Result<i128, String> {
    cfg.scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .map_err(|e| format!("--lr: {e}"))
}

fn token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the evaluation of a finished run gives.
struct Evaluation {
    test_accuracy: Option<f64>,
    train_accuracy: Option<f64>,
    plaintext_test_accuracy: Option<f64>,
    diff: Option<(f64, u64)>,
}

fn evaluate(
    model: &FixedModel,
    cfg: &ServerConfig,
    prepared: Option<&Prepared>,
    log: &TrainingLog,
    share_of: impl Fn(usize) -> Option<(gelunet_protocol::Dataset, u64)>,
) -> Result<Evaluation, String> {
    let scales: Scales = cfg.scales;
    let classes = cfg.spec.classes();
    let Some(p) = prepared else {
        return Ok(Evaluation {
            test_accuracy: None,
            train_accuracy: None,
            plaintext_test_accuracy: None,
            diff: None,
        });
    };
    let test = report::quantize(&p.test, classes, &scales)?;
    let train = report::quantize(&p.train, classes, &scales)?;
    let acc = |m: &FixedModel, d: &gelunet_protocol::Dataset| -> Result<Option<f64>, String> {
        if d.is_empty() {
            Ok(None)
        } else {
            report::accuracy(m, &scales, d).map(Some)
        }
    };
    let reference = report::replay(
        &cfg.spec,
        scales,
        cfg.model_seed,
        eta(cfg)?,
        cfg.batch_size,
        log,
        share_of,
    )?;
    Ok(Evaluation {
        test_accuracy: acc(model, &test)?,
        train_accuracy: acc(model, &train)?,
        plaintext_test_accuracy: match &reference {
            Some(r) => acc(r, &test)?,
            None => None,
        },
        diff: reference.map(|r| report::max_diff(model, &r, &scales)),
    })
}

struct ReportInput<'a> {
    command: &'a str,
    dataset: Option<String>,
    model: &'a ModelArgs,
    keys: &'a KeyArgs,
    log: &'a TrainingLog,
    eval: &'a Evaluation,
    wall: Duration,
    keygen: Duration,
    test_samples: usize,
    parties: Vec<PartyReport>,
}

fn build_report(i: ReportInput<'_>) -> TrainReport {
    let log = i.log;
    let mut per_client = BTreeMap::new();
    for c in &log.clients {
        per_client.insert(c.name.clone(), c.sessions);
    }
    let training = log.training_time.as_secs_f64();
    TrainReport {
        command: i.command.into(),
        dataset: i.dataset,
        clients: log.clients.len(),
        key_bits: i.keys.key_bits,
        mask: i.model.mask.name().into(),
        epochs: i.model.epochs,
        epochs_completed: log.epochs,
        max_sessions: i.model.sessions,
        test_accuracy: i.eval.test_accuracy,
        train_accuracy: i.eval.train_accuracy,
        plaintext_test_accuracy: i.eval.plaintext_test_accuracy,
        max_abs_weight_diff: i.eval.diff.map(|d| d.0),
        max_abs_weight_diff_fixed: i.eval.diff.map(|d| d.1),
        wall_seconds: i.wall.as_secs_f64(),
        keygen_seconds: i.keygen.as_secs_f64(),
        training_seconds: training,
        seconds_per_epoch: (log.epochs > 0.0).then(|| training / log.epochs),
        bytes_sent: log.bytes_sent,
        bytes_received: log.bytes_received,
        sessions: log.sessions_completed,
        sessions_abandoned: log.sessions.iter().filter(|s| !s.completed).count() as u64,
        sessions_per_client: per_client,
        samples_processed: log.samples,
        train_samples: log.samples_held,
        test_samples: i.test_samples,
        batch_size: i.model.batch_size,
        hidden: i.model.hidden.clone(),
        activation: i.model.activation.name().into(),
        learning_rate: i.model.lr,
        seed: i.model.seed,
        backend: report::backend().into(),
        stop_reason: log.stop_reason.clone(),
        parties: i.parties,
    }
}

fn print_summary(r: &TrainReport) {
    let pct = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{:.2}%", 100.0 * a));
    let dataset = r.dataset.as_deref().unwrap_or("client data");
    if r.key_bits == 0 {
        println!(
            "plaintext fixed-point reference on {dataset} with {} clients (no encryption; an encrypted run with the same options gives the same model)",
            r.clients
        );
    } else {
        println!(
            "trained on {dataset} with {} clients, {}-bit keys ({} mask, {} backend)",
            r.clients, r.key_bits, r.mask, r.backend
        );
    }
    println!(
        "{} sessions ({} abandoned), {:.2} epochs in {:.1} s{}",
        r.sessions,
        r.sessions_abandoned,
        r.epochs_completed,
        r.training_seconds,
        r.seconds_per_epoch
            .map_or(String::new(), |s| format!(" ({s:.1} s/epoch)"))
    );
    println!(
        "test accuracy {} (plaintext fixed-point reference {}), max |w - w_ref| = {}",
        pct(r.test_accuracy),
        pct(r.plaintext_test_accuracy),
        r.max_abs_weight_diff
            .map_or("n/a".to_string(), |d| format!("{d}"))
    );
    println!(
        "server traffic: {:.2} MiB sent, {:.2} MiB received",
        r.bytes_sent as f64 / 1048576.0,
        r.bytes_received as f64 / 1048576.0
    );
}

fn save_model(
    path: &Path,
    model: &FixedModel,
    scales: Scales,
    prepared: Option<&Prepared>,
    split: (u64, f64),
) -> Result<(), String> {
    let inputs = model.spec.inputs();
    let (mean, std, class_names, feature_names, dataset) = match prepared {
        Some(p) => (
            p.standardizer.mean().to_vec(),
            p.standardizer.std().to_vec(),
            p.train.class_names.clone(),
            p.train.feature_names.clone(),
            p.name.clone(),
        ),
        None => (
            vec![0.0; inputs],
            vec![1.0; inputs],
            (0..model.spec.classes()).map(|c| c.to_string()).collect(),
            Vec::new(),
            String::new(),
        ),
    };
    ModelFile {
        model: model.clone(),
        scales,
        mean,
        std,
        class_names,
        feature_names,
        dataset,
        split_seed: split.0,
        test_fraction: split.1,
    }
    .save(path)
    .map_err(|e| e.to_string())
}

/// Runs `gelunet train`.
///
/// # Errors
/// Bad options, data errors, key generation, training failures, file errors.
pub fn train(args: TrainArgs) -> Result<(), String> {
    progress::init_tracing(args.out.quiet);
    let t_all = Instant::now();
    args.model.validate()?;
    args.keys.validate()?;
    let transport = args.net.transport()?;
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let shares = parse_shares(args.client_shares.as_deref())?;
    let prepared = args
        .data
        .prepare(args.clients, shares.as_deref(), args.model.seed)?;
    let spec = args
        .model
        .spec(prepared.train.n_features(), prepared.train.n_classes())?;
    let cfg = args.model.server_config(spec, &args.keys);
    if args.plaintext {
        return train_plaintext(&args, &prepared, &cfg, t_all);
    }
    let t_keys = Instant::now();
    let mut keys = args.keys.generate(args.clients + 1)?;
    let keygen = t_keys.elapsed();
    let server_key = keys.remove(0);
    let server = Server::new(cfg.clone(), server_key).map_err(|e| format!("server: {e}"))?;
    let mut clients = Vec::with_capacity(args.clients);
    for (k, (share, key)) in prepared.shares.iter().zip(keys).enumerate() {
        let config = ClientConfig {
            seed: client_seed(args.model.seed, k),
            allow_test_keys: args.keys.test_keys(),
            ..ClientConfig::default()
        };
        let c = Client::new(config, key, share.features.clone(), share.labels.clone())
            .map_err(|e| format!("client {k}: {e}"))?;
        clients.push((c, share.n_samples() as u64));
    }
    let identity = ServerIdentity::generate(&["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(|e| e.to_string())?;
    let credentials: Vec<Credential> = (0..args.clients)
        .map(|k| Credential {
            name: client_name(k),
            token: Zeroizing::new(token()),
        })
        .collect();
    let mut shell = ServerShellConfig::new(credentials.clone(), transport.clone());
    shell.coordinator.epochs = Some(f64::from(args.model.epochs));
    shell.coordinator.max_sessions = args.model.sessions;
    shell.coordinator.response_timeout = Duration::from_secs(args.net.response_timeout);
    shell.coordinator.join_timeout = Some(Duration::from_secs(120));
    let pb = progress::bar(args.out.quiet);
    let epochs = args.model.epochs;
    let rt = runtime()?;
    let (role, log, client_stats) = rt.block_on(async move {
        let endpoint = gelunet_net::server_endpoint(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &identity,
            &transport,
        )
        .map_err(|e| e.to_string())?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow(pb, epochs, ev_rx));
        let server_task = tokio::spawn(run_server(server, endpoint, shell, Some(ev_tx)));
        let mut tasks = Vec::new();
        for ((client, samples), cred) in clients.into_iter().zip(&credentials) {
            let cc = ClientShellConfig {
                server: addr,
                server_name: "localhost".into(),
                pinned_cert: identity.certificate().clone(),
                transport: transport.clone(),
                name: cred.name.clone(),
                token: cred.token.clone(),
                samples,
                reference: None,
                connect_timeout: Duration::from_secs(30),
                reconnect_attempts: 0,
                reconnect_delay: Duration::from_secs(1),
            };
            tasks.push(tokio::spawn(async move { run_client(client, &cc).await }));
        }
        let served = server_task
            .await
            .map_err(|e| format!("server task: {e}"))?
            .map_err(|e| format!("server: {e}"));
        let mut stats: Vec<Option<ClientRunStats>> = Vec::new();
        for (k, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(Ok((_, s))) => stats.push(Some(s)),
                Ok(Err(e)) => {
                    tracing::warn!(client = k, error = %e, "client failed");
                    stats.push(None);
                }
                Err(e) => return Err(format!("client task: {e}")),
            }
        }
        let _ = follower.await;
        let (role, log) = served?;
        Ok::<_, String>((role, log, stats))
    })?;
    let model = role
        .true_model()
        .map_err(|e| format!("server: {e}"))?
        .clone();
    let client_seeds: Vec<u64> = (0..args.clients)
        .map(|k| client_seed(args.model.seed, k))
        .collect();
    let share_of = |id: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
        let name = &log.clients.get(id)?.name;
        let k = (0..args.clients).find(|&k| &client_name(k) == name)?;
        let d = report::quantize(&prepared.shares[k], cfg.spec.classes(), &cfg.scales).ok()?;
        Some((d, client_seeds[k]))
    };
    let eval = evaluate(&model, &cfg, Some(&prepared), &log, share_of)?;
    if let Some(path) = &args.out.model_out {
        save_model(
            path,
            &model,
            cfg.scales,
            Some(&prepared),
            (args.model.seed, args.data.test_fraction),
        )?;
    }
    let mut parties = vec![PartyReport {
        name: "server".into(),
        bytes_sent: log.bytes_sent,
        bytes_received: log.bytes_received,
        sessions: log.sessions_completed,
        abandoned: log.sessions.iter().filter(|s| !s.completed).count() as u64,
        registrations: 0,
    }];
    for (k, s) in client_stats.iter().enumerate() {
        let c = log.clients.iter().find(|c| c.name == client_name(k));
        parties.push(PartyReport {
            name: client_name(k),
            bytes_sent: s.as_ref().map_or(0, |s| s.bytes_sent),
            bytes_received: s.as_ref().map_or(0, |s| s.bytes_received),
            sessions: s.as_ref().map_or(0, |s| s.sessions),
            abandoned: s.as_ref().map_or(0, |s| s.abandoned),
            registrations: c.map_or(0, |c| c.registrations),
        });
    }
    let report = build_report(ReportInput {
        command: "train",
        dataset: Some(prepared.name.clone()),
        model: &args.model,
        keys: &args.keys,
        log: &log,
        eval: &eval,
        wall: t_all.elapsed(),
        keygen,
        test_samples: prepared.test.n_samples(),
        parties,
    });
    args.out.finish(&report)
}

/// `gelunet train --plaintext`: the session plans of the server's scheduler, replayed by
/// the plaintext fixed-point reference.
fn train_plaintext(
    args: &TrainArgs,
    prepared: &Prepared,
    cfg: &ServerConfig,
    t_all: Instant,
) -> Result<(), String> {
    use gelunet_protocol::schedule::Scheduler;
    let mut scheduler = Scheduler::new(
        cfg.policy,
        &cfg.spec,
        cfg.batch_size,
        args.clients,
        cfg.schedule_seed,
    )
    .map_err(|e| format!("server: {e}"))?;
    let held: Vec<u64> = prepared
        .shares
        .iter()
        .map(|s| s.n_samples() as u64)
        .collect();
    let total: u64 = held.iter().sum();
    let epochs = args
        .model
        .sessions
        .is_none()
        .then(|| f64::from(args.model.epochs));
    let stop = gelunet_server::StopRule::new(epochs, args.model.sessions)
        .map_err(|e| format!("server: {e}"))?;
    let batch = cfg.batch_size as u64;
    let mut log = TrainingLog {
        clients: held
            .iter()
            .enumerate()
            .map(|(k, &samples)| gelunet_shell::server::ClientLog {
                name: client_name(k),
                id: k,
                samples,
                reference: None,
                registrations: 1,
                sessions: 0,
                abandoned: 0,
                bytes_sent: 0,
                bytes_received: 0,
                connected_at_end: true,
            })
            .collect(),
        sessions: Vec::new(),
        sessions_completed: 0,
        samples: 0,
        samples_held: total,
        epochs: 0.0,
        bytes_sent: 0,
        bytes_received: 0,
        training_time: Duration::ZERO,
        stop_reason: String::new(),
    };
    let t0 = Instant::now();
    log.stop_reason = loop {
        if let Some(r) = stop.check(log.sessions_completed, log.samples, total) {
            break r.to_string();
        }
        let plan = scheduler.next_session();
        log.sessions_completed += 1;
        log.samples += u64::from(plan.iterations) * batch;
        if let Some(c) = log.clients.get_mut(plan.client) {
            c.sessions += 1;
        }
        log.sessions.push(gelunet_shell::server::SessionLog {
            session: log.sessions_completed - 1,
            client: plan.client,
            name: client_name(plan.client),
            incarnation: 0,
            iterations: plan.iterations,
            completed: true,
            note: None,
            sessions_completed: log.sessions_completed,
            samples: log.samples,
            elapsed: Duration::ZERO,
        });
    };
    log.epochs = if total > 0 {
        log.samples as f64 / total as f64
    } else {
        0.0
    };
    let client_seeds: Vec<u64> = (0..args.clients)
        .map(|k| client_seed(args.model.seed, k))
        .collect();
    let share_of = |k: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
        let d = report::quantize(prepared.shares.get(k)?, cfg.spec.classes(), &cfg.scales).ok()?;
        Some((d, *client_seeds.get(k)?))
    };
    let model = report::replay(
        &cfg.spec,
        cfg.scales,
        cfg.model_seed,
        eta(cfg)?,
        cfg.batch_size,
        &log,
        share_of,
    )?
    .ok_or("plaintext reference: no client data")?;
    log.training_time = t0.elapsed();
    let mut eval = evaluate(&model, cfg, Some(prepared), &log, share_of)?;
    eval.diff = None;
    if let Some(path) = &args.out.model_out {
        save_model(
            path,
            &model,
            cfg.scales,
            Some(prepared),
            (args.model.seed, args.data.test_fraction),
        )?;
    }
    let mut report = build_report(ReportInput {
        command: "train --plaintext",
        dataset: Some(prepared.name.clone()),
        model: &args.model,
        keys: &args.keys,
        log: &log,
        eval: &eval,
        wall: t_all.elapsed(),
        keygen: Duration::ZERO,
        test_samples: prepared.test.n_samples(),
        parties: Vec::new(),
    });
    report.key_bits = 0;
    report.backend = "plaintext fixed-point reference".into();
    args.out.finish(&report)
}

fn parse_credential(s: &str) -> Result<Credential, String> {
    let (name, token) = s
        .split_once(':')
        .ok_or_else(|| format!("credential `{s}`: expected NAME:TOKEN"))?;
    let (name, token) = (name.trim(), token.trim());
    if name.is_empty() || token.is_empty() {
        return Err(format!(
            "credential for `{name}`: name and token must not be empty"
        ));
    }
    Ok(Credential {
        name: name.to_string(),
        token: Zeroizing::new(token.to_string()),
    })
}

fn load_credentials(args: &ListenArgs) -> Result<Vec<Credential>, String> {
    let mut creds = Vec::new();
    if let Some(path) = &args.tokens_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--tokens-file `{}`: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            creds.push(
                parse_credential(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
            );
        }
    }
    for c in &args.client_creds {
        creds.push(parse_credential(c)?);
    }
    if creds.is_empty() {
        return Err("no clients configured: pass --client NAME:TOKEN or --tokens-file".into());
    }
    Ok(creds)
}

fn load_or_create_identity(args: &ListenArgs) -> Result<ServerIdentity, String> {
    let dir = &args.state_dir;
    if dir.join(gelunet_net::CERT_FILE).exists() {
        return ServerIdentity::load(dir).map_err(|e| format!("--state-dir: {e}"));
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(args.cert_names.iter().cloned());
    let id = ServerIdentity::generate(&names).map_err(|e| e.to_string())?;
    id.save(dir).map_err(|e| format!("--state-dir: {e}"))?;
    Ok(id)
}

/// Runs `gelunet serve`.
///
/// # Errors
/// Bad options, data errors, key generation, training failures, file errors.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    progress::init_tracing(args.out.quiet);
    let t_all = Instant::now();
    args.model.validate()?;
    args.keys.validate()?;
    let transport = args.net.transport()?;
    let credentials = load_credentials(&args.endpoint)?;
    let wait_for = args.wait_for.unwrap_or(credentials.len());
    if wait_for == 0 || wait_for > credentials.len() {
        return Err(format!(
            "--wait-for {wait_for}: must be between 1 and the {} configured clients",
            credentials.len()
        ));
    }
    let shares = parse_shares(args.client_shares.as_deref())?;
    let split_clients = args.clients.unwrap_or(credentials.len());
    let prepared = match &args.data.dataset {
        Some(_) => Some(
            args.data
                .prepare(split_clients, shares.as_deref(), args.model.seed)?,
        ),
        None => None,
    };
    let (inputs, classes) = match (&prepared, args.inputs, args.classes) {
        (Some(p), _, _) => (p.train.n_features(), p.train.n_classes()),
        (None, Some(i), Some(c)) => (i, c),
        _ => {
            return Err(
                "the server needs the model's shape: pass --dataset, or --inputs and --classes"
                    .into(),
            )
        }
    };
    let spec = args.model.spec(inputs, classes)?;
    let cfg = args.model.server_config(spec, &args.keys);
    let identity = load_or_create_identity(&args.endpoint)?;
    let t_keys = Instant::now();
    let key = args
        .keys
        .generate(1)?
        .pop()
        .ok_or("key generation gave no key")?;
    let keygen = t_keys.elapsed();
    let server = Server::new(cfg.clone(), key).map_err(|e| format!("server: {e}"))?;
    let mut shell = ServerShellConfig::new(credentials, transport.clone());
    shell.coordinator.wait_for = wait_for;
    shell.coordinator.epochs = Some(f64::from(args.model.epochs));
    shell.coordinator.max_sessions = args.model.sessions;
    shell.coordinator.response_timeout = Duration::from_secs(args.net.response_timeout);
    let pb = progress::bar(args.out.quiet);
    let epochs = args.model.epochs;
    let rt = runtime()?;
    let listen = args.endpoint.clone();
    let quiet = args.out.quiet;
    let (role, log) = rt.block_on(async move {
        let endpoint = bind(&listen, &identity, &transport, quiet)?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow(pb, epochs, ev_rx));
        let r = run_server(server, endpoint, shell, Some(ev_tx)).await;
        let _ = follower.await;
        r.map_err(|e| format!("server: {e}"))
    })?;
    let model = role
        .true_model()
        .map_err(|e| format!("server: {e}"))?
        .clone();
    let share_of = |id: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
        let hint = log.clients.get(id)?.reference?;
        let p = prepared.as_ref()?;
        let share = p.shares.get(hint.share as usize)?;
        let d = report::quantize(share, cfg.spec.classes(), &cfg.scales).ok()?;
        Some((d, hint.client_seed))
    };
    let eval = evaluate(&model, &cfg, prepared.as_ref(), &log, share_of)?;
    if let Some(path) = &args.out.model_out {
        save_model(
            path,
            &model,
            cfg.scales,
            prepared.as_ref(),
            (args.model.seed, args.data.test_fraction),
        )?;
    }
    let mut parties = vec![PartyReport {
        name: "server".into(),
        bytes_sent: log.bytes_sent,
        bytes_received: log.bytes_received,
        sessions: log.sessions_completed,
        abandoned: log.sessions.iter().filter(|s| !s.completed).count() as u64,
        registrations: 0,
    }];
    for c in &log.clients {
        // From the server's side: what it received from the client is what the client sent.
        parties.push(PartyReport {
            name: c.name.clone(),
            bytes_sent: c.bytes_received,
            bytes_received: c.bytes_sent,
            sessions: c.sessions,
            abandoned: c.abandoned,
            registrations: c.registrations,
        });
    }
    let report = build_report(ReportInput {
        command: "serve",
        dataset: prepared.as_ref().map(|p| p.name.clone()),
        model: &args.model,
        keys: &args.keys,
        log: &log,
        eval: &eval,
        wall: t_all.elapsed(),
        keygen,
        test_samples: prepared.as_ref().map_or(0, |p| p.test.n_samples()),
        parties,
    });
    args.out.finish(&report)
}

/// Opens the QUIC endpoint of `args`, writes the bound address to
/// `STATE_DIR/listen.addr` and, unless `quiet`, prints it with the certificate's path and
/// fingerprint.
fn bind(
    args: &ListenArgs,
    identity: &ServerIdentity,
    transport: &TransportSettings,
    quiet: bool,
) -> Result<gelunet_net::quinn::Endpoint, String> {
    let endpoint = gelunet_net::server_endpoint(args.listen, identity, transport)
        .map_err(|e| e.to_string())?;
    let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
    model_file::write_atomic(
        &args.state_dir.join("listen.addr"),
        addr.to_string().as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    if !quiet {
        println!(
            "listening on {addr}; certificate {} (sha256 {})",
            args.state_dir.join(gelunet_net::CERT_FILE).display(),
            identity.fingerprint()
        );
    }
    Ok(endpoint)
}

fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("--server {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("--server {s}: no address"))
}

/// Parses [`PrivateKey::to_secret_bytes`] output; test keys (below 2048 bits) only with
/// `allow_test_keys`.
fn parse_key(bytes: &[u8], allow_test_keys: bool) -> Result<PrivateKey, String> {
    if !allow_test_keys {
        return PrivateKey::from_secret_bytes(bytes).map_err(|e| e.to_string());
    }
    let take = |b: &[u8]| -> Result<(gelunet_paillier::BigUint, usize), String> {
        let len = b
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .ok_or("truncated key file")?;
        let v = b.get(4..4 + len).ok_or("truncated key file")?;
        Ok((gelunet_paillier::BigUint::from_bytes_be(v), 4 + len))
    };
    let (p, used) = take(bytes)?;
    let (q, used_q) = take(&bytes[used..])?;
    if used + used_q != bytes.len() {
        return Err("trailing bytes after the private key".into());
    }
    PrivateKey::from_primes_insecure_for_tests(p, q).map_err(|e| e.to_string())
}

fn load_or_create_key(path: &Path, keys: &KeyArgs) -> Result<PrivateKey, String> {
    if path.exists() {
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("--key-file `{}`: {e}", path.display()))?,
        );
        return parse_key(&bytes, keys.test_keys())
            .map_err(|e| format!("--key-file `{}`: {e}", path.display()));
    }
    let key = keys
        .generate(1)?
        .pop()
        .ok_or("key generation gave no key")?;
    let bytes = key.to_secret_bytes();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = path.with_extension(format!("tmp.{}.{nanos}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("--key-file `{}`: {e}", path.display())
    })?;
    Ok(key)
}

/// The token given inline or as the first line of a file.
fn read_token(
    token: Option<&String>,
    token_file: Option<&PathBuf>,
) -> Result<Zeroizing<String>, String> {
    if let Some(t) = token {
        return Ok(Zeroizing::new(t.clone()));
    }
    let path = token_file.ok_or("pass --token or --token-file")?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file `{}`: {e}", path.display()))?,
    );
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("--token-file `{}` is empty", path.display()));
    }
    Ok(Zeroizing::new(token))
}

/// The JSON report of `gelunet join`.
#[derive(serde::Serialize)]
struct JoinReport {
    name: String,
    samples: u64,
    sessions: u64,
    abandoned: u64,
    reconnects: u32,
    bytes_sent: u64,
    bytes_received: u64,
    compute_seconds: f64,
    wall_seconds: f64,
    server_sessions: u64,
    server_epochs: f64,
    stop_reason: String,
    backend: String,
}

/// Runs `gelunet join`.
///
/// # Errors
/// Bad options, data errors, refusals (credentials, certificate), transport errors.
pub fn join(args: JoinArgs) -> Result<(), String> {
    progress::init_tracing(args.quiet);
    let t_all = Instant::now();
    args.keys.validate()?;
    let transport = args.net.transport()?;
    let server = resolve_addr(&args.server)?;
    let pinned = gelunet_net::load_certificate(&args.server_cert)
        .map_err(|e| format!("--server-cert: {e}"))?;
    let shares = parse_shares(args.client_shares.as_deref())?;
    let (k, split) = match args.client_index {
        Some(i) if i >= args.clients => {
            return Err(format!(
                "--client-index {i} is out of range for --clients {}",
                args.clients
            ))
        }
        Some(i) => (i, args.clients),
        None => (0, 1),
    };
    if args.reproducible && args.client_index.is_none() {
        return Err("--reproducible needs --client-index (a share of the public split)".into());
    }
    let prepared = args.data.prepare(split, shares.as_deref(), args.seed)?;
    let share = &prepared.shares[k];
    let key = match &args.key_file {
        Some(p) => load_or_create_key(p, &args.keys)?,
        None => args
            .keys
            .generate(1)?
            .pop()
            .ok_or("key generation gave no key")?,
    };
    let seed = if args.reproducible {
        client_seed(args.seed, k)
    } else {
        rand::random()
    };
    let config = ClientConfig {
        seed,
        allow_test_keys: args.keys.test_keys(),
        ..ClientConfig::default()
    };
    let client = Client::new(config, key, share.features.clone(), share.labels.clone())
        .map_err(|e| format!("client: {e}"))?;
    let cc = ClientShellConfig {
        server,
        server_name: args.server_name.clone(),
        pinned_cert: pinned,
        transport,
        name: args.name.clone(),
        token: read_token(args.token.as_ref(), args.token_file.as_ref())?,
        samples: share.n_samples() as u64,
        reference: args.reproducible.then_some(ReferenceHint {
            share: k as u32,
            client_seed: seed,
        }),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        reconnect_attempts: args.reconnect,
        reconnect_delay: Duration::from_secs(1),
    };
    let rt = runtime()?;
    let (_, stats) = rt
        .block_on(run_client(client, &cc))
        .map_err(|e| format!("client `{}`: {e}", args.name))?;
    let r = JoinReport {
        name: args.name.clone(),
        samples: share.n_samples() as u64,
        sessions: stats.sessions,
        abandoned: stats.abandoned,
        reconnects: stats.reconnects,
        bytes_sent: stats.bytes_sent,
        bytes_received: stats.bytes_received,
        compute_seconds: stats.compute.as_secs_f64(),
        wall_seconds: t_all.elapsed().as_secs_f64(),
        server_sessions: stats.summary.sessions,
        server_epochs: stats.summary.epochs,
        stop_reason: stats.summary.reason.clone(),
        backend: report::backend().into(),
    };
    if let Some(path) = &args.report {
        report::write_json(path, &r)?;
    }
    if !args.quiet {
        println!(
            "{}: {} sessions of {} in total; sent {:.2} MiB, received {:.2} MiB; training over ({})",
            r.name,
            r.sessions,
            r.server_sessions,
            r.bytes_sent as f64 / 1048576.0,
            r.bytes_received as f64 / 1048576.0,
            r.stop_reason
        );
    }
    Ok(())
}
