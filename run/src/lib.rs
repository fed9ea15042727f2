//! What the `gelunet` command line runs, as a library: the command line only parses its
//! arguments into the configurations of this crate, calls it, and prints.
//!
//! * [`train`] (`gelunet train`): the server and K clients in one process over loopback
//!   QUIC (real TLS, real Paillier keys), then the evaluation, the replay of the same
//!   session plans by the plaintext fixed-point reference (docs/DESIGN.md "Exactness"),
//!   the model file and a JSON report.
//! * [`train_plaintext`] (`gelunet train --plaintext`): the reference alone, no keys, no
//!   network; the same model.
//! * [`serve`] and [`join`] (`gelunet serve`, `gelunet join`): the same training with the
//!   server and each client as separate processes; the server's certificate lives in its
//!   state directory and clients pin it.
//! * [`infer`] and [`serve_model`] (`gelunet infer`, `gelunet serve-model`): encrypted
//!   inference with a trained model (paper Alg. 1), in process or against a remote server
//!   that publishes only the model's public card.
//!
//! Every training run stops by one rule, [`gelunet_server::StopRule`]
//! ([`ModelOptions::stop_rule`]): epochs only → the epoch target, sessions only → that
//! many completed sessions, both → whichever comes first, neither → one epoch; zero is
//! refused before any key is generated.
//!
//! Keys below 2048 bits exist only in builds with paillier's `hazmat` feature (this
//! crate's `hazmat` feature, the `gelunet` binary's `insecure-test-keys`); elsewhere
//! [`KeyOptions::validate`] refuses them with [`RunError::TestKeysUnavailable`].
//!
//! [`generate_key`], [`inspect_key`] and [`convert_key`] (`gelunet keys`) make, show and
//! convert Paillier key files, including python-paillier's JSON keys.
//!
//! Model files ([`ModelFile`]) carry a magic, a version, a length and a SHA-256 checksum
//! and are written atomically (temporary file, fsync, rename); a damaged or mismatched
//! file is refused with [`ModelFileError`]. The server (`serve`, `train --state-dir`)
//! persists its whole state the same way after every completed session ([`checkpoint`],
//! `STATE_DIR/checkpoint.bin`; under protocol v2 the masked state only), `train` its
//! clients' keys beside it ([`train_state`]); `--resume` continues from it, and Ctrl-C /
//! SIGTERM stop at a safe point ([`signal`]).

pub mod checkpoint;
mod curves;
mod data;
mod defaults;
mod endpoint;
mod error;
mod infer;
mod join;
mod key_files;
mod keys;
mod model;
pub mod model_file;
mod phe_values;
mod progress;
pub mod report;
mod serve;
pub mod signal;
mod train;
pub mod train_state;

pub use checkpoint::{
    checkpoint_path, load_checkpoint, save_checkpoint, CheckpointFile, RunContext, CHECKPOINT_FILE,
};
pub use data::{client_name, client_seed, derive_seed, parse_shares, DataOptions, Prepared};
pub use defaults::{
    defaults_for, largest_batch_size, DatasetDefaults, CSV_DEFAULTS, DATASET_DEFAULTS,
    DEFAULTS_HELP, DEFAULT_TRAIN_DATASET,
};
pub use endpoint::{
    parse_credential, random_token, read_token, resolve_addr, resolve_state_dir, runtime,
    ListenOptions, Listening, NetOptions,
};
pub use error::{Result, RunError};
pub use infer::{
    coarsen, infer, serve_model, write_predictions, InferConfig, InferOutcome, InferTarget,
    ServeModelConfig, ServingModel, Split, MODEL_CARD_FILE,
};
pub use join::{join, JoinConfig};
pub use key_files::{
    convert_key, generate_key, inspect_key, load_key, KeyFileKind, KeyFormat, KeyInfo, LoadedKey,
};
pub use keys::{KeyOptions, MIN_RUN_TEST_KEY_BITS};
pub use model::{activation_name, mask_name, ModelOptions};
pub use model_file::{DataCard, ModelCard, ModelFile, ModelFileError};
pub use phe_values::{decrypt_values, encrypt_values, read_values, ValuesFiles, ValuesInfo};
pub use progress::init_tracing;
pub use report::{InferReport, JoinReport, PartyReport, TrainReport};
pub use serve::{serve, ServeConfig};
pub use train::{train, train_plaintext, OutputOptions, TrainConfig};

pub use gelunet_server::{StopReason, StopRule};
pub use gelunet_shell::server::Credential;
