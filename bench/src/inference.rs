//! Part 4, inference latency and throughput (GELU-Net paper, Table 5; the comparison with
//! CryptoNets of §5.2).
//!
//! Two architectures: Dense(12) on Iris (`4-12-3`) and Dense(300) on MNIST (`784-300-10`).
//! For each, one sample (latency) and a batch (throughput per sample):
//!
//! - **GELU-Net**: the trained model served by [`gelunet_server::Server`], queried by an
//!   in-memory inference client (paper Alg. 1 with the true weights: the client sends
//!   `[x]_c`, the server returns `[z_1]_c`, the client applies the sigmoid and sends
//!   `[a_1]_c`, the server returns the logits `[z_2]_c`). One sample uses row packing
//!   (the server packs a sample's outputs into few ciphertexts), a batch uses sample
//!   packing (one ciphertext per feature for many samples). Paillier keys of the run's
//!   size.
//! - **CryptoNets**: the square-activation network of the same shape, deployed under BFV
//!   in CryptoNets' layout (one sample per SIMD slot; [`SquareNetBfv`]), with a plaintext
//!   modulus keeping its predictions exact. One sample costs as much as a full batch of
//!   `N` samples: that is where batched FHE wins.
//!
//! Timings exclude key generation and the one-time model preparation; they include the
//! client's encryption and decryption and the server's work. Each single-sample latency
//! is measured twice: everything on the spot, and *online*, with the encryption
//! randomness computed beforehand on both sides (GELU-Net's client obfuscators
//! `h_N^α`, BFV's encryptions of zero), the usual offline/online split; the offline time
//! is reported next to it.

use std::path::PathBuf;
use std::time::Instant;

use gelunet_baselines::{
    BfvContext, BfvDescription, PolyActivation, SquareNet, SquareNetBfv, TrainActivation,
};
use gelunet_client::{InferenceClient, InferenceConfig};
use gelunet_protocol::{Activation, Dataset, FixedModel, ModelSpec, Scales};
use gelunet_server::{Server, ServerConfig};
use gelunet_sim::InferenceLink;
use ndarray::Array2;
use serde::Serialize;

use crate::accuracy::deploy_square;
use crate::error::{BenchError, Result};
use crate::pipeline::{prepare, Prepared, TrainSetup};
use crate::runs::{keygen, train_side_by_side, SideBySide};

/// What part 4 runs.
#[derive(Clone, Debug)]
pub struct PartConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Small sizes.
    pub quick: bool,
    /// Paillier key size.
    pub key_bits: u64,
    /// Test keys allowed.
    pub allow_test_keys: bool,
    /// Output directory.
    pub out_dir: PathBuf,
}

/// One scheme's timings for one architecture.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// Seconds for one sample (latency), everything computed on the spot.
    pub single_secs: f64,
    /// Seconds for one sample with the encryption randomness computed beforehand (the
    /// online phase): GELU-Net's client obfuscators, BFV's encryptions of zero.
    pub online_single_secs: f64,
    /// Seconds to precompute that randomness for one sample (the offline phase, not in
    /// `online_single_secs`).
    pub offline_single_secs: f64,
    /// GELU-Net only: seconds for one sample with its layers *preprocessed* (the
    /// server's linear layers computed beforehand on the client's one-time masks,
    /// docs/DESIGN.md "Preprocessed inference"); `None` for BFV.
    pub preprocessed_single_secs: Option<f64>,
    /// GELU-Net only: seconds of that preprocessing for one sample (the client's masks
    /// encrypted, the server's answers on them), not in `preprocessed_single_secs`.
    pub preprocessing_secs: Option<f64>,
    /// Samples in the batch.
    pub batch_samples: usize,
    /// Seconds for the batch.
    pub batch_secs: f64,
    /// `batch_secs / batch_samples`.
    pub batch_per_sample_secs: f64,
    /// Whether the encrypted predictions equal the plaintext ones (single and batch).
    pub predictions_match_plaintext: bool,
    /// Per-sample time if the batch filled every slot (BFV: a batch costs the same for
    /// up to `N` samples); `None` for GELU-Net.
    pub full_batch_per_sample_secs: Option<f64>,
    /// How it was run (packing, layout).
    pub note: String,
}

