//! Single-sample encrypted-inference latency (paper Alg. 1 with the trained model) for
//! Dense(12) `[4, 12, 3]` and Dense(300) `[784, 300, 10]` (and the conv networks `conv1`
//! and `lenet5` on 1×28×28, position-packed, when named) with random (Xavier) weights,
//! on one thread and on rayon's whole pool, with and without row packing; plus the
//! throughput of a sample-packed batch. `online` is the latency when the client computed
//! the obfuscators of the inference beforehand
//! ([`InferenceClient::precompute_obfuscators`], not timed); `CPU/inference` counts the
//! plain runs only.
//!
//! ```text
//! cargo run --release -p gelunet-sim --example inference_latency -- \
//!     [--key-bits 2048] [--runs 5] [--batch 16] [--models 12,300,conv1,lenet5]
//! ```

mod common;

use std::time::{Duration, Instant};

use gelunet_client::{InferStep, InferenceClient, InferenceConfig};
use gelunet_paillier::PublicKey;
use gelunet_protocol::messages::ClientMessage;
use gelunet_protocol::{Activation, ModelSpec};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use ndarray::Array2;

use common::{cpu_time, keygen, number, parse_flags};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

struct Args {
    key_bits: u64,
    runs: usize,
    batch: usize,
    models: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        key_bits: 2048,
        runs: 5,
        batch: 16,
        models: vec!["12".into(), "300".into()],
    };
    parse_flags(|flag, val| {
        match flag {
            "--key-bits" => a.key_bits = number(&val()?)?,
            "--runs" => a.runs = number(&val()?)?,
            "--batch" => a.batch = number(&val()?)?,
            "--models" => a.models = val()?.split(',').map(String::from).collect(),
            other => return Err(format!("unknown argument {other}")),
        }
        Ok(())
    })?;
    Ok(a)
}

#[derive(Default, Clone, Copy)]
struct Timing {
    total: Duration,
    server: Duration,
    client: Duration,
    decryptions: usize,
}

/// One inference, timing the server's and the client's handlers.
fn run_once(
    server: &Server,
    key: &PublicKey,
    client: &mut InferenceClient,
    x: &Array2<f64>,
) -> Result<(Timing, Vec<usize>), Box<dyn std::error::Error + Send + Sync>> {
    let t0 = Instant::now();
    let mut t = Timing::default();
    let tc = Instant::now();
    let mut msg = client.start(x)?;
    t.client += tc.elapsed();
    loop {
        let ClientMessage::Infer(req) = &msg else {
            return Err("unexpected message".into());
        };
        let ts = Instant::now();
        let resp = server.infer(key, req)?;
        t.server += ts.elapsed();
        t.decryptions += resp.pre_activations.len();
        let tc = Instant::now();
        let step = client.handle(&gelunet_protocol::messages::ServerMessage::Inferred(resp))?;
        t.client += tc.elapsed();
        match step {
            InferStep::Next(m) => msg = m,
            InferStep::Done(p, _) => {
                t.total = t0.elapsed();
                return Ok((t, p));
            }
        }
    }
}

