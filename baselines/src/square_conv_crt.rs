//! CryptoNets' Chinese remaindering over several plaintext moduli, for square conv nets
//! whose exact outputs do not fit one BFV plaintext modulus (issue #15: LeNet-5 with a
//! square after every pooled conv and dense layer, four squares).
//!
//! CryptoNets (Gilad-Bachrach et al., ICML 2016, §4 "The encoding scheme"): when the
//! outputs need more bits than one plaintext modulus holds, the network runs once under
//! each of `k` pairwise coprime plaintext moduli `t_1, …, t_k` and the outputs are
//! recombined by the Chinese remainder theorem. With `M = ∏ t_i > 2·max|z|` (the
//! worst case over the input box, [`exact_output_bound`]), every output is the unique
//! integer in `(−M/2, M/2]` with the decrypted residues:
//!
//! ```text
//! z ≡ Σ_i r_i · M_i · (M_i⁻¹ mod t_i)   (mod M),   M_i = M / t_i,   r_i = z mod t_i
//! ```
//!
//! ([`crt_combine`]). Each `t_i` is a batching prime `≡ 1 mod 2N` of its own size
//! (`t_bits`, `t_bits − 1`, …, so that they are distinct), and each run is a full
//! [`SquareConvNetBfv::new_residue`](crate::square_conv_bfv::SquareConvNetBfv::new_residue) inference under its own key.
//!
//! Parties: the client holds the `k` secret keys and its inputs and sends `k` encrypted
//! batches; the server holds the net (plaintext weights, CryptoNets' setting) and the
//! `k` evaluation keys, and returns `k` encrypted outputs. The client recombines.

use gelunet_protocol::math::argmax;
use ndarray::Array2;
use num_bigint::{BigInt, BigUint};
use num_traits::{One, Zero};

use crate::bfv::{BfvConfig, BfvContext, MAX_PLAINTEXT_BITS};
use crate::error::{BaselineError, Result};
use crate::square_conv::SquareConvNet;
use crate::square_conv_bfv::{degree_for, time_inner, walk, ConvInferenceTiming};

/// Smallest plaintext modulus size tried (bits), as [`SquareConvNetBfv::config_for`].
///
/// [`SquareConvNetBfv::config_for`]: crate::square_conv_bfv::SquareConvNetBfv::config_for
const MIN_T_BITS: u32 = 17;

/// The exact worst case `max|z|` of `net`'s outputs over inputs `|x| ≤ input_bound`
/// (the net with `|w|`, `|b|` on the all-`input_bound` input), in big integers.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for a negative bound.
pub fn exact_output_bound(net: &SquareConvNet, input_bound: i64) -> Result<BigUint> {
    let b = u64::try_from(input_bound).map_err(|_| BaselineError::InvalidParameter {
        name: "input bound",
        reason: format!("{input_bound} is negative"),
    })?;
    let x = vec![BigUint::from(b); net.network().input.len()];
    let z = walk(
        net,
        x,
        |v| BigUint::from(v.unsigned_abs()),
        |acc, v| *acc += v,
        |a, b| a * b,
    )?;
    Ok(z.into_iter().max().unwrap_or_default())
}

/// `net`'s exact outputs on one input, in big integers: the reference the recombined
/// outputs of [`time_conv_inference_crt`] equal.
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for a wrong-length input.
pub fn forward_exact(net: &SquareConvNet, input: &[i64]) -> Result<Vec<BigInt>> {
    let x = input.iter().map(|&v| BigInt::from(v)).collect();
    walk(net, x, BigInt::from, |acc, v| *acc += v, |a, b| a * b)
}

/// The parameter sets of the CRT runs for `net` on `|x| ≤ input_bound`: the ring degree
/// of [`SquareConvNetBfv::config_for`] and batching primes of `t_bits`, `t_bits − 1`, …
/// bits (sizes without a prime `≡ 1 mod 2N` skipped), as few as make `∏ t_i > 2·max|z|` ([`exact_output_bound`]).
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for more than
/// [`MAX_SQUARES`](crate::square_conv_bfv::MAX_SQUARES) squares, a negative bound or a
/// `t_bits` outside `17..=61`; [`BaselineError::PlaintextModulusTooSmall`] if the primes
/// down to 17 bits do not hold the outputs.
///
/// [`SquareConvNetBfv::config_for`]: crate::square_conv_bfv::SquareConvNetBfv::config_for
pub fn crt_configs(net: &SquareConvNet, input_bound: i64, t_bits: u32) -> Result<Vec<BfvConfig>> {
    if !(MIN_T_BITS..MAX_PLAINTEXT_BITS).contains(&t_bits) {
        return Err(BaselineError::InvalidParameter {
            name: "t_bits",
            reason: format!("{t_bits} is outside {MIN_T_BITS}..{MAX_PLAINTEXT_BITS}"),
        });
    }
    let degree = degree_for(net)?;
    let need = exact_output_bound(net, input_bound)? * 2u32;
    let mut product = BigUint::one();
    let mut configs = Vec::new();
    for bits in (MIN_T_BITS..=t_bits).rev() {
        // Some sizes have no prime ≡ 1 mod 2N (no 19-bit one at N = 8192): skip them.
        let Ok(config) = BfvConfig::with_degree(degree, bits) else {
            continue;
        };
        product *= config.plaintext_modulus();
        configs.push(config);
        if product > need {
            return Ok(configs);
        }
    }
    Err(BaselineError::PlaintextModulusTooSmall {
        needed_bits: u32::try_from(need.bits() + 1).unwrap_or(u32::MAX),
        t_bits: u32::try_from(product.bits()).unwrap_or(u32::MAX),
    })
}

