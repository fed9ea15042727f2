//! Correctness of the cryptosystem: property tests with seeded keys, known answers, and
//! the errors for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use common::{rng, test_key};

use gelunet_paillier::encoding::{decode_f64, encode_f64};
use gelunet_paillier::{BigInt, BigUint, Ciphertext, Error, ObfuscatorPool, PrivateKey, PublicKey};
use ndarray::Array2;
use num_traits::{One, Zero};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

/// A 512-bit test key, generated once from a fixed seed.
fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| test_key(7))
}

fn other_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| test_key(8))
}

fn signed(max_bits: u32) -> impl Strategy<Value = BigInt> {
    prop::collection::vec(any::<u32>(), 1..=(max_bits as usize).div_ceil(32)).prop_flat_map(
        move |digits| {
            let v: BigUint = BigUint::new(digits);
            let mask: BigUint = (BigUint::one() << max_bits) - 1u32;
            let mag: BigUint = v & mask;
            any::<bool>().prop_map(move |neg| {
                let m = BigInt::from(mag.clone());
                if neg {
                    -m
                } else {
                    m
                }
            })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn addition_is_homomorphic(a in signed(200), b in signed(200), seed in any::<u64>()) {
        let sk = key();
        let pk = sk.public_key();
        let mut r = rng(seed);
        let ca = pk.encrypt(&a, &mut r).unwrap();
        let cb = pk.encrypt(&b, &mut r).unwrap();
        prop_assert_eq!(sk.decrypt(&pk.add(&ca, &cb).unwrap()).unwrap(), &a + &b);
        prop_assert_eq!(sk.decrypt(&pk.add_plain(&ca, &b).unwrap()).unwrap(), &a + &b);
    }

    #[test]
    fn scalar_multiplication_with_signed_scalars(a in signed(150), k in signed(100), seed in any::<u64>()) {
        let sk = key();
        let pk = sk.public_key();
        let c = pk.encrypt(&a, &mut rng(seed)).unwrap();
        prop_assert_eq!(sk.decrypt(&pk.mul_scalar(&c, &k).unwrap()).unwrap(), &a * &k);
        let prepared = pk.prepare(&c).unwrap();
        prop_assert_eq!(sk.decrypt(&pk.mul_scalar_prepared(&prepared, &k).unwrap()).unwrap(), &a * &k);
        let neg = -&k;
        prop_assert_eq!(sk.decrypt(&pk.mul_scalar_prepared(&prepared, &neg).unwrap()).unwrap(), -(&a * &k));
    }

    #[test]
    fn matvec_and_vecmat_match_integer_arithmetic(
        m in 1usize..5, n in 1usize..6, bits in 1u32..70, seed in any::<u64>()
    ) {
        let sk = key();
        let pk = sk.public_key();
        let mut r = rng(seed);
        let gen = |r: &mut ChaCha20Rng| {
            use rand::Rng;
            let x: i128 = r.gen::<i128>() >> (128 - bits);
            BigInt::from(x)
        };
        let w = Array2::from_shape_fn((m, n), |_| gen(&mut r));
        let a: Vec<BigInt> = (0..n).map(|_| gen(&mut r)).collect();
        let d: Vec<BigInt> = (0..m).map(|_| gen(&mut r)).collect();
        let ca = pk.encrypt_batch(&a, &mut r).unwrap();
        let cd = pk.encrypt_batch(&d, &mut r).unwrap();
        let z = sk.decrypt_batch(&pk.matvec(w.view(), &ca).unwrap()).unwrap();
        for j in 0..m {
            let expected: BigInt = (0..n).map(|k| &w[[j, k]] * &a[k]).sum();
            prop_assert_eq!(&z[j], &expected);
        }
        let q = sk.decrypt_batch(&pk.vecmat(&cd, w.view()).unwrap()).unwrap();
        for k in 0..n {
            let expected: BigInt = (0..m).map(|j| &d[j] * &w[[j, k]]).sum();
            prop_assert_eq!(&q[k], &expected);
        }
    }

    /// The engine's ciphertexts (Montgomery form by default, GMP with `--features gmp`)
    /// are exactly the straightforward `%`-after-every-product values: `W ⊗ [a]` against
    /// `Π_k c_k^{w_jk} mod N²` with num-bigint's `modpow`/`modinv`, the DJN encryption
    /// against `(1 + mN)·h_N^α mod N²` for the same `α`, the scalar product, and CRT
    /// decryption against textbook decryption.
    #[test]
    fn fast_paths_equal_plain_num_bigint(
        m in 1usize..4, n in 1usize..5, bits in 1u32..70, seed in any::<u64>()
    ) {
        use num_bigint::RandBigInt;
        use rand::Rng;
        let sk = key();
        let pk = sk.public_key();
        let nn = pk.n_squared();
        let mut r = rng(seed);
        let w = Array2::from_shape_fn((m, n), |_| BigInt::from(r.gen::<i128>() >> (128 - bits)));
        let a: Vec<BigInt> = (0..n).map(|_| BigInt::from(r.gen::<i64>())).collect();
        let ca = pk.encrypt_batch(&a, &mut r).unwrap();
        let z = pk.matvec(w.view(), &ca).unwrap();
        for j in 0..m {
            let mut expected = BigUint::one();
            for k in 0..n {
                let c = ca[k].value();
                let base = if w[[j, k]] < BigInt::zero() { c.modinv(nn).unwrap() } else { c.clone() };
                expected = expected * base.modpow(w[[j, k]].magnitude(), nn) % nn;
            }
            prop_assert_eq!(z[j].value(), &expected);
        }
        let k = &w[[0, 0]];
        let expected_k = if k < &BigInt::zero() {
            ca[0].value().modinv(nn).unwrap().modpow(k.magnitude(), nn)
        } else {
            ca[0].value().modpow(k.magnitude(), nn)
        };
        let scaled = pk.mul_scalar(&ca[0], k).unwrap();
        prop_assert_eq!(scaled.value(), &expected_k);
        // DJN encryption draws α = gen_biguint(|N|/2) from the rng.
        let mut r1 = rng(seed ^ 3);
        let c = pk.encrypt(&a[0], &mut r1).unwrap();
        let alpha = rng(seed ^ 3).gen_biguint(pk.bits() / 2);
        let plain = (pk.encode(&a[0]).unwrap() * pk.n() + 1u32) * pk.h_n().modpow(&alpha, nn) % nn;
        prop_assert_eq!(c.value(), &plain);
        prop_assert_eq!(sk.decrypt_raw(&z[0]).unwrap(), sk.decrypt_textbook(&z[0]).unwrap());
    }

    #[test]
    fn row_packed_matvec_equals_matvec_then_horner_packing(
        m in 1usize..9, n in 0usize..5, k in 1usize..5, bits in 1u32..24, seed in any::<u64>()
    ) {
        use rand::Rng;
        let sk = key();
        let pk = sk.public_key();
        let mut r = rng(seed);
        let w = Array2::from_shape_fn((m, n), |_| BigInt::from(r.gen::<i32>() >> (32 - bits)));
        let a: Vec<BigInt> = (0..n).map(|_| BigInt::from(r.gen::<i32>() >> (32 - bits))).collect();
        // Slots of β bits holding z_j + 2^(β−1) ≥ 0, as the server packs them.
        let beta = 2 * bits + 5;
        let shift = BigInt::one() << (beta - 1);
        let offsets: Vec<BigInt> = (0..m)
            .map(|_| BigInt::from(r.gen::<i16>() >> (16 - bits.min(16))) + &shift)
            .collect();
        let ca = pk.encrypt_batch(&a, &mut r).unwrap();
        let packed = pk.matvec_row_packed(w.view(), &ca, &offsets, beta, k).unwrap();
        prop_assert_eq!(packed.len(), m.div_ceil(k));
        // The reference: matvec, add_plain, and the Horner chain acc ← acc^{2^β}·[z_j].
        let z = pk.matvec(w.view(), &ca).unwrap();
        let step = BigInt::one() << beta;
        for (chunk, got) in packed.iter().enumerate() {
            let rows: Vec<usize> = (chunk * k..((chunk + 1) * k).min(m)).collect();
            let mut acc: Option<Ciphertext> = None;
            let mut expected = BigInt::zero();
            for &j in rows.iter().rev() {
                let zj = pk.add_plain(&z[j], &offsets[j]).unwrap();
                acc = Some(match acc {
                    None => zj,
                    Some(c) => pk.add(&pk.mul_scalar(&c, &step).unwrap(), &zj).unwrap(),
                });
                let value: BigInt = (0..n).map(|i| &w[[j, i]] * &a[i]).sum::<BigInt>() + &offsets[j];
                expected = (expected << beta) + value;
            }
            // The same ciphertext, bit for bit, and the packed plaintext.
            prop_assert_eq!(got, acc.as_ref().unwrap());
            prop_assert_eq!(sk.decrypt(got).unwrap(), expected);
        }
    }

    #[test]
    fn crt_decryption_equals_textbook_decryption(a in signed(300), seed in any::<u64>()) {
        let sk = key();
        let pk = sk.public_key();
        let c = pk.encrypt(&a, &mut rng(seed)).unwrap();
        prop_assert_eq!(sk.decrypt_raw(&c).unwrap(), sk.decrypt_textbook(&c).unwrap());
    }

    #[test]
    fn every_encryption_mode_decrypts(a in signed(400), seed in any::<u64>()) {
        let sk = key();
        let pk = sk.public_key();
        let mut r = rng(seed);
        for c in [
            pk.encrypt(&a, &mut r).unwrap(),
            sk.encrypt_crt(&a, &mut r).unwrap(),
            pk.encrypt_textbook(&a, &mut r).unwrap(),
            pk.encrypt_with_obfuscator(&a, &pk.obfuscator(&mut r)).unwrap(),
            pk.encrypt_with_obfuscator(&a, &sk.obfuscator_crt(&mut r)).unwrap(),
        ] {
            pk.validate(&c).unwrap();
            prop_assert_eq!(sk.decrypt(&c).unwrap(), a.clone());
        }
    }

    #[test]
    fn signed_encoding_round_trips(a in signed(511)) {
        let pk = key().public_key();
        match pk.encode(&a) {
            Ok(m) => prop_assert_eq!(pk.decode(&m), a),
            Err(e) => {
                prop_assert!(a.magnitude() > pk.max_signed());
                let is_range_error = matches!(e, Error::PlaintextOutOfRange { .. });
                prop_assert!(is_range_error);
            }
        }
    }

    #[test]
    fn fixed_point_round_trips(x in -1.0e6f64..1.0e6, f in 0u32..24) {
        let v = encode_f64(x, f, 64).unwrap();
        let back = decode_f64(&v, f);
        prop_assert!((back - x).abs() <= 0.5 / f64::powi(2.0, f as i32) + 1e-9);
    }
}

#[test]
fn encoding_at_the_range_edges() {
    let pk = key().public_key();
    let max = BigInt::from(pk.max_signed().clone());
    let n = pk.n().clone();
    assert_eq!(pk.encode(&max).unwrap(), pk.max_signed().clone());
    assert_eq!(pk.encode(&-&max).unwrap(), &n - pk.max_signed());
    assert_eq!(pk.decode(&pk.encode(&max).unwrap()), max);
    assert_eq!(pk.decode(&pk.encode(&-&max).unwrap()), -&max);
    assert_eq!(pk.decode(&(&n - 1u32)), BigInt::from(-1));
    for too_big in [&max + 1u32, -(&max + 1u32)] {
        assert!(matches!(
            pk.encode(&too_big),
            Err(Error::PlaintextOutOfRange { .. })
        ));
        assert!(matches!(
            pk.encrypt(&too_big, &mut rng(1)),
            Err(Error::PlaintextOutOfRange { .. })
        ));
    }
    // Fixed-point edges: 2^15 at scale 2^0 fits 16 bits, 2^16 does not.
    assert_eq!(encode_f64(32767.0, 0, 15).unwrap(), BigInt::from(32767));
    assert!(encode_f64(32768.0, 0, 15).is_err());
    assert!(encode_f64(-32768.0, 0, 15).is_err());
    assert!(encode_f64(f64::INFINITY, 0, 15).is_err());
    assert!(encode_f64(1e300, 1000, 4000).is_err());
}

#[test]
fn small_key_arithmetic_checks_by_hand() {
    // p = 1000003, q = 1000033 are far too small for anything but a hand check; the only
    // way in is the test-only constructor, and N = 1000036000099 is 40 bits, below even
    // its minimum.
    let p = BigUint::from(1_000_003u32);
    let q = BigUint::from(1_000_033u32);
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(p, q),
        Err(Error::KeyTooSmall {
            bits: 40,
            min_bits: 128
        })
    ));
    // A 128-bit key made from two known 64-bit primes: Enc(m; r) by hand.
    let p = BigUint::from(18_446_744_073_709_551_557u64); // 2^64 - 59
    let q = BigUint::from(18_446_744_073_709_551_533u64); // 2^64 - 83
    let sk = PrivateKey::from_primes_insecure_for_tests(p.clone(), q.clone()).unwrap();
    let pk = sk.public_key();
    let n = &p * &q;
    assert_eq!(pk.n(), &n);
    let m = BigUint::from(42u32);
    let r = BigUint::from(7u32);
    let n2 = &n * &n;
    let expected = ((&m * &n + 1u32) * r.modpow(&n, &n2)) % &n2;
    let c = pk.encrypt_raw_with_r(&m, &r).unwrap();
    assert_eq!(c.value(), &expected);
    assert_eq!(sk.decrypt_raw(&c).unwrap(), m);
    // g^m with g = N + 1 is 1 + mN: the "nude" part; r = 1 gives exactly that.
    let c1 = pk.encrypt_raw_with_r(&m, &BigUint::one()).unwrap();
    assert_eq!(c1.value(), &(&m * &n + 1u32));
}

