//! `gelunet serve`: the server of a training run whose clients are separate processes
//! (`gelunet join`), with its certificate in a state directory.

use std::time::Instant;

use gelunet_protocol::randomness::Randomness;
use gelunet_server::{Server, ServerEvent, TrainingLog};
use gelunet_shell::server::{run_server_with, ServerShellConfig};
use tokio::sync::mpsc;

use crate::checkpoint::{
    check_context, checkpoint_path, load_checkpoint, save_checkpoint, CheckpointFile,
    PartyFingerprints, RunContext,
};
use crate::curves::{plot_run, PlotInput};
use crate::data::DataOptions;
use crate::endpoint::{runtime, ListenOptions, Listening, NetOptions};
use crate::keys::KeyOptions;
use crate::model::ModelOptions;
use crate::report::{
    build_report, evaluate, quantize, server_party, PartyReport, ReportInput, TrainReport,
};
use crate::train::{initial_model, save_model, OutputOptions};
use crate::{progress, Result, RunError};

/// The configuration of `gelunet serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address, state directory, certificate names and the accepted clients.
    pub listen: ListenOptions,
    /// Clients to wait for before training (`None`: all configured).
    pub wait_for: Option<usize>,
    /// Number of shares of the public seeded split (`None`: the configured clients); with
    /// a dataset, lets the server rebuild the plaintext reference of reproducible clients.
    pub clients: Option<usize>,
    /// Share fractions of the public split (`None`: equal).
    pub client_shares: Option<Vec<f64>>,
    /// Input width, when no dataset is given.
    pub inputs: Option<usize>,
    /// Number of classes, when no dataset is given.
    pub classes: Option<usize>,
    /// The dataset (optional: the model's shape and the evaluation).
    pub data: DataOptions,
    /// Model, optimizer, mask, scheduler and stop rule.
    pub model: ModelOptions,
    /// The server's Paillier key.
    pub keys: KeyOptions,
    /// Transport options.
    pub net: NetOptions,
    /// Outputs.
    pub output: OutputOptions,
    /// Admit clients in the insecure reproducible mode (`--insecure-reproducible`: their
    /// masks derive from a public seed, so the server could know them), which lets the
    /// server check the run against the plaintext reference. Off by default: such
    /// clients are refused at registration.
    pub insecure_reproducible: bool,
    /// Continue the run whose checkpoint is in the state directory (`--resume`,
    /// [`crate::checkpoint`]) instead of starting a new one.
    pub resume: bool,
}

