//! `gelunet train`: the server and K clients in one process over loopback QUIC (real TLS,
//! real Paillier keys), then evaluation, the replay by the plaintext fixed-point reference,
//! the model file and the report; and `gelunet train --plaintext`, the same session plans
//! replayed by the reference alone (no keys, no network).

use gelunet_protocol::group_key::GroupKey;
use gelunet_protocol::v2::Protocol;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig};
use gelunet_net::ServerIdentity;
use gelunet_protocol::schedule::Scheduler;
use gelunet_protocol::{FixedModel, Scales};
use gelunet_server::{Server, ServerConfig, StopRule};
use gelunet_shell::client::{run_client, ClientRunStats, ClientShellConfig};
use gelunet_shell::server::{
    run_server_with, ClientLog, Credential, ServerShellConfig, SessionLog, TrainingLog,
};
use tokio::sync::mpsc;

use crate::data::{client_name, client_seed, DataOptions, Prepared};
use crate::endpoint::{loopback_endpoint, random_token, runtime, NetOptions};
use crate::keys::KeyOptions;
use crate::model::ModelOptions;
use crate::model_file::ModelFile;
use crate::report::{
    build_report, evaluate, quantize, replay, server_party, write_json, Evaluation, PartyReport,
    ReportInput, TrainReport, PLAINTEXT_RANDOMNESS, TRAIN_RANDOMNESS,
};
use crate::{progress, Result, RunError};

/// What a training run writes (`train`, `serve`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Write the trained model here ([`ModelFile`], atomically).
    pub model_out: Option<PathBuf>,
    /// Write the JSON report here ([`TrainReport`], atomically).
    pub report: Option<PathBuf>,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

impl OutputOptions {
    /// Writes the report if asked for, and returns it.
    pub(crate) fn finish(&self, report: TrainReport) -> Result<TrainReport> {
        if let Some(path) = &self.report {
            write_json(path, &report)?;
        }
        Ok(report)
    }
}

/// The configuration of `gelunet train` and `gelunet train --plaintext`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainConfig {
    /// The dataset (required).
    pub data: DataOptions,
    /// Number of clients K (at least 1).
    pub clients: usize,
    /// Fractions of the training set per client (`None`: equal).
    pub client_shares: Option<Vec<f64>>,
    /// Model, optimizer, mask, scheduler and stop rule.
    pub model: ModelOptions,
    /// The Paillier keys (ignored by the plaintext reference beyond their check).
    pub keys: KeyOptions,
    /// Transport options.
    pub net: NetOptions,
    /// Outputs.
    pub output: OutputOptions,
}

impl TrainConfig {
    /// Checks every option (the stop rule and the key size before any key is generated),
    /// prepares the data and the server role's configuration: `(rule, prepared, cfg)`.
    fn setup(&self) -> Result<(StopRule, Prepared, ServerConfig)> {
        let rule = self.model.validate()?;
        self.keys.validate()?;
        self.net.transport()?;
        if self.clients == 0 {
            return Err(RunError::option("--clients", "must be at least 1"));
        }
        let prepared =
            self.data
                .prepare(self.clients, self.client_shares.as_deref(), self.model.seed)?;
        let spec = self
            .model
            .spec(prepared.train.n_features(), prepared.train.n_classes())?;
        let cfg = self.model.server_config(spec, &self.keys);
        Ok((rule, prepared, cfg))
    }
}

/// A finished training run, for [`TrainConfig::conclude`].
struct Trained<'a> {
    /// The command, as the report names it.
    command: &'a str,
    /// The trained model.
    model: &'a FixedModel,
    /// The sessions run.
    log: &'a TrainingLog,
    /// The model's evaluation.
    eval: &'a Evaluation,
    /// When the command started.
    started: Instant,
    /// Time spent generating keys.
    keygen: Duration,
    /// Traffic per party (server first), if the run had any.
    parties: Vec<PartyReport>,
    /// What the report says of the masks' randomness.
    randomness: &'static str,
}

impl TrainConfig {
    /// The end of `train` and `train --plaintext`: writes the model where `--model-out`
    /// asks (with the split of `prepared`) and builds the report (written by
    /// [`OutputOptions::finish`]).
    fn conclude(&self, prepared: &Prepared, scales: Scales, t: Trained<'_>) -> Result<TrainReport> {
        if let Some(path) = &self.output.model_out {
            save_model(
                path,
                t.model,
                scales,
                Some(prepared),
                (self.model.seed, self.data.test_fraction),
            )?;
        }
        Ok(build_report(ReportInput {
            command: t.command,
            dataset: Some(prepared.name.clone()),
            model: &self.model,
            keys: &self.keys,
            log: t.log,
            eval: t.eval,
            wall: t.started.elapsed(),
            keygen: t.keygen,
            test_samples: prepared.test.n_samples(),
            parties: t.parties,
            randomness: t.randomness,
        }))
    }
}

