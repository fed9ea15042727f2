//! CryptoNets' encrypted inference of a [`SquareConvNet`] under BFV (issue #15).
//!
//! Layout (CryptoNets, Gilad-Bachrach et al. 2016 §4), as [`crate::bfv`]: one sample
//! per SIMD slot, one ciphertext per input pixel (`c·h·w` ciphertexts, encrypted by
//! [`BfvContext::encrypt_batch`]). The server walks the same taps as
//! [`SquareConvNet::forward`]: a convolution through the index map of [`ConvGeometry::forward_with`](gelunet_protocol::conv::ConvGeometry::forward_with)
//! ([`ConvGeometry::taps_of`](gelunet_protocol::conv::ConvGeometry::taps_of), outputs in parallel) and
//! a dense layer as its rows, each output a weighted sum of ciphertexts with plaintext
//! scalar weights (`|w|` as a constant plaintext, negative weights subtracted, one
//! lazy-reduction [`dot_product_scalar`] per sign), plus the bias; pooling the exact 2×2
//! sum of ciphertexts through [`MeanPool2::sum_with`](gelunet_protocol::pool::MeanPool2::sum_with); the square a ciphertext squaring
//! with relinearization. DESIGN.md "Convolutional layers", "Other schemes".
//!
//! Parameters ([`SquareConvNetBfv::config_for`]): `t` is the smallest batching prime
//! (at least 17 bits) with `2·max|z| < t` for the worst case
//! [`SquareConvNet::output_bound`] over the input box, so the decrypted outputs are the
//! exact integers; `N = 8192` (218-bit chain) for at most one square, `N = 16384`
//! (438-bit chain) for two, both 128-bit secure ([`BfvConfig::with_degree`]). More than
//! two squares, or a `t` above 61 bits, is refused. No modulus switching: every
//! ciphertext stays at level 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fhe::bfv::{dot_product_scalar, BfvParameters, Ciphertext, Encoding, Plaintext};
use fhe::bfv::{Multiplicator, RelinearizationKey};
use fhe_traits::FheEncoder;
use gelunet_protocol::arch::{Arch, Network, Op};
use gelunet_protocol::conv::Shape;
use gelunet_protocol::math::argmax;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bfv::{
    bits_u64, BfvConfig, BfvContext, BfvDescription, EncryptedBatch, EncryptedOutput, ServerKey,
    MAX_PLAINTEXT_BITS,
};
use crate::error::{BaselineError, Result};
use crate::square_conv::{LayerWeights, SquareConvNet};

/// Smallest plaintext modulus size tried (bits), as [`BfvConfig::for_net`].
const MIN_T_BITS: u32 = 17;

/// Most square layers the parameter sets here have depth for.
pub const MAX_SQUARES: usize = 2;

fn protocol_err(e: gelunet_protocol::Error) -> BaselineError {
    BaselineError::InvalidParameter {
        name: "square conv net",
        reason: e.to_string(),
    }
}

/// The server: a [`SquareConvNet`] with the BFV evaluation material.
#[derive(Debug)]
pub struct SquareConvNetBfv {
    net: SquareConvNet,
    config: BfvConfig,
    params: Arc<BfvParameters>,
    mult: Multiplicator,
    input_bound: i64,
    output_bound: u128,
    /// Constant plaintext of every distinct non-zero `|w|` (weights and biases).
    pts: BTreeMap<u64, Plaintext>,
}

/// Number of square (activation) layers of `net`.
fn squares(net: &SquareConvNet) -> usize {
    net.network()
        .layers
        .iter()
        .filter(|l| matches!(l.op, Op::Activation(_)))
        .count()
}

/// The worst-case `max|z|` over the outputs, `u128`.
fn worst(net: &SquareConvNet, input_bound: i64) -> Result<u128> {
    let b = net.output_bound(i128::from(input_bound))?;
    Ok(b.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0))
}

