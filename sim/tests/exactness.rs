//! Encrypted training equals plaintext fixed-point training, bit for bit (docs/DESIGN.md
//! "What is measured": exactness), for every mask mode; the Alg. 5 invariant holds after
//! every session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::messages::Packing;
use gelunet_protocol::{
    Activation, LearningRateSchedule, MaskMode, ModelSpec, SessionLength, ValueKind,
};
use gelunet_server::ServerConfig;

fn run_exact(spec: ModelSpec, batch: usize, mask: MaskMode, sessions: usize) {
    run_exact_with(test_config(spec, batch, mask), sessions, true);
}

/// Runs `sessions` sessions and checks the model against the reference after each;
/// returns the session rates `η_s` (at `2^fe`) in order.
fn run_exact_with(cfg: ServerConfig, sessions: usize, need_multi: bool) -> Vec<i128> {
    let eta = cfg
        .scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .unwrap();
    let schedule = cfg.lr_schedule;
    let (mut sim, mut reference) = build(cfg, 3, 12);
    let mut rates = Vec::new();
    sim.check_invariants(true);
    let (x, _) = all_data(&sim);
    assert_eq!(
        sim.model(),
        reference.model(),
        "same seed, same initial weights"
    );
    let mut multi_iteration = 0;
    for _ in 0..sessions {
        let (done, held) = sim.progress();
        let eta_s = schedule.eta_at(eta, done, held);
        let rec = sim.run_session().unwrap();
        assert!(rec.completed);
        if rec.plan.iterations > 1 {
            multi_iteration += 1;
        }
        reference.run_session_at(rec.plan, eta_s).unwrap();
        rates.push(eta_s);
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
    rates
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

#[test]
fn exact_with_a_learning_rate_schedule_under_both_protocols() {
    // 3 clients × 12 samples, B = 2: a step every quarter epoch (9 samples) and a cosine
    // over one epoch change η_s between sessions; both protocols stay the reference
    // (v2: η_s in plaintext in SessionStart; paper: [η_s]_s and the final update).
    let spec = ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid);
    for schedule in ["step:0.5:0.25", "cosine:1"] {
        for v2 in [false, true] {
            let mut cfg = if v2 {
                v2_config(spec.clone(), 2)
            } else {
                test_config(spec.clone(), 2, MaskMode::default())
            };
            cfg.lr_schedule = schedule.parse::<LearningRateSchedule>().unwrap();
            let rates = run_exact_with(cfg, 8, true);
            let mut distinct = rates.clone();
            distinct.dedup();
            assert!(distinct.len() >= 3, "{schedule}, v2 {v2}: rates {rates:?}");
            assert!(rates.windows(2).all(|w| w[1] <= w[0]), "{rates:?}");
        }
    }
}
