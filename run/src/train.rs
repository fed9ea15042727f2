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
use gelunet_server::V2Checkpoint;
use gelunet_server::{Server, ServerConfig, StopRule};
use gelunet_shell::client::{run_client, ClientRunStats, ClientShellConfig};
use gelunet_shell::server::{
    run_server_with, ClientLog, Credential, ServerEvent, ServerShellConfig, SessionLog, TrainingLog,
};
use tokio::sync::mpsc;

use crate::checkpoint::{checkpoint_path, PartyFingerprints, RunContext};
use crate::curves::{plot_run, Buckets, PlotInput};
use crate::data::{client_name, client_seed, DataOptions, Prepared};
use crate::defaults::DEFAULT_TRAIN_DATASET;
use crate::endpoint::{loopback_endpoint, random_token, runtime, NetOptions};
use crate::keys::KeyOptions;
use crate::model::ModelOptions;
use crate::model_file::{DataCard, ModelFile};
use crate::report::{
    build_report, check_quantizable, evaluate, quantize, replay, server_party, write_json,
    Evaluation, PartyReport, ReportInput, TrainReport, PLAINTEXT_RANDOMNESS, TRAIN_RANDOMNESS,
};
use crate::serve::{interrupted, load_resumable, persist_checkpoints, shell_error};
use crate::{progress, Result, RunError};
use gelunet_paillier::PrivateKey;
use gelunet_server::Checkpoint;

/// What a training run writes (`train`, `serve`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Write the trained model here ([`ModelFile`], atomically).
    pub model_out: Option<PathBuf>,
    /// Write the JSON report here ([`TrainReport`], atomically).
    pub report: Option<PathBuf>,
    /// Show the progress on stderr: a bar on a terminal, a log line every few seconds
    /// elsewhere (`false`: `--quiet`).
    pub progress: bool,
    /// Write the loss and accuracy per epoch of the encrypted run and of the plaintext
    /// reference here as PNG (`loss.png`, `accuracy.png`; [`crate::curves`]).
    pub plot: Option<PathBuf>,
}

impl OutputOptions {
    /// Checks that the model and report paths can be written (before any work): their
    /// directories exist and accept a new file, and neither path is a directory; the
    /// `--plot` directory is created if missing and must accept a new file.
    ///
    /// # Errors
    /// [`RunError::Io`] naming the option (`--model-out`, `--report`, `--plot`) and the
    /// path.
    pub fn check_writable(&self) -> Result<()> {
        for (what, path) in [("--model-out", &self.model_out), ("--report", &self.report)] {
            if let Some(path) = path {
                crate::model_file::check_writable(path).map_err(RunError::io(what, path))?;
            }
        }
        if let Some(dir) = &self.plot {
            std::fs::create_dir_all(dir)
                .and_then(|()| crate::model_file::check_writable(&dir.join("loss.png")))
                .map_err(RunError::io("--plot", dir))?;
        }
        Ok(())
    }

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
    /// The dataset ([`DEFAULT_TRAIN_DATASET`] when none is given).
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
    /// `--state-dir` / `--resume`: where the run keeps its checkpoint and its clients'
    /// keys, so that it can be resumed ([`crate::train_state`]; `None`: no checkpoint,
    /// no key on disk, an interrupted run starts again from scratch).
    pub state_dir: Option<PathBuf>,
    /// Continue the run whose state is in [`TrainConfig::state_dir`] (`--resume`) instead
    /// of starting a new one there.
    pub resume: bool,
}

impl TrainConfig {
    /// Checks everything that can be checked before any key is generated (docs/DESIGN.md
    /// "Fail fast"): the options, the stop rule and the key size; that the output paths
    /// are writable; the data (every file there, loaded and split); that both splits
    /// quantize within the fixed-point range; the session bound with this many clients.
    /// Prepares the data, fills the defaults ([`ModelOptions::resolve`]) and builds the
    /// server role's configuration.
    fn setup(&self) -> Result<Setup> {
        self.model.validate()?;
        self.keys.validate()?;
        self.net.transport()?;
        if self.clients == 0 {
            return Err(RunError::option("--clients", "must be at least 1"));
        }
        self.output.check_writable()?;
        let mut data = self.data.clone();
        let mut defaults_used = Vec::new();
        if data.dataset.is_none() {
            data.dataset = Some(DEFAULT_TRAIN_DATASET.to_string());
            defaults_used.push(format!("dataset {DEFAULT_TRAIN_DATASET}"));
        }
        let prepared =
            data.prepare(self.clients, self.client_shares.as_deref(), self.model.seed)?;
        let shape = (prepared.train.n_features(), prepared.train.n_classes());
        let (model, notes) = self
            .model
            .resolve(data.dataset.as_deref(), shape, &self.keys)?;
        defaults_used.extend(notes);
        let rule = model.validate()?;
        let cfg = model.server_config(model.spec(shape.0, shape.1)?, &self.keys);
        cfg.scales
            .validate()
            .map_err(RunError::protocol("scales"))?;
        check_quantizable(&prepared.train, &cfg.scales)?;
        check_quantizable(&prepared.test, &cfg.scales)?;
        Scheduler::new(
            cfg.policy,
            &cfg.spec,
            cfg.batch_size,
            self.clients,
            cfg.schedule_seed,
        )
        .map_err(RunError::protocol("session schedule"))?;
        Ok(Setup {
            rule,
            prepared,
            cfg,
            model,
            defaults_used,
        })
    }
}