impl SquareConvNetBfv {
    /// The parameters for `net` on inputs `|x| ≤ input_bound` (module docs): the smallest
    /// batching prime `t ≥ 2^16` with `2·max|z| < t`, `N = 8192` for at most one square
    /// layer and `N = 16384` for two.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for more than [`MAX_SQUARES`] squares, a
    /// negative bound or an `i128` overflow of the bound;
    /// [`BaselineError::PlaintextModulusTooSmall`] if no `t` of at most 61 bits holds
    /// the outputs.
    pub fn config_for(net: &SquareConvNet, input_bound: i64) -> Result<BfvConfig> {
        let sq = squares(net);
        if sq > MAX_SQUARES {
            return Err(BaselineError::InvalidParameter {
                name: "square layers",
                reason: format!("{sq} squares, the parameter sets have depth for {MAX_SQUARES}"),
            });
        }
        let degree = if sq <= 1 { 8192 } else { 16384 };
        let bound = worst(net, input_bound)?;
        let needed = bits_u128(2 * bound + 1);
        // t < q_i ≤ 2^62 leaves at most 61 bits.
        for bits in needed.max(MIN_T_BITS)..MAX_PLAINTEXT_BITS {
            let t = BfvConfig::batching_prime(bits, degree)?;
            if bound.checked_mul(2).is_some_and(|b2| b2 < u128::from(t)) {
                return BfvConfig::with_degree(degree, bits);
            }
        }
        Err(BaselineError::PlaintextModulusTooSmall {
            needed_bits: needed,
            t_bits: MAX_PLAINTEXT_BITS - 1,
        })
    }

    /// Prepares `net` for encrypted inference on inputs `|x| ≤ input_bound` under `key`.
    ///
    /// # Errors
    /// [`BaselineError::PlaintextModulusTooSmall`] if `2·max|z| ≥ t` for the worst
    /// case; [`BaselineError::InvalidParameter`] as [`SquareConvNetBfv::config_for`] or
    /// for a weight with `|w| ≥ t`; [`BaselineError::Fhe`] if encoding fails.
    pub fn new(net: &SquareConvNet, key: &ServerKey, input_bound: i64) -> Result<Self> {
        let sq = squares(net);
        if sq > MAX_SQUARES {
            return Err(BaselineError::InvalidParameter {
                name: "square layers",
                reason: format!("{sq} squares, the parameter sets have depth for {MAX_SQUARES}"),
            });
        }
        let params = key.params.clone();
        let t = params.plaintext();
        let output_bound = worst(net, input_bound)?;
        if output_bound
            .checked_mul(2)
            .is_none_or(|b| b >= u128::from(t))
        {
            return Err(BaselineError::PlaintextModulusTooSmall {
                needed_bits: bits_u128(output_bound.saturating_mul(2).saturating_add(1)),
                t_bits: bits_u64(t),
            });
        }
        let mut pts = BTreeMap::new();
        for p in net.params() {
            for &w in p.weights.iter().chain(&p.bias) {
                let a = w.unsigned_abs();
                if a == 0 || pts.contains_key(&(a as u64)) {
                    continue;
                }
                if a >= u128::from(t) {
                    return Err(BaselineError::InvalidParameter {
                        name: "weights",
                        reason: format!("|w| = {a} is not below t = {t}"),
                    });
                }
                // a < t < 2^62.
                #[allow(clippy::cast_possible_truncation)]
                let a = a as u64;
                let pt = Plaintext::try_encode(&[a][..], Encoding::poly_at_level(0), &params)?;
                pts.insert(a, pt);
            }
        }
        let rk: &RelinearizationKey = &key.rk;
        Ok(Self {
            net: net.clone(),
            config: key.config.clone(),
            params,
            mult: Multiplicator::default(rk)?,
            input_bound,
            output_bound,
            pts,
        })
    }

    /// The plaintext model.
    #[must_use]
    pub fn net(&self) -> &SquareConvNet {
        &self.net
    }

    /// Worst-case `max|z|` over the outputs for the agreed input bound (`2·bound < t`).
    #[must_use]
    pub fn output_bound(&self) -> u128 {
        self.output_bound
    }

