//! The server's QUIC shell: the [`Coordinator`] (and through it the [`Server`] role)
//! behind a QUIC endpoint. The shell only moves bytes and keeps time; every decision of a
//! training run (registration order, reconnections, timeouts, scheduling of connected
//! clients, the stop rule, the training log) is the coordinator's, see
//! [`gelunet_server::coordinator`].
//!
//! * Clients connect with the pinned server certificate (see `gelunet_net`), open one
//!   bidirectional stream and register with a name and a token
//!   ([`Register`]); the token is compared in constant time
//!   ([`gelunet_net::tokens_equal`]). An unknown name or a wrong token is answered with a
//!   typed [`Refusal`] ([`RefusalCode::Unauthenticated`]) before the connection closes.
//!   After `Welcome` and the client's `ClientHello` the connection is handed to the
//!   coordinator ([`Input::Joined`]).
//! * One task per connection reads frames ([`Input::Frame`], [`Input::Broken`]) and writes
//!   the frames the coordinator asks for ([`Action`]); when the connection is closed it
//!   reports its byte counts ([`Input::Closed`]).
//! * The main loop feeds the coordinator one input at a time, or
//!   [`Coordinator::handle_timeout`] at the coordinator's deadline
//!   ([`Coordinator::poll_timeout`]). The role's handlers are synchronous and CPU-heavy:
//!   each call runs in `tokio::task::spawn_blocking` with the coordinator moved in and
//!   out, so the runtime keeps serving keep-alives and accepting connections meanwhile.
//!
//! Bytes are counted per connection (frames with their length prefixes), connections
//! that never registered included.
//!
//! Strangers ([`StrangerLimits`]): at most `max_pending` connections may be in the QUIC
//! handshake or registering at once (more are refused at once, before any TLS work); a
//! connection that has not authenticated may send frames of at most
//! [`PREAUTH_MAX_FRAME`] (64 KiB) and must open its stream and send `Register` within
//! `preauth_timeout`; once authenticated, its frames are bounded by the agreed model
//! spec ([`gelunet_protocol::ModelSpec::max_message_len`]) and the transport's
//! `max_frame_len`, whichever is smaller.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gelunet_net::quinn::{Connection, Endpoint, SendStream};
use gelunet_net::{
    complete_handshake, recv_message, send_message, tokens_equal, Channel, NetError,
    TransportSettings, Zeroizing, PREAUTH_MAX_FRAME,
};
use gelunet_protocol::envelope::{
    Refusal, RefusalCode, Register, Summary, ToClient, ToServer, SHELL_VERSION,
};
use gelunet_protocol::messages::{ClientHello, ClientMessage, ServerHello, ServerMessage};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use gelunet_server::{
    Action, ConnectionId, Coordinator, CoordinatorConfig, CoordinatorError, Input, LinkError,
    Preparations, Server, Traffic,
};

pub use gelunet_server::{ClientLog, ServerEvent, SessionLog, TrainingLog};

/// QUIC application close code: normal end.
const CLOSE_DONE: u32 = 0;
/// QUIC application close code: refused or dropped by the server.
const CLOSE_REFUSED: u32 = 1;
/// Longest wait for a refusal to be written, and then for the peer to close.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for the end-of-training summary to be written.
const SUMMARY_SEND_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for a client to close after reading the summary.
const SUMMARY_CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A client the server accepts: its name and secret token.
#[derive(Clone)]
pub struct Credential {
    /// The client's name.
    pub name: String,
    /// The client's token.
    pub token: Zeroizing<String>,
}

gelunet_protocol::redacted_debug!(Credential { name } secret { token });

/// Bounds on connections that have not authenticated (module docs, docs/DESIGN.md "Wire
/// protocol and processes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrangerLimits {
    /// Most connections in the QUIC handshake or registering at once; further incoming
    /// connections are refused at once. Default 64.
    pub max_pending: usize,
    /// Longest time a new connection may take to open its stream and send `Register`
    /// (the rest of the registration is bounded by the register timeout). Default 10 s.
    pub preauth_timeout: Duration,
}

impl Default for StrangerLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            preauth_timeout: Duration::from_secs(10),
        }
    }
}

