//! The coordinator ([`gelunet_server::coordinator`]) in memory, with a simulated clock: a
//! harness in the style of `quinn-proto`'s test `Pair` owns the coordinator and `K` real
//! client roles, delivers the coordinator's actions and the clients' answers, and when
//! nothing is left to deliver advances the clock to the coordinator's next deadline. No
//! sockets, no sleeps.
//!
//! Exactness checks replay the log's completed sessions with the plaintext fixed-point
//! reference (docs/DESIGN.md "What is measured"); abandoned sessions must leave no trace
//! in the model (docs/DESIGN.md "Sessions and the d_max bound").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::envelope::{Refusal, RefusalCode, Summary, ToClient, ToServer};
use gelunet_protocol::messages::{Abort, ClientMessage};
use gelunet_protocol::{
    Activation, ClientOrder, Dataset, MaskMode, ModelSpec, ReferenceTrainer, SessionPlan, ValueKind,
};
use gelunet_server::{
    Action, ConnectionId, Coordinator, CoordinatorConfig, CoordinatorError, Input, InsecureOptions,
    LinkError, Server, ServerConfig, ServerEvent, Traffic, TrainingLog,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Samples each client holds.
const PER_CLIENT: usize = 12;
/// Bytes the harness counts per frame sent to a client, and per frame received.
const FRAME_SENT: u64 = 100;
const FRAME_RECEIVED: u64 = 50;
/// Simulated time per delivered frame.
const LATENCY: Duration = Duration::from_millis(3);

/// 512-bit test keys from fixed seeds: 0 the server's, 1.. the clients', 9 another key.
fn key(i: usize) -> PrivateKey {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..10)
            .map(|i| {
                PrivateKey::generate_insecure_for_tests(
                    512,
                    &mut ChaCha20Rng::seed_from_u64(4000 + i as u64),
                )
                .unwrap()
            })
            .collect()
    })[i]
        .clone()
}

fn spec() -> ModelSpec {
    ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid)
}

fn server_config(order: ClientOrder) -> ServerConfig {
    let mut cfg = ServerConfig::new(spec(), 0.5, 1);
    cfg.mask = MaskMode::default();
    cfg.policy.order = order;
    // The coordinator's policy does not depend on the protocol; the paper's form keeps
    // the true model on the server, which these tests compare with the reference.
    cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
    cfg.insecure = InsecureOptions {
        allow_test_keys: true,
        allow_unmasked_gradients: false,
    };
    cfg
}

/// Client `k`'s share: three noisy blobs.
fn share(k: usize) -> (Array2<f64>, Vec<usize>) {
    let mut rng = ChaCha20Rng::seed_from_u64(70 + k as u64);
    let labels: Vec<usize> = (0..PER_CLIENT).map(|i| (i + k) % 3).collect();
    let x = Array2::from_shape_fn((PER_CLIENT, 4), |(i, j)| {
        let c = labels[i] as f64;
        c * if j % 2 == 0 { 0.8 } else { -0.6 } + rng.gen_range(-0.4..0.4)
    });
    (x, labels)
}

fn client_seed(k: usize) -> u64 {
    500 + 7 * k as u64
}

fn client_role(k: usize, key_index: usize) -> Client {
    let (x, y) = share(k);
    let config = ClientConfig {
        randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
            seed: client_seed(k),
        },
        allow_test_keys: true,
        ..ClientConfig::default()
    };
    Client::new(config, key(key_index), x, y).unwrap()
}

fn name(k: usize) -> String {
    format!("c{k}")
}

/// How a simulated client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Answers every message.
    Honest,
    /// Its connection is lost when its `n`-th session message arrives (0-based count).
    VanishAt(usize),
    /// Stops answering (connection kept) from its `n`-th session message on.
    MuteAt(usize),
}

struct Peer {
    name: String,
    role: Client,
    conn: Option<ConnectionId>,
    behaviour: Behaviour,
    received: usize,
    registered: Vec<(u32, u32)>,
    refusals: Vec<Refusal>,
    summary: Option<Summary>,
}

/// The coordinator and its clients, with a simulated clock.
struct Pair {
    co: Option<Coordinator>,
    start: Instant,
    now: Instant,
    peers: Vec<Peer>,
    inbox: VecDeque<Input>,
    next_conn: u64,
    owner: HashMap<ConnectionId, usize>,
    traffic: HashMap<ConnectionId, Traffic>,
    /// Everything reported in `Closed` inputs.
    reported: Traffic,
    events: Vec<ServerEvent>,
    finished: bool,
}

impl Peer {
    /// An honest client `name` with role `role`, not connected.
    fn honest(name: String, role: Client) -> Self {
        Self {
            name,
            role,
            conn: None,
            behaviour: Behaviour::Honest,
            received: 0,
            registered: Vec::new(),
            refusals: Vec::new(),
            summary: None,
        }
    }
}