    /// Summary of the parameters for reports.
    #[must_use]
    pub fn describe(&self) -> BfvDescription {
        self.config.describe()
    }

    /// `Σ w·ct + bias` over `taps` (zero weights dropped), an encryption of 0 times
    /// `zero_like` if nothing is left.
    fn weighted_sum(
        &self,
        taps: &[(&Ciphertext, i128)],
        bias: i128,
        zero_like: &Ciphertext,
    ) -> Result<Ciphertext> {
        let pt = |w: i128| -> Result<&Plaintext> {
            let a = u64::try_from(w.unsigned_abs()).map_err(|_| BaselineError::Overflow {
                what: "weight encoding",
            })?;
            self.pts.get(&a).ok_or(BaselineError::InvalidParameter {
                name: "weights",
                reason: format!("no plaintext encoded for |w| = {a}"),
            })
        };
        let dot = |positive: bool| -> Result<Option<Ciphertext>> {
            let sel: Vec<&(&Ciphertext, i128)> = taps
                .iter()
                .filter(|(_, w)| *w != 0 && (*w > 0) == positive)
                .collect();
            if sel.is_empty() {
                return Ok(None);
            }
            let p = sel
                .iter()
                .map(|(_, w)| pt(*w))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(dot_product_scalar(
                sel.iter().map(|(c, _)| *c),
                p.into_iter(),
            )?))
        };
        let mut acc = match (dot(true)?, dot(false)?) {
            (Some(p), Some(n)) => &p - &n,
            (Some(p), None) => p,
            (None, Some(n)) => -n,
            (None, None) => zero_like * &Plaintext::zero(Encoding::poly_at_level(0), &self.params)?,
        };
        if bias != 0 {
            let b = pt(bias)?;
            if bias > 0 {
                acc += b;
            } else {
                acc -= b;
            }
        }
        Ok(acc)
    }

    /// Encrypted forward pass (server side, no secret key): `c·h·w` input ciphertexts
    /// to one ciphertext per output, walking the taps of [`SquareConvNet::forward`].
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] for a batch with the wrong number of features;
    /// [`BaselineError::InputOutOfRange`] if it was encrypted for a larger input bound;
    /// [`BaselineError::InvalidParameter`] for a batch under other parameters;
    /// [`BaselineError::Fhe`] on a homomorphic failure.
    pub fn infer(&self, batch: &EncryptedBatch) -> Result<EncryptedOutput> {
        let n = self.net.network().input.len();
        batch.check_for(n, self.input_bound, &self.params)?;
        let mut x: Vec<Ciphertext> = batch.cts.clone();
        for (l, p) in self.net.network().layers.iter().zip(self.net.params()) {
            x = self.layer(&l.op, p, &x)?;
        }
        Ok(EncryptedOutput {
            cts: x,
            samples: batch.samples,
        })
    }

    fn layer(&self, op: &Op, p: &LayerWeights, x: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        let zero_like = x.first().ok_or(BaselineError::ShapeMismatch {
            what: "ciphertexts (non-empty)",
            expected: vec![1],
            got: vec![0],
        })?;
        match op {
            Op::Conv(g) => {
                // `forward_with`'s own index map (`taps_of`, in the same order), so
                // that the outputs can run in parallel with borrowed ciphertexts.
                if x.len() != g.input_len() || p.weights.len() != g.kernel_len() {
                    return Err(BaselineError::ShapeMismatch {
                        what: "conv input",
                        expected: vec![g.input_len()],
                        got: vec![x.len()],
                    });
                }
                (0..g.output_len())
                    .into_par_iter()
                    .map(|o| {
                        let taps: Vec<(&Ciphertext, i128)> = g
                            .taps_of(o)
                            .map(|t| (&x[t.input], p.weights[t.kernel]))
                            .collect();
                        self.weighted_sum(&taps, p.bias[g.filter_of(o)], zero_like)
                    })
                    .collect()
            }
            Op::Dense { inputs, units } => {
                if x.len() != *inputs {
                    return Err(BaselineError::ShapeMismatch {
                        what: "dense input",
                        expected: vec![*inputs],
                        got: vec![x.len()],
                    });
                }
                (0..*units)
                    .into_par_iter()
                    .map(|u| {
                        let taps: Vec<(&Ciphertext, i128)> = x
                            .iter()
                            .zip(&p.weights[u * inputs..(u + 1) * inputs])
                            .map(|(c, w)| (c, *w))
                            .collect();
                        self.weighted_sum(&taps, p.bias[u], zero_like)
                    })
                    .collect()
            }
            Op::MeanPool(m) => m
                .sum_with(x, Ciphertext::clone, |acc, v| {
                    *acc += v;
                    Ok(())
                })
                .map_err(protocol_err),
            Op::Activation(_) => x
                .par_iter()
                .map(|c| Ok(self.mult.multiply(c, c)?))
                .collect(),
        }
    }
}

