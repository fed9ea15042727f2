//! Helpers shared by the cryptosystem's tests.
#![allow(dead_code, clippy::unwrap_used)]

use gelunet_paillier::PrivateKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The seeded generator of the tests.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A 512-bit test key from `seed` (the test-only constructor).
pub fn test_key(seed: u64) -> PrivateKey {
    PrivateKey::generate_insecure_for_tests(512, &mut rng(seed)).unwrap()
}