impl Pair {
    /// A coordinator for the names `c0..c{k-1}` and `k` honest clients (not connected).
    fn new(k: usize, order: ClientOrder, config: CoordinatorConfig) -> Self {
        let start = Instant::now();
        let role = Server::new(server_config(order), key(0)).unwrap();
        let names = (0..k).map(name).collect();
        let co = Coordinator::new(role, config, names, start).unwrap();
        let peers = (0..k)
            .map(|c| Peer::honest(name(c), client_role(c, c + 1)))
            .collect();
        Self {
            co: Some(co),
            start,
            now: start,
            peers,
            inbox: VecDeque::new(),
            next_conn: 0,
            owner: HashMap::new(),
            traffic: HashMap::new(),
            reported: Traffic::default(),
            events: Vec::new(),
            finished: false,
        }
    }

    /// [`Pair::new`] with `k` clients in round-robin order for `sessions` sessions.
    fn round_robin(k: usize, sessions: u64) -> Self {
        Self::new(k, ClientOrder::RoundRobin, config(k, None, Some(sessions)))
    }

    /// [`Pair::round_robin`], every client connected, run until c0 is in the first
    /// session (it received its SessionStart).
    fn in_first_session(k: usize, sessions: u64) -> Self {
        let mut p = Self::round_robin(k, sessions);
        p.connect_all();
        p.run_until(|p| p.peers[0].received > 0);
        p
    }

    /// [`Pair::round_robin`] with client `c` behaving as `b`, run to the end.
    fn run_with(k: usize, sessions: u64, (c, b): (usize, Behaviour)) -> Self {
        let mut p = Self::round_robin(k, sessions);
        p.peers[c].behaviour = b;
        p.connect_all();
        p.run();
        p
    }

    fn co(&mut self) -> &mut Coordinator {
        self.co.as_mut().unwrap()
    }

    /// Adds a client `name` with role `role` (e.g. an impostor with another key).
    fn add_peer(&mut self, name: &str, role: Client) -> usize {
        self.peers.push(Peer::honest(name.into(), role));
        self.peers.len() - 1
    }

    /// Client `k` opens a connection: the shell's handshake (Welcome, ClientHello) done.
    fn connect(&mut self, k: usize) -> ConnectionId {
        let conn = ConnectionId(self.next_conn);
        self.next_conn += 1;
        let hello = self.co.as_ref().unwrap().hello();
        let p = &mut self.peers[k];
        p.role.abandon_session();
        let ClientMessage::Hello(h) = p.role.handle_hello(&hello).unwrap() else {
            panic!("no client hello");
        };
        p.conn = Some(conn);
        p.received = 0;
        self.owner.insert(conn, k);
        self.traffic.insert(conn, Traffic::default());
        self.inbox.push_back(Input::Joined {
            conn,
            name: p.name.clone(),
            samples: PER_CLIENT as u64,
            reference: None,
            hello: h,
        });
        conn
    }

    fn connect_all(&mut self) {
        for k in 0..self.peers.len() {
            self.connect(k);
        }
    }

    /// Client `k`'s connection is lost (the shell saw the stream end).
    fn vanish(&mut self, k: usize) {
        let p = &mut self.peers[k];
        if let Some(conn) = p.conn.take() {
            p.role.abandon_session();
            self.inbox.push_back(Input::Broken {
                conn,
                error: LinkError::Lost {
                    detail: "connection lost: timed out".into(),
                },
            });
        }
    }

    /// The coordinator ended `conn`: the client side is gone, the shell reports `Closed`.
    fn closed(&mut self, conn: ConnectionId) {
        if let Some(&k) = self.owner.get(&conn) {
            let p = &mut self.peers[k];
            if p.conn == Some(conn) {
                p.conn = None;
                p.role.abandon_session();
            }
        }
        let traffic = self.traffic.remove(&conn).unwrap_or_default();
        self.reported.sent += traffic.sent;
        self.reported.received += traffic.received;
        self.inbox.push_back(Input::Closed {
            conn,
            traffic,
            flushed: true,
        });
    }

    fn deliver(&mut self, conn: ConnectionId, frame: ToClient) {
        self.now += LATENCY;
        if let Some(t) = self.traffic.get_mut(&conn) {
            t.sent += FRAME_SENT;
        }
        let Some(&k) = self.owner.get(&conn) else {
            panic!("frame for unknown connection {conn}");
        };
        if self.peers[k].conn != Some(conn) {
            return; // in flight when the client went away
        }
        match frame {
            ToClient::Registered {
                client,
                incarnation,
                batches,
            } => {
                // As the shell: the sampler continues where the completed sessions left it.
                self.peers[k].role.resume_batches(batches).unwrap();
                self.peers[k].registered.push((client, incarnation));
            }
            ToClient::Message(m) => {
                let n = self.peers[k].received;
                self.peers[k].received += 1;
                match self.peers[k].behaviour {
                    Behaviour::VanishAt(v) if n == v => {
                        self.vanish(k);
                        return;
                    }
                    Behaviour::MuteAt(v) if n >= v => return,
                    _ => {}
                }
                let p = &mut self.peers[k];
                let reply = match p.role.handle(&m) {
                    Ok(Some(reply)) => reply,
                    Ok(None) => return,
                    Err(e) => ClientMessage::Error(e.report(p.role.active_session())),
                };
                self.send_frame(conn, ToServer::Message(reply));
            }
            other => panic!("unexpected {other:?} as a plain frame"),
        }
    }

