//! Per-operation timings for the paper-style comparison (GELU-Net paper, Table 1).
//!
//! The GELU-Net paper (Table 1) compares the cost of one activation: CryptoNets'
//! square (one ciphertext × ciphertext product), a fifth-order Taylor polynomial under
//! FHE, and GELU-Net's outsourced activation. These helpers measure the FHE side with
//! `std::time::Instant` on the caller's [`BfvContext`]:
//!
//! - [`time_square`]: `Relin(ct ⊗ ct)` (tensor, scale, relinearize);
//! - [`time_poly5`]: `P(x) = 240 + 120x − 10x³ + x⁵ = 480·(1/2 + x/4 − x³/48 + x⁵/480)`,
//!   the BGN-Net Taylor sigmoid with integer coefficients (four ct × ct products,
//!   depth 3: `x², x³ = x²·x, x⁴ = x²·x², x⁵ = x⁴·x`);
//! - [`time_encrypt_decrypt`]: encryption and decryption of one full ciphertext;
//! - [`time_inference`]: a whole batch through [`SquareNetBfv`].
//!
//! Each result is given per ciphertext and per value (divided by the `N` slots, all
//! of which are filled), and says whether the decrypted result was exact, which makes
//! a too-small noise budget visible (the degree-5 polynomial needs a small `t` at
//! `N = 8192`; see [`crate::bfv::BfvConfig`]). These are measurement helpers for
//! benchmarks, not tests; timings are wall-clock and single-threaded.

use std::time::Instant;

use fhe::bfv::{Ciphertext, Encoding, Multiplicator, Plaintext};
use fhe_traits::FheEncoder;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bfv::{BfvContext, BfvDescription, SquareNetBfv};
use crate::error::{BaselineError, Result};
use crate::square_net::SquareNet;

/// Timing of one homomorphic operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpTiming {
    /// Operation name.
    pub op: String,
    /// Number of timed repetitions (the mean is reported).
    pub repetitions: usize,
    /// Values per ciphertext (SIMD slots, `N`).
    pub slots: usize,
    /// Mean wall-clock seconds per ciphertext.
    pub per_ciphertext_secs: f64,
    /// `per_ciphertext_secs / slots`.
    pub per_value_secs: f64,
    /// Whether every decrypted slot equalled the expected integer (mod `t`, centred).
    pub correct: bool,
}

impl OpTiming {
    fn new(op: &str, repetitions: usize, slots: usize, total_secs: f64, correct: bool) -> Self {
        // Counts are small; precision loss is irrelevant for timings.
        #[allow(clippy::cast_precision_loss)]
        let per_ct = total_secs / repetitions as f64;
        #[allow(clippy::cast_precision_loss)]
        let per_value = per_ct / slots as f64;
        Self {
            op: op.to_string(),
            repetitions,
            slots,
            per_ciphertext_secs: per_ct,
            per_value_secs: per_value,
            correct,
        }
    }
}

/// Encryption and decryption timings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncDecTiming {
    /// Secret-key encryption of one full ciphertext (encode + encrypt).
    pub encrypt: OpTiming,
    /// Decryption of one ciphertext (decrypt + decode).
    pub decrypt: OpTiming,
}

/// Timing of one encrypted batch inference through [`SquareNetBfv`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferenceTiming {
    /// Samples in the batch.
    pub samples: usize,
    /// Network shape `(inputs, hidden, classes)`.
    pub shape: (usize, usize, usize),
    /// Server-side model preparation (encoding the weight plaintexts), seconds.
    pub prepare_secs: f64,
    /// Client-side encryption of the batch (`inputs` ciphertexts), seconds.
    pub encrypt_secs: f64,
    /// Server-side encrypted forward pass, seconds.
    pub infer_secs: f64,
    /// Client-side decryption and argmax (`classes` ciphertexts), seconds.
    pub decrypt_secs: f64,
    /// Whether the decrypted logits equal [`SquareNet::forward_plain`] exactly.
    pub correct: bool,
    /// The parameter set.
    pub parameters: BfvDescription,
}

fn check_reps(reps: usize) -> Result<()> {
    if reps == 0 {
        return Err(BaselineError::InvalidParameter {
            name: "reps",
            reason: "at least one repetition is needed".into(),
        });
    }
    Ok(())
}

/// `v mod t`, centred into `(−t/2, t/2]`.
fn centre_mod(v: i128, t: u64) -> i128 {
    let t = i128::from(t);
    let r = v.rem_euclid(t);
    if r > t / 2 {
        r - t
    } else {
        r
    }
}

/// Random slot values in `[-bound, bound]` from a seeded RNG.
fn random_slots(n: usize, bound: i64, seed: u64) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-bound..=bound)).collect()
}

fn check_slots(got: &[i64], expected: impl Iterator<Item = i128>, t: u64) -> bool {
    got.iter()
        .zip(expected)
        .all(|(&g, e)| i128::from(g) == centre_mod(e, t))
}

fn constant(ctx: &BfvContext, v: i64) -> Result<Plaintext> {
    let t = ctx.params.plaintext();
    let a = v.unsigned_abs() % t;
    Ok(Plaintext::try_encode(
        &[a][..],
        Encoding::poly(),
        &ctx.params,
    )?)
}

