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
    /// `0 < c < N²` and `gcd(c, N) = 1` (docs/DESIGN.md, "Validation").
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

    /// [`PublicKey::validate`] over a slice, with one gcd for the whole slice: the key and
    /// range checks run per ciphertext, then `gcd(Π_k c_k mod N, N) = 1`, which holds
    /// exactly when every `gcd(c_k, N) = 1` (a prime factor of `N` divides the product
    /// iff it divides a factor). The products are reduced modulo `N` in parallel; only
    /// when the product fails are the ciphertexts checked one by one, to name the first.
    /// For 784 ciphertexts of a 2048-bit key this is a few milliseconds instead of one
    /// 120 µs gcd each.
    ///
    /// # Errors
    /// [`Error::KeyMismatch`] or [`Error::InvalidCiphertext`] (`"not in (0, N^2)"`) for
    /// the first ciphertext failing the key or range check; else
    /// [`Error::InvalidCiphertext`] (`"gcd(c, N) != 1"`) for the first one sharing a
    /// factor with `N`.
    pub fn validate_all(&self, cs: &[Ciphertext]) -> Result<()> {
        cs.iter().try_for_each(|c| self.check_range(c))?;
        let n = self.n();
        let product = cs
            .par_iter()
            .fold(BigUint::one, |acc, c| (acc * &c.c) % n)
            .reduce(BigUint::one, |a, b| (a * b) % n);
        if crate::arith::coprime(&product, n) {
            return Ok(());
        }
        cs.iter().try_for_each(|c| self.validate(c))?;
        // Unreachable (some factor shares a prime with N); refuse rather than assume.
        Err(Error::InvalidCiphertext {
            reason: "gcd(c, N) != 1",
        })
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
        let inverse = crate::arith::inv_mod_square(&c.c, self.n(), self.n_squared()).ok_or(
            Error::InvalidCiphertext {
                reason: "not invertible modulo N^2",
            },
        )?;
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
        self.product_by_rows(w, a, "columns")
    }

    /// `Π_k [a_k]^{w_jk}` for every row `j` of `w` (`w.ncols()` ciphertexts): the engine of
    /// [`PublicKey::matvec`] and, on `Wᵀ`, [`PublicKey::vecmat`]; `lines` names what of the
    /// caller's matrix the ciphertexts match, for the error.
    fn product_by_rows(
        &self,
        w: ArrayView2<'_, BigInt>,
        a: &[Ciphertext],
        lines: &str,
    ) -> Result<Vec<Ciphertext>> {
        if w.ncols() != a.len() {
            return Err(Error::ShapeMismatch {
                expected: format!(
                    "{} ciphertexts (the matrix has {} {lines})",
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
        self.product_by_rows(w.t(), d, "rows")
    }

    /// Row-packed matrix–vector product for one sample (paper Alg. 1 at inference, with
    /// the row packing of docs/DESIGN.md "Batches and packing"): for `W` of shape
    /// `m × n`, `n` ciphertexts `[a_k]` and one plaintext offset `c_j` per row, the
    /// `⌈m/k⌉` ciphertexts
    /// `[Σ_{j ∈ chunk} (W_j·a + c_j)·2^{β·(j − j₀)}]` over consecutive chunks of
    /// `k = rows_per_ciphertext` rows starting at `j₀`, with `β = slot_bits`. The caller
    /// chooses `β` and the offsets so that every slot stays in `[0, 2^β)` (the server adds
    /// `2^(β−1)`; docs/DESIGN.md, "Batches and packing").
    ///
    /// Equal to [`PublicKey::matvec`], [`PublicKey::add_plain`] per row and the Horner
    /// packing `acc ← acc^{2^β}·[z_j]` from the last row of a chunk down, and faster on
    /// two or more threads: a chunk's Horner chain starts as soon as its last row is ready,
    /// while the other threads compute the next rows (rows in parallel with the chain,
    /// chunks in parallel with rayon). The result does not depend on the number of threads.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `a.len() ≠ n`, `offsets.len() ≠ m` or
    /// `rows_per_ciphertext = 0`; [`Error::PlaintextOutOfRange`] for an offset out of
    /// range; [`Error::KeyMismatch`] or [`Error::InvalidCiphertext`] for any ciphertext.
    pub fn matvec_row_packed(
        &self,
        w: ArrayView2<'_, BigInt>,
        a: &[Ciphertext],
        offsets: &[BigInt],
        slot_bits: u32,
        rows_per_ciphertext: usize,
    ) -> Result<Vec<Ciphertext>> {
        if w.ncols() != a.len() || w.nrows() != offsets.len() || rows_per_ciphertext == 0 {
            return Err(Error::ShapeMismatch {
                expected: format!(
                    "{} ciphertexts, {} offsets and at least one row per ciphertext",
                    w.ncols(),
                    w.nrows()
                ),
                found: format!(
                    "{} ciphertexts, {} offsets, {rows_per_ciphertext} rows per ciphertext",
                    a.len(),
                    offsets.len()
                ),
            });
        }
        let md = self.modulus();
        let nudes = offsets
            .iter()
            .map(|c| Ok(md.elem(&self.nude(&self.encode(c)?))))
            .collect::<Result<Vec<Elem>>>()?;
        let rows: Vec<Vec<&BigInt>> = (0..w.nrows())
            .map(|j| (0..w.ncols()).map(|k| &w[[j, k]]).collect())
            .collect();
        let product = RowProducts::new(self, &rows, a)?;
        let row = |j: usize| {
            let mut r = product.row(j);
            md.mul_assign(&mut r, &nudes[j]);
            r
        };
        let starts: Vec<usize> = (0..w.nrows()).step_by(rows_per_ciphertext).collect();
        Ok(starts
            .par_iter()
            .map(|&start| {
                let end = (start + rows_per_ciphertext).min(w.nrows());
                let packed = pack_pipelined(md, start, end, slot_bits, &row);
                Ciphertext::new_unchecked(md.to_biguint(&packed), self.id())
            })
            .collect())
    }

    /// `Π_k bases_k^{rows[j][k]}` for every row `j`.
    fn multi_exp_rows(
        &self,
        rows: &[Vec<&BigInt>],
        bases: &[Ciphertext],
    ) -> Result<Vec<Ciphertext>> {
        let product = RowProducts::new(self, rows, bases)?;
        let md = self.modulus();
        Ok((0..rows.len())
            .into_par_iter()
            .map(|j| Ciphertext::new_unchecked(md.to_biguint(&product.row(j)), self.id()))
            .collect())
    }
}

/// The shared state of many multi-exponentiations `Π_k bases_k^{rows[j][k]}` over the same
/// ciphertexts: the window tables, the non-negative exponents and the sign correction
/// (see [`crate::multiexp`]).
enum RowProducts<'m> {
    /// No bases: every product is the trivial encryption of zero, 1.
    Empty(&'m crate::arith::Modulus),
    /// Tables, shifted exponents and the correction `(Π_k a_k)^{−2^B}` if any exponent was
    /// negative.
    Shared {
        shared: SharedBases<'m>,
        exps: Vec<Vec<Vec<u64>>>,
        correction: Option<Elem>,
        modulus: &'m crate::arith::Modulus,
    },
}

impl<'m> RowProducts<'m> {
    fn new(key: &'m PublicKey, rows: &[Vec<&BigInt>], bases: &[Ciphertext]) -> Result<Self> {
        for c in bases {
            key.check_range(c)?;
        }
        let md = key.modulus();
        if bases.is_empty() {
            return Ok(Self::Empty(md));
        }
        let elems: Vec<Elem> = bases.par_iter().map(|c| md.elem(&c.c)).collect();
        let exps = offset_exponents(rows);
        // The tables and the sign correction are independent: build them side by side.
        let (shared, correction) = rayon::join(
            || SharedBases::new(md, &elems, rows.len(), exps.bits),
            || match exps.offset_bits {
                None => Ok(None),
                Some(b) => {
                    // (Π_k a_k)^{-2^b}
                    let mut prod = md.one();
                    for e in &elems {
                        md.mul_assign(&mut prod, e);
                    }
                    md.square_n_assign(&mut prod, u32::try_from(b).unwrap_or(u32::MAX));
                    md.inv_mod_square(&prod, key.n())
                        .map(Some)
                        .ok_or(Error::InvalidCiphertext {
                            reason: "not invertible modulo N^2",
                        })
                }
            },
        );
        let correction = correction?;
        Ok(Self::Shared {
            shared,
            exps: exps.rows,
            correction,
            modulus: md,
        })
    }

    /// Row `j`'s product, as a backend element.
    fn row(&self, j: usize) -> Elem {
        match self {
            Self::Empty(md) => md.one(),
            Self::Shared {
                shared,
                exps,
                correction,
                modulus,
            } => {
                let mut r = shared.multi_exp(&exps[j]);
                if let Some(c) = correction {
                    modulus.mul_assign(&mut r, c);
                }
                r
            }
        }
    }
}

/// Horner packing `acc ← acc^{2^β}·z_j` of rows `end − 1` down to `start`, where `z_j =
/// row(j)`, with the rows computed while the chain runs: a helper (`rayon::join`) claims
/// rows from the top down; the calling thread owns the chain and computes the row it needs
/// itself when nobody has claimed it yet (else it waits for the helper). Rows are claimed
/// once each, so no row is computed twice, and on one thread this is the plain
/// sequential loop.
fn pack_pipelined(
    md: &crate::arith::Modulus,
    start: usize,
    end: usize,
    slot_bits: u32,
    row: &(dyn Fn(usize) -> Elem + Sync),
) -> Elem {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    let ready: Vec<OnceLock<Elem>> = (start..end).map(|_| OnceLock::new()).collect();
    // Rows `start..start + unclaimed` are still to be computed; claims go from the top.
    let unclaimed = AtomicUsize::new(end - start);
    let claim = || -> bool {
        match unclaimed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1)) {
            Ok(u) => {
                let i = u - 1;
                // Each index is claimed once, so the cell is empty.
                let _ = ready[i].set(row(start + i));
                true
            }
            Err(_) => false,
        }
    };
    let (packed, ()) = rayon::join(
        || {
            let mut acc: Option<Elem> = None;
            for i in (0..end - start).rev() {
                let z = loop {
                    if let Some(z) = ready[i].get() {
                        break z;
                    }
                    // Rows above `i` are claimed already, so a claim takes row `i` itself;
                    // if the helper is computing it, wait rather than delay the chain.
                    if unclaimed.load(Ordering::Acquire) <= i || !claim() {
                        std::hint::spin_loop();
                    }
                };
                acc = Some(match acc {
                    None => z.clone(),
                    Some(mut a) => {
                        md.square_n_assign(&mut a, slot_bits);
                        md.mul_assign(&mut a, z);
                        a
                    }
                });
            }
            acc.unwrap_or_else(|| md.one())
        },
        || while claim() {},
    );
    packed
}
