//! The server's QUIC shell: the [`Server`] role behind a QUIC endpoint.
//!
//! * Clients connect with the pinned server certificate (see `gelunet_net`), open one
//!   bidirectional stream and register with a name and a token
//!   ([`Register`]); the token is compared in constant time
//!   ([`gelunet_net::tokens_equal`]). An unknown name or a wrong token is answered with a
//!   typed [`Refusal`] ([`RefusalCode::Unauthenticated`]) before the connection closes.
//! * After the protocol handshake (`ServerHello` / `ClientHello`) the client is registered
//!   with the role. The server waits for [`ServerShellConfig::wait_for`] clients
//!   (registered in the order of [`ServerShellConfig::credentials`], so that client
//!   indices, and with them the schedule, do not depend on who connects first), then runs
//!   sessions in the order the role's scheduler picks.
//! * The role's handlers are synchronous and CPU-heavy: they run in
//!   `tokio::task::spawn_blocking`, so the runtime keeps serving keep-alives and
//!   accepting connections meanwhile.
//! * A client that disconnects, times out or sends garbage in a session costs the model
//!   nothing: the session is abandoned ([`Server::abandon_session`], back to `w^I`) and the
//!   server goes on with the remaining clients. A session scheduled for a client that is
//!   not connected is abandoned at once. A known client can reconnect (same name, token
//!   and public key) and is scheduled again; each registration is an *incarnation*
//!   (the client re-seeds its mini-batch sampler at every handshake, which the training
//!   log records for reproductions).
//! * Training stops after [`ServerShellConfig::epochs`] epochs (an epoch: as many samples
//!   processed in completed sessions as the registered clients hold together) or
//!   [`ServerShellConfig::max_sessions`] completed sessions; every connected client gets
//!   [`ToClient::Finished`] with a [`Summary`].
//!
//! Bytes are counted per client (frames with their length prefixes) and for connections
//! that never registered.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gelunet_net::quinn::{Connection, Endpoint};
use gelunet_net::{tokens_equal, Channel, NetError, TransportSettings, Zeroizing};
use gelunet_paillier::BigUint;
use gelunet_protocol::envelope::{
    ReferenceHint, Refusal, RefusalCode, Register, Summary, ToClient, ToServer, SHELL_VERSION,
};
use gelunet_protocol::messages::{Abort, ClientHello, ClientMessage, ServerHello, ServerMessage};
use tokio::sync::mpsc;

use gelunet_server::{ClientId, Server, ServerError};

/// QUIC application close code: normal end.
const CLOSE_DONE: u32 = 0;
/// QUIC application close code: refused or dropped by the server.
const CLOSE_REFUSED: u32 = 1;