fn median(mut v: Vec<Timing>) -> Timing {
    v.sort_by_key(|t| t.total);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = parse()?;
    let t = Instant::now();
    let server_key = keygen(args.key_bits, 1)?;
    let client_key = keygen(args.key_bits, 2)?;
    println!(
        "{}-bit keys generated in {:.1?}; rayon pool: {} threads; {} runs per point (median)",
        args.key_bits,
        t.elapsed(),
        rayon::current_num_threads(),
        args.runs
    );
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    println!(
        "{:<12} {:>7} {:>9} {:>10} {:>10} {:>10} {:>6} {:>12} {:>10}",
        "model",
        "threads",
        "row pack",
        "latency",
        "server",
        "client",
        "cts↓",
        "CPU/inference",
        "online"
    );
    for model in &args.models {
        let (spec, label) = match gelunet_protocol::arch::Arch::named(model) {
            Some(arch) => {
                let input = gelunet_protocol::conv::Shape {
                    channels: 1,
                    height: 28,
                    width: 28,
                };
                (ModelSpec::from_arch(&arch, input)?, model.clone())
            }
            None => {
                let hidden: usize = number(model)?;
                let widths = if hidden == 300 {
                    vec![784, 300, 10]
                } else {
                    vec![4, hidden, 3]
                };
                (
                    ModelSpec::new(widths, Activation::Sigmoid),
                    format!("Dense({hidden})"),
                )
            }
        };
        let widths = spec.widths.clone();
        let mut cfg = ServerConfig::new(spec, 0.1, 1);
        cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
        cfg.insecure = InsecureOptions {
            allow_test_keys: args.key_bits < 2048,
            allow_unmasked_gradients: false,
        };
        let server = Server::new(cfg, server_key.clone())?;
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let x = Array2::from_shape_fn((1, widths[0]), |_| rng.gen_range(-1.0..1.0));
        for row_packing in [true, false] {
            let mut client = InferenceClient::new(
                InferenceConfig {
                    randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                        seed: 3,
                    },
                    allow_test_keys: args.key_bits < 2048,
                    packing: true,
                    row_packing,
                },
                client_key.clone(),
                &server.hello(),
            )?;
            let key = server.inference_key(&client.hello())?;
            let expected = server.true_model()?.predict(
                &server.config().scales,
                x.mapv(|v| {
                    server
                        .config()
                        .scales
                        .encode(gelunet_protocol::ValueKind::Activation, v)
                        .unwrap_or(0)
                })
                .view(),
            )?;
            // Warm-up: builds the client's CRT encryption tables.
            run_once(&server, &key, &mut client, &x)?;
            for threads in [1usize, 0] {
                // `precompute`: the client's obfuscators computed before each (timed) run.
                let mut measure =
                    |precompute: bool| -> Result<Timing, Box<dyn std::error::Error + Send + Sync>> {
                        let mut runs = Vec::new();
                        for _ in 0..args.runs {
                            if precompute {
                                let per = client.obfuscators_per_inference(1);
                                client.precompute_obfuscators(per);
                            }
                            let (t, p) = if threads == 1 {
                                one.install(|| run_once(&server, &key, &mut client, &x))
                                    .map_err(|e| e.to_string())?
                            } else {
                                run_once(&server, &key, &mut client, &x)?
                            };
                            if p != expected {
                                return Err("prediction differs from the plaintext model".into());
                            }
                            runs.push(t);
                        }
                        Ok(median(runs))
                    };
                let cpu0 = cpu_time();
                let m = measure(false)?;
                let cpu = match (cpu0, cpu_time()) {
                    (Some(a), Some(b)) => format!("{:.1?}", (b - a) / args.runs as u32),
                    _ => "n/a".into(),
                };
                let online = measure(true)?;
                println!(
                    "{:<12} {:>7} {:>9} {:>10.1?} {:>10.1?} {:>10.1?} {:>6} {:>12} {:>10.1?}",
                    label,
                    if threads == 1 {
                        "1".to_string()
                    } else {
                        rayon::current_num_threads().to_string()
                    },
                    if row_packing { "on" } else { "off" },
                    m.total,
                    m.server,
                    m.client,
                    m.decryptions,
                    cpu,
                    online.total
                );
            }
        }
        if args.batch > 1 {
            let mut client = InferenceClient::new(
                InferenceConfig {
                    randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                        seed: 4,
                    },
                    allow_test_keys: args.key_bits < 2048,
                    ..InferenceConfig::default()
                },
                client_key.clone(),
                &server.hello(),
            )?;
            let key = server.inference_key(&client.hello())?;
            let xb = Array2::from_shape_fn((args.batch, widths[0]), |_| rng.gen_range(-1.0..1.0));
            run_once(&server, &key, &mut client, &x)?;
            let (t, _) = run_once(&server, &key, &mut client, &xb)?;
            println!(
                "{label:<12} batch of {} (sample-packed, all threads): {:.1?} ({:.1?} per sample; server {:.1?}, client {:.1?}, {} ciphertexts down)",
                args.batch,
                t.total,
                t.total / args.batch as u32,
                t.server,
                t.client,
                t.decryptions
            );
        }
    }
    Ok(())
}