/// The shell's configuration: transport and credentials; the training policy is the
/// coordinator's ([`CoordinatorConfig`]).
#[derive(Clone, Debug)]
pub struct ServerShellConfig {
    /// QUIC settings (frame size limit, windows, idle timeout, keep-alive).
    pub transport: TransportSettings,
    /// The clients allowed to register, in registration order.
    pub credentials: Vec<Credential>,
    /// Longest time a new connection may take to register (stream, `Register`,
    /// `ClientHello`).
    pub register_timeout: Duration,
    /// Bounds on connections that have not authenticated.
    pub strangers: StrangerLimits,
    /// The coordinator's policy (clients to wait for, registration order, stop rule,
    /// response, join and rejoin timeouts). A frame that cannot be written within its
    /// `response_timeout` also breaks the connection.
    pub coordinator: CoordinatorConfig,
}

impl ServerShellConfig {
    /// A configuration for `credentials` with default timeouts, waiting for all of them,
    /// one epoch ([`CoordinatorConfig::new`]).
    pub fn new(credentials: Vec<Credential>, transport: TransportSettings) -> Self {
        Self {
            coordinator: CoordinatorConfig::new(credentials.len()),
            credentials,
            transport,
            register_timeout: Duration::from_secs(60),
            strangers: StrangerLimits::default(),
        }
    }
}

/// Everything that can stop the server's shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerShellError {
    /// A transport error of the endpoint.
    #[error("transport: {0}")]
    Net(#[from] NetError),
    /// The coordinator refused its configuration or training stopped with an error
    /// (clients that do not come or all leave, a failure of the role).
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// A bad shell configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The coordinator's or the role's blocking task failed.
    #[error("the server role's worker failed: {0}")]
    Worker(String),
}

/// A connection that passed the credential check and sent its `ClientHello`.
struct Joined {
    register: Register,
    hello: ClientHello,
    conn: Connection,
    channel: Channel,
}

/// How a new connection's registration ended.
enum Handshake {
    /// Authenticated, with its hello.
    Joined(Joined),
    /// Refused (the refusal was sent and the connection closed).
    Refused { refusal: Refusal, traffic: Traffic },
    /// No stream in time: closed without a word.
    NoStream,
}

struct AcceptCtx {
    credentials: Vec<Credential>,
    hello: ServerHello,
    register_timeout: Duration,
    strangers: StrangerLimits,
    /// The frame limit after authentication: the spec's bound, at most the transport's.
    max_frame_len: usize,
}

impl AcceptCtx {
    fn new(
        credentials: Vec<Credential>,
        hello: ServerHello,
        transport: TransportSettings,
        register_timeout: Duration,
        strangers: StrangerLimits,
    ) -> Self {
        let spec_bound = hello.max_message_len(0);
        Self {
            max_frame_len: spec_bound.min(transport.max_frame_len),
            credentials,
            hello,
            register_timeout,
            strangers,
        }
    }
}

impl AcceptCtx {
    /// Constant-time check over every credential (no early exit).
    fn authorized(&self, name: &str, token: &str) -> bool {
        let mut ok = false;
        for c in &self.credentials {
            let name_ok = tokens_equal(name.as_bytes(), c.name.as_bytes());
            let token_ok = tokens_equal(token.as_bytes(), c.token.as_bytes());
            ok |= name_ok & token_ok;
        }
        ok
    }
}

fn refusal(code: RefusalCode, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
    }
}

fn net_refusal(e: &NetError) -> Refusal {
    match e {
        NetError::Malformed { .. }
        | NetError::FrameTooLarge { .. }
        | NetError::Truncated { .. } => refusal(RefusalCode::Protocol, e.to_string()),
        NetError::Timeout { .. } => refusal(RefusalCode::Timeout, e.to_string()),
        _ => refusal(RefusalCode::Protocol, format!("connection error: {e}")),
    }
}

/// A read error of a registered connection, for the coordinator.
fn link_error(e: &NetError) -> LinkError {
    match e {
        NetError::Malformed { .. } | NetError::FrameTooLarge { .. } => LinkError::Malformed {
            detail: e.to_string(),
        },
        _ => LinkError::Lost {
            detail: e.to_string(),
        },
    }
}

