//! Encrypted inference (paper Alg. 1 with the trained model): predictions and
//! probabilities equal the plaintext fixed-point model's on the same inputs, with and
//! without sample and row packing; bad input gives typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_client::{ClientError, InferStep, InferenceClient, InferenceConfig};
use gelunet_paillier::BigInt;
use gelunet_protocol::math::softmax_in_place;
use gelunet_protocol::messages::{ClientMessage, ErrorCode, InferRequest, Packing, ServerMessage};
use gelunet_protocol::violation::ProtocolViolation;
use gelunet_protocol::{Activation, Dataset, FixedModel, MaskMode, ModelSpec, Scales};
use gelunet_server::{ClientId, Server, ServerError};
use gelunet_sim::{infer, infer_fixed, synthetic_blobs, Simulation};
use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn trained() -> Simulation {
    let spec = ModelSpec {
        widths: vec![4, 6, 5, 3],
        hidden: vec![Activation::Sigmoid, Activation::Relu],
        layers: Vec::new(),
    };
    let (mut sim, _) = build(test_config(spec, 2, MaskMode::default()), 2, 12);
    sim.run_sessions(2).unwrap();
    sim
}

fn inference_client(server: &Server, packing: bool, row_packing: bool) -> InferenceClient {
    InferenceClient::new(
        InferenceConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed: 5 },
            allow_test_keys: true,
            packing,
            row_packing,
        },
        key(4),
        &server.hello(),
    )
    .unwrap()
}

/// The client key the server derives from a packing inference client's hello.
fn inference_key(server: &Server) -> gelunet_paillier::PublicKey {
    server
        .inference_key(&inference_client(server, true, true).hello())
        .unwrap()
}

/// The plaintext model's predictions and softmax probabilities.
fn plaintext(model: &FixedModel, scales: &Scales, x: &Array2<i128>) -> (Vec<usize>, Array2<f64>) {
    let trace = model.forward(scales, x.view()).unwrap();
    let z = trace.z.last().unwrap();
    let mut p = z.mapv(|v| scales.decode(gelunet_protocol::ValueKind::PreActivation, v));
    p.rows_mut().into_iter().for_each(softmax_in_place);
    (model.predict(scales, x.view()).unwrap(), p)
}

#[test]
fn encrypted_inference_equals_plaintext_model() {
    let sim = trained();
    let server = sim.server();
    let scales = server.config().scales;
    let (x, y) = synthetic_blobs(12, 4, 3, 0.5, 77);
    let q = Dataset::quantize(x.view(), &y, 3, &scales).unwrap();
    for (packing, rows) in [(true, true), (false, false), (true, false), (false, true)] {
        let mut client = inference_client(server, packing, rows);
        // One sample, a batch that fits one ciphertext, one split over two (512-bit keys
        // hold 6 slots).
        for n in [1usize, 5, 9] {
            let idx: Vec<usize> = (0..n).collect();
            let xs = x.select(Axis(0), &idx);
            let (pred, probs) = infer(server, &mut client, &xs).unwrap();
            let (want_pred, want_probs) =
                plaintext(server.model().unwrap(), &scales, &q.x.select(Axis(0), &idx));
            assert_eq!(
                pred, want_pred,
                "packing {packing}, rows {rows}, {n} samples"
            );
            assert_eq!(probs, want_probs);
            assert!(!client.is_pending());
            // The fixed-point entry gives the same.
            let (pred2, _) =
                infer_fixed(server, &mut client, q.x.select(Axis(0), &idx).view()).unwrap();
            assert_eq!(pred2, want_pred);
        }
    }
}

#[test]
fn precomputed_obfuscators_give_the_same_ciphertexts_and_are_used_once() {
    let sim = trained();
    let server = sim.server();
    let key = inference_key(server);
    let (x, _) = synthetic_blobs(5, 4, 3, 0.5, 9);
    for n in [1usize, 5] {
        let xs = x.select(Axis(0), &(0..n).collect::<Vec<_>>());
        let mut inline = inference_client(server, true, true);
        let mut ahead = inference_client(server, true, true);
        let per = ahead.obfuscators_per_inference(n);
        // 4-6-5-3: one sample sends 4 + 6 + 5 ciphertexts; five sample-packed samples fit
        // one group at 512 bits, so the same count.
        assert_eq!(per, 15);
        ahead.precompute_obfuscators(per);
        assert_eq!(ahead.obfuscators_ready(), per);
        let mut a = inline.start(&xs).unwrap();
        let mut b = ahead.start(&xs).unwrap();
        loop {
            // Same seed, same random stream: the requests are identical.
            assert_eq!(a, b);
            let ClientMessage::Infer(req) = &a else {
                panic!()
            };
            let answer = ServerMessage::Inferred(server.infer(&key, req).unwrap());
            match (
                inline.handle(&answer).unwrap(),
                ahead.handle(&answer).unwrap(),
            ) {
                (InferStep::Next(ma), InferStep::Next(mb)) => (a, b) = (ma, mb),
                (InferStep::Done(pa, qa), InferStep::Done(pb, qb)) => {
                    assert_eq!((pa, qa), (pb, qb));
                    break;
                }
                _ => panic!("the clients diverged"),
            }
        }
        // Each obfuscator was used once.
        assert_eq!(ahead.obfuscators_ready(), 0);
    }
    // More than one inference needs: the rest waits for the next request, and a request
    // that fails (a wrong width) uses none.
    let mut c = inference_client(server, true, true);
    c.precompute_obfuscators(20);
    assert!(c.start(&Array2::zeros((1, 3))).is_err());
    assert_eq!(c.obfuscators_ready(), 20);
    c.start(&x.select(Axis(0), &[0])).unwrap();
    assert_eq!(c.obfuscators_ready(), 16);
}