    fn send_frame(&mut self, conn: ConnectionId, frame: ToServer) {
        if let Some(t) = self.traffic.get_mut(&conn) {
            t.received += FRAME_RECEIVED;
        }
        self.inbox.push_back(Input::Frame { conn, frame });
    }

    /// Carries out one action or feeds one input; false when both queues are empty.
    fn step(&mut self) -> bool {
        let now = self.now;
        if let Some(action) = self.co().poll_action(now) {
            match action {
                Action::Send { conn, frame } => self.deliver(conn, frame),
                Action::Refuse { conn, refusal } => {
                    if let Some(&k) = self.owner.get(&conn) {
                        if self.peers[k].conn == Some(conn) {
                            self.peers[k].refusals.push(refusal);
                        }
                    }
                    self.closed(conn);
                }
                Action::Close { conn, .. } => self.closed(conn),
                Action::Finish { conn, summary } => {
                    if let Some(&k) = self.owner.get(&conn) {
                        self.peers[k].summary = Some(summary);
                    }
                    self.closed(conn);
                }
                Action::Event(e) => self.events.push(e),
                Action::Finished => self.finished = true,
                other => panic!("unknown action {other:?}"),
            }
            return true;
        }
        if let Some(input) = self.inbox.pop_front() {
            let now = self.now;
            self.co().handle(now, input);
            return true;
        }
        false
    }

    /// Delivers everything until nothing moves without the clock.
    fn drive(&mut self) {
        while self.step() {}
    }

    /// Drives, firing timers at their deadlines, until `done` holds, training finishes
    /// or nothing is left to do (no input and no timer).
    fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) {
        loop {
            while !done(self) && self.step() {}
            if done(self) || self.finished {
                return;
            }
            let Some(t) = self.co.as_ref().unwrap().poll_timeout() else {
                return;
            };
            self.now = self.now.max(t);
            let now = self.now;
            self.co().handle_timeout(now);
        }
    }

    fn run(&mut self) {
        self.run_until(|_| false);
    }

    fn outcome(&mut self) -> (Server, Result<TrainingLog, CoordinatorError>) {
        assert!(self.finished, "training did not finish");
        self.co.take().unwrap().into_outcome()
    }

    fn log(&mut self) -> (Server, TrainingLog) {
        let (role, log) = self.outcome();
        (role, log.unwrap())
    }

    fn sessions_done(&self) -> Vec<&gelunet_server::SessionLog> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::SessionDone(s) => Some(s),
                _ => None,
            })
            .collect()
    }
}

/// The plaintext reference replaying the log's completed sessions (every client's
/// sampler seeded once: a reconnected client fast-forwards its sampler to the batches of
/// its completed sessions, `Registered::batches`).
fn replay(log: &TrainingLog) -> ReferenceTrainer {
    let cfg = server_config(ClientOrder::RoundRobin);
    let scales = cfg.scales;
    let eta = scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .unwrap();
    let sets = log
        .clients
        .iter()
        .map(|c| {
            let k: usize = c.name[1..].parse().unwrap();
            let (x, y) = share(k);
            (
                Dataset::quantize(x.view(), &y, cfg.spec.classes(), &scales).unwrap(),
                client_seed(k),
            )
        })
        .collect();
    let mut r = ReferenceTrainer::new(&cfg.spec, scales, cfg.model_seed, eta, cfg.batch_size, sets)
        .unwrap();
    for s in log.sessions.iter().filter(|s| s.completed) {
        r.run_session(SessionPlan {
            client: s.client,
            iterations: s.iterations,
        })
        .unwrap();
    }
    r
}

fn config(k: usize, epochs: Option<f64>, max_sessions: Option<u64>) -> CoordinatorConfig {
    CoordinatorConfig {
        epochs,
        max_sessions,
        response_timeout: Duration::from_secs(30),
        join_timeout: Some(Duration::from_secs(60)),
        rejoin_timeout: Duration::from_secs(90),
        ..CoordinatorConfig::new(k)
    }
}

