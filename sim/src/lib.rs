//! In-memory driver: a [`Server`] and `K` [`Client`]s in one process, exchanging the
//! protocol messages directly (no sockets), deterministic for fixed seeds.
//!
//! It counts messages and their postcard sizes ([`gelunet_protocol::messages::wire_size`])
//! per iteration, can inject faults (client abort, disconnect), can record the
//! client → server stream for inspection, and checks the Alg. 5 invariant at the end of
//! every session when asked: `w^F = (w~ + R^w mod N_c) − η·Δw_last`, i.e. the final update
//! gives exactly the unmasked weights after the last iteration's update would have been
//! applied.
//!
//! [`infer`] and [`infer_fixed`] run encrypted inference (one [`InferenceClient`] against
//! a [`Server`]) in memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig, InferStep, InferenceClient};
use gelunet_paillier::{BigInt, PrivateKey};
use gelunet_protocol::group_key::GroupKey;
use gelunet_protocol::mask::centered;
use gelunet_protocol::messages::{wire_size, ClientMessage, ServerMessage};
use gelunet_protocol::schedule::SessionPlan;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::version_mask::VersionMasks;
use gelunet_protocol::{FixedModel, ProtocolViolation};

use gelunet_server::{ClientId, Preparations, Server, ServerError};
use ndarray::Array2;

pub mod synthetic;
pub use synthetic::synthetic_blobs;

/// Everything the in-memory driver can report: the first error of either party, or a
/// broken invariant.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The server role refused a message or failed.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// A client role refused a message or failed.
    #[error("client: {0}")]
    Client(#[from] gelunet_client::ClientError),
    /// An error of the shared protocol code (e.g. measuring a message).
    #[error("protocol: {0}")]
    Protocol(#[from] gelunet_protocol::Error),
    /// [`Simulation::with_shares`] was given fewer keys than shares.
    #[error("no key for client {client} of {clients}")]
    MissingKey {
        /// The first client without a key (0-based).
        client: usize,
        /// How many shares there are.
        clients: usize,
    },
    /// The driver found a broken invariant (Alg. 5 check, message stream).
    #[error("invariant broken: {reason}")]
    Invariant {
        /// Which invariant.
        reason: String,
    },
}

/// Shorthand for the driver's results.
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// Cost of one iteration of a session (the default: nothing counted yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IterationStats {
    /// Session id.
    pub session: u64,
    /// Client index.
    pub client: usize,
    /// Iteration within the session.
    pub iteration: u32,
    /// Messages client → server.
    pub messages_to_server: usize,
    /// Messages server → client.
    pub messages_to_client: usize,
    /// Bytes client → server (postcard).
    pub bytes_to_server: usize,
    /// Bytes server → client (postcard).
    pub bytes_to_client: usize,
    /// Wall time of both parties' work.
    pub elapsed: Duration,
    /// Time spent in the server's handlers.
    pub server_time: Duration,
    /// Time spent in the client's handlers.
    pub client_time: Duration,
    /// `server_time` split by the kind of client message handled
    /// ([`ClientMessage::kind`]: `ForwardRequest` is the forward linear layers,
    /// `BackwardRequest` the backward products, `PlainUpdate` / `MaskedUpdate` the updates).
    pub server_time_by_message: BTreeMap<&'static str, Duration>,
    /// `client_time` split by the kind of server message handled
    /// ([`ServerMessage::kind`]: after `SessionStart` / `UpdateApplied` the client encrypts
    /// its inputs, after `ForwardResponse` it decrypts, activates and encrypts the next
    /// layer or the output error, after `BackwardResponse` it decrypts and makes the update).
    pub client_time_by_message: BTreeMap<&'static str, Duration>,
}

/// A session as the driver ran it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session id.
    pub session: u64,
    /// Client and number of iterations.
    pub plan: SessionPlan,
    /// Whether Alg. 5 was applied (false: abandoned and rolled back).
    pub completed: bool,
}

/// A fault to inject into a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Run normally.
    #[default]
    None,
    /// After `n` client → server messages, the client aborts (sends `Abort`).
    ClientAbortAfter(usize),
    /// After `n` client → server messages, the connection drops (both sides abandon).
    DisconnectAfter(usize),
}