#[derive(serde::Deserialize)]
struct Kat {
    p: String,
    q: String,
    n: String,
    encryptions: Vec<KatEnc>,
    operations: Vec<KatOp>,
}
#[derive(serde::Deserialize)]
struct KatEnc {
    m: String,
    r: String,
    c: String,
}
#[derive(serde::Deserialize)]
struct KatOp {
    a: usize,
    b: usize,
    k: i64,
    sum: String,
    scaled: String,
}

fn hex(s: &str) -> BigUint {
    BigUint::parse_bytes(s.as_bytes(), 16).unwrap()
}

#[test]
fn known_answers_from_python_paillier() {
    let kat: Kat = serde_json::from_str(include_str!("data/python-paillier-kat.json")).unwrap();
    let sk = PrivateKey::from_primes(hex(&kat.p), hex(&kat.q)).unwrap();
    let pk = sk.public_key();
    assert_eq!(pk.n(), &hex(&kat.n));
    assert_eq!(pk.bits(), 2048);
    let mut cts = Vec::new();
    for v in &kat.encryptions {
        let c = pk.encrypt_raw_with_r(&hex(&v.m), &hex(&v.r)).unwrap();
        assert_eq!(
            c.value(),
            &hex(&v.c),
            "ciphertext differs from python-paillier"
        );
        assert_eq!(sk.decrypt_raw(&c).unwrap(), hex(&v.m));
        cts.push(c);
    }
    for op in &kat.operations {
        let sum = pk.add(&cts[op.a], &cts[op.b]).unwrap();
        assert_eq!(sum.value(), &hex(&op.sum));
        let scaled = pk.mul_scalar(&cts[op.a], &BigInt::from(op.k)).unwrap();
        assert_eq!(scaled.value(), &hex(&op.scaled));
    }
}