#[test]
fn epoch_bound_run_is_exact_and_every_client_gets_its_summary() {
    let mut p = Pair::new(3, ClientOrder::RoundRobin, config(3, Some(1.0), None));
    p.connect_all();
    // A connection the shell refused before registration still counts its bytes.
    p.inbox.push_back(Input::Refused {
        refusal: Refusal {
            code: RefusalCode::Unauthenticated,
            detail: "client `eve` is not authorized".into(),
        },
        traffic: Traffic {
            sent: 7,
            received: 11,
        },
    });
    p.run();
    let summaries: Vec<Summary> = p.peers.iter().map(|c| c.summary.clone().unwrap()).collect();
    let registered: Vec<_> = p.peers.iter().map(|c| c.registered.clone()).collect();
    let events = p.events.clone();
    let reported = p.reported;
    let (role, log) = p.log();
    assert_eq!(log.samples_held, 36);
    assert_eq!(log.stop_reason, "36 samples processed");
    assert!(log.samples >= 36 && log.samples < 36 + 4, "{}", log.samples);
    assert!(log.sessions.iter().all(|s| s.completed));
    assert_eq!(log.sessions_completed, log.sessions.len() as u64);
    assert_eq!(log.epochs, log.samples as f64 / 36.0);
    assert!(log.training_time > Duration::ZERO);
    assert_eq!(registered, vec![vec![(0, 0)], vec![(1, 0)], vec![(2, 0)]]);
    for (k, c) in log.clients.iter().enumerate() {
        assert_eq!(c.id, k);
        assert_eq!(c.registrations, 1);
        assert!(c.sessions > 0);
        assert!(c.connected_at_end);
        assert_eq!(summaries[k].your_sessions, c.sessions);
        assert_eq!(summaries[k].sessions, log.sessions_completed);
        assert_eq!(summaries[k].reason, log.stop_reason);
    }
    // Bytes: every frame the harness carried, plus the refused connection.
    assert!(reported.sent > 0 && reported.received > 0);
    assert_eq!(log.bytes_sent, reported.sent + 7);
    assert_eq!(log.bytes_received, reported.received + 11);
    assert!(log
        .clients
        .iter()
        .all(|c| c.bytes_sent > 0 && c.bytes_received > 0));
    assert!(matches!(
        events.first(),
        Some(ServerEvent::ClientJoined { incarnation: 0, .. })
    ));
    assert!(events.contains(&ServerEvent::TrainingStarted {
        clients: 3,
        target_samples: Some(36),
        max_sessions: None,
    }));
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn session_bound_and_whichever_limit_comes_first() {
    // Two clients hold 24 samples; a session has 2 to 4 (batch 1, fan-in 4).
    for (epochs, max, reason, sessions) in [
        (None, Some(5), "5 sessions completed", 5),
        (Some(100.0), Some(4), "4 sessions completed", 4),
        (Some(0.05), Some(100), "2 samples processed", 1),
    ] {
        let mut p = Pair::new(2, ClientOrder::RoundRobin, config(2, epochs, max));
        p.connect_all();
        p.run();
        let (role, log) = p.log();
        assert_eq!(log.stop_reason, reason);
        assert_eq!(log.sessions_completed, sessions);
        assert_eq!(log.sessions.len() as u64, sessions);
        assert_eq!(role.model().unwrap(), replay(&log).model());
    }
}

#[test]
fn a_client_vanishing_mid_session_costs_the_model_nothing() {
    // c1 is lost at its third message, inside its first session.
    let mut p = Pair::run_with(3, 8, (1, Behaviour::VanishAt(2)));
    let left: Vec<_> = p
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::ClientLeft { name, .. } if name == "c1"))
        .cloned()
        .collect();
    assert!(p.peers[1].summary.is_none());
    let (role, log) = p.log();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(log.sessions_completed, 8);
    let c1: Vec<_> = log.sessions.iter().filter(|s| s.client == 1).collect();
    assert!(!c1[0].completed);
    assert!(
        c1[0].note.as_deref().unwrap().starts_with("connection:"),
        "{c1:?}"
    );
    // Later sessions scheduled for c1 are skipped at once.
    assert!(c1.len() >= 2);
    assert!(c1[1..]
        .iter()
        .all(|s| !s.completed && s.note.as_deref() == Some("client not connected")));
    assert_eq!(log.clients[1].sessions, 0);
    assert_eq!(log.clients[1].abandoned, c1.len() as u64);
    assert!(!log.clients[1].connected_at_end);
    assert!(log.clients[0].sessions > 0 && log.clients[2].sessions > 0);
    assert!(log.clients[0].connected_at_end && log.clients[2].connected_at_end);
    // Rolled back to w^I: the model is the reference replaying the completed sessions.
    assert_eq!(role.model().unwrap(), replay(&log).model());
    assert_eq!(
        role.history().len(),
        log.sessions.len(),
        "every session ends in the role's history"
    );
}

#[test]
fn a_rejoining_client_is_a_new_incarnation_and_another_key_is_refused() {
    let mut p = Pair::round_robin(2, 10);
    p.peers[1].behaviour = Behaviour::VanishAt(1);
    p.connect_all();
    // Until c1's first session is abandoned.
    p.run_until(|p| p.sessions_done().iter().any(|s| s.client == 1));
    assert!(p.peers[1].conn.is_none());
    p.peers[1].behaviour = Behaviour::Honest;
    p.connect(1);
    p.run_until(|p| {
        p.sessions_done()
            .iter()
            .any(|s| s.client == 1 && s.completed)
    });
    assert_eq!(p.peers[1].registered, vec![(1, 0), (1, 1)]);
    assert!(p.events.contains(&ServerEvent::ClientJoined {
        name: "c1".into(),
        incarnation: 1,
    }));
    // Someone with c1's credentials but another key pair (c0's session runs).
    let impostor = p.add_peer("c1", client_role(1, 9));
    p.connect(impostor);
    p.run();
    let refusal = p.peers[impostor].refusals.clone();
    assert_eq!(refusal.len(), 1);
    assert_eq!(refusal[0].code, RefusalCode::KeyMismatch);
    assert!(p.peers[impostor].registered.is_empty());
    let (_, log) = p.log();
    assert_eq!(log.sessions_completed, 10);
    assert_eq!(log.clients.len(), 2);
    assert_eq!(log.clients[1].registrations, 2);
    let c1: Vec<_> = log.sessions.iter().filter(|s| s.client == 1).collect();
    assert_eq!(c1[0].incarnation, 0);
    assert!(!c1[0].completed);
    assert!(
        c1.iter().any(|s| s.completed && s.incarnation == 1),
        "{c1:?}"
    );
    assert!(
        log.clients[1].connected_at_end,
        "the impostor did not displace c1"
    );
}

