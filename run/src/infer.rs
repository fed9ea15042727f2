//! `gelunet infer` and `gelunet serve-model`: encrypted inference with a trained model
//! (paper Alg. 1).
//!
//! A client encrypts its samples under its own key and sends them over QUIC; the server
//! computes every layer's pre-activations on the ciphertexts with the true weights; the
//! client decrypts them and applies the activations. With a dataset and
//! [`Split::Test`] the same train/test split as in training (seed and test fraction stored
//! with the model) is used and the accuracy reported. With [`InferConfig::input`] the
//! samples are new, unlabeled rows of a CSV file (`gelunet infer --input FILE.csv`,
//! read by `gelunet_datasets::load_unlabeled_csv`, standardized with the model card's
//! mean and std), and [`InferConfig::output`] receives each sample's class name and
//! probabilities as CSV or JSON ([`write_predictions`]).
//!
//! * [`infer`] with [`InferTarget::Local`]: the server runs in this process (loopback
//!   QUIC) and the plaintext model's accuracy is reported beside the encrypted one.
//! * [`serve_model`] serves the model to authenticated clients on other hosts and writes
//!   `STATE_DIR/model-card.json` (the public part: input standardization, class names,
//!   split; no weights); [`infer`] with [`InferTarget::Remote`] queries it with only that
//!   card, the certificate and a credential. The client never sees the weights.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gelunet_client::{InferenceClient, InferenceConfig};
use gelunet_net::{ServerIdentity, TransportSettings, Zeroizing};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use gelunet_shell::client::{run_inference, ClientShellConfig, InferenceRun};
use gelunet_shell::server::{
    run_inference_server, Credential, InferenceLog, InferenceShellConfig, StrangerLimits,
};
use ndarray::Array2;

use crate::data::DataOptions;
use crate::endpoint::{
    loopback_endpoint, random_token, read_token, resolve_addr, runtime, ListenOptions, Listening,
    NetOptions,
};
use crate::keys::KeyOptions;
use crate::model_file::{ModelCard, ModelFile};
use crate::report::{accuracy, mib, quantize, write_json, InferReport};
use crate::{Result, RunError};

/// The file name of the model card in a `serve-model` state directory.
pub const MODEL_CARD_FILE: &str = "model-card.json";

/// Which part of the dataset to classify. With the `clap` feature it is a
/// `clap::ValueEnum` (`test`, `train`, `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Split {
    /// The test split of training (same seed and fraction as the model was trained with).
    Test,
    /// The training split.
    Train,
    /// Every sample.
    All,
}

impl Split {
    /// Lower-case name (`test`, `train`, `all`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Train => "train",
            Self::All => "all",
        }
    }
}

/// Where [`infer`] sends its requests.
#[derive(Clone)]
pub enum InferTarget {
    /// A server in this process, holding this model file (`--model`).
    Local {
        /// The model file.
        model: PathBuf,
    },
    /// A remote `serve-model` server (`--server`).
    Remote {
        /// Its address, `HOST:PORT`.
        server: String,
        /// Its certificate (its `STATE_DIR/cert.der`), pinned.
        server_cert: PathBuf,
        /// Name the certificate is valid for.
        server_name: String,
        /// The served model's public card (its `STATE_DIR/model-card.json`).
        model_card: PathBuf,
        /// This client's name, as configured on the server.
        name: String,
        /// This client's token, given directly …
        token: Option<Zeroizing<String>>,
        /// … or as the first line of this file.
        token_file: Option<PathBuf>,
    },
}

impl fmt::Debug for InferTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { model } => f.debug_struct("Local").field("model", model).finish(),
            Self::Remote {
                server,
                server_name,
                model_card,
                name,
                ..
            } => f
                .debug_struct("Remote")
                .field("server", server)
                .field("server_name", server_name)
                .field("model_card", model_card)
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

