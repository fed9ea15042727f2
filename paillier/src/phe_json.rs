//! python-paillier's JSON formats, for exchanging keys and ciphertexts with it.
//!
//! * Public key, as `pheutil genpkey`/`extract` write it (JSON Web Key style, key type
//!   `DAJ`, algorithm `PAI-GN1`, `g = N + 1`):
//!   `{"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"], "n": "<base64url>", "kid": "…"}`.
//! * Private key: `{"kty": "DAJ", "key_ops": ["decrypt"], "p": "…", "q": "…", "pub": {…},
//!   "kid": "…"}` (python-paillier ≥ 1.3), or the older form with `"lambda"` and `"mu"`
//!   instead of `p` and `q`. Both are read; [`private_key_to_json`] writes `p` and `q`
//!   (what `pheutil decrypt` reads) and also `lambda = lcm(p−1, q−1)` and
//!   `μ = λ⁻¹ mod N` for readers of the older form.
//! * Ciphertext, as `pheutil encrypt` writes it: `{"v": "<decimal ciphertext>", "e":
//!   <exponent>}`; the plaintext is the signed integer `m` (the "mantissa") with value
//!   `m · 16^e` (python-paillier's `EncodedNumber`, `BASE = 16`).
//!
//! Integers are unpadded base64url of their big-endian bytes (RFC 7515 §2, python-paillier's
//! `phe.util.int_to_base64`); padding is accepted when reading. Errors about a private key
//! never quote its text.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::arith::wipe_biguint;
use crate::{Ciphertext, PrivateKey, PublicKey};

/// The key type python-paillier writes (`"kty"`).
pub const KTY: &str = "DAJ";
/// The algorithm of a python-paillier public key (`"alg"`).
pub const ALG: &str = "PAI-GN1";
/// The base of python-paillier's exponent: a plaintext `m` with exponent `e` is `m · 16^e`.
pub const BASE: u32 = 16;
/// The exponent `pheutil encrypt` writes where it can (`serialise_encrypted` lowers a
/// larger one to it); [`PheCiphertext::encrypt_f64`] does the same.
pub const PHEUTIL_EXPONENT: i32 = -32;
/// The exponents a ciphertext may carry. python-paillier sets no bound; gelunet refuses
/// exponents beyond `±4096` so that a hostile file cannot make it shift by gigabits. The
/// float encoding gives exponents in `−282..=242` (the smallest subnormal, the largest
/// `f64`), and products and sums of a few such numbers stay far inside the range.
pub const EXPONENT_RANGE: std::ops::RangeInclusive<i32> = -4096..=4096;

/// Why a python-paillier JSON document was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PheJsonError {
    /// Not JSON, or not the expected object (line and column only: a private key's text is
    /// never quoted).
    #[error("{what}: not valid JSON of the expected shape (line {line}, column {column})")]
    Json {
        /// The document: `public key`, `private key` or `ciphertext`.
        what: &'static str,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A field is missing, has the wrong value or does not decode.
    #[error("{what}: field `{field}`: {reason}")]
    Field {
        /// The document.
        what: &'static str,
        /// The field's name.
        field: &'static str,
        /// What is wrong (never the field's secret value).
        reason: String,
    },
    /// A ciphertext's exponent outside [`EXPONENT_RANGE`].
    #[error("ciphertext: exponent {exponent} outside {}..={}", EXPONENT_RANGE.start(), EXPONENT_RANGE.end())]
    Exponent {
        /// The exponent found.
        exponent: i64,
    },
    /// A value python-paillier's float encoding cannot represent: not finite, or too large
    /// for the key's signed range `±(⌊N/3⌋ − 1)` at exponent [`PHEUTIL_EXPONENT`].
    #[error("value {value} cannot be encrypted: {reason}")]
    Value {
        /// The value (public: it is what the caller asked to encrypt).
        value: f64,
        /// Why.
        reason: &'static str,
    },
    /// A ciphertext document written for another public key than the one given.
    #[error("ciphertexts: made for public key {found}, not for the given key {expected}")]
    WrongKey {
        /// The id of the key given.
        expected: crate::KeyId,
        /// The id of the document's public key.
        found: crate::KeyId,
    },
    /// The numbers do not make a valid key or ciphertext.
    #[error("{what}: {source}")]
    Key {
        /// The document.
        what: &'static str,
        /// The key or ciphertext check that failed.
        #[source]
        source: crate::Error,
    },
}

