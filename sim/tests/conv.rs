//! Encrypted training of conv nets equals the plaintext fixed-point reference bit for
//! bit after every session, under both protocols, with 3 clients (issue #15;
//! docs/DESIGN.md "Convolutional layers"): pooling on the first layer and on a layer
//! with a transposed convolution behind it, stride 2, zero padding, several channels.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{MaskMode, ModelSpec, SessionLength};
use gelunet_server::ServerConfig;

fn conv_spec(arch: &str, side: usize) -> ModelSpec {
    let arch: Arch = arch.parse().unwrap();
    ModelSpec::from_arch(
        &arch,
        Shape {
            channels: 1,
            height: side,
            width: side,
        },
    )
    .unwrap()
}

/// First layer pooled (no backward product through it).
fn pooled_first() -> ModelSpec {
    conv_spec("conv3x3:2,meanpool,relu,dense:3", 6)
}

/// A transposed convolution through a pooled, strided, padded second conv layer with
/// two input channels and three filters.
fn two_convs() -> ModelSpec {
    conv_spec(
        "conv3x3:2,relu,conv3x3s2p1:3,meanpool,sigmoid,dense:8,tanh,dense:3",
        10,
    )
}

fn run_exact(cfg: ServerConfig, sessions: usize) {
    let (mut sim, mut reference) = build(cfg, 3, 12);
    sim.check_invariants(true);
    let (x, _) = all_data(&sim);
    assert_eq!(sim.model(), reference.model(), "same initial weights");
    let mut multi = 0;
    for s in 0..sessions {
        let rec = sim.run_session().unwrap();
        assert!(rec.completed);
        multi += usize::from(rec.plan.iterations > 1);
        reference.run_session(rec.plan).unwrap();
        assert_eq!(sim.model(), reference.model(), "weights after session {s}");
        let scales = &sim.server().config().scales;
        assert_eq!(
            sim.model().predict(scales, x.view()).unwrap(),
            reference.model().predict(scales, x.view()).unwrap()
        );
    }
    assert_eq!(sim.invariant_checks(), sessions);
    assert!(multi > 0, "some session must exercise masked updates");
}

fn fixed_two(mut cfg: ServerConfig) -> ServerConfig {
    cfg.policy.length = SessionLength::Fixed(2);
    cfg
}

#[test]
fn paper_protocol_pooled_first_layer() {
    run_exact(
        fixed_two(test_config(pooled_first(), 2, MaskMode::default())),
        4,
    );
}

#[test]
fn paper_protocol_transposed_conv_through_pooling() {
    run_exact(fixed_two(test_config(two_convs(), 3, MaskMode::Uniform)), 3);
}

#[test]
fn v2_pooled_first_layer() {
    let cfg = fixed_two(v2_config(pooled_first(), 2));
    assert_eq!(cfg.protocol, Protocol::V2);
    run_exact(cfg, 4);
}

#[test]
fn v2_transposed_conv_through_pooling_and_release() {
    let (mut sim, mut reference) = build(fixed_two(v2_config(two_convs(), 3)), 3, 12);
    sim.check_invariants(true);
    for s in 0..3 {
        let rec = sim.run_session().unwrap();
        reference.run_session(rec.plan).unwrap();
        assert_eq!(sim.model(), reference.model(), "after session {s}");
    }
    assert!(sim.ledger_checks() > 3 * 3, "{}", sim.ledger_checks());
    let released = sim.release(1).unwrap();
    assert_eq!(&released, reference.model());
}

#[test]
fn unpacked_conv_training_is_exact_too() {
    let mut cfg = fixed_two(test_config(two_convs(), 2, MaskMode::default()));
    cfg.packing = false;
    run_exact(cfg, 2);
}

