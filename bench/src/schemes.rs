//! Part 5: GELU-Net next to the other schemes of the seed papers, measured in one run
//! (`gelunet bench paper --parts 5`).
//!
//! One table per workload; every row states what the scheme hides from whom, its
//! accuracy, single-sample latency, throughput, bytes, the measured leakage and its
//! parameters.
//!
//! - **MNIST 784-300-10 (sigmoid), 10 classes**: GELU-Net (Paillier, paper Alg. 1 with
//!   the model in the clear on the server), PROUD ([`gelunet_baselines::proud`], packed
//!   BFV standing in for CKKS) and SecureNets ([`gelunet_baselines::securenets`], `F_p`
//!   masking). GELU-Net serves its fixed-point reference model; PROUD and SecureNets
//!   serve the sigmoid network trained in `f64` on the same mini-batches from the same
//!   initialization, quantized to `fx = 4`, `fw = 6` (so its values fit BFV's `t` and
//!   `F_p`). The PROUD row carries the paper's Table 3 split (client encode + encrypt,
//!   server, client decrypt + decode, bytes each way) and GELU-Net's row the same
//!   split measured on its messages.
//! - **MNIST 3 vs 8, binary**: complement and partition
//!   ([`gelunet_baselines::complement`]) against its unsplit, unprotected model and
//!   GELU-Net serving the same kind of network (784-32-16-2, its fixed-point reference
//!   trained on the pair) encrypted through the same inference path as above.

use std::time::Instant;

use gelunet_baselines::complement::{
    agreement, invert_features, probe_label, PlainModel, SecureModel, TrainPlan,
};
use gelunet_baselines::proud::{self, IntLayer, ProudClient, ProudServer};
use gelunet_baselines::securenets::{
    self, encode, freivalds, ratio_attack, Cloud, CorruptingCloud, HonestCloud, LayerMasks,
    RatioAttack, SecureNetsUser,
};
use gelunet_baselines::{BfvConfig, FloatNet, TrainActivation};
use gelunet_client::InferStep;
use gelunet_protocol::messages::{to_wire, ClientMessage, ServerMessage};
use gelunet_protocol::{Dataset, FixedModel};
use ndarray::{Array1, Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::inference::{gelu_endpoints, median, rows, GeluEndpoints};
use crate::pipeline::{prepare, Prepared, Share, TrainSetup};
use crate::runs::train_side_by_side;

/// What part 5 runs: the same configuration as part 4.
pub use crate::inference::PartConfig;

/// The paper's Table 3 split of one inference (seconds and bytes per sample).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Split {
    /// Client: encode + encrypt.
    pub client_encrypt_secs: f64,
    /// Server computation.
    pub server_secs: f64,
    /// Client: decrypt + decode (GELU-Net: also the activation and re-encryption of
    /// the next layer's input, which its client does in one step).
    pub client_decrypt_secs: f64,
    /// Client → server bytes.
    pub bytes_up: usize,
    /// Server → client bytes.
    pub bytes_down: usize,
}

/// One scheme on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct SchemeRow {
    /// Scheme.
    pub scheme: String,
    /// What it hides from whom.
    pub hides: String,
    /// Test accuracy (fraction) of the deployed model.
    pub accuracy: Option<f64>,
    /// Single-sample latency, seconds (median).
    pub latency_secs: f64,
    /// Samples per hour (from the batch run, one process on this machine).
    pub per_hour: f64,
    /// Client → server bytes per sample.
    pub bytes_up: usize,
    /// Server → client bytes per sample.
    pub bytes_down: usize,
    /// The Table 3 split, where measured.
    pub split: Option<Split>,
    /// The party doing the protected work (user / client) vs the other, seconds.
    pub work: Option<(f64, f64)>,
    /// Whether the outputs equal the plaintext (integer) computation exactly.
    pub exact: Option<bool>,
    /// Measured leakage.
    pub leakage: String,
    /// Parameters of the row.
    pub parameters: String,
}

/// One workload's table.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Name (data, network).
    pub name: String,
    /// Rows.
    pub rows: Vec<SchemeRow>,
}

/// SecureNets' detection rate for a single altered entry.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Detection {
    /// Freivalds vectors.
    pub checks: usize,
    /// Trials.
    pub trials: usize,
    /// Measured detection rate.
    pub rate: f64,
    /// The paper's `1 − 2^−c`.
    pub expected: f64,
}

