//! serde for big integers as strings or bytes, never as JSON numbers: a lowercase hex
//! string in human-readable formats (JSON), big-endian bytes in binary ones (postcard).
//! Use with `#[serde(with = "gelunet_paillier::serde_biguint")]`.

use num_bigint::BigUint;
use serde::de::{Error as _, Visitor};
use serde::{Deserializer, Serializer};

/// Largest accepted encoding, in bytes (a 4096-bit key's `N²` is 1024 bytes).
pub const MAX_BYTES: usize = 4096;

/// Serializes `x` as hex (human-readable) or big-endian bytes.
///
/// # Errors
/// Those of the serializer.
pub fn serialize<S: Serializer>(x: &BigUint, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&x.to_str_radix(16))
    } else {
        s.serialize_bytes(&x.to_bytes_be())
    }
}

/// Deserializes what [`serialize`] wrote.
///
/// # Errors
/// A deserializer error for a non-hex string, an empty value or one over [`MAX_BYTES`].
pub fn deserialize<'a, D: Deserializer<'a>>(d: D) -> Result<BigUint, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BigUint;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a big integer as a hex string or big-endian bytes")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BigUint, E> {
            if v.is_empty() || v.len() > 2 * MAX_BYTES {
                return Err(E::custom("big integer: empty or too long hex string"));
            }
            BigUint::parse_bytes(v.as_bytes(), 16)
                .ok_or_else(|| E::custom("big integer: not a hex string"))
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BigUint, E> {
            if v.is_empty() || v.len() > MAX_BYTES {
                return Err(E::custom("big integer: empty or too long byte string"));
            }
            Ok(BigUint::from_bytes_be(v))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BigUint, E> {
            self.visit_bytes(&v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BigUint, A::Error> {
            let mut bytes = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if bytes.len() == MAX_BYTES {
                    return Err(A::Error::custom("big integer: too long byte string"));
                }
                bytes.push(b);
            }
            self.visit_bytes(&bytes)
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V)
    } else {
        d.deserialize_bytes(V)
    }
}