#[test]
fn row_and_sample_packing_shrink_the_answers() {
    let sim = trained();
    let server = sim.server();
    let key = inference_key(server);
    let (x, _) = synthetic_blobs(5, 4, 3, 0.5, 3);
    // One sample with row packing: layer 1 (6 outputs) answers with 1 ciphertext.
    let mut c = inference_client(server, true, true);
    let ClientMessage::Infer(req) = c.start(&x.select(Axis(0), &[0])).unwrap() else {
        panic!()
    };
    assert_eq!(req.packing, Packing::NONE);
    assert!(req.row_packing);
    let r = server.infer(&key, &req).unwrap();
    assert_eq!(r.pre_activations.len(), 1);
    assert!(r.row_packing.samples_per_ciphertext >= 6);
    // Without row packing: 6.
    let mut c = inference_client(server, true, false);
    let ClientMessage::Infer(req) = c.start(&x.select(Axis(0), &[0])).unwrap() else {
        panic!()
    };
    assert_eq!(server.infer(&key, &req).unwrap().pre_activations.len(), 6);
    // Five samples, sample-packed: 4 input and 6 output ciphertexts instead of 20 and 30.
    let mut c = inference_client(server, true, true);
    let ClientMessage::Infer(req) = c.start(&x).unwrap() else {
        panic!()
    };
    assert_eq!(req.packing.samples_per_ciphertext, 5);
    assert_eq!(req.activations.len(), 4);
    assert_eq!(server.infer(&key, &req).unwrap().pre_activations.len(), 6);
}

