//! Ciphertexts, their validation, and the homomorphic operations.

use std::fmt;

use ndarray::ArrayView2;
use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, Zero};
use rayon::prelude::*;

use crate::arith::Elem;
use crate::keys::{KeyId, PublicKey};
use crate::multiexp::{offset_exponents, SharedBases};
use crate::{Error, Result};

/// A Paillier ciphertext `c ∈ Z*_{N²}` with the fingerprint of the key it is under.
///
/// Serialized (serde) as `{ key, c }` with `c` as a hex string in human-readable formats
/// and big-endian bytes otherwise. A deserialized ciphertext comes from someone else:
/// check it with [`PublicKey::validate`] before use.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ciphertext {
    key: KeyId,
    #[serde(with = "crate::serde_biguint")]
    c: BigUint,
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.c.to_str_radix(16);
        let head = &hex[..hex.len().min(12)];
        write!(
            f,
            "Ciphertext({}, {head}…, {} bits)",
            self.key,
            self.c.bits()
        )
    }
}

impl Ciphertext {
    pub(crate) fn new_unchecked(c: BigUint, key: KeyId) -> Self {
        Self { key, c }
    }

    /// The integer `c`.
    pub fn value(&self) -> &BigUint {
        &self.c
    }

    /// The fingerprint of the key this ciphertext claims to be under.
    pub fn key_id(&self) -> KeyId {
        self.key
    }

    /// Size of the serialized integer, in bytes.
    pub fn byte_len(&self) -> usize {
        self.c.bits().div_ceil(8) as usize
    }
}

/// A ciphertext with its inverse modulo `N²`, for repeated multiplication by scalars of
/// either sign: `c ⊗ k = c^k` for `k ≥ 0` and `(c^{−1})^{|k|}` for `k < 0`. The inverse is
/// computed once, in [`PublicKey::prepare`].
#[derive(Clone, Debug)]
pub struct PreparedCiphertext {
    c: Ciphertext,
    inverse: BigUint,
}

impl PreparedCiphertext {
    /// The ciphertext itself.
    pub fn ciphertext(&self) -> &Ciphertext {
        &self.c
    }
}

impl PublicKey {
    /// Cheap checks for a ciphertext used in an operation: same key, `0 < c < N²`.
    pub(crate) fn check_range(&self, c: &Ciphertext) -> Result<()> {
        if c.key != self.id() {
            return Err(Error::KeyMismatch {
                expected: self.id(),
                found: c.key,
            });
        }
        if c.c.is_zero() || &c.c >= self.n_squared() {
            return Err(Error::InvalidCiphertext {
                reason: "not in (0, N^2)",
            });
        }
        Ok(())
    }

    /// Full validation of a ciphertext received from another party: it names this key,
    /// `0 < c < N²` and `gcd(c, N) = 1` (DESIGN.md, "Validation").
    ///
    /// # Errors
    /// [`Error::KeyMismatch`], or [`Error::InvalidCiphertext`] naming the failed check.
    pub fn validate(&self, c: &Ciphertext) -> Result<()> {
        self.check_range(c)?;
        if !crate::arith::coprime(&c.c, self.n()) {
            return Err(Error::InvalidCiphertext {
                reason: "gcd(c, N) != 1",
            });
        }
        Ok(())
    }

    /// [`PublicKey::validate`] over a slice, in parallel.
    ///
    /// # Errors
    /// The first failure, with its index in `ShapeMismatch`-free form: the error of the
    /// first invalid ciphertext.
    pub fn validate_all(&self, cs: &[Ciphertext]) -> Result<()> {
        cs.par_iter().try_for_each(|c| self.validate(c))
    }

    /// Wraps a raw integer received from another party as a ciphertext under this key,
    /// after [`PublicKey::validate`].
    ///
    /// # Errors
    /// As [`PublicKey::validate`].
    pub fn ciphertext_from_raw(&self, c: BigUint) -> Result<Ciphertext> {
        let ct = Ciphertext::new_unchecked(c, self.id());
        self.validate(&ct)?;
        Ok(ct)
    }