#[test]
fn a_new_connection_of_the_session_client_ends_its_session() {
    let mut p = Pair::round_robin(2, 4);
    p.connect_all();
    // Until c0's first session is running (SessionStart delivered, answer queued).
    p.run_until(|p| p.peers[0].received > 0);
    p.connect(0);
    p.run();
    let (role, log) = p.log();
    let first = &log.sessions[0];
    assert_eq!(first.client, 0);
    assert!(!first.completed);
    assert_eq!(
        first.note.as_deref(),
        Some("superseded by a new connection")
    );
    assert_eq!(log.clients[0].registrations, 2);
    assert_eq!(log.sessions_completed, 4);
    // The first session of the new incarnation re-seeded c0's sampler, as the reference
    // (seeded once) does: no completed session of incarnation 0 came before.
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn sessions_of_absent_clients_are_skipped_until_the_bound() {
    // Seeded random order: the absent clients can be drawn many times in a row.
    let mut cfg = config(3, None, Some(1000));
    cfg.absent_skips_per_client = 1;
    let mut p = Pair::new(3, ClientOrder::SeededRandom, cfg);
    p.connect_all();
    p.run_until(|p| p.sessions_done().len() >= 3);
    p.vanish(1);
    p.vanish(2);
    p.run();
    let summary = p.peers[0].summary.clone().unwrap();
    let (role, outcome) = p.outcome();
    assert_eq!(outcome, Err(CoordinatorError::AbsentClients { skipped: 4 }));
    assert!(summary.reason.contains("absent client"), "{summary:?}");
    assert!(role.active_session().is_none());
}

#[test]
fn absent_clients_are_skipped_and_the_others_go_on() {
    let mut p = Pair::round_robin(3, 9);
    p.connect(0);
    p.connect(2);
    p.connect(1);
    p.run_until(|p| p.sessions_done().len() >= 2);
    p.vanish(2);
    p.run();
    let (role, log) = p.log();
    assert_eq!(log.sessions_completed, 9);
    let skipped = log
        .sessions
        .iter()
        .filter(|s| s.note.as_deref() == Some("client not connected"))
        .count();
    assert!(skipped >= 2, "{:?}", log.sessions);
    assert!(log
        .sessions
        .iter()
        .filter(|s| s.client == 2)
        .skip(1)
        .all(|s| !s.completed));
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn too_few_clients_within_the_join_timeout() {
    let mut p = Pair::new(3, ClientOrder::RoundRobin, config(3, Some(1.0), None));
    p.connect(0);
    p.connect(1);
    p.run();
    let t = p.now - p.start;
    let summary = p.peers[0].summary.clone().unwrap();
    let (role, outcome) = p.outcome();
    assert_eq!(t, Duration::from_secs(60), "the join deadline");
    assert_eq!(
        outcome,
        Err(CoordinatorError::JoinTimeout {
            registered: 2,
            wait_for: 3,
            limit: Duration::from_secs(60),
        })
    );
    assert!(summary.reason.contains("2 of 3 clients"), "{summary:?}");
    assert_eq!(summary.sessions, 0);
    assert!(role.history().is_empty());
}

#[test]
fn every_client_gone_waits_for_the_rejoin_timeout() {
    let mut p = Pair::round_robin(2, 50);
    p.connect_all();
    p.run_until(|p| p.sessions_done().len() >= 2);
    p.vanish(0);
    p.vanish(1);
    p.drive();
    assert!(p.co().is_waiting_for_rejoin());
    let gone = p.now;
    // c0 comes back just in time: the wait restarts, training goes on.
    p.now += Duration::from_secs(80);
    p.connect(0);
    p.run_until(|p| p.sessions_done().iter().filter(|s| s.completed).count() >= 4);
    assert!(!p.co().is_waiting_for_rejoin());
    p.vanish(0);
    p.drive();
    let gone_again = p.now;
    assert!(gone_again > gone);
    p.run();
    let t = p.now - gone_again;
    let (_, outcome) = p.outcome();
    assert_eq!(t, Duration::from_secs(90));
    assert_eq!(
        outcome,
        Err(CoordinatorError::RejoinTimeout {
            limit: Duration::from_secs(90),
        })
    );
}

#[test]
fn a_client_that_stops_answering_times_out() {
    // c2 answers SessionStart and one more, then nothing.
    let mut p = Pair::run_with(3, 7, (2, Behaviour::MuteAt(2)));
    let refusals = p.peers[2].refusals.clone();
    let (role, log) = p.log();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].code, RefusalCode::Timeout);
    assert_eq!(refusals[0].detail, "no answer within 30s");
    let timed_out = log
        .sessions
        .iter()
        .find(|s| s.note.as_deref() == Some("client timed out"))
        .unwrap();
    assert_eq!(timed_out.client, 2);
    assert!(timed_out.elapsed >= Duration::from_secs(30));
    assert_eq!(log.sessions_completed, 7);
    assert_eq!(log.clients[2].sessions, 0);
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn registration_follows_the_order_of_the_names() {
    let mut p = Pair::round_robin(3, 3);
    p.connect(2);
    p.connect(1);
    p.drive();
    // c1 and c2 wait in the queue for c0.
    assert!(p.peers.iter().all(|c| c.registered.is_empty()));
    assert!(!p
        .events
        .iter()
        .any(|e| matches!(e, ServerEvent::ClientJoined { .. })));
    p.connect(0);
    p.drive();
    let joined: Vec<String> = p
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::ClientJoined { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(joined, ["c0", "c1", "c2"]);
    for (k, c) in p.peers.iter().enumerate() {
        assert_eq!(c.registered, vec![(k as u32, 0)]);
    }
    p.run();
    let (role, log) = p.log();
    assert_eq!(role.model().unwrap(), replay(&log).model());

    // Without ordered registration the first to come is client 0.
    let mut cfg = config(3, None, Some(3));
    cfg.ordered_registration = false;
    let mut p = Pair::new(3, ClientOrder::RoundRobin, cfg);
    p.connect(2);
    p.drive();
    assert_eq!(p.peers[2].registered, vec![(0, 0)]);
}

#[test]
fn late_newcomers_are_refused_and_queued_joins_shut_down() {
    // wait_for 1 of 3: c0 trains alone; c2 (whose predecessor c1 never came) waits in
    // the queue until the end; c1, coming after training started, is refused.
    let mut cfg = config(3, None, Some(3));
    cfg.wait_for = 1;
    let mut p = Pair::new(3, ClientOrder::RoundRobin, cfg);
    p.connect(0);
    p.run_until(|p| !p.sessions_done().is_empty());
    p.connect(2);
    p.connect(1);
    p.run();
    assert!(p.peers[2].registered.is_empty());
    assert!(p.peers[1].registered.is_empty());
    assert_eq!(p.peers[1].refusals[0].code, RefusalCode::RegistrationClosed);
    assert_eq!(p.peers[2].refusals[0].code, RefusalCode::ShuttingDown);
    let (_, log) = p.log();
    assert_eq!(log.clients.len(), 1);
    assert_eq!(log.sessions_completed, 3);
}

#[test]
fn invalid_messages_and_aborts_abandon_the_session_only() {
    let mut p = Pair::in_first_session(2, 4);
    // Instead of its answer to SessionStart, c0 sends an abort for another session.
    let conn = p.peers[0].conn.unwrap();
    p.inbox.clear();
    p.send_frame(
        conn,
        ToServer::Message(ClientMessage::Abort(Abort {
            session: 999,
            reason: "wrong session".into(),
        })),
    );
    p.run();
    let (role, log) = p.log();
    let first = &log.sessions[0];
    assert!(!first.completed);
    assert!(
        first
            .note
            .as_deref()
            .unwrap()
            .starts_with("invalid message"),
        "{first:?}"
    );
    // c0 stayed connected and trained later.
    assert!(log.clients[0].sessions >= 1);
    assert!(log.clients[0].connected_at_end);
    assert_eq!(log.sessions_completed, 4);
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn frames_outside_a_session_are_refused() {
    let mut p = Pair::in_first_session(2, 2);
    // c1 is idle while c0's session runs.
    let conn = p.peers[1].conn.unwrap();
    p.send_frame(
        conn,
        ToServer::Message(ClientMessage::Abort(Abort {
            session: 0,
            reason: "not mine".into(),
        })),
    );
    p.run();
    assert_eq!(p.peers[1].refusals[0].code, RefusalCode::Protocol);
    let (_, log) = p.log();
    assert_eq!(log.sessions_completed, 2);
    assert_eq!(log.clients[1].sessions, 0);
}

#[test]
fn a_malformed_frame_in_a_session_is_refused_and_rolled_back() {
    let mut p = Pair::in_first_session(2, 3);
    let conn = p.peers[0].conn.unwrap();
    // The shell could not decode c0's next frame.
    p.inbox.clear();
    p.inbox.push_back(Input::Broken {
        conn,
        error: LinkError::Malformed {
            detail: "malformed frame of 3 bytes".into(),
        },
    });
    p.run();
    let refusals = p.peers[0].refusals.clone();
    let (role, log) = p.log();
    assert_eq!(refusals[0].code, RefusalCode::Protocol);
    assert_eq!(
        log.sessions[0].note.as_deref(),
        Some("connection: malformed frame of 3 bytes")
    );
    assert_eq!(role.model().unwrap(), replay(&log).model());
}

#[test]
fn configurations_that_cannot_train_are_refused() {
    let role = || Server::new(server_config(ClientOrder::RoundRobin), key(0)).unwrap();
    let names = |n: usize| (0..n).map(name).collect::<Vec<_>>();
    let now = Instant::now();
    let bad = [
        (CoordinatorConfig::new(0), Vec::new()),
        (CoordinatorConfig::new(0), names(2)),
        (CoordinatorConfig::new(3), names(2)),
        (CoordinatorConfig::new(2), vec!["a".into(), "a".into()]),
        (
            CoordinatorConfig {
                epochs: Some(0.0),
                ..CoordinatorConfig::new(2)
            },
            names(2),
        ),
        (
            CoordinatorConfig {
                max_sessions: Some(0),
                ..CoordinatorConfig::new(2)
            },
            names(2),
        ),
    ];
    for (cfg, names) in bad {
        let r = Coordinator::new(role(), cfg.clone(), names.clone(), now);
        assert!(
            matches!(r, Err(CoordinatorError::Config { .. })),
            "{cfg:?} {names:?}"
        );
    }
    let co = Coordinator::new(role(), CoordinatorConfig::new(2), names(2), now).unwrap();
    assert!(!co.is_finished());
    assert_eq!(co.poll_timeout(), None, "no join timeout by default");
    let (_, outcome) = co.into_outcome();
    assert_eq!(outcome, Err(CoordinatorError::Unfinished));
}

#[test]
fn nothing_happens_after_the_end_but_refusals() {
    // After Finished nothing more is asked of the driver, and a late join is refused.
    let mut p = Pair::round_robin(2, 2);
    p.connect_all();
    p.run();
    assert!(p.finished);
    let now = p.now;
    assert!(p.co().poll_action(now).is_none());
    assert_eq!(p.co().poll_timeout(), None);
    let late = p.connect(0);
    let now = p.now;
    let input = p.inbox.pop_back().unwrap();
    p.co().handle(now, input);
    assert!(matches!(
        p.co().poll_action(now),
        Some(Action::Refuse { conn, refusal }) if conn == late && refusal.code == RefusalCode::ShuttingDown
    ));
    let ended = p
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::SessionDone(_)))
        .count();
    assert_eq!(ended, 2);
}

#[test]
fn the_response_timeout_runs_from_when_the_message_goes_out() {
    let mut p = Pair::round_robin(1, 1);
    p.connect(0);
    let t0 = p.now;
    let joined = p.inbox.pop_front().unwrap();
    // Registers c0 and starts its session (the role's work happens here).
    p.co().handle(t0, joined);
    assert_eq!(
        p.co().poll_timeout(),
        None,
        "armed only when the message goes out"
    );
    // The driver carries the actions out 5 s later.
    let later = t0 + Duration::from_secs(5);
    let mut started = false;
    while let Some(a) = p.co().poll_action(later) {
        started |= matches!(
            a,
            Action::Send {
                frame: ToClient::Message(gelunet_protocol::messages::ServerMessage::SessionStart(
                    _
                )),
                ..
            }
        );
    }
    assert!(started);
    assert_eq!(p.co().poll_timeout(), Some(later + Duration::from_secs(30)));
    // Not a moment before.
    p.co().handle_timeout(later + Duration::from_secs(29));
    assert!(p.co().poll_action(later).is_none());
    p.co().handle_timeout(later + Duration::from_secs(30));
    assert!(matches!(
        p.co().poll_action(later),
        Some(Action::Refuse { refusal, .. }) if refusal.code == RefusalCode::Timeout
    ));
}

/// The checkpoints the coordinator emitted so far.
fn checkpoints(p: &Pair) -> Vec<&gelunet_server::Checkpoint> {
    p.events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Checkpoint(cp) => Some(&**cp),
            _ => None,
        })
        .collect()
}

