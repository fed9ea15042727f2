//! Trains a 2-layer GELU-Net (`[8, 12, 3]`, sigmoid hidden layer, softmax output) on a
//! synthetic 3-class problem split over 3 in-memory clients with real Paillier keys, next
//! to the plaintext fixed-point reference, and prints the per-iteration cost.
//!
//! ```text
//! cargo run --release -p gelunet-sim --example train_synthetic -- \
//!     [--key-bits 512|2048] [--sessions N] [--mask statistical|uniform] [--batch B] \
//!     [--packing on|off] [--threads T]
//! ```
//!
//! `--packing off` runs the unpacked protocol (one value per ciphertext) for comparison;
//! `--threads 1` runs everything on one thread (rayon pool of 1).
//!
//! Keys below 2048 bits are test keys (fast, insecure); `--key-bits 2048` uses real ones.

mod common;

use std::time::{Duration, Instant};

use gelunet_client::{Client, ClientConfig};
use gelunet_protocol::{Activation, Dataset, MaskMode, ModelSpec, ReferenceTrainer, ValueKind};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use gelunet_sim::{synthetic_blobs, Simulation};
use ndarray::{Array2, Axis};

use common::{cpu_time, keygen, number, parse_flags};

const CLIENTS: usize = 3;
const PER_CLIENT: usize = 60;
const TEST: usize = 90;