/// Sends a refusal, waits briefly for the peer to close, then closes.
async fn refuse(conn: &Connection, channel: &mut Channel, r: &Refusal) {
    let _ = tokio::time::timeout(REFUSAL_GRACE, channel.send(&ToClient::Refused(r.clone()))).await;
    let _ = tokio::time::timeout(REFUSAL_GRACE, conn.closed()).await;
    conn.close(CLOSE_REFUSED.into(), b"refused");
}

async fn authenticate(
    channel: &mut Channel,
    ctx: &AcceptCtx,
) -> Result<(Register, ClientHello), Refusal> {
    let limit = ctx.strangers.preauth_timeout;
    let first: ToServer = channel
        .recv_timeout(limit)
        .await
        .map_err(|e| net_refusal(&e))?;
    let ToServer::Register(register) = first else {
        return Err(refusal(
            RefusalCode::Protocol,
            "the first frame must be Register",
        ));
    };
    if register.version != SHELL_VERSION {
        return Err(refusal(
            RefusalCode::Version,
            format!(
                "shell version {} (this server speaks {SHELL_VERSION})",
                register.version
            ),
        ));
    }
    if !ctx.authorized(&register.name, &register.token) {
        return Err(refusal(
            RefusalCode::Unauthenticated,
            format!(
                "client `{}` is not authorized: unknown client name or wrong token",
                register.name
            ),
        ));
    }
    channel
        .send(&ToClient::Welcome(ctx.hello.clone()))
        .await
        .map_err(|e| net_refusal(&e))?;
    let hello = channel
        .recv::<ToServer>()
        .await
        .map_err(|e| net_refusal(&e))?;
    // Authenticated: frames are now bounded by the agreed spec.
    channel.set_max_frame_len(ctx.max_frame_len);
    match hello {
        ToServer::Message(ClientMessage::Hello(h)) => Ok((register, h)),
        ToServer::Message(ClientMessage::Error(report)) => Err(refusal(
            RefusalCode::Handshake,
            format!("the client refused the handshake: {}", report.detail),
        )),
        _ => Err(refusal(
            RefusalCode::Protocol,
            "expected the client's hello after Welcome",
        )),
    }
}

/// Registration of one connection (bounded by the register timeout); refused connections
/// are answered and closed here.
async fn handshake(conn: Connection, ctx: &AcceptCtx) -> Handshake {
    let remote = conn.remote_address();
    let limit = ctx.register_timeout;
    let mut channel = match tokio::time::timeout(
        ctx.strangers.preauth_timeout.min(limit),
        Channel::accept(&conn, PREAUTH_MAX_FRAME),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "no stream opened");
            conn.close(CLOSE_REFUSED.into(), b"no stream");
            return Handshake::NoStream;
        }
        Err(_) => {
            conn.close(CLOSE_REFUSED.into(), b"registration timeout");
            return Handshake::NoStream;
        }
    };
    let outcome = tokio::time::timeout(limit, authenticate(&mut channel, ctx))
        .await
        .unwrap_or_else(|_| {
            Err(refusal(
                RefusalCode::Timeout,
                format!("no registration within {limit:?}"),
            ))
        });
    match outcome {
        Ok((register, hello)) => Handshake::Joined(Joined {
            register,
            hello,
            conn,
            channel,
        }),
        Err(r) => {
            tracing::warn!(%remote, refusal = %r, "connection refused");
            refuse(&conn, &mut channel, &r).await;
            Handshake::Refused {
                refusal: r,
                traffic: Traffic {
                    sent: channel.bytes_sent(),
                    received: channel.bytes_received(),
                },
            }
        }
    }
}

/// An incoming connection holding one of the `max_pending` registration slots: the slot
/// is released when this is dropped (after the connection registered or was refused).
struct Pending {
    incoming: gelunet_net::quinn::Incoming,
    transport: TransportSettings,
    permit: OwnedSemaphorePermit,
}

impl Pending {
    /// Completes the QUIC handshake (bounded by the transport's handshake timeout).
    async fn connect(self) -> Option<(Connection, OwnedSemaphorePermit)> {
        match complete_handshake(self.incoming, &self.transport).await {
            Ok(conn) => Some((conn, self.permit)),
            Err(e) => {
                tracing::debug!(error = %e, "incoming connection failed");
                None
            }
        }
    }
}

