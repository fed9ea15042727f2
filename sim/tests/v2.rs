//! Protocol v2 (docs/DESIGN.md "Protocol v2"): exactness after every session, dropouts at
//! every step of a session, release, restores that reuse no mask, a server that never
//! holds a true weight, and a client that stands up to a malicious server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_client::{Client, ClientConfig, ClientError};
use gelunet_paillier::BigInt;
use gelunet_protocol::group_key::{GroupKey, VersionSeed};
use gelunet_protocol::mask::MaskTarget;
use gelunet_protocol::messages::{ClientMessage, ErrorCode, ServerMessage};
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{Activation, MaskMode, ModelSpec, ProtocolViolation};
use gelunet_server::{Server, ServerError};
use gelunet_sim::{Fault, Simulation};

fn spec() -> ModelSpec {
    ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid)
}

#[test]
fn exact_after_every_session_for_three_clients() {
    for (spec, batch) in [
        (spec(), 1),
        (ModelSpec::new(vec![4, 6, 3], Activation::Relu), 2),
        (ModelSpec::new(vec![4, 5, 4, 3], Activation::Tanh), 1),
    ] {
        let (mut sim, mut reference) = build(v2_config(spec, batch), 3, 12);
        assert_eq!(sim.server().protocol(), Protocol::V2);
        assert!(sim.server().public_key().is_none(), "v2 has no server key");
        sim.check_invariants(true);
        let mut multi = 0;
        for s in 0..7 {
            let rec = sim.run_session().unwrap();
            assert!(rec.completed);
            multi += usize::from(rec.plan.iterations > 1);
            reference.run_session(rec.plan).unwrap();
            // W~ + P_v equals the plaintext fixed-point reference, bit for bit.
            assert_eq!(sim.model(), reference.model(), "after session {s}");
            assert_eq!(sim.server().model_version().unwrap().version, s + 1);
        }
        assert_eq!(sim.invariant_checks(), 7);
        // W~ + R = W after every client message the server handled in a session.
        assert!(sim.ledger_checks() > 7 * 3, "{}", sim.ledger_checks());
        assert!(
            multi > 0,
            "some session must exercise plaintext masked updates"
        );
        // Release: a client sends the version seed; the server unmasks and range-checks.
        let released = sim.release(1).unwrap();
        assert_eq!(&released, reference.model());
        assert_eq!(sim.server().true_model().unwrap(), reference.model());
    }
}

#[test]
fn the_server_never_holds_a_true_weight_nor_sees_a_gradient() {
    let (mut sim, _) = build(v2_config(spec(), 1), 3, 12);
    sim.record_messages(true);
    // Before any release the server has no model in the clear.
    assert!(matches!(
        sim.server().true_model(),
        Err(ServerError::NotReleased)
    ));
    for _ in 0..6 {
        sim.run_session().unwrap();
        let truth = sim.model().clone();
        let masked = sim.server().masked_model().unwrap();
        for (t, m) in truth.layers.iter().zip(masked) {
            for (w, mw) in t.w.iter().zip(&m.w) {
                assert_ne!(&BigInt::from(*w), mw, "a true weight on the server");
            }
            for (b, mb) in t.b.iter().zip(&m.b) {
                assert_ne!(&BigInt::from(*b), mb, "a true bias on the server");
            }
        }
    }
    // Every plaintext update is at the scale of its mask, never of a gradient:
    // |η·Δ| < 2^g while D = η·Δ + r with r uniform on [0, 2^(σ+g)).
    let scales = sim.server().config().scales;
    let g = MaskMode::g_bits(&scales, MaskTarget::Weight);
    let (mut plain, mut rollovers) = (0, 0);
    for (_, msg) in sim.client_messages() {
        let layers = match msg {
            ClientMessage::PlainUpdate(u) => {
                plain += 1;
                &u.layers
            }
            ClientMessage::Rollover(r) => {
                rollovers += 1;
                &r.layers
            }
            ClientMessage::Forward(_) | ClientMessage::Backward(_) => continue,
            other => panic!("unexpected {} under v2", other.kind()),
        };
        for d in layers
            .iter()
            .flat_map(|l| l.weights.iter().chain(&l.biases))
        {
            assert!(d.bits() > u64::from(g) + 8, "an update at gradient scale");
        }
    }
    assert_eq!(rollovers, 6);
    assert!(plain > 0);
}

