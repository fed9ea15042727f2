//! CryptoNets-style BFV inference equals the exact plaintext square network.
//! Run with `--release` (BFV at N = 8192).

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use gelunet_baselines::measure::{time_encrypt_decrypt, time_poly5, time_square};
use gelunet_baselines::{BaselineError, BfvConfig, BfvContext, SquareNet, SquareNetBfv};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FX: u32 = 6;
const FW: u32 = 6;
/// Inputs in [-8, 8] at 2^6.
const INPUT_BOUND: i64 = 8 << FX;

fn random_net(n: usize, h: usize, c: usize, seed: u64) -> SquareNet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w1 = Array2::from_shape_fn((h, n), |_| rng.gen_range(-1.0..1.0));
    let b1 = Array1::from_shape_fn(h, |_| rng.gen_range(-0.5..0.5));
    let mut w2 = Array2::from_shape_fn((c, h), |_| rng.gen_range(-1.0..1.0));
    let b2 = Array1::from_shape_fn(c, |_| rng.gen_range(-0.5..0.5));
    // Exercise the special cases: a hidden unit with all-zero weights, zero weights,
    // an output weight row with a single sign.
    w1.row_mut(2).fill(0.0);
    w1[[0, 1]] = 0.0;
    w2.row_mut(1).mapv_inplace(f64::abs);
    SquareNet::from_f64(&w1, &b1, &w2, &b2, FX, FW).unwrap()
}

fn random_inputs(s: usize, n: usize, seed: u64) -> Array2<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Array2::from_shape_fn((s, n), |_| rng.gen_range(-INPUT_BOUND..=INPUT_BOUND));
    // The extreme corners of the input box.
    x.row_mut(0).fill(INPUT_BOUND);
    x.row_mut(1).fill(-INPUT_BOUND);
    x
}

#[test]
fn bfv_predictions_and_logits_equal_plaintext() {
    let net = random_net(4, 12, 3, 11);
    let config = BfvConfig::for_net(&net, INPUT_BOUND).unwrap();
    let needed = net.required_plaintext_bits(INPUT_BOUND).unwrap();
    assert!(config.describe().t_bits >= needed);
    let mut client = BfvContext::new(&config, [7; 32]).unwrap();
    let server = SquareNetBfv::new(&net, &client.server_key(), INPUT_BOUND).unwrap();
    let x = random_inputs(100, 4, 12);
    let batch = client.encrypt_batch(&x, INPUT_BOUND).unwrap();
    assert_eq!((batch.num_samples(), batch.num_features()), (100, 4));
    let out = server.infer(&batch).unwrap();
    assert_eq!(out.num_classes(), 3);
    let logits = client.decrypt_logits(&out).unwrap();
    let expected = net.forward_plain(&x).unwrap();
    assert_eq!(logits, expected);
    assert!(
        expected.iter().any(|&v| v < 0),
        "negative logits are decoded centred"
    );
    assert_eq!(
        client.predict(&out).unwrap(),
        net.predict_plain(&x).unwrap()
    );
}

#[test]
fn precomputed_encryptions_of_zero_are_exact_and_used_once() {
    let net = random_net(4, 12, 3, 13);
    let config = BfvConfig::for_net(&net, INPUT_BOUND).unwrap();
    let mut client = BfvContext::new(&config, [9; 32]).unwrap();
    let server = SquareNetBfv::new(&net, &client.server_key(), INPUT_BOUND).unwrap();
    // Three ready for four columns: three columns use them, the fourth is fresh.
    client.precompute_encryptions(3).unwrap();
    assert_eq!(client.encryptions_ready(), 3);
    let x = random_inputs(20, 4, 14);
    let batch = client.encrypt_batch(&x, INPUT_BOUND).unwrap();
    assert_eq!(client.encryptions_ready(), 0);
    let out = server.infer(&batch).unwrap();
    assert_eq!(
        client.decrypt_logits(&out).unwrap(),
        net.forward_plain(&x).unwrap()
    );
    // A batch that fails its checks uses none.
    client.precompute_encryptions(4).unwrap();
    let mut bad = x.clone();
    bad[[0, 0]] = INPUT_BOUND + 1;
    assert!(client.encrypt_batch(&bad, INPUT_BOUND).is_err());
    assert_eq!(client.encryptions_ready(), 4);
}