/// Accepts connections until the endpoint closes: at most `limits.max_pending` at a time
/// in the QUIC handshake or registering (more are refused at once, before any TLS work),
/// each in its own task running `serve`.
async fn accept_loop<F, Fut>(
    endpoint: Endpoint,
    transport: TransportSettings,
    limits: StrangerLimits,
    mut serve: F,
) where
    F: FnMut(Pending) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_pending.max(1)));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                remote = %incoming.remote_address(),
                "too many connections registering; refused"
            );
            incoming.refuse();
            continue;
        };
        tokio::spawn(serve(Pending {
            incoming,
            transport: transport.clone(),
            permit,
        }));
    }
}

/// What the main loop does with a registered connection (from [`Action`]s).
enum Command {
    Send(ToClient),
    Refuse(Refusal),
    Close(String),
    Finish(Summary),
}

/// What connection tasks tell the main loop.
enum Incoming {
    /// A connection registered: its name and command queue, then its input.
    Joined {
        conn: ConnectionId,
        name: String,
        commands: mpsc::UnboundedSender<Command>,
        input: Input,
    },
    /// Any other input.
    Input(Input),
}

/// Completes the handshake and registers one connection, then (if it joined) runs it for
/// the coordinator.
async fn serve_training_connection(
    pending: Pending,
    id: ConnectionId,
    ctx: Arc<AcceptCtx>,
    send_limit: Duration,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let Some((conn, slot)) = pending.connect().await else {
        return;
    };
    let outcome = handshake(conn, &ctx).await;
    drop(slot);
    let j = match outcome {
        Handshake::Joined(j) => j,
        Handshake::Refused { refusal, traffic } => {
            let _ = tx.send(Incoming::Input(Input::Refused { refusal, traffic }));
            return;
        }
        Handshake::NoStream => return,
    };
    let (commands, queue) = mpsc::unbounded_channel();
    let joined = Incoming::Joined {
        conn: id,
        name: j.register.name.clone(),
        commands,
        input: Input::Joined {
            conn: id,
            name: j.register.name,
            samples: j.register.samples,
            reference: j.register.reference,
            hello: j.hello,
        },
    };
    if tx.send(joined).is_err() {
        j.conn.close(CLOSE_REFUSED.into(), b"server shutting down");
        return;
    }
    drive_connection(id, j.conn, j.channel, queue, send_limit, tx).await;
}

/// Writes `frame` within `limit`, counting its bytes.
async fn write(
    send: &mut SendStream,
    frame: &ToClient,
    limit: Duration,
    sent: &mut u64,
) -> Result<(), LinkError> {
    match tokio::time::timeout(limit, send_message(send, frame)).await {
        Ok(Ok(n)) => {
            *sent += n as u64;
            Ok(())
        }
        Ok(Err(e)) => Err(LinkError::SendFailed {
            detail: e.to_string(),
        }),
        Err(_) => Err(LinkError::SendTimedOut),
    }
}