/// The configuration of `gelunet infer`.
#[derive(Clone, Debug)]
pub struct InferConfig {
    /// The model's server.
    pub target: InferTarget,
    /// The dataset to classify (required unless [`InferConfig::input`] is given).
    pub data: DataOptions,
    /// Classify the unlabeled samples of this CSV file instead of a dataset split: one
    /// row per sample, the model card's input features as columns (an optional header
    /// must name them), raw values (the card's standardization is applied).
    pub input: Option<PathBuf>,
    /// Write each sample's predicted class name and class probabilities here: CSV for a
    /// `.csv` path, JSON for `.json` ([`write_predictions`]).
    pub output: Option<PathBuf>,
    /// Which samples.
    pub split: Split,
    /// Classify at most this many samples.
    pub limit: Option<usize>,
    /// Samples per encrypted request.
    pub batch: usize,
    /// Preprocess each sample's layers (one sample per request; `batch` must be 1):
    /// docs/DESIGN.md "Preprocessed inference".
    pub preprocess: bool,
    /// The client's Paillier key (and the local server's).
    pub keys: KeyOptions,
    /// Local model only: serve it with its weights rounded to this many fractional bits
    /// ([`coarsen`]; `None`: as trained). A remote server decides this itself, so it is
    /// refused with [`InferTarget::Remote`].
    pub weight_frac_bits: Option<u32>,
    /// Transport options.
    pub net: NetOptions,
    /// Write the JSON report ([`InferReport`]) here.
    pub report: Option<PathBuf>,
}

/// What [`infer`] found, for printing.
#[derive(Clone, Debug)]
pub struct InferOutcome {
    /// The report (also written to [`InferConfig::report`]).
    pub report: InferReport,
    /// The true class per sample (`None` for unlabeled input).
    pub labels: Option<Vec<usize>>,
    /// Class probabilities per sample (samples × classes).
    pub probabilities: Array2<f64>,
    /// Class names (index = class).
    pub class_names: Vec<String>,
    /// Samples classified correctly.
    pub correct: usize,
}

impl InferOutcome {
    /// One line per sample: index, predicted class, true class (labelled data only),
    /// predicted probability (tab-separated, with a header).
    pub fn predictions_table(&self) -> String {
        let class = |c: usize| self.class_names.get(c).map_or("", String::as_str);
        let mut s = String::from(match self.labels {
            Some(_) => "sample\tpredicted\ttrue\tprobability\n",
            None => "sample\tpredicted\tprobability\n",
        });
        for (i, &p) in self.report.predictions.iter().enumerate() {
            let prob = self.probabilities.get((i, p)).copied().unwrap_or(0.0);
            let truth = match self.labels.as_ref().and_then(|l| l.get(i)) {
                Some(&l) => format!("{}\t", class(l)),
                None => String::new(),
            };
            let _ = writeln!(s, "{i}\t{}\t{truth}{prob:.4}", class(p));
        }
        s
    }
}

/// The summary line `gelunet infer` prints.
impl fmt::Display for InferOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        let plaintext = r
            .plaintext_accuracy
            .map_or(String::new(), |a| format!(" (plaintext model: {a:.4})"));
        let Some(accuracy) = r.accuracy else {
            return writeln!(
                f,
                "classified {} unlabeled samples of {}, encrypted with {}-bit keys; \
                 {} requests, {:.2} MiB sent, {:.2} MiB received{}",
                r.samples,
                r.dataset,
                r.key_bits,
                r.requests,
                mib(r.bytes_sent),
                mib(r.bytes_received),
                latency_clause(r)
            );
        };
        writeln!(
            f,
            "accuracy {:.4} ({}/{}) on the {} split of {}, encrypted with {}-bit keys{plaintext}; \
             {} requests, {:.2} MiB sent, {:.2} MiB received{}",
            accuracy,
            self.correct,
            r.samples,
            r.split,
            r.dataset,
            r.key_bits,
            r.requests,
            mib(r.bytes_sent),
            mib(r.bytes_received),
            latency_clause(r)
        )
    }
}

/// `"; 412.3 ms per request of 1 sample (median; slowest 450.1 ms)"`, and the
/// preparation's median with `--preprocess`; empty when nothing was classified.
fn latency_clause(r: &InferReport) -> String {
    let (Some(median), Some(max)) = (r.median_batch_secs, r.max_batch_secs) else {
        return String::new();
    };
    let ms = |s: f64| format!("{:.1} ms", 1e3 * s);
    let samples = if r.batch == 1 { "sample" } else { "samples" };
    let mut s = format!(
        "; {} per request of {} {samples} (median; slowest {})",
        ms(median),
        r.batch,
        ms(max)
    );
    if let Some(p) = r.median_preparation_secs {
        let _ = write!(s, ", after {} of preparation", ms(p));
    }
    s
}