type Result<T> = std::result::Result<T, PheJsonError>;

/// base64url, no padding written, padding optional when reading.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `x` as unpadded base64url of its big-endian bytes (`phe.util.int_to_base64`).
fn int_to_base64(x: &BigUint) -> String {
    let bytes = Zeroizing::new(x.to_bytes_be());
    B64.encode(&*bytes)
}

/// The inverse of [`int_to_base64`]; a positive integer.
fn base64_to_int(what: &'static str, field: &'static str, s: &str) -> Result<BigUint> {
    let bytes = Zeroizing::new(B64.decode(s.trim()).map_err(|_| PheJsonError::Field {
        what,
        field,
        reason: "not base64url".into(),
    })?);
    let x = BigUint::from_bytes_be(&bytes);
    if x.is_zero() {
        return Err(PheJsonError::Field {
            what,
            field,
            reason: "zero".into(),
        });
    }
    Ok(x)
}

fn json_error(what: &'static str) -> impl Fn(serde_json::Error) -> PheJsonError {
    move |e| PheJsonError::Json {
        what,
        line: e.line(),
        column: e.column(),
    }
}

/// A public key object as python-paillier writes it.
#[derive(Deserialize)]
struct PublicJwk {
    kty: String,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    n: String,
}

/// A private key object (either form); its strings are wiped on drop.
#[derive(Deserialize)]
struct PrivateJwk {
    kty: String,
    key_ops: Option<Vec<String>>,
    p: Option<String>,
    q: Option<String>,
    lambda: Option<String>,
    mu: Option<String>,
    #[serde(rename = "pub")]
    public: PublicJwk,
}

impl Drop for PrivateJwk {
    fn drop(&mut self) {
        self.p.zeroize();
        self.q.zeroize();
        self.lambda.zeroize();
        self.mu.zeroize();
    }
}

fn check_kty(what: &'static str, kty: &str) -> Result<()> {
    if kty == KTY {
        Ok(())
    } else {
        Err(PheJsonError::Field {
            what,
            field: "kty",
            reason: format!("expected \"{KTY}\" (a python-paillier key), found {kty:?}"),
        })
    }
}

fn check_ops(what: &'static str, ops: Option<&[String]>, op: &str) -> Result<()> {
    match ops {
        Some(ops) if !ops.iter().any(|o| o == op) => Err(PheJsonError::Field {
            what,
            field: "key_ops",
            reason: format!("does not allow {op:?}"),
        }),
        _ => Ok(()),
    }
}

impl PublicJwk {
    fn key(&self, allow_test_keys: bool) -> Result<PublicKey> {
        const WHAT: &str = "public key";
        check_kty(WHAT, &self.kty)?;
        match self.alg.as_deref() {
            Some(ALG) => {}
            other => {
                return Err(PheJsonError::Field {
                    what: WHAT,
                    field: "alg",
                    reason: format!("expected \"{ALG}\", found {other:?}"),
                })
            }
        }
        check_ops(WHAT, self.key_ops.as_deref(), "encrypt")?;
        let n = base64_to_int(WHAT, "n", &self.n)?;
        PublicKey::from_n_for_run(n, allow_test_keys)
            .map_err(|source| PheJsonError::Key { what: WHAT, source })
    }
}

/// Reads a python-paillier public key (`pheutil extract` output). Keys below 2048 bits
/// only with `allow_test_keys` in builds with the `hazmat` feature
/// ([`PublicKey::from_n_for_run`]).
///
/// # Errors
/// [`PheJsonError::Json`] for text that is not such an object; [`PheJsonError::Field`]
/// for a wrong `kty`/`alg`, `key_ops` without `encrypt`, or an `n` that does not decode;
/// [`PheJsonError::Key`] for a modulus the key checks refuse.
pub fn public_key_from_json(text: &str, allow_test_keys: bool) -> Result<PublicKey> {
    let jwk: PublicJwk = serde_json::from_str(text).map_err(json_error("public key"))?;
    jwk.key(allow_test_keys)
}

