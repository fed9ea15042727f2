//! Helpers shared by the attack tests.
#![allow(dead_code, clippy::unwrap_used)]

use gelunet_attacks::data::{synthetic, AttackData};
use gelunet_attacks::drive::AttackRun;
use gelunet_protocol::v2::Protocol;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Image-like data: 40 samples of 32 features in `[0, 1]`, a random third blank in each
/// sample, the range public.
pub fn boxed_data() -> AttackData {
    let mut data = synthetic(40, 32, 3, 6);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    data.x.mapv_inplace(|v| {
        if rng.gen_bool(1.0 / 3.0) {
            0.0
        } else {
            v.clamp(0.0, 1.0)
        }
    });
    data.bounds = Some((0.0, 1.0));
    data
}

/// A run of two clients at `η = 0.5`.
pub fn attack_run(data: AttackData, hidden: usize, seed: u64, protocol: Protocol) -> AttackRun {
    AttackRun {
        data,
        hidden,
        clients: 2,
        learning_rate: 0.5,
        seed,
        protocol,
    }
}