#[test]
fn keys_below_2048_bits_are_refused() {
    let mut r = rng(3);
    assert!(matches!(
        PrivateKey::generate(1024, &mut r),
        Err(Error::KeyTooSmall {
            bits: 1024,
            min_bits: 2048
        })
    ));
    assert!(matches!(
        PrivateKey::generate(2500, &mut r),
        Err(Error::UnsupportedKeySize { bits: 2500 })
    ));
    let small = key();
    assert!(matches!(
        PublicKey::from_n(small.public_key().n().clone()),
        Err(Error::KeyTooSmall { bits: 512, .. })
    ));
    assert!(matches!(
        PrivateKey::generate_insecure_for_tests(64, &mut r),
        Err(Error::KeyTooSmall { .. })
    ));
    // Deserializing a small public key fails too.
    let json = serde_json::to_string(small.public_key()).unwrap();
    assert!(serde_json::from_str::<PublicKey>(&json).is_err());
    // Even moduli are refused.
    assert!(matches!(
        PublicKey::from_n_insecure_for_tests(BigUint::one() << 300u32),
        Err(Error::InvalidModulus { .. })
    ));
    // Composite "primes" are refused.
    let p = BigUint::from(18_446_744_073_709_551_557u64);
    let not_prime = BigUint::from(18_446_744_073_709_551_559u64);
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(p.clone(), not_prime),
        Err(Error::InvalidPrimes { .. })
    ));
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(p.clone(), p),
        Err(Error::InvalidPrimes { .. })
    ));
}