/// The python-paillier public key object of `key`, with `kid` naming its fingerprint.
pub fn public_key_to_json_value(key: &PublicKey) -> Value {
    json!({
        "kty": KTY,
        "alg": ALG,
        "key_ops": ["encrypt"],
        "n": int_to_base64(key.n()),
        "kid": format!("Paillier public key {} (gelunet)", key.id()),
    })
}

/// [`public_key_to_json_value`] as text (one line and a newline, as `pheutil` writes).
pub fn public_key_to_json(key: &PublicKey) -> String {
    format!("{}\n", public_key_to_json_value(key))
}

/// The factors of `n` from any multiple `k` of Carmichael's `λ(n)` (here python-paillier's
/// `lambda`, `(p−1)(q−1)` or `lcm(p−1, q−1)`): for a base `a`, write `k = 2^s·t` with `t`
/// odd; the sequence `a^t, a^{2t}, …` mod `n` reaches 1, and the element before it is a
/// square root of 1; if that root is not ±1, `gcd(root − 1, n)` is a factor (each base
/// succeeds with probability at least 1/2; Miller 1976, Menezes et al., HAC §8.2.2 (i)).
fn factor_from_lambda(n: &BigUint, k: &BigUint) -> Option<(BigUint, BigUint)> {
    let one = BigUint::one();
    let n_minus_1 = n - &one;
    let s = k.trailing_zeros()?;
    let t = k >> s;
    for a in 2u32..200 {
        let a = BigUint::from(a);
        let g = a.gcd(n);
        if !g.is_one() {
            return (g != *n).then(|| (g.clone(), n / &g));
        }
        let mut x = a.modpow(&t, n);
        if x.is_one() || x == n_minus_1 {
            continue;
        }
        for _ in 0..s {
            let y = (&x * &x) % n;
            if y.is_one() {
                let p = (&x - &one).gcd(n);
                if !p.is_one() && p != *n {
                    let q = n / &p;
                    return Some((p, q));
                }
                break;
            }
            if y == n_minus_1 {
                break;
            }
            x = y;
        }
    }
    None
}

/// Reads a python-paillier private key: the `p`, `q` form (`pheutil genpkey`) or the
/// older `lambda`, `mu` form (then `N` is factored from `λ`, and `μ·λ ≡ 1 (mod N)` is
/// checked). Keys below 2048 bits only with `allow_test_keys` in builds with the `hazmat`
/// feature ([`PrivateKey::from_primes_for_run`]).
///
/// # Errors
/// [`PheJsonError::Json`] for text that is not such an object (position only);
/// [`PheJsonError::Field`] for a wrong `kty`, `key_ops` without `decrypt`, missing or
/// undecodable secrets, primes whose product is not `pub.n`, or a `λ`, `μ` that do not
/// belong to `pub.n`; [`PheJsonError::Key`] for numbers the key checks refuse.
pub fn private_key_from_json(text: &str, allow_test_keys: bool) -> Result<PrivateKey> {
    const WHAT: &str = "private key";
    let jwk: PrivateJwk = serde_json::from_str(text).map_err(json_error(WHAT))?;
    check_kty(WHAT, &jwk.kty)?;
    check_ops(WHAT, jwk.key_ops.as_deref(), "decrypt")?;
    let public = jwk.public.key(allow_test_keys)?;
    let n = public.n();
    let field = |field, reason: &str| PheJsonError::Field {
        what: WHAT,
        field,
        reason: reason.into(),
    };
    let (p, q) = match (&jwk.p, &jwk.q, &jwk.lambda, &jwk.mu) {
        (Some(p), Some(q), _, _) => {
            let p = base64_to_int(WHAT, "p", p)?;
            let q = base64_to_int(WHAT, "q", q)?;
            if &(&p * &q) != n {
                return Err(field("p", "p·q is not the public key's n"));
            }
            (p, q)
        }
        (None, None, Some(lambda), Some(mu)) => {
            let mut lambda = base64_to_int(WHAT, "lambda", lambda)?;
            let mut mu = base64_to_int(WHAT, "mu", mu)?;
            let mut check = (&lambda * &mu) % n;
            let factors = if check.is_one() {
                factor_from_lambda(n, &lambda)
                    .ok_or_else(|| field("lambda", "not a multiple of λ(n) for the public n"))
            } else {
                Err(field("mu", "μ·λ is not 1 modulo n"))
            };
            for x in [&mut lambda, &mut mu, &mut check] {
                wipe_biguint(x);
            }
            factors?
        }
        (Some(_), None, _, _) => return Err(field("q", "missing (p is given)")),
        (None, Some(_), _, _) => return Err(field("p", "missing (q is given)")),
        (None, None, Some(_), None) => return Err(field("mu", "missing (lambda is given)")),
        (None, None, None, _) => return Err(field("p", "missing (neither p, q nor lambda, mu)")),
    };
    PrivateKey::from_primes_for_run(p, q, allow_test_keys)
        .map_err(|source| PheJsonError::Key { what: WHAT, source })
}