/// The integer in `(−M/2, M/2]`, `M = ∏ moduli`, congruent to `residues[i]` modulo
/// `moduli[i]` for every `i` (module docs).
///
/// # Errors
/// [`BaselineError::InvalidParameter`] if the lengths differ, the list is empty, or a
/// modulus is below 2 or not coprime to the others (no inverse).
pub fn crt_combine(residues: &[u64], moduli: &[u64]) -> Result<BigInt> {
    let bad = |reason: String| BaselineError::InvalidParameter {
        name: "CRT moduli",
        reason,
    };
    if residues.len() != moduli.len() || moduli.is_empty() {
        return Err(bad(format!(
            "{} residues for {} moduli",
            residues.len(),
            moduli.len()
        )));
    }
    let m: BigUint = moduli.iter().map(|&t| BigUint::from(t)).product();
    let mut x = BigUint::zero();
    for (&r, &t) in residues.iter().zip(moduli) {
        if t < 2 {
            return Err(bad(format!("modulus {t}")));
        }
        let t_big = BigUint::from(t);
        let mi = &m / &t_big;
        let inv = (&mi % &t_big)
            .modinv(&t_big)
            .ok_or_else(|| bad(format!("{t} is not coprime to the other moduli")))?;
        x += BigUint::from(r % t) * &mi * inv;
    }
    x %= &m;
    let x = BigInt::from(x);
    let m = BigInt::from(m);
    Ok(if &x * 2 > m { x - m } else { x })
}

/// One CRT inference: the summed timings of the runs and the recombined outputs.
#[derive(Debug, Clone)]
pub struct CrtInference {
    /// The runs' seconds summed (steps by name); `parameters` of the first run;
    /// `correct` if every run's outputs equal [`crate::square_conv_bfv::forward_mod`]
    /// modulo its `t` (with `∏ t_i > 2·max|z|`, the recombined outputs are then the
    /// exact ones); `crt_components` = the number of runs.
    pub timing: ConvInferenceTiming,
    /// The plaintext moduli, one per run.
    pub moduli: Vec<u64>,
    /// The recombined outputs, `S` rows of one value per output.
    pub outputs: Vec<Vec<BigInt>>,
    /// The argmax per sample (first maximal class on ties).
    pub predictions: Vec<usize>,
}

/// Encrypted inference of `inputs` (`S × c·h·w`, `|x| ≤ input_bound`) by CRT: one run
/// per config of [`crt_configs`], each under its own key (seeded by `key_seed` and the
/// run's index), recombined by [`crt_combine`].
///
/// # Errors
/// [`BaselineError::InvalidParameter`] for no configs or for moduli that are not
/// coprime; the errors of [`BfvContext::new`],
/// [`SquareConvNetBfv::new_residue`](crate::square_conv_bfv::SquareConvNetBfv::new_residue),
/// [`BfvContext::encrypt_batch`] and the inference.
pub fn time_conv_inference_crt(
    configs: &[BfvConfig],
    key_seed: [u8; 32],
    net: &SquareConvNet,
    arch: &str,
    inputs: &Array2<i64>,
    input_bound: i64,
) -> Result<CrtInference> {
    let mut timing: Option<ConvInferenceTiming> = None;
    let mut residues: Vec<Array2<u64>> = Vec::with_capacity(configs.len());
    let moduli: Vec<u64> = configs.iter().map(BfvConfig::plaintext_modulus).collect();
    for (i, config) in configs.iter().enumerate() {
        let mut seed = key_seed;
        seed[31] ^= u8::try_from(i).unwrap_or(u8::MAX);
        let mut ctx = BfvContext::new(config, seed)?;
        let (t, z) = time_inner(&mut ctx, net, arch, inputs, input_bound, true)?;
        let m = i128::from(config.plaintext_modulus());
        // Centred values in (−t/2, t/2] back to 0..t; t < 2^62.
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        residues.push(z.mapv(|v| v.rem_euclid(m) as u64));
        timing = Some(match timing {
            None => t,
            Some(mut acc) => {
                acc.prepare_secs += t.prepare_secs;
                acc.encrypt_secs += t.encrypt_secs;
                acc.infer_secs += t.infer_secs;
                acc.decrypt_secs += t.decrypt_secs;
                acc.correct &= t.correct;
                for ((_, a), (_, b)) in acc.steps.iter_mut().zip(&t.steps) {
                    *a += b;
                }
                acc
            }
        });
    }
    let mut timing = timing.ok_or(BaselineError::InvalidParameter {
        name: "CRT moduli",
        reason: "no parameter sets".into(),
    })?;
    timing.crt_components = configs.len();
    let (samples, outs) = residues.first().map_or((0, 0), Array2::dim);
    let outputs = (0..samples)
        .map(|s| {
            (0..outs)
                .map(|o| {
                    let r: Vec<u64> = residues.iter().map(|z| z[[s, o]]).collect();
                    crt_combine(&r, &moduli)
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let predictions = outputs.iter().map(argmax).collect();
    Ok(CrtInference {
        timing,
        moduli,
        outputs,
        predictions,
    })
}