/// Complement and partition: what the provider learns.
#[derive(Clone, Debug, Serialize)]
pub struct ComplementLeakage {
    /// True-label accuracy of the returned bit taken as the label (chance: 0.5).
    pub output_as_label: f64,
    /// True-label accuracy of the provider's logistic probe on the features.
    pub probe_label: f64,
    /// Rate at which feature inversion guesses `cs` (hence the label).
    pub inversion_cs: f64,
    /// Mean Pearson correlation of the inverted images with the true ones.
    pub inversion_correlation: f64,
    /// Samples inverted.
    pub inverted: usize,
}

/// Part 5's results.
#[derive(Clone, Debug, Serialize)]
pub struct SchemesReport {
    /// One table per workload.
    pub workloads: Vec<Workload>,
    /// SecureNets' verification.
    pub detection: Vec<Detection>,
    /// SecureNets' ratio attack on the masked MNIST input.
    pub ratio_attack: Option<RatioAttack>,
    /// Complement and partition leakage.
    pub complement: Option<ComplementLeakage>,
    /// PROUD's evaluation (rotation) key, bytes, sent once.
    pub proud_key_bytes: Option<usize>,
    /// Plot file.
    pub plot: Option<String>,
}

/// Fractional bits of inputs/activations and weights of the quantized network.
const FX: u32 = 4;
const FW: u32 = 6;

fn quantize_net(net: &FloatNet) -> Vec<IntLayer> {
    let sw = f64::from(1u32 << FW);
    let sb = f64::from(1u32 << (FX + FW));
    #[allow(clippy::cast_possible_truncation)]
    net.layers
        .iter()
        .map(|l| IntLayer {
            w: l.w.mapv(|v| (v * sw).round() as i64),
            b: l.b.mapv(|v| (v * sb).round() as i64),
        })
        .collect()
}

#[allow(clippy::cast_possible_truncation)]
fn quantize_x(x: &[f64]) -> Vec<i64> {
    x.iter()
        .map(|&v| (v.clamp(0.0, 1.0) * f64::from(1u32 << FX)).round() as i64)
        .collect()
}

/// The client's sigmoid on integers at `2^(FX+FW)` → `2^FX`.
#[allow(clippy::cast_possible_truncation)]
fn sigmoid_int(z: &[i64]) -> Vec<i64> {
    let s = f64::from(1u32 << (FX + FW));
    z.iter()
        .map(|&v| ((1.0 / (1.0 + (-(v as f64) / s).exp())) * f64::from(1u32 << FX)).round() as i64)
        .collect()
}

fn int_forward(layers: &[IntLayer], x: &[i64]) -> Result<Vec<i64>> {
    let mut v = x.to_vec();
    for (l, layer) in layers.iter().enumerate() {
        v = layer.forward(&v)?;
        if l + 1 < layers.len() {
            v = sigmoid_int(&v);
        }
    }
    Ok(v)
}

