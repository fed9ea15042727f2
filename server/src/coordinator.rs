//! The server's coordinator: the policy around the [`Server`] role, as a state machine
//! with no I/O and no clock of its own, in the style of `quinn-proto`'s `Endpoint`.
//!
//! The driver (the QUIC shell `gelunet_shell::server`, or an in-memory test harness)
//! authenticates connections, moves frames ([`gelunet_protocol::envelope`]) and keeps
//! the timers; every decision is taken here:
//!
//! * **Inputs** ([`Input`], each with the current [`Instant`] passed to
//!   [`Coordinator::handle`]): a connection passed authentication and sent its
//!   `ClientHello`; a frame arrived on a connection; a connection broke (lost, malformed
//!   frame, failed write); a connection is closed for good, with its byte counts; a
//!   connection was refused by the driver before it registered. And
//!   [`Coordinator::handle_timeout`] when the deadline of [`Coordinator::poll_timeout`]
//!   has passed.
//! * **Outputs** ([`Action`], from [`Coordinator::poll_action`], taken at the time they
//!   are carried out, which arms the response timeout): send a frame on a
//!   connection; refuse (send a [`Refusal`], then close) or close a connection; send the
//!   end-of-training [`Summary`] and close; a progress [`ServerEvent`]; and finally
//!   [`Action::Finished`], after which [`Coordinator::into_outcome`] gives the role back
//!   with the [`TrainingLog`].
//!
//! Connection ids ([`ConnectionId`]) are opaque numbers chosen by the driver. Every
//! connection the coordinator learns of ([`Input::Joined`]) ends with exactly one
//! terminal action ([`Action::Refuse`], [`Action::Close`] or [`Action::Finish`]) and the
//! driver answers it, once the connection is gone, with [`Input::Closed`]; training is
//! finished when every connection has been closed that way.
//!
//! The role's handlers are synchronous and CPU-heavy ([`Server::handle`],
//! [`Server::register_client`], [`Server::start_session`] run inside
//! [`Coordinator::handle`]); a driver on an async runtime moves the coordinator into a
//! blocking task for each call, so that its transport keeps running meanwhile.
//!
//! # Policy (docs/DESIGN.md "Sessions and the d_max bound", "Wire protocol and processes")
//!
//! * Clients register in the order of the configured names when
//!   [`CoordinatorConfig::ordered_registration`] is set (client indices, and with them the
//!   schedule, do not depend on who connects first): a client whose predecessors have not
//!   registered waits in a queue. The coordinator waits for
//!   [`CoordinatorConfig::wait_for`] clients (at most
//!   [`CoordinatorConfig::join_timeout`]) before the first session.
//! * A known client may reconnect: the same public key is accepted (a new *incarnation*;
//!   the client re-seeds its mini-batch sampler at every handshake), another key is
//!   refused with [`RefusalCode::KeyMismatch`]. A new connection of the client of the
//!   running session ends that session at once.
//! * Sessions run in the order of the role's scheduler. A session scheduled for a client
//!   that is not connected is abandoned at once; after `1000·K` such sessions in a row
//!   ([`CoordinatorConfig::absent_skips_per_client`]) the coordinator gives up ([`CoordinatorError::AbsentClients`]). With no client
//!   connected it waits at most [`CoordinatorConfig::rejoin_timeout`] for one to
//!   (re)join.
//! * A client that does not answer within [`CoordinatorConfig::response_timeout`], breaks
//!   its connection, aborts, reports an error or sends an invalid message costs the
//!   model nothing: the session is abandoned ([`Server::abandon_session`], back to
//!   `w^I`) and training goes on with the others.
//! * Training stops by the [`StopRule`] (epochs or completed sessions, whichever first);
//!   every connected client gets [`ToClient::Finished`] with a [`Summary`], queued
//!   registrations are refused with [`RefusalCode::ShuttingDown`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use gelunet_paillier::BigUint;
use gelunet_protocol::envelope::{
    ReferenceHint, Refusal, RefusalCode, Summary, ToClient, ToServer,
};
use gelunet_protocol::messages::{Abort, ClientHello, ClientMessage, ServerHello, ServerMessage};

use crate::checkpoint::{Checkpoint, CheckpointError, ClientRecord, RolePart, RunFingerprint};
use crate::error::ServerError;
use crate::role::{ClientId, Server};
use crate::stop::StopRule;

/// A connection, numbered by the driver (opaque to the coordinator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Bytes a connection carried, frames with their length prefixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    /// Bytes the server sent.
    pub sent: u64,
    /// Bytes the server received.
    pub received: u64,
}

impl Traffic {
    fn add(&mut self, other: Traffic) {
        self.sent += other.sent;
        self.received += other.received;
    }
}

/// Why a connection can no longer be used ([`Input::Broken`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer sent a frame that does not decode or exceeds the size limit; the
    /// coordinator answers with a [`RefusalCode::Protocol`] refusal carrying `detail`.
    Malformed {
        /// What was wrong with the frame (no secrets).
        detail: String,
    },
    /// The stream or connection ended (closed, lost, truncated, reset).
    Lost {
        /// How.
        detail: String,
    },
    /// Writing a frame failed.
    SendFailed {
        /// How.
        detail: String,
    },
    /// Writing a frame did not complete in time (the peer does not read).
    SendTimedOut,
}

/// What the driver tells the coordinator ([`Coordinator::handle`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// Connection `conn` passed authentication (name and token checked by the driver,
    /// in constant time), received the role's [`ServerHello`] and answered with its
    /// `ClientHello`. From now on the coordinator owns the connection's fate.
    Joined {
        /// The new connection.
        conn: ConnectionId,
        /// The client's authenticated name.
        name: String,
        /// Training samples the client declared (epoch accounting).
        samples: u64,
        /// Its reproduction hint, if it sent one.
        reference: Option<ReferenceHint>,
        /// Its protocol hello (public key).
        hello: ClientHello,
    },
    /// A frame arrived on `conn`.
    Frame {
        /// The connection.
        conn: ConnectionId,
        /// The frame.
        frame: ToServer,
    },
    /// `conn` can no longer be read or written. The coordinator answers with a terminal
    /// action for it (if it had not already).
    Broken {
        /// The connection.
        conn: ConnectionId,
        /// Why.
        error: LinkError,
    },
    /// `conn` is closed for good (after its terminal action, or on its own); its last
    /// event.
    Closed {
        /// The connection.
        conn: ConnectionId,
        /// What it carried over its whole life (registration frames included).
        traffic: Traffic,
        /// Whether every frame queued for it was written (for [`Action::Finish`]: the
        /// summary reached the client).
        flushed: bool,
    },
    /// The driver refused a connection before it registered (bad version, unknown name,
    /// wrong token, malformed or late registration).
    Refused {
        /// The refusal sent.
        refusal: Refusal,
        /// What the connection carried.
        traffic: Traffic,
    },
}

