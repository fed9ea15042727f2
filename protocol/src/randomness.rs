//! Where a party's secret randomness comes from (`docs/DESIGN.md` "Protocol v2"; issue:
//! every secret — masks, obfuscators, the group key, the batch order — from the operating
//! system's generator).
//!
//! [`Randomness::Os`] (the default) seeds a ChaCha20 generator with 256 bits from the
//! operating system for every stream; nothing about it can be reproduced or predicted.
//! [`Randomness::InsecureReproducible`] derives every stream from a public 64-bit seed, so
//! that a run can be repeated bit for bit (tests, the exactness replay, benchmarks): then
//! the masks are **known to anyone who knows the seed, the server included**, and every
//! report of such a run says "masks known to the server".
//!
//! ```
//! use gelunet_protocol::randomness::Randomness;
//! use rand::RngCore;
//!
//! let mut a = Randomness::InsecureReproducible { seed: 7 }.rng(3);
//! let mut b = Randomness::InsecureReproducible { seed: 7 }.rng(3);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let mut c = Randomness::Os.rng(3);
//! let mut d = Randomness::Os.rng(3);
//! assert_ne!(c.next_u64(), d.next_u64());
//! ```

use rand::rngs::OsRng;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// The source of a party's secret randomness (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Randomness {
    /// ChaCha20 seeded with 256 bits from the operating system for every stream.
    #[default]
    Os,
    /// Every stream from a public 64-bit seed: reproducible and **insecure** (the masks are
    /// known to whoever knows the seed).
    InsecureReproducible {
        /// The run's seed.
        seed: u64,
    },
}

impl Randomness {
    /// A generator for stream number `stream` (one per party and purpose): from the
    /// operating system, or in reproducible mode
    /// `ChaCha20Rng::seed_from_u64(seed · 0x9E3779B97F4A7C15 + stream)`.
    pub fn rng(&self, stream: u64) -> ChaCha20Rng {
        match self {
            Self::Os => os_rng(),
            Self::InsecureReproducible { seed } => ChaCha20Rng::seed_from_u64(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(stream),
            ),
        }
    }

    /// A generator seeded with `seed` in reproducible mode (`ChaCha20Rng::seed_from_u64`,
    /// the derivation the reproducible runs have always used), from the operating system
    /// otherwise.
    pub fn rng_with_seed(&self, seed: u64) -> ChaCha20Rng {
        match self {
            Self::Os => os_rng(),
            Self::InsecureReproducible { .. } => ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// Whether the run is reproducible (and its masks known to the server).
    pub fn is_reproducible(&self) -> bool {
        matches!(self, Self::InsecureReproducible { .. })
    }

    /// What reports say about the masks: `"secret (OS randomness)"` or
    /// `"masks known to the server (insecure reproducible mode)"`.
    pub fn report_label(&self) -> &'static str {
        match self {
            Self::Os => "secret (OS randomness)",
            Self::InsecureReproducible { .. } => {
                "masks known to the server (insecure reproducible mode)"
            }
        }
    }
}

/// ChaCha20 seeded with 256 bits from the operating system.
pub fn os_rng() -> ChaCha20Rng {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut OsRng, &mut *seed);
    ChaCha20Rng::from_seed(*seed)
}
