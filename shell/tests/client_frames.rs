//! The client's frame limits against a fake server on loopback (shell/src/client.rs
//! "Frame limits"): before the server's hello is accepted a frame may hold at most
//! 64 KiB, after it what the agreed spec implies. A longer frame is refused from its
//! length prefix alone, with a typed error and without a reconnect: the fake server
//! never sends the payload, so a client that tried to read (or allocate) it would hang
//! until the guard below fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use gelunet_client::{Client, ClientConfig, ReconnectPolicy};
use gelunet_net::{
    accept, server_endpoint, Channel, NetError, ServerIdentity, TransportSettings, Zeroizing,
    PREAUTH_MAX_FRAME,
};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::envelope::{ToClient, ToServer};
use gelunet_protocol::group_key::GroupKey;
use gelunet_protocol::messages::ServerHello;
use gelunet_protocol::{Activation, ModelSpec};
use gelunet_server::{Server, ServerConfig};
use gelunet_shell::client::{run_client, ClientShellConfig, ClientShellError};
use ndarray::Array2;

/// A guard against a hang, not a timing.
const LIMIT: Duration = Duration::from_secs(30);

/// What the fake server sends after the client's `Register`.
#[derive(Clone, Copy)]
enum After {
    /// A length prefix of `len` bytes at once (no payload).
    Prefix(usize),
    /// Welcome, Registered, then a length prefix of `len` bytes (no payload).
    RegisteredThenPrefix(usize),
    /// Welcome, Registered, then `len` bytes of junk as one frame.
    RegisteredThenJunk(usize),
}

fn hello() -> ServerHello {
    let mut cfg = ServerConfig::new(ModelSpec::new(vec![4, 3, 2], Activation::Sigmoid), 0.5, 1);
    cfg.insecure.allow_test_keys = true;
    Server::new(cfg, None).unwrap().hello()
}

fn client() -> Client {
    let key = PrivateKey::generate_insecure_for_tests(512, &mut rand::rngs::OsRng).unwrap();
    let config = ClientConfig {
        allow_test_keys: true,
        ..ClientConfig::default()
    };
    let features = Array2::from_shape_fn((8, 4), |(i, j)| ((i + j) % 3) as f64 * 0.25);
    let labels = (0..8).map(|i| i % 2).collect();
    let mut c = Client::new(config, key, features, labels).unwrap();
    c.set_group_key(GroupKey::generate());
    c
}

/// The fake server: accepts one connection, reads `Register`, does `after`, then keeps
/// the connection open until the client has gone.
async fn fake_server(endpoint: gelunet_net::quinn::Endpoint, after: After) {
    let settings = TransportSettings::default();
    let conn = accept(&endpoint, &settings).await.unwrap();
    let mut ch = Channel::accept(&conn, PREAUTH_MAX_FRAME).await.unwrap();
    let _register: ToServer = ch.recv().await.unwrap();
    let prefix = |len: usize| u32::try_from(len).unwrap().to_be_bytes();
    match after {
        After::Prefix(len) => {
            ch.send_stream().write_all(&prefix(len)).await.unwrap();
        }
        After::RegisteredThenPrefix(len) | After::RegisteredThenJunk(len) => {
            ch.set_max_frame_len(1 << 20);
            ch.send(&ToClient::Welcome(hello())).await.unwrap();
            let _client_hello: ToServer = ch.recv().await.unwrap();
            ch.send(&ToClient::Registered {
                client: 0,
                incarnation: 0,
                batches: 0,
            })
            .await
            .unwrap();
            ch.send_stream().write_all(&prefix(len)).await.unwrap();
            if let After::RegisteredThenJunk(_) = after {
                ch.send_stream().write_all(&vec![0xff; len]).await.unwrap();
            }
        }
    }
    // Until the client closes the connection.
    let _ = conn.closed().await;
}

/// Runs the client against a fake server doing `after`; the client's error.
async fn refused(after: After) -> ClientShellError {
    let identity = ServerIdentity::generate(&["localhost".to_string()]).unwrap();
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let endpoint = server_endpoint(bind, &identity, &TransportSettings::default()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = tokio::spawn(fake_server(endpoint, after));
    let config = ClientShellConfig {
        server: addr,
        server_name: "localhost".into(),
        pinned_cert: identity.certificate().clone(),
        transport: TransportSettings::default(),
        name: "alice".into(),
        token: Zeroizing::new("token".into()),
        samples: 8,
        reference: None,
        connect_timeout: Duration::from_secs(10),
        reconnect: ReconnectPolicy::NEVER,
        progress: None,
    };
    let r = tokio::time::timeout(LIMIT, run_client(client(), &config))
        .await
        .expect("the client hung on a frame it should have refused");
    let _ = tokio::time::timeout(LIMIT, server).await;
    match r {
        Ok(_) => panic!("the client accepted the fake server"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_frame_above_64_kib_before_the_hello_is_refused_from_its_prefix() {
    let len = PREAUTH_MAX_FRAME + 1;
    let e = refused(After::Prefix(len)).await;
    assert!(!e.is_transient(), "{e}");
    assert!(
        matches!(e, ClientShellError::Net(NetError::FrameTooLarge { len: l, max }) if l == len && max == PREAUTH_MAX_FRAME),
        "{e}"
    );
    // Far beyond: the transport's 512 MiB no longer applies before the hello.
    let e = refused(After::Prefix(256 << 20)).await;
    assert!(
        matches!(
            e,
            ClientShellError::Net(NetError::FrameTooLarge {
                max: PREAUTH_MAX_FRAME,
                ..
            })
        ),
        "{e}"
    );
}

#[tokio::test]
async fn after_the_hello_frames_are_bounded_by_the_agreed_spec() {
    let bound = hello().max_message_len(0);
    assert!(bound > PREAUTH_MAX_FRAME && bound < TransportSettings::default().max_frame_len);
    let e = refused(After::RegisteredThenPrefix(bound + 1)).await;
    assert!(!e.is_transient(), "{e}");
    assert!(
        matches!(e, ClientShellError::Net(NetError::FrameTooLarge { len, max }) if len == bound + 1 && max == bound),
        "{e}"
    );
    // A frame within the bound (but above 64 KiB) is read, and its junk refused as such.
    let junk = PREAUTH_MAX_FRAME + (bound - PREAUTH_MAX_FRAME) / 2;
    let e = refused(After::RegisteredThenJunk(junk)).await;
    assert!(
        matches!(e, ClientShellError::Net(NetError::Malformed { .. })),
        "{e}"
    );
}
