//! Encrypted training equals plaintext fixed-point training, bit for bit (DESIGN.md
//! "What is measured": exactness), for every mask mode; the Alg. 5 invariant holds after
//! every session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::{Activation, MaskMode, ModelSpec};

fn run_exact(spec: ModelSpec, batch: usize, mask: MaskMode, sessions: usize) {
    let cfg = test_config(spec, batch, mask);
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
        multi_iteration > 0,
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
    };
    run_exact(spec.clone(), 2, MaskMode::default(), 6);
    run_exact(spec, 2, MaskMode::Uniform, 4);
}
