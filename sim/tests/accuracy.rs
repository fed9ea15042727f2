//! "Done means": encrypted training on a synthetic problem with 3 clients reaches the
//! same accuracy as the plaintext reference, clearly above chance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::{Activation, Dataset, MaskMode, ModelSpec};
use gelunet_sim::synthetic_blobs;

#[test]
fn encrypted_training_matches_reference_accuracy() {
    let spec = ModelSpec::new(vec![4, 8, 3], Activation::Sigmoid);
    let mut cfg = test_config(spec.clone(), 2, MaskMode::default());
    cfg.learning_rate = 1.0;
    let (mut sim, mut reference) = build(cfg.clone(), 3, 20);
    // Held-out samples from the same blobs (same generator seed as the shares, later rows).
    let (x, y) = synthetic_blobs(3 * 20 + 60, 4, 3, 0.5, 5);
    let rows: Vec<usize> = (60..120).collect();
    let test = Dataset::quantize(
        x.select(ndarray::Axis(0), &rows).view(),
        &rows.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        3,
        &cfg.scales,
    )
    .unwrap();
    let acc = |m: &gelunet_protocol::FixedModel| {
        m.accuracy(&cfg.scales, test.x.view(), &test.labels)
            .unwrap()
    };
    let initial = acc(sim.model());
    for _ in 0..90 {
        let rec = sim.run_session().unwrap();
        reference.run_session(rec.plan).unwrap();
    }
    assert_eq!(sim.model(), reference.model());
    let (enc, plain) = (acc(sim.model()), acc(reference.model()));
    eprintln!("test accuracy: initial {initial:.3}, encrypted {enc:.3}, reference {plain:.3}");
    assert_eq!(enc, plain);
    assert!(enc >= 0.8, "accuracy {enc} not clearly above chance (1/3)");
    assert!(enc > initial);
    // Cost accounting is filled in.
    let st = sim.stats();
    assert!(!st.is_empty());
    assert!(st
        .iter()
        .all(|s| s.messages_to_server > 0 && s.bytes_to_server > 0 && s.bytes_to_client > 0));
}