/// A client the server accepts: its name and secret token.
#[derive(Clone)]
pub struct Credential {
    /// The client's name.
    pub name: String,
    /// The client's token.
    pub token: Zeroizing<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The shell's configuration.
#[derive(Clone, Debug)]
pub struct ServerShellConfig {
    /// QUIC settings (frame size limit, windows, idle timeout, keep-alive).
    pub transport: TransportSettings,
    /// The clients allowed to register, in registration order.
    pub credentials: Vec<Credential>,
    /// Clients to wait for before the first session (at most `credentials.len()`).
    pub wait_for: usize,
    /// Register clients in the order of `credentials` (deterministic client indices).
    pub ordered_registration: bool,
    /// Stop after this many epochs (default when neither limit is set: 1).
    pub epochs: Option<f64>,
    /// Stop after this many completed sessions.
    pub max_sessions: Option<u64>,
    /// Longest wait for one client message in a session.
    pub response_timeout: Duration,
    /// Longest time a new connection may take to register.
    pub register_timeout: Duration,
    /// Longest wait for the first `wait_for` clients (`None`: forever).
    pub join_timeout: Option<Duration>,
    /// Longest wait for a client to (re)join when none is connected.
    pub rejoin_timeout: Duration,
}

impl ServerShellConfig {
    /// A configuration for `credentials` with default timeouts, waiting for all of them,
    /// one epoch.
    pub fn new(credentials: Vec<Credential>, transport: TransportSettings) -> Self {
        Self {
            wait_for: credentials.len(),
            credentials,
            transport,
            ordered_registration: true,
            epochs: Some(1.0),
            max_sessions: None,
            response_timeout: Duration::from_secs(600),
            register_timeout: Duration::from_secs(60),
            join_timeout: None,
            rejoin_timeout: Duration::from_secs(120),
        }
    }
}

/// What the shell reports while it runs (for progress displays and logs).
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    /// A client registered (incarnation 0) or re-registered.
    ClientJoined {
        /// Name.
        name: String,
        /// Registrations before this one.
        incarnation: u32,
    },
    /// A client was dropped.
    ClientLeft {
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A connection was refused.
    Refused {
        /// The refusal sent.
        refusal: Refusal,
    },
    /// The first session is about to start.
    TrainingStarted {
        /// Registered clients.
        clients: usize,
        /// Samples to process (epochs × samples held), if training is epoch-bound.
        target_samples: Option<u64>,
        /// Sessions to complete, if training is session-bound.
        max_sessions: Option<u64>,
    },
    /// A session ended.
    SessionDone(SessionLog),
}

/// Why training stops, if it does: `completed ≥ max_sessions` completed sessions, or
/// `samples ≥ target` samples processed in completed sessions (the epoch target,
/// `⌈epochs × samples held⌉`); `None` to go on. The rule of [`run_server`], shared with
/// replays of its schedule.
pub fn stop_reason(
    max_sessions: Option<u64>,
    completed: u64,
    target: Option<u64>,
    samples: u64,
) -> Option<String> {
    if let Some(m) = max_sessions {
        if completed >= m {
            return Some(format!("{m} sessions completed"));
        }
    }
    if let Some(t) = target {
        if samples >= t {
            return Some(format!("{t} samples processed"));
        }
    }
    None
}

/// One session as it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionLog {
    /// Session id.
    pub session: u64,
    /// Client index in the role.
    pub client: usize,
    /// Client name.
    pub name: String,
    /// The client's incarnation (registrations before the current one).
    pub incarnation: u32,
    /// Iterations planned.
    pub iterations: u32,
    /// Whether Alg. 5 was applied (false: abandoned, model rolled back).
    pub completed: bool,
    /// Why it was abandoned.
    pub note: Option<String>,
    /// Completed sessions so far (this one included).
    pub sessions_completed: u64,
    /// Samples processed in completed sessions so far.
    pub samples: u64,
    /// Wall time of the session.
    pub elapsed: Duration,
}

/// One registered client over the whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientLog {
    /// Name.
    pub name: String,
    /// Index in the role.
    pub id: usize,
    /// Training samples it declared.
    pub samples: u64,
    /// Its reproduction hint, if it sent one.
    pub reference: Option<ReferenceHint>,
    /// Registrations (1 + reconnections).
    pub registrations: u32,
    /// Sessions completed.
    pub sessions: u64,
    /// Sessions abandoned (including those scheduled while it was away).
    pub abandoned: u64,
    /// Bytes the server sent to it.
    pub bytes_sent: u64,
    /// Bytes the server received from it.
    pub bytes_received: u64,
    /// Still connected at the end.
    pub connected_at_end: bool,
}

/// The record of a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingLog {
    /// Every registered client, by index.
    pub clients: Vec<ClientLog>,
    /// Every session, in order.
    pub sessions: Vec<SessionLog>,
    /// Completed sessions.
    pub sessions_completed: u64,
    /// Samples processed in completed sessions.
    pub samples: u64,
    /// Samples the registered clients hold together.
    pub samples_held: u64,
    /// Epochs completed (`samples / samples_held`).
    pub epochs: f64,
    /// Bytes sent by the server, all connections.
    pub bytes_sent: u64,
    /// Bytes received by the server, all connections.
    pub bytes_received: u64,
    /// Wall time from the first session to the last.
    pub training_time: Duration,
    /// Why training stopped.
    pub stop_reason: String,
}