/// The median of `v` (the upper one of an even count); `None` for no values.
fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// A server role holding `file`'s model (its spec and scales; test keys accepted from
/// clients as `keys` allow).
/// Rounds the weights of `file`'s model to `2^-f` and its biases to `2^-(fa + f)`
/// ([`gelunet_protocol::FixedModel::with_weight_frac_bits`], docs/DESIGN.md "Inference
/// with coarser weights"): the server's exponents get `fw − f` bits shorter, and the model
/// served (and checked in plaintext) is the rounded one. `None` leaves the file as it is.
///
/// # Errors
/// [`RunError::InvalidOption`] for `f = 0` or `f` above the model's `fw`.
pub fn coarsen(file: &mut ModelFile, weight_frac_bits: Option<u32>) -> Result<()> {
    let Some(f) = weight_frac_bits else {
        return Ok(());
    };
    let (model, scales) = file
        .model
        .with_weight_frac_bits(&file.scales, f)
        .map_err(|e| RunError::option("--weight-frac-bits", e.to_string()))?;
    file.model = model;
    file.scales = scales;
    Ok(())
}

fn server_with_model(file: &ModelFile, keys: &KeyOptions) -> Result<Server> {
    let mut cfg = ServerConfig::new(file.model.spec.clone(), 0.5, 1);
    cfg.scales = file.scales;
    cfg.insecure = InsecureOptions {
        allow_test_keys: keys.test_keys(),
        allow_unmasked_gradients: false,
    };
    let key = keys.generate_one()?;
    Ok(Server::with_model(cfg, key, file.model.clone())?)
}

/// The samples of `split` (at most `limit`), with the card's split and checks that the
/// dataset fits the model.
fn load_samples(
    data: &DataOptions,
    card: &ModelCard,
    split: Split,
    limit: Option<usize>,
) -> Result<gelunet_datasets::Dataset> {
    let name = data.name()?.to_string();
    let (train, test) = data.load_split(card.data.test_fraction, card.data.split_seed)?;
    if train.class_names != card.data.class_names {
        return Err(RunError::DataMismatch {
            reason: format!(
                "the model was trained on classes {:?}, the dataset has {:?}",
                card.data.class_names, train.class_names
            ),
        });
    }
    if train.n_features() != card.inputs {
        return Err(RunError::DataMismatch {
            reason: format!(
                "the model takes {} features, the dataset has {}",
                card.inputs,
                train.n_features()
            ),
        });
    }
    let ds = match split {
        Split::Test => test,
        Split::Train => train,
        Split::All => {
            let x = ndarray::concatenate(
                ndarray::Axis(0),
                &[train.features.view(), test.features.view()],
            )
            .map_err(|e| RunError::DataMismatch {
                reason: e.to_string(),
            })?;
            let mut labels = train.labels.clone();
            labels.extend(&test.labels);
            gelunet_datasets::Dataset::new(
                name,
                x,
                labels,
                train.class_names.clone(),
                train.feature_names.clone(),
            )?
        }
    };
    let n = limit.unwrap_or(ds.n_samples()).min(ds.n_samples());
    if n == 0 {
        return Err(RunError::DataMismatch {
            reason: "no samples to classify".into(),
        });
    }
    let rows: Vec<usize> = (0..n).collect();
    Ok(ds.select(&rows, "")?)
}

/// Where [`infer`] sends its requests, once resolved.
enum Resolved {
    /// A server in this process with this model.
    Local(Box<ModelFile>),
    /// A remote server.
    Remote(Box<ClientShellConfig>),
}

/// The shell configuration of an inference client.
fn client_shell(
    addr: SocketAddr,
    server_name: String,
    cert: gelunet_net::CertificateDer<'static>,
    transport: &TransportSettings,
    name: String,
    token: Zeroizing<String>,
) -> ClientShellConfig {
    ClientShellConfig {
        server: addr,
        server_name,
        pinned_cert: cert,
        transport: transport.clone(),
        name,
        token,
        samples: 0,
        reference: None,
        connect_timeout: Duration::from_secs(30),
        reconnect: gelunet_client::ReconnectPolicy::NEVER,
        progress: None,
    }
}

