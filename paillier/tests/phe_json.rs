//! python-paillier JSON keys and ciphertexts against vectors written by python-paillier
//! 1.5.0 itself (`scripts/phe-json-vectors.py` → `tests/data/phe-json-vectors.json`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_paillier::phe_json::{
    ciphertexts_from_json, ciphertexts_to_json, encode_f64, private_key_from_json,
    private_key_to_json, public_key_from_json, public_key_to_json, PheCiphertext, PheJsonError,
    EXPONENT_RANGE, PHEUTIL_EXPONENT,
};
use gelunet_paillier::{BigInt, BigUint, Error};
use rand::SeedableRng;
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("data/phe-json-vectors.json");
    serde_json::from_str(text).unwrap()
}

fn text(v: &Value) -> String {
    v.to_string()
}

/// The key's primes (in either order), as its exported JSON writes them.
fn primes(key: &gelunet_paillier::PrivateKey) -> std::collections::BTreeSet<String> {
    let v: Value = serde_json::from_str(&private_key_to_json(key)).unwrap();
    [v["p"].to_string(), v["q"].to_string()].into()
}

#[test]
fn python_paillier_keys_import_with_the_same_numbers() {
    let v = vectors();
    let public = public_key_from_json(&text(&v["public_key"]), false).unwrap();
    let p: BigUint = v["p"].as_str().unwrap().parse().unwrap();
    let q: BigUint = v["q"].as_str().unwrap().parse().unwrap();
    assert_eq!(public.n(), &(&p * &q));
    assert_eq!(public.bits(), 2048);
    let private = private_key_from_json(&text(&v["private_key"]), false).unwrap();
    assert_eq!(private.public_key(), &public);
    // The older form (lambda = (p-1)(q-1), mu) gives the same key.
    let legacy = private_key_from_json(&text(&v["private_key_lambda_mu"]), false).unwrap();
    assert_eq!(legacy.public_key(), &public);
    assert_eq!(primes(&legacy), primes(&private));
}

#[test]
fn python_paillier_ciphertexts_decrypt_to_their_values() {
    let v = vectors();
    let private = private_key_from_json(&text(&v["private_key"]), false).unwrap();
    let legacy = private_key_from_json(&text(&v["private_key_lambda_mu"]), false).unwrap();
    let cts = v["ciphertexts"].as_array().unwrap();
    assert_eq!(cts.len(), 10);
    for c in cts {
        let ct = PheCiphertext::from_json(private.public_key(), &text(&c["ciphertext"])).unwrap();
        assert_eq!(
            ct.exponent,
            i32::try_from(c["ciphertext"]["e"].as_i64().unwrap()).unwrap()
        );
        let mantissa: BigInt = c["mantissa"].as_str().unwrap().parse().unwrap();
        assert_eq!(ct.decrypt_mantissa(&private).unwrap(), mantissa, "{c}");
        assert_eq!(ct.decrypt_mantissa(&legacy).unwrap(), mantissa, "{c}");
        let value: f64 = c["value"].as_str().unwrap().parse().unwrap();
        let got = ct.decrypt_f64(&private).unwrap();
        assert!(
            (got - value).abs() <= 1e-12 * value.abs().max(1.0),
            "{got} vs {value}"
        );
        // Written back, the same JSON object.
        let back: Value = serde_json::from_str(&ct.to_json()).unwrap();
        assert_eq!(back, c["ciphertext"]);
    }
}