/// Runs one registered connection: a reader task reports frames, this task writes what
/// the coordinator commands; after the terminal command (or when the main loop is gone)
/// the connection is closed and its byte counts reported.
async fn drive_connection(
    id: ConnectionId,
    conn: Connection,
    channel: Channel,
    mut queue: mpsc::UnboundedReceiver<Command>,
    send_limit: Duration,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    let mut sent = channel.bytes_sent();
    let received = Arc::new(AtomicU64::new(channel.bytes_received()));
    let max = channel.max_frame_len();
    let (mut send, mut recv) = channel.into_inner();
    let reader = {
        let (received, tx) = (Arc::clone(&received), tx.clone());
        tokio::spawn(async move {
            loop {
                match recv_message::<ToServer>(&mut recv, max).await {
                    Ok((frame, n)) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                        if tx
                            .send(Incoming::Input(Input::Frame { conn: id, frame }))
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(e) => {
                        let error = link_error(&e);
                        let _ = tx.send(Incoming::Input(Input::Broken { conn: id, error }));
                        break;
                    }
                }
            }
        })
    };
    // Whether every frame so far was written; after a failure nothing more is tried.
    let mut flushed = true;
    loop {
        let Some(command) = queue.recv().await else {
            conn.close(CLOSE_REFUSED.into(), b"server shutting down");
            break;
        };
        match command {
            Command::Send(frame) => {
                if flushed {
                    if let Err(error) = write(&mut send, &frame, send_limit, &mut sent).await {
                        flushed = false;
                        let _ = tx.send(Incoming::Input(Input::Broken { conn: id, error }));
                    }
                }
            }
            Command::Refuse(r) => {
                if flushed {
                    flushed = write(&mut send, &ToClient::Refused(r), REFUSAL_GRACE, &mut sent)
                        .await
                        .is_ok();
                }
                let _ = tokio::time::timeout(REFUSAL_GRACE, conn.closed()).await;
                conn.close(CLOSE_REFUSED.into(), b"refused");
                break;
            }
            Command::Close(reason) => {
                conn.close(CLOSE_REFUSED.into(), reason.as_bytes());
                break;
            }
            Command::Finish(summary) => {
                if flushed {
                    let frame = ToClient::Finished(summary);
                    flushed = write(&mut send, &frame, SUMMARY_SEND_LIMIT, &mut sent)
                        .await
                        .is_ok();
                }
                if flushed {
                    // The client closes the connection once it has read the summary.
                    let _ = tokio::time::timeout(SUMMARY_CLOSE_LIMIT, conn.closed()).await;
                }
                conn.close(CLOSE_DONE.into(), b"training finished");
                break;
            }
        }
    }
    reader.abort();
    let _ = reader.await;
    let traffic = Traffic {
        sent,
        received: received.load(Ordering::Relaxed),
    };
    let _ = tx.send(Incoming::Input(Input::Closed {
        conn: id,
        traffic,
        flushed,
    }));
}

/// A registered connection as the main loop sees it.
struct Link {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
}

/// Runs `f` on the coordinator in a blocking task and gives it back.
async fn blocking<F>(co: Coordinator, f: F) -> Result<Coordinator, ServerShellError>
where
    F: FnOnce(&mut Coordinator) + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut co = co;
        f(&mut co);
        co
    })
    .await
    .map_err(|e| ServerShellError::Worker(e.to_string()))
}

/// Logs a progress event.
fn log_event(e: &ServerEvent) {
    match e {
        ServerEvent::ClientJoined { name, incarnation } => {
            tracing::info!(client = %name, incarnation, "client registered");
        }
        ServerEvent::ClientLeft { name, reason } => {
            tracing::warn!(client = %name, reason = %reason, "client dropped");
        }
        ServerEvent::Refused { refusal } => {
            tracing::debug!(refusal = %refusal, "refused");
        }
        ServerEvent::TrainingStarted {
            clients,
            target_samples,
            max_sessions,
        } => {
            tracing::info!(clients, ?target_samples, ?max_sessions, "training started");
        }
        ServerEvent::SessionDone(log) => {
            tracing::info!(
                session = log.session,
                client = %log.name,
                completed = log.completed,
                note = log.note.as_deref().unwrap_or(""),
                "session ended"
            );
        }
        ServerEvent::Checkpoint(cp) => {
            tracing::debug!(sessions = cp.completed, "checkpoint ready to persist");
        }
    }
}

/// Carries out the coordinator's actions; returns true at [`Action::Finished`].
fn execute(
    co: &mut Coordinator,
    links: &mut HashMap<ConnectionId, Link>,
    events: Option<&mpsc::UnboundedSender<ServerEvent>>,
) -> bool {
    let mut finished = false;
    while let Some(action) = co.poll_action(Instant::now()) {
        let (conn, command, terminal) = match action {
            Action::Send { conn, frame } => {
                if let (ToClient::Message(ServerMessage::SessionStart(s)), Some(l)) =
                    (&frame, links.get(&conn))
                {
                    tracing::info!(
                        session = s.session,
                        client = %l.name,
                        iterations = s.iterations,
                        "session started"
                    );
                }
                (conn, Command::Send(frame), false)
            }
            Action::Refuse { conn, refusal } => {
                if let Some(l) = links.get(&conn) {
                    tracing::warn!(client = %l.name, refusal = %refusal, "connection refused");
                }
                (conn, Command::Refuse(refusal), true)
            }
            Action::Close { conn, reason } => (conn, Command::Close(reason), true),
            Action::Finish { conn, summary } => (conn, Command::Finish(summary), true),
            Action::Event(e) => {
                log_event(&e);
                if let Some(ev) = events {
                    let _ = ev.send(e);
                }
                continue;
            }
            Action::Finished => {
                finished = true;
                continue;
            }
            other => {
                tracing::debug!(action = ?other, "action not understood by this shell");
                continue;
            }
        };
        let queue = if terminal {
            links.remove(&conn).map(|l| l.commands)
        } else {
            links.get(&conn).map(|l| l.commands.clone())
        };
        if let Some(q) = queue {
            // A send error means the connection task is gone; its `Closed` input follows.
            let _ = q.send(command);
        }
    }
    finished
}