/// Everything that can stop the server's shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerShellError {
    /// A transport error of the endpoint.
    #[error("transport: {0}")]
    Net(#[from] NetError),
    /// The role failed outside a client's session (e.g. starting a session).
    #[error("server role: {0}")]
    Role(#[from] ServerError),
    /// No client to train with.
    #[error("no clients: {0}")]
    NoClients(String),
    /// A bad shell configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The role's blocking task failed.
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

struct AcceptCtx {
    credentials: Vec<Credential>,
    hello: ServerHello,
    transport: TransportSettings,
    register_timeout: Duration,
    unregistered_sent: AtomicU64,
    unregistered_received: AtomicU64,
    events: Option<mpsc::UnboundedSender<ServerEvent>>,
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

/// Sends a refusal, waits briefly for the peer to close, then closes.
async fn refuse(conn: &Connection, channel: &mut Channel, r: &Refusal) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        channel.send(&ToClient::Refused(r.clone())),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(CLOSE_REFUSED.into(), b"refused");
}

async fn authenticate(
    channel: &mut Channel,
    ctx: &AcceptCtx,
) -> Result<(Register, ClientHello), Refusal> {
    let first: ToServer = channel.recv().await.map_err(|e| net_refusal(&e))?;
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
    match channel
        .recv::<ToServer>()
        .await
        .map_err(|e| net_refusal(&e))?
    {
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

/// Registration of one connection; refused connections are answered and closed here.
async fn handshake(conn: Connection, ctx: Arc<AcceptCtx>, tx: mpsc::Sender<Joined>) {
    let remote = conn.remote_address();
    let limit = ctx.register_timeout;
    let mut channel = match tokio::time::timeout(
        limit,
        Channel::accept(&conn, ctx.transport.max_frame_len),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "no stream opened");
            conn.close(CLOSE_REFUSED.into(), b"no stream");
            return;
        }
        Err(_) => {
            conn.close(CLOSE_REFUSED.into(), b"registration timeout");
            return;
        }
    };
    let outcome = tokio::time::timeout(limit, authenticate(&mut channel, &ctx))
        .await
        .unwrap_or_else(|_| {
            Err(refusal(
                RefusalCode::Timeout,
                format!("no registration within {limit:?}"),
            ))
        });
    match outcome {
        Ok((register, hello)) => {
            let joined = Joined {
                register,
                hello,
                conn,
                channel,
            };
            if let Err(mpsc::error::SendError(j)) = tx.send(joined).await {
                j.conn.close(CLOSE_REFUSED.into(), b"server shutting down");
            }
        }
        Err(r) => {
            tracing::warn!(%remote, refusal = %r, "connection refused");
            refuse(&conn, &mut channel, &r).await;
            ctx.unregistered_sent
                .fetch_add(channel.bytes_sent(), Ordering::Relaxed);
            ctx.unregistered_received
                .fetch_add(channel.bytes_received(), Ordering::Relaxed);
            if let Some(ev) = &ctx.events {
                let _ = ev.send(ServerEvent::Refused { refusal: r });
            }
        }
    }
}

async fn accept_loop(endpoint: Endpoint, ctx: Arc<AcceptCtx>, tx: mpsc::Sender<Joined>) {
    loop {
        match gelunet_net::accept(&endpoint, &ctx.transport).await {
            Ok(conn) => {
                tokio::spawn(handshake(conn, Arc::clone(&ctx), tx.clone()));
            }
            Err(NetError::EndpointClosed) => break,
            Err(e) => tracing::debug!(error = %e, "incoming connection failed"),
        }
    }
}

struct Peer {
    conn: Connection,
    channel: Channel,
}

struct Known {
    log: ClientLog,
    key_n: BigUint,
}

/// Runs `f` on the role in a blocking task and puts the role back.
async fn blocking<T, F>(role: &mut Option<Server>, f: F) -> Result<T, ServerShellError>
where
    T: Send + 'static,
    F: FnOnce(&mut Server) -> T + Send + 'static,
{
    let mut server = role
        .take()
        .ok_or_else(|| ServerShellError::Worker("server role lost".into()))?;
    let (server, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut server);
        (server, out)
    })
    .await
    .map_err(|e| ServerShellError::Worker(e.to_string()))?;
    *role = Some(server);
    Ok(out)
}