/// What the coordinator asks the driver to do ([`Coordinator::poll_action`]), in order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Write `frame` on `conn`.
    Send {
        /// The connection.
        conn: ConnectionId,
        /// The frame.
        frame: ToClient,
    },
    /// Write [`ToClient::Refused`] with `refusal` on `conn` (after the frames queued
    /// before), let the peer close, then close it. Terminal.
    Refuse {
        /// The connection.
        conn: ConnectionId,
        /// The refusal.
        refusal: Refusal,
    },
    /// Close `conn` at once (QUIC close reason `reason`). Terminal.
    Close {
        /// The connection.
        conn: ConnectionId,
        /// Why (no secrets).
        reason: String,
    },
    /// Write [`ToClient::Finished`] with `summary` on `conn`, let the client close, then
    /// close it. Terminal.
    Finish {
        /// The connection.
        conn: ConnectionId,
        /// The summary for this client.
        summary: Summary,
    },
    /// A progress event.
    Event(ServerEvent),
    /// Training is over and every connection is closed: stop the driver and take the
    /// outcome with [`Coordinator::into_outcome`].
    Finished,
}

/// What the coordinator reports while it runs (for progress displays and logs).
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
    /// After every completed session (only with
    /// [`CoordinatorConfig::checkpoint_events`]): the whole state to persist
    /// ([`Checkpoint`]; under protocol v2 the masked state only, no true weight; no
    /// secret key under either protocol).
    Checkpoint(Box<Checkpoint>),
}

/// One session as it ran.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Time of the session, by the driver's clock.
    pub elapsed: Duration,
}

/// One registered client over the whole run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Mini-batches of its completed sessions (the sum of their iterations), sent to the
    /// client at every registration (`ToClient::Registered`).
    pub batches: u64,
    /// Sessions abandoned (including those scheduled while it was away).
    pub abandoned: u64,
    /// Bytes the server sent to it.
    pub bytes_sent: u64,
    /// Bytes the server received from it.
    pub bytes_received: u64,
    /// Still connected at the end (the summary reached it).
    pub connected_at_end: bool,
}

impl ClientLog {
    /// The record of a client at its first registration: one registration, no session,
    /// no traffic yet, not (yet) connected at the end.
    #[must_use]
    pub fn registered(
        name: String,
        id: usize,
        samples: u64,
        reference: Option<ReferenceHint>,
    ) -> Self {
        Self {
            name,
            id,
            samples,
            reference,
            registrations: 1,
            sessions: 0,
            batches: 0,
            abandoned: 0,
            bytes_sent: 0,
            bytes_received: 0,
            connected_at_end: false,
        }
    }
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
    /// Samples the registered clients hold together (at the start of training).
    pub samples_held: u64,
    /// Epochs completed (`samples / samples_held`).
    pub epochs: f64,
    /// Bytes sent by the server, all connections (refused ones included).
    pub bytes_sent: u64,
    /// Bytes received by the server, all connections.
    pub bytes_received: u64,
    /// Time from the first session to the stop, by the driver's clock.
    pub training_time: Duration,
    /// Why training stopped.
    pub stop_reason: String,
    /// Training was interrupted ([`Coordinator::interrupt`]) before its stop rule said
    /// stop: the log is partial and the run can be resumed from its last checkpoint.
    pub interrupted: bool,
}

/// The coordinator's policy (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// Clients to wait for before the first session (1 ..= the number of names).
    pub wait_for: usize,
    /// Register clients in the order of the names given to [`Coordinator::new`].
    pub ordered_registration: bool,
    /// Stop after this many epochs ([`StopRule`]; neither limit set: one epoch).
    pub epochs: Option<f64>,
    /// Stop after this many completed sessions ([`StopRule`]).
    pub max_sessions: Option<u64>,
    /// Longest wait for one client message in a session.
    pub response_timeout: Duration,
    /// Longest wait for the first `wait_for` clients (`None`: forever).
    pub join_timeout: Option<Duration>,
    /// Longest wait for a client to (re)join when none is connected.
    pub rejoin_timeout: Duration,
    /// Give up ([`CoordinatorError::AbsentClients`]) after more than
    /// `absent_skips_per_client × K` sessions in a row scheduled for clients that are not
    /// connected (`K` registered clients; default 1000). A session for a connected client
    /// resets the count.
    pub absent_skips_per_client: usize,
    /// Admit clients that send a [`ReferenceHint`] (the insecure reproducible mode: their
    /// masks derive from a public seed). Default false: such a client is refused
    /// ([`RefusalCode::Handshake`]) and the server never holds masks it could know.
    pub accept_reference_hints: bool,
    /// Emit [`ServerEvent::Checkpoint`] after every completed session, for a driver that
    /// persists the state (default false).
    pub checkpoint_events: bool,
}

impl CoordinatorConfig {
    /// The defaults for `clients` configured clients: wait for all of them (forever),
    /// ordered registration, one epoch, 600 s response timeout, 120 s rejoin timeout.
    pub fn new(clients: usize) -> Self {
        Self {
            wait_for: clients,
            ordered_registration: true,
            epochs: Some(1.0),
            max_sessions: None,
            response_timeout: Duration::from_secs(600),
            join_timeout: None,
            rejoin_timeout: Duration::from_secs(120),
            absent_skips_per_client: 1000,
            accept_reference_hints: false,
            checkpoint_events: false,
        }
    }
}