/// First maximal index (as `gelunet_protocol::math::argmax`).
fn argmax_i64(v: &[i64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[allow(clippy::cast_precision_loss)]
fn per_hour(secs_per_sample: f64) -> f64 {
    if secs_per_sample > 0.0 {
        3600.0 / secs_per_sample
    } else {
        f64::NAN
    }
}

/// Runs part 5.
///
/// # Errors
/// Data, training and scheme errors.
pub fn run(config: &PartConfig, log: &dyn Fn(&str)) -> Result<SchemesReport> {
    let quick = config.quick;
    let prep = prepare(
        &config.data_dir,
        "mnist",
        0,
        crate::CLIENTS,
        crate::mnist_limits(quick),
    )?;
    let mut report = SchemesReport {
        workloads: Vec::new(),
        detection: Vec::new(),
        ratio_attack: None,
        complement: None,
        proud_key_bytes: None,
        plot: None,
    };
    log("schemes: training MNIST 784-300-10");
    let setup = TrainSetup {
        arch: None,
        widths: vec![prep.features, 300, prep.classes],
        lr: 0.01,
        batch: crate::BATCH,
        epochs: 1,
        seed: 0,
    };
    let trained = train_side_by_side(&prep, &setup, &[TrainActivation::Sigmoid], true, false)?;
    let float = trained
        .floats
        .first()
        .ok_or_else(|| BenchError::Check("no sigmoid network".into()))?
        .net()
        .clone();
    let layers = quantize_net(&float);
    let tests = prep.test_x.nrows();
    let xq: Vec<Vec<i64>> = prep
        .test_x
        .outer_iter()
        .map(|r| quantize_x(r.as_slice().unwrap_or(&r.to_vec())))
        .collect();
    let mut correct = 0usize;
    for (x, &y) in xq.iter().zip(&prep.test_y) {
        if argmax_i64(&int_forward(&layers, x)?) == y {
            correct += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let int_accuracy = correct as f64 / tests.max(1) as f64;
    let mut rows_1 = Vec::new();
    log("schemes: GELU-Net");
    rows_1.push(gelu_row(
        config,
        &prep,
        setup.widths.clone(),
        trained.reference.clone(),
    )?);
    log("schemes: PROUD");
    let (proud_row, key_bytes) = proud_row(config, &layers, &xq, int_accuracy)?;
    report.proud_key_bytes = Some(key_bytes);
    rows_1.push(proud_row);
    log("schemes: SecureNets");
    let (sn_row, attack) = securenets_row(config, &prep, &layers, &xq, int_accuracy)?;
    rows_1.push(sn_row);
    report.ratio_attack = Some(attack);
    report.detection = detection(if quick { 400 } else { 4000 });
    report.workloads.push(Workload {
        name: format!(
            "MNIST 784-300-10 sigmoid, 10 classes ({} training / {tests} test images)",
            prep.train_x.nrows()
        ),
        rows: rows_1,
    });
    log("schemes: complement and partition");
    let (w2, leak) = complement_workload(config, &prep, log)?;
    report.workloads.push(w2);
    report.complement = Some(leak);
    let plot_file = "schemes.png".to_string();
    plot(&report, &config.out_dir.join(&plot_file))?;
    report.plot = Some(plot_file);
    Ok(report)
}

/// GELU-Net's row for `prep`: the sigmoid network of `widths` serving `model`, queried
/// one sample at a time through [`gelu_endpoints`] (paper Alg. 1 with the model in the
/// clear on the server), with the Table 3 split measured on its messages.
fn gelu_row(
    config: &PartConfig,
    prep: &Prepared,
    widths: Vec<usize>,
    model: Option<FixedModel>,
) -> Result<SchemeRow> {
    let arch = widths
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("-");
    let GeluEndpoints {
        server,
        mut client,
        key,
        cfg,
    } = gelu_endpoints(
        config.key_bits,
        config.allow_test_keys,
        gelunet_protocol::ModelSpec::new(widths, gelunet_protocol::Activation::Sigmoid),
        model,
    )?;
    let scales = cfg.scales;
    let all = Dataset::quantize(prep.test_x.view(), &prep.test_y, prep.classes, &scales)?;
    let truth = server.true_model()?;
    let accuracy = truth.accuracy(&scales, all.x.view(), &all.labels)?;
    let reps = if config.quick { 2 } else { 5 };
    let mut splits = Vec::new();
    let mut exact = true;
    for r in 0..=reps {
        let one = rows(&all.x, r % all.len(), 1);
        let mut split = Split::default();
        let t = Instant::now();
        let mut msg = client.start_fixed(one.view())?;
        split.client_encrypt_secs = t.elapsed().as_secs_f64();
        let pred = loop {
            let ClientMessage::Infer(req) = &msg else {
                return Err(BenchError::Check(format!(
                    "inference client sent {}",
                    msg.kind()
                )));
            };
            split.bytes_up += to_wire(&msg)?.len();
            let t = Instant::now();
            let answer = ServerMessage::Inferred(server.infer(&key, req)?);
            split.server_secs += t.elapsed().as_secs_f64();
            split.bytes_down += to_wire(&answer)?.len();
            let t = Instant::now();
            let step = client.handle(&answer)?;
            split.client_decrypt_secs += t.elapsed().as_secs_f64();
            match step {
                InferStep::Next(m) => msg = m,
                InferStep::Done(p, _) => break p,
            }
        };
        exact &= pred == truth.predict(&scales, one.view())?;
        // The first run warms up tables and caches.
        if r > 0 {
            splits.push(split);
        }
    }
    Ok(split_row(
        "GELU-Net",
        "x, every activation and the prediction from the server (Paillier); the model is the server's (it holds W in the clear in inference)",
        accuracy,
        median_split(&splits),
        exact,
        "server: ciphertexts only (semantic security of Paillier), no feature or label in the clear; client: the pre-activations z_l of every layer",
        format!(
            "{arch} sigmoid/softmax, Paillier {} bits{}, row packing, fa = {}, fw = {}, median of {reps}, {} rayon threads",
            config.key_bits,
            if config.key_bits < gelunet_paillier::MIN_KEY_BITS { " (TEST-SIZE)" } else { "" },
            scales.fa,
            scales.fw,
            rayon::current_num_threads()
        ),
    ))
}

/// A row of a scheme measured with a [`Split`] (latency = the three phases).
fn split_row(
    scheme: &str,
    hides: &str,
    accuracy: f64,
    split: Split,
    exact: bool,
    leakage: &str,
    parameters: String,
) -> SchemeRow {
    let latency = split.client_encrypt_secs + split.server_secs + split.client_decrypt_secs;
    SchemeRow {
        scheme: scheme.into(),
        hides: hides.into(),
        accuracy: Some(accuracy),
        latency_secs: latency,
        per_hour: per_hour(latency),
        bytes_up: split.bytes_up,
        bytes_down: split.bytes_down,
        split: Some(split),
        work: Some((
            split.client_encrypt_secs + split.client_decrypt_secs,
            split.server_secs,
        )),
        exact: Some(exact),
        leakage: leakage.into(),
        parameters,
    }
}

fn median_split(v: &[Split]) -> Split {
    let m = |f: &dyn Fn(&Split) -> f64| median(v.iter().map(f).collect());
    Split {
        client_encrypt_secs: m(&|s| s.client_encrypt_secs),
        server_secs: m(&|s| s.server_secs),
        client_decrypt_secs: m(&|s| s.client_decrypt_secs),
        bytes_up: v.first().map_or(0, |s| s.bytes_up),
        bytes_down: v.first().map_or(0, |s| s.bytes_down),
    }
}

fn proud_row(
    config: &PartConfig,
    layers: &[IntLayer],
    xq: &[Vec<i64>],
    accuracy: f64,
) -> Result<(SchemeRow, usize)> {
    let in_bound = 1i64 << FX;
    let mut need = 0u128;
    for l in layers {
        need = need.max(l.output_bound(in_bound)?);
    }
    let t_bits = (130 - need.leading_zeros()).max(20);
    let bfv = BfvConfig::n8192(t_bits)?;
    let widths: Vec<usize> = std::iter::once(layers[0].w.ncols())
        .chain(layers.iter().map(|l| l.w.nrows()))
        .collect();
    let mut client = ProudClient::new(&bfv, &widths, [21u8; 32])?;
    let key = client.server_key();
    let server = ProudServer::new(layers, &key, &vec![in_bound; layers.len()])?;
    let act = |_: usize, z: &[i64]| sigmoid_int(z);
    let reps = if config.quick { 1 } else { 5 };
    let mut splits = Vec::new();
    let mut exact = true;
    for (r, x) in xq.iter().cycle().take(reps + 1).enumerate() {
        let (out, cost) = proud::infer(&mut client, &server, x, &act)?;
        exact &= out == int_forward(layers, x)?;
        if r > 0 {
            splits.push(Split {
                client_encrypt_secs: cost.client_encrypt_secs,
                server_secs: cost.server_secs,
                client_decrypt_secs: cost.client_decrypt_secs + cost.client_activation_secs,
                bytes_up: cost.bytes_up,
                bytes_down: cost.bytes_down,
            });
        }
    }
    let d = bfv.describe();
    Ok((
        split_row(
            "PROUD (BFV for CKKS)",
            "x and every activation from the server (RLWE); the model is the server's",
            accuracy,
            median_split(&splits),
            exact,
            "server: ciphertexts only; client: the pre-activations of every layer (as GELU-Net)",
            format!(
                "BFV N = {}, log q = {} {:?}, t = {} bits, diagonal method + BSGS rotations, fx = {FX}, fw = {FW}, median of {reps}, {} rayon threads",
                d.degree, d.log_q, d.moduli_bits, d.t_bits, rayon::current_num_threads()
            ),
        ),
        key.bytes(),
    ))
}

fn securenets_row(
    config: &PartConfig,
    prep: &Prepared,
    layers: &[IntLayer],
    xq: &[Vec<i64>],
    accuracy: f64,
) -> Result<(SchemeRow, RatioAttack)> {
    let sn_layers: Vec<(Array2<i64>, Array1<i64>)> =
        layers.iter().map(|l| (l.w.clone(), l.b.clone())).collect();
    let act = |_: usize, z: &Array2<i64>| {
        let flat: Vec<i64> = z.iter().copied().collect();
        Array2::from_shape_vec(z.dim(), sigmoid_int(&flat)).unwrap_or_else(|_| z.clone())
    };
    let checks = 20;
    let mut user = SecureNetsUser::new(31, checks);
    let batch = if config.quick { 50 } else { 500 }.min(xq.len());
    let to_matrix = |rows: &[Vec<i64>]| -> Result<Array2<i64>> {
        let d = rows.first().map_or(0, Vec::len);
        Array2::from_shape_vec((rows.len(), d), rows.iter().flatten().copied().collect())
            .map_err(|e| BenchError::Check(e.to_string()))
    };
    let mut singles = Vec::new();
    let mut exact = true;
    let mut work = (0.0, 0.0);
    let mut bytes = (0usize, 0usize);
    let reps = if config.quick { 3 } else { 10 };
    for (r, x) in xq.iter().cycle().take(reps + 1).enumerate() {
        let t = Instant::now();
        let (out, cost) = user.infer(
            &sn_layers,
            &to_matrix(std::slice::from_ref(x))?,
            &act,
            &mut HonestCloud,
        )?;
        let secs = t.elapsed().as_secs_f64();
        exact &= out.row(0).to_vec() == int_forward(layers, x)?;
        if r > 0 {
            singles.push(secs);
            work = (cost.user_secs(), cost.cloud_secs);
            bytes = (cost.bytes_up, cost.bytes_down);
        }
    }
    let xb = to_matrix(&xq[..batch])?;
    let t = Instant::now();
    let (out, bcost) = user.infer(&sn_layers, &xb, &act, &mut HonestCloud)?;
    let batch_secs = t.elapsed().as_secs_f64();
    for (row, x) in out.outer_iter().zip(xq) {
        exact &= row.to_vec() == int_forward(layers, x)?;
    }
    // Leakage: the cloud's ratio attack on the masked first-layer input.
    let masks = LayerMasks::draw(41, layers[0].w.nrows(), xb.ncols(), batch);
    let y = xb.t().to_owned();
    let y_hat = masks.mask_inputs(&y.mapv(encode));
    let scale = f64::from(1u32 << FX);
    let mean_image: Vec<f64> = prep
        .train_x
        .mean_axis(Axis(0))
        .map(|m| m.iter().map(|v| v * scale).collect())
        .unwrap_or_default();
    let attack = ratio_attack(&y_hat, 1 << FX, &mean_image, &y, &masks);
    #[allow(clippy::cast_precision_loss)]
    let per_sample = batch_secs / batch as f64;
    let latency = median(singles);
    Ok((
        SchemeRow {
            scheme: "SecureNets".into(),
            hides: "x, the weights and the layer structure from the cloud (pseudorandom scaling + permutation over F_p); the user owns both data and model".into(),
            accuracy: Some(accuracy),
            latency_secs: latency,
            per_hour: per_hour(per_sample),
            bytes_up: bytes.0,
            bytes_down: bytes.1,
            split: None,
            work: Some(work),
            exact: Some(exact),
            leakage: format!(
                "cloud: zero pattern ({:.0}% of the input entries are zero and stay zero); ratio attack recovers {:.1}% of the input entries exactly ({:.1}% of the non-zero ones), images correlate {:.2} with the truth after placing pixels by a public mean image",
                100.0 * attack.zero_fraction,
                100.0 * attack.exact_fraction,
                100.0 * attack.nonzero_exact_fraction,
                attack.mean_image_correlation
            ),
            parameters: format!(
                "p = 2^61 − 1, c = {checks} Freivalds vectors (miss ≤ 2^−{checks}), batch {batch} for the throughput (the batch: user {}, cloud {}), fx = {FX}, fw = {FW}, {} rayon threads",
                crate::report_ms(bcost.user_secs()),
                crate::report_ms(bcost.cloud_secs),
                rayon::current_num_threads()
            ),
        },
        attack,
    ))
}

/// Detection rate of a single altered entry for `c = 1, 2, 4` on a masked 30×40·40×20
/// product.
fn detection(trials: usize) -> Vec<Detection> {
    let mut rng = ChaCha20Rng::seed_from_u64(51);
    let w = Array2::from_shape_fn((30, 40), |_| encode(rng.gen_range(-100..=100)));
    let y = Array2::from_shape_fn((40, 20), |_| encode(rng.gen_range(-100..=100)));
    let mut cheat = CorruptingCloud::new(52, 1);
    let mut out = Vec::new();
    for c in [1usize, 2, 4] {
        let mut caught = 0usize;
        for _ in 0..trials {
            let Ok(z) = cheat.multiply(&w, &y) else {
                continue;
            };
            if !freivalds(&w, &y, &z, c, &mut rng) {
                caught += 1;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        out.push(Detection {
            checks: c,
            trials,
            rate: caught as f64 / trials.max(1) as f64,
            expected: 1.0 - 0.5f64.powi(i32::try_from(c).unwrap_or(1)),
        });
    }
    out
}

/// The samples of `x` labelled `a` or `b`, relabelled 0 (`a`) and 1 (`b`), in order.
fn pick_pair(x: &Array2<f64>, y: &[usize], (a, b): (usize, usize)) -> (Array2<f64>, Vec<usize>) {
    let idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == a || y[i] == b).collect();
    (
        x.select(Axis(0), &idx),
        idx.iter().map(|&i| usize::from(y[i] == b)).collect(),
    )
}

/// `prep` restricted to the digits `a` and `b` (labels 0 and 1): each client keeps its
/// share's samples of the pair, so the mini-batch schedule is GELU-Net's own.
fn binary_subset(prep: &Prepared, pair: (usize, usize)) -> Result<Prepared> {
    let shares: Vec<Share> = prep
        .shares
        .iter()
        .map(|s| {
            let (x, y) = pick_pair(&s.x, &s.y, pair);
            Share { x, y, seed: s.seed }
        })
        .collect();
    let (train_x, train_y) = pick_pair(&prep.train_x, &prep.train_y, pair);
    let (test_x, test_y) = pick_pair(&prep.test_x, &prep.test_y, pair);
    if train_y.is_empty() || test_y.is_empty() || shares.iter().any(|s| s.y.is_empty()) {
        return Err(BenchError::Check(format!(
            "no MNIST {}/{} samples for every client",
            pair.0, pair.1
        )));
    }
    Ok(Prepared {
        name: format!("{} {} vs {}", prep.name, pair.0, pair.1),
        features: prep.features,
        classes: 2,
        shares,
        train_x,
        train_y,
        test_x,
        test_y,
        standardized: prep.standardized,
    })
}

/// GELU-Net on the binary task: the fixed-point reference of the same kind of network
/// as the split model (784-32-16-2, sigmoid hidden layers, softmax over the two
/// classes), trained on GELU-Net's own mini-batch schedule, then served encrypted.
fn gelu_binary_row(config: &PartConfig, bin: &Prepared) -> Result<SchemeRow> {
    let setup = TrainSetup {
        arch: None,
        widths: vec![bin.features, 32, 16, 2],
        lr: 0.05,
        batch: crate::BATCH,
        epochs: if config.quick { 10 } else { 20 },
        seed: 0,
    };
    let t = Instant::now();
    let trained = train_side_by_side(bin, &setup, &[], true, false)?;
    let train_secs = t.elapsed().as_secs_f64();
    if let Some(e) = &trained.reference_error {
        return Err(BenchError::Check(format!(
            "GELU-Net binary reference training failed: {e}"
        )));
    }
    let mut row = gelu_row(config, bin, setup.widths.clone(), trained.reference)?;
    row.parameters = format!(
        "{}; fixed-point training lr {}, batch {}, {} epochs ({}) on {} training images",
        row.parameters,
        setup.lr,
        setup.batch,
        setup.epochs,
        crate::report_ms(train_secs),
        bin.train_len()
    );
    Ok(row)
}

fn complement_workload(
    config: &PartConfig,
    prep: &Prepared,
    log: &dyn Fn(&str),
) -> Result<(Workload, ComplementLeakage)> {
    let quick = config.quick;
    let (a, b) = (3usize, 8usize);
    let bin = binary_subset(prep, (a, b))?;
    let (x, xt) = (bin.train_x.clone(), bin.test_x.clone());
    let y: Vec<bool> = bin.train_y.iter().map(|&l| l == 1).collect();
    let yt: Vec<bool> = bin.test_y.iter().map(|&l| l == 1).collect();
    let plan = TrainPlan {
        hidden: (32, 16),
        lr: 0.1,
        batch: 16,
        epochs_old: if quick { 10 } else { 20 },
        epochs_retrain: if quick { 20 } else { 40 },
        seed: 61,
    };
    let t = Instant::now();
    let old = PlainModel::train(x.view(), &y, &plan)?;
    let old_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let secure = SecureModel::retrain(&old, x.view(), &y, &plan)?;
    let retrain_secs = t.elapsed().as_secs_f64();
    let mut rng = ChaCha20Rng::seed_from_u64(62);
    let cs: Vec<bool> = (0..yt.len()).map(|_| rng.gen()).collect();
    let old_acc = agreement(&old.predict(xt.view()), &yt);
    let split = secure.predict_split(xt.view(), &cs);
    let secure_acc = agreement(&split, &yt);
    let exact = split == secure.predict_unsplit(xt.view(), &cs);
    // Latency: one sample, client part then server part.
    let mut lat = Vec::new();
    let mut client_t = 0.0;
    let mut server_t = 0.0;
    for i in 0..20.min(yt.len()) {
        let one = xt.select(Axis(0), &[i]);
        let t = Instant::now();
        let f = secure.client_features(one.view(), &cs[i..=i]);
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = secure.server_output(f.view());
        let s = t.elapsed().as_secs_f64();
        client_t = c;
        server_t = s;
        lat.push(c + s);
    }
    let t = Instant::now();
    let _ = secure.predict_split(xt.view(), &cs);
    #[allow(clippy::cast_precision_loss)]
    let per_sample = t.elapsed().as_secs_f64() / yt.len() as f64;
    // Leakage.
    let cs_train: Vec<bool> = (0..y.len()).map(|_| rng.gen()).collect();
    let f_train = secure.client_features(x.view(), &cs_train);
    let f_test = secure.client_features(xt.view(), &cs);
    let raw = secure.server_output(f_test.view());
    let output_as_label = agreement(&raw, &yt);
    let probe = probe_label(f_train.view(), &y, f_test.view(), &yt, 500, 0.5);
    let inverted = if quick { 20 } else { 100 }.min(yt.len());
    let start = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let (mut cs_right, mut corr) = (0usize, 0.0);
    for ((f, truth), &c) in f_test
        .outer_iter()
        .zip(xt.outer_iter())
        .zip(&cs)
        .take(inverted)
    {
        let inv = invert_features(&secure, f, start.view(), 300, 0.02);
        if inv.cs == c {
            cs_right += 1;
        }
        corr += securenets::pearson(&inv.x.to_vec(), &truth.to_vec());
    }
    #[allow(clippy::cast_precision_loss)]
    let leak = ComplementLeakage {
        output_as_label,
        probe_label: probe,
        inversion_cs: cs_right as f64 / inverted.max(1) as f64,
        inversion_correlation: corr / inverted.max(1) as f64,
        inverted,
    };
    let params = format!(
        "784-32-[+cs]-16-1 ReLU/sigmoid, split at k = 2, SGD lr {}, batch {}, {} + {} epochs ({} + {}), {} training / {} test images",
        plan.lr,
        plan.batch,
        plan.epochs_old,
        plan.epochs_retrain,
        crate::report_ms(old_secs),
        crate::report_ms(retrain_secs),
        y.len(),
        yt.len()
    );
    let latency = median(lat);
    let bytes_up = 8 * secure.feature_width();
    log("schemes: GELU-Net on MNIST 3 vs 8");
    let gelu = gelu_binary_row(config, &bin)?;
    let rows = vec![
        gelu,
        SchemeRow {
            scheme: "unsplit model (no protection)".into(),
            hides: "nothing: the server gets x".into(),
            accuracy: Some(old_acc),
            latency_secs: f64::NAN,
            per_hour: f64::NAN,
            bytes_up: 8 * x.ncols(),
            bytes_down: 1,
            split: None,
            work: None,
            exact: None,
            leakage: "server: x and the label".into(),
            parameters: "784-32-16-1, the old model of the retraining".into(),
        },
        SchemeRow {
            scheme: "complement and partition".into(),
            hides: "x (behind layers 1..k) and the label (cs) from the provider; layers k+1.. from the data owner".into(),
            accuracy: Some(secure_acc),
            latency_secs: latency,
            per_hour: per_hour(per_sample),
            bytes_up,
            bytes_down: 1,
            split: None,
            work: Some((client_t, server_t)),
            exact: Some(exact),
            leakage: format!(
                "provider: returned bit = label {:.1}% (chance 50%); a probe on the features finds the label {:.1}%; feature inversion guesses cs {:.1}% ({} images), reconstructions correlate {:.2} with the truth",
                100.0 * leak.output_as_label,
                100.0 * leak.probe_label,
                100.0 * leak.inversion_cs,
                leak.inverted,
                leak.inversion_correlation
            ),
            parameters: params,
        },
    ];
    Ok((
        Workload {
            name: format!("MNIST {a} vs {b}, binary"),
            rows,
        },
        leak,
    ))
}

fn plot(report: &SchemesReport, path: &std::path::Path) -> Result<()> {
    let mut legend: Vec<String> = Vec::new();
    for w in &report.workloads {
        for r in &w.rows {
            if r.latency_secs.is_finite() && !legend.contains(&r.scheme) {
                legend.push(r.scheme.clone());
            }
        }
    }
    let groups: Vec<gelunet_plot::BarGroup> = report
        .workloads
        .iter()
        .map(|w| gelunet_plot::BarGroup {
            label: w.name.split(',').next().unwrap_or(&w.name).to_string(),
            bars: legend
                .iter()
                .map(|s| {
                    let v = w
                        .rows
                        .iter()
                        .find(|r| &r.scheme == s)
                        .map_or(f64::NAN, |r| (r.latency_secs * 1e6).log10());
                    (v, f64::NAN)
                })
                .collect(),
        })
        .collect();
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.0))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    gelunet_plot::bar_figure(
        path,
        "single-sample latency by scheme",
        "log10 latency (µs)",
        &legend,
        &groups,
        (0.0, top.ceil() + 0.5),
        "gelunet bench paper, part 5: median single-sample latency, this machine",
    )?;
    Ok(())
}

/// Part 5 as Markdown.
#[must_use]
pub fn markdown(r: &SchemesReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or("–".into(), |a| format!("{:.2}%", 100.0 * a));
    for w in &r.workloads {
        let _ = writeln!(s, "\n### {}\n", w.name);
        let _ = writeln!(
            s,
            "| scheme | hides (from whom) | accuracy | latency (1 sample) | samples / hour | bytes up / down | client or user / server or cloud s | exact | measured leakage | parameters |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for row in &w.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                row.scheme,
                row.hides,
                opt(row.accuracy),
                crate::report_ms(row.latency_secs),
                if row.per_hour.is_finite() {
                    format!("{:.0}", row.per_hour)
                } else {
                    "–".into()
                },
                row.bytes_up,
                row.bytes_down,
                row.work.map_or("–".into(), |(a, b)| format!(
                    "{} / {}",
                    crate::report_ms(a),
                    crate::report_ms(b)
                )),
                row.exact.map_or("–", |e| if e { "yes" } else { "NO" }),
                row.leakage,
                row.parameters
            );
        }
        let splits: Vec<&SchemeRow> = w.rows.iter().filter(|r| r.split.is_some()).collect();
        if !splits.is_empty() {
            let _ = writeln!(
                s,
                "\nTable 3 split (per image; PROUD's paper: 544 ms and 0.95 MB per MNIST image, CKKS):\n\n| scheme | client encode + encrypt | server | client decrypt + decode (+ activation) | bytes up | bytes down |\n| --- | --- | --- | --- | --- | --- |"
            );
            for row in splits {
                if let Some(sp) = row.split {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} |",
                        row.scheme,
                        crate::report_ms(sp.client_encrypt_secs),
                        crate::report_ms(sp.server_secs),
                        crate::report_ms(sp.client_decrypt_secs),
                        sp.bytes_up,
                        sp.bytes_down
                    );
                }
            }
        }
    }
    if let Some(b) = r.proud_key_bytes {
        let _ = writeln!(s, "\nPROUD's rotation keys: {b} bytes, sent once.");
    }
    if !r.detection.is_empty() {
        let _ = writeln!(
            s,
            "\nSecureNets verification, one altered entry of a 30×20 product (paper: miss ≤ 2^−c):\n\n| c | trials | detected | expected 1 − 2^−c |\n| --- | --- | --- | --- |"
        );
        for d in &r.detection {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} |",
                d.checks, d.trials, d.rate, d.expected
            );
        }
    }
    if let Some(p) = &r.plot {
        let _ = writeln!(s, "\n![latency by scheme]({p})");
    }
    s
}
