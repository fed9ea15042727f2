//! `gelunet infer` and `gelunet serve-model`: encrypted inference with a trained model
//! (paper Alg. 1).
//!
//! A client encrypts its samples under its own key and sends them over QUIC; the server
//! computes every layer's pre-activations on the ciphertexts with the true weights; the
//! client decrypts them, applies the activations and prints the predictions. With
//! `--dataset … --split test` the same train/test split as in training (seed and test
//! fraction stored with the model) is used and the accuracy reported.
//!
//! * `infer --model FILE`: the server runs in this process (loopback QUIC) and the
//!   plaintext model's accuracy is printed beside the encrypted one.
//! * `serve-model --model FILE --state-dir DIR …` serves the model to authenticated
//!   clients on another host and writes `DIR/model-card.json` (the public part: input
//!   standardization, class names, split; no weights); `infer --server ADDR
//!   --server-cert DIR/cert.der --model-card DIR/model-card.json --name … --token …`
//!   queries it. The client never sees the weights.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gelunet_client::{InferenceClient, InferenceConfig};
use gelunet_datasets::{load_by_name, resolve_data_dir, CsvOptions, LoadOptions, MnistOptions};
use gelunet_net::{ServerIdentity, Zeroizing};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use gelunet_shell::client::{run_inference, ClientShellConfig};
use gelunet_shell::server::{run_inference_server, Credential, InferenceShellConfig};
use ndarray::Array2;

use super::model_file::{ModelCard, ModelFile};
use super::opts::{DataArgs, KeyArgs};
use super::{
    bind, load_credentials, load_or_create_identity, progress, read_token, report, resolve_addr,
    runtime, token, ListenArgs, NetArgs,
};

/// Which part of the dataset to classify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// The test split of training (same seed and fraction as the model was trained with).
    Test,
    /// The training split.
    Train,
    /// Every sample.
    All,
}

/// Arguments of `gelunet infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The trained model file (`--model-out` of train/serve): serve it in this process.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    model: Option<PathBuf>,
    /// Query a `gelunet serve-model` server at HOST:PORT instead.
    #[arg(long, requires_all = ["server_cert", "model_card", "name"])]
    server: Option<String>,
    /// The server's certificate (its STATE_DIR/cert.der), pinned.
    #[arg(long, requires = "server")]
    server_cert: Option<PathBuf>,
    /// Name the certificate is valid for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The served model's public card (its STATE_DIR/model-card.json).
    #[arg(long, requires = "server")]
    model_card: Option<PathBuf>,
    /// This client's name, as configured on the server.
    #[arg(long, requires = "server")]
    name: Option<String>,
    /// This client's token (visible in the process list; prefer --token-file).
    #[arg(long, conflicts_with = "token_file", requires = "server")]
    token: Option<String>,
    /// A file holding this client's token (first line).
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Which samples to classify.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Classify at most this many samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Samples per encrypted request.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
    /// Write a JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

/// The JSON report of `gelunet infer`.
#[derive(serde::Serialize)]
struct InferReport {
    model: String,
    dataset: String,
    split: String,
    samples: usize,
    accuracy: f64,
    plaintext_accuracy: Option<f64>,
    predictions: Vec<usize>,
    requests: u64,
    bytes_sent: u64,
    bytes_received: u64,
    key_bits: u64,
    seconds: f64,
    backend: String,
}

/// Loads `model` into a server role (the model's spec and scales, test keys allowed as
/// configured).
fn server_with_model(file: &ModelFile, keys: &KeyArgs) -> Result<Server, String> {
    let mut cfg = ServerConfig::new(file.model.spec.clone(), 0.5, 1);
    cfg.scales = file.scales;
    cfg.insecure = InsecureOptions {
        allow_test_keys: keys.test_keys(),
        allow_unmasked_gradients: false,
    };
    let key = keys
        .generate(1)?
        .pop()
        .ok_or("key generation gave no key")?;
    Server::with_model(cfg, key, file.model.clone()).map_err(|e| format!("server: {e}"))
}

/// Arguments of `gelunet serve-model`.
#[derive(Debug, clap::Args)]
pub struct ServeModelArgs {
    /// The trained model file to serve (`--model-out` of train/serve).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    endpoint: ListenArgs,
    /// Stop after this many registered client connections have ended (refused ones do
    /// not count; default: serve until killed).
    #[arg(long)]
    max_connections: Option<usize>,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    net: NetArgs,
    /// Errors only.
    #[arg(long)]
    quiet: bool,
}

