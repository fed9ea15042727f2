//! The server never receives an unmasked gradient or an unencrypted activation (paper
//! §4.3, Prop. 1), checked on the message stream and on what the server decrypts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_paillier::BigInt;
use gelunet_protocol::messages::{ClientMessage, MaskedUpdate, ServerMessage};
use gelunet_protocol::packing::unpack_masked;
use gelunet_protocol::{Activation, MaskMode, MaskTarget, ModelSpec};
use gelunet_server::ClientId;
use gelunet_sim::Simulation;

/// Drives one session by hand; after every masked update, compares what the server
/// decrypted (`D`) with `η·Δw` of the client. Returns (updates seen, equal entries).
fn step_session(sim: &mut Simulation) -> (usize, usize, usize) {
    let (cid, mut msg) = sim.server_mut().start_session().unwrap();
    let eta = BigInt::from(sim.server().learning_rate());
    let (mut updates, mut equal, mut total) = (0, 0, 0);
    loop {
        let reply = sim.clients_mut()[cid.0].handle(&msg).unwrap();
        let Some(reply) = reply else { break };
        let is_masked = matches!(reply, ClientMessage::MaskedUpdate(_));
        if let ClientMessage::MaskedUpdate(mu) = &reply {
            // Decrypt and unpack the message on our own, with the server's key, as the
            // server would: no slot holds eta*grad.
            let (e, t) = unpack_and_compare(sim, cid.0, mu);
            equal += e;
            total += t;
        }
        let answer = sim
            .server_mut()
            .handle(ClientId(cid.0), &reply)
            .unwrap()
            .unwrap();
        if is_masked {
            updates += 1;
            let grads = sim.clients()[cid.0].last_gradients().unwrap().clone();
            let seen = sim.server().last_decrypted_update().unwrap();
            for (g, d) in grads.layers.iter().zip(seen) {
                for (gv, dv) in g.w.iter().zip(d.w.iter()).chain(g.b.iter().zip(d.b.iter())) {
                    total += 1;
                    if &eta * BigInt::from(*gv) == *dv {
                        equal += 1;
                    }
                }
            }
            // Masked weights differ from the true weights during the session (under no mask
            // they are the true current weights, which differ from w^I too; skip).
            let masked = sim.server().masked_weights().unwrap();
            let differs = masked
                .iter()
                .zip(&sim.server().model().unwrap().layers)
                .any(|(m, t)| {
                    m.w.iter()
                        .zip(t.w.iter())
                        .any(|(a, b)| *a != BigInt::from(*b))
                });
            if !sim.server().config().mask.is_insecure() {
                assert!(differs);
            }
        }
        if matches!(answer, ServerMessage::SessionEnd(_)) {
            sim.clients_mut()[cid.0].handle(&answer).unwrap();
            break;
        }
        msg = answer;
    }
    (updates, equal, total)
}

/// Decrypts a masked update with the server's secret key (`key(0)`), unpacks every
/// ciphertext slot by slot and compares each `D` with `η·Δ` of the client's gradients.
fn unpack_and_compare(sim: &Simulation, client: usize, mu: &MaskedUpdate) -> (usize, usize) {
    let cfg = sim.server().config();
    let sk = key(0);
    let n_s = sk.public_key().n().clone();
    let eta = BigInt::from(sim.server().learning_rate());
    let layout = sim.server().masked_update_packing();
    assert_eq!(mu.packing, layout);
    if cfg.packing && !matches!(cfg.mask, MaskMode::Uniform) {
        assert!(layout.weights.samples_per_ciphertext > 1, "{layout:?}");
    }
    let grads = sim.clients()[client].last_gradients().unwrap().clone();
    // Decrypts and unpacks one target's ciphertexts into its `total` values.
    let open = |target, packing, cs: &[gelunet_paillier::Ciphertext], total| {
        let raw: Vec<_> = cs.iter().map(|c| sk.decrypt_raw(c).unwrap()).collect();
        let g_bits = MaskMode::g_bits(&cfg.scales, target);
        unpack_masked(cfg.mask, g_bits, &n_s, packing, &raw, total).unwrap()
    };
    let (mut equal, mut total) = (0, 0);
    for (l, g) in mu.layers.iter().zip(&grads.layers) {
        let dw = open(MaskTarget::Weight, layout.weights, &l.weights, g.w.len());
        let db = open(MaskTarget::Bias, layout.biases, &l.biases, g.b.len());
        for (d, v) in dw.iter().zip(g.w.iter()).chain(db.iter().zip(g.b.iter())) {
            total += 1;
            if *d == &eta * BigInt::from(*v) {
                equal += 1;
            }
        }
    }
    (equal, total)
}

