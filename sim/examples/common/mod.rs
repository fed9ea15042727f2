//! Shared by the examples: `--flag value` command lines and seeded keys.

use std::fmt::Display;
use std::str::FromStr;

use gelunet_paillier::PrivateKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Walks the command line's flags, calling `set(flag, value)` for each; `value()` takes
/// the flag's value (an error if the line ends first).
///
/// # Errors
/// The first error of `set` or of `value()`.
pub fn parse_flags(
    mut set: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<(), String>,
) -> Result<(), String> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        set(&flag, &mut value)?;
    }
    Ok(())
}

/// `v` parsed as a `T`, the parser's message as the error.
///
/// # Errors
/// The parser's error, as text.
pub fn number<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: Display,
{
    v.parse().map_err(|e| format!("{e}"))
}

/// A key of `bits` bits from `seed`: a real one from 2048 bits on, a fast insecure test
/// key below.
///
/// # Errors
/// Key generation errors.
pub fn keygen(bits: u64, seed: u64) -> Result<PrivateKey, gelunet_paillier::Error> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    if bits >= 2048 {
        PrivateKey::generate(bits, &mut rng)
    } else {
        PrivateKey::generate_insecure_for_tests(bits, &mut rng)
    }
}