struct Coordinator {
    role: Option<Server>,
    config: ServerShellConfig,
    events: Option<mpsc::UnboundedSender<ServerEvent>>,
    rx: mpsc::Receiver<Joined>,
    rx_open: bool,
    pending: VecDeque<Joined>,
    known: Vec<Known>,
    peers: HashMap<usize, Peer>,
    sessions: Vec<SessionLog>,
    completed: u64,
    samples: u64,
}

impl Coordinator {
    fn emit(&self, e: ServerEvent) {
        if let Some(ev) = &self.events {
            let _ = ev.send(e);
        }
    }

    fn role(&mut self) -> Result<&mut Server, ServerShellError> {
        self.role
            .as_mut()
            .ok_or_else(|| ServerShellError::Worker("server role lost".into()))
    }

    fn known_index(&self, name: &str) -> Option<usize> {
        self.known.iter().position(|k| k.log.name == name)
    }

    /// Whether a join may be processed now (ordered registration).
    fn admissible(&self, name: &str) -> bool {
        if !self.config.ordered_registration || self.known_index(name).is_some() {
            return true;
        }
        let Some(pos) = self.config.credentials.iter().position(|c| c.name == name) else {
            return true;
        };
        self.config.credentials[..pos]
            .iter()
            .all(|c| self.known_index(&c.name).is_some())
    }

    fn drop_peer(&mut self, id: usize, reason: &str) {
        if let Some(mut p) = self.peers.remove(&id) {
            p.conn.close(CLOSE_REFUSED.into(), reason.as_bytes());
            self.account(id, &mut p.channel);
            let name = self.known[id].log.name.clone();
            tracing::warn!(client = %name, reason, "client dropped");
            self.emit(ServerEvent::ClientLeft {
                name,
                reason: reason.into(),
            });
        }
    }

    fn account(&mut self, id: usize, channel: &mut Channel) {
        let log = &mut self.known[id].log;
        log.bytes_sent += channel.bytes_sent();
        log.bytes_received += channel.bytes_received();
    }

    /// Receives joins without blocking.
    fn drain(&mut self) {
        while let Ok(j) = self.rx.try_recv() {
            self.pending.push_back(j);
        }
    }

    /// Waits for one join (or `limit`). Returns false on timeout.
    async fn wait_join(&mut self, limit: Option<Duration>) -> bool {
        if !self.rx_open {
            return false;
        }
        let got = match limit {
            Some(l) => tokio::time::timeout(l, self.rx.recv()).await.ok().flatten(),
            None => self.rx.recv().await,
        };
        match got {
            Some(j) => {
                self.pending.push_back(j);
                true
            }
            None => false,
        }
    }

    /// Processes every admissible pending join.
    async fn process_joins(&mut self) -> Result<(), ServerShellError> {
        loop {
            let Some(pos) = self
                .pending
                .iter()
                .position(|j| self.admissible(&j.register.name))
            else {
                return Ok(());
            };
            let Some(j) = self.pending.remove(pos) else {
                return Ok(());
            };
            self.admit(j).await?;
        }
    }