/// Runs training on `endpoint` (see the module docs) until the coordinator finishes, and
/// returns the role (with the trained model) and the training log. `events`, if given,
/// receives progress events.
///
/// # Errors
/// [`ServerShellError::Coordinator`] for a configuration the coordinator refuses (no
/// credentials, duplicate names, `wait_for` of 0 or above the number of credentials, a
/// stop rule that trains nothing), for clients that do not come (join timeout) or all
/// leave for longer than the rejoin timeout, and for failures of the role outside a
/// client's session; [`ServerShellError::Worker`] if a blocking task fails.
pub async fn run_server(
    server: Server,
    endpoint: Endpoint,
    config: ServerShellConfig,
    events: Option<mpsc::UnboundedSender<ServerEvent>>,
) -> Result<(Server, TrainingLog), ServerShellError> {
    run_server_with(
        server,
        endpoint,
        config,
        events,
        None,
        std::future::pending(),
    )
    .await
}

/// [`run_server`], continuing the run of `resume` if given ([`Coordinator::resume`]:
/// the clients of the checkpoint reconnect and training goes on after its last completed
/// session), and interrupted when `stop` completes (Ctrl-C, SIGTERM:
/// [`Coordinator::interrupt`], the training log comes back marked
/// [`TrainingLog::interrupted`]).
///
/// # Errors
/// As [`run_server`]; [`ServerShellError::Coordinator`] with
/// [`CoordinatorError::Checkpoint`] for a checkpoint of another run.
pub async fn run_server_with(
    server: Server,
    endpoint: Endpoint,
    config: ServerShellConfig,
    events: Option<mpsc::UnboundedSender<ServerEvent>>,
    resume: Option<&gelunet_server::Checkpoint>,
    stop: impl Future<Output = ()>,
) -> Result<(Server, TrainingLog), ServerShellError> {
    let names = config.credentials.iter().map(|c| c.name.clone()).collect();
    let coordinator = config.coordinator.clone();
    let mut co = match resume {
        Some(cp) => Coordinator::resume(server, coordinator, names, cp, Instant::now())?,
        None => Coordinator::new(server, coordinator, names, Instant::now())?,
    };
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    let ctx = Arc::new(AcceptCtx::new(
        config.credentials.clone(),
        co.hello(),
        config.transport.clone(),
        config.register_timeout,
        config.strangers,
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let acceptor = {
        let (ctx, tx) = (Arc::clone(&ctx), tx.clone());
        let send_limit = config.coordinator.response_timeout;
        let mut next = 0u64;
        tokio::spawn(accept_loop(
            endpoint.clone(),
            config.transport.clone(),
            config.strangers,
            move |pending| {
                let id = ConnectionId(next);
                next += 1;
                serve_training_connection(pending, id, Arc::clone(&ctx), send_limit, tx.clone())
            },
        ))
    };
    let mut links: HashMap<ConnectionId, Link> = HashMap::new();
    let mut waiting = false;
    let driven: Result<Coordinator, ServerShellError> = loop {
        if execute(&mut co, &mut links, events.as_ref()) {
            break Ok(co);
        }
        if co.is_waiting_for_rejoin() && !waiting {
            tracing::warn!(
                limit = ?co.config().rejoin_timeout,
                "no client connected; waiting for one to rejoin"
            );
        }
        waiting = co.is_waiting_for_rejoin();
        let deadline = co.poll_timeout();
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            m = rx.recv() => match m {
                Some(Incoming::Joined { conn, name, commands, input }) => {
                    links.insert(conn, Link { name, commands });
                    Step::Input(input)
                }
                Some(Incoming::Input(i)) => Step::Input(i),
                // Unreachable while `tx` lives; treated as a timer tick.
                None => Step::Timer,
            },
            () = timer => Step::Timer,
            () = &mut stop, if !stopped => {
                stopped = true;
                tracing::warn!("interrupted: stopping at once");
                Step::Interrupt
            }
        };
        co = match blocking(co, move |c| match input {
            Step::Input(i) => c.handle(Instant::now(), i),
            Step::Timer => c.handle_timeout(Instant::now()),
            Step::Interrupt => c.interrupt(Instant::now()),
        })
        .await
        {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
    };
    drop(tx);
    endpoint.close(CLOSE_DONE.into(), b"training finished");
    acceptor.abort();
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    let (role, outcome) = driven?.into_outcome();
    Ok((role, outcome?))
}

/// What the main loop of [`run_server_with`] feeds the coordinator next.
enum Step {
    Input(Input),
    Timer,
    Interrupt,
}

/// Configuration of [`run_inference_server`].
#[derive(Clone, Debug)]
pub struct InferenceShellConfig {
    /// QUIC settings.
    pub transport: TransportSettings,
    /// The clients allowed to query.
    pub credentials: Vec<Credential>,
    /// Longest wait for a client's next request.
    pub response_timeout: Duration,
    /// Longest time a new connection may take to register.
    pub register_timeout: Duration,
    /// Bounds on connections that have not authenticated.
    pub strangers: StrangerLimits,
    /// Stop after this many client connections have ended (`None`: serve forever).
    pub max_connections: Option<usize>,
}

/// What [`run_inference_server`] served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InferenceLog {
    /// Connections that registered and ended.
    pub connections: usize,
    /// Inference requests answered (one per layer and batch).
    pub requests: u64,
    /// Requests refused with an error report.
    pub refused_requests: u64,
    /// Bytes sent, all connections.
    pub bytes_sent: u64,
    /// Bytes received, all connections.
    pub bytes_received: u64,
}

/// One line, as `gelunet serve-model` prints it at the end: connections, requests
/// answered and refused, MiB sent and received.
impl std::fmt::Display for InferenceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} connections, {} requests answered, {} refused; {:.2} MiB sent, {:.2} MiB received",
            self.connections,
            self.requests,
            self.refused_requests,
            self.bytes_sent as f64 / 1048576.0,
            self.bytes_received as f64 / 1048576.0
        )
    }
}