#[test]
fn exported_keys_have_python_paillier_fields() {
    let v = vectors();
    let private = private_key_from_json(&text(&v["private_key"]), false).unwrap();
    let ours: Value = serde_json::from_str(&private_key_to_json(&private)).unwrap();
    for field in ["kty", "key_ops", "p", "q"] {
        assert_eq!(ours[field], v["private_key"][field], "{field}");
    }
    for field in ["kty", "alg", "key_ops", "n"] {
        assert_eq!(ours["pub"][field], v["public_key"][field], "pub.{field}");
    }
    let public: Value = serde_json::from_str(&public_key_to_json(private.public_key())).unwrap();
    for field in ["kty", "alg", "key_ops", "n"] {
        assert_eq!(public[field], v["public_key"][field], "{field}");
    }
    // Our export reads back (both the p, q and the lambda, mu fields are consistent).
    let again = private_key_from_json(&private_key_to_json(&private), false).unwrap();
    assert_eq!(again.to_secret_bytes(), private.to_secret_bytes());
    let mut lm = ours.clone();
    lm.as_object_mut().unwrap().remove("p");
    lm.as_object_mut().unwrap().remove("q");
    let from_lm = private_key_from_json(&lm.to_string(), false).unwrap();
    assert_eq!(primes(&from_lm), primes(&private));
}

#[test]
fn our_ciphertexts_round_trip_through_the_json() {
    let v = vectors();
    let private = private_key_from_json(&text(&v["private_key"]), false).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    for (m, e) in [(BigInt::from(-42), 0), (BigInt::from(3) << 120usize, -32)] {
        let ct = PheCiphertext::encrypt(private.public_key(), &m, e, &mut rng).unwrap();
        let back = PheCiphertext::from_json(private.public_key(), &ct.to_json()).unwrap();
        assert_eq!(back, ct);
        assert_eq!(back.decrypt_mantissa(&private).unwrap(), m);
    }
}

/// The field a refusal names.
fn field<T>(r: Result<T, PheJsonError>) -> &'static str {
    match r {
        Err(PheJsonError::Field { field, .. }) => field,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn bad_documents_are_refused_with_typed_errors() {
    let v = vectors();
    let public = text(&v["public_key"]);
    let private = text(&v["private_key"]);
    let edit = |base: &Value, path: &[&str], new: Value| -> String {
        let mut doc = base.clone();
        let mut at = &mut doc;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = new;
        doc.to_string()
    };
    assert!(matches!(
        public_key_from_json("{\"kty\":", false),
        Err(PheJsonError::Json { .. })
    ));
    let pk = &v["public_key"];
    assert_eq!(
        field(public_key_from_json(
            &edit(pk, &["kty"], "RSA".into()),
            false
        )),
        "kty"
    );
    assert_eq!(
        field(public_key_from_json(&edit(pk, &["alg"], "X".into()), false)),
        "alg"
    );
    assert_eq!(
        field(public_key_from_json(
            &edit(pk, &["key_ops"], serde_json::json!(["decrypt"])),
            false
        )),
        "key_ops"
    );
    assert_eq!(
        field(public_key_from_json(&edit(pk, &["n"], "#!".into()), false)),
        "n"
    );
    // A small modulus is refused without test keys.
    assert!(matches!(
        public_key_from_json(&edit(pk, &["n"], "AQAB".into()), false),
        Err(PheJsonError::Key { .. })
    ));
    let sk = &v["private_key"];
    // p from another key: p·q is not n.
    assert_eq!(
        field(private_key_from_json(
            &edit(sk, &["p"], sk["q"].clone()),
            false
        )),
        "p"
    );
    let mut no_q = sk.clone();
    no_q.as_object_mut().unwrap().remove("q");
    assert_eq!(field(private_key_from_json(&no_q.to_string(), false)), "q");
    let lm = &v["private_key_lambda_mu"];
    assert_eq!(
        field(private_key_from_json(
            &edit(lm, &["mu"], "Aw".into()),
            false
        )),
        "mu"
    );
    // A private key's text is never quoted in its errors.
    let broken = private.replacen('}', "", 1);
    let e = private_key_from_json(&broken, false)
        .unwrap_err()
        .to_string();
    let p = sk["p"].as_str().unwrap();
    assert!(!e.contains(&p[..16]), "{e}");
    let ct = PheCiphertext::from_json(
        &public_key_from_json(&public, false).unwrap(),
        "{\"v\": \"12x\", \"e\": 0}",
    );
    assert!(matches!(ct, Err(PheJsonError::Field { field: "v", .. })));
    let n2 = {
        let n = public_key_from_json(&public, false).unwrap().n().clone();
        (&n * &n).to_string()
    };
    let ct = PheCiphertext::from_json(
        &public_key_from_json(&public, false).unwrap(),
        &format!("{{\"v\": \"{n2}\", \"e\": 0}}"),
    );
    assert!(matches!(
        ct,
        Err(PheJsonError::Key {
            source: Error::InvalidCiphertext { .. },
            ..
        })
    ));
}

/// The vectors' values that are exactly `f64`s (2^60 + 7 is not: python-paillier encoded it
/// as an int).
fn float_vectors(v: &Value) -> Vec<(f64, BigInt, i32)> {
    v["ciphertexts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let repr = c["value"].as_str().unwrap();
            let x: f64 = repr.parse().unwrap();
            let exact = repr.parse::<i128>().map_or(true, |i| x as i128 == i);
            let m: BigInt = c["mantissa"].as_str().unwrap().parse().unwrap();
            let e = i32::try_from(c["ciphertext"]["e"].as_i64().unwrap()).unwrap();
            exact.then_some((x, m, e))
        })
        .collect()
}