/// `key` as a python-paillier private key (secret text, wiped on drop): `p`, `q`, the
/// public key under `pub`, and `lambda = lcm(p−1, q−1)`, `mu = λ⁻¹ mod N` for readers of
/// the older form.
pub fn private_key_to_json(key: &PrivateKey) -> Zeroizing<String> {
    let (p, q, lambda, mu) = key.secret_parts();
    let mut value = json!({
        "kty": KTY,
        "key_ops": ["decrypt"],
        "p": int_to_base64(p),
        "q": int_to_base64(q),
        "lambda": int_to_base64(lambda),
        "mu": int_to_base64(mu),
        "pub": public_key_to_json_value(key.public_key()),
        "kid": format!("Paillier private key {} (gelunet)", key.public_key().id()),
    });
    let text = Zeroizing::new(format!("{value}\n"));
    wipe_value(&mut value);
    text
}

/// Overwrites every string of a JSON value (the secrets of [`private_key_to_json`]).
fn wipe_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe_value),
        Value::Object(o) => o.values_mut().for_each(wipe_value),
        _ => {}
    }
}

/// A python-paillier `EncryptedNumber`: a ciphertext of the signed integer `m` and the
/// exponent `e` of its value `m · 16^e`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PheCiphertext {
    /// The Paillier ciphertext of `m` (negative `m` as `N − |m|`).
    pub ciphertext: Ciphertext,
    /// The exponent `e` (base [`BASE`]).
    pub exponent: i32,
}

/// The JSON object of a ciphertext.
#[derive(Serialize, Deserialize)]
struct CiphertextJson {
    v: String,
    e: i64,
}

/// `e` if it is in [`EXPONENT_RANGE`].
fn check_exponent(e: i64) -> Result<i32> {
    i32::try_from(e)
        .ok()
        .filter(|e| EXPONENT_RANGE.contains(e))
        .ok_or(PheJsonError::Exponent { exponent: e })
}

/// python-paillier's signed range `⌊N/3⌋ − 1` (`PaillierPublicKey.max_int`).
fn max_int(n: &BigUint) -> BigUint {
    n / 3u32 - 1u32
}

