//! Blinded decryption of ciphertexts chosen by the other party.
//!
//! CRT decryption exponentiates the ciphertext itself, `c^{p−1} mod p²` and
//! `c^{q−1} mod q²` (Paillier 1999 §7), with variable-time arithmetic (num-bigint, or
//! GMP's `mpz_powm`). When the other party chooses `c`, the time of those
//! exponentiations could depend on the relation between `c` and the secret primes. The
//! blinded form decrypts `c' = c · s^N mod N²` instead, for a fresh random `s^N` (a DJN
//! obfuscator `h_N^α` computed through CRT, [`PrivateKey::obfuscator_crt`]): `c'` encrypts
//! the same plaintext, and is uniformly distributed among the encryptions of it (under the
//! DJN short-exponent assumption), so the exponentiation's input no longer depends on the
//! chooser's `c`. The exponents `p − 1`, `q − 1` are fixed per key; their variable-time
//! use remains (see `docs/DESIGN.md` "Side channels").
//!
//! Cost: one CRT obfuscator (a fixed-base table walk modulo `p²` and `q²`) and one
//! multiplication modulo `N²` per decryption, measured by `gelunet bench paillier`.
//!
//! ```
//! use gelunet_paillier::{BigInt, PrivateKey};
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let key = PrivateKey::generate_insecure_for_tests(512, &mut rng).unwrap();
//! let c = key.public_key().encrypt(&BigInt::from(-42), &mut rng).unwrap();
//! assert_eq!(key.decrypt_blinded(&c, &mut rng).unwrap(), BigInt::from(-42));
//! ```

use num_bigint::{BigInt, BigUint};
use rand::{CryptoRng, RngCore};

use crate::ciphertext::Ciphertext;
use crate::error::Result;
use crate::keys::PrivateKey;

impl PrivateKey {
    /// [`PrivateKey::decrypt_raw`] of `c · s^N mod N²` for a fresh obfuscator `s^N`
    /// (module docs): the same plaintext in `[0, N)`, with the exponentiations' input
    /// independent of `c`.
    ///
    /// # Errors
    /// As [`PrivateKey::decrypt_raw`]: [`crate::Error::KeyMismatch`] for a ciphertext under
    /// another key, [`crate::Error::InvalidCiphertext`] if `c ∉ (0, N²)`.
    pub fn decrypt_raw_blinded<R: RngCore + CryptoRng + ?Sized>(
        &self,
        c: &Ciphertext,
        rng: &mut R,
    ) -> Result<BigUint> {
        let pk = self.public_key();
        pk.check_range(c)?;
        let obf = self.obfuscator_crt(rng);
        let blind = pk.encrypt_with_obfuscator(&BigInt::from(0u8), &obf)?;
        self.decrypt_raw(&pk.add(c, &blind)?)
    }

    /// [`PrivateKey::decrypt_raw_blinded`], decoded to a signed integer
    /// ([`crate::PublicKey::decode`]).
    ///
    /// # Errors
    /// As [`PrivateKey::decrypt_raw_blinded`].
    pub fn decrypt_blinded<R: RngCore + CryptoRng + ?Sized>(
        &self,
        c: &Ciphertext,
        rng: &mut R,
    ) -> Result<BigInt> {
        Ok(self.public_key().decode(&self.decrypt_raw_blinded(c, rng)?))
    }

    /// Blinded raw decryption of a batch with rayon: one blinding factor per ciphertext,
    /// drawn in order from `rng` before the parallel part, so the result does not depend
    /// on the number of threads.
    ///
    /// # Errors
    /// The first error of [`PrivateKey::decrypt_raw_blinded`]; every ciphertext is checked
    /// before any is decrypted.
    pub fn decrypt_raw_blinded_batch<R: RngCore + CryptoRng + ?Sized>(
        &self,
        cs: &[Ciphertext],
        rng: &mut R,
    ) -> Result<Vec<BigUint>> {
        use rayon::prelude::*;
        let pk = self.public_key();
        for c in cs {
            pk.check_range(c)?;
        }
        let obfs = self.obfuscators_crt(cs.len(), rng);
        cs.par_iter()
            .zip(obfs.par_iter())
            .map(|(c, o)| {
                let blind = pk.encrypt_with_obfuscator(&BigInt::from(0u8), o)?;
                self.decrypt_raw(&pk.add(c, &blind)?)
            })
            .collect()
    }
}