    /// `[a] ⊕ [b] = a·b mod N²`, an encryption of `a + b mod N`.
    ///
    /// # Errors
    /// [`Error::KeyMismatch`] or [`Error::InvalidCiphertext`] for either operand.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_range(a)?;
        self.check_range(b)?;
        Ok(Ciphertext::new_unchecked(
            (&a.c * &b.c) % self.n_squared(),
            self.id(),
        ))
    }

    /// `[c] ⊕ m = c·(1 + m·N) mod N²`, an encryption of `c + m` for a signed plaintext
    /// `m`: one multiplication, no exponentiation.
    ///
    /// # Errors
    /// [`Error::PlaintextOutOfRange`] if `|m| > (N − 1)/2`; the errors of the checks on `c`.
    pub fn add_plain(&self, c: &Ciphertext, m: &BigInt) -> Result<Ciphertext> {
        self.check_range(c)?;
        let nude = self.nude(&self.encode(m)?);
        Ok(Ciphertext::new_unchecked(
            (&c.c * nude) % self.n_squared(),
            self.id(),
        ))
    }

    /// Computes `c^{−1} mod N²` once, for [`PublicKey::mul_scalar_prepared`].
    ///
    /// # Errors
    /// [`Error::InvalidCiphertext`] if `c` is not invertible (then `gcd(c, N) ≠ 1`), and the
    /// range and key checks.
    pub fn prepare(&self, c: &Ciphertext) -> Result<PreparedCiphertext> {
        self.check_range(c)?;
        let inverse =
            c.c.modinv(self.n_squared())
                .ok_or(Error::InvalidCiphertext {
                    reason: "not invertible modulo N^2",
                })?;
        Ok(PreparedCiphertext {
            c: c.clone(),
            inverse,
        })
    }

    /// `[c] ⊗ k`, an encryption of `k·m mod N`, for a signed `k`, using the precomputed
    /// inverse when `k < 0`.
    ///
    /// # Errors
    /// [`Error::KeyMismatch`] if `c` was prepared under another key.
    pub fn mul_scalar_prepared(&self, c: &PreparedCiphertext, k: &BigInt) -> Result<Ciphertext> {
        self.check_range(&c.c)?;
        let md = self.modulus();
        let base = match k.sign() {
            Sign::Minus => &c.inverse,
            _ => &c.c.c,
        };
        let r = md.pow_vartime(&md.elem(base), k.magnitude());
        Ok(Ciphertext::new_unchecked(md.to_biguint(&r), self.id()))
    }

    /// `[c] ⊗ k = c^k mod N²` for a signed `k` (a negative `k` inverts `c` first; use
    /// [`PublicKey::prepare`] to reuse the inverse across many scalars).
    ///
    /// # Errors
    /// As [`PublicKey::prepare`].
    pub fn mul_scalar(&self, c: &Ciphertext, k: &BigInt) -> Result<Ciphertext> {
        if k.sign() == Sign::Minus {
            let prepared = self.prepare(c)?;
            self.mul_scalar_prepared(&prepared, k)
        } else {
            self.check_range(c)?;
            let md = self.modulus();
            let r = md.pow_vartime(&md.elem(&c.c), k.magnitude());
            Ok(Ciphertext::new_unchecked(md.to_biguint(&r), self.id()))
        }
    }

    /// Matrix–vector product `W ⊗ [a]`: for `W` of shape `m × n` (signed integers) and `n`
    /// ciphertexts, the `m` ciphertexts `[Σ_k w_jk·a_k]_j = Π_k [a_k]^{w_jk}` (paper Alg. 1,
    /// the server's forward pass).
    ///
    /// Shared multi-exponentiation (Straus): one window table per ciphertext, built once and
    /// used by every row; signed weights cost one modular inverse for the whole product
    /// (see [`crate::multiexp`] docs). Rows run in parallel with rayon; the result does not
    /// depend on the number of threads.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `a.len() ≠ n`; [`Error::KeyMismatch`] or
    /// [`Error::InvalidCiphertext`] for any ciphertext.
    pub fn matvec(&self, w: ArrayView2<'_, BigInt>, a: &[Ciphertext]) -> Result<Vec<Ciphertext>> {
        if w.ncols() != a.len() {
            return Err(Error::ShapeMismatch {
                expected: format!(
                    "{} ciphertexts (the matrix has {} columns)",
                    w.ncols(),
                    w.ncols()
                ),
                found: format!("{} ciphertexts", a.len()),
            });
        }
        let rows: Vec<Vec<&BigInt>> = (0..w.nrows())
            .map(|j| (0..w.ncols()).map(|k| &w[[j, k]]).collect())
            .collect();
        self.multi_exp_rows(&rows, a)
    }

    /// Vector–matrix product `[δ]ᵀ ⊗ W`: for `m` ciphertexts and `W` of shape `m × n`, the
    /// `n` ciphertexts `[Σ_j δ_j·w_jk]_k = Π_j [δ_j]^{w_jk}` (paper Alg. 2, the server's
    /// backward products). Same engine as [`PublicKey::matvec`] on `Wᵀ`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `d.len() ≠ m`; the ciphertext checks as in `matvec`.
    pub fn vecmat(&self, d: &[Ciphertext], w: ArrayView2<'_, BigInt>) -> Result<Vec<Ciphertext>> {
        if w.nrows() != d.len() {
            return Err(Error::ShapeMismatch {
                expected: format!(
                    "{} ciphertexts (the matrix has {} rows)",
                    w.nrows(),
                    w.nrows()
                ),
                found: format!("{} ciphertexts", d.len()),
            });
        }
        let rows: Vec<Vec<&BigInt>> = (0..w.ncols())
            .map(|k| (0..w.nrows()).map(|j| &w[[j, k]]).collect())
            .collect();
        self.multi_exp_rows(&rows, d)
    }

    /// `Π_k bases_k^{rows[j][k]}` for every row `j`.
    fn multi_exp_rows(
        &self,
        rows: &[Vec<&BigInt>],
        bases: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>> {
        for c in bases {
            self.check_range(c)?;
        }
        let md = self.modulus();
        if bases.is_empty() {
            // Empty sums: encryptions of zero with the trivial obfuscator 1.
            return Ok(rows
                .iter()
                .map(|_| Ciphertext::new_unchecked(BigUint::one(), self.id()))
                .collect());
        }
        let elems: Vec<Elem> = bases.par_iter().map(|c| md.elem(&c.c)).collect();
        let exps = offset_exponents(rows);
        let shared = SharedBases::new(md, &elems, rows.len(), exps.bits);
        let correction = match exps.offset_bits {
            None => None,
            Some(b) => {
                // (Π_k a_k)^{-2^b}
                let mut prod = md.one();
                for e in &elems {
                    md.mul_assign(&mut prod, e);
                }
                for _ in 0..b {
                    md.square_assign(&mut prod);
                }
                Some(md.inv(&prod).ok_or(Error::InvalidCiphertext {
                    reason: "not invertible modulo N^2",
                })?)
            }
        };
        Ok(exps
            .rows
            .par_iter()
            .map(|row| {
                let mut r = shared.multi_exp(row);
                if let Some(c) = &correction {
                    md.mul_assign(&mut r, c);
                }
                Ciphertext::new_unchecked(md.to_biguint(&r), self.id())
            })
            .collect())
    }
}