/// The integer `m` and exponent `e` with `x = m · 16^e` that python-paillier's
/// `EncodedNumber.encode(key, x)` chooses for a float (no `precision`, no
/// `max_exponent`): `e = ⌊(frexp(x).exp − 53) / 4⌋`, the largest exponent at which `x`'s
/// least significant bit is still an integer, so `m` is exact. `x = 0` gives `(0, −14)`
/// (`frexp(0) = (0, 0)`, as in python-paillier).
///
/// # Errors
/// [`PheJsonError::Value`] for a NaN or an infinity.
pub fn encode_f64(x: f64) -> Result<(BigInt, i32)> {
    if !x.is_finite() {
        return Err(PheJsonError::Value {
            value: x,
            reason: "not a finite number",
        });
    }
    // x = ±mant · 2^exp2 exactly (IEEE 754 binary64 fields).
    let bits = x.to_bits();
    let biased = i64::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let frac = bits & ((1u64 << 52) - 1);
    let (mant, exp2) = if biased == 0 {
        (frac, -1074i64)
    } else {
        (frac | (1u64 << 52), biased - 1075)
    };
    // frexp's exponent: x = f · 2^frexp_exp with 0.5 ≤ |f| < 1 (0 for x = 0).
    let frexp_exp = if mant == 0 {
        0
    } else {
        exp2 + i64::from(64 - mant.leading_zeros())
    };
    let exponent = (frexp_exp - 53).div_euclid(4);
    // m = mant · 2^(exp2 − 4e); the shift is never negative for a nonzero x (the lsb of
    // x is 2^exp2 ≥ 2^(frexp_exp − 53) ≥ 16^e), so m is exact.
    let shift = usize::try_from(exp2 - 4 * exponent).unwrap_or(0);
    let mut m = BigInt::from(mant) << shift;
    if x.is_sign_negative() {
        m = -m;
    }
    Ok((m, i32::try_from(exponent).unwrap_or(0)))
}

impl PheCiphertext {
    /// Reads `{"v": "<decimal>", "e": <exponent>}` (`pheutil encrypt` output) as a
    /// ciphertext under `key`.
    ///
    /// # Errors
    /// [`PheJsonError::Json`] for another shape; [`PheJsonError::Exponent`] for an
    /// exponent outside [`EXPONENT_RANGE`]; [`PheJsonError::Field`] for a `v` that is not a
    /// decimal integer;
    /// [`PheJsonError::Key`] for a value outside `(0, N²)` or not coprime to `N`.
    pub fn from_json(key: &PublicKey, text: &str) -> Result<Self> {
        const WHAT: &str = "ciphertext";
        let c: CiphertextJson = serde_json::from_str(text).map_err(json_error(WHAT))?;
        let v =
            BigUint::parse_bytes(c.v.trim().as_bytes(), 10).ok_or_else(|| PheJsonError::Field {
                what: WHAT,
                field: "v",
                reason: "not a decimal integer".into(),
            })?;
        let exponent = check_exponent(c.e)?;
        let ciphertext = key
            .ciphertext_from_raw(v)
            .map_err(|source| PheJsonError::Key { what: WHAT, source })?;
        Ok(Self {
            ciphertext,
            exponent,
        })
    }

    /// The JSON text `pheutil decrypt` reads (one line and a newline).
    pub fn to_json(&self) -> String {
        format!("{}\n", self.to_json_value())
    }

    /// The JSON object `{"v": "<decimal>", "e": <exponent>}`.
    pub fn to_json_value(&self) -> Value {
        json!({"v": self.ciphertext.value().to_str_radix(10), "e": self.exponent})
    }

    /// Decrypts the signed integer `m` as python-paillier decodes it: `m ≤ ⌊N/3⌋ − 1` is
    /// positive, `m ≥ N − (⌊N/3⌋ − 1)` is `m − N`, anything between is an overflow.
    ///
    /// # Errors
    /// [`PheJsonError::Key`] with [`crate::Error::KeyMismatch`] for another key,
    /// [`crate::Error::PlaintextOutOfRange`] for an overflowed plaintext.
    pub fn decrypt_mantissa(&self, key: &PrivateKey) -> Result<BigInt> {
        let err = |source| PheJsonError::Key {
            what: "ciphertext",
            source,
        };
        let m = key.decrypt_raw(&self.ciphertext).map_err(err)?;
        let n = key.public_key().n();
        let max_int = max_int(n);
        if m <= max_int {
            Ok(BigInt::from_biguint(Sign::Plus, m))
        } else if m >= n - &max_int {
            Ok(-BigInt::from_biguint(Sign::Plus, n - m))
        } else {
            Err(err(crate::Error::PlaintextOutOfRange {
                bits: m.bits(),
                key_bits: n.bits(),
            }))
        }
    }