/// Writes `model` with what inference needs: the standardizer, class and feature names
/// and the split of `prepared` (identity standardizer and numbered classes without data),
/// and the split's seed and test fraction.
pub(crate) fn save_model(
    path: &Path,
    model: &FixedModel,
    scales: Scales,
    prepared: Option<&Prepared>,
    split: (u64, f64),
) -> Result<()> {
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
    .save(path)?;
    Ok(())
}

/// Runs `gelunet train`: the server and `clients` clients in one process over loopback
/// QUIC with fresh keys (`clients + 1` key pairs), stopping by
/// [`ModelOptions::stop_rule`]; evaluates the model, compares it with the plaintext
/// reference replaying the same sessions, and writes the model and the report as asked.
///
/// # Errors
/// [`RunError::InvalidOption`] and [`RunError::TestKeysUnavailable`] for bad options
/// (before any key is generated); data, key-generation, role, transport and file errors.
pub fn train(c: &TrainConfig) -> Result<TrainReport> {
    let t_all = Instant::now();
    let (rule, prepared, cfg) = c.setup()?;
    let transport = c.net.transport()?;
    let t_keys = Instant::now();
    // Protocol v2 has no server key pair for training.
    let paper = cfg.protocol == Protocol::Paper;
    let mut keys = c.keys.generate(c.clients + usize::from(paper))?;
    let keygen = t_keys.elapsed();
    let server_key = if paper { Some(keys.remove(0)) } else { None };
    let server = Server::new(cfg.clone(), server_key)?;
    // The clients' group key of protocol v2, made in memory: the server never sees it.
    let group_key = GroupKey::generate();
    let mut clients = Vec::with_capacity(c.clients);
    for (k, (share, key)) in prepared.shares.iter().zip(keys).enumerate() {
        let config = ClientConfig {
            // The masks and obfuscators from the operating system; only the batch order
            // from the public seed, for the replay of the plaintext reference (it never
            // affects the masks: docs/DESIGN.md "Protocol v2", "Randomness").
            batch_seed: Some(client_seed(c.model.seed, k)),
            allow_test_keys: c.keys.test_keys(),
            ..ClientConfig::default()
        };
        let mut client = Client::new(config, key, share.features.clone(), share.labels.clone())
            .map_err(|source| RunError::Client {
                name: k.to_string(),
                source,
            })?;
        client.set_group_key(group_key.clone());
        clients.push((client, share.n_samples() as u64));
    }
    let identity = ServerIdentity::generate(&["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(RunError::net("certificate"))?;
    let credentials: Vec<Credential> = (0..c.clients)
        .map(|k| Credential {
            name: client_name(k),
            token: random_token(),
        })
        .collect();
    let mut shell = ServerShellConfig::new(credentials.clone(), transport.clone());
    shell.coordinator.epochs = rule.epochs();
    shell.coordinator.max_sessions = rule.max_sessions();
    shell.coordinator.response_timeout = c.net.response();
    shell.coordinator.join_timeout = Some(Duration::from_secs(120));
    let pb = progress::bar(c.output.progress);
    let epochs = rule.epochs().unwrap_or(1.0);
    let rt = runtime()?;
    let (role, log, client_stats) = rt.block_on(async move {
        let (endpoint, addr) = loopback_endpoint(&identity, &transport)?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow(pb, epochs, ev_rx));
        let server_task = tokio::spawn(async move {
            run_server_with(
                server,
                endpoint,
                shell,
                Some(ev_tx),
                None,
                crate::signal::interrupted(),
            )
            .await
        });
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
                reconnect: gelunet_client::ReconnectPolicy::NEVER,
            };
            tasks.push(tokio::spawn(async move { run_client(client, &cc).await }));
        }
        let served = server_task
            .await
            .map_err(|source| RunError::Task {
                what: "server",
                source,
            })?
            .map_err(RunError::ServerShell);
        let mut stats: Vec<Option<ClientRunStats>> = Vec::new();
        for (k, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(Ok((_, s))) => stats.push(Some(s)),
                Ok(Err(e)) => {
                    let interrupted = matches!(&served, Ok((_, log)) if log.interrupted);
                    if !interrupted {
                        tracing::warn!(client = k, error = %e, "client failed");
                    }
                    stats.push(None);
                }
                Err(source) => {
                    return Err(RunError::Task {
                        what: "client",
                        source,
                    })
                }
            }
        }
        let _ = follower.await;
        let (role, log) = served?;
        Ok::<_, RunError>((role, log, stats))
    })?;
    if log.interrupted {
        let report = build_report(ReportInput {
            command: "train",
            dataset: Some(prepared.name.clone()),
            model: &c.model,
            keys: &c.keys,
            log: &log,
            eval: &Evaluation::default(),
            wall: t_all.elapsed(),
            keygen,
            test_samples: prepared.test.n_samples(),
            parties: vec![server_party(&log)],
            randomness: TRAIN_RANDOMNESS,
        });
        c.output.finish(report)?;
        return Err(RunError::Interrupted {
            resume: format!(
                "{} sessions completed; `gelunet train` keeps no checkpoint (all parties \
                 run in this process): run it again, or use serve/join for resumable runs",
                log.sessions_completed
            ),
        });
    }
    let model = role.true_model()?.clone();
    let share_of = |id: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
        let name = &log.clients.get(id)?.name;
        let k = (0..c.clients).find(|&k| &client_name(k) == name)?;
        let d = quantize(&prepared.shares[k], cfg.spec.classes(), &cfg.scales).ok()?;
        Some((d, client_seed(c.model.seed, k)))
    };
    let eval = evaluate(&model, &cfg, Some(&prepared), &log, share_of)?;
    let mut parties = vec![server_party(&log)];
    for (k, s) in client_stats.iter().enumerate() {
        let cl = log.clients.iter().find(|cl| cl.name == client_name(k));
        parties.push(PartyReport {
            name: client_name(k),
            bytes_sent: s.as_ref().map_or(0, |s| s.bytes_sent),
            bytes_received: s.as_ref().map_or(0, |s| s.bytes_received),
            sessions: s.as_ref().map_or(0, |s| s.sessions),
            abandoned: s.as_ref().map_or(0, |s| s.abandoned),
            registrations: cl.map_or(0, |cl| cl.registrations),
        });
    }
    let report = c.conclude(
        &prepared,
        cfg.scales,
        Trained {
            command: "train",
            model: &model,
            log: &log,
            eval: &eval,
            started: t_all,
            keygen,
            parties,
            randomness: TRAIN_RANDOMNESS,
        },
    )?;
    c.output.finish(report)
}