/// Everything that stops training, or a coordinator that cannot start.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// An unusable configuration (no names, duplicate names, `wait_for` out of range,
    /// a stop rule that trains nothing, a role with clients already registered).
    #[error("configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint that cannot be resumed ([`Coordinator::resume`]).
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The role failed outside a client's session (e.g. starting a session).
    #[error("server role: {0}")]
    Role(#[from] ServerError),
    /// Fewer than `wait_for` clients registered within the join timeout.
    #[error("no clients: {registered} of {wait_for} clients registered within {limit:?}")]
    JoinTimeout {
        /// Clients registered.
        registered: usize,
        /// Clients waited for.
        wait_for: usize,
        /// The join timeout.
        limit: Duration,
    },
    /// Every client left and none rejoined within the rejoin timeout.
    #[error("no clients: every client left and none rejoined within {limit:?}")]
    RejoinTimeout {
        /// The rejoin timeout.
        limit: Duration,
    },
    /// The scheduler kept picking clients that are not connected.
    #[error("no clients: the scheduler picked an absent client {skipped} times in a row")]
    AbsentClients {
        /// Sessions skipped in a row.
        skipped: usize,
    },
    /// The role broke an assumption of the coordinator (a bug).
    #[error("inconsistent server role: {reason}")]
    Inconsistent {
        /// Which assumption.
        reason: String,
    },
    /// [`Coordinator::into_outcome`] before [`Action::Finished`].
    #[error("training has not finished")]
    Unfinished,
}

/// A registered client.
#[derive(Debug)]
struct Known {
    log: ClientLog,
    key_n: BigUint,
}

/// A connection that joined and waits for its turn to register.
#[derive(Debug)]
struct Pending {
    conn: ConnectionId,
    name: String,
    samples: u64,
    reference: Option<ReferenceHint>,
    hello: ClientHello,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    /// In the registration queue.
    Pending,
    /// The current connection of a registered client.
    Peer,
    /// Terminal action emitted; waiting for [`Input::Closed`].
    Closing,
    /// [`Action::Finish`] emitted; waiting for [`Input::Closed`].
    Finishing,
}

#[derive(Debug)]
struct Conn {
    client: Option<usize>,
    state: ConnState,
}

/// The session in progress.
#[derive(Clone, Copy, Debug)]
struct Running {
    client: usize,
    session: u64,
    iterations: u32,
    started: Instant,
    /// The connection the session's messages go to (`None`: the client is not
    /// connected and the session is skipped).
    conn: Option<ConnectionId>,
    /// When the client's answer is due: armed when the driver takes the message
    /// ([`Coordinator::poll_action`]), so the role's work does not eat into it.
    deadline: Option<Instant>,
}

/// How a dropped client's connection is ended.
enum Farewell {
    Close,
    Refuse(Refusal),
    /// Already closed by the driver.
    Gone,
}

/// Protocol v2's release at the end of training: which client was asked, until when, and
/// who failed already.
#[derive(Debug)]
struct Releasing {
    reason: String,
    asked: Option<(usize, ConnectionId)>,
    deadline: Option<Instant>,
    tried: Vec<usize>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the first `wait_for` clients.
    Joining,
    /// Running sessions.
    Training,
    /// Stopped; waiting for every connection to close.
    Finishing {
        /// Training time and stop reason, or the error that stopped training.
        outcome: Result<(Duration, String), CoordinatorError>,
        /// Samples held (0 on error).
        held: u64,
        /// Epochs completed (0 on error).
        epochs: f64,
    },
    /// Done.
    Finished {
        outcome: Result<TrainingLog, CoordinatorError>,
    },
}

/// The coordinator (see the module docs).
#[derive(Debug)]
pub struct Coordinator {
    role: Server,
    config: CoordinatorConfig,
    stop: StopRule,
    names: Vec<String>,
    batch: u64,
    phase: Phase,
    join_deadline: Option<Instant>,
    rejoin_deadline: Option<Instant>,
    known: Vec<Known>,
    /// Connected clients: index → connection (ordered, for a deterministic finish).
    peers: BTreeMap<usize, ConnectionId>,
    /// Protocol v2: the release of the trained model, once training stopped.
    releasing: Option<Releasing>,
    conns: HashMap<ConnectionId, Conn>,
    pending: VecDeque<Pending>,
    running: Option<Running>,
    sessions: Vec<SessionLog>,
    completed: u64,
    samples: u64,
    held: u64,
    training_started: Option<Instant>,
    skipped_in_a_row: usize,
    unregistered: Traffic,
    actions: VecDeque<Action>,
    /// Resumed from a checkpoint: the first session waits for `wait_for` *connected*
    /// clients (they are registered already).
    resumed: bool,
    /// Training time of the run before the resume.
    earlier_training: Duration,
    /// [`Coordinator::interrupt`] was called.
    interrupted: bool,
}

impl Coordinator {
    /// A coordinator for `role` (no client registered yet) and the clients `names`, in
    /// registration order; `now` starts the join timeout.
    ///
    /// # Errors
    /// [`CoordinatorError::Config`] for an empty or duplicate name list, a `wait_for` of
    /// 0 or above the number of names, limits [`StopRule::new`] refuses, or a role that
    /// already has registered clients.
    pub fn new(
        role: Server,
        config: CoordinatorConfig,
        names: Vec<String>,
        now: Instant,
    ) -> Result<Self, CoordinatorError> {
        if role.num_clients() != 0 {
            return Err(CoordinatorError::Config {
                reason: format!(
                    "the server role already has {} registered clients",
                    role.num_clients()
                ),
            });
        }
        let mut co = Self::build(role, config, names, now)?;
        co.advance(now);
        Ok(co)
    }