#[test]
fn a_dropout_at_any_step_restores_the_session_start_and_another_client_continues() {
    let (mut probe, _) = build(v2_config(spec(), 1), 3, 12);
    probe.record_messages(true);
    probe.run_session().unwrap();
    let steps = probe.client_messages().len();
    assert!(steps >= 3);
    for n in 0..steps {
        let (mut sim, mut reference) = build(v2_config(spec(), 1), 3, 12);
        let before = sim.server().v2_checkpoint().unwrap();
        let rec = sim.run_session_with(Fault::DisconnectAfter(n)).unwrap();
        assert!(!rec.completed);
        assert_eq!(sim.server().v2_checkpoint().unwrap(), before, "step {n}");
        assert!(sim.server().active_session().is_none());
        // The next sessions (other clients, then the same one again) continue exactly.
        for _ in 0..4 {
            let rec = sim.run_session().unwrap();
            reference.run_session(rec.plan).unwrap();
            assert_eq!(
                sim.model(),
                reference.model(),
                "after a dropout at step {n}"
            );
        }
    }
    // An abort by the client restores the same way.
    let (mut sim, mut reference) = build(v2_config(spec(), 1), 3, 12);
    sim.run_session_with(Fault::ClientAbortAfter(1)).unwrap();
    let rec = sim.run_session().unwrap();
    reference.run_session(rec.plan).unwrap();
    assert_eq!(sim.model(), reference.model());
}

#[test]
fn a_restore_from_an_older_checkpoint_reuses_no_mask() {
    let (mut sim, _) = build(v2_config(spec(), 1), 3, 12);
    sim.run_session().unwrap();
    let old = sim.server().v2_checkpoint().unwrap();
    sim.run_session().unwrap();
    let first = sim.server().v2_checkpoint().unwrap();
    sim.server_mut().restore_v2(&old).unwrap();
    assert_eq!(sim.server().model_version(), Some(old.version));
    sim.run_session().unwrap();
    let second = sim.server().v2_checkpoint().unwrap();
    assert_eq!(second.version.version, first.version.version);
    assert_ne!(second.version.nonce, first.version.nonce, "a fresh nonce");
    // Fresh masks: no masked weight of the rerun equals the first run's.
    for (a, b) in first.masked.iter().zip(&second.masked) {
        assert!(a.w.iter().zip(&b.w).all(|(x, y)| x != y));
    }
    // A checkpoint of another model is refused.
    let (other, _) = build(
        v2_config(ModelSpec::new(vec![4, 3], Activation::Sigmoid), 1),
        3,
        12,
    );
    let foreign = other.server().v2_checkpoint().unwrap();
    assert!(matches!(
        sim.server_mut().restore_v2(&foreign),
        Err(ServerError::Config { .. })
    ));
}

#[test]
fn a_wrong_release_is_refused_and_releases_nothing() {
    let (mut sim, reference) = build(v2_config(spec(), 1), 3, 12);
    sim.run_session().unwrap();
    let v = sim.server().model_version().unwrap().version;
    let wrong = VersionSeed::from_bytes([7; 32]);
    assert!(matches!(
        sim.server_mut().release(v, &wrong),
        Err(ServerError::Release { .. })
    ));
    assert!(matches!(
        sim.server_mut().release(v + 1, &wrong),
        Err(ServerError::Release { .. })
    ));
    assert_eq!(sim.server().released_version(), None);
    let _ = reference;
    // The error text names no weight.
    let e = sim.server_mut().release(v, &wrong).unwrap_err();
    assert!(!e.to_string().chars().any(|c| c.is_ascii_digit()), "{e}");
}

#[test]
fn clients_with_another_group_key_cannot_unmask() {
    // A client with its own key derives other masks: its pre-activations do not
    // decode, and it refuses the session instead of training on garbage.
    let cfg = v2_config(spec(), 1);
    let data = share(&cfg.spec, 2, 12, 5);
    let server = Server::new(cfg.clone(), None).unwrap();
    let mut clients: Vec<Client> = data
        .iter()
        .enumerate()
        .map(|(c, (x, y))| {
            Client::new(client_config(c, false), key(c + 1), x.clone(), y.clone()).unwrap()
        })
        .collect();
    clients[1].set_group_key(GroupKey::generate());
    let mut sim = Simulation::with_group_key(server, clients, GroupKey::generate()).unwrap();
    // Session 1 (client 0, P_0 = 0) works for anyone; it moves to P_1 under the common
    // key. Client 1 then cannot unmask P_1.
    sim.run_session().unwrap();
    let e = sim.run_session().unwrap_err();
    let text = e.to_string();
    assert!(text.contains("client"), "{text}");
}

