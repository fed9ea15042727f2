//! Paillier keys of a run: size checks, generation, and a client's key file.

use std::path::Path;

use gelunet_net::Zeroizing;
use gelunet_paillier::{PrivateKey, MIN_KEY_BITS, SUPPORTED_KEY_BITS, TEST_KEYS_AVAILABLE};
use rayon::prelude::*;

use crate::{Result, RunError};

/// The smallest test key a run accepts, in bits (even sizes only).
pub const MIN_RUN_TEST_KEY_BITS: u64 = 256;

/// Paillier key options (`--key-bits`, `--insecure-test-keys`; with the `clap` feature
/// these flags, as `clap::Args`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct KeyOptions {
    /// Size of every modulus `N`, in bits: 2048, 3072 or 4096; a test size (even, at
    /// least [`MIN_RUN_TEST_KEY_BITS`]) only with `allow_test_keys`.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            default_value_t = MIN_KEY_BITS,
            help = "Paillier modulus size in bits (2048, 3072 or 4096; smaller only with \
                    --insecure-test-keys)"
        )
    )]
    pub key_bits: u64,
    /// Allow keys below 2048 bits (insecure; tests only; the build also needs paillier's
    /// `hazmat` feature, [`TEST_KEYS_AVAILABLE`]).
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "insecure-test-keys",
            help = "Allow keys below 2048 bits (insecure; tests only; only in a gelunet built \
                    with `--features insecure-test-keys`)"
        )
    )]
    pub allow_test_keys: bool,
}

impl Default for KeyOptions {
    fn default() -> Self {
        Self {
            key_bits: MIN_KEY_BITS,
            allow_test_keys: false,
        }
    }
}

impl KeyOptions {
    /// Checks the key size (before any key is generated).
    ///
    /// # Errors
    /// [`RunError::InvalidOption`] for a test size without `allow_test_keys`, an odd or
    /// too small test size, or an unsupported real size;
    /// [`RunError::TestKeysUnavailable`] for an allowed test size in a build without
    /// test-only keys.
    pub fn validate(&self) -> Result<()> {
        let bits = self.key_bits;
        if bits < MIN_KEY_BITS {
            if !self.allow_test_keys {
                return Err(RunError::option(
                    "--key-bits",
                    format!(
                        "{bits} is below {MIN_KEY_BITS}: such keys are insecure; pass \
                         --insecure-test-keys to use them anyway (tests only)"
                    ),
                ));
            }
            if bits < MIN_RUN_TEST_KEY_BITS || bits % 2 == 1 {
                return Err(RunError::option(
                    "--key-bits",
                    format!(
                        "{bits}: test keys must be even and at least {MIN_RUN_TEST_KEY_BITS} bits"
                    ),
                ));
            }
            if !TEST_KEYS_AVAILABLE {
                return Err(RunError::TestKeysUnavailable { bits });
            }
        } else if !SUPPORTED_KEY_BITS.contains(&bits) {
            return Err(RunError::option(
                "--key-bits",
                format!("{bits}: supported sizes are {SUPPORTED_KEY_BITS:?}"),
            ));
        }
        Ok(())
    }

    /// Whether the keys are test keys (below 2048 bits): what the server and client roles
    /// are told to accept from their peers (`allow_test_keys` of their configurations).
    pub fn test_keys(&self) -> bool {
        self.key_bits < MIN_KEY_BITS
    }

    /// Generates `n` key pairs in parallel from the OS random generator
    /// ([`PrivateKey::generate_for_run`]).
    ///
    /// # Errors
    /// The errors of [`KeyOptions::validate`]; [`RunError::KeyGeneration`].
    pub fn generate(&self, n: usize) -> Result<Vec<PrivateKey>> {
        self.validate()?;
        let (bits, allow) = (self.key_bits, self.allow_test_keys);
        (0..n)
            .into_par_iter()
            .map(|_| {
                PrivateKey::generate_for_run(bits, allow, &mut rand::rngs::OsRng)
                    .map_err(RunError::KeyGeneration)
            })
            .collect()
    }

    /// One key pair (see [`KeyOptions::generate`]).
    ///
    /// # Errors
    /// As [`KeyOptions::generate`].
    pub fn generate_one(&self) -> Result<PrivateKey> {
        self.validate()?;
        PrivateKey::generate_for_run(self.key_bits, self.allow_test_keys, &mut rand::rngs::OsRng)
            .map_err(RunError::KeyGeneration)
    }

    /// A client's key pair kept in `path` (`gelunet join --key-file`), so that a restarted
    /// client can rejoin: loaded if the file exists
    /// ([`PrivateKey::from_secret_bytes_for_run`]; test keys only as these options
    /// allow), else generated and written atomically with mode 0600 (temporary file,
    /// fsync, rename).
    ///
    /// # Errors
    /// [`RunError::Io`] reading or writing the file; [`RunError::KeyFile`] for a file that
    /// holds no usable key; the errors of [`KeyOptions::generate`].
    pub fn load_or_create(&self, path: &Path) -> Result<PrivateKey> {
        if path.exists() {
            let bytes =
                Zeroizing::new(std::fs::read(path).map_err(RunError::io("--key-file", path))?);
            return PrivateKey::from_secret_bytes_for_run(&bytes, self.test_keys()).map_err(
                |source| RunError::KeyFile {
                    path: path.to_path_buf(),
                    source,
                },
            );
        }
        let key = self.generate_one()?;
        crate::model_file::write_atomic_private(path, &key.to_secret_bytes())
            .map_err(RunError::io("--key-file", path))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_any_key() {
        let k = |key_bits, allow_test_keys| KeyOptions {
            key_bits,
            allow_test_keys,
        };
        assert!(k(2048, false).validate().is_ok());
        let e = k(1024, false).validate().unwrap_err();
        assert!(e.to_string().contains("--insecure-test-keys"), "{e}");
        assert!(k(1001, true)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("even"));
        assert!(k(128, true).validate().is_err());
        assert!(k(5000, false)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("supported"));
        let small = k(512, true).validate();
        if TEST_KEYS_AVAILABLE {
            assert!(small.is_ok(), "{small:?}");
        } else {
            assert!(matches!(
                small,
                Err(RunError::TestKeysUnavailable { bits: 512 })
            ));
        }
    }

    #[test]
    fn a_key_file_is_created_once_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("gelunet-run-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.key");
        let _ = std::fs::remove_file(&path);
        let opts = KeyOptions {
            key_bits: 512,
            allow_test_keys: true,
        };
        let a = opts.load_or_create(&path).unwrap();
        let b = opts.load_or_create(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        // The same file is refused when test keys are not allowed.
        let strict = KeyOptions::default();
        assert!(matches!(
            strict.load_or_create(&path),
            Err(RunError::KeyFile { .. })
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            opts.load_or_create(&path),
            Err(RunError::KeyFile { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