/// The vectors and their private key.
fn vector_key() -> (Value, gelunet_paillier::PrivateKey) {
    let v = vectors();
    let private = private_key_from_json(&text(&v["private_key"]), false).unwrap();
    (v, private)
}

#[test]
fn floats_encrypt_with_python_pailliers_encoding() {
    let (v, private) = vector_key();
    let public = private.public_key();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(16);
    let floats = float_vectors(&v);
    assert_eq!(floats.len(), 9);
    for (x, m, e) in floats {
        // pheutil's exponent, and the very integer python-paillier encrypted.
        assert_eq!(e, PHEUTIL_EXPONENT);
        let ct = PheCiphertext::encrypt_f64(public, x, &mut rng).unwrap();
        assert_eq!(ct.exponent, e, "{x}");
        assert_eq!(ct.decrypt_mantissa(&private).unwrap(), m, "{x}");
        assert_eq!(ct.decrypt_f64(&private).unwrap(), x);
    }
    // EncodedNumber.encode's own exponents (before pheutil lowers them):
    // frexp(pi) = (0.785…, 2) → ⌊(2 − 53)/4⌋ = −13; frexp(1e-10) → −33 → −22;
    // 0 → −14; the largest f64 → 242, the smallest subnormal → −282.
    assert_eq!(encode_f64(std::f64::consts::PI).unwrap().1, -13);
    assert_eq!(encode_f64(1e-10).unwrap().1, -22);
    assert_eq!(encode_f64(0.0).unwrap(), (BigInt::from(0), -14));
    assert_eq!(
        encode_f64(-0.5).unwrap(),
        (BigInt::from(-(1i64 << 55)), -14)
    );
    assert_eq!(encode_f64(f64::MAX).unwrap().1, 242);
    assert_eq!(
        encode_f64(f64::from_bits(1)).unwrap(),
        (BigInt::from(1i64 << 54), -282)
    );
    // Large and tiny values survive the round trip exactly.
    for x in [f64::MAX, -1e300, 5e-324, 1e-300, 123.456e-7] {
        let ct = PheCiphertext::encrypt_f64(public, x, &mut rng).unwrap();
        assert_eq!(ct.decrypt_f64(&private).unwrap(), x);
    }
}

