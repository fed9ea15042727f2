//! Blinded decryption (`PrivateKey::decrypt_raw_blinded`): the same plaintexts as plain
//! CRT decryption, a different ciphertext inside, and the same errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use common::{rng, test_key};

use gelunet_paillier::{BigInt, BigUint, Ciphertext, Error, PrivateKey};
use proptest::prelude::*;

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| test_key(17))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn blinded_equals_plain_decryption(m in any::<i128>(), seed in any::<u64>()) {
        let sk = key();
        let mut r = rng(seed);
        let c = sk.public_key().encrypt(&BigInt::from(m), &mut r).unwrap();
        prop_assert_eq!(sk.decrypt_blinded(&c, &mut r).unwrap(), BigInt::from(m));
        prop_assert_eq!(
            sk.decrypt_raw_blinded(&c, &mut r).unwrap(),
            sk.decrypt_raw(&c).unwrap()
        );
    }
}

#[test]
fn batch_equals_single_decryptions_and_checks_everything_first() {
    let sk = key();
    let pk = sk.public_key();
    let mut r = rng(3);
    let ms: Vec<BigInt> = (-5..5).map(|v| BigInt::from(v) << 100).collect();
    let cs = pk.encrypt_batch(&ms, &mut r).unwrap();
    let plain: Vec<BigUint> = cs.iter().map(|c| sk.decrypt_raw(c).unwrap()).collect();
    assert_eq!(sk.decrypt_raw_blinded_batch(&cs, &mut r).unwrap(), plain);
    // A ciphertext under another key anywhere in the batch: refused as a whole.
    let other = test_key(18);
    let mut bad = cs.clone();
    bad.push(
        other
            .public_key()
            .encrypt(&BigInt::from(1), &mut r)
            .unwrap(),
    );
    assert!(matches!(
        sk.decrypt_raw_blinded_batch(&bad, &mut r),
        Err(Error::KeyMismatch { .. })
    ));
}

#[test]
fn out_of_range_ciphertexts_are_refused() {
    let sk = key();
    let pk = sk.public_key();
    let forged = format!(
        r#"{{"key":{:?},"c":"{}"}}"#,
        pk.id().0,
        (pk.n_squared() + 1u32).to_str_radix(16)
    );
    let c: Ciphertext = serde_json::from_str(&forged).unwrap();
    assert!(matches!(
        sk.decrypt_raw_blinded(&c, &mut rng(1)),
        Err(Error::InvalidCiphertext { .. })
    ));
}