fn checkpointing(k: usize, sessions: u64) -> Pair {
    let mut c = config(k, None, Some(sessions));
    c.checkpoint_events = true;
    Pair::new(k, ClientOrder::SeededRandom, c)
}

#[test]
fn a_server_resumed_from_its_checkpoint_ends_with_the_uninterrupted_model() {
    let mut whole = checkpointing(3, 9);
    whole.connect_all();
    whole.run();
    assert_eq!(
        checkpoints(&whole).len(),
        9,
        "one checkpoint per completed session"
    );
    let (reference, whole_log) = whole.log();

    let mut p = checkpointing(3, 9);
    p.connect_all();
    // Four sessions completed, the fifth under way: the server crashes.
    p.run_until(|p| checkpoints(p).len() == 4);
    p.run_until(|p| p.peers.iter().map(|q| q.received).sum::<usize>() > 0);
    assert!(
        p.co.as_ref().unwrap().checkpoint(p.now).is_none(),
        "mid-session"
    );
    let cp = checkpoints(&p)[3].clone();
    assert_eq!(cp.completed, 4);
    assert!(cp.v2().is_none(), "these tests run the paper's protocol");
    assert_eq!(
        cp.clients.iter().map(|c| c.log.sessions).sum::<u64>(),
        4,
        "{:?}",
        cp.clients
    );
    p.co = None;
    p.inbox.clear();
    for q in &mut p.peers {
        q.conn = None;
        q.role.abandon_session();
    }
    let names = (0..3).map(name).collect();
    let role = Server::new(server_config(ClientOrder::SeededRandom), key(0)).unwrap();
    let mut c = config(3, None, Some(9));
    c.checkpoint_events = true;
    p.co = Some(Coordinator::resume(role, c, names, &cp, p.now).unwrap());
    // No session before every client is back.
    p.connect(2);
    p.connect(0);
    p.drive();
    assert_eq!((p.peers[0].received, p.peers[2].received), (0, 0));
    p.connect(1);
    p.run();
    let (role, log) = p.log();
    assert_eq!(log.sessions_completed, 9);
    assert_eq!(role.model().unwrap(), reference.model().unwrap());
    assert_eq!(role.model().unwrap(), replay(&log).model());
    let plans = |l: &TrainingLog| -> Vec<(usize, u32)> {
        l.sessions
            .iter()
            .filter(|s| s.completed)
            .map(|s| (s.client, s.iterations))
            .collect()
    };
    assert_eq!(plans(&log), plans(&whole_log));
    for c in &log.clients {
        assert_eq!(c.registrations, 2, "{c:?}");
        assert!(c.sessions > 0, "{c:?}");
    }
    assert!(!log.interrupted);
}

