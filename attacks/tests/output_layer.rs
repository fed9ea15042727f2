//! The clients' side under protocol v2 (`gelunet_attacks::output_layer`): `m_L − 1`
//! samples of one session determine the row-centered output layer from the backward
//! products `q = δ_L·W_L`; fewer do not; and a client recovers the others' summed
//! output-layer update between two of its sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use gelunet_attacks::data::synthetic;
use gelunet_attacks::drive::{generate_keys, SessionSweep};
use gelunet_attacks::output_layer::{self, OutputLayerSetup};
use gelunet_protocol::v2::Protocol;

#[test]
fn m_minus_one_samples_reveal_the_centered_output_layer() {
    let keys = generate_keys(512, 3, 44, true).unwrap();
    // [8, 10, 5]: m_L = 5, so 4 samples suffice; the forward bound is 8.
    let setup = OutputLayerSetup {
        run: common::attack_run(synthetic(60, 8, 5, 7), 10, 12, Protocol::V2),
        sweep: SessionSweep {
            batch: 1,
            sizes: vec![2, 3, 4, 6],
            warmup: 1,
            trials: 3,
        },
    };
    let r = output_layer::run_experiment(&setup, &keys).unwrap();
    assert_eq!(r.needed, 4);
    assert_eq!(r.bound, 8);
    let at = |s: usize| r.points.iter().find(|p| p.samples == s).unwrap();
    for s in [2, 3] {
        let p = at(s);
        assert!(!p.exceeds_bound);
        assert!(p.rank < r.needed, "S = {s}: {p:?}");
        for &e in &p.rel_errors {
            assert!(e > 0.05, "S = {s}: {e}");
        }
    }
    for (s, tol) in [(4, 1e-4), (6, 1e-10)] {
        let p = at(s);
        // Within the forward bound, and still the output layer comes out: with m_L − 1
        // samples to the fixed-point precision of the softmax errors (their sum is zero
        // up to the 2^-24 rounding, which is all that separates W_L from its row shift);
        // with more, that rounding residual pins the shift too (rank m_L) and the
        // centered W_L comes out to f64 precision.
        assert!(!p.exceeds_bound);
        assert!(p.rank >= r.needed, "S = {s}: {p:?}");
        assert_eq!(p.rel_errors.len(), 3);
        for &e in &p.rel_errors {
            assert!(e < tol, "S = {s}: {e}");
        }
        // Sessions 1 and 3 are client 0's: between them it learns client 1's update.
        let cross = p.cross_session.as_ref().unwrap();
        assert_eq!(cross.pairs, 1);
        assert!(cross.max_rel_error < 1e-3, "S = {s}: {cross:?}");
    }
}