/// Runs `gelunet infer`: classifies the samples with encrypted inference against the
/// target and reports the accuracy (and the plaintext model's, for a local model).
///
/// # Errors
/// [`RunError::ModelFile`] for a refused model file or card (corrupt, truncated,
/// mismatched); [`RunError::DataMismatch`] for data that does not fit the model; bad
/// options; refusals by a remote server, transport and inference errors.
pub fn infer(c: &InferConfig) -> Result<InferOutcome> {
    let t0 = Instant::now();
    c.keys.validate()?;
    let transport = c.net.transport()?;
    if c.batch == 0 {
        return Err(RunError::option("--batch", "must be at least 1"));
    }
    if c.preprocess && c.batch != 1 {
        return Err(RunError::option(
            "--preprocess",
            "prepares one sample per request; it needs a batch of 1",
        ));
    }
    let (card, target) = match &c.target {
        InferTarget::Local { model } => {
            let mut file = ModelFile::load(model)?;
            coarsen(&mut file, c.weight_frac_bits)?;
            (file.card(), Resolved::Local(Box::new(file)))
        }
        InferTarget::Remote { .. } if c.weight_frac_bits.is_some() => {
            return Err(RunError::option(
                "--weight-frac-bits",
                "applies to a local --model only; a remote server chooses its own weights",
            ));
        }
        InferTarget::Remote {
            server,
            server_cert,
            server_name,
            model_card,
            name,
            token,
            token_file,
        } => {
            let card = ModelCard::load(model_card)?;
            let cert = gelunet_net::load_certificate(server_cert)
                .map_err(RunError::net("--server-cert"))?;
            let token = read_token(token.as_ref(), token_file.as_deref())?;
            let addr = resolve_addr(server)?;
            (
                card,
                Resolved::Remote(Box::new(client_shell(
                    addr,
                    server_name.clone(),
                    cert,
                    &transport,
                    name.clone(),
                    token,
                ))),
            )
        }
    };
    let (ds, source) = match &c.input {
        Some(path) => (
            unlabeled_samples(path, &card, c.limit)?,
            path.display().to_string(),
        ),
        None => (
            load_samples(&c.data, &card, c.split, c.limit)?,
            c.data.name()?.to_string(),
        ),
    };
    let labelled = c.input.is_none();
    let x: Array2<f64> = card.standardize(&ds.features);
    // Plaintext check (local model only): the same fixed-point model without encryption.
    let plaintext_accuracy = match &target {
        Resolved::Local(file) => {
            let quantized = quantize(
                &gelunet_datasets::Dataset {
                    features: x.clone(),
                    ..ds.clone()
                },
                file.model.spec.classes(),
                &file.scales,
            )?;
            labelled
                .then(|| accuracy(&file.model, &file.scales, &quantized))
                .transpose()?
        }
        Resolved::Remote(_) => None,
    };
    let client_key = c.keys.generate_one()?;
    let allow_test_keys = c.keys.test_keys();
    let make = move |hello: &gelunet_protocol::messages::ServerHello| {
        InferenceClient::new(
            InferenceConfig {
                randomness: gelunet_protocol::randomness::Randomness::Os,
                allow_test_keys,
                ..InferenceConfig::default()
            },
            client_key,
            hello,
        )
    };
    let rt = runtime()?;
    let run: InferenceRun = match target {
        Resolved::Local(file) => {
            let server = Arc::new(server_with_model(&file, &c.keys)?);
            let identity = ServerIdentity::generate(&["localhost".to_string()])
                .map_err(RunError::net("certificate"))?;
            let credential = Credential {
                name: "infer".into(),
                token: random_token(),
            };
            rt.block_on(async {
                let (endpoint, addr) = loopback_endpoint(&identity, &transport)?;
                let server_task = tokio::spawn(run_inference_server(
                    server,
                    endpoint,
                    InferenceShellConfig {
                        transport: transport.clone(),
                        credentials: vec![credential.clone()],
                        response_timeout: c.net.response(),
                        register_timeout: Duration::from_secs(60),
                        strangers: StrangerLimits::default(),
                        max_connections: Some(1),
                    },
                ));
                let cc = client_shell(
                    addr,
                    "localhost".into(),
                    identity.certificate().clone(),
                    &transport,
                    credential.name.clone(),
                    credential.token.clone(),
                );
                let run = run_inference(make, x, (c.batch, c.preprocess), &cc)
                    .await
                    .map_err(RunError::Inference);
                let served = server_task.await;
                let run = run?;
                served
                    .map_err(|source| RunError::Task {
                        what: "server",
                        source,
                    })?
                    .map_err(RunError::ServerShell)?;
                Ok::<_, RunError>(run)
            })?
        }
        Resolved::Remote(cc) => rt
            .block_on(run_inference(make, x, (c.batch, c.preprocess), &cc))
            .map_err(RunError::Inference)?,
    };
    let n = ds.n_samples();
    let correct = run
        .predictions
        .iter()
        .zip(&ds.labels)
        .filter(|(p, l)| p == l)
        .count();
    let report = InferReport {
        model: match &c.target {
            InferTarget::Local { model } => model.display().to_string(),
            InferTarget::Remote { server, .. } => format!("remote {server}"),
        },
        dataset: source,
        split: if labelled { c.split.name() } else { "input" }.into(),
        samples: n,
        accuracy: labelled.then(|| correct as f64 / n as f64),
        plaintext_accuracy,
        predictions: run.predictions.clone(),
        requests: run.requests,
        prepared_layers: run.prepared,
        bytes_sent: run.bytes_sent,
        bytes_received: run.bytes_received,
        key_bits: c.keys.key_bits,
        batch: c.batch,
        median_batch_secs: median(&run.batch_secs),
        max_batch_secs: run.batch_secs.iter().copied().reduce(f64::max),
        median_preparation_secs: median(&run.preparation_secs),
        seconds: t0.elapsed().as_secs_f64(),
        backend: gelunet_paillier::BACKEND.into(),
    };
    if let Some(path) = &c.report {
        write_json(path, &report)?;
    }
    let outcome = InferOutcome {
        report,
        labels: labelled.then(|| ds.labels.clone()),
        probabilities: run.probabilities,
        class_names: card.data.class_names,
        correct,
    };
    if let Some(path) = &c.output {
        write_predictions(path, &outcome)?;
    }
    Ok(outcome)
}