/// Serves one registered inference client until it closes its stream.
async fn serve_inference(
    server: Arc<Server>,
    conn: Connection,
    mut channel: Channel,
    hello: ClientHello,
    response_timeout: Duration,
) -> (u64, u64, u64, u64) {
    let (mut answered, mut refused) = (0u64, 0u64);
    let key = {
        let s = Arc::clone(&server);
        tokio::task::spawn_blocking(move || s.inference_key(&hello)).await
    };
    let key = match key {
        Ok(Ok(k)) => Arc::new(k),
        Ok(Err(e)) => {
            let r = refusal(RefusalCode::Handshake, e.to_string());
            refuse(&conn, &mut channel, &r).await;
            return (0, 0, channel.bytes_sent(), channel.bytes_received());
        }
        Err(e) => {
            tracing::error!(error = %e, "inference worker failed");
            conn.close(CLOSE_REFUSED.into(), b"internal error");
            return (0, 0, channel.bytes_sent(), channel.bytes_received());
        }
    };
    let registered = ToClient::Registered {
        client: 0,
        incarnation: 0,
        batches: 0,
    };
    if channel.send(&registered).await.is_err() {
        return (0, 0, channel.bytes_sent(), channel.bytes_received());
    }
    // The connection's preprocessed layers (docs/DESIGN.md "Preprocessed inference").
    let mut held = Preparations::new();
    loop {
        let msg = match tokio::time::timeout(response_timeout, channel.recv::<ToServer>()).await {
            Ok(Ok(ToServer::Message(
                m @ (ClientMessage::Infer(_)
                | ClientMessage::InferPrepare(_)
                | ClientMessage::InferMasked(_)),
            ))) => m,
            Ok(Err(NetError::Closed | NetError::ConnectionLost(_))) => break,
            Ok(Ok(_)) => {
                let r = refusal(
                    RefusalCode::Protocol,
                    "only inference requests are served here",
                );
                refuse(&conn, &mut channel, &r).await;
                break;
            }
            Ok(Err(e)) => {
                let r = net_refusal(&e);
                refuse(&conn, &mut channel, &r).await;
                break;
            }
            Err(_) => {
                let r = refusal(RefusalCode::Timeout, "no request in time");
                refuse(&conn, &mut channel, &r).await;
                break;
            }
        };
        let (s, k) = (Arc::clone(&server), Arc::clone(&key));
        let work = tokio::task::spawn_blocking(move || {
            let answer = s.handle_inference(&k, &mut held, &msg);
            (answer, held)
        });
        let answer = match work.await {
            Ok((answer, back)) => {
                held = back;
                match answer {
                    Ok(resp) => {
                        answered += 1;
                        resp
                    }
                    Err(e) => {
                        refused += 1;
                        ServerMessage::Error(e.report(None))
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "inference worker failed");
                break;
            }
        };
        if channel.send(&ToClient::Message(answer)).await.is_err() {
            break;
        }
    }
    conn.close(CLOSE_DONE.into(), b"done");
    (
        answered,
        refused,
        channel.bytes_sent(),
        channel.bytes_received(),
    )
}

/// Serves encrypted inference (paper Alg. 1 with the trained model, [`Server::infer`]) on
/// `endpoint`: clients register as for training (name, token, `ClientHello`, checked with
/// [`Server::inference_key`]) and then send `Infer` requests, each answered with
/// `Inferred` (or an error report), until they close their stream. Connections are served
/// concurrently.
///
/// # Errors
/// [`ServerShellError::Config`] for an empty credential list.
pub async fn run_inference_server(
    server: Arc<Server>,
    endpoint: Endpoint,
    config: InferenceShellConfig,
) -> Result<InferenceLog, ServerShellError> {
    if config.credentials.is_empty() {
        return Err(ServerShellError::Config("no client credentials".into()));
    }
    let ctx = Arc::new(AcceptCtx::new(
        config.credentials.clone(),
        server.hello(),
        config.transport.clone(),
        config.register_timeout,
        config.strangers,
    ));
    let unregistered = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (tx, mut rx) = mpsc::channel::<Joined>(64);
    let acceptor = {
        let (ctx, unregistered) = (Arc::clone(&ctx), Arc::clone(&unregistered));
        tokio::spawn(accept_loop(
            endpoint.clone(),
            config.transport.clone(),
            config.strangers,
            move |pending| {
                let (ctx, unregistered, tx) =
                    (Arc::clone(&ctx), Arc::clone(&unregistered), tx.clone());
                async move {
                    let Some((conn, slot)) = pending.connect().await else {
                        return;
                    };
                    let outcome = handshake(conn, &ctx).await;
                    drop(slot);
                    match outcome {
                        Handshake::Joined(j) => {
                            if let Err(mpsc::error::SendError(j)) = tx.send(j).await {
                                j.conn.close(CLOSE_REFUSED.into(), b"server shutting down");
                            }
                        }
                        Handshake::Refused { traffic, .. } => {
                            unregistered.0.fetch_add(traffic.sent, Ordering::Relaxed);
                            unregistered
                                .1
                                .fetch_add(traffic.received, Ordering::Relaxed);
                        }
                        Handshake::NoStream => {}
                    }
                }
            },
        ))
    };
    let mut log = InferenceLog::default();
    let mut running = tokio::task::JoinSet::new();
    loop {
        if config.max_connections.is_some_and(|m| log.connections >= m) {
            break;
        }
        tokio::select! {
            j = rx.recv() => match j {
                Some(j) => {
                    tracing::info!(client = %j.register.name, "inference client registered");
                    running.spawn(serve_inference(
                        Arc::clone(&server),
                        j.conn,
                        j.channel,
                        j.hello,
                        config.response_timeout,
                    ));
                }
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                log.connections += 1;
                if let Ok((answered, refused, sent, received)) = done {
                    log.requests += answered;
                    log.refused_requests += refused;
                    log.bytes_sent += sent;
                    log.bytes_received += received;
                }
            }
        }
    }
    endpoint.close(CLOSE_DONE.into(), b"done");
    acceptor.abort();
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    log.bytes_sent += unregistered.0.load(Ordering::Relaxed);
    log.bytes_received += unregistered.1.load(Ordering::Relaxed);
    Ok(log)
}