/// Moduli above 4096 bits are refused, by every constructor and before any arithmetic of
/// their size (a million-bit `N` from a stranger returns at once).
#[test]
fn keys_above_4096_bits_are_refused() {
    let huge = (BigUint::one() << 1_000_000u32) + 1u32;
    for n in [(BigUint::one() << 4096u32) + 1u32, huge.clone()] {
        let bits = n.bits();
        assert!(matches!(
            PublicKey::from_n(n.clone()),
            Err(Error::KeyTooLarge { bits: b, max_bits: 4096 }) if b == bits
        ));
        assert!(matches!(
            PublicKey::from_n_for_run(n.clone(), true),
            Err(Error::KeyTooLarge { .. })
        ));
        assert!(matches!(
            PublicKey::from_n_insecure_for_tests(n),
            Err(Error::KeyTooLarge { .. })
        ));
    }
    // A key file with huge factors: refused before p·q (and the primality tests).
    let mut bytes = Vec::new();
    for _ in 0..2 {
        let f = huge.to_bytes_be();
        bytes.extend_from_slice(&(f.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&f);
    }
    assert!(matches!(
        PrivateKey::from_secret_bytes_for_run(&bytes, true),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        PrivateKey::from_primes_insecure_for_tests(huge.clone(), huge),
        Err(Error::KeyTooLarge { .. })
    ));
    assert_eq!(gelunet_paillier::MAX_KEY_BITS, 4096);
}

#[test]
fn invalid_ciphertexts_are_refused() {
    let sk = key();
    let pk = sk.public_key();
    let n2 = pk.n_squared().clone();
    assert!(matches!(
        pk.ciphertext_from_raw(BigUint::zero()),
        Err(Error::InvalidCiphertext { .. })
    ));
    assert!(matches!(
        pk.ciphertext_from_raw(n2.clone()),
        Err(Error::InvalidCiphertext { .. })
    ));
    assert!(matches!(
        pk.ciphertext_from_raw(&n2 + 5u32),
        Err(Error::InvalidCiphertext { .. })
    ));
    // A multiple of a prime factor of N: gcd(c, N) != 1.
    let multiple_of_n = pk.n() * 3u32;
    assert!(matches!(
        pk.ciphertext_from_raw(multiple_of_n),
        Err(Error::InvalidCiphertext {
            reason: "gcd(c, N) != 1"
        })
    ));
    let good = pk.ciphertext_from_raw(BigUint::from(12345u32)).unwrap();
    pk.validate(&good).unwrap();
    // A JSON ciphertext with a value ≥ N² fails validation after parsing.
    let forged = format!(
        r#"{{"key":{:?},"c":"{}"}}"#,
        pk.id().0,
        (&n2 + 1u32).to_str_radix(16)
    );
    let c: Ciphertext = serde_json::from_str(&forged).unwrap();
    assert!(pk.validate(&c).is_err());
    assert!(sk.decrypt(&c).is_err());
    // A batch: one gcd for the slice, the same verdicts as one by one.
    let forge = |v: &BigUint| -> Ciphertext {
        let json = format!(r#"{{"key":{:?},"c":"{}"}}"#, pk.id().0, v.to_str_radix(16));
        serde_json::from_str(&json).unwrap()
    };
    let mut r = rng(7);
    let batch: Vec<Ciphertext> = (1..40i64)
        .map(|m| pk.encrypt(&m.into(), &mut r).unwrap())
        .collect();
    pk.validate_all(&batch).unwrap();
    pk.validate_all(&[]).unwrap();
    for (at, bad, reason) in [
        (17, forge(&(pk.n() * 3u32)), "gcd(c, N) != 1"),
        (
            0,
            forge(&(pk.n() * 7u32 + pk.n_squared())),
            "not in (0, N^2)",
        ),
        (38, forge(&BigUint::zero()), "not in (0, N^2)"),
    ] {
        let mut cs = batch.clone();
        cs[at] = bad;
        assert!(
            matches!(pk.validate_all(&cs), Err(Error::InvalidCiphertext { reason: r }) if r == reason),
            "{reason} at {at}"
        );
    }
    // Garbage does not parse.
    assert!(serde_json::from_str::<Ciphertext>(r#"{"key":[0,0,0,0,0,0,0,0],"c":"xyz"}"#).is_err());
    assert!(serde_json::from_str::<Ciphertext>(r#"{"key":[0,0,0,0,0,0,0,0],"c":12}"#).is_err());
}

#[test]
fn mismatched_keys_are_refused() {
    let (a, b) = (key(), other_key());
    let mut r = rng(5);
    let ca = a.public_key().encrypt(&BigInt::from(1), &mut r).unwrap();
    let cb = b.public_key().encrypt(&BigInt::from(1), &mut r).unwrap();
    assert!(matches!(
        a.public_key().add(&ca, &cb),
        Err(Error::KeyMismatch { .. })
    ));
    assert!(matches!(b.decrypt(&ca), Err(Error::KeyMismatch { .. })));
    assert!(matches!(
        a.public_key().validate(&cb),
        Err(Error::KeyMismatch { .. })
    ));
    let w = Array2::from_elem((1, 2), BigInt::from(3));
    assert!(matches!(
        a.public_key().matvec(w.view(), &[ca.clone(), cb.clone()]),
        Err(Error::KeyMismatch { .. })
    ));
    let obf = b.public_key().obfuscator(&mut r);
    assert!(matches!(
        a.public_key()
            .encrypt_with_obfuscator(&BigInt::from(1), &obf),
        Err(Error::KeyMismatch { .. })
    ));
}

#[test]
fn shapes_are_checked() {
    let sk = key();
    let pk = sk.public_key();
    let c = pk.encrypt(&BigInt::from(1), &mut rng(1)).unwrap();
    let w = Array2::from_elem((2, 3), BigInt::from(1));
    assert!(matches!(
        pk.matvec(w.view(), std::slice::from_ref(&c)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        pk.vecmat(std::slice::from_ref(&c), w.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    // Row packing: wrong number of ciphertexts, of offsets, or zero rows per ciphertext.
    let three = vec![c.clone(), c.clone(), c.clone()];
    let offsets = vec![BigInt::from(0); 2];
    for (cts, offs, k) in [
        (std::slice::from_ref(&c), &offsets[..], 2),
        (&three[..], &offsets[..1], 2),
        (&three[..], &offsets[..], 0),
    ] {
        assert!(matches!(
            pk.matvec_row_packed(w.view(), cts, offs, 8, k),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    let huge = vec![BigInt::from(1) << 600u32; 2];
    assert!(matches!(
        pk.matvec_row_packed(w.view(), &three, &huge, 8, 2),
        Err(Error::PlaintextOutOfRange { .. })
    ));
}

#[test]
fn batch_paths_equal_one_at_a_time() {
    let sk = key();
    let pk = sk.public_key();
    let ms: Vec<BigInt> = (-5..5).map(|x| BigInt::from(x * 1_000_001)).collect();
    let batch = pk.encrypt_batch(&ms, &mut rng(11)).unwrap();
    let mut r = rng(11);
    let single: Vec<Ciphertext> = ms.iter().map(|m| pk.encrypt(m, &mut r).unwrap()).collect();
    assert_eq!(batch, single);
    let batch_crt = sk.encrypt_crt_batch(&ms, &mut rng(12)).unwrap();
    let mut r = rng(12);
    let single_crt: Vec<Ciphertext> = ms
        .iter()
        .map(|m| sk.encrypt_crt(m, &mut r).unwrap())
        .collect();
    assert_eq!(batch_crt, single_crt);
    // CRT and public-key obfuscators with the same α are the same value.
    assert_eq!(batch_crt, batch_crt.clone());
    let same_alpha_public = pk.encrypt_batch(&ms, &mut rng(12)).unwrap();
    assert_eq!(same_alpha_public, batch_crt);
    assert_eq!(sk.decrypt_batch(&batch).unwrap(), ms);
}

#[test]
fn obfuscator_pool_encrypts() {
    let sk = key();
    let pk = sk.public_key();
    let mut pool = ObfuscatorPool::new(pk, 4);
    let a = pk
        .encrypt_with_obfuscator(&BigInt::from(-9), &pool.take())
        .unwrap();
    let b = pk
        .encrypt_with_obfuscator(&BigInt::from(-9), &pool.take())
        .unwrap();
    assert_ne!(a, b, "two obfuscators from the pool must differ");
    assert_eq!(sk.decrypt(&a).unwrap(), BigInt::from(-9));
    assert_eq!(sk.decrypt(&b).unwrap(), BigInt::from(-9));
}

#[test]
fn serde_round_trips_without_json_numbers() {
    let sk = key();
    let pk = sk.public_key();
    let c = pk.encrypt(&BigInt::from(77), &mut rng(2)).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert!(
        json.contains(&c.value().to_str_radix(16)),
        "hex string expected: {json}"
    );
    assert_eq!(serde_json::from_str::<Ciphertext>(&json).unwrap(), c);
    let bytes = postcard::to_allocvec(&c).unwrap();
    assert_eq!(postcard::from_bytes::<Ciphertext>(&bytes).unwrap(), c);
    // A truncated postcard message is an error, not a panic.
    assert!(postcard::from_bytes::<Ciphertext>(&bytes[..bytes.len() / 2]).is_err());
    // Private keys: only the explicit call, and the result round-trips only at full size.
    let secret = sk.to_secret_bytes();
    assert!(matches!(
        PrivateKey::from_secret_bytes(&secret),
        Err(Error::KeyTooSmall { .. })
    ));
    assert!(matches!(
        PrivateKey::from_secret_bytes(&secret[..secret.len() - 3]),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn debug_output_hides_secrets() {
    let sk = key();
    let shown = format!("{sk:?}");
    let p_hex = {
        let bytes = sk.to_secret_bytes();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        BigUint::from_bytes_be(&bytes[4..4 + len])
    };
    assert!(!shown.contains(&p_hex.to_string()));
    assert!(!shown.contains(&p_hex.to_str_radix(16)));
    assert!(shown.contains("PrivateKey"));
}
