//! Encrypted training equals plaintext fixed-point training, bit for bit (docs/DESIGN.md
//! "What is measured": exactness), for every mask mode; the Alg. 5 invariant holds after
//! every session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::messages::Packing;
use gelunet_protocol::{Activation, MaskMode, ModelSpec, SessionLength};
use gelunet_server::ServerConfig;

fn run_exact(spec: ModelSpec, batch: usize, mask: MaskMode, sessions: usize) {
    run_exact_with(test_config(spec, batch, mask), sessions, true);
}

fn run_exact_with(cfg: ServerConfig, sessions: usize, need_multi: bool) {
    let (mut sim, mut reference) = build(cfg, 3, 12);
    sim.check_invariants(true);
    let (x, _) = all_data(&sim);
    assert_eq!(
        sim.model(),
        reference.model(),
        "same seed, same initial weights"
    );
    let mut multi_iteration = 0;
    for _ in 0..sessions {
        let rec = sim.run_session().unwrap();
        assert!(rec.completed);
        if rec.plan.iterations > 1 {
            multi_iteration += 1;
        }
        reference.run_session(rec.plan).unwrap();
        assert_eq!(
            sim.model(),
            reference.model(),
            "weights after session {}",
            rec.session
        );
        let scales = &sim.server().config().scales;
        assert_eq!(
            sim.model().predict(scales, x.view()).unwrap(),
            reference.model().predict(scales, x.view()).unwrap()
        );
    }
    assert_eq!(sim.invariant_checks(), sessions);
    assert!(
        multi_iteration > 0 || !need_multi,
        "some session must exercise masked updates"
    );
}

#[test]
fn exact_statistical_mask_sigmoid() {
    run_exact(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
        6,
    );
}

#[test]
fn exact_uniform_mask_sigmoid() {
    run_exact(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::Uniform,
        6,
    );
}

#[test]
fn exact_without_mask_insecure() {
    run_exact(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::InsecureNone,
        4,
    );
}

#[test]
fn exact_deeper_network_batches_relu_tanh() {
    let spec = ModelSpec {
        widths: vec![4, 6, 5, 3],
        hidden: vec![Activation::Relu, Activation::Tanh],
        layers: Vec::new(),
    };
    run_exact(spec.clone(), 2, MaskMode::default(), 6);
    run_exact(spec, 2, MaskMode::Uniform, 4);
}

#[test]
fn exact_with_packing_off() {
    // `packing: false`: one sample per activation ciphertext and one parameter per update
    // ciphertext (the unpacked protocol), still exact.
    let spec = ModelSpec {
        widths: vec![4, 6, 5, 3],
        hidden: vec![Activation::Relu, Activation::Tanh],
        layers: Vec::new(),
    };
    let mut cfg = test_config(spec, 2, MaskMode::default());
    cfg.packing = false;
    let (sim, _) = build(cfg.clone(), 1, 12);
    assert_eq!(sim.clients()[0].packing(), Some(Packing::NONE));
    assert_eq!(
        sim.server().masked_update_packing(),
        gelunet_protocol::messages::UpdatePacking::NONE
    );
    run_exact_with(cfg, 5, true);
}

#[test]
fn exact_with_packed_batches_split_over_ciphertexts() {
    // B = 7 samples with 512-bit keys: 6 fit one ciphertext (slots of about 84 bits), so
    // every activation and error is split into groups of 6 and 1.
    let spec = ModelSpec::new(vec![8, 8, 3], Activation::Sigmoid);
    let mut cfg = test_config(spec, 7, MaskMode::default());
    cfg.policy.length = SessionLength::Random;
    let (sim, _) = build(cfg.clone(), 1, 12);
    let p = sim.clients()[0].packing().unwrap();
    assert!(
        p.samples_per_ciphertext >= 2 && p.samples_per_ciphertext < 7,
        "{p:?}"
    );
    run_exact_with(cfg, 3, false);
    // Two iterations of 4 samples, packed in one ciphertext each, with masked updates.
    let mut cfg = test_config(
        ModelSpec::new(vec![8, 8, 3], Activation::Tanh),
        4,
        MaskMode::Uniform,
    );
    cfg.policy.length = SessionLength::Fixed(2);
    run_exact_with(cfg, 3, true);
}
