//! The client's QUIC shell: connects to a server whose certificate it pins, registers
//! with a name and a token, exchanges public keys (`ServerHello` / `ClientHello`) and
//! answers the server's messages with [`Client::handle`] until the server says training
//! is over.
//!
//! # The shell's messages
//!
//! One bidirectional QUIC stream per connection carries [`ToServer`] and [`ToClient`]
//! frames (postcard, length-prefixed by [`gelunet_net::Channel`]). The protocol messages
//! of `gelunet_protocol::messages` travel inside them; the shell adds registration,
//! refusal and the end-of-training summary:
//!
//! ```text
//! client → server  Register { name, token, samples }
//! server → client  Welcome(ServerHello)          or Refused { code, detail } and close
//! client → server  Message(ClientHello)
//! server → client  Registered { client, incarnation, batches }   or Refused
//! server → client  Message(SessionStart | ForwardResponse | …)     sessions, as scheduled
//! client → server  Message(ForwardRequest | …)
//! server → client  Finished(Summary)
//! ```
//!
//! # CPU-heavy work
//!
//! The role's handlers (encryption, decryption) run in `tokio::task::spawn_blocking`, so
//! the runtime keeps driving the connection (QUIC keep-alives) meanwhile.
//!
//! # Disconnects
//!
//! A lost connection abandons the active session on our side ([`Client::abandon_session`];
//! the server rolls back as well) and, as long as [`ClientShellConfig::reconnect`] (an
//! I/O-free [`ReconnectPolicy`]: growing pauses, a time limit per outage) allows, the
//! shell reconnects with the same name, token and key pair and is scheduled again; a
//! server that crashed and was restarted with `--resume` takes it back the same way. At
//! every registration the client fast-forwards its mini-batch sampler to the batches of
//! its completed sessions (`Registered::batches`, [`Client::resume_batches`]). A refusal
//! (bad credentials, certificate not trusted, version) is final.
//!
//! # Frame limits
//!
//! Until the server's hello is accepted, a frame from the server may hold at most
//! [`PREAUTH_MAX_FRAME`] (64 KiB); after it, what the agreed model spec implies
//! ([`ServerHello::max_message_len`]: the run's largest message with a 4096-bit key's
//! ciphertexts and 64 KiB of margin), at most the transport's `max_frame_len`. A longer
//! frame is refused from its length prefix, before anything of its size is allocated
//! ([`NetError::FrameTooLarge`], final: no reconnect).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gelunet_net::{
    CertificateDer, Channel, NetError, TransportSettings, Zeroizing, PREAUTH_MAX_FRAME,
};
use gelunet_protocol::messages::{ClientMessage, ServerHello, ServerMessage};
use ndarray::{Array2, Axis};

use gelunet_client::{Backoff, Client, ClientError, InferStep, InferenceClient, ReconnectPolicy};
use gelunet_protocol::envelope::{
    ReferenceHint, Refusal, Register, ReleaseSeed, Summary, ToClient, ToServer, SHELL_VERSION,
};

/// Everything that can stop the client's shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientShellError {
    /// A transport error (connection, TLS, framing), after the reconnect attempts.
    #[error("transport: {0}")]
    Net(#[from] NetError),
    /// The server refused us.
    #[error("the server refused this client ({0})")]
    Refused(Refusal),
    /// The client role refused the server's handshake (version, keys, data).
    #[error("handshake refused by this client: {0}")]
    Handshake(#[source] ClientError),
    /// The server broke the shell protocol.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The role's blocking task failed.
    #[error("the client role's worker failed: {0}")]
    Worker(String),
    /// The server answered with an error report.
    #[error("the server reported an error: {0}")]
    Remote(String),
    /// The inference client refused the server's answer or the input.
    #[error("inference: {0}")]
    Inference(#[source] ClientError),
    /// The stop signal of [`run_client_with`] (Ctrl-C, SIGTERM) ended the run.
    #[error("interrupted")]
    Interrupted,
}

impl ClientShellError {
    /// Whether reconnecting may help (connection lost, timeouts, closed streams).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Net(
                NetError::ConnectionLost(_)
                    | NetError::Timeout { .. }
                    | NetError::Closed
                    | NetError::StreamReset { .. }
                    | NetError::StreamStopped { .. }
                    | NetError::Truncated { .. }
                    | NetError::Connect { .. }
            )
        )
    }
}

