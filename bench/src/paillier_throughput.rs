//! `gelunet bench paillier`: single-thread and all-core throughput of the cryptosystem
//! (the README's "Paillier throughput" table; `keygen`, `encrypt` (DJN), `encrypt_crt`,
//! `decrypt` (CRT), `decrypt_blinded` (CRT of `c · s^N`, the client's decryption of the
//! server's ciphertexts, docs/DESIGN.md "Side channels"), `add`, `scalar_mul_32` and the 128 × 128 `W ⊗ [a]` of the server's
//! forward pass).

use std::time::{Duration, Instant};

use gelunet_paillier::{BigInt, Ciphertext, PrivateKey, BACKEND};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::{BenchError, Result};

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Operation name (`encrypt`, `matvec_128x128`, ...).
    pub op: &'static str,
    /// Throughput in operations per second (products per second for `matvec_*`).
    pub ops_per_sec: f64,
    /// Operations timed.
    pub iterations: u64,
    /// Wall time of the timed loop, in seconds.
    pub seconds: f64,
}

/// The whole report of `gelunet bench paillier`.
#[derive(Debug, Clone, Serialize)]
pub struct PaillierReport {
    /// Size of `N` in bits.
    pub key_bits: u64,
    /// Big-integer backend of the hot loops: `num-bigint` or `gmp`.
    pub backend: &'static str,
    /// The multiplication kernel that ran ([`gelunet_paillier::arithmetic`]:
    /// `avx512-ifma`, `mulx-adx`, `portable` or `gmp`).
    pub arithmetic: &'static str,
    /// Logical cores of this machine.
    pub cores: usize,
    /// Rates with one thread.
    pub single_thread: Vec<Rate>,
    /// Rates with every core (batch APIs over rayon), for the operations where it differs.
    pub all_cores: Vec<Rate>,
    /// The threads used for `all_cores`.
    pub all_cores_threads: usize,
}