#[test]
fn bfv_exact_with_a_large_plaintext_modulus() {
    // Up to 53 bits of t the chain is four 54-55-bit primes (218 bits).
    let desc = BfvConfig::n8192(53).unwrap().describe();
    assert_eq!((desc.degree, desc.log_q, desc.t_bits), (8192, 218, 53));
    assert_eq!(desc.moduli_bits, vec![55, 55, 54, 54]);
    // A 60-bit t needs primes above t: three 62-bit primes (186 bits). Noise growth is
    // proportional to t, and the chain still suffices for one square.
    let net = random_net(4, 12, 3, 21);
    let config = BfvConfig::n8192(60).unwrap();
    let desc = config.describe();
    assert_eq!((desc.degree, desc.log_q, desc.t_bits), (8192, 186, 60));
    assert!(desc.log_q <= desc.max_log_q_128);
    assert!(desc.to_string().contains("N = 8192"));
    let mut client = BfvContext::new(&config, [3; 32]).unwrap();
    let server = SquareNetBfv::new(&net, &client.server_key(), INPUT_BOUND).unwrap();
    let x = random_inputs(40, 4, 22);
    let out = server
        .infer(&client.encrypt_batch(&x, INPUT_BOUND).unwrap())
        .unwrap();
    assert_eq!(
        client.decrypt_logits(&out).unwrap(),
        net.forward_plain(&x).unwrap()
    );

    // Errors on the same context.
    // Shape mismatch: a batch with 5 features for a 4-input model.
    let x5 = random_inputs(10, 5, 23);
    let b5 = client.encrypt_batch(&x5, INPUT_BOUND).unwrap();
    assert!(matches!(
        server.infer(&b5),
        Err(BaselineError::ShapeMismatch { expected, got, .. }) if expected == vec![4] && got == vec![5]
    ));
    // Inputs above the agreed bound.
    let mut xbig = random_inputs(10, 4, 24);
    xbig[[3, 2]] = INPUT_BOUND + 1;
    assert!(matches!(
        client.encrypt_batch(&xbig, INPUT_BOUND),
        Err(BaselineError::InputOutOfRange { value, bound }) if value == INPUT_BOUND + 1 && bound == INPUT_BOUND
    ));
    // A batch encrypted for a larger bound than the model was sized for.
    let b_wide = client.encrypt_batch(&x, 2 * INPUT_BOUND).unwrap();
    assert!(matches!(
        server.infer(&b_wide),
        Err(BaselineError::InputOutOfRange { .. })
    ));
    // More samples than slots.
    assert!(matches!(
        client.encrypt_batch(&Array2::zeros((8193, 4)), INPUT_BOUND),
        Err(BaselineError::TooManySamples {
            got: 8193,
            slots: 8192
        })
    ));
}

#[test]
fn too_small_plaintext_modulus_is_a_typed_error() {
    let net = random_net(4, 12, 3, 31);
    let needed = net.required_plaintext_bits(INPUT_BOUND).unwrap();
    assert!(needed > 20, "needed {needed}");
    let config = BfvConfig::n8192(20).unwrap();
    let client = BfvContext::new(&config, [1; 32]).unwrap();
    let err = SquareNetBfv::new(&net, &client.server_key(), INPUT_BOUND).unwrap_err();
    assert!(
        matches!(err, BaselineError::PlaintextModulusTooSmall { needed_bits, t_bits: 20 } if needed_bits == needed),
        "{err}"
    );
    // A model whose outputs exceed even 62 bits cannot be configured.
    let huge = random_net(4, 12, 3, 32);
    assert!(matches!(
        BfvConfig::for_net(&huge, 1 << 20),
        Err(BaselineError::PlaintextModulusTooSmall { t_bits: 61, .. })
    ));
    // Invalid parameter sets are refused: t not ≡ 1 mod 2N, too large q.
    assert!(matches!(
        BfvConfig::new(8192, gelunet_baselines::bfv::MODULI_8192.to_vec(), 65539),
        Err(BaselineError::InvalidParameter {
            name: "plaintext_modulus",
            ..
        })
    ));
    // fhe.rs needs t below every q_i (it would otherwise panic in key generation).
    let t43 = BfvConfig::batching_prime(43, 8192).unwrap();
    assert!(matches!(
        BfvConfig::new(8192, gelunet_baselines::bfv::MODULI_8192.to_vec(), t43),
        Err(BaselineError::InvalidParameter {
            name: "plaintext_modulus",
            ..
        })
    ));
    assert!(BfvConfig::new(8192, gelunet_baselines::bfv::MODULI_8192.to_vec(), 65537).is_ok());
    assert!(matches!(
        BfvConfig::n8192(62),
        Err(BaselineError::InvalidParameter { .. })
    ));
    let mut moduli = gelunet_baselines::bfv::MODULI_8192.to_vec();
    moduli.push(0x7ffffe0001); // pushes log q over 218
    assert!(matches!(
        BfvConfig::new(8192, moduli, 65537),
        Err(BaselineError::InvalidParameter { name: "moduli", .. })
    ));
}

#[test]
fn foreign_batch_is_rejected() {
    let net = random_net(4, 12, 3, 41);
    let config = BfvConfig::for_net(&net, INPUT_BOUND).unwrap();
    let mut a = BfvContext::new(&config, [1; 32]).unwrap();
    let b = BfvContext::new(&config, [2; 32]).unwrap();
    let server_b = SquareNetBfv::new(&net, &b.server_key(), INPUT_BOUND).unwrap();
    let batch = a
        .encrypt_batch(&random_inputs(4, 4, 42), INPUT_BOUND)
        .unwrap();
    assert!(matches!(
        server_b.infer(&batch),
        Err(BaselineError::InvalidParameter { name: "batch", .. })
    ));
}

#[test]
fn measurement_helpers_run_and_are_exact() {
    // A 20-bit t leaves enough noise budget for the depth-3 Taylor polynomial.
    let mut ctx = BfvContext::new(&BfvConfig::n8192(20).unwrap(), [9; 32]).unwrap();
    let sq = time_square(&mut ctx, 1).unwrap();
    assert!(sq.correct);
    assert_eq!(sq.slots, 8192);
    assert!(sq.per_ciphertext_secs > 0.0);
    assert!((sq.per_value_secs * 8192.0 - sq.per_ciphertext_secs).abs() < 1e-12);
    let p5 = time_poly5(&mut ctx, 1).unwrap();
    assert!(p5.correct);
    let ed = time_encrypt_decrypt(&mut ctx, 1).unwrap();
    assert!(ed.encrypt.correct && ed.decrypt.correct);
    assert!(matches!(
        time_square(&mut ctx, 0),
        Err(BaselineError::InvalidParameter { name: "reps", .. })
    ));
}