/// How to reach the server and who we are.
#[derive(Clone)]
pub struct ClientShellConfig {
    /// The server's address.
    pub server: SocketAddr,
    /// A name the server certificate is valid for (e.g. `localhost`).
    pub server_name: String,
    /// The pinned server certificate (DER).
    pub pinned_cert: CertificateDer<'static>,
    /// QUIC settings.
    pub transport: TransportSettings,
    /// Our name, as configured on the server.
    pub name: String,
    /// Our token.
    pub token: Zeroizing<String>,
    /// Training samples we hold.
    pub samples: u64,
    /// Reproduction hint (reproducible experiments only).
    pub reference: Option<ReferenceHint>,
    /// How long to keep retrying the first connection (the server may still be starting).
    pub connect_timeout: Duration,
    /// When and how long to reconnect after a lost connection.
    pub reconnect: ReconnectPolicy,
    /// If set, gets `(sessions completed, sessions abandoned)` after each of our
    /// sessions ends (the progress of `gelunet join`).
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<(u64, u64)>>,
}

gelunet_protocol::redacted_debug!(
    ClientShellConfig { server, server_name, name, samples, reconnect } secret { token } ..
);

/// What a client's run amounted to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientRunStats {
    /// The server's summary.
    pub summary: Summary,
    /// Bytes we sent (frames with prefixes), all connections.
    pub bytes_sent: u64,
    /// Bytes we received, all connections.
    pub bytes_received: u64,
    /// Sessions we completed (`SessionEnd` received).
    pub sessions: u64,
    /// Sessions abandoned on our side (disconnect, abort).
    pub abandoned: u64,
    /// Reconnections made.
    pub reconnects: u32,
    /// Time spent in the role's handlers.
    pub compute: Duration,
}

/// Runs `f` on the client role in a blocking task and gives the role back.
async fn blocking<R, T, F>(client: &mut Option<R>, f: F) -> Result<T, ClientShellError>
where
    R: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut R) -> T + Send + 'static,
{
    let mut role = client
        .take()
        .ok_or_else(|| ClientShellError::Worker("client role lost".into()))?;
    let (role, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut role);
        (role, out)
    })
    .await
    .map_err(|e| ClientShellError::Worker(e.to_string()))?;
    *client = Some(role);
    Ok(out)
}

