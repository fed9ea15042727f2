//! Bad input to each role gives a typed error and leaves the state unchanged; the session
//! then continues and still matches the plaintext reference exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_client::{Client, ClientError};
use gelunet_paillier::{BigInt, BigUint, Ciphertext, PrivateKey};
use gelunet_protocol::messages::{
    ClientMessage, ErrorCode, LayerCiphertexts, MaskedUpdate, Packing, ServerMessage,
    UpdateApplied, UpdatePacking,
};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{
    Activation, FixedModel, MaskMode, ModelSpec, SessionLength, SessionPlan, SessionPolicy,
};
use gelunet_server::{
    ClientId, DecryptedUpdate, InsecureOptions, MaskedLayer, Server, ServerConfig, ServerError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[derive(Debug, PartialEq)]
struct ServerSnap {
    model: Option<FixedModel>,
    masked: Option<Vec<MaskedLayer>>,
    active: Option<(u64, ClientId)>,
    history: usize,
    last: Option<Vec<DecryptedUpdate>>,
}

fn snap_server(s: &Server) -> ServerSnap {
    ServerSnap {
        model: s.model().cloned(),
        masked: s.masked_weights().map(|m| m.to_vec()),
        active: s.active_session(),
        history: s.history().len(),
        last: s.last_decrypted_update().map(|m| m.to_vec()),
    }
}

type ClientSnap = (
    Option<u64>,
    Option<(Vec<ndarray::Array2<BigUint>>, Vec<ndarray::Array1<BigUint>>)>,
    Option<gelunet_protocol::Gradients>,
    Option<gelunet_protocol::Gradients>,
);

fn snap_client(c: &Client) -> ClientSnap {
    (
        c.active_session(),
        c.ledger_insecure_for_tests(),
        c.session_gradients().cloned(),
        c.last_gradients().cloned(),
    )
}

/// A ciphertext claiming `ct`'s key with the raw value `c` (what a peer could send).
fn forge(ct: &Ciphertext, c: &BigUint) -> Ciphertext {
    let mut v = serde_json::to_value(ct).unwrap();
    v["c"] = serde_json::Value::String(c.to_str_radix(16));
    serde_json::from_value(v).unwrap()
}

fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(99)
}

fn encrypt_all(key: &PrivateKey, v: &BigInt, n: usize) -> Vec<Ciphertext> {
    let mut r = rng();
    (0..n)
        .map(|_| key.public_key().encrypt(v, &mut r).unwrap())
        .collect()
}

fn server_err(server: &mut Server, from: usize, msg: &ClientMessage) -> ServerError {
    let before = snap_server(server);
    let e = server.handle(ClientId(from), msg).unwrap_err();
    assert_eq!(snap_server(server), before, "server state changed by {e}");
    e
}

fn client_err(client: &mut Client, msg: &ServerMessage) -> ClientError {
    let before = snap_client(client);
    let e = client.handle(msg).unwrap_err();
    if e.ends_connection() {
        // A fault of a decrypted value ends the session (no decryption oracle).
        assert_eq!(client.active_session(), None, "session kept after {e}");
    } else {
        assert_eq!(snap_client(client), before, "client state changed by {e}");
    }
    e
}

fn cfg_fixed(d: u32) -> ServerConfig {
    let mut cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
    );
    cfg.policy = SessionPolicy {
        length: SessionLength::Fixed(d),
        ..SessionPolicy::default()
    };
    cfg
}

