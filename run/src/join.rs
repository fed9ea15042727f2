//! `gelunet join`: one client of a `gelunet serve` run, in its own process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig};
use gelunet_net::Zeroizing;
use gelunet_protocol::envelope::ReferenceHint;
use gelunet_protocol::randomness::Randomness;
use gelunet_shell::client::{run_client_with, ClientShellConfig};

use crate::data::{client_seed, DataOptions};
use crate::endpoint::{read_token, resolve_addr, runtime, NetOptions};
use crate::keys::KeyOptions;
use crate::report::{write_json, JoinReport};
use crate::{progress, Result, RunError};

/// The configuration of `gelunet join`.
#[derive(Clone)]
pub struct JoinConfig {
    /// The server's address (`HOST:PORT`).
    pub server: String,
    /// The server's certificate (its `STATE_DIR/cert.der`), pinned.
    pub server_cert: PathBuf,
    /// Name the certificate is valid for.
    pub server_name: String,
    /// This client's name, as configured on the server.
    pub name: String,
    /// This client's token, given directly …
    pub token: Option<Zeroizing<String>>,
    /// … or as the first line of this file.
    pub token_file: Option<PathBuf>,
    /// The dataset (required).
    pub data: DataOptions,
    /// Take share `i` of the public seeded split of the training set (with `clients`);
    /// `None`: the whole training split is this client's data.
    pub client_index: Option<usize>,
    /// Number of shares of the public split.
    pub clients: usize,
    /// Share fractions of the public split (`None`: equal).
    pub client_shares: Option<Vec<f64>>,
    /// Seed of the public split (the server's `--seed`).
    pub seed: u64,
    /// The insecure reproducible mode (`--insecure-reproducible`): derive every random
    /// stream of this client (masks, obfuscators, batch order) from `seed` and
    /// `client_index` ([`Randomness::InsecureReproducible`]) and tell the server, which can
    /// then check exactness against the plaintext reference. **The masks are then known
    /// to the server** (and to anyone who knows the public seed): experiments only; the
    /// server must opt in as well (`serve --insecure-reproducible`). Otherwise every
    /// secret and the batch order come from the operating system ([`Randomness::Os`]).
    pub insecure_reproducible: bool,
    /// This client's Paillier key.
    pub keys: KeyOptions,
    /// Keep the key pair here ([`KeyOptions::load_or_create`]) so that a restarted client
    /// can rejoin.
    pub key_file: Option<PathBuf>,
    /// The clients' group key file of protocol v2 (`--group-key`, made by
    /// `gelunet group-key new`); read before connecting.
    pub group_key_file: Option<PathBuf>,
    /// The protocol this client takes part in: v2 refuses a server of the paper's
    /// protocol; paper accepts either.
    pub protocol: gelunet_protocol::v2::Protocol,
    /// Reconnection attempts allowed per outage (a lost server; the count starts again
    /// at every successful registration).
    pub reconnect: u32,
    /// How long to keep trying to reach the server: at the start, and in every outage
    /// (pauses of 250 ms doubling up to 5 s in between, [`gelunet_client::ReconnectPolicy`]).
    pub connect_timeout: Duration,
    /// Transport options.
    pub net: NetOptions,
    /// Write the JSON report ([`JoinReport`]) here.
    pub report: Option<PathBuf>,
    /// Show this client's progress on stderr: a bar on a terminal, a log line every few
    /// seconds elsewhere (`false`: `--quiet`).
    pub progress: bool,
}

gelunet_protocol::redacted_debug!(
    JoinConfig {
        server,
        server_name,
        name,
        token_file,
        client_index,
        clients,
        seed,
        insecure_reproducible,
        keys,
    } secret { token } ..
);

