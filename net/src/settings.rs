//! QUIC transport tuning.

use std::time::Duration;

use crate::error::{NetError, Result};

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// Transport parameters shared by server and client.
///
/// The defaults are tuned for GELU-Net: a client may wait minutes while the server runs
/// homomorphic computations, and single messages carry large batches of Paillier
/// ciphertexts.
///
/// * QUIC keep-alives (sent by the connection driver task, independently of the
///   application) keep an otherwise idle connection open; the long idle timeout is a safety
///   margin for the case where the runtime is blocked by CPU-bound work. Note that a peer that
///   vanishes without closing its connection is only detected after `idle_timeout`.
/// * The receive windows let a whole ciphertext batch be in flight without stalling on flow
///   control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSettings {
    /// Maximum time without any traffic (keep-alives count) before the connection is dropped.
    /// The effective value is the minimum of both peers' settings. Default: 10 minutes.
    pub idle_timeout: Duration,
    /// Interval of QUIC keep-alive (PING) packets. Must be shorter than `idle_timeout`.
    /// Default: 5 s.
    pub keep_alive_interval: Duration,
    /// Connection-wide receive window in bytes. Default: 64 MiB.
    pub connection_receive_window: u64,
    /// Per-stream receive window in bytes. Default: 16 MiB.
    pub stream_receive_window: u64,
    /// Maximum unacknowledged bytes in flight that we buffer for sending. Default: 64 MiB.
    pub send_window: u64,
    /// Upper bound on the TLS/QUIC handshake (connect and accept). Default: 30 s.
    pub handshake_timeout: Duration,
    /// Largest message payload a [`Channel`](crate::Channel) accepts. Default: 512 MiB.
    pub max_frame_len: usize,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10 * 60),
            keep_alive_interval: Duration::from_secs(5),
            connection_receive_window: 64 * MIB,
            stream_receive_window: 16 * MIB,
            send_window: 64 * MIB,
            handshake_timeout: Duration::from_secs(30),
            max_frame_len: 512 * 1024 * 1024,
        }
    }
}

fn varint(name: &'static str, value: u64) -> Result<quinn::VarInt> {
    quinn::VarInt::from_u64(value).map_err(|_| NetError::InvalidSetting {
        name,
        reason: format!("{value} does not fit in a QUIC variable-length integer (< 2^62)"),
    })
}

impl TransportSettings {
    /// Checks the values and builds the corresponding quinn [`quinn::TransportConfig`].
    ///
    /// # Errors
    /// [`NetError::InvalidSetting`] if a value is zero, out of range, or the keep-alive
    /// interval is not shorter than the idle timeout.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig> {
        if self.idle_timeout.is_zero() {
            return Err(NetError::InvalidSetting {
                name: "idle_timeout",
                reason: "must be non-zero".into(),
            });
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.idle_timeout {
            return Err(NetError::InvalidSetting {
                name: "keep_alive_interval",
                reason: format!(
                    "{:?} must be non-zero and shorter than idle_timeout ({:?})",
                    self.keep_alive_interval, self.idle_timeout
                ),
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(NetError::InvalidSetting {
                name: "handshake_timeout",
                reason: "must be non-zero".into(),
            });
        }
        if self.stream_receive_window == 0
            || self.stream_receive_window > self.connection_receive_window
        {
            return Err(NetError::InvalidSetting {
                name: "stream_receive_window",
                reason: format!(
                    "{} must be non-zero and at most connection_receive_window ({})",
                    self.stream_receive_window, self.connection_receive_window
                ),
            });
        }
        if self.send_window == 0 {
            return Err(NetError::InvalidSetting {
                name: "send_window",
                reason: "must be non-zero".into(),
            });
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            NetError::InvalidSetting {
                name: "idle_timeout",
                reason: format!("{:?} is too large", self.idle_timeout),
            }
        })?;

        let mut config = quinn::TransportConfig::default();
        config
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive_interval))
            .receive_window(varint(
                "connection_receive_window",
                self.connection_receive_window,
            )?)
            .stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .send_window(self.send_window);
        Ok(config)
    }
}
