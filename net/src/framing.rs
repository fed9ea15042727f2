//! Length-prefixed postcard framing over QUIC streams, and [`Channel`].
//!
//! Wire format of one message: a 4-byte big-endian payload length `n`, followed by `n` bytes
//! of [postcard](https://docs.rs/postcard)-encoded payload.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{NetError, Result};

/// Size of the length prefix in bytes.
pub const LEN_PREFIX: usize = 4;

/// Largest frame a server reads from a connection that has not authenticated yet
/// (`Register`, and the `ClientHello` that follows it, whose key is at most 4096 bits):
/// 64 KiB. After authentication the limit follows from the agreed model spec
/// (`ModelSpec::max_message_len`).
pub const PREAUTH_MAX_FRAME: usize = 64 * 1024;

/// Payload bytes are read in pieces of at most this size, so that a peer announcing a large
/// frame and then stalling or finishing early only costs us what it actually sent.
const READ_CHUNK: usize = 1024 * 1024;

/// Serializes `msg` with postcard and writes it as one frame.
///
/// Returns the number of bytes written, including the 4-byte prefix.
///
/// # Errors
/// [`NetError::Serialize`] if serialization fails, [`NetError::FrameTooLarge`] if the payload
/// does not fit a 32-bit length, and stream/connection errors
/// ([`NetError::ConnectionLost`], [`NetError::StreamStopped`], ...) from the write.
pub async fn send_message<T: Serialize + ?Sized>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<usize> {
    let frame = encode_frame(msg)?;
    send.write_all(&frame).await?;
    Ok(frame.len())
}

