//! Options shared by `train`, `serve`, `join` and `infer`, and the data pipeline:
//! load → deterministic stratified split (seeded) → standardize on the training split →
//! split the training set among K clients.

use std::path::PathBuf;

use gelunet_datasets::{
    load_by_name, parse_client_shares, resolve_data_dir, split_clients, standardize_train_test,
    CsvOptions, Dataset, LoadOptions, MnistOptions, Standardizer,
};
use gelunet_paillier::{PrivateKey, MIN_KEY_BITS, SUPPORTED_KEY_BITS};
use gelunet_protocol::{
    Activation, ClientOrder, MaskMode, ModelSpec, SessionLength, SessionPolicy,
};
use gelunet_server::{InsecureOptions, ServerConfig};
use rayon::prelude::*;

/// Where the data comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Dataset: iris, pima, kr-vs-kp, mnist, or csv:PATH.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Data directory (default: $GELUNET_DATA_DIR, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// CSV: 0-based label column, negative counts from the end.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub label_column: isize,
    /// CSV: columns to drop, comma-separated (same indexing as --label-column).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub ignore_columns: Vec<isize>,
    /// CSV: the first row is a header (default: auto-detect).
    #[arg(long)]
    pub header: bool,
    /// Fraction of the samples held out for testing (datasets without their own split).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// MNIST: use at most this many training samples.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// MNIST: use at most this many test samples.
    #[arg(long)]
    pub max_test: Option<usize>,
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ActivationArg {
    /// Logistic sigmoid.
    Sigmoid,
    /// Rectified linear unit.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
}

impl ActivationArg {
    /// The protocol's activation.
    pub fn activation(self) -> Activation {
        match self {
            Self::Sigmoid => Activation::Sigmoid,
            Self::Relu => Activation::Relu,
            Self::Tanh => Activation::Tanh,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "sigmoid",
            Self::Relu => "relu",
            Self::Tanh => "tanh",
        }
    }
}

/// Gradient mask (docs/DESIGN.md "Masked update").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MaskArg {
    /// `r` uniform on `[0, 2^(σ+g))`, σ = 128 (default).
    Statistical,
    /// `r` uniform on `[G, N_s − G)` (the paper's mask).
    Uniform,
}

impl MaskArg {
    /// The protocol's mask mode.
    pub fn mode(self) -> MaskMode {
        match self {
            Self::Statistical => MaskMode::default(),
            Self::Uniform => MaskMode::Uniform,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Statistical => "statistical",
            Self::Uniform => "uniform",
        }
    }
}

/// Order in which the server schedules clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// 0, 1, …, K−1, 0, …
    RoundRobin,
    /// Uniformly random (seeded).
    Random,
}

/// Paillier key options.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Paillier modulus size in bits (2048, 3072 or 4096; smaller only with
    /// --insecure-test-keys).
    #[arg(long, default_value_t = 2048)]
    pub key_bits: u64,
    /// Allow keys below 2048 bits (insecure; tests only).
    #[arg(long)]
    pub insecure_test_keys: bool,
}

impl KeyArgs {
    /// Checks the key size.
    ///
    /// # Errors
    /// A message for a size that is not allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_bits < MIN_KEY_BITS {
            if !self.insecure_test_keys {
                return Err(format!(
                    "--key-bits {} is below {MIN_KEY_BITS}: such keys are insecure; pass \
                     --insecure-test-keys to use them anyway (tests only)",
                    self.key_bits
                ));
            }
            if self.key_bits < 256 || self.key_bits % 2 == 1 {
                return Err(format!(
                    "--key-bits {}: test keys must be even and at least 256 bits",
                    self.key_bits
                ));
            }
        } else if !SUPPORTED_KEY_BITS.contains(&self.key_bits) {
            return Err(format!(
                "--key-bits {}: supported sizes are {SUPPORTED_KEY_BITS:?}",
                self.key_bits
            ));
        }
        Ok(())
    }

    /// Whether the keys are test keys.
    pub fn test_keys(&self) -> bool {
        self.key_bits < MIN_KEY_BITS
    }

    /// Generates `n` key pairs in parallel from the OS random generator.
    ///
    /// # Errors
    /// Key-generation errors.
    pub fn generate(&self, n: usize) -> Result<Vec<PrivateKey>, String> {
        self.validate()?;
        let bits = self.key_bits;
        let test = self.test_keys();
        (0..n)
            .into_par_iter()
            .map(|_| {
                let mut rng = rand::rngs::OsRng;
                if test {
                    PrivateKey::generate_insecure_for_tests(bits, &mut rng)
                } else {
                    PrivateKey::generate(bits, &mut rng)
                }
                .map_err(|e| format!("key generation: {e}"))
            })
            .collect()
    }
}