/// Runs `gelunet train --plaintext`: the session plans of the server's scheduler for the
/// same options, in client index order, until [`ModelOptions::stop_rule`] says stop,
/// replayed by the plaintext fixed-point reference. Same data split, initialization,
/// client samplers and session plans as [`train`], hence the same model (clients are
/// scheduled in index order here, in registration order over QUIC, which `train` makes
/// the same).
///
/// # Errors
/// [`RunError::InvalidOption`] and [`RunError::TestKeysUnavailable`] for bad options;
/// data, scheduler, reference and file errors.
pub fn train_plaintext(c: &TrainConfig) -> Result<TrainReport> {
    let t_all = Instant::now();
    let (rule, prepared, cfg) = c.setup()?;
    let mut scheduler = Scheduler::new(
        cfg.policy,
        &cfg.spec,
        cfg.batch_size,
        c.clients,
        cfg.schedule_seed,
    )
    .map_err(RunError::protocol("server"))?;
    let held: Vec<u64> = prepared
        .shares
        .iter()
        .map(|s| s.n_samples() as u64)
        .collect();
    let total: u64 = held.iter().sum();
    let batch = cfg.batch_size as u64;
    let mut log = TrainingLog {
        clients: held
            .iter()
            .enumerate()
            .map(|(k, &samples)| ClientLog {
                name: client_name(k),
                id: k,
                samples,
                reference: None,
                registrations: 1,
                sessions: 0,
                batches: 0,
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
        interrupted: false,
    };
    let t0 = Instant::now();
    let reason = loop {
        if let Some(r) = rule.check(log.sessions_completed, log.samples, total) {
            break r;
        }
        let plan = scheduler.next_session();
        log.sessions_completed += 1;
        log.samples += u64::from(plan.iterations) * batch;
        if let Some(cl) = log.clients.get_mut(plan.client) {
            cl.sessions += 1;
            cl.batches += u64::from(plan.iterations);
        }
        log.sessions.push(SessionLog {
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
    log.stop_reason = reason.to_string();
    log.epochs = if total > 0 {
        log.samples as f64 / total as f64
    } else {
        0.0
    };
    let share_of = |k: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
        let d = quantize(prepared.shares.get(k)?, cfg.spec.classes(), &cfg.scales).ok()?;
        Some((d, client_seed(c.model.seed, k)))
    };
    let model = replay(
        &cfg.spec,
        cfg.scales,
        cfg.model_seed,
        crate::report::eta(&cfg)?,
        cfg.batch_size,
        &log,
        share_of,
    )?
    .ok_or_else(|| RunError::DataMismatch {
        reason: "plaintext reference: no client data".into(),
    })?;
    log.training_time = t0.elapsed();
    let mut eval = evaluate(&model, &cfg, Some(&prepared), &log, share_of)?;
    eval.diff = None;
    let mut report = c.conclude(
        &prepared,
        cfg.scales,
        Trained {
            command: "train --plaintext",
            model: &model,
            log: &log,
            eval: &eval,
            started: t_all,
            keygen: Duration::ZERO,
            parties: Vec::new(),
            randomness: PLAINTEXT_RANDOMNESS,
        },
    )?;
    report.key_bits = 0;
    report.backend = "plaintext fixed-point reference".into();
    c.output.finish(report)
}