impl Timing {
    /// The timing of the medians of `singles` (one sample each, everything computed on
    /// the spot), `online` and `offline` (one sample each with its randomness
    /// precomputed, and that precomputation), and of one batch of `batch_samples` taking
    /// `batch_secs`, all in seconds; `ok` whether every prediction matched the plaintext
    /// one. No full-batch time and no note (set them on the result where they apply).
    fn measured(
        singles: Vec<f64>,
        (online, offline): (Vec<f64>, Vec<f64>),
        (batch_samples, batch_secs): (usize, f64),
        ok: bool,
    ) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let per = batch_secs / batch_samples as f64;
        Self {
            single_secs: median(singles),
            online_single_secs: median(online),
            offline_single_secs: median(offline),
            preprocessed_single_secs: None,
            preprocessing_secs: None,
            batch_samples,
            batch_secs,
            batch_per_sample_secs: per,
            predictions_match_plaintext: ok,
            full_batch_per_sample_secs: None,
            note: String::new(),
        }
    }
}

impl Timing {
    /// `"; preprocessed X (offline Y)"` for a timing with a preprocessed figure, else
    /// empty, with `fmt` formatting seconds.
    pub(crate) fn preprocessed_suffix(&self, fmt: fn(f64) -> String) -> String {
        match (self.preprocessed_single_secs, self.preprocessing_secs) {
            (Some(on), Some(off)) => format!("; preprocessed {} ({})", fmt(on), fmt(off)),
            _ => String::new(),
        }
    }
}

/// One architecture.
#[derive(Clone, Debug, Serialize)]
pub struct InferenceRow {
    /// `Dense(12) on Iris`, ...
    pub model: String,
    /// Layer widths.
    pub widths: Vec<usize>,
    /// GELU-Net (`None` if it could not run, see `gelu_error`).
    pub gelu: Option<Timing>,
    /// Why GELU-Net did not run.
    pub gelu_error: Option<String>,
    /// CryptoNets under BFV.
    pub bfv: Option<Timing>,
    /// Why BFV did not run.
    pub bfv_error: Option<String>,
    /// BFV parameters.
    pub bfv_parameters: Option<BfvDescription>,
    /// Fixed-point scale `fx = fw` of the square network.
    pub square_scale_bits: Option<u32>,
    /// BFV latency / GELU-Net latency.
    pub latency_ratio: Option<f64>,
    /// BFV online latency / GELU-Net online latency (randomness precomputed on both
    /// sides).
    pub online_latency_ratio: Option<f64>,
    /// BFV online latency / GELU-Net latency with the layers preprocessed.
    pub preprocessed_latency_ratio: Option<f64>,
    /// BFV per-sample batch time / GELU-Net per-sample batch time (same samples).
    pub throughput_ratio: Option<f64>,
    /// BFV per-sample time with all `N` slots filled / GELU-Net per-sample batch time
    /// (below 1: batched FHE wins).
    pub throughput_ratio_full_bfv: Option<f64>,
    /// The paper's Table 5 (GELU-Net, local-local, seconds per inference).
    pub paper_secs: Option<f64>,
}

/// Part 4's results.
#[derive(Clone, Debug, Serialize)]
pub struct InferenceReport {
    /// Paillier key size.
    pub key_bits: u64,
    /// Rows.
    pub rows: Vec<InferenceRow>,
    /// Targets: GELU-Net Dense(12) latency < 30 ms, Dense(300) < 10 s, latency ratio ≥ 14
    /// (`None`: not evaluated, the keys are test-size keys).
    pub targets: Vec<(String, Option<bool>)>,
    /// Plot file.
    pub plot: Option<String>,
    /// Rayon threads.
    pub threads: usize,
}