/// Connects, retrying refused/unreachable attempts until `deadline`.
async fn connect_until(
    endpoint: &gelunet_net::quinn::Endpoint,
    config: &ClientShellConfig,
    deadline: Instant,
) -> Result<gelunet_net::quinn::Connection, ClientShellError> {
    loop {
        match gelunet_net::connect(
            endpoint,
            config.server,
            &config.server_name,
            config.pinned_cert.clone(),
            &config.transport,
        )
        .await
        {
            Ok(c) => return Ok(c),
            Err(e @ (NetError::CertificateRejected { .. } | NetError::HandshakeFailed { .. })) => {
                return Err(e.into())
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "connection attempt failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One connection's conversation. Returns the summary when the server finishes.
async fn converse(
    client: &mut Option<Client>,
    channel: &mut Channel,
    config: &ClientShellConfig,
    stats: &mut ClientRunStats,
    backoff: &mut Backoff,
) -> Result<Summary, ClientShellError> {
    channel
        .send(&ToServer::Register(Register {
            version: SHELL_VERSION,
            name: config.name.clone(),
            token: config.token.to_string(),
            samples: config.samples,
            reference: config.reference,
        }))
        .await?;
    let hello = recv_welcome(channel).await?;
    let limit = agreed_limit(&hello, 0, config);
    let reply = blocking(client, move |c| {
        c.abandon_session();
        c.handle_hello(&hello)
    })
    .await?
    .map_err(ClientShellError::Handshake)?;
    // The hello is accepted: the server's frames are now bounded by the agreed spec.
    channel.set_max_frame_len(limit);
    channel.send(&ToServer::Message(reply)).await?;
    match channel.recv::<ToClient>().await? {
        ToClient::Registered {
            client: id,
            incarnation,
            batches,
        } => {
            client
                .as_mut()
                .ok_or_else(|| ClientShellError::Worker("client role lost".into()))?
                .resume_batches(batches)
                .map_err(ClientShellError::Handshake)?;
            backoff.reset();
            tracing::info!(name = %config.name, id, incarnation, batches, "registered");
        }
        ToClient::Refused(r) => return Err(ClientShellError::Refused(r)),
        other => {
            return Err(ClientShellError::Protocol(format!(
                "expected Registered, got {}",
                frame_kind(&other)
            )))
        }
    }
    loop {
        let msg = match channel.recv::<ToClient>().await? {
            ToClient::Message(m) => m,
            ToClient::Finished(s) => return Ok(s),
            ToClient::Refused(r) => return Err(ClientShellError::Refused(r)),
            ToClient::Release(version) => {
                // Protocol v2: the seed of the asked version, never the group key.
                let role = client
                    .as_ref()
                    .ok_or_else(|| ClientShellError::Worker("client role lost".into()))?;
                let seed = role
                    .release_seed(version)
                    .map_err(ClientShellError::Handshake)?;
                tracing::info!(version = version.version, "releasing the trained model");
                channel
                    .send(&ToServer::Release(ReleaseSeed {
                        version: version.version,
                        seed: *seed.to_bytes(),
                    }))
                    .await?;
                continue;
            }
            other => {
                return Err(ClientShellError::Protocol(format!(
                    "unexpected {} during training",
                    frame_kind(&other)
                )))
            }
        };
        let t = Instant::now();
        let kind = msg.kind();
        let ends = matches!(msg, ServerMessage::SessionEnd(_));
        let aborts = matches!(msg, ServerMessage::Abort(_));
        let answer = blocking(client, move |c| {
            let had_session = c.active_session();
            let r = c.handle(&msg);
            match r {
                Ok(a) => Ok((a, had_session, c.active_session())),
                Err(e) => Err((e.report(had_session), e)),
            }
        })
        .await?;
        stats.compute += t.elapsed();
        match answer {
            Ok((reply, before, after)) => {
                if ends {
                    stats.sessions += 1;
                } else if aborts && before.is_some() && after.is_none() {
                    stats.abandoned += 1;
                }
                if ends || aborts {
                    if let Some(p) = &config.progress {
                        let _ = p.send((stats.sessions, stats.abandoned));
                    }
                }
                if let Some(reply) = reply {
                    channel.send(&ToServer::Message(reply)).await?;
                }
            }
            Err((report, e)) => {
                tracing::warn!(error = %e, message = kind, "refused a server message");
                channel
                    .send(&ToServer::Message(ClientMessage::Error(report)))
                    .await?;
                if e.ends_connection() {
                    // A fault of a decrypted value: the session is over on our side and
                    // the connection ends, so refusals cannot serve as an oracle.
                    return Err(ClientShellError::Protocol(format!(
                        "the server sent a {kind} that does not decrypt to a valid value"
                    )));
                }
            }
        }
    }
}

/// The frame limit until the server's hello is accepted: [`PREAUTH_MAX_FRAME`] (64 KiB,
/// as the server allows strangers; a `Welcome` or a `Refused` is far smaller), at most
/// the transport's.
fn preauth_limit(config: &ClientShellConfig) -> usize {
    PREAUTH_MAX_FRAME.min(config.transport.max_frame_len)
}

/// The frame limit once the server's hello is accepted: what the agreed spec implies for
/// mini-batches of `batch` samples ([`ServerHello::max_message_len`]), at most the
/// transport's.
fn agreed_limit(hello: &ServerHello, batch: usize, config: &ClientShellConfig) -> usize {
    hello
        .max_message_len(batch)
        .min(config.transport.max_frame_len)
}

/// The server's answer to `Register`: its hello, or the typed refusal.
async fn recv_welcome(channel: &mut Channel) -> Result<ServerHello, ClientShellError> {
    match channel.recv::<ToClient>().await? {
        ToClient::Welcome(h) => Ok(h),
        ToClient::Refused(r) => Err(ClientShellError::Refused(r)),
        other => Err(ClientShellError::Protocol(format!(
            "expected Welcome, got {}",
            frame_kind(&other)
        ))),
    }
}

fn frame_kind(f: &ToClient) -> &'static str {
    match f {
        ToClient::Welcome(_) => "Welcome",
        ToClient::Registered { .. } => "Registered",
        ToClient::Refused(_) => "Refused",
        ToClient::Message(m) => m.kind(),
        ToClient::Finished(_) => "Finished",
        ToClient::Release(_) => "Release",
    }
}

/// Runs the client until the server finishes training (see the module docs). Returns the
/// role (for inspection) and the run's figures.
///
/// # Errors
/// [`ClientShellError::Refused`] (bad credentials, registration closed, key mismatch),
/// [`ClientShellError::Net`] (`CertificateRejected` for a server whose certificate is not
/// the pinned one; connection errors once the reconnect attempts are used up),
/// [`ClientShellError::Handshake`], [`ClientShellError::Protocol`].
pub async fn run_client(
    client: Client,
    config: &ClientShellConfig,
) -> Result<(Client, ClientRunStats), ClientShellError> {
    run_client_with(client, config, std::future::pending()).await
}

/// [`run_client`], ended by `stop` (Ctrl-C, SIGTERM): the active session is abandoned,
/// the connection closed, and [`ClientShellError::Interrupted`] returned.
///
/// # Errors
/// As [`run_client`]; [`ClientShellError::Interrupted`].
pub async fn run_client_with(
    client: Client,
    config: &ClientShellConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(Client, ClientRunStats), ClientShellError> {
    let endpoint = gelunet_net::client_endpoint(gelunet_net::client_bind_addr(config.server))?;
    let mut role = Some(client);
    let mut stats = ClientRunStats::default();
    let mut backoff = Backoff::new(config.reconnect);
    let mut deadline = Instant::now() + config.connect_timeout;
    let mut stop = std::pin::pin!(stop);
    let result = loop {
        let attempt = async {
            let conn = connect_until(&endpoint, config, deadline).await?;
            let mut channel = Channel::open(&conn, preauth_limit(config)).await?;
            let r = converse(&mut role, &mut channel, config, &mut stats, &mut backoff).await;
            stats.bytes_sent += channel.bytes_sent();
            stats.bytes_received += channel.bytes_received();
            if r.is_ok() {
                // Best effort: let the server see our last bytes before closing.
                let _ = tokio::time::timeout(Duration::from_secs(2), channel.finish()).await;
            }
            conn.close(0u32.into(), b"bye");
            r
        };
        let outcome = tokio::select! {
            r = attempt => r,
            () = &mut stop => Err(ClientShellError::Interrupted),
        };
        match outcome {
            Ok(summary) => break Ok(summary),
            Err(e) if e.is_transient() => {
                if let Some(c) = role.as_mut() {
                    if c.abandon_session().is_some() {
                        stats.abandoned += 1;
                    }
                }
                let Some(delay) = backoff.next_delay(Instant::now()) else {
                    break Err(e);
                };
                stats.reconnects += 1;
                tracing::warn!(error = %e, ?delay, attempt = backoff.attempts(), "connection lost; reconnecting");
                let interrupted = tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    () = &mut stop => true,
                };
                if interrupted {
                    break Err(ClientShellError::Interrupted);
                }
                deadline = backoff.deadline().unwrap_or_else(Instant::now);
            }
            Err(e) => break Err(e),
        }
    };
    if let (Err(ClientShellError::Interrupted), Some(c)) = (&result, role.as_mut()) {
        if c.abandon_session().is_some() {
            stats.abandoned += 1;
        }
    }
    endpoint.close(0u32.into(), b"bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let summary = result?;
    stats.summary = summary;
    let role = role.ok_or_else(|| ClientShellError::Worker("client role lost".into()))?;
    Ok((role, stats))
}

/// What [`run_inference`] gives.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceRun {
    /// Predicted class per sample.
    pub predictions: Vec<usize>,
    /// Softmax probabilities, `samples × classes`.
    pub probabilities: Array2<f64>,
    /// Requests sent (one per layer and batch).
    pub requests: u64,
    /// Layers answered from a preparation (`preprocess`; docs/DESIGN.md "Preprocessed
    /// inference").
    pub prepared: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Wall-clock seconds of each request batch, in order: from the client's encryption
    /// of the batch to its predictions (every layer's round trip, the server's work and
    /// the client's decryptions; with `preprocess`, the online part only).
    pub batch_secs: Vec<f64>,
    /// With `preprocess`: wall-clock seconds of each batch's preparation round trips
    /// (the offline part, before [`InferenceRun::batch_secs`]); empty otherwise.
    pub preparation_secs: Vec<f64>,
}

/// The per-batch timings of an inference conversation.
#[derive(Default)]
struct BatchTimes {
    online: Vec<f64>,
    preparation: Vec<f64>,
}

/// Encrypted inference over QUIC (paper Alg. 1 with the server's trained model): registers
/// like a training client, builds the [`InferenceClient`] with `make_client` from the
/// server's hello, and sends `samples` (real values, `samples × inputs`) in batches of
/// `batch` rows; the server computes every layer's pre-activations on ciphertexts, the
/// client applies the activations. With `preprocess`, each single-sample batch is
/// preceded by the client's preparations ([`InferenceClient::prepare`], each answered by
/// an acknowledgement) so that its layers go as masked plaintexts
/// (docs/DESIGN.md "Preprocessed inference"). `config.samples` and `config.reference`
/// are ignored.
///
/// # Errors
/// As [`run_client`]; [`ClientShellError::Remote`] when the server refuses a request,
/// [`ClientShellError::Inference`] for inputs or answers the client refuses.
pub async fn run_inference<F>(
    make_client: F,
    samples: Array2<f64>,
    (batch, preprocess): (usize, bool),
    config: &ClientShellConfig,
) -> Result<InferenceRun, ClientShellError>
where
    F: FnOnce(&ServerHello) -> Result<InferenceClient, ClientError> + Send + 'static,
{
    let endpoint = gelunet_net::client_endpoint(gelunet_net::client_bind_addr(config.server))?;
    let deadline = Instant::now() + config.connect_timeout;
    let conn = connect_until(&endpoint, config, deadline).await?;
    let mut channel = Channel::open(&conn, preauth_limit(config)).await?;
    let result = infer_conversation(
        make_client,
        samples,
        (batch, preprocess),
        &mut channel,
        config,
    )
    .await;
    conn.close(0u32.into(), b"bye");
    endpoint.close(0u32.into(), b"bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let (predictions, probabilities, (requests, prepared), times) = result?;
    Ok(InferenceRun {
        predictions,
        probabilities,
        requests,
        prepared,
        bytes_sent: channel.bytes_sent(),
        bytes_received: channel.bytes_received(),
        batch_secs: times.online,
        preparation_secs: times.preparation,
    })
}

/// The server's answer to one inference-connection message, or the error it stands for.
async fn recv_answer(channel: &mut Channel) -> Result<ServerMessage, ClientShellError> {
    match channel.recv::<ToClient>().await? {
        ToClient::Message(ServerMessage::Error(r)) => Err(ClientShellError::Remote(r.detail)),
        ToClient::Message(m) => Ok(m),
        ToClient::Refused(r) => Err(ClientShellError::Refused(r)),
        other => Err(ClientShellError::Protocol(format!(
            "unexpected {} during inference",
            frame_kind(&other)
        ))),
    }
}

async fn infer_conversation<F>(
    make_client: F,
    samples: Array2<f64>,
    (batch, preprocess): (usize, bool),
    channel: &mut Channel,
    config: &ClientShellConfig,
) -> Result<(Vec<usize>, Array2<f64>, (u64, u64), BatchTimes), ClientShellError>
where
    F: FnOnce(&ServerHello) -> Result<InferenceClient, ClientError> + Send + 'static,
{
    channel
        .send(&ToServer::Register(Register {
            version: SHELL_VERSION,
            name: config.name.clone(),
            token: config.token.to_string(),
            samples: 0,
            reference: None,
        }))
        .await?;
    let hello = recv_welcome(channel).await?;
    let limit = agreed_limit(&hello, batch, config);
    let ic = tokio::task::spawn_blocking(move || make_client(&hello))
        .await
        .map_err(|e| ClientShellError::Worker(e.to_string()))?
        .map_err(ClientShellError::Handshake)?;
    channel.set_max_frame_len(limit);
    channel
        .send(&ToServer::Message(ClientMessage::Hello(ic.hello())))
        .await?;
    match channel.recv::<ToClient>().await? {
        ToClient::Registered { .. } => {}
        ToClient::Refused(r) => return Err(ClientShellError::Refused(r)),
        other => {
            return Err(ClientShellError::Protocol(format!(
                "expected Registered, got {}",
                frame_kind(&other)
            )))
        }
    }
    let mut slot = Some(ic);
    let mut predictions = Vec::with_capacity(samples.nrows());
    let mut parts = Vec::new();
    let (mut requests, mut prepared) = (0u64, 0u64);
    let mut times = BatchTimes::default();
    let batch = batch.max(1);
    for chunk in samples.axis_chunks_iter(Axis(0), batch) {
        if preprocess && chunk.nrows() == 1 {
            let t = Instant::now();
            let preps = blocking(&mut slot, |c| c.prepare())
                .await?
                .map_err(ClientShellError::Inference)?;
            for p in preps {
                channel.send(&ToServer::Message(p)).await?;
                let ack = recv_answer(channel).await?;
                blocking(&mut slot, move |c| c.handle_prepared(&ack))
                    .await?
                    .map_err(ClientShellError::Inference)?;
            }
            times.preparation.push(t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let chunk = chunk.to_owned();
        let mut msg = blocking(&mut slot, move |c| c.start(&chunk))
            .await?
            .map_err(ClientShellError::Inference)?;
        loop {
            prepared += u64::from(matches!(msg, ClientMessage::InferMasked(_)));
            channel.send(&ToServer::Message(msg)).await?;
            requests += 1;
            let answer = recv_answer(channel).await?;
            match blocking(&mut slot, move |c| c.handle(&answer))
                .await?
                .map_err(ClientShellError::Inference)?
            {
                InferStep::Next(m) => msg = m,
                InferStep::Done(p, probs) => {
                    times.online.push(t.elapsed().as_secs_f64());
                    predictions.extend(p);
                    parts.push(probs);
                    break;
                }
            }
        }
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    let probabilities = if views.is_empty() {
        Array2::zeros((0, 0))
    } else {
        ndarray::concatenate(Axis(0), &views)
            .map_err(|e| ClientShellError::Protocol(format!("probabilities: {e}")))?
    };
    // Tell the server we are done.
    let _ = tokio::time::timeout(Duration::from_secs(2), channel.finish()).await;
    Ok((predictions, probabilities, (requests, prepared), times))
}