    async fn admit(&mut self, j: Joined) -> Result<(), ServerShellError> {
        let Joined {
            register,
            hello,
            conn,
            mut channel,
        } = j;
        let name = register.name.clone();
        let (id, incarnation) = match self.known_index(&name) {
            Some(id) => {
                if self.known[id].key_n != hello.client_key.n {
                    let r = refusal(
                        RefusalCode::KeyMismatch,
                        format!(
                            "client `{name}` registered another public key before; \
                             reconnect with the same key pair"
                        ),
                    );
                    refuse(&conn, &mut channel, &r).await;
                    self.emit(ServerEvent::Refused { refusal: r });
                    return Ok(());
                }
                self.drop_peer(id, "superseded by a new connection");
                let log = &mut self.known[id].log;
                log.registrations += 1;
                log.samples = register.samples;
                log.reference = register.reference;
                (id, log.registrations - 1)
            }
            None => {
                let h = hello.clone();
                match blocking(&mut self.role, move |s| s.register_client(&h)).await? {
                    Ok(ClientId(id)) => {
                        if id != self.known.len() {
                            return Err(ServerShellError::Worker(format!(
                                "role gave client index {id}, expected {}",
                                self.known.len()
                            )));
                        }
                        self.known.push(Known {
                            key_n: hello.client_key.n.clone(),
                            log: ClientLog {
                                name: name.clone(),
                                id,
                                samples: register.samples,
                                reference: register.reference,
                                registrations: 1,
                                sessions: 0,
                                abandoned: 0,
                                bytes_sent: 0,
                                bytes_received: 0,
                                connected_at_end: false,
                            },
                        });
                        (id, 0)
                    }
                    Err(e) => {
                        let code = match e {
                            ServerError::RegistrationClosed => RefusalCode::RegistrationClosed,
                            _ => RefusalCode::Handshake,
                        };
                        let r = refusal(code, format!("client `{name}`: {e}"));
                        refuse(&conn, &mut channel, &r).await;
                        self.emit(ServerEvent::Refused { refusal: r });
                        return Ok(());
                    }
                }
            }
        };
        let sent = tokio::time::timeout(
            self.config.response_timeout,
            channel.send(&ToClient::Registered {
                client: id as u32,
                incarnation,
            }),
        )
        .await;
        self.peers.insert(id, Peer { conn, channel });
        if !matches!(sent, Ok(Ok(_))) {
            self.drop_peer(id, "lost during registration");
            return Ok(());
        }
        tracing::info!(client = %name, id, incarnation, "client registered");
        self.emit(ServerEvent::ClientJoined { name, incarnation });
        Ok(())
    }

    fn abandon(&mut self) {
        if let Some(r) = self.role.as_mut() {
            r.abandon_session();
        }
    }