    /// Decrypts the value `m · 16^e` as an `f64` (rounded; `±inf` beyond its range).
    ///
    /// # Errors
    /// As [`PheCiphertext::decrypt_mantissa`].
    pub fn decrypt_f64(&self, key: &PrivateKey) -> Result<f64> {
        let m = self.decrypt_mantissa(key)?;
        Ok(scale(&m, self.exponent))
    }

    /// Encrypts the integer `m` with exponent `e` (value `m · 16^e`).
    ///
    /// # Errors
    /// [`PheJsonError::Exponent`] for an exponent outside [`EXPONENT_RANGE`];
    /// [`PheJsonError::Key`] with [`crate::Error::PlaintextOutOfRange`] if `|m|` exceeds
    /// python-paillier's signed range `⌊N/3⌋ − 1`.
    pub fn encrypt<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        key: &PublicKey,
        m: &BigInt,
        exponent: i32,
        rng: &mut R,
    ) -> Result<Self> {
        check_exponent(i64::from(exponent))?;
        if m.magnitude() > &max_int(key.n()) {
            return Err(PheJsonError::Key {
                what: "ciphertext",
                source: crate::Error::PlaintextOutOfRange {
                    bits: m.bits(),
                    key_bits: key.bits(),
                },
            });
        }
        let ciphertext = key.encrypt(m, rng).map_err(|source| PheJsonError::Key {
            what: "ciphertext",
            source,
        })?;
        Ok(Self {
            ciphertext,
            exponent,
        })
    }
}

impl PheCiphertext {
    /// Encrypts the float `x` as `pheutil encrypt` does: python-paillier's float encoding
    /// ([`encode_f64`]), then the exponent lowered to [`PHEUTIL_EXPONENT`] if it is larger
    /// (`serialise_encrypted`; the value is unchanged, `m` gains the factor
    /// `16^(e + 32)`).
    ///
    /// # Errors
    /// [`PheJsonError::Value`] for a NaN, an infinity, or a value whose `m` exceeds the
    /// key's signed range `⌊N/3⌋ − 1` (python-paillier would wrap it silently).
    pub fn encrypt_f64<R: rand::RngCore + rand::CryptoRng + ?Sized>(
        key: &PublicKey,
        x: f64,
        rng: &mut R,
    ) -> Result<Self> {
        let (mut m, mut e) = encode_f64(x)?;
        if e > PHEUTIL_EXPONENT {
            let lower = u32::try_from(e - PHEUTIL_EXPONENT).unwrap_or(0);
            m *= BigInt::from(BASE).pow(lower);
            e = PHEUTIL_EXPONENT;
        }
        if m.magnitude() > &max_int(key.n()) {
            return Err(PheJsonError::Value {
                value: x,
                reason: "too large for the key's signed range at exponent -32",
            });
        }
        Self::encrypt(key, &m, e, rng)
    }
}

/// A ciphertext document: the python-paillier public key (`pheutil extract` form) and the
/// ciphertexts made under it, `{"public_key": {…}, "ciphertexts": [{"v": …, "e": …}, …]}`
/// (one line and a newline). Each element of `ciphertexts` is what `pheutil decrypt`
/// reads.
pub fn ciphertexts_to_json(key: &PublicKey, cts: &[PheCiphertext]) -> String {
    let list: Vec<Value> = cts.iter().map(PheCiphertext::to_json_value).collect();
    format!(
        "{}\n",
        json!({"public_key": public_key_to_json_value(key), "ciphertexts": list})
    )
}

