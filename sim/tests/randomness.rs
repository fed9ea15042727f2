//! Where the clients' randomness comes from (docs/DESIGN.md "Protocol v2", "Randomness"):
//! masks and obfuscators from the operating system with only the batch order from a
//! public seed give the plaintext reference's model bit for bit, with fresh masks on
//! every run; the insecure reproducible mode repeats a run's encrypted activations,
//! errors and masked updates exactly (the decryption blinding factors, drawn from the
//! operating system, change no plaintext).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use common::*;
use gelunet_client::ClientConfig;
use gelunet_protocol::messages::ClientMessage;
use gelunet_protocol::randomness::Randomness;
use gelunet_protocol::{Activation, ModelSpec};
use gelunet_server::Server;
use gelunet_sim::Simulation;

const SESSIONS: usize = 5;

/// A v2 run of [`SESSIONS`] sessions, 3 clients of 12 samples; its client messages, and
/// whether the model equalled the reference after every session and at the release.
fn run(config: impl Fn(usize) -> ClientConfig) -> (Vec<(usize, ClientMessage)>, bool) {
    let cfg = v2_config(ModelSpec::new(vec![4, 5, 3], Activation::Sigmoid), 2);
    let data = share(&cfg.spec, 3, 12, 5);
    let server = Server::new(cfg.clone(), key(0)).unwrap();
    let mut sim = Simulation::with_shares(server, &data, (1..).map(key), config).unwrap();
    sim.record_messages(true);
    let mut reference = reference_for(&cfg, &data);
    let mut exact = true;
    for _ in 0..SESSIONS {
        let rec = sim.run_session().unwrap();
        assert!(rec.completed);
        reference.run_session(rec.plan).unwrap();
        exact &= sim.model() == reference.model();
    }
    exact &= &sim.release(0).unwrap() == reference.model();
    (sim.client_messages().to_vec(), exact)
}

fn os_masks_public_order(c: usize) -> ClientConfig {
    ClientConfig {
        randomness: Randomness::Os,
        batch_seed: Some(client_seed(c)),
        ..client_config(c, false)
    }
}

#[test]
fn os_masks_with_a_public_batch_order_give_the_reference_model_with_fresh_masks() {
    let (a, exact_a) = run(os_masks_public_order);
    let (b, exact_b) = run(os_masks_public_order);
    assert!(exact_a && exact_b, "the masks must not change the model");
    assert_eq!(a.len(), b.len());
    // Same schedule and batches, but every encrypted activation and masked update is new.
    let differing = a
        .iter()
        .zip(&b)
        .filter(|((ca, ma), (cb, mb))| {
            assert_eq!(ca, cb);
            assert_eq!(ma.kind(), mb.kind());
            ma != mb
        })
        .count();
    assert_eq!(
        differing,
        a.len(),
        "a message repeated across two OS-seeded runs"
    );
}

#[test]
fn the_insecure_reproducible_mode_repeats_every_seeded_message() {
    let (a, exact_a) = run(|c| client_config(c, false));
    let (b, exact_b) = run(|c| client_config(c, false));
    assert!(exact_a && exact_b);
    // The rollovers carry `P_{v+1}`, derived from the group key and the server's model
    // id (fresh per simulation); everything else comes from the clients' seeds alone.
    let seeded = |m: &[(usize, ClientMessage)]| -> Vec<(usize, ClientMessage)> {
        m.iter()
            .filter(|(_, m)| !matches!(m, ClientMessage::Rollover(_)))
            .cloned()
            .collect()
    };
    let (a, b) = (seeded(&a), seeded(&b));
    assert!(a
        .iter()
        .any(|(_, m)| matches!(m, ClientMessage::PlainUpdate(_))));
    assert!(a
        .iter()
        .any(|(_, m)| matches!(m, ClientMessage::Backward(_))));
    assert_eq!(a, b);
}