/// A forward response whose decryption fails (a ciphertext under another key, a forged
/// ciphertext, a pre-activation out of range) ends the client's session: no second try
/// from which a malicious server could learn anything value by value.
#[test]
fn faults_of_decrypted_values_end_the_session() {
    type Mutation = fn(&mut gelunet_protocol::messages::ForwardResponse, usize, &BigUint);
    let cases: [(Mutation, ErrorCode); 3] = [
        (
            |m, _, _| m.pre_activations[0] = encrypt_all(&key(5), &BigInt::from(5), 1).remove(0),
            ErrorCode::Ciphertext,
        ),
        (
            |m, _, n| m.pre_activations[0] = forge(&m.pre_activations[0], n),
            ErrorCode::Ciphertext,
        ),
        (
            |m, c, _| {
                let len = m.pre_activations.len();
                m.pre_activations = encrypt_all(&key(c + 1), &(BigInt::from(1) << 200), len);
            },
            ErrorCode::Range,
        ),
    ];
    for (mutate, code) in cases {
        let (mut sim, _) = build(cfg_fixed(2), 3, 12);
        let (cid, start) = sim.server_mut().start_session().unwrap();
        let c = cid.0;
        let fwd1 = sim.clients_mut()[c].handle(&start).unwrap().unwrap();
        let ServerMessage::Forward(mut r1) = sim.server_mut().handle(cid, &fwd1).unwrap().unwrap()
        else {
            panic!()
        };
        let client_n = key(c + 1).public_key().n().clone();
        mutate(&mut r1, c, &client_n);
        let client = &mut sim.clients_mut()[c];
        let e = client.handle(&ServerMessage::Forward(r1)).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.ends_connection(), "{e}");
        assert_eq!(client.active_session(), None);
        assert_eq!(e.report(None).detail, code.detail());
    }
}