/// Six sessions over three clients of 12 samples: the masked updates seen, and how many
/// of their decrypted values equal `η·Δ` out of how many ([`step_session`]).
fn six_sessions(cfg: gelunet_server::ServerConfig) -> (usize, usize, usize) {
    let (mut sim, _) = build(cfg, 3, 12);
    let (mut updates, mut equal, mut total) = (0, 0, 0);
    for _ in 0..6 {
        let (u, e, t) = step_session(&mut sim);
        updates += u;
        equal += e;
        total += t;
    }
    (updates, equal, total)
}

#[test]
fn masked_updates_hide_gradients() {
    for mask in [MaskMode::default(), MaskMode::Uniform] {
        let cfg = test_config(ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid), 1, mask);
        let (updates, equal, total) = six_sessions(cfg);
        assert!(updates > 0);
        assert_eq!(
            equal, 0,
            "{mask:?}: {equal} of {total} decrypted values equal eta*grad"
        );
    }
}

#[test]
fn insecure_mode_reveals_gradients_hook() {
    // The gradient-inversion demo's hook: with no mask the server sees eta*grad exactly.
    let cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::InsecureNone,
    );
    let (updates, equal, total) = six_sessions(cfg);
    assert!(updates > 0);
    assert_eq!(equal, total);
}

#[test]
fn client_to_server_stream_is_ciphertexts_only() {
    let cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
    );
    let (mut sim, _) = build(cfg, 3, 12);
    sim.record_messages(true);
    sim.run_sessions(6).unwrap();
    let server_key = sim.server().public_key().unwrap().id();
    let mut counts = [0usize; 4];
    for (c, msg) in sim.client_messages() {
        let client_key = sim.clients()[*c].public_key().id();
        // Exhaustive: any new variant carrying plaintext must be looked at here.
        let (expected_key, slot) = match msg {
            ClientMessage::Forward(_) => (client_key, 0),
            ClientMessage::Backward(_) => (client_key, 1),
            ClientMessage::MaskedUpdate(_) => (server_key, 2),
            ClientMessage::FinalUpdate(_) => (server_key, 3),
            ClientMessage::Hello(_)
            | ClientMessage::Abort(_)
            | ClientMessage::Error(_)
            | ClientMessage::Infer(_)
            // Plaintexts one-time padded by the client's masks (docs/DESIGN.md
            // "Preprocessed inference"); inference connections only.
            | ClientMessage::InferPrepare(_)
            | ClientMessage::InferMasked(_)
            | ClientMessage::PlainUpdate(_)
            | ClientMessage::Rollover(_) => {
                panic!("unexpected {} during training", msg.kind())
            }
        };
        counts[slot] += 1;
        // The messages survive the wire codec unchanged.
        let bytes = gelunet_protocol::messages::to_wire(msg).unwrap();
        assert_eq!(
            &gelunet_protocol::messages::from_wire::<ClientMessage>(&bytes).unwrap(),
            msg
        );
        let cts = msg.ciphertexts();
        assert!(!cts.is_empty());
        assert!(
            cts.iter().all(|c| c.key_id() == expected_key),
            "{}",
            msg.kind()
        );
    }
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    // Two copies of the same activation encrypt differently (semantic security).
    let mut seen = std::collections::HashSet::new();
    for (_, msg) in sim.client_messages() {
        for c in msg.ciphertexts() {
            assert!(seen.insert(c.value().clone()), "repeated ciphertext");
        }
    }
}

#[test]
fn transcript_hook_gives_the_client_view_for_model_extraction() {
    // The client's view (inputs and unmasked pre-activations) satisfies z = W·a + b for
    // the true weights at the start of the session: the raw material of the §4.1
    // equation-solving attack, which the d_max bound keeps underdetermined.
    let cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
    );
    let (mut sim, _) = build_with(cfg, 3, 12, true);
    let scales = sim.server().config().scales;
    for _ in 0..3 {
        let w_initial = sim.model().clone();
        let rec = sim.run_session().unwrap();
        let client = &sim.clients()[rec.plan.client];
        let first: Vec<_> = client
            .transcript()
            .iter()
            .filter(|e| e.session == rec.session && e.iteration == 0)
            .collect();
        assert_eq!(first.len(), 2, "one entry per layer");
        let l1 = &w_initial.layers[0];
        let z = gelunet_protocol::math::linear(
            l1.w.view(),
            l1.b.view(),
            first[0].inputs.view(),
            &scales,
        )
        .unwrap();
        assert_eq!(z, first[0].pre_activations);
    }
    // Off by default.
    let cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
    );
    let (mut sim, _) = build(cfg, 3, 12);
    sim.run_session().unwrap();
    assert!(sim.clients().iter().all(|c| c.transcript().is_empty()));
}