/// The driver (see the module docs).
#[derive(Debug)]
pub struct Simulation {
    server: Server,
    clients: Vec<Client>,
    ids: Vec<ClientId>,
    stats: Vec<IterationStats>,
    records: Vec<SessionRecord>,
    record_messages: bool,
    client_messages: Vec<(usize, ClientMessage)>,
    check_invariants: bool,
    invariant_checks: usize,
    ledger_checks: usize,
    /// The clients' group key (protocol v2), known to the driver as to every client.
    group_key: Option<GroupKey>,
    /// The true model: the server's under the paper's protocol, `W~ + P_v` under v2.
    current: FixedModel,
}

impl Simulation {
    /// Runs the handshakes of every client with the server.
    ///
    /// # Errors
    /// The handshake errors of either side.
    pub fn new(server: Server, clients: Vec<Client>) -> Result<Self> {
        Self::with_group_key(server, clients, GroupKey::generate())
    }

    /// As [`Simulation::new`], with the group key `k` of protocol v2 given to every client
    /// that has none (the driver plays the clients' out-of-band key distribution; unused
    /// under the paper's protocol).
    ///
    /// # Errors
    /// The handshake errors of either side.
    pub fn with_group_key(
        mut server: Server,
        mut clients: Vec<Client>,
        group_key: GroupKey,
    ) -> Result<Self> {
        let v2 = server.protocol() == Protocol::V2;
        if v2 {
            for c in &mut clients {
                if !c.has_group_key() {
                    c.set_group_key(group_key.clone());
                }
            }
        }
        let hello = server.hello();
        let mut ids = Vec::with_capacity(clients.len());
        for c in &mut clients {
            match c.handle_hello(&hello)? {
                ClientMessage::Hello(h) => ids.push(server.register_client(&h)?),
                other => {
                    return Err(ServerError::from(ProtocolViolation::OutOfTurn {
                        expected: "ClientHello".into(),
                        found: other.kind(),
                    })
                    .into())
                }
            }
        }
        let group_key = v2.then_some(group_key);
        let current = unmasked_model(&server, group_key.as_ref())?;
        Ok(Self {
            current,
            group_key,
            server,
            clients,
            ids,
            stats: Vec::new(),
            records: Vec::new(),
            record_messages: false,
            client_messages: Vec::new(),
            check_invariants: false,
            invariant_checks: 0,
            ledger_checks: 0,
        })
    }