/// Encodes `msg` as a complete frame (prefix + payload), as [`send_message`] writes it.
///
/// # Errors
/// [`NetError::Serialize`] if serialization fails, [`NetError::FrameTooLarge`] if the
/// payload does not fit a 32-bit length.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>> {
    let mut frame = postcard::to_extend(msg, vec![0u8; LEN_PREFIX]).map_err(NetError::Serialize)?;
    let len = frame.len() - LEN_PREFIX;
    let prefix = u32::try_from(len).map_err(|_| NetError::FrameTooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    frame[..LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Reads one frame and decodes it as `T`.
///
/// Returns the message and the number of bytes consumed, including the 4-byte prefix.
///
/// # Errors
/// * [`NetError::Closed`] if the stream finished cleanly before the first byte of a frame;
/// * [`NetError::FrameTooLarge`] if the announced length exceeds `max_len` (the payload is
///   not read; the stream is then out of sync and should be abandoned);
/// * [`NetError::Truncated`] if the stream finished inside the prefix or the payload;
/// * [`NetError::Malformed`] if the payload does not decode as `T` or has trailing bytes;
/// * connection/stream errors ([`NetError::ConnectionLost`], [`NetError::StreamReset`], ...).
pub async fn recv_message<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_len: usize,
) -> Result<(T, usize)> {
    let mut prefix = [0u8; LEN_PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(NetError::Closed),
        Err(quinn::ReadExactError::FinishedEarly(received)) => {
            return Err(NetError::Truncated {
                expected: LEN_PREFIX,
                received,
            })
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = frame_len(prefix, max_len)?;

    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        let start = payload.len();
        let end = start + (len - start).min(READ_CHUNK);
        payload.resize(end, 0);
        match recv.read_exact(&mut payload[start..end]).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                return Err(NetError::Truncated {
                    expected: len,
                    received: start + n,
                })
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
        }
    }

    let msg = decode_payload(&payload)?;
    Ok((msg, LEN_PREFIX + len))
}

/// The payload length a prefix announces, refused above `max_len`.
fn frame_len(prefix: [u8; LEN_PREFIX], max_len: usize) -> Result<usize> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > max_len {
        return Err(NetError::FrameTooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Decodes one whole frame held in memory (prefix and payload), as [`recv_message`] does
/// from a stream: for tests and fuzzing of the wire format.
///
/// # Errors
/// [`NetError::Truncated`] if `bytes` ends inside the prefix or the payload,
/// [`NetError::FrameTooLarge`] above `max_len`, [`NetError::Malformed`] for a payload that
/// does not decode as `T`, or bytes after the frame.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T> {
    let prefix: [u8; LEN_PREFIX] = bytes
        .get(..LEN_PREFIX)
        .and_then(|p| p.try_into().ok())
        .ok_or(NetError::Truncated {
            expected: LEN_PREFIX,
            received: bytes.len(),
        })?;
    let len = frame_len(prefix, max_len)?;
    let payload = &bytes[LEN_PREFIX..];
    if payload.len() < len {
        return Err(NetError::Truncated {
            expected: len,
            received: payload.len(),
        });
    }
    if payload.len() > len {
        return Err(NetError::Malformed {
            len,
            reason: format!("{} bytes after the frame", payload.len() - len),
        });
    }
    decode_payload(payload)
}

fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let (msg, rest) = postcard::take_from_bytes::<T>(payload).map_err(|e| NetError::Malformed {
        len: payload.len(),
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(NetError::Malformed {
            len: payload.len(),
            reason: format!("{} trailing bytes after the message", rest.len()),
        });
    }
    Ok(msg)
}

/// One long-lived bidirectional stream carrying framed request/response messages, with
/// byte counters (prefixes included).
///
/// QUIC only announces a new stream to the peer when data is sent on it, so the side that
/// [`open`](Channel::open)s the channel (the client) must send the first message; the peer's
/// [`accept`](Channel::accept) completes when that message arrives.
///
/// After an error other than [`NetError::Malformed`] (whose frame was consumed entirely),
/// the stream is out of sync or dead and the channel should be dropped.
#[derive(Debug)]
pub struct Channel {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame_len: usize,
    bytes_sent: u64,
    bytes_received: u64,
}

impl Channel {
    /// Wraps existing stream halves. `max_frame_len` bounds incoming payloads.
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream, max_frame_len: usize) -> Self {
        Self {
            send,
            recv,
            max_frame_len,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Opens a new bidirectional stream on `connection` (client side).
    ///
    /// # Errors
    /// Connection errors (e.g. [`NetError::ConnectionLost`]).
    pub async fn open(connection: &quinn::Connection, max_frame_len: usize) -> Result<Self> {
        let (send, recv) = connection.open_bi().await?;
        Ok(Self::new(send, recv, max_frame_len))
    }

    /// Waits for the peer to open a bidirectional stream (server side). Completes once the
    /// peer has sent its first bytes on it.
    ///
    /// # Errors
    /// Connection errors (e.g. [`NetError::ConnectionLost`] if the client goes away first).
    pub async fn accept(connection: &quinn::Connection, max_frame_len: usize) -> Result<Self> {
        let (send, recv) = connection.accept_bi().await?;
        Ok(Self::new(send, recv, max_frame_len))
    }

    /// Sends one message; returns the bytes written (prefix included).
    ///
    /// # Errors
    /// See [`send_message`].
    pub async fn send<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<usize> {
        let n = send_message(&mut self.send, msg).await?;
        self.bytes_sent += n as u64;
        Ok(n)
    }

    /// Receives one message.
    ///
    /// # Errors
    /// See [`recv_message`]; [`NetError::Closed`] means the peer finished the stream cleanly.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        match recv_message(&mut self.recv, self.max_frame_len).await {
            Ok((msg, n)) => {
                self.bytes_received += n as u64;
                Ok(msg)
            }
            Err(e) => {
                if let NetError::Malformed { len, .. } = &e {
                    // The frame was consumed even though it did not decode.
                    self.bytes_received += (LEN_PREFIX + len) as u64;
                }
                Err(e)
            }
        }
    }

    /// Like [`Channel::recv`], but fails with [`NetError::Timeout`] after `limit`.
    ///
    /// # Errors
    /// See [`Channel::recv`]. After a timeout the stream may hold a partly read frame; drop
    /// the channel.
    pub async fn recv_timeout<T: DeserializeOwned>(&mut self, limit: Duration) -> Result<T> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| NetError::Timeout {
                what: "a message",
                after: limit,
            })?
    }

    /// Sends `request` and waits for one response message.
    ///
    /// # Errors
    /// See [`Channel::send`] and [`Channel::recv`].
    pub async fn request<Req, Resp>(&mut self, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.send(request).await?;
        self.recv().await
    }

    /// Total bytes sent on this channel (length prefixes included).
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Total bytes received on this channel (length prefixes included).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Largest payload accepted by [`Channel::recv`].
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the largest payload [`Channel::recv`] accepts: a server starts a connection
    /// at [`PREAUTH_MAX_FRAME`] and raises it once the peer has authenticated.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }

    /// Finishes the sending half (the peer's `recv` then returns [`NetError::Closed`]) and
    /// waits until the peer has acknowledged all data sent, so that closing the connection
    /// afterwards does not lose the last messages.
    ///
    /// # Errors
    /// [`NetError::StreamClosed`] if already finished; [`NetError::StreamStopped`] if the
    /// peer stopped reading; connection errors.
    pub async fn finish(&mut self) -> Result<()> {
        self.send.finish()?;
        match self.send.stopped().await? {
            None => Ok(()),
            Some(code) => Err(NetError::StreamStopped {
                code: code.into_inner(),
            }),
        }
    }

    /// Mutable access to the sending half (for custom framing or `reset`).
    pub fn send_stream(&mut self) -> &mut quinn::SendStream {
        &mut self.send
    }

    /// Mutable access to the receiving half.
    pub fn recv_stream(&mut self) -> &mut quinn::RecvStream {
        &mut self.recv
    }

    /// Splits the channel back into its stream halves.
    pub fn into_inner(self) -> (quinn::SendStream, quinn::RecvStream) {
        (self.send, self.recv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_in_memory_decode_or_fail_with_a_typed_error() {
        let frame = encode_frame(&(7u32, String::from("hello"))).unwrap();
        let (n, s): (u32, String) = decode_frame(&frame, PREAUTH_MAX_FRAME).unwrap();
        assert_eq!((n, s.as_str()), (7, "hello"));
        assert!(matches!(
            decode_frame::<(u32, String)>(&frame[..2], PREAUTH_MAX_FRAME),
            Err(NetError::Truncated { expected: 4, .. })
        ));
        assert!(matches!(
            decode_frame::<(u32, String)>(&frame[..frame.len() - 1], PREAUTH_MAX_FRAME),
            Err(NetError::Truncated { .. })
        ));
        let mut long = frame.clone();
        long.push(0);
        assert!(matches!(
            decode_frame::<(u32, String)>(&long, PREAUTH_MAX_FRAME),
            Err(NetError::Malformed { .. })
        ));
        // A length above the limit is refused from the prefix alone.
        let big = u32::try_from(PREAUTH_MAX_FRAME + 1).unwrap().to_be_bytes();
        assert!(matches!(
            decode_frame::<(u32, String)>(&big, PREAUTH_MAX_FRAME),
            Err(NetError::FrameTooLarge { len, max }) if len == PREAUTH_MAX_FRAME + 1 && max == PREAUTH_MAX_FRAME
        ));
        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_frame::<(u32, String)>(&garbage, PREAUTH_MAX_FRAME),
            Err(NetError::Malformed { .. })
        ));
    }
}