/// Runs `gelunet serve`: waits for the clients, trains until
/// [`ModelOptions::stop_rule`] says stop, evaluates (with a dataset; the plaintext
/// reference when every client that completed a session joined `--insecure-reproducible`,
/// which the server must allow, [`ServeConfig::insecure_reproducible`]), and writes the
/// model and the report as asked. `on_listen` is called once the endpoint is bound (its
/// address is also written to `STATE_DIR/listen.addr`). The server's whole state is
/// written atomically to `STATE_DIR/checkpoint.bin` ([`crate::checkpoint`]; under
/// protocol v2 the masked state only) after every completed session;
/// [`ServeConfig::resume`] continues from it. Ctrl-C or SIGTERM stops at once (the
/// session in progress is rolled back, the clients are disconnected and keep trying to
/// reconnect), writes the report marked partial and returns [`RunError::Interrupted`].
///
/// # Errors
/// [`RunError::InvalidOption`] and [`RunError::TestKeysUnavailable`] for bad options
/// (before any key is generated); [`RunError::Checkpoint`] for a checkpoint to resume
/// that is missing, damaged or of another run (before any key is generated; it is left
/// as it is); data, identity, key-generation, role, transport and file errors (a
/// checkpoint that could not be written is reported once training is over);
/// [`RunError::Interrupted`].
pub fn serve(c: &ServeConfig, on_listen: &(dyn Fn(&Listening) + Sync)) -> Result<TrainReport> {
    let t_all = Instant::now();
    c.model.validate()?;
    c.keys.validate()?;
    let transport = c.net.transport()?;
    c.output.check_writable()?;
    let credentials = c.listen.load_credentials()?;
    let wait_for = c.wait_for.unwrap_or(credentials.len());
    if wait_for == 0 || wait_for > credentials.len() {
        return Err(RunError::option(
            "--wait-for",
            format!(
                "{wait_for}: must be between 1 and the {} configured clients",
                credentials.len()
            ),
        ));
    }
    if c.output.plot.is_some() && c.data.dataset.is_none() {
        return Err(RunError::option(
            "--plot",
            "needs --dataset (loss and accuracy are measured on it)",
        ));
    }
    let split_clients = c.clients.unwrap_or(credentials.len());
    let prepared = match &c.data.dataset {
        Some(_) => Some(
            c.data
                .prepare(split_clients, c.client_shares.as_deref(), c.model.seed)?,
        ),
        None => None,
    };
    let (inputs, classes) = match (&prepared, c.inputs, c.classes) {
        (Some(p), _, _) => (p.train.n_features(), p.train.n_classes()),
        (None, Some(i), Some(k)) => (i, k),
        _ => {
            return Err(RunError::option(
                "--dataset",
                "the server needs the model's shape: pass --dataset, or --inputs and --classes",
            ))
        }
    };
    let (model_options, defaults_used) =
        c.model
            .resolve(c.data.dataset.as_deref(), (inputs, classes), &c.keys)?;
    let rule = model_options.validate()?;
    let spec = model_options.spec(inputs, classes)?;
    let cfg = model_options.server_config(spec, &c.keys);
    let context = RunContext::new("serve", prepared.as_ref());
    let state_path = checkpoint_path(&c.listen.state_dir);
    let resume = if c.resume {
        let expected = gelunet_server::RunFingerprint::new(&cfg, crate::report::eta(&cfg)?);
        Some(load_resumable(&state_path, &context, &expected)?)
    } else {
        None
    };
    let identity = c.listen.load_or_create_identity()?;
    let t_keys = Instant::now();
    // Protocol v2 has no server key pair for training.
    let key = match cfg.protocol {
        gelunet_protocol::v2::Protocol::Paper => Some(c.keys.generate_one()?),
        gelunet_protocol::v2::Protocol::V2 => None,
    };
    let keygen = t_keys.elapsed();
    let server = Server::new(cfg.clone(), key)?;
    let mut shell = ServerShellConfig::new(credentials, transport.clone());
    shell.coordinator.wait_for = wait_for;
    shell.coordinator.epochs = rule.epochs();
    shell.coordinator.max_sessions = rule.max_sessions();
    shell.coordinator.response_timeout = c.net.response();
    shell.coordinator.accept_reference_hints = c.insecure_reproducible;
    shell.coordinator.checkpoint_events = true;
    let pb = progress::Progress::new(c.output.progress, rule.epochs().unwrap_or(1.0));
    let rt = runtime()?;
    let (role, log) = rt.block_on(async {
        let (endpoint, listening) = c.listen.bind(&identity, &transport)?;
        on_listen(&listening);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (pb_tx, pb_rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow(pb, pb_rx));
        let saver = tokio::spawn(persist_checkpoints(
            ev_rx,
            pb_tx,
            state_path.clone(),
            (context, None),
            false,
        ));
        let r = run_server_with(
            server,
            endpoint,
            shell,
            Some(ev_tx),
            resume.as_ref().map(|f| &f.checkpoint),
            crate::signal::interrupted(),
        )
        .await;
        let failed = saver.await.ok().flatten();
        let _ = follower.await;
        let r = r.map_err(|e| shell_error(&state_path, e))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(r),
        }
    })?;
    let (eval, parties, plots) = if log.interrupted {
        // A partial report: no model (under v2 none was released), no evaluation.
        (
            crate::report::Evaluation::default(),
            vec![server_party(&log)],
            Vec::new(),
        )
    } else {
        let model = role.true_model()?.clone();
        let share_of = |id: usize| -> Option<(gelunet_protocol::Dataset, u64)> {
            let hint = log.clients.get(id)?.reference?;
            let p = prepared.as_ref()?;
            let share = p.shares.get(hint.share as usize)?;
            let d = quantize(share, cfg.spec.classes(), &cfg.scales).ok()?;
            Some((d, hint.client_seed))
        };
        let eval = evaluate(&model, &cfg, prepared.as_ref(), &log, share_of)?;
        // Without the group key the encrypted run is known at its start and its end only.
        let plots = match (&c.output.plot, &prepared) {
            (Some(dir), Some(p)) => {
                let encrypted = [(0.0, initial_model(&cfg)?), (log.epochs, model.clone())];
                let input = PlotInput {
                    cfg: &cfg,
                    log: &log,
                    prepared: p,
                    encrypted: &encrypted,
                    caption: format!(
                        "{}, {} clients, B = {}, η = {}, seed {} (serve: the encrypted run at its start and end)",
                        p.name,
                        log.clients.len(),
                        model_options.batch(),
                        model_options.learning_rate(),
                        model_options.seed
                    ),
                };
                plot_run(dir, &input, share_of)?
            }
            _ => Vec::new(),
        };
        if let Some(path) = &c.output.model_out {
            save_model(
                path,
                &model,
                cfg.scales,
                prepared.as_ref(),
                (c.model.seed, c.data.test_fraction),
            )?;
        }
        let mut parties = vec![server_party(&log)];
        for cl in &log.clients {
            // From the server's side: what it received from the client is what the client sent.
            parties.push(PartyReport {
                name: cl.name.clone(),
                bytes_sent: cl.bytes_received,
                bytes_received: cl.bytes_sent,
                sessions: cl.sessions,
                abandoned: cl.abandoned,
                registrations: cl.registrations,
            });
        }
        (eval, parties, plots)
    };
    let report = build_report(ReportInput {
        command: "serve",
        prepared: prepared.as_ref(),
        defaults_used,
        model: &model_options,
        keys: &c.keys,
        log: &log,
        eval: &eval,
        wall: t_all.elapsed(),
        keygen,
        parties,
        randomness: randomness_label(&log),
    });
    let report = TrainReport { plots, ..report };
    if log.interrupted {
        c.output.finish(report)?;
        return Err(interrupted(&state_path, &log, "gelunet serve --resume"));
    }
    c.output.finish(report)
}

