//! The QUIC shells of gelunet: thin async drivers that move the frames of
//! [`gelunet_protocol::envelope`] between a QUIC stream and the I/O-free state machines of
//! `gelunet-server` and `gelunet-client`.
//!
//! - [`server`]: the server role behind a QUIC endpoint (registration with name and token,
//!   scheduling, disconnects, encrypted inference).
//! - [`client`]: a client behind a QUIC connection to a server whose certificate it pins.

pub mod client;
pub mod server;