struct Args {
    key_bits: u64,
    sessions: usize,
    mask: MaskMode,
    batch: usize,
    packing: bool,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        key_bits: 512,
        sessions: 120,
        mask: MaskMode::default(),
        batch: 2,
        packing: true,
        threads: 0,
    };
    parse_flags(|flag, val| {
        match flag {
            "--key-bits" => a.key_bits = number(&val()?)?,
            "--sessions" => a.sessions = number(&val()?)?,
            "--batch" => a.batch = number(&val()?)?,
            "--threads" => a.threads = number(&val()?)?,
            "--packing" => {
                a.packing = match val()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--packing on|off, not {other}")),
                }
            }
            "--mask" => {
                a.mask = match val()?.as_str() {
                    "statistical" => MaskMode::default(),
                    "uniform" => MaskMode::Uniform,
                    other => return Err(format!("unknown mask {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
        Ok(())
    })?;
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()?;
    }
    let spec = ModelSpec::new(vec![8, 12, 3], Activation::Sigmoid);
    let (x, y) = synthetic_blobs(CLIENTS * PER_CLIENT + TEST, 8, 3, 0.9, 2024);
    let test_rows: Vec<usize> = (CLIENTS * PER_CLIENT..x.nrows()).collect();

    let mut cfg = ServerConfig::new(spec.clone(), 0.25, args.batch);
    cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
    cfg.mask = args.mask;
    cfg.packing = args.packing;
    cfg.insecure = InsecureOptions {
        allow_test_keys: args.key_bits < 2048,
        allow_unmasked_gradients: false,
    };
    let t = Instant::now();
    let server = Server::new(cfg.clone(), keygen(args.key_bits, 1)?)?;
    let mut clients = Vec::new();
    let mut shares = Vec::new();
    for c in 0..CLIENTS {
        let rows: Vec<usize> = (c * PER_CLIENT..(c + 1) * PER_CLIENT).collect();
        let xc = x.select(Axis(0), &rows);
        let yc: Vec<usize> = rows.iter().map(|&i| y[i]).collect();
        let config = ClientConfig {
            randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible {
                seed: 100 + c as u64,
            },
            allow_test_keys: args.key_bits < 2048,
            ..ClientConfig::default()
        };
        clients.push(Client::new(
            config,
            keygen(args.key_bits, 10 + c as u64)?,
            xc.clone(),
            yc.clone(),
        )?);
        shares.push((
            Dataset::quantize(xc.view(), &yc, 3, &cfg.scales)?,
            100 + c as u64,
        ));
    }
    println!(
        "keys: {} bits ({}), generated in {:.1?}; mask {:?}; spec {:?}; B = {}",
        args.key_bits,
        if args.key_bits < 2048 {
            "insecure test keys"
        } else {
            "real keys"
        },
        t.elapsed(),
        cfg.mask,
        spec.widths,
        args.batch
    );
    let mut sim = Simulation::new(server, clients)?;
    println!(
        "packing {}: samples {:?}, masked updates {:?}, final updates {:?}; rayon threads {}",
        if args.packing { "on" } else { "off" },
        sim.clients()[0].packing(),
        sim.server().masked_update_packing(),
        sim.server().final_update_packing(),
        rayon::current_num_threads()
    );
    let eta = cfg
        .scales
        .encode(ValueKind::LearningRate, cfg.learning_rate)?;
    let mut reference =
        ReferenceTrainer::new(&spec, cfg.scales, cfg.model_seed, eta, args.batch, shares)?;
    let test = Dataset::quantize(
        x.select(Axis(0), &test_rows).view(),
        &test_rows.iter().map(|&i| y[i]).collect::<Vec<_>>(),
        3,
        &cfg.scales,
    )?;
    let accuracy = |m: &gelunet_protocol::FixedModel, d: &Dataset| {
        m.accuracy(&cfg.scales, d.x.view(), &d.labels)
    };
    println!(
        "initial test accuracy: encrypted {:.3}, reference {:.3}",
        accuracy(sim.model(), &test)?,
        accuracy(reference.model(), &test)?
    );
    println!(
        "{:>7} {:>6} {:>4} {:>9} {:>9} {:>9} {:>5} {:>9} {:>9}",
        "session", "client", "iter", "time", "server", "client", "msgs", "up B", "down B"
    );
    let t = Instant::now();
    let cpu0 = cpu_time();
    for s in 0..args.sessions {
        let rec = sim.run_session()?;
        reference.run_session(rec.plan)?;
        if sim.model() != reference.model() {
            return Err(format!(
                "session {}: encrypted weights differ from the reference",
                rec.session
            )
            .into());
        }
        if s < 3 {
            for st in sim.stats().iter().filter(|st| st.session == rec.session) {
                println!(
                    "{:>7} {:>6} {:>4} {:>9.1?} {:>9.1?} {:>9.1?} {:>5} {:>9} {:>9}",
                    st.session,
                    st.client,
                    st.iteration,
                    st.elapsed,
                    st.server_time,
                    st.client_time,
                    st.messages_to_server + st.messages_to_client,
                    st.bytes_to_server,
                    st.bytes_to_client
                );
            }
        }
        if (s + 1) % 30 == 0 || s + 1 == args.sessions {
            println!(
                "after {:>4} sessions ({:.1?}): test accuracy encrypted {:.3}, reference {:.3}, weights identical",
                s + 1,
                t.elapsed(),
                accuracy(sim.model(), &test)?,
                accuracy(reference.model(), &test)?
            );
        }
    }
    let cpu = cpu_time().zip(cpu0).map(|(b, a)| b - a);
    let st = sim.stats();
    let n = st.len().max(1);
    if let Some(cpu) = cpu {
        println!(
            "process CPU time {:.1?} for {} iterations: {:.1?} per iteration (the single-thread latency of an unloaded machine)",
            cpu,
            n,
            cpu / n as u32
        );
    }
    let total: Duration = st.iter().map(|s| s.elapsed).sum();
    let server: Duration = st.iter().map(|s| s.server_time).sum();
    let client: Duration = st.iter().map(|s| s.client_time).sum();
    let msgs: usize = st
        .iter()
        .map(|s| s.messages_to_server + s.messages_to_client)
        .sum();
    let up: usize = st.iter().map(|s| s.bytes_to_server).sum();
    let down: usize = st.iter().map(|s| s.bytes_to_client).sum();
    println!(
        "{} iterations: mean {:.1?} (server {:.1?}, clients {:.1?}), {:.1} messages, {:.0} B up, {:.0} B down per iteration",
        n,
        total / n as u32,
        server / n as u32,
        client / n as u32,
        msgs as f64 / n as f64,
        up as f64 / n as f64,
        down as f64 / n as f64
    );
    let (train_x, train_y): (Vec<Array2<i128>>, Vec<Vec<usize>>) = sim
        .clients()
        .iter()
        .filter_map(|c| c.dataset().map(|d| (d.x.clone(), d.labels.clone())))
        .unzip();
    let views: Vec<_> = train_x.iter().map(|a| a.view()).collect();
    let tx = ndarray::concatenate(Axis(0), &views)?;
    let ty: Vec<usize> = train_y.concat();
    println!(
        "final: train accuracy {:.3} (reference {:.3}), test accuracy {:.3} (reference {:.3})",
        sim.model().accuracy(&cfg.scales, tx.view(), &ty)?,
        reference.model().accuracy(&cfg.scales, tx.view(), &ty)?,
        accuracy(sim.model(), &test)?,
        accuracy(reference.model(), &test)?
    );
    Ok(())
}
