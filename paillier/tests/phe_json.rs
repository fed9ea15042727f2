//! python-paillier JSON keys and ciphertexts against vectors written by python-paillier
//! 1.5.0 itself (`scripts/phe-json-vectors.py` → `tests/data/phe-json-vectors.json`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gelunet_paillier::phe_json::{
    private_key_from_json, private_key_to_json, public_key_from_json, public_key_to_json,
    PheCiphertext, PheJsonError,
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
