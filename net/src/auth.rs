//! Helpers for application-level client authentication.
//!
//! The handshake message itself is protocol-specific (defined by the protocol crate); this
//! module only provides a timing-safe token comparison and a generic server-side helper.

use std::time::Duration;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{NetError, Result};
use crate::framing::Channel;

/// Compares a presented secret token with the expected one in constant time.
///
/// Both inputs are first hashed with SHA-256, so neither the position of the first
/// difference nor the length of the expected token leaks through timing.
pub fn tokens_equal(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Server side of a first-message handshake: receives one message of type `H` (bounded by
/// `limit`) and passes it to `check`, which returns the authenticated identity (e.g. the
/// client's name) or `None` to refuse.
///
/// `check` should compare secrets with [`tokens_equal`]. Sending an accept/refuse reply is
/// left to the caller because its format is protocol-specific.
///
/// # Errors
/// [`NetError::AuthenticationFailed`] if `check` refuses; [`NetError::Timeout`] and
/// receive errors from [`Channel::recv`].
pub async fn authenticate_server_side<H, Id>(
    channel: &mut Channel,
    limit: Duration,
    check: impl FnOnce(&H) -> Option<Id>,
) -> Result<(H, Id)>
where
    H: DeserializeOwned,
{
    let hello: H = channel.recv_timeout(limit).await?;
    match check(&hello) {
        Some(id) => Ok((hello, id)),
        None => Err(NetError::AuthenticationFailed {
            reason: "credentials refused".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::tokens_equal;

    #[test]
    fn token_comparison() {
        assert!(tokens_equal(b"secret", b"secret"));
        assert!(!tokens_equal(b"secret", b"secreT"));
        assert!(!tokens_equal(b"secret", b"secret2"));
        assert!(!tokens_equal(b"", b"x"));
        assert!(tokens_equal(b"", b""));
    }
}