/// Runs `gelunet serve-model`: loads the model, writes its public card to
/// `STATE_DIR/model-card.json` and answers authenticated inference clients.
///
/// # Errors
/// A refused model file, bad options, key generation, file and transport errors.
pub fn serve_model(args: ServeModelArgs) -> Result<(), String> {
    progress::init_tracing(args.quiet);
    args.keys.validate()?;
    let transport = args.net.transport()?;
    let file = ModelFile::load(&args.model).map_err(|e| e.to_string())?;
    let credentials = load_credentials(&args.endpoint)?;
    let identity = load_or_create_identity(&args.endpoint)?;
    let card_path = args.endpoint.state_dir.join(MODEL_CARD_FILE);
    file.card().save(&card_path).map_err(|e| e.to_string())?;
    let server = Arc::new(server_with_model(&file, &args.keys)?);
    let rt = runtime()?;
    let config = InferenceShellConfig {
        transport: transport.clone(),
        credentials,
        response_timeout: Duration::from_secs(args.net.response_timeout),
        register_timeout: Duration::from_secs(60),
        max_connections: args.max_connections,
    };
    let log = rt.block_on(async {
        let endpoint = bind(&args.endpoint, &identity, &transport, args.quiet)?;
        if !args.quiet {
            println!(
                "serving {} ({} inputs, {} classes); model card {}",
                args.model.display(),
                file.model.spec.inputs(),
                file.model.spec.classes(),
                card_path.display()
            );
        }
        run_inference_server(server, endpoint, config)
            .await
            .map_err(|e| format!("server: {e}"))
    })?;
    if !args.quiet {
        println!(
            "{} connections, {} requests answered, {} refused; {:.2} MiB sent, {:.2} MiB received",
            log.connections,
            log.requests,
            log.refused_requests,
            log.bytes_sent as f64 / 1048576.0,
            log.bytes_received as f64 / 1048576.0
        );
    }
    Ok(())
}

/// The file name of the model card in a `serve-model` state directory.
pub const MODEL_CARD_FILE: &str = "model-card.json";

/// Where `infer` sends its requests.
enum Target {
    /// A server in this process, holding the model file.
    Local(Box<ModelFile>),
    /// A remote `serve-model` server.
    Remote {
        addr: SocketAddr,
        cert: gelunet_net::CertificateDer<'static>,
        token: Zeroizing<String>,
        name: String,
    },
}