/// What the report says about the clients' masks: known to the server when a client sent
/// a reproduction hint (it joined `--insecure-reproducible`), secret otherwise.
fn randomness_label(log: &TrainingLog) -> &'static str {
    let seed = log
        .clients
        .iter()
        .find_map(|c| c.reference)
        .map(|h| h.client_seed);
    match seed {
        Some(seed) => Randomness::InsecureReproducible { seed }.report_label(),
        None => Randomness::Os.report_label(),
    }
}

/// Loads the checkpoint to resume and checks it was written by `context`'s command on
/// the same data with the same server configuration (`fingerprint`; the coordinator
/// checks it again with the clients when it resumes).
pub(crate) fn load_resumable(
    path: &std::path::Path,
    context: &RunContext,
    fingerprint: &gelunet_server::RunFingerprint,
) -> Result<CheckpointFile> {
    if !path.exists() {
        return Err(RunError::Checkpoint {
            path: path.to_path_buf(),
            reason: "there is no checkpoint to resume (no session was completed)".into(),
        });
    }
    let file = load_checkpoint(path)?;
    check_context(path, &file.context, context)?;
    if let Some(what) = file.checkpoint.fingerprint.difference(fingerprint) {
        return Err(RunError::Checkpoint {
            path: path.to_path_buf(),
            reason: gelunet_server::CheckpointError::Mismatch { what }.to_string(),
        });
    }
    Ok(file)
}

/// The shell's error, with a checkpoint the coordinator refused as [`RunError::Checkpoint`].
pub(crate) fn shell_error(
    path: &std::path::Path,
    e: gelunet_shell::server::ServerShellError,
) -> RunError {
    match e {
        gelunet_shell::server::ServerShellError::Coordinator(
            gelunet_server::CoordinatorError::Checkpoint(c),
        ) => RunError::Checkpoint {
            path: path.to_path_buf(),
            reason: c.to_string(),
        },
        other => RunError::ServerShell(other),
    }
}

/// The error of an interrupted run: where its checkpoint is and how to continue.
pub(crate) fn interrupted(path: &std::path::Path, log: &TrainingLog, command: &str) -> RunError {
    let resume = if path.exists() {
        format!(
            "{} sessions completed; checkpoint {}; continue with `{command} {}` and the same \
             options",
            log.sessions_completed,
            path.display(),
            path.parent()
                .map_or_else(String::new, |d| d.display().to_string())
        )
    } else {
        "no session was completed; nothing to resume".into()
    };
    RunError::Interrupted { resume }
}

/// Writes a checkpoint file (of `context` and the parties' fingerprints, if any) for
/// every [`ServerEvent::Checkpoint`] and passes the other events on (the checkpoints too
/// with `forward_checkpoints`, once written); returns the first write error, if any.
pub(crate) async fn persist_checkpoints(
    mut events: mpsc::UnboundedReceiver<ServerEvent>,
    others: mpsc::UnboundedSender<ServerEvent>,
    path: std::path::PathBuf,
    (context, parties): (RunContext, Option<PartyFingerprints>),
    forward_checkpoints: bool,
) -> Option<RunError> {
    let mut failed = None;
    while let Some(e) = events.recv().await {
        match e {
            ServerEvent::Checkpoint(cp) => {
                let path = path.clone();
                let forward = forward_checkpoints.then(|| cp.clone());
                let file = CheckpointFile {
                    context: context.clone(),
                    checkpoint: *cp,
                    parties: parties.clone(),
                };
                let r = tokio::task::spawn_blocking(move || save_checkpoint(&path, &file))
                    .await
                    .map_err(|source| RunError::Task {
                        what: "checkpoint",
                        source,
                    })
                    .and_then(|r| r);
                if let Err(e) = r {
                    tracing::error!(error = %e, "could not write the checkpoint");
                    failed.get_or_insert(e);
                }
                if let Some(cp) = forward {
                    let _ = others.send(ServerEvent::Checkpoint(cp));
                }
            }
            other => {
                let _ = others.send(other);
            }
        }
    }
    failed
}