fn bits_u128(v: u128) -> u32 {
    128 - v.leading_zeros()
}

/// Decrypts the outputs (`S × outputs`, exact integers, centred) and the argmax per
/// sample (first maximal class on ties).
///
/// # Errors
/// As [`BfvContext::decrypt_logits`].
pub fn decrypt_and_predict(
    ctx: &BfvContext,
    out: &EncryptedOutput,
) -> Result<(Array2<i128>, Vec<usize>)> {
    let z = ctx.decrypt_logits(out)?;
    let pred = z.outer_iter().map(argmax).collect();
    Ok((z, pred))
}

/// A square conv net with weights and biases drawn uniformly from
/// `[−weight_bound, weight_bound]` (seeded ChaCha20), the fixed-point integers of a
/// net whose weights are at scale `2^fw` with `weight_bound ≈ 2^fw`.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] if `arch` does not fit `input` or the bound is
/// negative.
pub fn random_net(
    arch: &Arch,
    input: Shape,
    weight_bound: i128,
    seed: u64,
) -> Result<SquareConvNet> {
    if weight_bound < 0 {
        return Err(BaselineError::InvalidParameter {
            name: "weight_bound",
            reason: format!("{weight_bound} is negative"),
        });
    }
    let network: Network = arch
        .infer(input)
        .map_err(|e| BaselineError::InvalidParameter {
            name: "arch",
            reason: e.to_string(),
        })?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut draw = |n: usize| -> Vec<i128> {
        (0..n)
            .map(|_| rng.gen_range(-weight_bound..=weight_bound))
            .collect()
    };
    let params = network
        .layers
        .iter()
        .map(|l| match l.op {
            Op::Conv(g) => LayerWeights {
                weights: draw(g.kernel_len()),
                bias: draw(g.filters()),
            },
            Op::Dense { inputs, units } => LayerWeights {
                weights: draw(inputs * units),
                bias: draw(units),
            },
            Op::MeanPool(_) | Op::Activation(_) => LayerWeights::default(),
        })
        .collect();
    SquareConvNet::new(network, params)
}

/// Timing of one encrypted batch inference through [`SquareConvNetBfv`], the fields of
/// [`crate::measure::InferenceTiming`] with the architecture in place of the dense
/// shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvInferenceTiming {
    /// Samples in the batch.
    pub samples: usize,
    /// The architecture (`Arch` syntax) and its input shape.
    pub arch: String,
    /// Server-side model preparation (encoding the weight plaintexts), seconds.
    pub prepare_secs: f64,
    /// Client-side encryption of the batch (`c·h·w` ciphertexts), seconds.
    pub encrypt_secs: f64,
    /// Server-side encrypted forward pass, seconds.
    pub infer_secs: f64,
    /// Client-side decryption and argmax, seconds.
    pub decrypt_secs: f64,
    /// Whether the decrypted outputs equal [`SquareConvNet::forward`] exactly.
    pub correct: bool,
    /// The parameter set.
    pub parameters: BfvDescription,
}