/// What [`TrainConfig::setup`] gives.
struct Setup {
    /// The stop rule of the resolved options.
    rule: StopRule,
    /// The data.
    prepared: Prepared,
    /// The server role's configuration.
    cfg: ServerConfig,
    /// The model options with every default filled.
    model: ModelOptions,
    /// One note per default used.
    defaults_used: Vec<String>,
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
    fn conclude(&self, setup: &Setup, t: Trained<'_>) -> Result<TrainReport> {
        let prepared = &setup.prepared;
        let scales = setup.cfg.scales;
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
            prepared: Some(prepared),
            defaults_used: setup.defaults_used.clone(),
            model: &setup.model,
            keys: &self.keys,
            log: t.log,
            eval: t.eval,
            wall: t.started.elapsed(),
            keygen: t.keygen,
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
        data: DataCard {
            mean,
            std,
            class_names,
            feature_names,
            dataset,
            split_seed: split.0,
            test_fraction: split.1,
        },
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
    let setup = c.setup()?;
    let (rule, prepared, cfg) = (&setup.rule, &setup.prepared, &setup.cfg);
    let transport = c.net.transport()?;
    // Protocol v2 has no server key pair for training: its role exists before any key,
    // which checks its whole configuration and the key size it needs first.
    let paper = cfg.protocol == Protocol::Paper;
    let v2_server = if paper {
        None
    } else {
        Some(Server::new(cfg.clone(), None)?)
    };
    let needed = v2_server.as_ref().map_or_else(
        || cfg.mask.min_key_bits(&cfg.scales),
        Server::min_client_key_bits,
    );
    if c.keys.key_bits < needed {
        return Err(RunError::option(
            "--key-bits",
            format!(
                "{}: these scales and this mask need keys of at least {needed} bits",
                c.keys.key_bits
            ),
        ));
    }
    // `--resume`: everything is checked before any key is generated.
    let context = RunContext::new("train", Some(prepared));
    let resumed = match (&c.state_dir, c.resume) {
        (Some(dir), true) => Some(load_state(c, dir, cfg, prepared, &context)?),
        (None, true) => {
            return Err(RunError::option(
                "--resume",
                "needs the state directory of the run to continue",
            ))
        }
        (Some(dir), false) => {
            crate::train_state::prepare_fresh(dir)?;
            None
        }
        (None, false) => None,
    };
    let t_keys = Instant::now();
    let (mut keys, group_key, resume_from) = match resumed {
        Some(r) => {
            let mut keys = r.keys;
            if paper {
                // The paper's server key is not kept: a fresh one (docs/DESIGN.md
                // "Checkpoint and resume").
                keys.insert(0, c.keys.generate_one()?);
            }
            (keys, r.group_key, Some(r.checkpoint))
        }
        None => {
            let keys = c.keys.generate(c.clients + usize::from(paper))?;
            // The clients' group key of protocol v2, made in memory: the server never
            // sees it.
            let group_key = GroupKey::generate();
            if let Some(dir) = &c.state_dir {
                crate::train_state::save_keys(dir, &group_key, &keys[usize::from(paper)..])?;
            }
            (keys, group_key, None)
        }
    };
    let keygen = t_keys.elapsed();
    let server = match v2_server {
        Some(s) => s,
        None => Server::new(cfg.clone(), Some(keys.remove(0)))?,
    };
    let parties = PartyFingerprints::new(&group_key, keys.iter().map(PrivateKey::public_key));
    let plot_group_key = c.output.plot.as_ref().map(|_| group_key.clone());
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
    // `--state-dir`: a checkpoint after every completed session; `--plot`: the masked
    // states of the kept sessions, unmasked after training.
    let state_path = c.state_dir.as_deref().map(checkpoint_path);
    shell.coordinator.checkpoint_events =
        state_path.is_some() || (plot_group_key.is_some() && !paper);
    let held: u64 = prepared.shares.iter().map(|s| s.n_samples() as u64).sum();
    let pb = progress::Progress::new(c.output.progress, rule.epochs().unwrap_or(1.0));
    let rt = runtime()?;
    let saver_path = state_path.clone();
    let (role, log, client_stats, checkpoints) = rt.block_on(async move {
        let (endpoint, addr) = loopback_endpoint(&identity, &transport)?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        // With a state directory the checkpoints are written first, then passed on.
        let (saver, mut ev_rx) = match saver_path.clone() {
            Some(path) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let saver = tokio::spawn(persist_checkpoints(
                    ev_rx,
                    tx,
                    path,
                    (context, Some(parties)),
                    true,
                ));
                (Some(saver), rx)
            }
            None => (None, ev_rx),
        };
        let (pb_tx, pb_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow(pb, pb_rx));
        let keeper = tokio::spawn(async move {
            let (mut buckets, mut samples, mut kept) = (Buckets::new(held), 0, Vec::new());
            while let Some(e) = ev_rx.recv().await {
                match e {
                    ServerEvent::Checkpoint(cp) => {
                        if let Some(v2) = cp.v2().filter(|_| buckets.keep(samples)) {
                            kept.push((samples, v2.clone()));
                        }
                    }
                    other => {
                        if let ServerEvent::SessionDone(s) = &other {
                            samples = s.samples;
                        }
                        let _ = pb_tx.send(other);
                    }
                }
            }
            kept
        });
        let server_task = tokio::spawn(async move {
            run_server_with(
                server,
                endpoint,
                shell,
                Some(ev_tx),
                resume_from.as_ref(),
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
                progress: None,
            };
            tasks.push(tokio::spawn(async move { run_client(client, &cc).await }));
        }
        let served = server_task
            .await
            .map_err(|source| RunError::Task {
                what: "server",
                source,
            })?
            .map_err(|e| match &saver_path {
                Some(path) => shell_error(path, e),
                None => RunError::ServerShell(e),
            });
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
        let failed = match saver {
            Some(s) => s.await.ok().flatten(),
            None => None,
        };
        let kept = keeper.await.unwrap_or_default();
        let _ = follower.await;
        let (role, log) = served?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok::<_, RunError>((role, log, stats, kept))
    })?;
    if log.interrupted {
        let report = build_report(ReportInput {
            command: "train",
            prepared: Some(prepared),
            defaults_used: setup.defaults_used.clone(),
            model: &setup.model,
            keys: &c.keys,
            log: &log,
            eval: &Evaluation::default(),
            wall: t_all.elapsed(),
            keygen,
            parties: vec![server_party(&log)],
            randomness: TRAIN_RANDOMNESS,
        });
        c.output.finish(report)?;
        if let Some(path) = &state_path {
            return Err(interrupted(path, &log, "gelunet train --resume"));
        }
        return Err(RunError::Interrupted {
            resume: format!(
                "{} sessions completed; without --state-dir `gelunet train` keeps no \
                 checkpoint: run it again (with --state-dir DIR to be able to resume)",
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
    let eval = evaluate(&model, cfg, Some(prepared), &log, share_of)?;
    let plots = match (&c.output.plot, &plot_group_key) {
        (Some(dir), Some(gk)) => {
            let mut encrypted = vec![(0.0, initial_model(cfg)?)];
            for (samples, cp) in &checkpoints {
                encrypted.push((epochs_of(*samples, held), unmask(cfg, cp, gk)?));
            }
            encrypted.push((log.epochs, model.clone()));
            let input = PlotInput {
                cfg,
                log: &log,
                prepared,
                encrypted: &encrypted,
                caption: plot_caption(c, &setup, &eval),
            };
            plot_run(dir, &input, share_of)?
        }
        _ => Vec::new(),
    };
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
        &setup,
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
    c.output.finish(TrainReport { plots, ..report })
}

/// What `train --resume` continues from: the server's checkpoint and the clients' keys.
struct Resumed {
    /// The server's state.
    checkpoint: Checkpoint,
    /// The clients' group key.
    group_key: GroupKey,
    /// The clients' key pairs, by index.
    keys: Vec<PrivateKey>,
}

/// Loads the state of `train --resume` from `dir` and checks that it belongs to this
/// run: the checkpoint's command, data and configuration ([`load_resumable`]), the number
/// of clients, their key files against the checkpoint's fingerprints, the key size and
/// every client's share of the data. Nothing is written.
///
/// # Errors
/// [`RunError::Checkpoint`] naming the file and what is wrong (missing, damaged, another
/// run's, foreign keys, other options).
fn load_state(
    c: &TrainConfig,
    dir: &Path,
    cfg: &ServerConfig,
    prepared: &Prepared,
    context: &RunContext,
) -> Result<Resumed> {
    let path = checkpoint_path(dir);
    if !dir.is_dir() {
        return Err(RunError::Checkpoint {
            path: dir.to_path_buf(),
            reason: "the state directory does not exist".into(),
        });
    }
    let expected = gelunet_server::RunFingerprint::new(cfg, crate::report::eta(cfg)?);
    let file = load_resumable(&path, context, &expected)?;
    let refused = |p: &Path, reason: String| RunError::Checkpoint {
        path: p.to_path_buf(),
        reason,
    };
    let Some(recorded) = &file.parties else {
        return Err(refused(&path, "it records no client keys".into()));
    };
    if recorded.clients.len() != c.clients {
        return Err(refused(
            &path,
            format!(
                "it was written by a run of {} clients, not --clients {}",
                recorded.clients.len(),
                c.clients
            ),
        ));
    }
    let (group_key, keys) = crate::train_state::load_keys(dir, c.clients, c.keys.test_keys())?;
    let found = PartyFingerprints::new(&group_key, keys.iter().map(PrivateKey::public_key));
    if let Some(what) = recorded.difference(&found) {
        return Err(refused(dir, what));
    }
    for (k, key) in keys.iter().enumerate() {
        if key.public_key().bits() != c.keys.key_bits {
            return Err(refused(
                &crate::train_state::client_key_path(dir, k),
                format!(
                    "a {}-bit key, not --key-bits {}",
                    key.public_key().bits(),
                    c.keys.key_bits
                ),
            ));
        }
    }
    let shares: Vec<u64> = prepared
        .shares
        .iter()
        .map(|s| s.n_samples() as u64)
        .collect();
    for record in &file.checkpoint.clients {
        let k = (0..c.clients).find(|&k| client_name(k) == record.log.name);
        let held = k.and_then(|k| shares.get(k).copied());
        if held != Some(record.log.samples) {
            return Err(refused(
                &path,
                format!(
                    "its client `{}` held {} samples, this run's {} (other --client-shares?)",
                    record.log.name,
                    record.log.samples,
                    held.map_or_else(|| "none".into(), |h| h.to_string())
                ),
            ));
        }
    }
    Ok(Resumed {
        checkpoint: file.checkpoint,
        group_key,
        keys,
    })
}

/// The server's public initial model (version 0 of every run).
pub(crate) fn initial_model(cfg: &ServerConfig) -> Result<FixedModel> {
    FixedModel::init(&cfg.spec, &cfg.scales, cfg.model_seed).map_err(RunError::protocol("model"))
}

/// Epochs of `samples` processed samples out of `held`.
pub(crate) fn epochs_of(samples: u64, held: u64) -> f64 {
    if held == 0 {
        0.0
    } else {
        samples as f64 / held as f64
    }
}

/// The true model of a masked v2 state `W~`, as its release would compute it: a server
/// restored from the state, given the clients' seed of its version (docs/DESIGN.md
/// "Protocol v2", "Release"). Only `train`, which holds the group key, can.
fn unmask(cfg: &ServerConfig, cp: &V2Checkpoint, key: &GroupKey) -> Result<FixedModel> {
    let mut s = Server::new(cfg.clone(), None)?;
    s.restore_v2(cp)?;
    let v = cp.version.version;
    let seed = key.version_seed(cp.params.model_id, v, cp.version.nonce);
    Ok(s.release(v, &seed)?.clone())
}

/// The caption of `--plot`'s figures.
fn plot_caption(c: &TrainConfig, setup: &Setup, eval: &Evaluation) -> String {
    format!(
        "{}, {} clients, {}-bit keys, B = {}, η = {}, seed {}; max |w − w_ref| = {}",
        setup.prepared.name,
        c.clients,
        c.keys.key_bits,
        setup.model.batch(),
        setup.model.learning_rate(),
        setup.model.seed,
        eval.diff.map_or("n/a".into(), |d| format!("{}", d.0))
    )
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
    let setup = c.setup()?;
    let (rule, prepared, cfg) = (&setup.rule, &setup.prepared, &setup.cfg);
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
                connected_at_end: true,
                ..ClientLog::registered(client_name(k), k, samples, None)
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
    let model = replay(cfg, &log, share_of)?.ok_or_else(|| RunError::DataMismatch {
        reason: "plaintext reference: no client data".into(),
    })?;
    log.training_time = t0.elapsed();
    // The model is the reference: no second replay, and its test accuracy is the
    // reference's.
    let mut eval = crate::report::evaluate_against(&model, cfg, prepared, None)?;
    eval.plaintext_test_accuracy = eval.test_accuracy;
    let plots = match &c.output.plot {
        Some(dir) => {
            let input = PlotInput {
                cfg,
                log: &log,
                prepared,
                encrypted: &[],
                caption: plot_caption(c, &setup, &eval),
            };
            plot_run(dir, &input, share_of)?
        }
        None => Vec::new(),
    };
    let mut report = c.conclude(
        &setup,
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
    report.plots = plots;
    c.output.finish(report)
}
