//! What conv layers disclose (issue #15; `docs/DESIGN.md` "Convolutional layers", last
//! bullet): a client recovers the first conv layer's kernels from **one** sample.
//!
//! In GELU-Net the client, after removing its masks, learns the pre-activations of every
//! layer, `z = conv(a, W) + b`, and knows its own input `a`. Weight sharing gives, per
//! filter `f`, one equation per output position `p` in the `c·k·k + 1` unknowns of its
//! kernel and bias:
//!
//! ```text
//! z[f, p] = Σ_{(ch,u) ∈ taps(p)} W[f, ch, u]·a[ch, p·s + u] + b[f]
//! ```
//!
//! `oh·ow` equations (784 for LeNet-5's first layer, 169 for CryptoNets' `conv1`) against
//! 26 unknowns: one sample over-determines the kernel, and rounding the least-squares
//! solution ([`lstsq`]) to the fixed-point grid gives the true integer kernel. The design
//! matrix is built from protocol's [`ConvGeometry::taps_of`], the index map the server's
//! and the client's convolutions walk. A dense layer is the `1×1` convolution of the
//! flattened input (`gelunet_protocol::conv_net`), so the same solver on a dense row
//! shows the contrast: 1 equation in `n + 1` unknowns, rank 1, not recoverable from one
//! sample (the forward bound `d·B ≤ min fan-in` of paper §4.1, Prop. 2 protects it).

use gelunet_protocol::arch::{Arch, Op};
use gelunet_protocol::conv::{conv2d, ConvGeometry, Padding, Shape};
use gelunet_protocol::conv_net::ConvNet;
use gelunet_protocol::{LayerParams, Scales, ValueKind};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::linalg::lstsq;
use crate::{data, AttackError, Result};

/// Relative rank threshold of the least-squares solves.
pub const RCOND: f64 = 1e-12;

/// MNIST's input shape, `1 × 28 × 28`.
pub const MNIST_SHAPE: Shape = Shape {
    channels: 1,
    height: 28,
    width: 28,
};

/// Where the client's one sample comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSource {
    /// The first MNIST training image ([`data::load`]) from this directory; if it cannot
    /// be loaded (a dataset error, e.g. missing files), [`InputSource::Random`] (the
    /// report says which was used).
    MnistOrRandom(std::path::PathBuf),
    /// A seeded uniform image in `[0, 1]` (`ChaCha20Rng::seed_from_u64(seed ^ 0x1)`).
    Random,
}

/// Settings of the kernel-extraction attack.
#[derive(Clone, Debug)]
pub struct KernelExtractionSetup {
    /// The architecture attacked (`lenet5` by default on the command line); its first
    /// weight layer must be a convolution.
    pub arch: Arch,
    /// The sample.
    pub input: InputSource,
    /// Seed of the net's weights and biases (and of a random input).
    pub seed: u64,
    /// Fixed-point scales (weights at `2^fw`, inputs at `2^fa`, biases and `z` at
    /// `2^(fa+fw)`).
    pub scales: Scales,
}

/// One filter's (or dense row's) recovery.
#[derive(Clone, Debug, Serialize)]
pub struct FilterRecovery {
    /// Equations: output positions of the filter (`oh·ow`; 1 for a dense row).
    pub equations: usize,
    /// Unknowns: `c·k·k` weights and the bias.
    pub unknowns: usize,
    /// Numerical rank of the design matrix at [`RCOND`].
    pub rank: usize,
    /// `max |Ŵ − W|` over the kernel, in real weight units (the grid step is `2^−fw`).
    pub max_weight_error: f64,
    /// `|b̂ − b|`, in real units.
    pub bias_error: f64,
    /// Whether `round(Ŵ·2^fw)` equals the true integer kernel and `z − conv(a, round(Ŵ))`
    /// is the true integer bias at every position.
    pub exact: bool,
}

/// A layer's recovery: every filter's.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecovery {
    /// Per filter (per row for a dense layer).
    pub filters: Vec<FilterRecovery>,
    /// The recovered kernel rounded to the grid, `f × (c·k·k)` at `2^fw`.
    #[serde(skip)]
    pub w: Array2<i128>,
    /// The recovered biases at `2^(fa+fw)`: `z − conv(a, Ŵ)` at each filter's first
    /// position (exact once `Ŵ` is).
    #[serde(skip)]
    pub b: Array1<i128>,
}

impl LayerRecovery {
    /// Every filter recovered exactly.
    pub fn exact(&self) -> bool {
        self.filters.iter().all(|f| f.exact)
    }
}

/// The attack's results.
#[derive(Clone, Debug, Serialize)]
pub struct KernelExtractionReport {
    /// The architecture (canonical syntax).
    pub arch: String,
    /// The sample: `mnist train[0]` or `uniform [0,1], seed N`.
    pub input: String,
    /// Seed of the net.
    pub seed: u64,
    /// The first conv layer's geometry, e.g. `conv 1×28×28 → 6×28×28, k = 5`.
    pub layer: String,
    /// Its recovery from the one sample.
    pub conv: LayerRecovery,
    /// The first conv layer recovered exactly (every filter).
    pub recovered_exactly: bool,
    /// The true first-layer parameters the recovery is scored against (`w` at `2^fw`,
    /// `b` at `2^(fa+fw)`).
    #[serde(skip)]
    pub truth: LayerParams,
    /// The contrast: a dense layer of 10 rows on the same flattened input (a dense
    /// GELU-Net's layer 1), from the same one-sample view.
    pub dense: LayerRecovery,
}

