//! `gelunet keys`: arguments only; the work is `gelunet_run::{generate_key, inspect_key,
//! convert_key, encrypt_values, decrypt_values}`.

use std::path::PathBuf;

use gelunet_run::{KeyFormat, RunError};

use gelunet_run::KeyOptions;

/// The files of `gelunet keys encrypt|decrypt`.
#[derive(Debug, clap::Args)]
pub struct ValuesArgs {
    /// The file to read: numbers (a .json number or array, or CSV cells) to encrypt, or
    /// ciphertext JSON to decrypt.
    #[arg(long)]
    input: PathBuf,
    /// The file to write: ciphertext JSON, or a JSON array of numbers.
    #[arg(long)]
    output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    /// Accept keys below 2048 bits (tests only).
    #[arg(long)]
    insecure_test_keys: bool,
}

impl ValuesArgs {
    fn with_key(self, key_file: PathBuf) -> gelunet_run::ValuesFiles {
        gelunet_run::ValuesFiles {
            key_file,
            input: self.input,
            output: self.output,
            force: self.force,
            allow_test_keys: self.insecure_test_keys,
        }
    }
}

/// `gelunet keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair (mode 0600; an existing file only with --force).
    Generate {
        /// The private key file to create.
        #[arg(long)]
        out: PathBuf,
        /// Its format.
        #[arg(long, value_enum, default_value_t = KeyFormat::Gelunet)]
        format: KeyFormat,
        /// Also write the public key here (python-paillier JSON).
        #[arg(long)]
        public_out: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        keys: KeyOptions,
    },
    /// Show a key file's public facts: kind, bits of N, key id and fingerprint.
    Inspect {
        /// The key file (gelunet or python-paillier JSON, private or public).
        file: PathBuf,
        /// Accept keys below 2048 bits (tests only).
        #[arg(long)]
        insecure_test_keys: bool,
    },
    /// Convert a key file between the gelunet and the python-paillier formats.
    Convert {
        /// The key file to read (any format).
        input: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// The format to write.
        #[arg(long, value_enum)]
        to: KeyFormat,
        /// Write only the public key (python-paillier JSON).
        #[arg(long)]
        public: bool,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Accept keys below 2048 bits (tests only).
        #[arg(long)]
        insecure_test_keys: bool,
    },
    /// Encrypt numbers (CSV cells or a JSON array) as python-paillier ciphertext JSON
    /// ({"public_key": …, "ciphertexts": [{"v": "<decimal>", "e": -32}, …]}, as pheutil).
    Encrypt {
        /// The key file whose public key encrypts (any format).
        #[arg(long)]
        public_key: PathBuf,
        #[command(flatten)]
        files: ValuesArgs,
    },
    /// Decrypt python-paillier ciphertext JSON (ours, an array of {"v","e"}, or one) into
    /// a JSON array of numbers.
    Decrypt {
        /// The private key file (any format).
        #[arg(long)]
        private_key: PathBuf,
        #[command(flatten)]
        files: ValuesArgs,
    },
}

/// Runs `gelunet keys …` and prints the public facts of the key written or read.
///
/// # Errors
/// The errors of `gelunet_run`'s key functions.
pub fn run(cmd: KeysCommand) -> Result<(), RunError> {
    let info = match cmd {
        KeysCommand::Generate {
            out,
            format,
            public_out,
            force,
            keys,
        } => gelunet_run::generate_key(&keys, &out, format, public_out.as_deref(), force)?,
        KeysCommand::Inspect {
            file,
            insecure_test_keys,
        } => gelunet_run::inspect_key(&file, insecure_test_keys)?,
        KeysCommand::Convert {
            input,
            out,
            to,
            public,
            force,
            insecure_test_keys,
        } => gelunet_run::convert_key(&input, &out, to, public, force, insecure_test_keys)?,
        KeysCommand::Encrypt { public_key, files } => {
            return values(gelunet_run::encrypt_values(&files.with_key(public_key)))
        }
        KeysCommand::Decrypt { private_key, files } => {
            return values(gelunet_run::decrypt_values(&files.with_key(private_key)))
        }
    };
    crate::out(info);
    Ok(())
}

fn values(info: Result<gelunet_run::ValuesInfo, RunError>) -> Result<(), RunError> {
    crate::out(info?);
    Ok(())
}