impl ConvInferenceTiming {
    /// Encrypt + infer + decrypt, seconds (preparation excluded).
    #[must_use]
    pub fn latency_secs(&self) -> f64 {
        self.encrypt_secs + self.infer_secs + self.decrypt_secs
    }

    /// [`ConvInferenceTiming::latency_secs`] per sample of the batch.
    #[must_use]
    pub fn per_sample_secs(&self) -> f64 {
        // Batches hold at most N ≤ 2^15 samples, exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let s = self.samples.max(1) as f64;
        self.latency_secs() / s
    }
}

/// CryptoNets' two figures for one architecture: one sample (latency) and a full batch
/// (amortized throughput), same net, same key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SquareConvMeasurement {
    /// One sample.
    pub single: ConvInferenceTiming,
    /// `batch` samples.
    pub batch: ConvInferenceTiming,
}

/// Times one encrypted inference of `inputs` (`S × c·h·w`, `|x| ≤ input_bound`) and
/// checks it against [`SquareConvNet::forward`] for every sample.
///
/// # Errors
/// Every error of [`SquareConvNetBfv::new`], [`BfvContext::encrypt_batch`],
/// [`SquareConvNetBfv::infer`] and [`SquareConvNet::forward`].
pub fn time_conv_inference(
    ctx: &mut BfvContext,
    net: &SquareConvNet,
    arch: &str,
    inputs: &Array2<i64>,
    input_bound: i64,
) -> Result<ConvInferenceTiming> {
    let start = Instant::now();
    let model = SquareConvNetBfv::new(net, &ctx.server_key(), input_bound)?;
    let prepare_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let batch = ctx.encrypt_batch(inputs, input_bound)?;
    let encrypt_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let out = model.infer(&batch)?;
    let infer_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (z, _) = decrypt_and_predict(ctx, &out)?;
    let decrypt_secs = start.elapsed().as_secs_f64();
    let mut correct = true;
    for (row, got) in inputs.outer_iter().zip(z.outer_iter()) {
        let x: Vec<i128> = row.iter().map(|&v| i128::from(v)).collect();
        correct &= net.forward(&x)? == got.to_vec();
    }
    Ok(ConvInferenceTiming {
        samples: inputs.nrows(),
        arch: arch.to_string(),
        prepare_secs,
        encrypt_secs,
        infer_secs,
        decrypt_secs,
        correct,
        parameters: ctx.describe(),
    })
}

/// Measures `arch` on `input` with random weights in `[−weight_bound, weight_bound]`
/// and random inputs in `[0, input_bound]` (seeded): one sample, then `batch` samples,
/// under the parameters of [`SquareConvNetBfv::config_for`].
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for `batch = 0`; [`BaselineError::TooManySamples`]
/// above `N`; the errors of [`random_net`], [`SquareConvNetBfv::config_for`] and
/// [`time_conv_inference`].
pub fn measure_square_conv(
    arch: &Arch,
    input: Shape,
    weight_bound: i128,
    input_bound: i64,
    batch: usize,
    seed: u64,
) -> Result<SquareConvMeasurement> {
    if batch == 0 {
        return Err(BaselineError::InvalidParameter {
            name: "batch",
            reason: "zero samples".into(),
        });
    }
    let net = random_net(arch, input, weight_bound, seed)?;
    let config = SquareConvNetBfv::config_for(&net, input_bound)?;
    let mut key_seed = [0u8; 32];
    key_seed[..8].copy_from_slice(&seed.to_le_bytes());
    let mut ctx = BfvContext::new(&config, key_seed)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    let n = input.len();
    let x = Array2::from_shape_fn((batch, n), |_| rng.gen_range(0..=input_bound));
    let name = format!("{arch} on {input}");
    let single = time_conv_inference(
        &mut ctx,
        &net,
        &name,
        &x.select(ndarray::Axis(0), &[0]),
        input_bound,
    )?;
    let batch = time_conv_inference(&mut ctx, &net, &name, &x, input_bound)?;
    Ok(SquareConvMeasurement { single, batch })
}