/// Runs `gelunet join`: registers with the server, takes part in sessions until the
/// server's summary, reconnecting as allowed, and writes the report if asked for.
///
/// # Errors
/// [`RunError::InvalidOption`] and [`RunError::TestKeysUnavailable`] for bad options;
/// data, key, certificate and token errors; [`RunError::ClientShell`] for refusals
/// (credentials, certificate) and transport errors.
pub fn join(c: &JoinConfig) -> Result<JoinReport> {
    let t_all = Instant::now();
    c.keys.validate()?;
    // A missing or malformed group key is an error before anything connects.
    let group_key = match &c.group_key_file {
        Some(p) => Some(
            gelunet_protocol::group_key::GroupKey::load(p)
                .map_err(|e| RunError::option("--group-key", e.to_string()))?,
        ),
        None => None,
    };
    let transport = c.net.transport()?;
    let server = resolve_addr(&c.server)?;
    let pinned =
        gelunet_net::load_certificate(&c.server_cert).map_err(RunError::net("--server-cert"))?;
    let (k, split) = match c.client_index {
        Some(i) if i >= c.clients => {
            return Err(RunError::option(
                "--client-index",
                format!("{i} is out of range for --clients {}", c.clients),
            ))
        }
        Some(i) => (i, c.clients),
        None => (0, 1),
    };
    if c.insecure_reproducible && c.client_index.is_none() {
        return Err(RunError::option(
            "--insecure-reproducible",
            "needs --client-index (a share of the public split)",
        ));
    }
    let token = read_token(c.token.as_ref(), c.token_file.as_deref())?;
    let prepared = c.data.prepare(split, c.client_shares.as_deref(), c.seed)?;
    let share = &prepared.shares[k];
    let key = match &c.key_file {
        Some(p) => c.keys.load_or_create(p)?,
        None => c.keys.generate_one()?,
    };
    let randomness = if c.insecure_reproducible {
        Randomness::InsecureReproducible {
            seed: client_seed(c.seed, k),
        }
    } else {
        Randomness::Os
    };
    let config = ClientConfig {
        randomness,
        allow_test_keys: c.keys.test_keys(),
        policy: gelunet_client::ClientPolicy {
            accept_paper_protocol: c.protocol == gelunet_protocol::v2::Protocol::Paper,
            ..gelunet_client::ClientPolicy::default()
        },
        ..ClientConfig::default()
    };
    let mut client = Client::new(config, key, share.features.clone(), share.labels.clone())
        .map_err(|source| RunError::Client {
            name: c.name.clone(),
            source,
        })?;
    if let Some(k) = group_key {
        client.set_group_key(k);
    }
    let cc = ClientShellConfig {
        server,
        server_name: c.server_name.clone(),
        pinned_cert: pinned,
        transport,
        name: c.name.clone(),
        token,
        samples: share.n_samples() as u64,
        reference: match randomness {
            Randomness::InsecureReproducible { seed } => Some(ReferenceHint {
                share: k as u32,
                client_seed: seed,
            }),
            Randomness::Os => None,
        },
        connect_timeout: c.connect_timeout,
        reconnect: gelunet_client::ReconnectPolicy {
            max_attempts: Some(c.reconnect),
            ..gelunet_client::ReconnectPolicy::for_up_to(c.connect_timeout)
        },
        progress: None,
    };
    let rt = runtime()?;
    let pb = progress::Progress::new(c.progress, 1.0);
    let name = c.name.clone();
    let outcome = rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = tokio::spawn(progress::follow_client(name, pb, rx));
        let cc = ClientShellConfig {
            progress: Some(tx),
            ..cc
        };
        let r = run_client_with(client, &cc, crate::signal::interrupted()).await;
        drop(cc);
        let _ = follower.await;
        r
    });
    if let Err(gelunet_shell::client::ClientShellError::Interrupted) = outcome {
        if let Some(path) = &c.report {
            write_json(
                path,
                &JoinReport {
                    name: c.name.clone(),
                    samples: share.n_samples() as u64,
                    wall_seconds: t_all.elapsed().as_secs_f64(),
                    stop_reason: "interrupted".into(),
                    backend: gelunet_paillier::BACKEND.into(),
                    protocol: "unknown".into(),
                    randomness: randomness.report_label().into(),
                    partial: true,
                    ..JoinReport::default()
                },
            )?;
        }
        return Err(RunError::Interrupted {
            resume: format!("client `{}` left the run; start it again to rejoin", c.name),
        });
    }
    let (role, stats) = outcome.map_err(|source| RunError::ClientShell {
        name: c.name.clone(),
        source,
    })?;
    let r = JoinReport {
        name: c.name.clone(),
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
        backend: gelunet_paillier::BACKEND.into(),
        protocol: role
            .protocol()
            .map_or("unknown", gelunet_protocol::v2::Protocol::name)
            .into(),
        randomness: randomness.report_label().into(),
        partial: false,
    };
    if let Some(path) = &c.report {
        write_json(path, &r)?;
    }
    Ok(r)
}
