//! Paper-style timings of the CryptoNets baseline (BFV, fhe.rs):
//! per-operation costs (GELU-Net paper, Table 1) and whole-batch inference of
//! Iris-size (4-12-3) and, with `--mnist`, MNIST-size (784-300-10) square networks.
//!
//! `cargo run --release -p gelunet-baselines --example bfv_bench [-- --mnist [--t-bits B]]`
//! (`--t-bits` overrides the smallest sufficient plaintext modulus of the MNIST run, to
//! probe the noise headroom of larger `t`).
use gelunet_baselines::measure::{time_encrypt_decrypt, time_inference, time_poly5, time_square};
use gelunet_baselines::{BfvConfig, BfvContext, SquareNet};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn net(
    n: usize,
    h: usize,
    c: usize,
    scale: f64,
    fx: u32,
    fw: u32,
) -> Result<SquareNet, Box<dyn std::error::Error>> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let w1 = Array2::from_shape_fn((h, n), |_| rng.gen_range(-scale..scale));
    let b1 = Array1::from_shape_fn(h, |_| rng.gen_range(-0.1..0.1));
    let w2 = Array2::from_shape_fn((c, h), |_| rng.gen_range(-scale..scale));
    let b2 = Array1::from_shape_fn(c, |_| rng.gen_range(-0.1..0.1));
    Ok(SquareNet::from_f64(&w1, &b1, &w2, &b2, fx, fw)?)
}

fn ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

/// Times a whole-batch inference of `net` on `x` (inputs below `bound`) and prints it.
fn infer(
    name: &str,
    ctx: &mut BfvContext,
    net: &SquareNet,
    x: &Array2<i64>,
    bound: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let r = time_inference(ctx, net, x, bound)?;
    println!("{}", r.parameters);
    println!(
        "{name}, {} samples: prepare {}, encrypt {}, infer {}, decrypt {}, exact {}",
        r.samples,
        ms(r.prepare_secs),
        ms(r.encrypt_secs),
        ms(r.infer_secs),
        ms(r.decrypt_secs),
        r.correct
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mnist = args.iter().any(|a| a == "--mnist");
    let t_bits: Option<u32> = args
        .iter()
        .position(|a| a == "--t-bits")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?;
    let reps = 5;

    // Per-operation costs, N = 8192 with a 20-bit t (room for the depth-3 Taylor-5).
    let mut ctx = BfvContext::new(&BfvConfig::n8192(20)?, [1; 32])?;
    println!("{}", ctx.describe());
    let sq = time_square(&mut ctx, reps)?;
    let p5 = time_poly5(&mut ctx, reps)?;
    let ed = time_encrypt_decrypt(&mut ctx, reps)?;
    for t in [&sq, &p5, &ed.encrypt, &ed.decrypt] {
        println!(
            "{:28} per ct {:>12}  per value {:>10.3} µs  exact {}",
            t.op,
            ms(t.per_ciphertext_secs),
            t.per_value_secs * 1e6,
            t.correct
        );
    }

    // Iris-size network, fx = fw = 6, inputs in [0, 8].
    let (fx, fw) = (6, 6);
    let iris = net(4, 12, 3, 1.0, fx, fw)?;
    let bound = 8 << fx;
    let cfg = BfvConfig::for_net(&iris, bound)?;
    let mut ctx = BfvContext::new(&cfg, [2; 32])?;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = Array2::from_shape_fn((150, 4), |_| rng.gen_range(0..=bound));
    infer("Iris 4-12-3", &mut ctx, &iris, &x, bound)?;

    if mnist {
        // MNIST-size network, fx = fw = 4, pixels in [0, 1], weights ~ U(-0.1, 0.1).
        let (fx, fw) = (4, 4);
        let m = net(784, 300, 10, 0.1, fx, fw)?;
        let bound = 1 << fx;
        println!("MNIST needs a {}-bit t", m.required_plaintext_bits(bound)?);
        let cfg = match t_bits {
            Some(b) => BfvConfig::n8192(b)?,
            None => BfvConfig::for_net(&m, bound)?,
        };
        let mut ctx = BfvContext::new(&cfg, [3; 32])?;
        let x = Array2::from_shape_fn((8192, 784), |_| rng.gen_range(0..=bound));
        infer("MNIST 784-300-10", &mut ctx, &m, &x, bound)?;
    }
    Ok(())
}