#[test]
fn a_checkpoint_of_another_run_or_client_is_refused() {
    let mut p = checkpointing(2, 3);
    p.connect_all();
    p.run();
    let cp = checkpoints(&p).last().copied().unwrap().clone();
    let names = || (0..2).map(name).collect::<Vec<_>>();
    let resume = |cfg: ServerConfig, names: Vec<String>, cp: &gelunet_server::Checkpoint| {
        let role = Server::new(cfg, key(0)).unwrap();
        Coordinator::resume(role, config(2, None, Some(3)), names, cp, Instant::now())
            .map(|_| ())
            .unwrap_err()
    };
    let base = || server_config(ClientOrder::SeededRandom);
    let mismatch =
        |what| CoordinatorError::Checkpoint(gelunet_server::CheckpointError::Mismatch { what });
    let mut other = base();
    other.spec = ModelSpec::new(vec![4, 6, 3], Activation::Sigmoid);
    assert_eq!(resume(other, names(), &cp), mismatch("model spec"));
    let mut other = base();
    other.batch_size = 2;
    assert_eq!(resume(other, names(), &cp), mismatch("batch size"));
    let mut other = base();
    other.schedule_seed = 99;
    assert_eq!(resume(other, names(), &cp), mismatch("schedule seed"));
    let mut other = base();
    other.protocol = gelunet_protocol::v2::Protocol::V2;
    assert_eq!(resume(other, names(), &cp), mismatch("protocol"));
    assert!(matches!(
        resume(base(), vec!["c0".into(), "zed".into()], &cp),
        CoordinatorError::Checkpoint(gelunet_server::CheckpointError::UnknownClient { name })
            if name == "c1"
    ));
    let mut bad = cp.clone();
    bad.next_session += 1;
    assert!(matches!(
        resume(base(), names(), &bad),
        CoordinatorError::Checkpoint(gelunet_server::CheckpointError::Inconsistent { .. })
    ));
    let mut bad = cp.clone();
    bad.completed += 1;
    assert!(matches!(
        resume(base(), names(), &bad),
        CoordinatorError::Checkpoint(gelunet_server::CheckpointError::Inconsistent { .. })
    ));
}

