//! Shared test fixtures: seeded test keys, a synthetic problem split over clients, and a
//! simulation with its plaintext reference.
#![allow(dead_code)]

use std::sync::OnceLock;

use gelunet_client::{Client, ClientConfig};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::v2::Protocol;
use gelunet_protocol::{Dataset, MaskMode, ModelSpec, ReferenceTrainer, Scales, ValueKind};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use gelunet_sim::{synthetic_blobs, Simulation};
use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// 512-bit test keys, generated once per index from fixed seeds.
pub fn key(i: usize) -> PrivateKey {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..6)
            .map(|i| {
                PrivateKey::generate_insecure_for_tests(
                    512,
                    &mut ChaCha20Rng::seed_from_u64(1000 + i as u64),
                )
                .unwrap()
            })
            .collect()
    })[i]
        .clone()
}

/// Client `i`'s share of a synthetic problem.
pub fn share(
    spec: &ModelSpec,
    clients: usize,
    per_client: usize,
    seed: u64,
) -> Vec<(Array2<f64>, Vec<usize>)> {
    let (x, y) = synthetic_blobs(
        clients * per_client,
        spec.inputs(),
        spec.classes(),
        0.5,
        seed,
    );
    (0..clients)
        .map(|c| {
            let rows: Vec<usize> = (c * per_client..(c + 1) * per_client).collect();
            (
                x.select(Axis(0), &rows),
                rows.iter().map(|&i| y[i]).collect(),
            )
        })
        .collect()
}

pub fn client_seed(c: usize) -> u64 {
    77 + 13 * c as u64
}

pub fn test_config(spec: ModelSpec, batch: usize, mask: MaskMode) -> ServerConfig {
    let mut cfg = ServerConfig::new(spec, 0.5, batch);
    cfg.mask = mask;
    // The paper's protocol unless a test asks for v2 ([`v2_config`]).
    cfg.protocol = Protocol::Paper;
    cfg.insecure = InsecureOptions {
        allow_test_keys: true,
        allow_unmasked_gradients: mask.is_insecure(),
    };
    cfg
}

/// [`test_config`] under protocol v2 (statistical mask, `σ = 128`).
pub fn v2_config(spec: ModelSpec, batch: usize) -> ServerConfig {
    let mut cfg = test_config(spec, batch, MaskMode::default());
    cfg.protocol = Protocol::V2;
    cfg
}

pub fn client_config(c: usize, insecure_mask: bool) -> ClientConfig {
    ClientConfig {
        randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
            seed: client_seed(c),
        },
        allow_test_keys: true,
        allow_unmasked_gradients: insecure_mask,
        record_transcript: false,
        ..ClientConfig::default()
    }
}

/// A client with key 1 and `config` holding `share` (features, labels).
pub fn client_on(config: ClientConfig, share: &(Array2<f64>, Vec<usize>)) -> Client {
    Client::new(config, key(1), share.0.clone(), share.1.clone()).unwrap()
}

/// A simulation with `clients` clients (keys 1..) and the matching reference trainer.
pub fn build(
    cfg: ServerConfig,
    clients: usize,
    per_client: usize,
) -> (Simulation, ReferenceTrainer) {
    build_with(cfg, clients, per_client, false)
}

/// As [`build`], with the clients' transcript recording switched on or off.
pub fn build_with(
    cfg: ServerConfig,
    clients: usize,
    per_client: usize,
    record: bool,
) -> (Simulation, ReferenceTrainer) {
    let data = share(&cfg.spec, clients, per_client, 5);
    let server = Server::new(cfg.clone(), key(0)).unwrap();
    let sim = Simulation::with_shares(server, &data, (1..).map(key), |c| ClientConfig {
        record_transcript: record,
        ..client_config(c, cfg.mask.is_insecure())
    })
    .unwrap();
    let reference = reference_for(&cfg, &data);
    (sim, reference)
}

pub fn reference_for(cfg: &ServerConfig, data: &[(Array2<f64>, Vec<usize>)]) -> ReferenceTrainer {
    let scales: Scales = cfg.scales;
    let eta = scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)
        .unwrap();
    let sets = data
        .iter()
        .enumerate()
        .map(|(c, (x, y))| {
            (
                Dataset::quantize(x.view(), y, cfg.spec.classes(), &scales).unwrap(),
                client_seed(c),
            )
        })
        .collect();
    ReferenceTrainer::new(&cfg.spec, scales, cfg.model_seed, eta, cfg.batch_size, sets).unwrap()
}

/// All clients' data, quantized, stacked.
pub fn all_data(sim: &Simulation) -> (Array2<i128>, Vec<usize>) {
    let sets: Vec<&Dataset> = sim.clients().iter().map(|c| c.dataset().unwrap()).collect();
    let views: Vec<_> = sets.iter().map(|d| d.x.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views).unwrap();
    let y = sets.iter().flat_map(|d| d.labels.iter().copied()).collect();
    (x, y)
}
