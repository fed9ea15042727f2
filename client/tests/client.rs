//! Client-only checks: construction errors, state before the handshake, and that secrets
//! and private data stay out of `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

use gelunet_client::{Client, ClientConfig, ClientError};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::messages::{ServerMessage, UpdateApplied};
use gelunet_protocol::violation::ProtocolViolation;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn key() -> PrivateKey {
    PrivateKey::generate_insecure_for_tests(512, &mut ChaCha20Rng::seed_from_u64(3)).unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        randomness: gelunet_protocol::randomness::Randomness::InsecureReproducible { seed: 1 },
        allow_test_keys: true,
        ..ClientConfig::default()
    }
}

#[test]
fn construction_and_turn_errors() {
    let x = Array2::from_elem((3, 4), 0.123_456_789);
    assert!(matches!(
        Client::new(config(), key(), x.clone(), vec![0, 1]),
        Err(ClientError::Data { .. })
    ));
    let mut c = Client::new(config(), key(), x, vec![0, 1, 0]).unwrap();
    let e = c
        .handle(&ServerMessage::UpdateApplied(UpdateApplied {
            session: 1,
            iteration: 0,
        }))
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Violation(ProtocolViolation::NoSession)),
        "{e}"
    );
    assert!(c.abort("nothing to abort").is_none());
    assert!(c.dataset().is_none());
}

#[test]
fn debug_output_has_no_secrets_or_data() {
    let k = key();
    let p_hex = format!("{:?}", k);
    let x = Array2::from_elem((3, 4), 0.123_456_789);
    let c = Client::new(config(), k, x, vec![0, 1, 0]).unwrap();
    let dbg = format!("{c:?}");
    assert!(dbg.contains("Client"));
    assert!(!dbg.contains("0.123"), "{dbg}");
    assert!(!dbg.to_lowercase().contains("ledger"), "{dbg}");
    // The private key's Debug is redacted by the paillier crate; ours only shows the public key.
    assert!(dbg.contains("PublicKey"), "{dbg}");
    assert!(!p_hex.is_empty());
}