#[test]
fn an_interrupted_coordinator_rolls_back_and_closes_every_client() {
    let mut p = checkpointing(2, 6);
    p.connect_all();
    p.run_until(|p| checkpoints(p).len() == 2);
    p.run_until(|p| p.peers.iter().map(|q| q.received).sum::<usize>() > 0);
    let before = checkpoints(&p)[1].clone();
    let now = p.now;
    p.co().interrupt(now);
    p.run();
    assert!(
        p.peers.iter().all(|q| q.summary.is_none()),
        "closed, not finished"
    );
    assert_eq!(
        checkpoints(&p).len(),
        2,
        "no checkpoint of an abandoned session"
    );
    let (role, log) = p.log();
    assert!(log.interrupted);
    assert_eq!(log.stop_reason, "interrupted");
    assert_eq!(log.sessions_completed, 2);
    let last = log.sessions.last().unwrap();
    assert!(!last.completed);
    assert_eq!(last.note.as_deref(), Some("the server was interrupted"));
    // The model is that of the last checkpoint.
    let gelunet_server::ModelState::Paper { layers } = &before.model else {
        panic!("paper protocol");
    };
    for (l, (w, b)) in role.model().unwrap().layers.iter().zip(layers) {
        assert_eq!((&l.w, &l.b), (w, b));
    }
}