/// Times CryptoNets' BFV inference of `net` for `x` (rows = samples): encryption (with
/// the context's precomputed encryptions of zero, if any), server evaluation and
/// decryption; returns (seconds, predictions equal plaintext).
///
/// # Errors
/// BFV errors.
pub fn bfv_time(
    ctx: &mut BfvContext,
    model: &SquareNetBfv,
    net: &SquareNet,
    x: &ndarray::Array2<i64>,
    bound: i64,
) -> Result<(f64, bool)> {
    let t = Instant::now();
    let batch = ctx.encrypt_batch(x, bound)?;
    let out = model.infer(&batch)?;
    let pred = ctx.predict(&out)?;
    let secs = t.elapsed().as_secs_f64();
    let plain = net.predict_plain(x)?;
    Ok((secs, pred == plain))
}

/// One architecture of part 4.
#[derive(Clone, Debug)]
struct Arch {
    model: &'static str,
    dataset: &'static str,
    hidden: usize,
    gelu_batch: usize,
    reps: usize,
    paper_secs: f64,
}

/// GELU-Net's encrypted inference of `x` (rows = samples) in memory over `link`
/// ([`InferenceLink`]: the server's answers, preparations used where the client has
/// them); returns (seconds, predictions).
fn gelu_infer(
    server: &Server,
    client: &mut InferenceClient,
    link: &mut InferenceLink,
    x: &Array2<i128>,
) -> Result<(f64, Vec<usize>)> {
    let t = Instant::now();
    let (pred, _) = link.infer_fixed(server, client, x.view())?;
    Ok((t.elapsed().as_secs_f64(), pred))
}

/// The offline part of preprocessed inference for one sample
/// ([`InferenceLink::prepare`]); the seconds it took.
fn gelu_prepare(
    server: &Server,
    client: &mut InferenceClient,
    link: &mut InferenceLink,
) -> Result<f64> {
    let t = Instant::now();
    link.prepare(server, client)?;
    Ok(t.elapsed().as_secs_f64())
}

/// A GELU-Net inference server holding a model in the clear (the paper's setting) and
/// an in-memory inference client whose key the server has prepared.
pub(crate) struct GeluEndpoints {
    pub(crate) server: Server,
    pub(crate) client: InferenceClient,
    pub(crate) key: gelunet_paillier::PublicKey,
    pub(crate) cfg: ServerConfig,
}

/// Builds [`GeluEndpoints`] for a network of `spec` serving `trained` (or its Xavier
/// initialization): Paillier keys of `key_bits` (seeds 901, 902), row packing (position
/// packing for conv layers).
pub(crate) fn gelu_endpoints(
    key_bits: u64,
    allow_test_keys: bool,
    spec: ModelSpec,
    trained: Option<FixedModel>,
) -> Result<GeluEndpoints> {
    gelu_endpoints_at(key_bits, allow_test_keys, spec, trained, Scales::default())
}

/// [`gelu_endpoints`] serving at `scales` (a model with coarser weights,
/// [`FixedModel::with_weight_frac_bits`]).
pub(crate) fn gelu_endpoints_at(
    key_bits: u64,
    allow_test_keys: bool,
    spec: ModelSpec,
    trained: Option<FixedModel>,
    scales: Scales,
) -> Result<GeluEndpoints> {
    let mut cfg = ServerConfig::new(spec, 0.05, 1);
    cfg.scales = scales;
    // Inference uses the model in the clear: the paper's server holds it.
    cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
    cfg.insecure.allow_test_keys = key_bits < gelunet_paillier::MIN_KEY_BITS && allow_test_keys;
    let key = keygen(key_bits, 901, allow_test_keys)?;
    let server = match trained {
        Some(model) => Server::with_model(cfg.clone(), key, model)?,
        None => Server::new(cfg.clone(), key)?,
    };
    let icfg = InferenceConfig {
        randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed: 7 },
        allow_test_keys: cfg.insecure.allow_test_keys,
        packing: true,
        row_packing: true,
    };
    let client = InferenceClient::new(
        icfg,
        keygen(key_bits, 902, allow_test_keys)?,
        &server.hello(),
    )?;
    // Once per connection: the server checks and prepares the client's key.
    let key = server.inference_key(&client.hello())?;
    Ok(GeluEndpoints {
        server,
        client,
        key,
        cfg,
    })
}