#[test]
fn bad_inference_input_gives_typed_errors() {
    let mut sim = trained();
    let (x, _) = synthetic_blobs(3, 4, 3, 0.5, 9);
    let server = sim.server();
    let mut client = inference_client(server, true, true);
    let key = server.inference_key(&client.hello()).unwrap();
    let ClientMessage::Infer(req) = client.start(&x).unwrap() else {
        panic!()
    };
    let err = |r: InferRequest| server.infer(&key, &r).unwrap_err();
    for layer in [0, 4] {
        let e = err(InferRequest {
            layer,
            ..req.clone()
        });
        assert!(
            matches!(
                e,
                ServerError::Violation(ProtocolViolation::UnknownLayer { .. })
            ),
            "{e}"
        );
        assert_eq!(e.code(), ErrorCode::Shape);
    }
    let mut m = req.clone();
    m.activations.pop();
    assert!(matches!(
        err(m),
        ServerError::Violation(ProtocolViolation::Shape { .. })
    ));
    let e = err(InferRequest {
        samples: 0,
        ..req.clone()
    });
    assert!(
        matches!(e, ServerError::Violation(ProtocolViolation::Shape { .. })),
        "{e}"
    );
    let e = err(InferRequest {
        packing: Packing {
            samples_per_ciphertext: 3,
            slot_bits: 40,
        },
        ..req.clone()
    });
    assert!(
        matches!(e, ServerError::Violation(ProtocolViolation::Packing { .. })),
        "{e}"
    );
    let e = err(InferRequest {
        row_packing: true,
        ..req.clone()
    });
    assert!(
        matches!(e, ServerError::Violation(ProtocolViolation::Packing { .. })),
        "{e}"
    );
    let mut m = req.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    m.activations[0] = common::key(5)
        .public_key()
        .encrypt(&BigInt::from(1), &mut rng)
        .unwrap();
    assert_eq!(err(m).code(), ErrorCode::Ciphertext);
    // A hello naming another server key.
    let mut h = client.hello();
    h.server_key_id = Some(common::key(3).public_key().id());
    assert!(matches!(
        server.inference_key(&h),
        Err(ServerError::WrongServerKey)
    ));

    // Client side: answers that do not fit the request leave it pending.
    let good = server.infer(&key, &req).unwrap();
    let client_err = |client: &mut InferenceClient,
                      r: &gelunet_protocol::messages::InferResponse| {
        let e = client
            .handle(&ServerMessage::Inferred(r.clone()))
            .unwrap_err();
        assert!(client.is_pending());
        e
    };
    let mut r = good.clone();
    r.request_id += 1;
    assert!(matches!(
        client_err(&mut client, &r),
        ClientError::Violation(ProtocolViolation::WrongRequest { .. })
    ));
    let mut r = good.clone();
    r.layer = 2;
    assert!(matches!(
        client_err(&mut client, &r),
        ClientError::Violation(ProtocolViolation::WrongLayer { .. })
    ));
    let mut r = good.clone();
    r.pre_activations.pop();
    assert!(matches!(
        client_err(&mut client, &r),
        ClientError::Violation(ProtocolViolation::Shape { .. })
    ));
    // A row packing the request did not ask for.
    let mut r = good.clone();
    r.row_packing = Packing {
        samples_per_ciphertext: 2,
        slot_bits: 90,
    };
    assert!(matches!(
        client_err(&mut client, &r),
        ClientError::Violation(ProtocolViolation::Packing { .. })
    ));
    // One sample, row-packed: slots wider than the static bound, a row count that does
    // not follow from the slot width, no packing at all.
    let mut single = inference_client(server, true, true);
    let ClientMessage::Infer(one) = single.start(&x.select(Axis(0), &[0])).unwrap() else {
        panic!()
    };
    let packed = server.infer(&key, &one).unwrap();
    let static_rows = gelunet_protocol::packing::row_packing(&server.config().scales, 4, 6, 512);
    assert!(packed.row_packing.slot_bits <= static_rows.slot_bits);
    for bad in [
        Packing {
            samples_per_ciphertext: 2,
            slot_bits: static_rows.slot_bits + 1,
        },
        Packing {
            samples_per_ciphertext: 2,
            slot_bits: packed.row_packing.slot_bits,
        },
        Packing::NONE,
    ] {
        let mut r = packed.clone();
        r.row_packing = bad;
        assert!(matches!(
            client_err(&mut single, &r),
            ClientError::Violation(ProtocolViolation::Packing { .. })
        ));
    }
    assert!(single.handle(&ServerMessage::Inferred(packed)).is_ok());
    let mut r = good.clone();
    r.pre_activations[0] = common::key(5)
        .public_key()
        .encrypt(&BigInt::from(1), &mut rng)
        .unwrap();
    assert_eq!(client_err(&mut client, &r).code(), ErrorCode::Ciphertext);
    // A value far outside the pre-activation range.
    let mut r = good.clone();
    r.pre_activations[0] = common::key(4)
        .public_key()
        .encrypt(&(BigInt::from(1) << 300), &mut rng)
        .unwrap();
    assert_eq!(client_err(&mut client, &r).code(), ErrorCode::Range);
    let e = client
        .handle(&ServerMessage::Error(
            ProtocolViolation::NoSession.report(None),
        ))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
    // The genuine answer still works.
    assert!(matches!(
        client.handle(&ServerMessage::Inferred(good)).unwrap(),
        InferStep::Next(_)
    ));
    client.cancel();
    assert!(matches!(
        client.handle(&ServerMessage::Inferred(server.infer(&key, &req).unwrap())),
        Err(ClientError::Violation(ProtocolViolation::NoRequest))
    ));
    assert!(matches!(
        client.start(&Array2::zeros((2, 5))),
        Err(ClientError::Data { .. })
    ));
    assert!(matches!(
        client.start(&Array2::zeros((0, 4))),
        Err(ClientError::Data { .. })
    ));

    // Through `Server::handle`: a registered client (client c holds key(c + 1)) may ask
    // between sessions and while another client trains, not during its own session.
    let request_for = |c: usize| {
        let mut ic = InferenceClient::new(
            InferenceConfig {
                allow_test_keys: true,
                ..InferenceConfig::default()
            },
            common::key(c + 1),
            &sim.server().hello(),
        )
        .unwrap();
        ic.start(&x).unwrap()
    };
    let msgs = [request_for(0), request_for(1)];
    for (c, msg) in msgs.iter().enumerate() {
        assert!(matches!(
            sim.server_mut().handle(ClientId(c), msg).unwrap(),
            Some(ServerMessage::Inferred(_))
        ));
    }
    let (cid, _) = sim.server_mut().start_session().unwrap();
    let e = sim.server_mut().handle(cid, &msgs[cid.0]).unwrap_err();
    assert!(
        matches!(
            e,
            ServerError::Violation(ProtocolViolation::OutOfTurn { .. })
        ),
        "{e}"
    );
    let other = 1 - cid.0;
    assert!(matches!(
        sim.server_mut()
            .handle(ClientId(other), &msgs[other])
            .unwrap(),
        Some(ServerMessage::Inferred(_))
    ));
    // A request under another key than the sender's: refused as a ciphertext error.
    let e = sim
        .server_mut()
        .handle(ClientId(other), &msgs[cid.0])
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Ciphertext, "{e}");
}