/// Runs `f` (which performs `per_call` operations) until `budget` has passed (at least
/// twice), after one warm-up call.
fn measure(op: &'static str, budget: Duration, per_call: u64, mut f: impl FnMut()) -> Rate {
    f();
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 2 || start.elapsed() < budget {
        f();
        calls += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let iterations = calls * per_call;
    Rate {
        op,
        ops_per_sec: iterations as f64 / seconds,
        iterations,
        seconds,
    }
}

fn random_scalar(rng: &mut ChaCha20Rng, bits: u32) -> BigInt {
    let x: i64 = rng.gen::<i64>() >> (64 - bits);
    BigInt::from(x)
}

/// Parses `--seconds` of `gelunet bench paillier`: the wall time per operation, a
/// positive finite number of seconds.
///
/// # Errors
/// Not a number, or not positive and finite: `must be a positive number of seconds`.
pub fn parse_budget(s: &str) -> std::result::Result<Duration, String> {
    match s.trim().parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(d)) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{s}` must be a positive number of seconds")),
    }
}

/// Measures every operation at `key_bits` (sizes below 2048 bits are test keys, in
/// builds with paillier's `hazmat` feature) with `budget` of wall time each (keygen at
/// least 2 s), keys and data from `seed`.
///
/// # Errors
/// [`BenchError::Paillier`] for key generation errors (a size that is not allowed, or
/// test keys in a build without them); [`BenchError::Config`] if a thread pool cannot be
/// built.
pub fn run_paillier(key_bits: u64, budget: Duration, seed: u64) -> Result<PaillierReport> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| BenchError::Config(format!("thread pool: {e}")))
    };
    let one = pool(1)?;
    let all = pool(cores)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);

    let mut single = Vec::new();
    let keygen_budget = budget.max(Duration::from_secs(2));
    let mut key_rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    // Below 2048 bits: test-only keys (a throughput measurement, no secret to keep).
    let generate = |r: &mut ChaCha20Rng| PrivateKey::generate_for_run(key_bits, true, r);
    // Refuse a bad size before timing anything.
    let sk = generate(&mut rng)?;
    let mut keygen_error = None;
    single.push(one.install(|| {
        measure("keygen", keygen_budget, 1, || {
            if let Err(e) = generate(&mut key_rng) {
                keygen_error = Some(e);
            }
        })
    }));
    if let Some(e) = keygen_error {
        return Err(e.into());
    }
    let pk = sk.public_key().clone();
    pk.precompute();
    let m = random_scalar(&mut rng, 62);
    let _ = sk.encrypt_crt(&m, &mut rng);

    let c = pk.encrypt(&m, &mut rng)?;
    let c2 = pk.encrypt(&m, &mut rng)?;
    let k32 = random_scalar(&mut rng, 32);
    let (n, rows) = (128usize, 128usize);
    let w = Array2::from_shape_fn((rows, n), |_| random_scalar(&mut rng, 32));
    let a: Vec<Ciphertext> = pk.encrypt_batch(&vec![m.clone(); n], &mut rng)?;
    let batch: Vec<BigInt> = (0..64).map(|_| random_scalar(&mut rng, 62)).collect();
    let batch_ct = pk.encrypt_batch(&batch, &mut rng)?;

    one.install(|| {
        single.push(measure("encrypt", budget, 1, || {
            let _ = pk.encrypt(&m, &mut rng);
        }));
        single.push(measure("encrypt_crt", budget, 1, || {
            let _ = sk.encrypt_crt(&m, &mut rng);
        }));
        single.push(measure("decrypt", budget, 1, || {
            let _ = sk.decrypt(&c);
        }));
        single.push(measure("decrypt_blinded", budget, 1, || {
            let _ = sk.decrypt_blinded(&c, &mut rng);
        }));
        single.push(measure("add", budget, 100, || {
            for _ in 0..100 {
                let _ = pk.add(&c, &c2);
            }
        }));
        // The inverse for negative scalars is computed once per ciphertext and reused,
        // as the matrix products do (docs/DESIGN.md, "Homomorphic operations").
        if let Ok(prepared) = pk.prepare(&c) {
            single.push(measure("scalar_mul_32", budget, 1, || {
                let _ = pk.mul_scalar_prepared(&prepared, &k32);
            }));
        }
        single.push(measure("matvec_128x128", budget, 1, || {
            let _ = pk.matvec(w.view(), &a);
        }));
    });

    let mut all_cores = Vec::new();
    if cores > 1 {
        all.install(|| {
            all_cores.push(measure("encrypt", budget, batch.len() as u64, || {
                let _ = pk.encrypt_batch(&batch, &mut rng);
            }));
            all_cores.push(measure("encrypt_crt", budget, batch.len() as u64, || {
                let _ = sk.encrypt_crt_batch(&batch, &mut rng);
            }));
            all_cores.push(measure("decrypt", budget, batch_ct.len() as u64, || {
                let _ = sk.decrypt_batch(&batch_ct);
            }));
            all_cores.push(measure(
                "decrypt_blinded",
                budget,
                batch_ct.len() as u64,
                || {
                    let _ = sk.decrypt_raw_blinded_batch(&batch_ct, &mut rng);
                },
            ));
            all_cores.push(measure("matvec_128x128", budget, 1, || {
                let _ = pk.matvec(w.view(), &a);
            }));
        });
    }
    Ok(PaillierReport {
        key_bits,
        backend: BACKEND,
        arithmetic: gelunet_paillier::arithmetic(),
        cores,
        single_thread: single,
        all_cores,
        all_cores_threads: cores,
    })
}

/// A human-readable table of the report.
pub fn render(report: &PaillierReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Paillier, {}-bit N, backend {} ({}), {} cores",
        report.key_bits, report.backend, report.arithmetic, report.cores
    );
    let _ = writeln!(
        s,
        "{:<16} {:>14} {:>14}",
        "operation", "1 thread /s", "all cores /s"
    );
    for r in &report.single_thread {
        let all = report
            .all_cores
            .iter()
            .find(|a| a.op == r.op)
            .map_or_else(|| "-".to_string(), |a| format!("{:.1}", a.ops_per_sec));
        let _ = writeln!(s, "{:<16} {:>14.1} {:>14}", r.op, r.ops_per_sec, all);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_positive_number_of_seconds() {
        assert_eq!(parse_budget("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "nan", "inf", "1e300", "two", ""] {
            assert!(parse_budget(bad).unwrap_err().contains("positive"), "{bad}");
        }
    }
}