#[test]
fn bad_messages_are_refused_without_state_change() {
    let cfg = cfg_fixed(2);
    let (sim, mut reference) = build(cfg, 3, 12);
    let mut sim = sim;
    let other = key(5);
    let (cid, start) = sim.server_mut().start_session().unwrap();
    let c = cid.0;

    // --- client, before the session ---
    let ServerMessage::SessionStart(good_start) = &start else {
        panic!()
    };
    let e = client_err(
        &mut sim.clients_mut()[c],
        &ServerMessage::UpdateApplied(UpdateApplied {
            session: good_start.session,
            iteration: 0,
        }),
    );
    assert!(
        matches!(e, ClientError::Violation(ProtocolViolation::NoSession)),
        "{e}"
    );
    let mut bad = good_start.clone();
    bad.eta = Some(encrypt_all(&other, &BigInt::from(1), 1).remove(0));
    let e = client_err(&mut sim.clients_mut()[c], &ServerMessage::SessionStart(bad));
    assert_eq!(e.code(), ErrorCode::Ciphertext, "{e}");
    // A plaintext session rate is protocol v2's; under the paper's protocol it is a
    // message of another protocol.
    let mut bad = good_start.clone();
    bad.learning_rate = Some(1);
    let e = client_err(&mut sim.clients_mut()[c], &ServerMessage::SessionStart(bad));
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
    let mut bad = good_start.clone();
    bad.iterations = 0;
    assert!(matches!(
        client_err(&mut sim.clients_mut()[c], &ServerMessage::SessionStart(bad)),
        ClientError::Violation(ProtocolViolation::EmptySession)
    ));

    let fwd1 = sim.clients_mut()[c].handle(&start).unwrap().unwrap();
    let ClientMessage::Forward(f1) = &fwd1 else {
        panic!()
    };
    let e = client_err(&mut sim.clients_mut()[c], &start);
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::SessionActive { .. })
        ),
        "{e}"
    );

    // --- server, forward request ---
    let server = sim.server_mut();
    let mut m = f1.clone();
    m.activations.pop();
    assert!(matches!(
        server_err(server, c, &ClientMessage::Forward(m)),
        ServerError::Violation(ProtocolViolation::Shape { .. })
    ));
    let mut m = f1.clone();
    m.layer = 2;
    assert!(matches!(
        server_err(server, c, &ClientMessage::Forward(m)),
        ServerError::Violation(ProtocolViolation::WrongLayer { .. })
    ));
    let mut m = f1.clone();
    m.session += 1;
    assert!(matches!(
        server_err(server, c, &ClientMessage::Forward(m)),
        ServerError::Violation(ProtocolViolation::WrongSession { .. })
    ));
    let mut m = f1.clone();
    m.iteration = 1;
    assert!(matches!(
        server_err(server, c, &ClientMessage::Forward(m)),
        ServerError::Violation(ProtocolViolation::WrongIteration { .. })
    ));
    let mut m = f1.clone();
    m.packing = Packing {
        samples_per_ciphertext: 2,
        slot_bits: 64,
    };
    assert!(matches!(
        server_err(server, c, &ClientMessage::Forward(m)),
        ServerError::Violation(ProtocolViolation::Packing { .. })
    ));
    let mut m = f1.clone();
    m.activations[1] = encrypt_all(&other, &BigInt::from(5), 1).remove(0);
    let e = server_err(server, c, &ClientMessage::Forward(m));
    assert_eq!(e.code(), ErrorCode::Ciphertext, "{e}");
    let client_n = key(c + 1).public_key().n().clone();
    for raw in [client_n.clone(), BigUint::from(0u8), &client_n * &client_n] {
        let mut m = f1.clone();
        m.activations[0] = forge(&m.activations[0], &raw);
        let e = server_err(server, c, &ClientMessage::Forward(m));
        assert_eq!(e.code(), ErrorCode::Ciphertext, "{e}");
    }
    let e = server_err(server, (c + 1) % 3, &fwd1);
    assert!(
        matches!(
            e,
            ServerError::Violation(ProtocolViolation::WrongClient { .. })
        ),
        "{e}"
    );
    let e = server_err(server, 7, &fwd1);
    assert!(matches!(e, ServerError::UnknownClient { .. }), "{e}");
    let premature = ClientMessage::MaskedUpdate(MaskedUpdate {
        session: f1.session,
        iteration: 0,
        packing: UpdatePacking::NONE,
        layers: vec![],
    });
    assert!(matches!(
        server_err(server, c, &premature),
        ServerError::Violation(ProtocolViolation::OutOfTurn { .. })
    ));
    assert!(matches!(
        server.start_session(),
        Err(ServerError::SessionActive { .. })
    ));

    let resp1 = server.handle(cid, &fwd1).unwrap().unwrap();
    let ServerMessage::Forward(r1) = &resp1 else {
        panic!()
    };

    // --- client, forward response ---
    let client = &mut sim.clients_mut()[c];
    let mut m = r1.clone();
    m.pre_activations.pop();
    assert!(matches!(
        client_err(client, &ServerMessage::Forward(m)),
        ClientError::Violation(ProtocolViolation::Shape { .. })
    ));
    let mut m = r1.clone();
    m.layer = 2;
    assert!(matches!(
        client_err(client, &ServerMessage::Forward(m)),
        ClientError::Violation(ProtocolViolation::WrongLayer { .. })
    ));
    let mut m = r1.clone();
    m.session += 9;
    assert!(matches!(
        client_err(client, &ServerMessage::Forward(m)),
        ClientError::Violation(ProtocolViolation::WrongSession { .. })
    ));
    let e = client_err(
        client,
        &ServerMessage::UpdateApplied(UpdateApplied {
            session: r1.session,
            iteration: 0,
        }),
    );
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );

    // --- continue to the masked update ---
    let mut to_client = resp1;
    let masked = loop {
        let reply = sim.clients_mut()[c].handle(&to_client).unwrap().unwrap();
        if matches!(reply, ClientMessage::MaskedUpdate(_)) {
            break reply;
        }
        to_client = sim.server_mut().handle(cid, &reply).unwrap().unwrap();
    };
    let ClientMessage::MaskedUpdate(mu) = &masked else {
        panic!()
    };
    let server = sim.server_mut();
    let mut m = mu.clone();
    m.layers.pop();
    assert!(matches!(
        server_err(server, c, &ClientMessage::MaskedUpdate(m)),
        ServerError::Violation(ProtocolViolation::Shape { .. })
    ));
    let mut m = mu.clone();
    m.layers[0].biases.pop();
    assert!(matches!(
        server_err(server, c, &ClientMessage::MaskedUpdate(m)),
        ServerError::Violation(ProtocolViolation::Shape { .. })
    ));
    // D outside [−G, 2^(σ+g) + G): refused.
    let mut m = mu.clone();
    m.layers[1].weights[0] = encrypt_all(&key(0), &(BigInt::from(1) << 300), 1).remove(0);
    let e = server_err(server, c, &ClientMessage::MaskedUpdate(m));
    assert_eq!(e.code(), ErrorCode::Range, "{e}");
    // Under the client's key instead of the server's.
    let mut m = mu.clone();
    m.layers[0].weights[0] = encrypt_all(&key(c + 1), &BigInt::from(1), 1).remove(0);
    assert_eq!(
        server_err(server, c, &ClientMessage::MaskedUpdate(m)).code(),
        ErrorCode::Ciphertext
    );
    let final_too_early = ClientMessage::FinalUpdate(gelunet_protocol::messages::FinalUpdate {
        session: mu.session,
        packing: mu.packing,
        layers: mu.layers.clone(),
    });
    assert!(matches!(
        server_err(server, c, &final_too_early),
        ServerError::Violation(ProtocolViolation::OutOfTurn { .. })
    ));

    let mut to_client = server.handle(cid, &masked).unwrap().unwrap();
    // --- continue to the final update ---
    let fin = loop {
        let reply = sim.clients_mut()[c].handle(&to_client).unwrap().unwrap();
        if matches!(reply, ClientMessage::FinalUpdate(_)) {
            break reply;
        }
        to_client = sim.server_mut().handle(cid, &reply).unwrap().unwrap();
    };
    let ClientMessage::FinalUpdate(fu) = &fin else {
        panic!()
    };
    let server = sim.server_mut();
    // An accumulated gradient out of the fixed-point range.
    let mut m = fu.clone();
    m.layers[0].biases[0] = encrypt_all(&key(0), &(BigInt::from(1) << 120), 1).remove(0);
    let e = server_err(server, c, &ClientMessage::FinalUpdate(m));
    assert_eq!(e.code(), ErrorCode::Range, "{e}");
    let late_masked = ClientMessage::MaskedUpdate(MaskedUpdate {
        session: fu.session,
        iteration: 1,
        packing: fu.packing,
        layers: fu
            .layers
            .iter()
            .map(|l| LayerCiphertexts {
                weights: l.weights.clone(),
                biases: l.biases.clone(),
            })
            .collect(),
    });
    assert!(matches!(
        server_err(server, c, &late_masked),
        ServerError::Violation(ProtocolViolation::OutOfTurn { .. })
    ));

    let end = server.handle(cid, &fin).unwrap().unwrap();
    assert!(sim.clients_mut()[c].handle(&end).unwrap().is_none());
    assert!(sim.server().active_session().is_none());
    // Nothing of the refused messages leaked into the result.
    reference
        .run_session(SessionPlan {
            client: c,
            iterations: 2,
        })
        .unwrap();
    assert_eq!(sim.model(), reference.model());
    // And the next sessions still match.
    for _ in 0..3 {
        let rec = sim.run_session().unwrap();
        reference.run_session(rec.plan).unwrap();
        assert_eq!(sim.model(), reference.model());
    }
}