/// Encrypted inference of a trained conv model (both conv layers pooled or strided and
/// padded) equals the plaintext model's predictions and probabilities, for one sample
/// (output positions packed in slots) and batches, with every packing on or off.
#[test]
fn conv_inference_equals_the_plaintext_model() {
    use gelunet_client::{InferenceClient, InferenceConfig};
    use gelunet_protocol::math::softmax_in_place;
    use gelunet_protocol::messages::{ClientMessage, Packing};
    use gelunet_protocol::Dataset;
    use gelunet_sim::{infer, synthetic_blobs};
    use ndarray::Axis;

    for spec in [pooled_first(), two_convs()] {
        let (mut sim, _) = build(
            fixed_two(test_config(spec.clone(), 2, MaskMode::default())),
            2,
            12,
        );
        sim.run_sessions(2).unwrap();
        let server = sim.server();
        let scales = server.config().scales;
        let model = server.model().unwrap();
        let (x, y) = synthetic_blobs(9, spec.inputs(), spec.classes(), 0.5, 77);
        let q = Dataset::quantize(x.view(), &y, spec.classes(), &scales).unwrap();
        for (packing, rows) in [(true, true), (false, false), (true, false), (false, true)] {
            let mut client = InferenceClient::new(
                InferenceConfig {
                    randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                        seed: 5,
                    },
                    allow_test_keys: true,
                    packing,
                    row_packing: rows,
                },
                key(4),
                &server.hello(),
            )
            .unwrap();
            // A single sample's first request packs the conv layer's output positions.
            let ClientMessage::Infer(first) = client.start(&x.select(Axis(0), &[0])).unwrap()
            else {
                panic!("not an inference request");
            };
            assert_eq!(first.packing != Packing::NONE, rows, "{spec:?}");
            client.cancel();
            for n in [1usize, 5, 9] {
                let idx: Vec<usize> = (0..n).collect();
                let (pred, probs) = infer(server, &mut client, &x.select(Axis(0), &idx)).unwrap();
                let xq = q.x.select(Axis(0), &idx);
                assert_eq!(
                    pred,
                    model.predict(&scales, xq.view()).unwrap(),
                    "{n} samples"
                );
                let mut want = model.logits(&scales, xq.view()).unwrap();
                want.rows_mut().into_iter().for_each(softmax_in_place);
                assert_eq!(probs, want, "{n} samples, packing {packing}, rows {rows}");
            }
        }
    }
}

/// Bad position-packed requests and answers are typed violations on either side: another
/// slot layout, a missing ciphertext, row packing asked of a conv layer, an answer with a
/// ciphertext too few or a row packing it did not ask for.
#[test]
fn bad_position_packed_requests_and_answers_are_typed_violations() {
    use gelunet_client::{ClientError, InferenceClient, InferenceConfig};
    use gelunet_protocol::messages::{ClientMessage, InferRequest, Packing, ServerMessage};
    use gelunet_protocol::ProtocolViolation;
    use gelunet_server::ServerError;
    use gelunet_sim::synthetic_blobs;

    let spec = two_convs();
    let (mut sim, _) = build(
        fixed_two(test_config(spec.clone(), 2, MaskMode::default())),
        1,
        12,
    );
    sim.run_sessions(1).unwrap();
    let server = sim.server();
    let mut client = InferenceClient::new(
        InferenceConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed: 5 },
            allow_test_keys: true,
            packing: true,
            row_packing: true,
        },
        key(4),
        &server.hello(),
    )
    .unwrap();
    let key = server.inference_key(&client.hello()).unwrap();
    let (x, _) = synthetic_blobs(1, spec.inputs(), spec.classes(), 0.5, 9);
    let ClientMessage::Infer(req) = client.start(&x).unwrap() else {
        panic!("not an inference request")
    };
    assert_ne!(
        req.packing,
        Packing::NONE,
        "one sample through a conv layer: positions packed"
    );
    let violation = |r: InferRequest| match server.infer(&key, &r).unwrap_err() {
        ServerError::Violation(v) => v,
        other => panic!("not a violation: {other}"),
    };
    let narrower = Packing {
        slot_bits: req.packing.slot_bits - 1,
        ..req.packing
    };
    for bad in [
        InferRequest {
            packing: narrower,
            ..req.clone()
        },
        InferRequest {
            row_packing: true,
            ..req.clone()
        },
    ] {
        assert!(matches!(violation(bad), ProtocolViolation::Packing { .. }));
    }
    let mut short = req.clone();
    short.activations.pop();
    assert!(matches!(violation(short), ProtocolViolation::Shape { .. }));
    // The client's side: a short answer, then a row packing it did not ask for.
    let answer = server.infer(&key, &req).unwrap();
    let mut short = answer.clone();
    short.pre_activations.pop();
    let e = client.handle(&ServerMessage::Inferred(short)).unwrap_err();
    assert!(
        matches!(e, ClientError::Violation(ProtocolViolation::Shape { .. })),
        "{e}"
    );
    let rows = gelunet_protocol::messages::InferResponse {
        row_packing: req.packing,
        ..answer.clone()
    };
    let e = client.handle(&ServerMessage::Inferred(rows)).unwrap_err();
    assert!(
        matches!(e, ClientError::Violation(ProtocolViolation::Packing { .. })),
        "{e}"
    );
    // Nothing changed: the real answer still goes through.
    assert!(client.handle(&ServerMessage::Inferred(answer)).is_ok());
}
