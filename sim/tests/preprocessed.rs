//! Preprocessed inference (docs/DESIGN.md "Preprocessed inference"): the server's linear
//! layers computed offline on one-time masks give the same predictions and probabilities
//! as plain encrypted inference, for dense and position-packed conv layers; preparations
//! are used once; bad input gives typed errors and loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_client::{ClientError, InferenceClient, InferenceConfig};
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::messages::{
    ClientMessage, InferMasked, InferPrepare, InferPrepared, Packing, ServerMessage, WirePlaintext,
};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Activation, MaskMode, ModelSpec, SessionLength};
use gelunet_server::{ClientId, Preparations, Server, ServerError, MAX_PREPARATIONS};
use gelunet_sim::{infer, synthetic_blobs, InferenceLink, Simulation};
use ndarray::Axis;

fn dense() -> ModelSpec {
    ModelSpec {
        widths: vec![4, 6, 5, 3],
        hidden: vec![Activation::Sigmoid, Activation::Relu],
        layers: Vec::new(),
    }
}

/// Two conv layers (the second strided, padded and pooled, two input channels) before
/// two dense layers.
fn convs() -> ModelSpec {
    let arch: Arch = "conv3x3:2,relu,conv3x3s2p1:3,meanpool,sigmoid,dense:8,tanh,dense:3"
        .parse()
        .unwrap();
    ModelSpec::from_arch(
        &arch,
        Shape {
            channels: 1,
            height: 10,
            width: 10,
        },
    )
    .unwrap()
}

fn trained(spec: ModelSpec) -> Simulation {
    let mut cfg = test_config(spec, 2, MaskMode::default());
    cfg.policy.length = SessionLength::Fixed(2);
    let (mut sim, _) = build(cfg, 2, 12);
    sim.run_sessions(2).unwrap();
    sim
}

fn client(server: &Server, row_packing: bool, seed: u64) -> InferenceClient {
    InferenceClient::new(
        InferenceConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed },
            allow_test_keys: true,
            packing: true,
            row_packing,
        },
        key(4),
        &server.hello(),
    )
    .unwrap()
}

fn violation(e: ServerError) -> ProtocolViolation {
    match e {
        ServerError::Violation(v) => v,
        other => panic!("not a violation: {other}"),
    }
}

#[test]
fn preprocessed_inference_equals_plain_inference() {
    for (spec, layers) in [(dense(), 3), (convs(), 4)] {
        let sim = trained(spec.clone());
        let server = sim.server();
        let (x, _) = synthetic_blobs(4, spec.inputs(), spec.classes(), 0.5, 77);
        for rows in [true, false] {
            let mut plain = client(server, rows, 5);
            let mut prep = client(server, rows, 6);
            let mut link = InferenceLink::new(server, &prep).unwrap();
            // Without row packing a conv layer has no position packing: not prepared.
            let expected = if rows || spec.layers.is_empty() {
                layers
            } else {
                2
            };
            for s in 0..x.nrows() {
                let xs = x.select(Axis(0), &[s]);
                assert_eq!(link.prepare(server, &mut prep).unwrap(), expected);
                assert_eq!(prep.preparations_ready(), expected);
                assert_eq!(link.held(), expected);
                let want = infer(server, &mut plain, &xs).unwrap();
                let got = link.infer(server, &mut prep, &xs).unwrap();
                assert_eq!(got, want, "sample {s}, row packing {rows}, {spec:?}");
                assert_eq!(prep.preparations_ready(), 0, "each preparation used once");
                assert_eq!(link.held(), 0);
            }
            // A batch does not use preparations (they are for one sample).
            assert_eq!(link.prepare(server, &mut prep).unwrap(), expected);
            let batch = infer(server, &mut plain, &x).unwrap();
            assert_eq!(link.infer(server, &mut prep, &x).unwrap(), batch);
            assert_eq!(prep.preparations_ready(), expected);
        }
    }
}