#[test]
fn configurations_breaking_the_session_bound_are_refused() {
    let spec = ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid);
    // 5 iterations of 1 sample > min fan-in 4.
    let e = Server::new(cfg_fixed(5), key(0)).unwrap_err();
    assert!(
        matches!(
            e,
            ServerError::Protocol(gelunet_protocol::Error::SessionBound { .. })
        ),
        "{e}"
    );
    // Batches of 5 > 4: not even one iteration fits.
    let e = Server::new(test_config(spec.clone(), 5, MaskMode::default()), key(0)).unwrap_err();
    assert!(
        matches!(
            e,
            ServerError::Protocol(gelunet_protocol::Error::SessionBound { .. })
        ),
        "{e}"
    );
    // 2 iterations of 2 samples = 4: fine.
    let mut ok = test_config(spec.clone(), 2, MaskMode::default());
    ok.policy.length = SessionLength::Fixed(2);
    Server::new(ok, key(0)).unwrap();
    // Explicitly insecure: accepted.
    let mut insecure = cfg_fixed(8);
    insecure.policy.insecure_allow_bound_violation = true;
    Server::new(insecure, key(0)).unwrap();
}

#[test]
fn insecure_settings_need_explicit_permission() {
    let spec = ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid);
    let mut cfg = ServerConfig::new(spec.clone(), 0.5, 1);
    cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
    let e = Server::new(cfg.clone(), key(0)).unwrap_err();
    assert!(matches!(e, ServerError::InsecureKey { bits: 512 }), "{e}");
    cfg.insecure = InsecureOptions {
        allow_test_keys: true,
        allow_unmasked_gradients: false,
    };
    cfg.mask = MaskMode::InsecureNone;
    assert!(matches!(
        Server::new(cfg.clone(), key(0)),
        Err(ServerError::Config { .. })
    ));
    // A statistical mask needs a key large enough for D not to wrap.
    cfg.mask = MaskMode::Statistical { sigma: 480 };
    assert!(matches!(
        Server::new(cfg.clone(), key(0)),
        Err(ServerError::KeyTooSmall { .. })
    ));
    // Bad learning rates.
    cfg.mask = MaskMode::default();
    cfg.learning_rate = 0.0;
    assert!(matches!(
        Server::new(cfg.clone(), key(0)),
        Err(ServerError::Protocol(_))
    ));
    cfg.learning_rate = 1e9;
    assert!(matches!(
        Server::new(cfg, key(0)),
        Err(ServerError::Protocol(_))
    ));

    // Client side: a client that does not allow test keys refuses the server's 512-bit key;
    // one that does not allow unmasked gradients refuses such a run.
    let data = share(&spec, 1, 8, 3);
    let cfg = test_config(spec.clone(), 1, MaskMode::default());
    let server = Server::new(cfg, key(0)).unwrap();
    let strict = gelunet_client::ClientConfig {
        randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed: 1 },
        ..Default::default()
    };
    assert!(matches!(
        Client::new(strict, key(1), data[0].0.clone(), data[0].1.clone()),
        Err(ClientError::InsecureKey { .. })
    ));
    let mut cfg = test_config(spec.clone(), 1, MaskMode::InsecureNone);
    cfg.insecure.allow_unmasked_gradients = true;
    let unmasked = Server::new(cfg, key(0)).unwrap();
    let mut client = client_on(client_config(0, false), &data[0]);
    assert!(matches!(
        client.handle_hello(&unmasked.hello()),
        Err(ClientError::InsecureMask)
    ));
    // Data that does not fit the model.
    let mut wide = Client::new(
        client_config(0, false),
        key(1),
        ndarray::Array2::zeros((8, 6)),
        vec![0; 8],
    )
    .unwrap();
    assert!(matches!(
        wide.handle_hello(&server.hello()),
        Err(ClientError::Data { .. })
    ));
    let mut far = Client::new(
        client_config(0, false),
        key(1),
        ndarray::Array2::from_elem((8, 4), 1e6),
        vec![0; 8],
    )
    .unwrap();
    let e = far.handle_hello(&server.hello()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Range, "{e}");
    // A hello of another version, and a client hello naming another server key.
    let mut hello = server.hello();
    hello.version = 99;
    assert!(matches!(
        client.handle_hello(&hello),
        Err(ClientError::Violation(ProtocolViolation::Version { .. }))
    ));
    let mut server = server;
    let ClientMessage::Hello(mut h) = client.handle_hello(&server.hello()).unwrap() else {
        panic!()
    };
    h.server_key_id = Some(key(3).public_key().id());
    assert!(matches!(
        server.register_client(&h),
        Err(ServerError::WrongServerKey)
    ));
}