/// Solves every filter of `g` for its kernel and bias from one sample's `a` (`c·h·w` at
/// `2^fa`) and `z = conv(a, W) + b` (`f·oh·ow` at `2^(fa+fw)`), by least squares over
/// its output positions, and scores it against the true `truth`.
///
/// # Errors
/// [`AttackError::Invalid`] if the lengths of `a`, `z` or `truth` disagree with `g`.
pub fn recover_layer(
    g: &ConvGeometry,
    scales: &Scales,
    a: &[i128],
    z: &[i128],
    truth: &LayerParams,
) -> Result<LayerRecovery> {
    let positions = g.output().height * g.output().width;
    let n = g.kernel_len() / g.filters();
    if a.len() != g.input_len()
        || z.len() != g.output_len()
        || truth.w.dim() != (g.filters(), n)
        || truth.b.len() != g.filters()
    {
        return Err(AttackError::Invalid(format!(
            "kernel extraction: input {} (want {}), z {} (want {}), kernel {:?} (want {:?})",
            a.len(),
            g.input_len(),
            z.len(),
            g.output_len(),
            truth.w.dim(),
            (g.filters(), n)
        )));
    }
    let fa = 2f64.powi(scales.fa as i32);
    let fw = 2f64.powi(scales.fw as i32);
    let fz = fa * fw;
    let mut w = Array2::<i128>::zeros((g.filters(), n));
    let mut b = Array1::<i128>::zeros(g.filters());
    let mut filters = Vec::with_capacity(g.filters());
    for f in 0..g.filters() {
        // Row p: the taps of output (f, p), then 1 for the bias.
        let mut m = Array2::<f64>::zeros((positions, n + 1));
        let mut rhs = Array1::<f64>::zeros(positions);
        for p in 0..positions {
            let o = f * positions + p;
            for t in g.taps_of(o) {
                m[[p, t.kernel - f * n]] = a[t.input] as f64 / fa;
            }
            m[[p, n]] = 1.0;
            rhs[p] = z[o] as f64 / fz;
        }
        let sol = lstsq(m.view(), rhs.view(), RCOND);
        let mut max_err = 0f64;
        let mut exact = true;
        for j in 0..n {
            let t = truth.w[[f, j]];
            max_err = max_err.max((sol.x[j] - t as f64 / fw).abs());
            w[[f, j]] = (sol.x[j] * fw).round() as i128;
            exact &= w[[f, j]] == t;
        }
        filters.push(FilterRecovery {
            equations: positions,
            unknowns: n + 1,
            rank: sol.rank,
            max_weight_error: max_err,
            bias_error: (sol.x[n] - truth.b[f] as f64 / fz).abs(),
            exact,
        });
    }
    // The bias on its finer grid 2^(fa+fw) is beyond f64's 53 bits; with the kernel on
    // its grid, z − conv(a, Ŵ) gives it exactly, the same value at every position.
    let flat: Vec<i128> = w.iter().copied().collect();
    // A wildly wrong kernel (an underdetermined system) may overflow: not exact.
    let rest = conv2d(g, a, &flat, &vec![0; g.filters()]).ok();
    for (f, fr) in filters.iter_mut().enumerate() {
        let z = &z[f * positions..(f + 1) * positions];
        let diffs: Option<Vec<i128>> = rest.as_ref().and_then(|rest| {
            let r = &rest[f * positions..(f + 1) * positions];
            z.iter().zip(r).map(|(z, r)| z.checked_sub(*r)).collect()
        });
        match diffs {
            Some(d) => {
                b[f] = d[0];
                fr.exact &= b[f] == truth.b[f] && d.iter().all(|&x| x == b[f]);
            }
            None => fr.exact = false,
        }
    }
    Ok(LayerRecovery { filters, w, b })
}

/// The client's one sample at `2^fa`, and its description.
fn sample(setup: &KernelExtractionSetup, shape: Shape) -> Result<(Vec<i128>, String)> {
    let pixels: (Vec<f64>, String) = match &setup.input {
        InputSource::MnistOrRandom(dir) => match data::load("mnist", dir, 1, setup.seed) {
            Ok(d) => (d.x.row(0).to_vec(), "mnist train[0]".into()),
            Err(AttackError::Dataset(_)) => random(setup.seed, shape),
            Err(e) => return Err(e),
        },
        InputSource::Random => random(setup.seed, shape),
    };
    if pixels.0.len() != shape.len() {
        return Err(AttackError::Invalid(format!(
            "sample of {} values for input {shape}",
            pixels.0.len()
        )));
    }
    let a = pixels
        .0
        .iter()
        .map(|&x| setup.scales.encode(ValueKind::Activation, x))
        .collect::<gelunet_protocol::Result<Vec<_>>>()?;
    Ok((a, pixels.1))
}

