//! Criterion benchmarks over key size (2048, 3072 bits) and batch size.
//!
//! `cargo bench -p gelunet-paillier [--features gmp]`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gelunet_paillier::{BigInt, PrivateKey};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const KEY_BITS: [u64; 2] = [2048, 3072];

fn keys() -> Vec<PrivateKey> {
    KEY_BITS
        .iter()
        .map(|&bits| {
            let key = PrivateKey::generate(bits, &mut ChaCha20Rng::seed_from_u64(bits)).unwrap();
            key.public_key().precompute();
            key
        })
        .collect()
}

fn scalar(rng: &mut ChaCha20Rng, bits: u32) -> BigInt {
    BigInt::from(rng.gen::<i64>() >> (64 - bits))
}

fn single_operations(c: &mut Criterion) {
    let mut g = c.benchmark_group("paillier");
    g.sample_size(10);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for sk in keys() {
        let pk = sk.public_key();
        let bits = pk.bits();
        let m = scalar(&mut rng, 60);
        let ct = pk.encrypt(&m, &mut rng).unwrap();
        let prepared = pk.prepare(&ct).unwrap();
        let k = scalar(&mut rng, 32);
        g.bench_with_input(BenchmarkId::new("encrypt", bits), &m, |b, m| {
            b.iter(|| pk.encrypt(m, &mut rng).unwrap())
        });
        let mut rng2 = ChaCha20Rng::seed_from_u64(2);
        g.bench_with_input(BenchmarkId::new("encrypt_crt", bits), &m, |b, m| {
            b.iter(|| sk.encrypt_crt(m, &mut rng2).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decrypt", bits), &ct, |b, ct| {
            b.iter(|| sk.decrypt(ct).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("add", bits), &ct, |b, ct| {
            b.iter(|| pk.add(ct, ct).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("scalar_mul_32", bits), &k, |b, k| {
            b.iter(|| pk.mul_scalar_prepared(&prepared, k).unwrap())
        });
    }
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("paillier_batch");
    g.sample_size(10);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    for sk in keys() {
        let pk = sk.public_key();
        let bits = pk.bits();
        for batch in [16usize, 64] {
            let ms: Vec<BigInt> = (0..batch).map(|_| scalar(&mut rng, 60)).collect();
            let cts = pk.encrypt_batch(&ms, &mut rng).unwrap();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("encrypt_batch/{bits}"), batch),
                &ms,
                |b, ms| b.iter(|| pk.encrypt_batch(ms, &mut rng).unwrap()),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("decrypt_batch/{bits}"), batch),
                &cts,
                |b, cts| b.iter(|| sk.decrypt_batch(cts).unwrap()),
            );
        }
        // The server's hot loop: an m×n matrix of 32-bit signed weights times n ciphertexts.
        for (rows, cols) in [(12usize, 4usize), (3, 12), (128, 128)] {
            let w = Array2::from_shape_fn((rows, cols), |_| scalar(&mut rng, 32));
            let a = pk
                .encrypt_batch(&vec![BigInt::from(5); cols], &mut rng)
                .unwrap();
            g.throughput(Throughput::Elements((rows * cols) as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("matvec/{bits}"), format!("{rows}x{cols}")),
                &w,
                |b, w| b.iter(|| pk.matvec(w.view(), &a).unwrap()),
            );
        }
        // Conv-1's dense layer in single-sample inference: 100 rows of 32-bit weights times
        // the 845 ciphertexts of the convolution's activations (most of its latency).
        if bits == 2048 {
            let w = Array2::from_shape_fn((100, 845), |_| scalar(&mut rng, 32));
            let a = pk
                .encrypt_batch(&vec![BigInt::from(5); 845], &mut rng)
                .unwrap();
            g.throughput(Throughput::Elements(100 * 845));
            g.bench_with_input(
                BenchmarkId::new(format!("matvec/{bits}"), "100x845"),
                &w,
                |b, w| b.iter(|| pk.matvec(w.view(), &a).unwrap()),
            );
        }
        // The MNIST first layer under protocol v2: 128 rows of masked weights (about 180-bit
        // signed exponents) times 784 ciphertexts.
        if bits == 2048 {
            let w = Array2::from_shape_fn((128, 784), |_| {
                let v: BigInt = (BigInt::from(rng.gen::<u128>() >> 11) << 64) + rng.gen::<u64>();
                if rng.gen::<bool>() {
                    -v
                } else {
                    v
                }
            });
            let a = pk
                .encrypt_batch(&vec![BigInt::from(5); 784], &mut rng)
                .unwrap();
            g.throughput(Throughput::Elements(128 * 784));
            g.bench_with_input(
                BenchmarkId::new(format!("matvec_masked/{bits}"), "128x784"),
                &w,
                |b, w| b.iter(|| pk.matvec(w.view(), &a).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, single_operations, batches);
criterion_main!(benches);