#[test]
fn ciphertext_documents_round_trip_and_name_their_key() {
    let (v, private) = vector_key();
    let public = private.public_key();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
    let xs = [1.5, -2.25, 0.0, 1e6];
    let cts: Vec<_> = xs
        .iter()
        .map(|&x| PheCiphertext::encrypt_f64(public, x, &mut rng).unwrap())
        .collect();
    let doc = ciphertexts_to_json(public, &cts);
    let parsed: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(
        parsed["public_key"],
        serde_json::from_str::<Value>(&public_key_to_json(public)).unwrap()
    );
    let back = ciphertexts_from_json(public, &doc).unwrap();
    assert_eq!(back, cts);
    // python-paillier's own ciphertexts: one object (pheutil encrypt) or an array.
    let theirs: Vec<Value> = v["ciphertexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ciphertext"].clone())
        .collect();
    let array = ciphertexts_from_json(public, &Value::from(theirs.clone()).to_string()).unwrap();
    assert_eq!(array.len(), 10);
    let single = ciphertexts_from_json(public, &theirs[6].to_string()).unwrap();
    assert_eq!(single.len(), 1);
    assert_eq!(
        single[0].decrypt_f64(&private).unwrap(),
        std::f64::consts::PI
    );
    // A document of another key is refused before any ciphertext is read.
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(18);
    let other = gelunet_paillier::PrivateKey::generate_insecure_for_tests(512, &mut r).unwrap();
    let other_doc = ciphertexts_to_json(other.public_key(), &[]);
    assert!(matches!(
        ciphertexts_from_json(public, &other_doc),
        Err(PheJsonError::WrongKey { .. })
    ));
}

#[test]
fn bad_ciphertexts_and_values_are_refused_with_typed_errors() {
    let (v, private) = vector_key();
    let public = private.public_key();
    let good = &v["ciphertexts"][1]["ciphertext"];
    let with_e = |e: Value| {
        let mut c = good.clone();
        c["e"] = e;
        c.to_string()
    };
    // Exponents beyond the range, inside and outside i32.
    for e in [
        Value::from(i64::from(*EXPONENT_RANGE.end()) + 1),
        Value::from(i64::from(*EXPONENT_RANGE.start()) - 1),
        Value::from(1i64 << 40),
    ] {
        assert!(matches!(
            PheCiphertext::from_json(public, &with_e(e)),
            Err(PheJsonError::Exponent { .. })
        ));
    }
    assert!(PheCiphertext::from_json(public, &with_e(Value::from(4096))).is_ok());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(19);
    assert!(matches!(
        PheCiphertext::encrypt(public, &BigInt::from(1), 5000, &mut rng),
        Err(PheJsonError::Exponent { .. })
    ));
    // A mantissa beyond python-paillier's ±(⌊N/3⌋ − 1).
    let too_big = BigInt::from(public.n() / 3u32);
    assert!(matches!(
        PheCiphertext::encrypt(public, &too_big, 0, &mut rng),
        Err(PheJsonError::Key {
            source: Error::PlaintextOutOfRange { .. },
            ..
        })
    ));
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            PheCiphertext::encrypt_f64(public, x, &mut rng),
            Err(PheJsonError::Value { .. })
        ));
    }
    // A small key cannot hold a large float at exponent −32.
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(20);
    let small = gelunet_paillier::PrivateKey::generate_insecure_for_tests(512, &mut r).unwrap();
    assert!(matches!(
        PheCiphertext::encrypt_f64(small.public_key(), 1e300, &mut rng),
        Err(PheJsonError::Value { .. })
    ));
    // Malformed documents, a value outside Z*_{N²}, and a document of the wrong shape.
    for bad in [
        "[{\"v\": \"1\"",
        "{\"v\": 5, \"e\": 0}",
        "\"text\"",
        "{\"ciphertexts\": 3}",
    ] {
        assert!(
            matches!(
                ciphertexts_from_json(public, bad),
                Err(PheJsonError::Json { .. } | PheJsonError::Field { .. })
            ),
            "{bad}"
        );
    }
    let zero = "[{\"v\": \"0\", \"e\": -32}]";
    assert!(matches!(
        ciphertexts_from_json(public, zero),
        Err(PheJsonError::Key {
            source: Error::InvalidCiphertext { .. },
            ..
        })
    ));
    // A ciphertext of another key decrypts as an overflow or as noise, never silently the
    // value; decrypting under another private key object is a key mismatch.
    let ct = PheCiphertext::from_json(public, &good.to_string()).unwrap();
    assert!(matches!(
        ct.decrypt_mantissa(&small),
        Err(PheJsonError::Key {
            source: Error::KeyMismatch { .. },
            ..
        })
    ));
}
