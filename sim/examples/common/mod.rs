//! Shared by the examples: `--flag value` command lines, seeded keys, the process's CPU
//! time.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

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
    // Below 2048 bits: test-only keys (the examples are built with `hazmat`).
    PrivateKey::generate_for_run(bits, true, &mut ChaCha20Rng::seed_from_u64(seed))
}

/// CPU time of the whole process so far (user + system, from `/proc/self/stat`, 10 ms
/// resolution); `None` where unavailable. On a shared machine the single-thread CPU time
/// per iteration or inference is the latency the machine would give unloaded.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