/// Model and training options (the server's side of the configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Hidden-layer widths, comma-separated (e.g. 12 or 64,32).
    #[arg(long, value_delimiter = ',', default_value = "12")]
    pub hidden: Vec<usize>,
    /// Hidden-layer activation.
    #[arg(long, value_enum, default_value_t = ActivationArg::Sigmoid)]
    pub activation: ActivationArg,
    /// Epochs (an epoch: as many samples as the clients hold together, processed in
    /// completed sessions).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Stop after this many completed sessions instead (overrides --epochs).
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Mini-batch size B (sessions have d·B ≤ the smallest fan-in samples).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Learning rate η.
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Gradient mask.
    #[arg(long, value_enum, default_value_t = MaskArg::Statistical)]
    pub mask: MaskArg,
    /// Client order of the session scheduler.
    #[arg(long, value_enum, default_value_t = OrderArg::RoundRobin)]
    pub order: OrderArg,
    /// Seed of the data split, the weight initialization and the scheduler.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl ModelArgs {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the bad option.
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden.contains(&0) {
            return Err("--hidden: widths must be positive".into());
        }
        if self.epochs == 0 && self.sessions.is_none() {
            return Err("--epochs must be at least 1".into());
        }
        if self.sessions == Some(0) {
            return Err("--sessions must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr {}: must be a positive number", self.lr));
        }
        Ok(())
    }

    /// `[inputs, hidden…, classes]` with the chosen activation.
    ///
    /// # Errors
    /// An invalid spec.
    pub fn spec(&self, inputs: usize, classes: usize) -> Result<ModelSpec, String> {
        let mut widths = vec![inputs];
        widths.extend(&self.hidden);
        widths.push(classes);
        let spec = ModelSpec::new(widths, self.activation.activation());
        spec.validate().map_err(|e| format!("model: {e}"))?;
        Ok(spec)
    }

    /// The server role's configuration.
    pub fn server_config(&self, spec: ModelSpec, keys: &KeyArgs) -> ServerConfig {
        let mut cfg = ServerConfig::new(spec, self.lr, self.batch_size);
        cfg.mask = self.mask.mode();
        // The networked runs speak the paper's protocol until the release flow of v2
        // reaches the shells.
        cfg.protocol = gelunet_protocol::v2::Protocol::Paper;
        cfg.model_seed = self.seed;
        cfg.schedule_seed = derive_seed(self.seed, 0x5c4e_d01e);
        cfg.rng_seed = rand::random();
        cfg.policy = SessionPolicy {
            order: match self.order {
                OrderArg::RoundRobin => ClientOrder::RoundRobin,
                OrderArg::Random => ClientOrder::SeededRandom,
            },
            length: SessionLength::Random,
            ..SessionPolicy::default()
        };
        cfg.insecure = InsecureOptions {
            allow_test_keys: keys.test_keys(),
            allow_unmasked_gradients: false,
        };
        cfg
    }
}

/// A seed derived from `seed` and a label (SplitMix64 finalizer).
pub fn derive_seed(seed: u64, label: u64) -> u64 {
    let mut z = seed ^ label.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The role seed of client `k` in a reproducible run with `seed`.
pub fn client_seed(seed: u64, k: usize) -> u64 {
    derive_seed(seed, 0xc11e_0000 + k as u64)
}

/// Name of client `k` in a `train` run.
pub fn client_name(k: usize) -> String {
    format!("client-{k}")
}

/// The prepared data: standardized train/test splits and the clients' shares.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Dataset name as given.
    pub name: String,
    /// Standardized training split.
    pub train: Dataset,
    /// Standardized test split.
    pub test: Dataset,
    /// Fitted on the training split.
    pub standardizer: Standardizer,
    /// The clients' shares of `train`.
    pub shares: Vec<Dataset>,
}

/// Parses `--client-shares`.
///
/// # Errors
/// A message for a malformed list.
pub fn parse_shares(s: Option<&str>) -> Result<Option<Vec<f64>>, String> {
    s.map(|s| parse_client_shares(s).map_err(|e| e.to_string()))
        .transpose()
}

impl DataArgs {
    /// The dataset name, required here.
    ///
    /// # Errors
    /// A message when `--dataset` is missing.
    pub fn name(&self) -> Result<&str, String> {
        self.dataset.as_deref().ok_or_else(|| {
            "--dataset is required (iris, pima, kr-vs-kp, mnist or csv:PATH)".to_string()
        })
    }

    /// Loads, splits (stratified, seeded), standardizes on the training split, and splits
    /// the training set among `clients` clients with `shares`.
    ///
    /// # Errors
    /// Dataset errors (a missing file names the file and how to get it), bad options.
    pub fn prepare(
        &self,
        clients: usize,
        shares: Option<&[f64]>,
        seed: u64,
    ) -> Result<Prepared, String> {
        let name = self.name()?;
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(format!(
                "--test-fraction {}: must be in [0, 1)",
                self.test_fraction
            ));
        }
        let dir = resolve_data_dir(self.data_dir.as_deref());
        let opts = LoadOptions {
            csv: CsvOptions {
                label_column: self.label_column,
                ignore_columns: self.ignore_columns.clone(),
                header: self.header.then_some(true),
                ..CsvOptions::default()
            },
            mnist: MnistOptions {
                max_train: self.max_train,
                max_test: self.max_test,
            },
        };
        let loaded = load_by_name(name, &dir, &opts).map_err(|e| format!("dataset: {e}"))?;
        let (train, test) = loaded
            .into_train_test(self.test_fraction, seed)
            .map_err(|e| format!("dataset: {e}"))?;
        let (train, test, standardizer) =
            standardize_train_test(&train, &test).map_err(|e| format!("dataset: {e}"))?;
        let shares = split_clients(&train, clients, shares, derive_seed(seed, 0x5ba2e))
            .map_err(|e| format!("dataset: {e}"))?;
        Ok(Prepared {
            name: name.to_string(),
            train,
            test,
            standardizer,
            shares,
        })
    }
}