/// The unlabeled samples of `path` (at most `limit`), as a dataset with placeholder
/// labels (class 0) that nothing reads.
fn unlabeled_samples(
    path: &std::path::Path,
    card: &ModelCard,
    limit: Option<usize>,
) -> Result<gelunet_datasets::Dataset> {
    let names: Vec<String> = if card.data.feature_names.len() == card.inputs {
        card.data.feature_names.clone()
    } else {
        (0..card.inputs).map(|j| format!("x{j}")).collect()
    };
    let x = gelunet_datasets::load_unlabeled_csv(path, &names, b',')?;
    let n = limit.unwrap_or(x.nrows()).min(x.nrows());
    if n == 0 {
        return Err(RunError::DataMismatch {
            reason: "no samples to classify".into(),
        });
    }
    let rows: Vec<usize> = (0..n).collect();
    Ok(gelunet_datasets::Dataset::new(
        "input",
        x.select(ndarray::Axis(0), &rows),
        vec![0; n],
        card.data.class_names.clone(),
        names,
    )?)
}

/// One sample of a `--output` JSON file.
#[derive(serde::Serialize)]
struct PredictionRow<'a> {
    /// 0-based sample index (data row of the input, header and blank lines not counted).
    sample: usize,
    /// Predicted class name.
    class: &'a str,
    /// Probability per class, in the order of `classes`.
    probabilities: Vec<f64>,
}

/// A `--output` JSON file.
#[derive(serde::Serialize)]
struct PredictionsFile<'a> {
    /// Class names (the order of every `probabilities`).
    classes: &'a [String],
    /// One entry per sample, in input order.
    predictions: Vec<PredictionRow<'a>>,
}