/// Runs `gelunet infer`.
///
/// # Errors
/// A refused model file or card (corrupt, truncated, mismatched), data errors, bad
/// options, refusals by a remote server, transport and inference errors.
pub fn infer(args: InferArgs) -> Result<(), String> {
    progress::init_tracing(args.quiet);
    let t0 = Instant::now();
    args.keys.validate()?;
    let transport = args.net.transport()?;
    let (card, target) = match (&args.model, &args.server) {
        (Some(path), None) => {
            let file = ModelFile::load(path).map_err(|e| e.to_string())?;
            (file.card(), Target::Local(Box::new(file)))
        }
        (None, Some(server)) => {
            let card_path = args
                .model_card
                .as_ref()
                .ok_or("--server needs --model-card")?;
            let cert_path = args
                .server_cert
                .as_ref()
                .ok_or("--server needs --server-cert")?;
            let card = ModelCard::load(card_path)?;
            let cert = gelunet_net::load_certificate(cert_path)
                .map_err(|e| format!("--server-cert: {e}"))?;
            let name = args.name.clone().ok_or("--server needs --name")?;
            let token = read_token(args.token.as_ref(), args.token_file.as_ref())?;
            let addr = resolve_addr(server)?;
            (
                card,
                Target::Remote {
                    addr,
                    cert,
                    token,
                    name,
                },
            )
        }
        _ => return Err("pass either --model FILE or --server ADDR".into()),
    };
    let name = args.data.name()?.to_string();
    let dir = resolve_data_dir(args.data.data_dir.as_deref());
    let opts = LoadOptions {
        csv: CsvOptions {
            label_column: args.data.label_column,
            ignore_columns: args.data.ignore_columns.clone(),
            header: args.data.header.then_some(true),
            ..CsvOptions::default()
        },
        mnist: MnistOptions {
            max_train: args.data.max_train,
            max_test: args.data.max_test,
        },
    };
    let loaded = load_by_name(&name, &dir, &opts).map_err(|e| format!("dataset: {e}"))?;
    let (train, test) = loaded
        .into_train_test(card.test_fraction, card.split_seed)
        .map_err(|e| format!("dataset: {e}"))?;
    if train.class_names != card.class_names {
        return Err(format!(
            "the model was trained on classes {:?}, the dataset has {:?}",
            card.class_names, train.class_names
        ));
    }
    if train.n_features() != card.inputs {
        return Err(format!(
            "the model takes {} features, the dataset has {}",
            card.inputs,
            train.n_features()
        ));
    }
    let ds = match args.split {
        SplitArg::Test => test,
        SplitArg::Train => train,
        SplitArg::All => {
            let x = ndarray::concatenate(
                ndarray::Axis(0),
                &[train.features.view(), test.features.view()],
            )
            .map_err(|e| e.to_string())?;
            let mut labels = train.labels.clone();
            labels.extend(&test.labels);
            gelunet_datasets::Dataset::new(
                name.clone(),
                x,
                labels,
                train.class_names.clone(),
                train.feature_names.clone(),
            )
            .map_err(|e| e.to_string())?
        }
    };
    let n = args.limit.unwrap_or(ds.n_samples()).min(ds.n_samples());
    if n == 0 {
        return Err("no samples to classify".into());
    }
    let rows: Vec<usize> = (0..n).collect();
    let ds = ds.select(&rows, "").map_err(|e| e.to_string())?;
    let x: Array2<f64> = card.standardize(&ds.features);
    // Plaintext check (local model only): the same fixed-point model without encryption.
    let plaintext_accuracy = match &target {
        Target::Local(file) => {
            let quantized = report::quantize(
                &gelunet_datasets::Dataset {
                    features: x.clone(),
                    ..ds.clone()
                },
                file.model.spec.classes(),
                &file.scales,
            )?;
            Some(report::accuracy(&file.model, &file.scales, &quantized)?)
        }
        Target::Remote { .. } => None,
    };
    let client_key = args
        .keys
        .generate(1)?
        .pop()
        .ok_or("key generation gave no key")?;
    let allow_test_keys = args.keys.test_keys();
    let batch = args.batch;
    let make = move |hello: &gelunet_protocol::messages::ServerHello| {
        InferenceClient::new(
            InferenceConfig {
                seed: rand::random(),
                allow_test_keys,
                ..InferenceConfig::default()
            },
            client_key,
            hello,
        )
    };
    let client_config = |addr, server_name: String, cert, name, token| ClientShellConfig {
        server: addr,
        server_name,
        pinned_cert: cert,
        transport: transport.clone(),
        name,
        token,
        samples: 0,
        reference: None,
        connect_timeout: Duration::from_secs(30),
        reconnect_attempts: 0,
        reconnect_delay: Duration::from_secs(1),
    };
    let rt = runtime()?;
    let run = match target {
        Target::Local(file) => {
            let server = Arc::new(server_with_model(&file, &args.keys)?);
            let identity =
                ServerIdentity::generate(&["localhost".to_string()]).map_err(|e| e.to_string())?;
            let credential = Credential {
                name: "infer".into(),
                token: Zeroizing::new(token()),
            };
            rt.block_on(async {
                let endpoint = gelunet_net::server_endpoint(
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    &identity,
                    &transport,
                )
                .map_err(|e| e.to_string())?;
                let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
                let server_task = tokio::spawn(run_inference_server(
                    server,
                    endpoint,
                    InferenceShellConfig {
                        transport: transport.clone(),
                        credentials: vec![credential.clone()],
                        response_timeout: Duration::from_secs(args.net.response_timeout),
                        register_timeout: Duration::from_secs(60),
                        max_connections: Some(1),
                    },
                ));
                let cc = client_config(
                    addr,
                    "localhost".into(),
                    identity.certificate().clone(),
                    credential.name.clone(),
                    credential.token.clone(),
                );
                let run = run_inference(make, x, batch, &cc)
                    .await
                    .map_err(|e| format!("inference: {e}"));
                let served = server_task.await;
                let run = run?;
                served
                    .map_err(|e| format!("server task: {e}"))?
                    .map_err(|e| format!("server: {e}"))?;
                Ok::<_, String>(run)
            })?
        }
        Target::Remote {
            addr,
            cert,
            token,
            name: client_name,
        } => {
            let cc = client_config(addr, args.server_name.clone(), cert, client_name, token);
            rt.block_on(run_inference(make, x, batch, &cc))
                .map_err(|e| format!("inference: {e}"))?
        }
    };
    let correct = run
        .predictions
        .iter()
        .zip(&ds.labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = correct as f64 / n as f64;
    if !args.quiet {
        println!("sample\tpredicted\ttrue\tprobability");
        for (i, (&p, &l)) in run.predictions.iter().zip(&ds.labels).enumerate() {
            let class = |c: usize| card.class_names.get(c).cloned().unwrap_or_default();
            println!(
                "{i}\t{}\t{}\t{:.4}",
                class(p),
                class(l),
                run.probabilities.get((i, p)).copied().unwrap_or(0.0)
            );
        }
    }
    let plaintext =
        plaintext_accuracy.map_or(String::new(), |a| format!(" (plaintext model: {a:.4})"));
    println!(
        "accuracy {:.4} ({correct}/{n}) on the {} split of {name}, encrypted with {}-bit keys{plaintext}; \
         {} requests, {:.2} MiB sent, {:.2} MiB received",
        accuracy,
        format!("{:?}", args.split).to_lowercase(),
        args.keys.key_bits,
        run.requests,
        run.bytes_sent as f64 / 1048576.0,
        run.bytes_received as f64 / 1048576.0
    );
    if let Some(path) = &args.report {
        let model = match (&args.model, &args.server) {
            (Some(m), _) => m.display().to_string(),
            (None, Some(s)) => format!("remote {s}"),
            (None, None) => String::new(),
        };
        report::write_json(
            path,
            &InferReport {
                model,
                dataset: name.clone(),
                split: format!("{:?}", args.split).to_lowercase(),
                samples: n,
                accuracy,
                plaintext_accuracy,
                predictions: run.predictions.clone(),
                requests: run.requests,
                bytes_sent: run.bytes_sent,
                bytes_received: run.bytes_received,
                key_bits: args.keys.key_bits,
                seconds: t0.elapsed().as_secs_f64(),
                backend: report::backend().into(),
            },
        )?;
    }
    Ok(())
}
