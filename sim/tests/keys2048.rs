//! The tests with real 2048-bit keys: two short sessions of a dense net and of a conv
//! net (pooling, protocol v2), exact against the reference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use std::sync::OnceLock;

use gelunet_client::{Client, ClientConfig};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::arch::Arch;
use gelunet_protocol::conv::Shape;
use gelunet_protocol::{
    Activation, Dataset, ModelSpec, ReferenceTrainer, SessionLength, ValueKind,
};
use gelunet_server::{Server, ServerConfig};
use gelunet_sim::{synthetic_blobs, Simulation};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The server's and the client's 2048-bit keys, generated once.
fn keys() -> (PrivateKey, PrivateKey) {
    static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let t = std::time::Instant::now();
        let server_key = PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        let client_key = PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(2)).unwrap();
        eprintln!("keygen {:.1?}", t.elapsed());
        (server_key, client_key)
    })
    .clone()
}

#[test]
fn two_sessions_with_2048_bit_keys() {
    let spec = ModelSpec::new(vec![4, 3, 2], Activation::Tanh);
    two_sessions(spec, 1);
}

#[test]
fn two_conv_sessions_with_2048_bit_keys() {
    let arch: Arch = "conv3x3:2,meanpool,relu,dense:2".parse().unwrap();
    let input = Shape {
        channels: 1,
        height: 6,
        width: 6,
    };
    two_sessions(ModelSpec::from_arch(&arch, input).unwrap(), 2);
}

/// Two sessions of two iterations on mini-batches of `batch`, one client.
fn two_sessions(spec: ModelSpec, batch: usize) {
    let (server_key, client_key) = keys();
    let mut cfg = ServerConfig::new(spec.clone(), 0.5, batch);
    cfg.policy.length = SessionLength::Fixed(2);
    let features = spec.inputs();
    let (x, y) = synthetic_blobs(8, features, 2, 0.5, 3);
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
        batch,
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
