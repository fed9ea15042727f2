//! Abandoned sessions roll back exactly to `w^I, b^I` and training goes on with the next
//! client (docs/DESIGN.md "Sessions and the d_max bound").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_protocol::{Activation, MaskMode, ModelSpec};
use gelunet_sim::Fault;

#[test]
fn abandoned_sessions_roll_back_and_training_continues() {
    let spec = ModelSpec {
        widths: vec![4, 6, 5, 3],
        hidden: vec![Activation::Sigmoid, Activation::Tanh],
        layers: Vec::new(),
    };
    let cfg = test_config(spec, 1, MaskMode::default());
    let (mut sim, mut reference) = build(cfg, 3, 12);
    let faults = [
        Fault::None,
        Fault::ClientAbortAfter(0),
        Fault::None,
        Fault::ClientAbortAfter(7),
        Fault::DisconnectAfter(3),
        Fault::None,
        Fault::DisconnectAfter(12),
        Fault::None,
        Fault::None,
    ];
    let mut abandoned = 0;
    for fault in faults {
        let before = sim.model().clone();
        let rec = sim.run_session_with(fault).unwrap();
        assert!(sim.server().active_session().is_none());
        assert!(sim.clients().iter().all(|c| c.active_session().is_none()));
        if rec.completed {
            reference.run_session(rec.plan).unwrap();
        } else {
            abandoned += 1;
            assert_eq!(sim.model(), &before, "rollback to w^I after {fault:?}");
        }
        assert_eq!(sim.model(), reference.model());
    }
    assert!(abandoned >= 3, "{abandoned}");
    assert!(sim.records().iter().filter(|r| r.completed).count() >= 5);
}

#[test]
fn a_share_without_a_key_is_refused() {
    let cfg = test_config(
        ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid),
        1,
        MaskMode::default(),
    );
    let data = share(&cfg.spec, 3, 12, 5);
    let server = gelunet_server::Server::new(cfg.clone(), key(0)).unwrap();
    let err = gelunet_sim::Simulation::with_shares(server, &data, [key(1), key(2)], |c| {
        client_config(c, false)
    })
    .unwrap_err();
    assert_eq!(
        err,
        gelunet_sim::SimError::MissingKey {
            client: 2,
            clients: 3
        }
    );
}
