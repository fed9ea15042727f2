//! Loopback integration tests of the QUIC transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use gelunet_net::{
    accept, client_bind_addr, client_endpoint, connect, load_certificate, recv_message,
    send_message, server_endpoint, tokens_equal, Channel, NetError, ServerIdentity,
    TransportSettings, CERT_FILE, KEY_FILE,
};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(20);
const MAX_FRAME: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Request {
    Hello { client_name: String, token: String },
    Batch { round: u32, ciphertexts: Vec<u8> },
    Bye,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Response {
    Welcome { id: u32 },
    Sum { round: u32, len: u64, checksum: u64 },
    Ok,
}

fn localhost_identity() -> ServerIdentity {
    ServerIdentity::generate(&["localhost".to_string()]).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Runs a test's body, failing it if it takes longer than [`LIMIT`] (a guard against a
/// hang, not a timing).
async fn within_limit<F: std::future::Future>(body: F) -> F::Output {
    tokio::time::timeout(LIMIT, body)
        .await
        .expect("test timed out")
}

/// A fresh `localhost` identity and a server endpoint for it on an ephemeral loopback
/// port.
fn localhost_server() -> (ServerIdentity, quinn::Endpoint, SocketAddr) {
    let identity = localhost_identity();
    let (server, addr) = start_server(&identity);
    (identity, server, addr)
}

/// Starts a server endpoint on an ephemeral loopback port.
fn start_server(identity: &ServerIdentity) -> (quinn::Endpoint, SocketAddr) {
    let endpoint = server_endpoint(loopback(), identity, &TransportSettings::default()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    (endpoint, addr)
}

async fn connect_client(
    addr: SocketAddr,
    pinned: &ServerIdentity,
) -> (quinn::Endpoint, Result<quinn::Connection, NetError>) {
    connect_client_as(addr, pinned, "localhost").await
}

/// A client endpoint connecting to `addr` under `server_name`, pinning `pinned`'s
/// certificate.
async fn connect_client_as(
    addr: SocketAddr,
    pinned: &ServerIdentity,
    server_name: &str,
) -> (quinn::Endpoint, Result<quinn::Connection, NetError>) {
    let endpoint = client_endpoint(client_bind_addr(addr)).unwrap();
    let conn = connect(
        &endpoint,
        addr,
        server_name,
        pinned.certificate().clone(),
        &TransportSettings::default(),
    )
    .await;
    (endpoint, conn)
}

fn frame_len<T: Serialize>(msg: &T) -> u64 {
    (postcard::to_stdvec(msg).unwrap().len() + 4) as u64
}

#[tokio::test]
async fn typed_round_trip_with_large_batch_and_byte_counters() {
    within_limit(async {
        let (identity, server, addr) = localhost_server();

        let server_task = tokio::spawn(async move {
            let settings = TransportSettings::default();
            let conn = accept(&server, &settings).await.unwrap();
            let mut channel = Channel::accept(&conn, MAX_FRAME).await.unwrap();
            loop {
                let request: Request = match channel.recv().await {
                    Ok(r) => r,
                    Err(NetError::Closed) => break,
                    Err(e) => panic!("server recv: {e}"),
                };
                let response = match request {
                    Request::Hello { client_name, token } => {
                        assert_eq!(client_name, "alice");
                        assert!(tokens_equal(token.as_bytes(), b"s3cret"));
                        Response::Welcome { id: 7 }
                    }
                    Request::Batch { round, ciphertexts } => Response::Sum {
                        round,
                        len: ciphertexts.len() as u64,
                        checksum: ciphertexts.iter().map(|&b| u64::from(b)).sum(),
                    },
                    Request::Bye => Response::Ok,
                };
                channel.send(&response).await.unwrap();
            }
            (channel.bytes_sent(), channel.bytes_received())
        });

        let (_client, conn) = connect_client(addr, &identity).await;
        let conn = conn.unwrap();
        let mut channel = Channel::open(&conn, MAX_FRAME).await.unwrap();

        let blob: Vec<u8> = (0..(1usize << 20) + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let requests = [
            Request::Hello {
                client_name: "alice".into(),
                token: "s3cret".into(),
            },
            Request::Batch {
                round: 1,
                ciphertexts: blob.clone(),
            },
            Request::Batch {
                round: 2,
                ciphertexts: blob.iter().rev().copied().collect(),
            },
            Request::Bye,
        ];
        let checksum: u64 = blob.iter().map(|&b| u64::from(b)).sum();
        let expected = [
            Response::Welcome { id: 7 },
            Response::Sum {
                round: 1,
                len: blob.len() as u64,
                checksum,
            },
            Response::Sum {
                round: 2,
                len: blob.len() as u64,
                checksum,
            },
            Response::Ok,
        ];
        for (req, want) in requests.iter().zip(&expected) {
            let got: Response = channel.request(req).await.unwrap();
            assert_eq!(&got, want);
        }

        let sent: u64 = requests.iter().map(frame_len).sum();
        let received: u64 = expected.iter().map(frame_len).sum();
        assert!(sent > 2 * (1 << 20));
        assert_eq!(channel.bytes_sent(), sent);
        assert_eq!(channel.bytes_received(), received);

        channel.finish().await.unwrap();
        let (server_sent, server_received) = server_task.await.unwrap();
        assert_eq!(server_sent, received);
        assert_eq!(server_received, sent);
        conn.close(0u32.into(), b"done");
    })
    .await;
}

#[tokio::test]
async fn client_pinning_another_certificate_is_refused() {
    within_limit(async {
        let real = localhost_identity();
        let impostor_pin = localhost_identity();
        let (server, addr) = start_server(&real);

        let server_task = tokio::spawn(async move {
            let settings = TransportSettings::default();
            accept(&server, &settings).await
        });

        let (_client, conn) = connect_client(addr, &impostor_pin).await;
        match conn {
            Err(NetError::CertificateRejected { reason }) => {
                assert!(!reason.is_empty());
                let msg = NetError::CertificateRejected { reason }.to_string();
                assert!(msg.contains("pinned"), "{msg}");
            }
            other => panic!("expected CertificateRejected, got {other:?}"),
        }

        // The server side sees a failed handshake, not a hang or a panic.
        match server_task.await.unwrap() {
            Err(NetError::CertificateRejected { .. } | NetError::HandshakeFailed { .. }) => {}
            other => panic!("expected a handshake error on the server, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    within_limit(async {
        let (identity, server, addr) = localhost_server();
        let _server_task = tokio::spawn(async move {
            let _ = accept(&server, &TransportSettings::default()).await;
        });
        let (_endpoint, result) =
            connect_client_as(addr, &identity, "not-the-server.example").await;
        assert!(
            matches!(result, Err(NetError::CertificateRejected { .. })),
            "{result:?}"
        );
    })
    .await;
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Small {
    flag: bool,
    name: String,
}

#[tokio::test]
async fn framing_errors_are_typed() {
    within_limit(async {
        let (identity, server, addr) = localhost_server();
        let settings = TransportSettings::default();
        let ((_client, conn), server_conn) =
            tokio::join!(connect_client(addr, &identity), accept(&server, &settings));
        let (conn, server_conn) = (conn.unwrap(), server_conn.unwrap());

        // Opens a stream, writes `bytes`, finishes it, and accepts it on the server side.
        async fn stream_with(
            conn: &quinn::Connection,
            server_conn: &quinn::Connection,
            bytes: &[u8],
        ) -> quinn::RecvStream {
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(bytes).await.unwrap();
            send.finish().unwrap();
            let (_send, recv) = server_conn.accept_bi().await.unwrap();
            recv
        }

        // A well-formed message followed by a clean end of stream.
        let msg = Small {
            flag: true,
            name: "ok".into(),
        };
        let (mut send, _r) = conn.open_bi().await.unwrap();
        let written = send_message(&mut send, &msg).await.unwrap();
        send.finish().unwrap();
        let (_s, mut recv) = server_conn.accept_bi().await.unwrap();
        let (got, read) = recv_message::<Small>(&mut recv, 1000).await.unwrap();
        assert_eq!(got, msg);
        assert_eq!(read, written);
        assert!(matches!(
            recv_message::<Small>(&mut recv, 1000).await,
            Err(NetError::Closed)
        ));

        // Oversized: a 2000-byte Vec<u8> encodes to 2 (varint length) + 2000 bytes.
        let (mut send, _r) = conn.open_bi().await.unwrap();
        send_message(&mut send, &vec![0xABu8; 2000]).await.unwrap();
        send.finish().unwrap();
        let (_s, mut recv) = server_conn.accept_bi().await.unwrap();
        match recv_message::<Vec<u8>>(&mut recv, 1000).await {
            Err(NetError::FrameTooLarge { len, max }) => {
                assert_eq!(len, 2002);
                assert_eq!(max, 1000);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }

        // Truncated payload: announce 100 bytes, send 10, finish.
        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1u8; 10]);
        let mut recv = stream_with(&conn, &server_conn, &bytes).await;
        match recv_message::<Vec<u8>>(&mut recv, 1000).await {
            Err(NetError::Truncated { expected, received }) => {
                assert_eq!((expected, received), (100, 10));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }

        // Truncated length prefix.
        let mut recv = stream_with(&conn, &server_conn, &[0, 0]).await;
        assert!(matches!(
            recv_message::<Vec<u8>>(&mut recv, 1000).await,
            Err(NetError::Truncated {
                expected: 4,
                received: 2
            })
        ));

        // Garbage: 5 is not a valid bool.
        let mut recv = stream_with(&conn, &server_conn, &[0, 0, 0, 3, 5, 1, b'x']).await;
        assert!(matches!(
            recv_message::<Small>(&mut recv, 1000).await,
            Err(NetError::Malformed { len: 3, .. })
        ));

        // Garbage: trailing bytes after a valid message.
        let mut recv = stream_with(&conn, &server_conn, &[0, 0, 0, 4, 1, 1, b'x', 9]).await;
        match recv_message::<Small>(&mut recv, 1000).await {
            Err(NetError::Malformed { len: 4, reason }) => assert!(reason.contains("trailing")),
            other => panic!("expected Malformed, got {other:?}"),
        }

        // Garbage on a Channel: counted, and the next frame is still readable.
        let mut bytes = vec![0, 0, 0, 1, 7];
        bytes.extend_from_slice(&[0, 0, 0, 4, 0, 2, b'h', b'i']);
        let (mut send, _r) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        let mut channel = Channel::accept(&server_conn, 1000).await.unwrap();
        assert!(matches!(
            channel.recv::<Small>().await,
            Err(NetError::Malformed { .. })
        ));
        let small: Small = channel.recv().await.unwrap();
        assert_eq!(
            small,
            Small {
                flag: false,
                name: "hi".into()
            }
        );
        assert_eq!(channel.bytes_received(), bytes.len() as u64);

        conn.close(0u32.into(), b"done");
    })
    .await;
}

fn unique_temp_dir(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("gelunet-net-{tag}-{}-{nanos}", std::process::id()))
}

#[tokio::test]
async fn identity_save_load_round_trip() {
    within_limit(async {
        let dir = unique_temp_dir("identity");
        let identity = ServerIdentity::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        identity.save(&dir).unwrap();

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "key file mode is {:o}", mode & 0o777);
        }
        // No temporary files are left behind.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![CERT_FILE.to_string(), KEY_FILE.to_string()]);

        let loaded = ServerIdentity::load(&dir).unwrap();
        assert_eq!(loaded.certificate(), identity.certificate());
        assert_eq!(loaded.fingerprint(), identity.fingerprint());
        assert_eq!(loaded.fingerprint().len(), 64);

        // Debug never shows the key.
        let key = std::fs::read(dir.join(KEY_FILE)).unwrap();
        let debug = format!("{loaded:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&format!("{:?}", &key[..8])));

        // Saving again overwrites atomically.
        loaded.save(&dir).unwrap();

        // The loaded identity serves connections to clients pinning the saved cert.
        let pinned = load_certificate(dir.join(CERT_FILE)).unwrap();
        let (server, addr) = start_server(&loaded);
        let server_task =
            tokio::spawn(async move { accept(&server, &TransportSettings::default()).await });
        let endpoint = client_endpoint(client_bind_addr(addr)).unwrap();
        let conn = connect(
            &endpoint,
            addr,
            "127.0.0.1",
            pinned,
            &TransportSettings::default(),
        )
        .await
        .unwrap();
        server_task.await.unwrap().unwrap();
        conn.close(0u32.into(), b"");

        // A key that does not belong to the certificate is rejected.
        let other = localhost_identity();
        let other_dir = unique_temp_dir("other");
        other.save(&other_dir).unwrap();
        std::fs::copy(other_dir.join(KEY_FILE), dir.join(KEY_FILE)).unwrap();
        assert!(matches!(
            ServerIdentity::load(&dir),
            Err(NetError::InvalidIdentity { .. })
        ));
        // Missing files give a typed I/O error.
        assert!(matches!(
            ServerIdentity::load(dir.join("missing")),
            Err(NetError::Io { .. })
        ));

        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other_dir).unwrap();
    })
    .await;
}

#[tokio::test]
async fn client_disconnect_mid_conversation_is_a_typed_error() {
    within_limit(async {
        let (identity, server, addr) = localhost_server();

        let server_task = tokio::spawn(async move {
            let settings = TransportSettings::default();
            let mut results = Vec::new();
            for _ in 0..2 {
                let conn = accept(&server, &settings).await.unwrap();
                let mut channel = Channel::accept(&conn, MAX_FRAME).await.unwrap();
                let first: Request = channel.recv().await.unwrap();
                assert!(matches!(first, Request::Hello { .. }));
                channel.send(&Response::Welcome { id: 1 }).await.unwrap();
                // The client vanishes before (or while) sending its next request.
                results.push(channel.recv::<Request>().await);
            }
            results
        });

        // Client 1: closes the connection right after the first exchange.
        let (endpoint, conn) = connect_client(addr, &identity).await;
        let conn = conn.unwrap();
        let mut channel = Channel::open(&conn, MAX_FRAME).await.unwrap();
        let hello = Request::Hello {
            client_name: "bob".into(),
            token: "t".into(),
        };
        let _: Response = channel.request(&hello).await.unwrap();
        conn.close(3u32.into(), b"client quits");
        endpoint.wait_idle().await;
        drop(channel);

        // Client 2: sends half of a large frame, then disappears.
        let (endpoint, conn) = connect_client(addr, &identity).await;
        let conn = conn.unwrap();
        let mut channel = Channel::open(&conn, MAX_FRAME).await.unwrap();
        let _: Response = channel.request(&hello).await.unwrap();
        let mut partial = (1u32 << 20).to_be_bytes().to_vec();
        partial.extend_from_slice(&[0u8; 4096]);
        channel.send_stream().write_all(&partial).await.unwrap();
        conn.close(4u32.into(), b"client crashed");
        endpoint.wait_idle().await;

        let results = server_task.await.unwrap();
        for result in results {
            match result {
                Err(NetError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(close))) => {
                    assert!(close.error_code == 3u32.into() || close.error_code == 4u32.into());
                }
                other => panic!("expected ConnectionLost, got {other:?}"),
            }
        }
    })
    .await;
}

#[test]
fn transport_settings_are_validated() {
    assert!(TransportSettings::default().transport_config().is_ok());
    let bad = TransportSettings {
        keep_alive_interval: Duration::from_secs(700),
        ..TransportSettings::default()
    };
    assert!(matches!(
        bad.transport_config(),
        Err(NetError::InvalidSetting {
            name: "keep_alive_interval",
            ..
        })
    ));
    let bad = TransportSettings {
        stream_receive_window: 1 << 40,
        ..TransportSettings::default()
    };
    assert!(matches!(
        bad.transport_config(),
        Err(NetError::InvalidSetting { .. })
    ));
}
