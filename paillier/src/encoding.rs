//! Signed fixed-point encoding at a power-of-two scale.
//!
//! A real `x` at scale `2^f` is the integer `round(x · 2^f)` (ties away from zero). The
//! encoding refuses non-finite values and magnitudes of `max_bits` bits or more instead of
//! wrapping: the most common complaint about python-paillier is silent overflow. Signed
//! integers then enter `Z_N` through [`crate::PublicKey::encode`] (`x < 0 ↦ N + x`).

use num_bigint::BigInt;
use num_traits::{FromPrimitive, ToPrimitive};

use crate::{Error, Result};

/// `round(x · 2^frac_bits)` as a signed integer whose magnitude stays below
/// `2^max_bits`.
///
/// # Errors
/// [`Error::EncodingOutOfRange`] for NaN, ±∞ or a magnitude `≥ 2^max_bits`.
///
/// ```
/// use gelunet_paillier::encoding::encode_f64;
/// assert_eq!(encode_f64(-1.5, 4, 16).unwrap(), (-24).into());
/// assert!(encode_f64(f64::NAN, 4, 16).is_err());
/// assert!(encode_f64(4096.0, 4, 16).is_err()); // 4096·16 = 2^16 does not fit
/// ```
pub fn encode_f64(x: f64, frac_bits: u32, max_bits: u64) -> Result<BigInt> {
    let err = || Error::EncodingOutOfRange {
        value: x,
        frac_bits,
        max_bits,
    };
    if !x.is_finite() {
        return Err(err());
    }
    let scaled = x * 2f64.powi(i32::try_from(frac_bits).map_err(|_| err())?);
    if !scaled.is_finite() {
        return Err(err());
    }
    let v = BigInt::from_f64(scaled.round()).ok_or_else(err)?;
    if v.bits() > max_bits {
        return Err(err());
    }
    Ok(v)
}

/// `v / 2^frac_bits` as the nearest `f64` (exact when `|v| < 2^53`).
pub fn decode_f64(v: &BigInt, frac_bits: u32) -> f64 {
    let (hi, shift) = if v.bits() > 1000 {
        let s = v.bits() - 1000;
        (v >> s, s as i32)
    } else {
        (v.clone(), 0)
    };
    let f = hi.to_f64().unwrap_or(f64::NAN);
    f * 2f64.powi(shift) / 2f64.powi(frac_bits as i32)
}