/// A seeded uniform image in `[0, 1]` of `shape`.
fn random(seed: u64, shape: Shape) -> (Vec<f64>, String) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1);
    (
        (0..shape.len()).map(|_| rng.gen_range(0.0..=1.0)).collect(),
        format!("uniform [0,1], seed {seed}"),
    )
}

/// The net of `arch` on `shape` (seeded Xavier weights, [`ConvNet::init`]) with seeded
/// nonzero biases `U(−0.1, 0.1)` so that the bias is a real unknown; returns its first
/// weight layer's geometry, parameters, and whether it is a convolution.
fn first_layer(
    arch: &Arch,
    shape: Shape,
    scales: &Scales,
    seed: u64,
) -> Result<(ConvGeometry, LayerParams, bool)> {
    let mut net = ConvNet::init(arch, shape, scales, seed)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x2);
    let mut params = net.params().to_vec();
    for p in &mut params {
        for b in p.b.iter_mut() {
            *b = scales.encode(ValueKind::Bias, rng.gen_range(-0.1..0.1))?;
        }
    }
    net.set_params(scales, params)?;
    let g = match net.network().layers.iter().find_map(|l| match l.op {
        Op::Conv(g) => Some(Ok((g, true))),
        Op::Dense { inputs, units } => Some(
            ConvGeometry::new(inputs, 1, 1, units, 1, 1, Padding::NONE)
                .map(|g| (g, false))
                .map_err(gelunet_protocol::Error::from),
        ),
        _ => None,
    }) {
        Some(g) => g?,
        None => return Err(AttackError::Invalid("no weight layer".into())),
    };
    let (g, conv) = g;
    Ok((g, net.params()[0].clone(), conv))
}

/// Runs the attack: the client's view of the first conv layer (its input `a` and
/// `z = conv2d(a, W) + b`, exactly what it decrypts and unmasks), the recovery, and the
/// dense contrast (a `dense:10` layer on the same input).
///
/// # Errors
/// [`AttackError::Protocol`] if the architecture does not fit `1×28×28` (an
/// [`gelunet_protocol::arch::ArchError`]) or a value is out of range;
/// [`AttackError::Invalid`] if its first weight layer is not a convolution; dataset
/// errors reading MNIST.
pub fn run_experiment(setup: &KernelExtractionSetup) -> Result<KernelExtractionReport> {
    let shape = MNIST_SHAPE;
    let (g, truth, is_conv) = first_layer(&setup.arch, shape, &setup.scales, setup.seed)?;
    if !is_conv {
        return Err(AttackError::Invalid(format!(
            "{}: the first weight layer is dense, not a convolution",
            setup.arch
        )));
    }
    let (a, input) = sample(setup, shape)?;
    let view = |g: &ConvGeometry, p: &LayerParams| -> Result<Vec<i128>> {
        let w = p.w.iter().copied().collect::<Vec<_>>();
        Ok(conv2d(g, &a, &w, &p.b.to_vec())?)
    };
    let z = view(&g, &truth)?;
    let conv = recover_layer(&g, &setup.scales, &a, &z, &truth)?;
    let dense_arch: Arch = "dense:10".parse().map_err(gelunet_protocol::Error::from)?;
    let (gd, dtruth, _) = first_layer(&dense_arch, shape, &setup.scales, setup.seed)?;
    let zd = view(&gd, &dtruth)?;
    let dense = recover_layer(&gd, &setup.scales, &a, &zd, &dtruth)?;
    Ok(KernelExtractionReport {
        arch: setup.arch.to_string(),
        input,
        seed: setup.seed,
        layer: format!(
            "conv {} → {}, k = {}, stride {}",
            g.input(),
            g.output(),
            g.kernel(),
            g.stride()
        ),
        recovered_exactly: conv.exact(),
        conv,
        truth,
        dense,
    })
}

/// Renders the report as a markdown table (one row per conv filter, then the dense row).
pub fn render(r: &KernelExtractionReport) -> String {
    let mut s = format!(
        "kernel extraction from one sample's client view z = conv(a, W) + b: {}, seed {}, input {}\n\
         first layer {}; recovered exactly: {}\n\n\
         | filter | equations | unknowns | rank | max abs error of W (weight units) | bias error | exact |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        r.arch, r.seed, r.input, r.layer, if r.recovered_exactly { "yes" } else { "no" }
    );
    let row = |name: String, f: &FilterRecovery| {
        format!(
            "| {name} | {} | {} | {} | {:.2e} | {:.2e} | {} |\n",
            f.equations,
            f.unknowns,
            f.rank,
            f.max_weight_error,
            f.bias_error,
            if f.exact { "yes" } else { "no" }
        )
    };
    for (i, f) in r.conv.filters.iter().enumerate() {
        s.push_str(&row(format!("conv {i}"), f));
    }
    if let Some(f) = r.dense.filters.first() {
        s.push_str(&row(
            format!("dense row 0 (of {})", r.dense.filters.len()),
            f,
        ));
    }
    s
}