    /// Runs one session with a connected client. Returns `Ok(None)` when completed, or
    /// `Ok(Some(note))` when abandoned.
    async fn run_session(
        &mut self,
        id: usize,
        session: u64,
        start: ServerMessage,
    ) -> Result<Option<String>, ServerShellError> {
        let name = self.known[id].log.name.clone();
        let limit = self.config.response_timeout;
        let mut out = ToClient::Message(start);
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                self.abandon();
                return Ok(Some("client not connected".into()));
            };
            match tokio::time::timeout(limit, peer.channel.send(&out)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.abandon();
                    self.drop_peer(id, &format!("send failed: {e}"));
                    return Ok(Some(format!("send failed: {e}")));
                }
                Err(_) => {
                    self.abandon();
                    self.drop_peer(id, "send timed out");
                    return Ok(Some("send timed out".into()));
                }
            }
            // Wait for the answer; joins arriving meanwhile are queued, and a new
            // connection of this very client ends the session at once.
            let got: Option<Result<ToServer, NetError>> = {
                let recv = peer.channel.recv::<ToServer>();
                tokio::pin!(recv);
                let sleep = tokio::time::sleep(limit);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        r = &mut recv => break Some(r),
                        () = &mut sleep => break None,
                        j = self.rx.recv(), if self.rx_open => match j {
                            Some(j) => {
                                let same = j.register.name == name;
                                self.pending.push_back(j);
                                if same {
                                    break Some(Err(NetError::Closed));
                                }
                            }
                            None => self.rx_open = false,
                        },
                    }
                }
            };
            let msg = match got {
                None => {
                    self.abandon();
                    if let Some(p) = self.peers.get_mut(&id) {
                        let r =
                            refusal(RefusalCode::Timeout, format!("no answer within {limit:?}"));
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            p.channel.send(&ToClient::Refused(r)),
                        )
                        .await;
                    }
                    self.drop_peer(id, "timed out");
                    return Ok(Some("client timed out".into()));
                }
                Some(Err(e)) => {
                    self.abandon();
                    if let (NetError::Malformed { .. } | NetError::FrameTooLarge { .. }, Some(p)) =
                        (&e, self.peers.get_mut(&id))
                    {
                        let r = net_refusal(&e);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            p.channel.send(&ToClient::Refused(r)),
                        )
                        .await;
                    }
                    let note = format!("connection: {e}");
                    self.drop_peer(id, &note);
                    return Ok(Some(note));
                }
                Some(Ok(ToServer::Register(_))) => {
                    self.abandon();
                    let note = "Register in the middle of a session".to_string();
                    self.drop_peer(id, &note);
                    return Ok(Some(note));
                }
                Some(Ok(ToServer::Message(m))) => m,
            };
            let cid = ClientId(id);
            let answer = blocking(&mut self.role, move |s| s.handle(cid, &msg)).await?;
            match answer {
                Ok(Some(reply)) => {
                    let end = matches!(reply, ServerMessage::SessionEnd(_));
                    out = ToClient::Message(reply);
                    if end {
                        let sent = match self.peers.get_mut(&id) {
                            Some(p) => tokio::time::timeout(limit, p.channel.send(&out))
                                .await
                                .is_ok_and(|r| r.is_ok()),
                            None => false,
                        };
                        if !sent {
                            self.drop_peer(id, "lost after the final update");
                        }
                        return Ok(None);
                    }
                }
                Ok(None) => {
                    // The client aborted or reported an error.
                    let still = self.role()?.active_session().is_some();
                    if still {
                        self.abandon();
                        self.send_abort(id, session, "the client reported an error")
                            .await;
                    }
                    return Ok(Some("aborted by the client".into()));
                }
                Err(e) => {
                    tracing::warn!(client = %name, error = %e, "message refused; session abandoned");
                    self.abandon();
                    if let Some(p) = self.peers.get_mut(&id) {
                        let report = ServerMessage::Error(e.report(Some(session)));
                        let _ =
                            tokio::time::timeout(limit, p.channel.send(&ToClient::Message(report)))
                                .await;
                    }
                    self.send_abort(id, session, "invalid message").await;
                    return Ok(Some(format!("invalid message: {e}")));
                }
            }
        }
    }

    async fn send_abort(&mut self, id: usize, session: u64, reason: &str) {
        let limit = self.config.response_timeout;
        let ok = match self.peers.get_mut(&id) {
            Some(p) => {
                let abort = ToClient::Message(ServerMessage::Abort(Abort {
                    session,
                    reason: reason.into(),
                }));
                tokio::time::timeout(limit, p.channel.send(&abort))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
            None => true,
        };
        if !ok {
            self.drop_peer(id, "lost while aborting");
        }
    }

    fn stop_reason(&self, target: Option<u64>) -> Option<String> {
        stop_reason(
            self.config.max_sessions,
            self.completed,
            target,
            self.samples,
        )
    }

    async fn train(&mut self) -> Result<(Duration, String, u64), ServerShellError> {
        let wait_for = self.config.wait_for;
        let deadline = self.config.join_timeout.map(|t| Instant::now() + t);
        while self.known.len() < wait_for {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.wait_join(left).await {
                return Err(ServerShellError::NoClients(format!(
                    "{} of {wait_for} clients registered in time",
                    self.known.len()
                )));
            }
            self.process_joins().await?;
        }
        let held: u64 = self.known.iter().map(|k| k.log.samples).sum();
        let epochs = match (self.config.epochs, self.config.max_sessions) {
            (None, None) => Some(1.0),
            (e, _) => e,
        };
        let target = epochs.map(|e| (e * held as f64).ceil() as u64);
        self.emit(ServerEvent::TrainingStarted {
            clients: self.known.len(),
            target_samples: target,
            max_sessions: self.config.max_sessions,
        });
        let batch = self.role()?.config().batch_size as u64;
        let t0 = Instant::now();
        let mut skipped_in_a_row = 0usize;
        let reason = loop {
            self.drain();
            self.process_joins().await?;
            if let Some(r) = self.stop_reason(target) {
                break r;
            }
            if self.peers.is_empty() {
                let limit = self.config.rejoin_timeout;
                tracing::warn!(?limit, "no client connected; waiting for one to rejoin");
                if !self.wait_join(Some(limit)).await {
                    return Err(ServerShellError::NoClients(format!(
                        "every client left and none rejoined within {limit:?}"
                    )));
                }
                continue;
            }
            let (cid, start) = blocking(&mut self.role, |s| s.start_session()).await??;
            let id = cid.0;
            let (session, iterations) = match &start {
                ServerMessage::SessionStart(s) => (s.session, s.iterations),
                other => {
                    return Err(ServerShellError::Worker(format!(
                        "start_session gave {}",
                        other.kind()
                    )))
                }
            };
            let ts = Instant::now();
            let note = if self.peers.contains_key(&id) {
                skipped_in_a_row = 0;
                tracing::info!(
                    session,
                    client = %self.known[id].log.name,
                    iterations,
                    "session started"
                );
                self.run_session(id, session, start).await?
            } else {
                self.abandon();
                skipped_in_a_row += 1;
                if skipped_in_a_row > 1000 * self.known.len().max(1) {
                    return Err(ServerShellError::NoClients(
                        "the scheduler keeps picking absent clients".into(),
                    ));
                }
                Some("client not connected".into())
            };
            let completed = note.is_none();
            let k = &mut self.known[id].log;
            if completed {
                k.sessions += 1;
                self.completed += 1;
                self.samples += u64::from(iterations) * batch;
            } else {
                k.abandoned += 1;
            }
            let log = SessionLog {
                session,
                client: id,
                name: k.name.clone(),
                incarnation: k.registrations.saturating_sub(1),
                iterations,
                completed,
                note,
                sessions_completed: self.completed,
                samples: self.samples,
                elapsed: ts.elapsed(),
            };
            tracing::info!(
                session,
                client = %log.name,
                completed,
                note = log.note.as_deref().unwrap_or(""),
                "session ended"
            );
            self.sessions.push(log.clone());
            self.emit(ServerEvent::SessionDone(log));
        };
        Ok((t0.elapsed(), reason, held))
    }

    async fn finish(&mut self, summary: &Summary) {
        let ids: Vec<usize> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(mut p) = self.peers.remove(&id) {
                let s = Summary {
                    your_sessions: self.known[id].log.sessions,
                    ..summary.clone()
                };
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    p.channel.send(&ToClient::Finished(s)),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if sent {
                    // The client closes the connection once it has read the summary.
                    let _ = tokio::time::timeout(Duration::from_secs(5), p.conn.closed()).await;
                }
                p.conn.close(CLOSE_DONE.into(), b"training finished");
                self.account(id, &mut p.channel);
                self.known[id].log.connected_at_end = sent;
            }
        }
        // Joins still queued: tell them training is over.
        self.drain();
        while let Some(mut j) = self.pending.pop_front() {
            let r = refusal(RefusalCode::ShuttingDown, "training is over");
            refuse(&j.conn, &mut j.channel, &r).await;
        }
    }
}

