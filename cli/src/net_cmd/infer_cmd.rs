//! `gelunet infer`: encrypted inference with a trained model (paper Alg. 1).
//!
//! The model file is loaded into a server; a client encrypts its samples under its own
//! key and sends them over loopback QUIC; the server computes every layer's
//! pre-activations on the ciphertexts with the true weights; the client decrypts them,
//! applies the activations and prints the predictions. With `--dataset … --split test`
//! the same train/test split as in training (seed and test fraction stored in the model
//! file) is used and the accuracy reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gelunet_client::quic::{run_inference, ClientShellConfig};
use gelunet_client::{InferenceClient, InferenceConfig};
use gelunet_datasets::{load_by_name, resolve_data_dir, CsvOptions, LoadOptions, MnistOptions};
use gelunet_net::{ServerIdentity, Zeroizing};
use gelunet_server::quic::{run_inference_server, Credential, InferenceShellConfig};
use gelunet_server::{InsecureOptions, Server, ServerConfig};
use ndarray::Array2;

use super::model_file::ModelFile;
use super::opts::{DataArgs, KeyArgs};
use super::{progress, report, runtime, token, NetArgs};

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
    /// The trained model file (`--model-out` of train/serve).
    #[arg(long)]
    model: PathBuf,
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
    plaintext_accuracy: f64,
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

/// Runs `gelunet infer`.
///
/// # Errors
/// A refused model file (corrupt, truncated, mismatched), data errors, bad options,
/// transport and inference errors.
pub fn infer(args: InferArgs) -> Result<(), String> {
    progress::init_tracing(args.quiet);
    let t0 = Instant::now();
    args.keys.validate()?;
    let transport = args.net.transport()?;
    let file = ModelFile::load(&args.model).map_err(|e| e.to_string())?;
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
        .into_train_test(file.test_fraction, file.split_seed)
        .map_err(|e| format!("dataset: {e}"))?;
    if train.class_names != file.class_names {
        return Err(format!(
            "the model was trained on classes {:?}, the dataset has {:?}",
            file.class_names, train.class_names
        ));
    }
    if train.n_features() != file.model.spec.inputs() {
        return Err(format!(
            "the model takes {} features, the dataset has {}",
            file.model.spec.inputs(),
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
    let x: Array2<f64> = file.standardize(&ds.features);
    // Plaintext check: the same fixed-point model without encryption.
    let quantized = report::quantize(
        &gelunet_datasets::Dataset {
            features: x.clone(),
            ..ds.clone()
        },
        file.model.spec.classes(),
        &file.scales,
    )?;
    let plaintext_accuracy = report::accuracy(&file.model, &file.scales, &quantized)?;

    let server = Arc::new(server_with_model(&file, &args.keys)?);
    let client_key = args
        .keys
        .generate(1)?
        .pop()
        .ok_or("key generation gave no key")?;
    let identity =
        ServerIdentity::generate(&["localhost".to_string()]).map_err(|e| e.to_string())?;
    let credential = Credential {
        name: "infer".into(),
        token: Zeroizing::new(token()),
    };
    let allow_test_keys = args.keys.test_keys();
    let batch = args.batch;
    let rt = runtime()?;
    let run = rt.block_on(async {
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
        let cc = ClientShellConfig {
            server: addr,
            server_name: "localhost".into(),
            pinned_cert: identity.certificate().clone(),
            transport: transport.clone(),
            name: credential.name.clone(),
            token: credential.token.clone(),
            samples: 0,
            reference: None,
            connect_timeout: Duration::from_secs(30),
            reconnect_attempts: 0,
            reconnect_delay: Duration::from_secs(1),
        };
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
        let run = run_inference(make, x, batch, &cc)
            .await
            .map_err(|e| format!("inference: {e}"));
        let served = server_task.await;
        let run = run?;
        served
            .map_err(|e| format!("server task: {e}"))?
            .map_err(|e| format!("server: {e}"))?;
        Ok::<_, String>(run)
    })?;
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
            let name = |c: usize| file.class_names.get(c).cloned().unwrap_or_default();
            println!(
                "{i}\t{}\t{}\t{:.4}",
                name(p),
                name(l),
                run.probabilities.get((i, p)).copied().unwrap_or(0.0)
            );
        }
    }
    println!(
        "accuracy {:.4} ({correct}/{n}) on the {} split of {name}, encrypted with {}-bit keys \
         (plaintext model: {:.4}); {} requests, {:.2} MiB sent, {:.2} MiB received",
        accuracy,
        format!("{:?}", args.split).to_lowercase(),
        args.keys.key_bits,
        plaintext_accuracy,
        run.requests,
        run.bytes_sent as f64 / 1048576.0,
        run.bytes_received as f64 / 1048576.0
    );
    if let Some(path) = &args.report {
        report::write_json(
            path,
            &InferReport {
                model: args.model.display().to_string(),
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