/// The document of [`ciphertexts_to_json`], a JSON array of `{"v", "e"}` objects, or one
/// such object (`pheutil encrypt` output), as ciphertexts under `key`. A document's
/// `public_key` must be `key` (python-paillier ciphertexts carry no key id, so a bare
/// object or array under another key decrypts to noise, usually an overflow).
///
/// # Errors
/// [`PheJsonError::Json`] for another shape; [`PheJsonError::WrongKey`] for a document of
/// another public key; [`PheJsonError::Field`] for a `public_key` whose `n` does not
/// decode; the errors of [`PheCiphertext::from_json`] for each ciphertext.
pub fn ciphertexts_from_json(key: &PublicKey, text: &str) -> Result<Vec<PheCiphertext>> {
    const WHAT: &str = "ciphertexts";
    let doc: Value = serde_json::from_str(text).map_err(json_error(WHAT))?;
    let shape = || PheJsonError::Field {
        what: WHAT,
        field: "ciphertexts",
        reason: "expected an array of {\"v\", \"e\"} objects".into(),
    };
    let list = match &doc {
        Value::Object(o) if o.contains_key("v") => return Ok(vec![one(key, &doc)?]),
        Value::Object(o) => {
            if let Some(pk) = o.get("public_key") {
                let jwk: PublicJwk =
                    serde_json::from_value(pk.clone()).map_err(json_error("public key"))?;
                check_kty("public key", &jwk.kty)?;
                let n = base64_to_int("public key", "n", &jwk.n)?;
                if &n != key.n() {
                    return Err(PheJsonError::WrongKey {
                        expected: key.id(),
                        found: crate::KeyId::of(&n),
                    });
                }
            }
            o.get("ciphertexts")
                .and_then(Value::as_array)
                .ok_or_else(shape)?
        }
        Value::Array(a) => a,
        _ => return Err(shape()),
    };
    list.iter().map(|c| one(key, c)).collect()
}

/// One `{"v", "e"}` object.
fn one(key: &PublicKey, v: &Value) -> Result<PheCiphertext> {
    PheCiphertext::from_json(key, &v.to_string())
}

/// `m · 16^e` as an `f64`: exact big-integer shifts, one rounding at the end.
fn scale(m: &BigInt, e: i32) -> f64 {
    let shift = 4 * i64::from(e);
    if shift >= 0 {
        let shifted = m << usize::try_from(shift).unwrap_or(usize::MAX);
        shifted.to_f64().unwrap_or(f64::NAN)
    } else {
        // Keep 64 significant bits above the point before converting.
        let bits = i64::try_from(m.bits()).unwrap_or(i64::MAX);
        let drop = (bits - 64).max(0);
        let kept = m >> usize::try_from(drop).unwrap_or(0);
        let mut f = kept.to_f64().unwrap_or(f64::NAN);
        // f · 2^exp in steps of 2^±1000 (exact until the result itself underflows).
        let mut exp = drop + shift;
        while exp < -1000 && f != 0.0 {
            f *= 2f64.powi(-1000);
            exp += 1000;
        }
        while exp > 1000 && f.is_finite() {
            f *= 2f64.powi(1000);
            exp -= 1000;
        }
        f * 2f64.powi(i32::try_from(exp.clamp(-1000, 1000)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_python_paillier() {
        // phe.util.int_to_base64(65537) == "AQAB", (2**16) -> "AQAA", 255 -> "_w"
        assert_eq!(int_to_base64(&BigUint::from(65537u32)), "AQAB");
        assert_eq!(int_to_base64(&BigUint::from(255u32)), "_w");
        assert_eq!(
            base64_to_int("t", "n", "_w==").unwrap(),
            BigUint::from(255u32)
        );
        assert!(base64_to_int("t", "n", "a+b/").is_err());
        assert!(base64_to_int("t", "n", "AA").is_err());
    }

    #[test]
    fn scale_is_exact_for_powers_of_two() {
        assert_eq!(scale(&BigInt::from(3), 0), 3.0);
        assert_eq!(scale(&BigInt::from(-1), 1), -16.0);
        assert_eq!(scale(&(BigInt::one() << 128usize), -32), 1.0);
        assert_eq!(scale(&-(BigInt::one() << 127usize), -32), -0.5);
    }

    #[test]
    fn factoring_from_lambda_and_from_phi() {
        let (p, q) = (BigUint::from(1_000_003u32), BigUint::from(999_983u32));
        let n = &p * &q;
        let phi = (&p - 1u32) * (&q - 1u32);
        let lcm = (&p - 1u32).lcm(&(&q - 1u32));
        for k in [phi, lcm] {
            let (a, b) = factor_from_lambda(&n, &k).unwrap();
            assert_eq!(&a * &b, n);
            assert!(a == p || a == q);
        }
        assert!(factor_from_lambda(&n, &BigUint::from(12345u32)).is_none());
    }
}