/// Writes the predictions of `outcome` to `path`, atomically: for a `.csv` path a header
/// `sample,predicted,<class names>…` and one row per sample (index, predicted class name,
/// one probability per class); for a `.json` path `{"classes": […], "predictions":
/// [{"sample", "class", "probabilities"}, …]}`. Probabilities are printed in full
/// (shortest round-trip form).
///
/// # Errors
/// [`RunError::InvalidOption`] (`--output`) for another extension;
/// [`RunError::ModelFile`] when the file cannot be written.
pub fn write_predictions(path: &std::path::Path, outcome: &InferOutcome) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let class = |c: usize| outcome.class_names.get(c).map_or("", String::as_str);
    let rows = outcome.report.predictions.iter().enumerate();
    let probs = |i: usize| outcome.probabilities.row(i).to_vec();
    match ext.as_deref() {
        Some("csv") => {
            let mut s = String::from("sample,predicted");
            for name in &outcome.class_names {
                s.push(',');
                s.push_str(&csv_field(name));
            }
            s.push('\n');
            for (i, &p) in rows {
                let _ = write!(s, "{i},{}", csv_field(class(p)));
                for v in probs(i) {
                    let _ = write!(s, ",{v}");
                }
                s.push('\n');
            }
            crate::model_file::write_atomic(path, s.as_bytes())?;
            Ok(())
        }
        Some("json") => write_json(
            path,
            &PredictionsFile {
                classes: &outcome.class_names,
                predictions: rows
                    .map(|(i, &p)| PredictionRow {
                        sample: i,
                        class: class(p),
                        probabilities: probs(i),
                    })
                    .collect(),
            },
        ),
        _ => Err(RunError::option(
            "--output",
            format!(
                "{}: the file name must end in .csv or .json",
                path.display()
            ),
        )),
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The configuration of `gelunet serve-model`.
#[derive(Clone, Debug)]
pub struct ServeModelConfig {
    /// The trained model file to serve.
    pub model: PathBuf,
    /// Address, state directory, certificate names and the accepted clients.
    pub listen: ListenOptions,
    /// Stop after this many registered client connections have ended (refused ones do
    /// not count; `None`: serve until killed).
    pub max_connections: Option<usize>,
    /// The server's Paillier key.
    pub keys: KeyOptions,
    /// Serve the model with its weights rounded to this many fractional bits
    /// ([`coarsen`]; `None`: as trained).
    pub weight_frac_bits: Option<u32>,
    /// Transport options.
    pub net: NetOptions,
}

/// What a model server announces once it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingModel {
    /// The endpoint.
    pub listening: Listening,
    /// The model's input width.
    pub inputs: usize,
    /// Its number of classes.
    pub classes: usize,
    /// Where its public card was written.
    pub model_card: PathBuf,
    /// The model file served.
    pub model: PathBuf,
}

/// Two lines, as `gelunet serve-model` prints them: where it listens, then
/// `serving MODEL (I inputs, C classes); model card PATH`.
impl fmt::Display for ServingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.listening)?;
        writeln!(
            f,
            "serving {} ({} inputs, {} classes); model card {}",
            self.model.display(),
            self.inputs,
            self.classes,
            self.model_card.display()
        )
    }
}

/// Runs `gelunet serve-model`: loads the model, writes its public card to
/// `STATE_DIR/model-card.json` and answers authenticated inference clients; `on_listen`
/// is called once the endpoint is bound.
///
/// # Errors
/// [`RunError::ModelFile`] for a refused model file; bad options, identity, key
/// generation, file and transport errors.
pub fn serve_model(
    c: &ServeModelConfig,
    on_listen: &(dyn Fn(&ServingModel) + Sync),
) -> Result<InferenceLog> {
    c.keys.validate()?;
    let transport = c.net.transport()?;
    let mut file = ModelFile::load(&c.model)?;
    coarsen(&mut file, c.weight_frac_bits)?;
    let credentials = c.listen.load_credentials()?;
    let identity = c.listen.load_or_create_identity()?;
    let card_path = c.listen.state_dir.join(MODEL_CARD_FILE);
    file.card().save(&card_path)?;
    let server = Arc::new(server_with_model(&file, &c.keys)?);
    let rt = runtime()?;
    let config = InferenceShellConfig {
        transport: transport.clone(),
        credentials,
        response_timeout: c.net.response(),
        register_timeout: Duration::from_secs(60),
        strangers: StrangerLimits::default(),
        max_connections: c.max_connections,
    };
    rt.block_on(async {
        let (endpoint, listening) = c.listen.bind(&identity, &transport)?;
        on_listen(&ServingModel {
            listening,
            inputs: file.model.spec.inputs(),
            classes: file.model.spec.classes(),
            model_card: card_path.clone(),
            model: c.model.clone(),
        });
        run_inference_server(server, endpoint, config)
            .await
            .map_err(RunError::ServerShell)
    })
}