/// Mean time of `op` on one full ciphertext over `reps` repetitions, its slots drawn
/// from `[−bound, bound]` by [`random_slots`] with `seed`; `correct` says whether every
/// decrypted slot equals `expected(x)` mod `t`.
fn time_op(
    ctx: &mut BfvContext,
    reps: usize,
    name: &'static str,
    (bound, seed): (i64, u64),
    op: impl Fn(&BfvContext, &Multiplicator, &Ciphertext) -> Result<Ciphertext>,
    expected: impl Fn(i128) -> i128,
) -> Result<OpTiming> {
    check_reps(reps)?;
    let n = ctx.slots();
    let t = ctx.params.plaintext();
    let x = random_slots(n, bound, seed);
    let ct = ctx.encrypt_slots(&x)?;
    let mult = Multiplicator::default(&ctx.rk)?;
    let start = Instant::now();
    let mut y = op(ctx, &mult, &ct)?;
    for _ in 1..reps {
        y = op(ctx, &mult, &ct)?;
    }
    let total = start.elapsed().as_secs_f64();
    let got = ctx.decrypt_slots(&y)?;
    let correct = check_slots(&got, x.iter().map(|&v| expected(i128::from(v))), t);
    Ok(OpTiming::new(name, reps, n, total, correct))
}

/// Mean time of the square `Relin(ct ⊗ ct)` of one full ciphertext over `reps`
/// repetitions (slots hold random values in `[−1000, 1000]`).
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for `reps = 0`; [`BaselineError::Fhe`] if the
/// parameters do not support relinearization.
pub fn time_square(ctx: &mut BfvContext, reps: usize) -> Result<OpTiming> {
    time_op(
        ctx,
        reps,
        "square (ct×ct + relin)",
        (1000, 1),
        |_, mult, ct| Ok(mult.multiply(ct, ct)?),
        |v| v * v,
    )
}

/// Evaluates `240 + 120x − 10x³ + x⁵` on one ciphertext (four relinearized products).
fn poly5(ctx: &BfvContext, mult: &Multiplicator, x: &Ciphertext) -> Result<Ciphertext> {
    let x2 = mult.multiply(x, x)?;
    let x3 = mult.multiply(&x2, x)?;
    let x4 = mult.multiply(&x2, &x2)?;
    let x5 = mult.multiply(&x4, x)?;
    let mut out = x5;
    out -= &(&x3 * &constant(ctx, 10)?);
    out += &(x * &constant(ctx, 120)?);
    out += &constant(ctx, 240)?;
    Ok(out)
}

/// Mean time of the fifth-order Taylor sigmoid `480·T5(x) = 240 + 120x − 10x³ + x⁵`
/// on one full ciphertext (slots hold random integers in `[−8, 8]`) over `reps`
/// repetitions. Depth 3: exact only with a small enough `t` for the modulus chain
/// (`correct` reports it).
///
/// # Errors
/// As [`time_square`].
pub fn time_poly5(ctx: &mut BfvContext, reps: usize) -> Result<OpTiming> {
    time_op(
        ctx,
        reps,
        "taylor5 sigmoid (4 ct×ct)",
        (8, 2),
        poly5,
        |v| 240 + 120 * v - 10 * v.pow(3) + v.pow(5),
    )
}

/// Mean time of encrypting (encode + secret-key encrypt) and of decrypting (decrypt +
/// centred decode) one full ciphertext, over `reps` repetitions each.
///
/// # Errors
/// As [`time_square`].
pub fn time_encrypt_decrypt(ctx: &mut BfvContext, reps: usize) -> Result<EncDecTiming> {
    check_reps(reps)?;
    let n = ctx.slots();
    let t = ctx.params.plaintext();
    let x = random_slots(n, 1000, 3);
    let start = Instant::now();
    let mut ct = ctx.encrypt_slots(&x)?;
    for _ in 1..reps {
        ct = ctx.encrypt_slots(&x)?;
    }
    let enc = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut got = ctx.decrypt_slots(&ct)?;
    for _ in 1..reps {
        got = ctx.decrypt_slots(&ct)?;
    }
    let dec = start.elapsed().as_secs_f64();
    let correct = check_slots(&got, x.iter().map(|&v| i128::from(v)), t);
    Ok(EncDecTiming {
        encrypt: OpTiming::new("encrypt", reps, n, enc, correct),
        decrypt: OpTiming::new("decrypt", reps, n, dec, correct),
    })
}

/// Times one encrypted inference of the batch `inputs` (`S × n`, integers at
/// `2^fx`, `|x| ≤ input_bound`): model preparation, encryption, the server's forward
/// pass, decryption; and checks the decrypted logits against the exact plaintext ones.
///
/// # Errors
/// Every error of [`SquareNetBfv::new`], [`BfvContext::encrypt_batch`],
/// [`SquareNetBfv::infer`] and [`SquareNet::forward_plain`].
pub fn time_inference(
    ctx: &mut BfvContext,
    net: &SquareNet,
    inputs: &Array2<i64>,
    input_bound: i64,
) -> Result<InferenceTiming> {
    let start = Instant::now();
    let model = SquareNetBfv::new(net, &ctx.server_key(), input_bound)?;
    let prepare_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let batch = ctx.encrypt_batch(inputs, input_bound)?;
    let encrypt_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let out = model.infer(&batch)?;
    let infer_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let logits = ctx.decrypt_logits(&out)?;
    let decrypt_secs = start.elapsed().as_secs_f64();
    let expected: Array2<i128> = net.forward_plain(inputs)?;
    Ok(InferenceTiming {
        samples: inputs.nrows(),
        shape: (net.inputs(), net.hidden(), net.classes()),
        prepare_secs,
        encrypt_secs,
        infer_secs,
        decrypt_secs,
        correct: logits == expected,
        parameters: ctx.describe(),
    })
}