    /// A simulation of `server` and one client per data share (paper §3: each data owner
    /// keeps its own data and key): client `c` holds `shares[c]` (features `n_c × n_0`,
    /// unscaled, and labels), the next key of `keys` and the configuration `config(c)`.
    ///
    /// # Errors
    /// [`SimError::MissingKey`] if `keys` ends before the shares do; the first error of
    /// [`Client::new`]; as [`Simulation::new`].
    pub fn with_shares(
        server: Server,
        shares: &[(Array2<f64>, Vec<usize>)],
        keys: impl IntoIterator<Item = PrivateKey>,
        config: impl Fn(usize) -> ClientConfig,
    ) -> Result<Self> {
        let mut keys = keys.into_iter();
        let clients = shares
            .iter()
            .enumerate()
            .map(|(c, (x, y))| {
                let key = keys.next().ok_or(SimError::MissingKey {
                    client: c,
                    clients: shares.len(),
                })?;
                Ok(Client::new(config(c), key, x.clone(), y.clone())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(server, clients)
    }

    /// Records every client → server message ([`Simulation::client_messages`]).
    pub fn record_messages(&mut self, on: bool) {
        self.record_messages = on;
    }

    /// Checks the Alg. 5 invariant at the end of every completed session (uses the
    /// client's ledger through its test-only accessor).
    pub fn check_invariants(&mut self, on: bool) {
        self.check_invariants = on;
    }

    /// Number of protocol v2 ledger checks that passed: `W~ + R = W_v − η·ΣΔ` after
    /// every client message the server handled within a session (with
    /// [`Simulation::check_invariants`]).
    pub fn ledger_checks(&self) -> usize {
        self.ledger_checks
    }

    /// Number of Alg. 5 invariant checks that passed.
    pub fn invariant_checks(&self) -> usize {
        self.invariant_checks
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The server, mutably (for fault-injection tests).
    pub fn server_mut(&mut self) -> &mut Server {
        &mut self.server
    }

    /// The clients.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// The clients, mutably.
    pub fn clients_mut(&mut self) -> &mut [Client] {
        &mut self.clients
    }

    /// Per-iteration costs so far.
    pub fn stats(&self) -> &[IterationStats] {
        &self.stats
    }

    /// Sessions run so far.
    pub fn records(&self) -> &[SessionRecord] {
        &self.records
    }

    /// The recorded client → server messages with their sender.
    pub fn client_messages(&self) -> &[(usize, ClientMessage)] {
        &self.client_messages
    }

    /// The true model between sessions: the server's under the paper's protocol; under
    /// v2 `W~ + P_v`, which only the clients (and this driver, which knows the group key)
    /// can compute.
    ///
    /// Under v2 the driver recomputes it when its own [`Simulation::run_session`] sees a
    /// session end; a test that drives the roles by hand calls
    /// [`Simulation::refresh_model`].
    pub fn model(&self) -> &FixedModel {
        match self.server.protocol() {
            Protocol::Paper => self.server.model().unwrap_or(&self.current),
            Protocol::V2 => &self.current,
        }
    }

    /// Recomputes [`Simulation::model`] from the server's state (protocol v2).
    ///
    /// # Errors
    /// [`SimError::Invariant`] if a weight does not fit `i128`.
    pub fn refresh_model(&mut self) -> Result<()> {
        self.current = unmasked_model(&self.server, self.group_key.as_ref())?;
        Ok(())
    }

    /// The group key (protocol v2).
    pub fn group_key(&self) -> Option<&GroupKey> {
        self.group_key.as_ref()
    }

    /// Protocol v2: client `idx` releases the current model version (sends its seed);
    /// the server unmasks it. Returns the released model.
    ///
    /// # Errors
    /// [`SimError::Invariant`] under the paper's protocol or for an unknown client;
    /// the client's [`gelunet_client::ClientError::NoGroupKey`]; [`ServerError::Release`] /
    /// [`ServerError::Config`] from the server.
    pub fn release(&mut self, idx: usize) -> Result<FixedModel> {
        let version = self
            .server
            .model_version()
            .ok_or_else(|| SimError::Invariant {
                reason: "the paper's server has nothing to release".into(),
            })?;
        let client = self.clients.get(idx).ok_or_else(|| SimError::Invariant {
            reason: format!("no client {idx}"),
        })?;
        let seed = client.release_seed(version)?;
        Ok(self.server.release(version.version, &seed)?.clone())
    }

    /// Runs one session to completion.
    ///
    /// # Errors
    /// The first error of either party, or [`SimError::Invariant`].
    pub fn run_session(&mut self) -> Result<SessionRecord> {
        self.run_session_with(Fault::None)
    }

    /// The training progress the coordinator schedules `η_s` by: samples processed in
    /// completed sessions (`iterations · B` each) and samples the clients hold.
    pub fn progress(&self) -> (u64, u64) {
        let batch = self.server.config().batch_size as u64;
        let done = self
            .records
            .iter()
            .filter(|r| r.completed)
            .map(|r| u64::from(r.plan.iterations) * batch)
            .sum();
        let held = self
            .clients
            .iter()
            .filter_map(|c| c.dataset())
            .map(|d| d.len() as u64)
            .sum();
        (done, held)
    }

    /// Runs `n` sessions.
    ///
    /// # Errors
    /// As [`Simulation::run_session`].
    pub fn run_sessions(&mut self, n: usize) -> Result<Vec<SessionRecord>> {
        (0..n).map(|_| self.run_session()).collect()
    }

    /// Runs one session with a fault injected.
    ///
    /// # Errors
    /// As [`Simulation::run_session`].
    pub fn run_session_with(&mut self, fault: Fault) -> Result<SessionRecord> {
        let mut t0 = Instant::now();
        let (done, held) = self.progress();
        let eta = self.server.session_rate(done, held);
        let (cid, start) = self.server.start_session_at(eta)?;
        let (session, iterations) = match &start {
            ServerMessage::SessionStart(s) => (s.session, s.iterations),
            other => {
                return Err(SimError::Invariant {
                    reason: format!("start_session gave {}", other.kind()),
                })
            }
        };
        let idx = self
            .ids
            .iter()
            .position(|&i| i == cid)
            .ok_or(ServerError::UnknownClient { client: cid.0 })?;
        let plan = SessionPlan {
            client: idx,
            iterations,
        };
        let mut cur = IterationStats {
            session,
            client: idx,
            ..IterationStats::default()
        };
        let mut sent = 0usize;
        let mut to_client = start;
        let completed = loop {
            cur.messages_to_client += 1;
            cur.bytes_to_client += wire_size(&to_client)?;
            let ends_iteration = matches!(
                to_client,
                ServerMessage::UpdateApplied(_) | ServerMessage::SessionEnd(_)
            );
            if ends_iteration {
                cur.elapsed = t0.elapsed();
                let next = IterationStats {
                    session: cur.session,
                    client: cur.client,
                    iteration: cur.iteration + 1,
                    ..IterationStats::default()
                };
                self.stats.push(std::mem::replace(&mut cur, next));
                t0 = Instant::now();
            }
            let is_end = matches!(to_client, ServerMessage::SessionEnd(_));
            let tc = Instant::now();
            let reply = self.clients[idx].handle(&to_client)?;
            let spent = tc.elapsed();
            cur.client_time += spent;
            *cur.client_time_by_message
                .entry(to_client.kind())
                .or_default() += spent;
            let Some(msg) = reply else {
                break is_end;
            };
            match fault {
                Fault::ClientAbortAfter(n) if sent == n => {
                    let abort =
                        self.clients[idx]
                            .abort("fault injection")
                            .ok_or(SimError::Invariant {
                                reason: "client had no session to abort".into(),
                            })?;
                    self.deliver_to_server(idx, cid, &abort, &mut cur)?;
                    break false;
                }
                Fault::DisconnectAfter(n) if sent == n => {
                    self.clients[idx].abandon_session();
                    self.server.abandon_session();
                    break false;
                }
                _ => {}
            }
            sent += 1;
            let expected_final = if self.check_invariants
                && matches!(
                    msg,
                    ClientMessage::FinalUpdate(_) | ClientMessage::Rollover(_)
                ) {
                Some(self.expected_final(idx)?)
            } else {
                None
            };
            let answer = self.deliver_to_server(idx, cid, &msg, &mut cur)?;
            if self.check_invariants && self.server.protocol() == Protocol::V2 {
                self.check_ledger(idx, session)?;
            }
            if matches!(answer, Some(ServerMessage::SessionEnd(_))) {
                // The model changed: the paper's Alg. 5, or v2's rollover to P_{v+1}.
                self.current = unmasked_model(&self.server, self.group_key.as_ref())?;
            }
            if let Some(expected) = expected_final {
                if self.current.layers != expected {
                    return Err(SimError::Invariant {
                        reason: format!(
                            "Alg. 5: w^F differs from w~ + R - eta*dw in session {session}"
                        ),
                    });
                }
                self.invariant_checks += 1;
            }
            match answer {
                Some(a) => to_client = a,
                None => break false,
            }
        };
        if cur.messages_to_server > 0 {
            cur.elapsed = t0.elapsed();
            self.stats.push(cur);
        }
        let record = SessionRecord {
            session,
            plan,
            completed,
        };
        self.records.push(record.clone());
        Ok(record)
    }

    fn deliver_to_server(
        &mut self,
        idx: usize,
        cid: ClientId,
        msg: &ClientMessage,
        cur: &mut IterationStats,
    ) -> Result<Option<ServerMessage>> {
        cur.messages_to_server += 1;
        cur.bytes_to_server += wire_size(msg)?;
        if self.record_messages {
            self.client_messages.push((idx, msg.clone()));
        }
        let t = Instant::now();
        let r = self.server.handle(cid, msg);
        let spent = t.elapsed();
        cur.server_time += spent;
        *cur.server_time_by_message.entry(msg.kind()).or_default() += spent;
        Ok(r?)
    }

    /// Protocol v2 within a session: `W~ + R = W_v − η·ΣΔ`, where `W_v` is the true model
    /// at the session's start, `R` the client's ledger and `ΣΔ` its accumulated gradients
    /// (the updates the server applied so far). Skipped once the session has ended.
    fn check_ledger(&mut self, idx: usize, session: u64) -> Result<()> {
        let client = &self.clients[idx];
        let (Some(masked), Some((rw, rb)), Some(acc)) = (
            self.server.masked_weights(),
            client.ledger_insecure_for_tests(),
            client.session_gradients(),
        ) else {
            return Ok(());
        };
        let scales = self.server.config().scales;
        let eta = self.server.current_learning_rate();
        for (i, ((ml, g), l)) in masked
            .iter()
            .zip(&acc.layers)
            .zip(&self.current.layers)
            .enumerate()
        {
            let (dw, db) = gelunet_protocol::math::scaled_step(&scales, eta, g)?;
            let ok_w = ndarray::Zip::from(&ml.w)
                .and(&rw[i])
                .and(&l.w)
                .and(&dw)
                .all(|m, r, &w, &d| m + BigInt::from(r.clone()) == BigInt::from(w - d));
            let ok_b = ndarray::Zip::from(&ml.b)
                .and(&rb[i])
                .and(&l.b)
                .and(&db)
                .all(|m, r, &b, &d| m + BigInt::from(r.clone()) == BigInt::from(b - d));
            if !(ok_w && ok_b) {
                return Err(SimError::Invariant {
                    reason: format!("v2: W~ + R differs from W - eta*sum(dw) in session {session}"),
                });
            }
        }
        self.ledger_checks += 1;
        Ok(())
    }

    /// `(w~ + R mod N_c) − η·Δw_last` for every layer, before the final update.
    fn expected_final(&self, idx: usize) -> Result<Vec<gelunet_protocol::LayerParams>> {
        let client = &self.clients[idx];
        let invariant = |reason: &str| SimError::Invariant {
            reason: reason.into(),
        };
        let masked = self
            .server
            .masked_weights()
            .ok_or_else(|| invariant("no masked weights"))?;
        let (rw, rb) = client
            .ledger_insecure_for_tests()
            .ok_or_else(|| invariant("no ledger"))?;
        let last = client
            .last_gradients()
            .ok_or_else(|| invariant("no gradients"))?;
        let n_c = client.public_key().n();
        let eta = BigInt::from(self.server.current_learning_rate());
        let mut out = Vec::with_capacity(masked.len());
        for (i, ml) in masked.iter().enumerate() {
            let unmask = |m: &BigInt, r: &gelunet_paillier::BigUint, g: i128| -> Result<i128> {
                let v = centered(
                    &gelunet_protocol::mask::mod_n(&(m + BigInt::from(r.clone())), n_c),
                    n_c,
                ) - &eta * BigInt::from(g);
                i128::try_from(v).map_err(|_| invariant("unmasked weight out of i128"))
            };
            let w = ndarray::Zip::from(&ml.w)
                .and(&rw[i])
                .and(&last.layers[i].w)
                .map_collect(|m, r, &g| unmask(m, r, g));
            let b = ndarray::Zip::from(&ml.b)
                .and(&rb[i])
                .and(&last.layers[i].b)
                .map_collect(|m, r, &g| unmask(m, r, g));
            let w = w.into_iter().collect::<Result<Vec<_>>>()?;
            let b = b.into_iter().collect::<Result<Vec<_>>>()?;
            out.push(gelunet_protocol::LayerParams {
                w: ndarray::Array2::from_shape_vec(ml.w.dim(), w)
                    .map_err(|_| invariant("shape"))?,
                b: ndarray::Array1::from(b),
            });
        }
        Ok(out)
    }
}

/// The true model of `server`: its own under the paper's protocol; under v2
/// `W~ + P_v`, with `P_v` derived from the group key (`docs/DESIGN.md` "Protocol v2").
fn unmasked_model(server: &Server, group_key: Option<&GroupKey>) -> Result<FixedModel> {
    let invariant = |reason: &str| SimError::Invariant {
        reason: reason.into(),
    };
    let (Some(params), Some(version), Some(masked)) = (
        server.v2_params(),
        server.model_version(),
        server.masked_model(),
    ) else {
        return server
            .model()
            .cloned()
            .ok_or_else(|| invariant("the paper's server has no model"));
    };
    let k = group_key.ok_or_else(|| invariant("protocol v2 without a group key"))?;
    let spec = &server.config().spec;
    let masks = if version.version == 0 {
        VersionMasks::zero(spec)
    } else {
        VersionMasks::derive(
            &k.version_seed(params.model_id, version.version, version.nonce),
            spec,
            params.widths,
        )
    };
    let to_i128 = |v: BigInt| i128::try_from(v).map_err(|_| invariant("weight out of i128"));
    let mut layers = Vec::with_capacity(masked.len());
    for (ml, p) in masked.iter().zip(masks.layers()) {
        let w = ndarray::Zip::from(&ml.w)
            .and(&p.weights)
            .map_collect(|w, r| to_i128(w + BigInt::from(r.clone())));
        let b = ndarray::Zip::from(&ml.b)
            .and(&p.biases)
            .map_collect(|b, r| to_i128(b + BigInt::from(r.clone())));
        let w = w.into_iter().collect::<Result<Vec<_>>>()?;
        let b = b.into_iter().collect::<Result<Vec<_>>>()?;
        layers.push(gelunet_protocol::LayerParams {
            w: ndarray::Array2::from_shape_vec(ml.w.dim(), w).map_err(|_| invariant("shape"))?,
            b: ndarray::Array1::from(b),
        });
    }
    Ok(FixedModel {
        spec: spec.clone(),
        layers,
    })
}

/// Runs encrypted inference in memory ([`Server::infer`] with an
/// [`InferenceClient`]): the server checks the client's hello
/// ([`Server::inference_key`]), then one request and answer per layer. Returns the
/// predictions and the softmax probabilities.
///
/// # Errors
/// The first error of either party.
pub fn infer(
    server: &Server,
    client: &mut InferenceClient,
    samples: &ndarray::Array2<f64>,
) -> Result<(Vec<usize>, ndarray::Array2<f64>)> {
    InferenceLink::new(server, client)?.infer(server, client, samples)
}

/// As [`infer`] for inputs already quantized at `2^fa`.
///
/// # Errors
/// As [`infer`].
pub fn infer_fixed(
    server: &Server,
    client: &mut InferenceClient,
    samples: ndarray::ArrayView2<'_, i128>,
) -> Result<(Vec<usize>, ndarray::Array2<f64>)> {
    InferenceLink::new(server, client)?.infer_fixed(server, client, samples)
}

/// One in-memory inference connection, as the shell's: the client's key checked once
/// ([`Server::inference_key`]) and the server's preparations for this client
/// ([`Preparations`]; docs/DESIGN.md "Preprocessed inference").
#[derive(Debug)]
pub struct InferenceLink {
    key: gelunet_paillier::PublicKey,
    held: Preparations,
}

impl InferenceLink {
    /// Opens a connection for `client`.
    ///
    /// # Errors
    /// [`Server::inference_key`]'s.
    pub fn new(server: &Server, client: &InferenceClient) -> Result<Self> {
        Ok(Self {
            key: server.inference_key(&client.hello())?,
            held: Preparations::new(),
        })
    }

    /// A connection for a client whose key the server has already checked
    /// ([`Server::inference_key`]'s answer), with no preparations.
    pub fn with_key(key: gelunet_paillier::PublicKey) -> Self {
        Self {
            key,
            held: Preparations::new(),
        }
    }

    /// The offline part of preprocessed inference: the client's
    /// [`InferenceClient::prepare`] requests answered by the server and acknowledged to
    /// the client. Returns the number of layers prepared.
    ///
    /// # Errors
    /// The first error of either party.
    pub fn prepare(&mut self, server: &Server, client: &mut InferenceClient) -> Result<usize> {
        let requests = client.prepare()?;
        for msg in &requests {
            let ack = server.handle_inference(&self.key, &mut self.held, msg)?;
            client.handle_prepared(&ack)?;
        }
        Ok(requests.len())
    }

    /// Encrypted inference of `samples` over this connection (prepared layers online).
    ///
    /// # Errors
    /// The first error of either party.
    pub fn infer(
        &mut self,
        server: &Server,
        client: &mut InferenceClient,
        samples: &ndarray::Array2<f64>,
    ) -> Result<(Vec<usize>, ndarray::Array2<f64>)> {
        let first = client.start(samples)?;
        self.drive(server, client, first)
    }

    /// As [`InferenceLink::infer`] for inputs already at `2^fa`.
    ///
    /// # Errors
    /// The first error of either party.
    pub fn infer_fixed(
        &mut self,
        server: &Server,
        client: &mut InferenceClient,
        samples: ndarray::ArrayView2<'_, i128>,
    ) -> Result<(Vec<usize>, ndarray::Array2<f64>)> {
        let first = client.start_fixed(samples)?;
        self.drive(server, client, first)
    }

    /// Preparations the server holds for this connection.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn drive(
        &mut self,
        server: &Server,
        client: &mut InferenceClient,
        first: ClientMessage,
    ) -> Result<(Vec<usize>, ndarray::Array2<f64>)> {
        let mut msg = first;
        loop {
            if !matches!(msg, ClientMessage::Infer(_) | ClientMessage::InferMasked(_)) {
                return Err(SimError::Invariant {
                    reason: format!("inference client sent {}", msg.kind()),
                });
            }
            let answer = match server.handle_inference(&self.key, &mut self.held, &msg) {
                Ok(a) => a,
                Err(e) => {
                    client.cancel();
                    return Err(e.into());
                }
            };
            match client.handle(&answer)? {
                InferStep::Next(m) => msg = m,
                InferStep::Done(predictions, probabilities) => {
                    return Ok((predictions, probabilities))
                }
            }
        }
    }
}