    /// Checks the names and `wait_for` and builds a coordinator in its first phase.
    fn build(
        role: Server,
        config: CoordinatorConfig,
        names: Vec<String>,
        now: Instant,
    ) -> Result<Self, CoordinatorError> {
        let config_err = |reason: String| CoordinatorError::Config { reason };
        if names.is_empty() {
            return Err(config_err("no client credentials".into()));
        }
        if config.wait_for == 0 || config.wait_for > names.len() {
            return Err(config_err(format!(
                "waiting for {} clients with {} credentials",
                config.wait_for,
                names.len()
            )));
        }
        let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(config_err("duplicate client names".into()));
        }
        let stop = StopRule::new(config.epochs, config.max_sessions)
            .map_err(|e| config_err(e.to_string()))?;
        let batch = role.config().batch_size as u64;
        Ok(Self {
            join_deadline: config.join_timeout.map(|t| now + t),
            role,
            config,
            stop,
            names,
            batch,
            phase: Phase::Joining,
            rejoin_deadline: None,
            known: Vec::new(),
            peers: BTreeMap::new(),
            releasing: None,
            conns: HashMap::new(),
            pending: VecDeque::new(),
            running: None,
            sessions: Vec::new(),
            completed: 0,
            samples: 0,
            held: 0,
            training_started: None,
            skipped_in_a_row: 0,
            unregistered: Traffic::default(),
            actions: VecDeque::new(),
            resumed: false,
            earlier_training: Duration::ZERO,
            interrupted: false,
        })
    }

    /// A coordinator that continues the run of `cp` (docs/DESIGN.md "Checkpoint and
    /// resume"): `role` is a fresh [`Server`] of the same configuration
    /// ([`Server::restore`] applies the checkpoint), `names` the configured clients (a
    /// superset of the checkpoint's). Every client of the checkpoint is registered
    /// already; it reconnects with the same public key, gets its index and the
    /// mini-batches it drew so far in `Registered`, and training continues once
    /// `wait_for` of them (at most all of them) are connected again, with the session
    /// after the last completed one: in the insecure reproducible mode the model ends
    /// exactly as in an uninterrupted run.
    ///
    /// # Errors
    /// As [`Coordinator::new`]; [`CoordinatorError::Checkpoint`] for a checkpoint of
    /// another configuration, with a client not among `names`, or inconsistent.
    pub fn resume(
        mut role: Server,
        config: CoordinatorConfig,
        names: Vec<String>,
        cp: &Checkpoint,
        now: Instant,
    ) -> Result<Self, CoordinatorError> {
        for (i, c) in cp.clients.iter().enumerate() {
            if !names.contains(&c.log.name) {
                return Err(CheckpointError::UnknownClient {
                    name: c.log.name.clone(),
                }
                .into());
            }
            if c.log.id != i {
                return Err(CheckpointError::Inconsistent {
                    reason: format!("client `{}` has index {} at {i}", c.log.name, c.log.id),
                }
                .into());
            }
        }
        if cp.completed != cp.sessions.iter().filter(|s| s.completed).count() as u64 {
            return Err(CheckpointError::Inconsistent {
                reason: "the session log does not match the completed sessions".into(),
            }
            .into());
        }
        role.restore(cp)?;
        let mut co = Self::build(role, config, names, now)?;
        co.known = cp
            .clients
            .iter()
            .map(|c| Known {
                log: ClientLog {
                    connected_at_end: false,
                    ..c.log.clone()
                },
                key_n: c.key.n.clone(),
            })
            .collect();
        co.sessions = cp.sessions.clone();
        co.completed = cp.completed;
        co.samples = cp.samples;
        co.held = cp.held;
        co.unregistered = cp.unregistered;
        co.earlier_training = cp.training_time;
        co.resumed = true;
        co.advance(now);
        Ok(co)
    }

    /// The whole state to persist ([`Checkpoint`]), between sessions only (`None` during
    /// one). The driver gets one after every completed session with
    /// [`CoordinatorConfig::checkpoint_events`].
    pub fn checkpoint(&self, now: Instant) -> Option<Checkpoint> {
        if self.running.is_some() {
            return None;
        }
        let RolePart {
            model,
            sessions_started,
            scheduler_clients,
            next_session,
            rng_word_pos,
        } = self.role.role_checkpoint()?;
        Some(Checkpoint {
            fingerprint: RunFingerprint::of(&self.role),
            model,
            sessions_started,
            scheduler_clients,
            next_session,
            rng_word_pos,
            clients: self
                .known
                .iter()
                .map(|k| ClientRecord {
                    log: k.log.clone(),
                    key: gelunet_protocol::messages::PublicModulus { n: k.key_n.clone() },
                })
                .collect(),
            sessions: self.sessions.clone(),
            completed: self.completed,
            samples: self.samples,
            held: self.held,
            training_time: self.training_time(now),
            unregistered: self.unregistered,
        })
    }

    /// Training time so far (before a resume included).
    fn training_time(&self, now: Instant) -> Duration {
        self.earlier_training
            + self
                .training_started
                .map_or(Duration::ZERO, |t0| now.saturating_duration_since(t0))
    }

    /// Stops at once at `now` (Ctrl-C, SIGTERM: the next safe point): a running session
    /// is abandoned (the model goes back to its state before it, which the last
    /// checkpoint holds), every client's connection is closed (not finished: the clients
    /// try to reconnect, to a server resumed from the checkpoint), queued registrations
    /// are refused. The outcome is a partial [`TrainingLog`] ([`TrainingLog::interrupted`];
    /// under protocol v2 no model is released). No effect once training has stopped.
    pub fn interrupt(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Finishing { .. } | Phase::Finished { .. }) {
            return;
        }
        self.interrupted = true;
        if let Some(r) = self.running.take() {
            self.role.abandon_session();
            self.end_session(now, r, Some("the server was interrupted".into()));
        }
        self.releasing = None;
        let peers: Vec<usize> = self.peers.keys().copied().collect();
        for id in peers {
            self.drop_peer(id, "the server was interrupted", Farewell::Close);
        }
        self.finish(now, Ok("interrupted".into()));
        self.advance(now);
    }

    /// The role's hello, for the driver's `Welcome` frame.
    pub fn hello(&self) -> ServerHello {
        self.role.hello()
    }

    /// The role (e.g. its model between sessions).
    pub fn role(&self) -> &Server {
        &self.role
    }

    /// The policy.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The sessions so far, in order.
    pub fn sessions(&self) -> &[SessionLog] {
        &self.sessions
    }

    /// Whether [`Action::Finished`] has been emitted.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    /// Whether the coordinator waits for a client to (re)join because none is connected
    /// (the rejoin timeout runs).
    pub fn is_waiting_for_rejoin(&self) -> bool {
        self.rejoin_deadline.is_some()
    }

    /// The next action for the driver, if any, taken at time `now` (as `quinn-proto`'s
    /// `poll_transmit`): a session message to the running session's client arms the
    /// response timeout from `now`, the moment it goes out.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        let action = self.actions.pop_front()?;
        if let (Action::Send { conn, .. }, Some(r)) = (&action, self.running.as_mut()) {
            if Some(*conn) == r.conn && r.deadline.is_none() {
                r.deadline = Some(now + self.config.response_timeout);
            }
        }
        Some(action)
    }

    /// The earliest deadline (join, rejoin or response timeout) at which
    /// [`Coordinator::handle_timeout`] must be called; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Joining => self.join_deadline,
            Phase::Training => match (&self.running, &self.releasing) {
                (Some(r), _) => r.deadline,
                (None, Some(rel)) => rel.deadline,
                (None, None) => self.rejoin_deadline,
            },
            Phase::Finishing { .. } | Phase::Finished { .. } => None,
        }
    }

    /// Handles one input at time `now` (see [`Input`]); the answers are queued for
    /// [`Coordinator::poll_action`]. Runs the role's handlers (CPU-heavy).
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Joined {
                conn,
                name,
                samples,
                reference,
                hello,
            } => self.on_joined(
                now,
                Pending {
                    conn,
                    name,
                    samples,
                    reference,
                    hello,
                },
            ),
            Input::Frame { conn, frame } => self.on_frame(now, conn, frame),
            Input::Broken { conn, error } => self.on_broken(now, conn, &error),
            Input::Closed {
                conn,
                traffic,
                flushed,
            } => self.on_closed(now, conn, traffic, flushed),
            Input::Refused { refusal, traffic } => {
                self.unregistered.add(traffic);
                self.event(ServerEvent::Refused { refusal });
            }
        }
        self.advance(now);
    }

    /// Fires every timer whose deadline is at or before `now`: the join timeout, the
    /// rejoin timeout, the response timeout of the running session.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Joining => {
                if let (Some(d), Some(limit)) = (self.join_deadline, self.config.join_timeout) {
                    if now >= d {
                        self.fail(
                            now,
                            CoordinatorError::JoinTimeout {
                                registered: self.known.len(),
                                wait_for: self.config.wait_for,
                                limit,
                            },
                        );
                    }
                }
            }
            Phase::Training if self.releasing.is_some() => {
                let late = self
                    .releasing
                    .as_ref()
                    .filter(|r| r.deadline.is_some_and(|d| now >= d))
                    .and_then(|r| r.asked);
                if let Some((id, _)) = late {
                    self.drop_peer(
                        id,
                        "no release within the response timeout",
                        Farewell::Close,
                    );
                    self.ask_release(now);
                }
            }
            Phase::Training => {
                if let Some(r) = self
                    .running
                    .filter(|r| r.deadline.is_some_and(|d| now >= d))
                {
                    self.running = None;
                    self.role.abandon_session();
                    let limit = self.config.response_timeout;
                    let refusal = Refusal {
                        code: RefusalCode::Timeout,
                        detail: format!("no answer within {limit:?}"),
                    };
                    self.drop_peer(r.client, "timed out", Farewell::Refuse(refusal));
                    self.end_session(now, r, Some("client timed out".into()));
                } else if self.running.is_none()
                    && self.peers.is_empty()
                    && self.rejoin_deadline.is_some_and(|d| now >= d)
                {
                    self.fail(
                        now,
                        CoordinatorError::RejoinTimeout {
                            limit: self.config.rejoin_timeout,
                        },
                    );
                }
            }
            Phase::Finishing { .. } | Phase::Finished { .. } => {}
        }
        self.advance(now);
    }

    /// The role (with the trained model) and the training log, once
    /// [`Action::Finished`] has been emitted.
    ///
    /// # Errors
    /// The error that stopped training ([`CoordinatorError::JoinTimeout`],
    /// [`CoordinatorError::RejoinTimeout`], [`CoordinatorError::AbsentClients`],
    /// [`CoordinatorError::Role`], [`CoordinatorError::Inconsistent`]), or
    /// [`CoordinatorError::Unfinished`] before the end.
    pub fn into_outcome(self) -> (Server, Result<TrainingLog, CoordinatorError>) {
        let outcome = match self.phase {
            Phase::Finished { outcome } => outcome,
            _ => Err(CoordinatorError::Unfinished),
        };
        (self.role, outcome)
    }

    fn event(&mut self, e: ServerEvent) {
        self.actions.push_back(Action::Event(e));
    }

    fn send(&mut self, conn: ConnectionId, frame: ToClient) {
        self.actions.push_back(Action::Send { conn, frame });
    }

    fn known_index(&self, name: &str) -> Option<usize> {
        self.known.iter().position(|k| k.log.name == name)
    }

    /// Whether a join may be processed now (ordered registration).
    fn admissible(&self, name: &str) -> bool {
        if !self.config.ordered_registration || self.known_index(name).is_some() {
            return true;
        }
        let Some(pos) = self.names.iter().position(|n| n == name) else {
            return true;
        };
        self.names[..pos]
            .iter()
            .all(|n| self.known_index(n).is_some())
    }

    /// Refuses a connection that is not (or no longer) a client's current one.
    fn refuse(&mut self, conn: ConnectionId, code: RefusalCode, detail: String) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Closing;
        }
        let refusal = Refusal { code, detail };
        self.actions.push_back(Action::Refuse {
            conn,
            refusal: refusal.clone(),
        });
        self.event(ServerEvent::Refused { refusal });
    }

    /// Ends client `id`'s current connection, if it has one.
    fn drop_peer(&mut self, id: usize, reason: &str, how: Farewell) {
        let Some(conn) = self.peers.remove(&id) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Closing;
        }
        match how {
            Farewell::Close => self.actions.push_back(Action::Close {
                conn,
                reason: reason.into(),
            }),
            Farewell::Refuse(refusal) => self.actions.push_back(Action::Refuse { conn, refusal }),
            Farewell::Gone => {}
        }
        let name = self.known[id].log.name.clone();
        self.event(ServerEvent::ClientLeft {
            name,
            reason: reason.into(),
        });
    }

    /// Abandons the running session of client `id`, if any, dropping its connection
    /// with `reason` first; `note` goes to the session log.
    fn abandon_with_drop(&mut self, now: Instant, id: usize, reason: &str, how: Farewell) {
        match self.running.filter(|r| r.client == id) {
            Some(r) => {
                self.running = None;
                self.role.abandon_session();
                self.drop_peer(id, reason, how);
                self.end_session(now, r, Some(reason.into()));
            }
            None => self.drop_peer(id, reason, how),
        }
    }

    fn end_session(&mut self, now: Instant, r: Running, note: Option<String>) {
        let completed = note.is_none();
        let k = &mut self.known[r.client].log;
        if completed {
            k.sessions += 1;
            k.batches += u64::from(r.iterations);
            self.completed += 1;
            self.samples += u64::from(r.iterations) * self.batch;
        } else {
            k.abandoned += 1;
        }
        let log = SessionLog {
            session: r.session,
            client: r.client,
            name: k.name.clone(),
            incarnation: k.registrations.saturating_sub(1),
            iterations: r.iterations,
            completed,
            note,
            sessions_completed: self.completed,
            samples: self.samples,
            elapsed: now.saturating_duration_since(r.started),
        };
        self.sessions.push(log.clone());
        self.event(ServerEvent::SessionDone(log));
        if completed && self.config.checkpoint_events {
            if let Some(cp) = self.checkpoint(now) {
                self.event(ServerEvent::Checkpoint(Box::new(cp)));
            }
        }
    }

    fn on_joined(&mut self, now: Instant, j: Pending) {
        if self.conns.contains_key(&j.conn) {
            // A driver bug: a connection id used twice. The first one stays.
            return;
        }
        if matches!(self.phase, Phase::Finishing { .. } | Phase::Finished { .. }) {
            self.conns.insert(
                j.conn,
                Conn {
                    client: None,
                    state: ConnState::Closing,
                },
            );
            self.refuse(j.conn, RefusalCode::ShuttingDown, "training is over".into());
            return;
        }
        if j.reference.is_some() && !self.config.accept_reference_hints {
            self.conns.insert(
                j.conn,
                Conn {
                    client: None,
                    state: ConnState::Closing,
                },
            );
            self.refuse(
                j.conn,
                RefusalCode::Handshake,
                "this server does not accept clients in the insecure reproducible mode (their \
                 masks would be known to the server); start the server with \
                 --insecure-reproducible, or join without it"
                    .into(),
            );
            return;
        }
        self.rejoin_deadline = None;
        self.conns.insert(
            j.conn,
            Conn {
                client: None,
                state: ConnState::Pending,
            },
        );
        // A new connection of the running session's client ends the session at once.
        if let Some(r) = self.running {
            if self.known[r.client].log.name == j.name {
                self.abandon_with_drop(
                    now,
                    r.client,
                    "superseded by a new connection",
                    Farewell::Close,
                );
            }
        }
        self.pending.push_back(j);
    }

    fn on_frame(&mut self, now: Instant, conn: ConnectionId, frame: ToServer) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let id = match (c.state, c.client) {
            (ConnState::Peer, Some(id)) => id,
            (ConnState::Pending, _) => {
                self.pending.retain(|p| p.conn != conn);
                self.refuse(
                    conn,
                    RefusalCode::Protocol,
                    "a frame before Registered".into(),
                );
                return;
            }
            _ => return,
        };
        let in_session = self.running.is_some_and(|r| r.client == id);
        match frame {
            ToServer::Register(_) => self.abandon_with_drop(
                now,
                id,
                "Register in the middle of a session",
                Farewell::Close,
            ),
            ToServer::Release(r) => self.on_release(now, id, conn, &r),
            ToServer::Message(m) if in_session => self.session_message(now, id, conn, &m),
            // A report outside a session (e.g. the client refused a SessionEnd) needs no
            // answer.
            ToServer::Message(ClientMessage::Error(_)) => {}
            ToServer::Message(m) => {
                let detail = format!("{} outside the client's session", m.kind());
                let refusal = Refusal {
                    code: RefusalCode::Protocol,
                    detail: detail.clone(),
                };
                self.drop_peer(id, &detail, Farewell::Refuse(refusal));
            }
        }
    }

    /// A message of the running session's client.
    fn session_message(&mut self, now: Instant, id: usize, conn: ConnectionId, m: &ClientMessage) {
        let Some(r) = self.running else {
            return;
        };
        match self.role.handle(ClientId(id), m) {
            Ok(Some(reply)) => {
                let end = matches!(reply, ServerMessage::SessionEnd(_));
                self.send(conn, ToClient::Message(reply));
                if end {
                    self.running = None;
                    self.end_session(now, r, None);
                } else if let Some(r) = self.running.as_mut() {
                    r.deadline = None;
                }
            }
            Ok(None) => {
                // The client aborted (the role abandoned the session) or reported an error.
                self.running = None;
                if self.role.active_session().is_some() {
                    self.role.abandon_session();
                    self.send(conn, abort(r.session, "the client reported an error"));
                }
                self.end_session(now, r, Some("aborted by the client".into()));
            }
            Err(e) => {
                self.running = None;
                self.role.abandon_session();
                self.send(
                    conn,
                    ToClient::Message(ServerMessage::Error(e.report(Some(r.session)))),
                );
                self.send(conn, abort(r.session, "invalid message"));
                self.end_session(now, r, Some(format!("invalid message: {e}")));
            }
        }
    }

    fn on_broken(&mut self, now: Instant, conn: ConnectionId, error: &LinkError) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match (c.state, c.client) {
            (ConnState::Pending, _) => {
                self.pending.retain(|p| p.conn != conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.state = ConnState::Closing;
                }
                self.actions.push_back(Action::Close {
                    conn,
                    reason: "lost during registration".into(),
                });
            }
            (ConnState::Peer, Some(id)) => {
                let (note, how) = match error {
                    LinkError::Malformed { detail } => (
                        format!("connection: {detail}"),
                        Farewell::Refuse(Refusal {
                            code: RefusalCode::Protocol,
                            detail: detail.clone(),
                        }),
                    ),
                    LinkError::Lost { detail } => {
                        (format!("connection: {detail}"), Farewell::Close)
                    }
                    LinkError::SendFailed { detail } => {
                        (format!("send failed: {detail}"), Farewell::Close)
                    }
                    LinkError::SendTimedOut => ("send timed out".into(), Farewell::Close),
                };
                self.abandon_with_drop(now, id, &note, how);
            }
            _ => {}
        }
    }

    fn on_closed(&mut self, now: Instant, conn: ConnectionId, traffic: Traffic, flushed: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            self.unregistered.add(traffic);
            return;
        };
        match c.client {
            Some(id) => {
                let log = &mut self.known[id].log;
                log.bytes_sent += traffic.sent;
                log.bytes_received += traffic.received;
                if c.state == ConnState::Finishing {
                    log.connected_at_end = flushed;
                }
            }
            None => self.unregistered.add(traffic),
        }
        match (c.state, c.client) {
            (ConnState::Pending, _) => self.pending.retain(|p| p.conn != conn),
            (ConnState::Peer, Some(id)) => {
                self.abandon_with_drop(now, id, "connection closed", Farewell::Gone);
            }
            _ => {}
        }
    }

    /// Processes every admissible queued join (only between sessions).
    fn process_joins(&mut self) -> Result<(), CoordinatorError> {
        while let Some(pos) = self.pending.iter().position(|j| self.admissible(&j.name)) {
            let Some(j) = self.pending.remove(pos) else {
                break;
            };
            self.admit(j)?;
        }
        Ok(())
    }

    fn admit(&mut self, j: Pending) -> Result<(), CoordinatorError> {
        let Pending {
            conn,
            name,
            samples,
            reference,
            hello,
        } = j;
        let (id, incarnation, batches) = match self.known_index(&name) {
            Some(id) => {
                if self.known[id].key_n != hello.client_key.n {
                    self.refuse(
                        conn,
                        RefusalCode::KeyMismatch,
                        format!(
                            "client `{name}` registered another public key before; \
                             reconnect with the same key pair"
                        ),
                    );
                    return Ok(());
                }
                self.drop_peer(id, "superseded by a new connection", Farewell::Close);
                let log = &mut self.known[id].log;
                log.registrations += 1;
                log.samples = samples;
                log.reference = reference;
                (id, log.registrations - 1, log.batches)
            }
            None => match self.role.register_client(&hello) {
                Ok(ClientId(id)) => {
                    if id != self.known.len() {
                        return Err(CoordinatorError::Inconsistent {
                            reason: format!(
                                "role gave client index {id}, expected {}",
                                self.known.len()
                            ),
                        });
                    }
                    self.known.push(Known {
                        key_n: hello.client_key.n.clone(),
                        log: ClientLog::registered(name.clone(), id, samples, reference),
                    });
                    (id, 0, 0)
                }
                Err(e) => {
                    let code = match e {
                        ServerError::RegistrationClosed => RefusalCode::RegistrationClosed,
                        _ => RefusalCode::Handshake,
                    };
                    self.refuse(conn, code, format!("client `{name}`: {e}"));
                    return Ok(());
                }
            },
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.client = Some(id);
            c.state = ConnState::Peer;
        }
        self.peers.insert(id, conn);
        self.send(
            conn,
            ToClient::Registered {
                client: u32::try_from(id).unwrap_or(u32::MAX),
                incarnation,
                batches,
            },
        );
        self.event(ServerEvent::ClientJoined { name, incarnation });
        Ok(())
    }

    fn begin_training(&mut self, now: Instant) {
        if !self.resumed {
            self.held = self.known.iter().map(|k| k.log.samples).sum();
        }
        self.event(ServerEvent::TrainingStarted {
            clients: self.known.len(),
            target_samples: self.stop.target_samples(self.held),
            max_sessions: self.stop.max_sessions(),
        });
        self.training_started = Some(now);
        self.join_deadline = None;
        self.phase = Phase::Training;
    }

    /// Starts the next session; a session for an absent client is abandoned at once.
    fn start_session(&mut self, now: Instant) -> Result<(), CoordinatorError> {
        let eta = self.role.session_rate(self.samples, self.held);
        let (cid, start) = self.role.start_session_at(eta)?;
        let ServerMessage::SessionStart(s) = &start else {
            self.role.abandon_session();
            return Err(CoordinatorError::Inconsistent {
                reason: format!("start_session gave {}", start.kind()),
            });
        };
        let id = cid.0;
        if id >= self.known.len() {
            self.role.abandon_session();
            return Err(CoordinatorError::Inconsistent {
                reason: format!("session for client {id} of {}", self.known.len()),
            });
        }
        let r = Running {
            client: id,
            session: s.session,
            iterations: s.iterations,
            started: now,
            conn: self.peers.get(&id).copied(),
            deadline: None,
        };
        match r.conn {
            Some(conn) => {
                self.skipped_in_a_row = 0;
                self.send(conn, ToClient::Message(start));
                self.running = Some(r);
            }
            None => {
                self.role.abandon_session();
                self.skipped_in_a_row += 1;
                let bound = self
                    .config
                    .absent_skips_per_client
                    .saturating_mul(self.known.len().max(1));
                if self.skipped_in_a_row > bound {
                    return Err(CoordinatorError::AbsentClients {
                        skipped: self.skipped_in_a_row,
                    });
                }
                self.end_session(now, r, Some("client not connected".into()));
            }
        }
        Ok(())
    }

    fn fail(&mut self, now: Instant, e: CoordinatorError) {
        if let Some(r) = self.running.take() {
            self.role.abandon_session();
            self.end_session(now, r, Some(format!("training stopped: {e}")));
        }
        self.finish(now, Err(e));
    }

    /// Protocol v2: asks the next connected client (lowest index first) to release the
    /// current model version; with none left, training finishes without a released model
    /// (the stop reason says so).
    fn ask_release(&mut self, now: Instant) {
        let Some(rel) = self.releasing.as_mut() else {
            return;
        };
        if let Some((id, _)) = rel.asked.take() {
            rel.tried.push(id);
        }
        let next = self
            .peers
            .iter()
            .map(|(&id, &conn)| (id, conn))
            .find(|(id, _)| !rel.tried.contains(id));
        let (Some((id, conn)), Some(version)) = (next, self.role.model_version()) else {
            let reason = format!(
                "{}; the model was not released (no connected client released it)",
                rel.reason
            );
            self.releasing = None;
            self.finish(now, Ok(reason));
            return;
        };
        rel.asked = Some((id, conn));
        rel.deadline = Some(now + self.config.response_timeout);
        self.send(conn, ToClient::Release(version));
    }

    /// Protocol v2: a client's release seed. From the asked client: the role unmasks and
    /// range-checks the model, and training finishes; a refused seed drops that client
    /// and asks the next one. From any other client: a protocol violation.
    fn on_release(
        &mut self,
        now: Instant,
        id: usize,
        conn: ConnectionId,
        r: &gelunet_protocol::envelope::ReleaseSeed,
    ) {
        let asked = self.releasing.as_ref().and_then(|rel| rel.asked);
        if asked != Some((id, conn)) {
            let detail = "a release seed nobody asked for".to_string();
            let refusal = Refusal {
                code: RefusalCode::Protocol,
                detail: detail.clone(),
            };
            self.drop_peer(id, &detail, Farewell::Refuse(refusal));
            return;
        }
        let seed = gelunet_protocol::group_key::VersionSeed::from_bytes(r.seed);
        match self.role.release(r.version, &seed) {
            Ok(_) => {
                let reason = self
                    .releasing
                    .take()
                    .map_or_else(String::new, |rel| rel.reason);
                self.finish(now, Ok(reason));
            }
            Err(_) => {
                let refusal = Refusal {
                    code: RefusalCode::Protocol,
                    detail: "the release seed does not unmask the model".into(),
                };
                self.drop_peer(id, "release refused", Farewell::Refuse(refusal));
                self.ask_release(now);
            }
        }
    }

    /// Stops training: the summary to every connected client, refusals to the queue.
    fn finish(&mut self, now: Instant, outcome: Result<String, CoordinatorError>) {
        let (outcome, held) = match outcome {
            Ok(reason) => {
                let t = self.training_time(now);
                (Ok((t, reason)), self.held)
            }
            Err(e) => (Err(e), 0),
        };
        let epochs = if held > 0 {
            self.samples as f64 / held as f64
        } else {
            0.0
        };
        let summary = Summary {
            sessions: self.completed,
            your_sessions: 0,
            abandoned: self.sessions.iter().filter(|s| !s.completed).count() as u64,
            samples: self.samples,
            epochs,
            reason: match &outcome {
                Ok((_, r)) => r.clone(),
                Err(e) => e.to_string(),
            },
        };
        for (id, conn) in std::mem::take(&mut self.peers) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::Finishing;
            }
            self.actions.push_back(Action::Finish {
                conn,
                summary: Summary {
                    your_sessions: self.known[id].log.sessions,
                    ..summary.clone()
                },
            });
        }
        for j in std::mem::take(&mut self.pending) {
            self.refuse(j.conn, RefusalCode::ShuttingDown, "training is over".into());
        }
        self.join_deadline = None;
        self.rejoin_deadline = None;
        self.phase = Phase::Finishing {
            outcome,
            held,
            epochs,
        };
    }

    /// Moves the state machine as far as it goes without new input.
    fn advance(&mut self, now: Instant) {
        loop {
            match &self.phase {
                Phase::Joining => {
                    if let Err(e) = self.process_joins() {
                        self.fail(now, e);
                        continue;
                    }
                    let (ready, needed) = if self.resumed {
                        // Registered already: wait for them to be connected again.
                        (self.peers.len(), self.config.wait_for.min(self.known.len()))
                    } else {
                        (self.known.len(), self.config.wait_for)
                    };
                    if ready < needed {
                        return;
                    }
                    self.begin_training(now);
                }
                Phase::Training if self.releasing.is_some() => {
                    let asked = self.releasing.as_ref().and_then(|r| r.asked);
                    match asked {
                        // The asked client left: ask the next one.
                        Some((id, _)) if !self.peers.contains_key(&id) => self.ask_release(now),
                        _ => return,
                    }
                }
                Phase::Training => {
                    if self.running.is_some() {
                        return;
                    }
                    if let Err(e) = self.process_joins() {
                        self.fail(now, e);
                        continue;
                    }
                    if let Some(r) = self.stop.check(self.completed, self.samples, self.held) {
                        if self.role.model_version().is_some()
                            && self.role.released_version().is_none()
                        {
                            // Protocol v2: the model exists in the clear only once a client
                            // releases it.
                            self.releasing = Some(Releasing {
                                reason: r.to_string(),
                                asked: None,
                                deadline: None,
                                tried: Vec::new(),
                            });
                            self.ask_release(now);
                        } else {
                            self.finish(now, Ok(r.to_string()));
                        }
                        continue;
                    }
                    if self.peers.is_empty() {
                        if self.rejoin_deadline.is_none() {
                            self.rejoin_deadline = Some(now + self.config.rejoin_timeout);
                        }
                        return;
                    }
                    self.rejoin_deadline = None;
                    if let Err(e) = self.start_session(now) {
                        self.fail(now, e);
                    }
                }
                Phase::Finishing { .. } => {
                    if !self.conns.is_empty() {
                        return;
                    }
                    self.complete();
                    return;
                }
                Phase::Finished { .. } => return,
            }
        }
    }

    /// Every connection is closed: the outcome, and [`Action::Finished`].
    fn complete(&mut self) {
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Finished {
                outcome: Err(CoordinatorError::Unfinished),
            },
        );
        let Phase::Finishing {
            outcome,
            held,
            epochs,
        } = phase
        else {
            self.phase = phase;
            return;
        };
        let outcome = outcome.map(|(training_time, stop_reason)| {
            let clients: Vec<ClientLog> = self.known.iter().map(|k| k.log.clone()).collect();
            let bytes_sent =
                clients.iter().map(|c| c.bytes_sent).sum::<u64>() + self.unregistered.sent;
            let bytes_received =
                clients.iter().map(|c| c.bytes_received).sum::<u64>() + self.unregistered.received;
            TrainingLog {
                clients,
                sessions: self.sessions.clone(),
                sessions_completed: self.completed,
                samples: self.samples,
                samples_held: held,
                epochs,
                bytes_sent,
                bytes_received,
                training_time,
                stop_reason,
                interrupted: self.interrupted,
            }
        });
        self.phase = Phase::Finished { outcome };
        self.actions.push_back(Action::Finished);
    }
}

fn abort(session: u64, reason: &str) -> ToClient {
    ToClient::Message(ServerMessage::Abort(Abort {
        session,
        reason: reason.into(),
    }))
}