/// A malicious server's hello or session start that the client must refuse, whatever
/// the server's own configuration says.
#[test]
fn a_client_refuses_a_malicious_servers_proposals() {
    let cfg = v2_config(spec(), 1);
    let data = share(&cfg.spec, 1, 12, 5);
    let server = Server::new(cfg.clone(), None).unwrap();
    let fresh = || {
        let mut c = client_on(client_config(0, false), &data[0]);
        c.set_group_key(GroupKey::from_bytes([3; 32]));
        c
    };
    let good = server.hello();
    let policy = |e: ClientError| {
        assert!(matches!(e, ClientError::Policy { .. }), "{e}");
        assert_eq!(e.code(), ErrorCode::Config);
    };
    // σ = 0.
    let mut h = good.clone();
    h.mask = MaskMode::Statistical { sigma: 0 };
    if let Some(p) = h.v2.as_mut() {
        p.sigma = 0;
    }
    policy(fresh().handle_hello(&h).unwrap_err());
    // Mask widths that do not follow from the scales.
    let mut h = good.clone();
    if let Some(p) = h.v2.as_mut() {
        p.widths.weight_bits = 8;
    }
    policy(fresh().handle_hello(&h).unwrap_err());
    // An oversize model.
    let mut c = client_on(
        ClientConfig {
            policy: gelunet_client::ClientPolicy {
                max_parameters: 10,
                ..Default::default()
            },
            ..client_config(0, false)
        },
        &data[0],
    );
    c.set_group_key(GroupKey::from_bytes([3; 32]));
    policy(c.handle_hello(&good).unwrap_err());
    // An oversize batch.
    let mut h = good.clone();
    h.batch_size = 1 << 20;
    policy(fresh().handle_hello(&h).unwrap_err());
    // No group key.
    let mut c = client_on(client_config(0, false), &data[0]);
    assert!(matches!(
        c.handle_hello(&good).unwrap_err(),
        ClientError::NoGroupKey
    ));
    // A session longer than the bound (d·B above the smallest fan-in, 4).
    let mut c = fresh();
    c.handle_hello(&good).unwrap();
    let mut server = server;
    let ClientMessage::Hello(h) = fresh().handle_hello(&good).unwrap() else {
        panic!()
    };
    server.register_client(&h).unwrap();
    let (_, start) = server.start_session().unwrap();
    let ServerMessage::SessionStart(mut s) = start else {
        panic!()
    };
    s.iterations = 5;
    policy(
        c.handle(&ServerMessage::SessionStart(s.clone()))
            .unwrap_err(),
    );
    assert_eq!(c.active_session(), None);
    // A session rate above the handshake's η (it would break the masks' bound), zero,
    // or none at all: refused, no session begun.
    s.iterations = 1;
    let eta = good.v2.as_ref().unwrap().eta;
    for rate in [Some(eta + 1), Some(0), Some(-1)] {
        let mut bad = s.clone();
        bad.learning_rate = rate;
        let e = c.handle(&ServerMessage::SessionStart(bad)).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Violation(ProtocolViolation::Range {
                    kind: Some(gelunet_protocol::ValueKind::LearningRate)
                })
            ),
            "{rate:?}: {e}"
        );
        assert_eq!(e.code(), ErrorCode::Range);
        assert_eq!(c.active_session(), None);
    }
    let mut bad = s.clone();
    bad.learning_rate = None;
    let e = c.handle(&ServerMessage::SessionStart(bad)).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
    // The server refuses to start a session at a rate outside [1, η].
    server.abandon_session().unwrap();
    for rate in [0, eta + 1] {
        assert!(matches!(
            server.start_session_at(rate).unwrap_err(),
            ServerError::Config { .. }
        ));
    }
    // A paper-protocol session start (an [η]_s) in a v2 handshake.
    s.version = None;
    let e = c.handle(&ServerMessage::SessionStart(s)).unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
}

#[test]
fn an_out_of_range_decryption_ends_the_session_with_a_fixed_text() {
    let (mut sim, _) = build(v2_config(spec(), 1), 1, 12);
    let (cid, start) = sim.server_mut().start_session().unwrap();
    let client = &mut sim.clients_mut()[cid.0];
    let ClientMessage::Forward(req) = client.handle(&start).unwrap().unwrap() else {
        panic!()
    };
    // The malicious server answers with an encryption of a huge value.
    let pk = client.public_key().clone();
    let secret = BigInt::from(123_456_789_987_654_321u64) << 300;
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(5);
    let ct = pk.encrypt(&secret, &mut rng).unwrap();
    let resp = gelunet_protocol::messages::ForwardResponse {
        session: req.session,
        iteration: 0,
        layer: 1,
        packing: req.packing,
        pre_activations: vec![ct; 5],
    };
    let e = client.handle(&ServerMessage::Forward(resp)).unwrap_err();
    assert!(e.ends_connection(), "{e}");
    assert_eq!(e.code(), ErrorCode::Range);
    assert_eq!(client.active_session(), None, "the session is over");
    let report = e.report(Some(req.session));
    assert_eq!(report.detail, ErrorCode::Range.detail());
    for shown in [e.to_string(), format!("{e:?}"), report.detail] {
        assert!(!shown.contains("123456789"), "{shown}");
    }
}