/// The first single-sample request after a preparation goes masked: its values are below
/// `N`, differ between two preparations of the same input, and are not the plaintexts.
#[test]
fn prepared_requests_send_masked_plaintexts_only() {
    let sim = trained(dense());
    let server = sim.server();
    let (x, _) = synthetic_blobs(1, 4, 3, 0.5, 3);
    let mut c = client(server, true, 8);
    let mut link = InferenceLink::new(server, &c).unwrap();
    let n = c.public_key().n().clone();
    let mut seen = Vec::new();
    for _ in 0..2 {
        link.prepare(server, &mut c).unwrap();
        let ClientMessage::InferMasked(m) = c.start(&x).unwrap() else {
            panic!("a prepared layer goes masked")
        };
        assert_eq!((m.layer, m.masked.len()), (1, 4));
        assert!(m.masked.iter().all(|d| d.0 < n));
        c.cancel();
        seen.push(m.masked);
    }
    assert_ne!(seen[0], seen[1], "fresh masks per preparation");
    let ClientMessage::Infer(r) = c.start(&x).unwrap() else {
        panic!("the second preparation of layer 1 is used too")
    };
    assert_eq!(r.activations.len(), 4);
}

#[test]
fn bad_preparations_and_masked_requests_are_typed_violations() {
    let sim = trained(dense());
    let server = sim.server();
    let (x, _) = synthetic_blobs(1, 4, 3, 0.5, 3);
    let mut c = client(server, true, 9);
    let key = server.inference_key(&c.hello()).unwrap();
    let mut held = Preparations::new();
    let preps = c.prepare().unwrap();
    for p in &preps {
        let ack = server.handle_inference(&key, &mut held, p).unwrap();
        c.handle_prepared(&ack).unwrap();
    }
    let ClientMessage::InferMasked(good) = c.start(&x).unwrap() else {
        panic!("masked")
    };
    // Faults that leave the preparation held.
    let mut short = good.clone();
    short.masked.pop();
    let mut big = good.clone();
    big.masked[2] = WirePlaintext(key.n().clone());
    let other_layer = InferMasked {
        layer: 2,
        ..good.clone()
    };
    let unknown = InferMasked {
        prep_id: 999,
        ..good.clone()
    };
    let faults = [
        (short, "Shape"),
        (big, "Range"),
        (other_layer, "UnknownPreparation"),
        (unknown, "UnknownPreparation"),
    ];
    for (bad, kind) in faults {
        let v = violation(server.infer_masked(&key, &bad, &mut held).unwrap_err());
        let ok = match kind {
            "Shape" => matches!(v, ProtocolViolation::Shape { .. }),
            "Range" => matches!(v, ProtocolViolation::Range { kind: None }),
            _ => matches!(v, ProtocolViolation::UnknownPreparation { .. }),
        };
        assert!(ok, "{kind}: {v}");
        assert_eq!(held.len(), 3, "nothing lost");
    }
    // The good request goes through once, then the preparation is gone.
    let answer = server.infer_masked(&key, &good, &mut held).unwrap();
    assert_eq!(held.len(), 2);
    let again = violation(server.infer_masked(&key, &good, &mut held).unwrap_err());
    assert_eq!(
        again,
        ProtocolViolation::UnknownPreparation {
            id: good.prep_id,
            layer: 1
        }
    );
    assert!(c.handle(&ServerMessage::Inferred(answer)).is_ok());

    // A conv layer needs its position packing; an unknown layer is refused.
    let ClientMessage::InferPrepare(p1) = &preps[0] else {
        panic!("a preparation")
    };
    let v = violation(
        server
            .prepare_infer(
                &key,
                &InferPrepare {
                    layer: 7,
                    ..p1.clone()
                },
                &mut held,
            )
            .unwrap_err(),
    );
    assert!(matches!(
        v,
        ProtocolViolation::UnknownLayer { layer: 7, .. }
    ));
    let mut missing = p1.clone();
    missing.masks.pop();
    let v = violation(server.prepare_infer(&key, &missing, &mut held).unwrap_err());
    assert!(matches!(v, ProtocolViolation::Shape { .. }), "{v}");
    assert_eq!(held.len(), 2, "refused preparations are not held");

    // At most MAX_PREPARATIONS held per connection.
    let mut full = Preparations::new();
    for id in 0..MAX_PREPARATIONS as u64 {
        let p = InferPrepare {
            prep_id: id,
            ..p1.clone()
        };
        server.prepare_infer(&key, &p, &mut full).unwrap();
    }
    let over = InferPrepare {
        prep_id: 10_000,
        ..p1.clone()
    };
    let v = violation(server.prepare_infer(&key, &over, &mut full).unwrap_err());
    assert_eq!(
        v,
        ProtocolViolation::PreparationLimit {
            limit: MAX_PREPARATIONS
        }
    );
    assert_eq!(full.len(), MAX_PREPARATIONS);

    // The client refuses acknowledgements of nothing it sent, and other messages.
    let e = c
        .handle_prepared(&ServerMessage::InferPrepared(InferPrepared {
            prep_id: 424_242,
            layer: 1,
        }))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::UnknownPreparation { .. })
        ),
        "{e}"
    );
    let e = c
        .handle_prepared(&ServerMessage::Error(
            gelunet_protocol::messages::ErrorReport::new(
                None,
                gelunet_protocol::messages::ErrorCode::Shape,
            ),
        ))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
}