/// Rows `start..start + len` of `x`.
pub(crate) fn rows<T: Clone>(x: &Array2<T>, start: usize, len: usize) -> Array2<T> {
    let idx: Vec<usize> = (start..start + len).collect();
    x.select(ndarray::Axis(0), &idx)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Trains both served networks of `arch` on the same mini-batches from the same
/// initialization: GELU-Net's fixed-point reference (sigmoid) and the square-activation
/// network CryptoNets deploys.
fn train_models(prep: &Prepared, arch: &Arch, quick: bool) -> Result<SideBySide> {
    let setup = TrainSetup {
        arch: None,
        widths: vec![prep.features, arch.hidden, prep.classes],
        lr: if arch.hidden > 100 { 0.01 } else { 0.05 },
        batch: crate::BATCH,
        epochs: if quick || arch.hidden > 100 { 1 } else { 20 },
        seed: 0,
    };
    train_side_by_side(
        prep,
        &setup,
        &[TrainActivation::Poly(PolyActivation::Square)],
        true,
        false,
    )
}

fn run_gelu(
    config: &PartConfig,
    prep: &Prepared,
    arch: &Arch,
    trained: Option<FixedModel>,
) -> Result<Timing> {
    let widths = vec![prep.features, arch.hidden, prep.classes];
    let served = if trained.is_some() {
        "the trained model (same batches as the square network)"
    } else {
        "its Xavier initialization (training failed)"
    };
    let GeluEndpoints {
        server,
        mut client,
        key,
        cfg,
    } = gelu_endpoints(
        config.key_bits,
        config.allow_test_keys,
        ModelSpec::new(widths, Activation::Sigmoid),
        trained,
    )?;
    let all = Dataset::quantize(prep.test_x.view(), &prep.test_y, prep.classes, &cfg.scales)?;
    let mut t = time_gelu(
        &server,
        &mut client,
        &key,
        &all,
        (arch.reps, arch.gelu_batch),
    )?;
    t.note = format!(
        "median of {} single-sample runs, row packing; online: the {} obfuscators of one inference precomputed by the client; batch with sample packing; server model = {served}; client key prepared once, excluded; {} rayon threads",
        arch.reps,
        client.obfuscators_per_inference(1),
        rayon::current_num_threads()
    );
    Ok(t)
}

/// Times GELU-Net's encrypted inference on the quantized samples `all`: a warm-up, the
/// median of `reps` single samples on the spot and `reps` online (the client's
/// obfuscators of one inference precomputed, timed apart), then one batch of
/// `batch` samples; every prediction checked against the server's model in the clear.
/// The note is left empty for the caller.
///
/// # Errors
/// Inference and model errors.
pub(crate) fn time_gelu(
    server: &Server,
    client: &mut InferenceClient,
    key: &gelunet_paillier::PublicKey,
    all: &Dataset,
    (reps, batch_size): (usize, usize),
) -> Result<Timing> {
    let scales = server.config().scales;
    let n = batch_size.min(all.len());
    let batch = rows(&all.x, 0, n);
    let one = rows(&all.x, 0, 1);
    let model = server.true_model()?;
    let mut ok = true;
    let mut link = InferenceLink::with_key(key.clone());
    // Warm-up (tables, caches), then the timed single-sample runs.
    let (_, p) = gelu_infer(server, client, &mut link, &one)?;
    ok &= p == model.predict(&scales, one.view())?;
    let mut singles = Vec::with_capacity(reps);
    for r in 0..reps {
        let row = rows(&all.x, r % all.len(), 1);
        let (secs, p) = gelu_infer(server, client, &mut link, &row)?;
        ok &= p == model.predict(&scales, row.view())?;
        singles.push(secs);
    }
    // Online: the client's obfuscators for one inference computed beforehand.
    let per = client.obfuscators_per_inference(1);
    let (mut online, mut offline) = (Vec::new(), Vec::new());
    for r in 0..reps {
        let row = rows(&all.x, r % all.len(), 1);
        let t = Instant::now();
        client.precompute_obfuscators(per);
        offline.push(t.elapsed().as_secs_f64());
        let (secs, p) = gelu_infer(server, client, &mut link, &row)?;
        ok &= p == model.predict(&scales, row.view())?;
        online.push(secs);
    }
    // Preprocessed: the layers of one inference computed beforehand on one-time masks.
    let (mut pre_online, mut pre_offline) = (Vec::new(), Vec::new());
    for r in 0..reps {
        let row = rows(&all.x, r % all.len(), 1);
        pre_offline.push(gelu_prepare(server, client, &mut link)?);
        let (secs, p) = gelu_infer(server, client, &mut link, &row)?;
        ok &= p == model.predict(&scales, row.view())?;
        ok &= client.preparations_ready() == 0 && link.held() == 0;
        pre_online.push(secs);
    }
    let (batch_secs, p) = gelu_infer(server, client, &mut link, &batch)?;
    ok &= p == model.predict(&scales, batch.view())?;
    let mut t = Timing::measured(singles, (online, offline), (n, batch_secs), ok);
    t.preprocessed_single_secs = Some(median(pre_online));
    t.preprocessing_secs = Some(median(pre_offline));
    Ok(t)
}

fn run_bfv(prep: &Prepared, arch: &Arch, r: &SideBySide) -> Result<(Timing, BfvDescription, u32)> {
    // The CryptoNets network: the square-activation network trained in plaintext.
    let square = r
        .floats
        .first()
        .ok_or_else(|| BenchError::Check("no square network".into()))?;
    let (net, bound, f, cfg) = deploy_square(square.net(), prep.max_abs_feature(), 8192)?;
    let mut ctx = BfvContext::new(&cfg, [11u8; 32])?;
    let model = SquareNetBfv::new(&net, &ctx.server_key(), bound)?;
    let x = net.quantize_inputs(&prep.test_x)?;
    let n = x.nrows().min(ctx.slots());
    let batch = rows(&x, 0, n);
    let mut ok = true;
    let mut singles = Vec::new();
    for r in 0..arch.reps.min(3) {
        let row = rows(&x, r % n, 1);
        let (secs, good) = bfv_time(&mut ctx, &model, &net, &row, bound)?;
        ok &= good;
        singles.push(secs);
    }
    // Online: the encryptions of zero for one sample's columns computed beforehand.
    let (mut online, mut offline) = (Vec::new(), Vec::new());
    for r in 0..arch.reps.min(3) {
        let row = rows(&x, r % n, 1);
        let t = Instant::now();
        ctx.precompute_encryptions(row.ncols())?;
        offline.push(t.elapsed().as_secs_f64());
        let (secs, good) = bfv_time(&mut ctx, &model, &net, &row, bound)?;
        ok &= good;
        online.push(secs);
    }
    let (batch_secs, good) = bfv_time(&mut ctx, &model, &net, &batch, bound)?;
    ok &= good;
    #[allow(clippy::cast_precision_loss)]
    let full = batch_secs / ctx.slots() as f64;
    Ok((
        Timing {
            full_batch_per_sample_secs: Some(full),
            note: format!(
                "one sample per slot (CryptoNets layout): any batch of up to {} samples costs the same, i.e. {} per sample when all slots are used; online: the encryptions of zero for one sample's columns precomputed; fhe.rs, encryption and neurons in parallel on {} rayon threads",
                ctx.slots(),
                crate::report_ms(full),
                rayon::current_num_threads()
            ),
            ..Timing::measured(singles, (online, offline), (n, batch_secs), ok)
        },
        ctx.describe(),
        f,
    ))
}

/// Runs part 4.
///
/// # Errors
/// Data and configuration errors (a scheme that fails is recorded in its row).
pub fn run(config: &PartConfig, log: &dyn Fn(&str)) -> Result<InferenceReport> {
    let mut archs = vec![Arch {
        model: "Dense(12) on Iris (4-12-3)",
        dataset: "iris",
        hidden: 12,
        gelu_batch: 30,
        reps: if config.quick { 3 } else { 9 },
        paper_secs: 0.281,
    }];
    if !config.quick {
        archs.push(Arch {
            model: "Dense(300) on MNIST (784-300-10)",
            dataset: "mnist",
            hidden: 300,
            gelu_batch: 64,
            reps: 1,
            paper_secs: 107.4,
        });
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let real_keys = config.key_bits >= gelunet_paillier::MIN_KEY_BITS;
    for arch in &archs {
        let prep = prepare(
            &config.data_dir,
            arch.dataset,
            0,
            crate::CLIENTS,
            crate::mnist_limits(config.quick),
        )?;
        log(&format!("inference: {} training both networks", arch.model));
        let trained = train_models(&prep, arch, config.quick);
        log(&format!("inference: {} GELU-Net", arch.model));
        let reference = trained.as_ref().ok().and_then(|t| t.reference.clone());
        let (gelu, gelu_error) = match run_gelu(config, &prep, arch, reference) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        log(&format!("inference: {} CryptoNets (BFV)", arch.model));
        let bfv_run = trained
            .as_ref()
            .map_err(|e| BenchError::Check(e.to_string()))
            .and_then(|t| run_bfv(&prep, arch, t));
        let (bfv, bfv_error, params, scale) = match bfv_run {
            Ok((t, d, f)) => (Some(t), None, Some(d), Some(f)),
            Err(e) => (None, Some(e.to_string()), None, None),
        };
        let latency_ratio = match (&gelu, &bfv) {
            (Some(g), Some(b)) => Some(b.single_secs / g.single_secs),
            _ => None,
        };
        let online_latency_ratio = match (&gelu, &bfv) {
            (Some(g), Some(b)) => Some(b.online_single_secs / g.online_single_secs),
            _ => None,
        };
        let preprocessed_latency_ratio = match (&gelu, &bfv) {
            (Some(g), Some(b)) => g.preprocessed_single_secs.map(|p| b.online_single_secs / p),
            _ => None,
        };
        let throughput_ratio = match (&gelu, &bfv) {
            (Some(g), Some(b)) => Some(b.batch_per_sample_secs / g.batch_per_sample_secs),
            _ => None,
        };
        if let Some(g) = &gelu {
            let (limit, what) = if arch.hidden > 100 {
                (10.0, "10 s")
            } else {
                (0.030, "30 ms")
            };
            targets.push((
                format!(
                    "GELU-Net single-sample {} under {what} at {} bits: {} (online: {})",
                    arch.model,
                    config.key_bits,
                    crate::report_ms(g.single_secs),
                    crate::report_ms(g.online_single_secs)
                ),
                real_keys.then_some(g.single_secs < limit),
            ));
        }
        if let Some(r) = latency_ratio {
            targets.push((
                format!(
                    "{}: single-sample latency at least 14× better than BFV: {r:.1}×",
                    arch.model
                ),
                real_keys.then_some(r >= 14.0),
            ));
        }
        if let Some(r) = online_latency_ratio {
            targets.push((
                format!(
                    "{}: online single-sample latency (encryption randomness precomputed by both) at least 14× better than BFV: {r:.1}×",
                    arch.model
                ),
                real_keys.then_some(r >= 14.0),
            ));
        }
        if let Some(r) = preprocessed_latency_ratio {
            targets.push((
                format!(
                    "{}: single-sample latency with the layers preprocessed (docs/DESIGN.md \"Preprocessed inference\") at least 14× better than BFV online: {r:.1}×",
                    arch.model
                ),
                real_keys.then_some(r >= 14.0),
            ));
        }
        let throughput_ratio_full_bfv = match (&gelu, &bfv) {
            (Some(g), Some(b)) => b
                .full_batch_per_sample_secs
                .map(|f| f / g.batch_per_sample_secs),
            _ => None,
        };
        rows.push(InferenceRow {
            model: arch.model.to_string(),
            widths: vec![prep.features, arch.hidden, prep.classes],
            gelu,
            gelu_error,
            bfv,
            bfv_error,
            bfv_parameters: params,
            square_scale_bits: scale,
            latency_ratio,
            online_latency_ratio,
            preprocessed_latency_ratio,
            throughput_ratio,
            throughput_ratio_full_bfv,
            paper_secs: Some(arch.paper_secs),
        });
    }
    Ok(InferenceReport {
        key_bits: config.key_bits,
        rows,
        targets,
        plot: None,
        threads: rayon::current_num_threads(),
    })
}
