//! The one test with real 2048-bit keys: two short sessions, exact against the reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_client::{Client, ClientConfig};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::{
    Activation, Dataset, ModelSpec, ReferenceTrainer, SessionLength, ValueKind,
};
use gelunet_server::{Server, ServerConfig};
use gelunet_sim::{synthetic_blobs, Simulation};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn two_sessions_with_2048_bit_keys() {
    let t = std::time::Instant::now();
    let server_key = PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
    let client_key = PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
    eprintln!("keygen {:.1?}", t.elapsed());
    let spec = ModelSpec::new(vec![4, 3, 2], Activation::Tanh);
    let mut cfg = ServerConfig::new(spec.clone(), 0.5, 1);
    cfg.policy.length = SessionLength::Fixed(2);
    let (x, y) = synthetic_blobs(8, 4, 2, 0.5, 3);
    let seed = 42;
    let server = Server::new(cfg.clone(), server_key).unwrap();
    let client = Client::new(
        ClientConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed },
            ..ClientConfig::default()
        },
        client_key,
        x.clone(),
        y.clone(),
    )
    .unwrap();
    let mut sim = Simulation::new(server, vec![client]).unwrap();
    sim.check_invariants(true);
    let eta = cfg
        .scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .unwrap();
    let data = Dataset::quantize(x.view(), &y, 2, &cfg.scales).unwrap();
    let mut reference = ReferenceTrainer::new(
        &spec,
        cfg.scales,
        cfg.model_seed,
        eta,
        1,
        vec![(data, seed)],
    )
    .unwrap();
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let rec = sim.run_session().unwrap();
        eprintln!("session {} in {:.1?}", rec.session, t.elapsed());
        reference.run_session(rec.plan).unwrap();
        assert_eq!(sim.model(), reference.model());
    }
    assert_eq!(sim.invariant_checks(), 2);
}