/// A dense layer's preparation with a sample packing is refused; a preparation made
/// before the model changed is refused as stale, and kept.
#[test]
fn mismatched_layouts_and_stale_preparations_are_refused() {
    let mut sim = trained(dense());
    let mut c = client(sim.server(), true, 12);
    let key = sim.server().inference_key(&c.hello()).unwrap();
    let preps = c.prepare().unwrap();
    let ClientMessage::InferPrepare(p1) = &preps[0] else {
        panic!("a preparation")
    };
    assert_eq!(p1.packing, Packing::NONE, "dense layer: no sample packing");
    let sample_packed = InferPrepare {
        packing: Packing {
            samples_per_ciphertext: 2,
            slot_bits: 64,
        },
        ..p1.clone()
    };
    let mut held = Preparations::new();
    let v = violation(
        sim.server()
            .prepare_infer(&key, &sample_packed, &mut held)
            .unwrap_err(),
    );
    assert!(matches!(v, ProtocolViolation::Packing { .. }), "{v}");
    assert!(held.is_empty());
    for p in &preps {
        let ack = sim.server().handle_inference(&key, &mut held, p).unwrap();
        c.handle_prepared(&ack).unwrap();
    }
    let (x, _) = synthetic_blobs(1, 4, 3, 0.5, 3);
    let ClientMessage::InferMasked(m) = c.start(&x).unwrap() else {
        panic!("masked")
    };
    let before = sim.server().model().unwrap().clone();
    sim.run_sessions(1).unwrap();
    assert_ne!(
        sim.server().model().unwrap(),
        &before,
        "training changed the model"
    );
    let v = violation(sim.server().infer_masked(&key, &m, &mut held).unwrap_err());
    assert_eq!(v, ProtocolViolation::StalePreparation { id: m.prep_id });
    assert_eq!(held.len(), 3, "kept");
}

/// A conv layer's preparation without its position packing is refused; training
/// connections do not serve preprocessing.
#[test]
fn conv_preparations_need_position_packing_and_training_connections_refuse_them() {
    let mut sim = trained(convs());
    let mut c = client(sim.server(), true, 11);
    let key = sim.server().inference_key(&c.hello()).unwrap();
    let preps = c.prepare().unwrap();
    let ClientMessage::InferPrepare(p1) = &preps[0] else {
        panic!("a preparation")
    };
    assert_ne!(p1.packing, Packing::NONE, "conv layer: positions packed");
    let unpacked = InferPrepare {
        packing: Packing::NONE,
        ..p1.clone()
    };
    let mut held = Preparations::new();
    let v = violation(
        sim.server()
            .prepare_infer(&key, &unpacked, &mut held)
            .unwrap_err(),
    );
    assert!(matches!(v, ProtocolViolation::Packing { .. }), "{v}");
    assert!(held.is_empty());
    let e = sim.server_mut().handle(ClientId(0), &preps[0]).unwrap_err();
    assert!(
        matches!(
            e,
            ServerError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
}