/// Runs training on `endpoint` (see the module docs) until the stop condition, and returns
/// the role (with the trained model) and the training log. `events`, if given, receives
/// progress events.
///
/// # Errors
/// [`ServerShellError::Config`] for an empty credential list or `wait_for` of 0 or above
/// the number of credentials; [`ServerShellError::NoClients`] when clients do not come
/// (join timeout) or all leave for longer than the rejoin timeout;
/// [`ServerShellError::Role`] / [`ServerShellError::Worker`] for failures of the role
/// outside a client's session.
pub async fn run_server(
    server: Server,
    endpoint: Endpoint,
    config: ServerShellConfig,
    events: Option<mpsc::UnboundedSender<ServerEvent>>,
) -> Result<(Server, TrainingLog), ServerShellError> {
    if config.credentials.is_empty() {
        return Err(ServerShellError::Config("no client credentials".into()));
    }
    if config.wait_for == 0 || config.wait_for > config.credentials.len() {
        return Err(ServerShellError::Config(format!(
            "waiting for {} clients with {} credentials",
            config.wait_for,
            config.credentials.len()
        )));
    }
    let mut names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ServerShellError::Config("duplicate client names".into()));
    }
    let ctx = Arc::new(AcceptCtx {
        credentials: config.credentials.clone(),
        hello: server.hello(),
        transport: config.transport.clone(),
        register_timeout: config.register_timeout,
        unregistered_sent: AtomicU64::new(0),
        unregistered_received: AtomicU64::new(0),
        events: events.clone(),
    });
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&ctx), tx));
    let mut co = Coordinator {
        role: Some(server),
        config,
        events,
        rx,
        rx_open: true,
        pending: VecDeque::new(),
        known: Vec::new(),
        peers: HashMap::new(),
        sessions: Vec::new(),
        completed: 0,
        samples: 0,
    };
    let trained = co.train().await;
    let (training_time, stop_reason, held) = match &trained {
        Ok(t) => t.clone(),
        Err(e) => (Duration::ZERO, e.to_string(), 0),
    };
    let epochs = if held > 0 {
        co.samples as f64 / held as f64
    } else {
        0.0
    };
    let summary = Summary {
        sessions: co.completed,
        your_sessions: 0,
        abandoned: co.sessions.iter().filter(|s| !s.completed).count() as u64,
        samples: co.samples,
        epochs,
        reason: stop_reason.clone(),
    };
    co.finish(&summary).await;
    endpoint.close(CLOSE_DONE.into(), b"training finished");
    acceptor.abort();
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    trained?;
    let clients: Vec<ClientLog> = co.known.iter().map(|k| k.log.clone()).collect();
    let bytes_sent = clients.iter().map(|c| c.bytes_sent).sum::<u64>()
        + ctx.unregistered_sent.load(Ordering::Relaxed);
    let bytes_received = clients.iter().map(|c| c.bytes_received).sum::<u64>()
        + ctx.unregistered_received.load(Ordering::Relaxed);
    let role = co
        .role
        .take()
        .ok_or_else(|| ServerShellError::Worker("server role lost".into()))?;
    Ok((
        role,
        TrainingLog {
            clients,
            sessions: std::mem::take(&mut co.sessions),
            sessions_completed: co.completed,
            samples: co.samples,
            samples_held: held,
            epochs,
            bytes_sent,
            bytes_received,
            training_time,
            stop_reason,
        },
    ))
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
    };
    if channel.send(&registered).await.is_err() {
        return (0, 0, channel.bytes_sent(), channel.bytes_received());
    }
    loop {
        let msg = match tokio::time::timeout(response_timeout, channel.recv::<ToServer>()).await {
            Ok(Ok(ToServer::Message(ClientMessage::Infer(req)))) => req,
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
        let answer = match tokio::task::spawn_blocking(move || s.infer(&k, &msg)).await {
            Ok(Ok(resp)) => {
                answered += 1;
                ServerMessage::Inferred(resp)
            }
            Ok(Err(e)) => {
                refused += 1;
                ServerMessage::Error(e.report(None))
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
    let ctx = Arc::new(AcceptCtx {
        credentials: config.credentials.clone(),
        hello: server.hello(),
        transport: config.transport.clone(),
        register_timeout: config.register_timeout,
        unregistered_sent: AtomicU64::new(0),
        unregistered_received: AtomicU64::new(0),
        events: None,
    });
    let (tx, mut rx) = mpsc::channel::<Joined>(64);
    let acceptor = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&ctx), tx));
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
    log.bytes_sent += ctx.unregistered_sent.load(Ordering::Relaxed);
    log.bytes_received += ctx.unregistered_received.load(Ordering::Relaxed);
    Ok(log)
}
