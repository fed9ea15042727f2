//! Fuzz harnesses on stable Rust (issue #13): every decoder that reads outside input gets
//! arbitrary bytes, and mutations of valid inputs, and must return `Ok` or `Err`, never
//! panic (proptest turns a panic into a failure and records the input in
//! `tests/fuzz_decoders.proptest-regressions`, which is kept in the repository and
//! replayed first on every run).
//!
//! Decoders: the shells' frames and every protocol message (`ToServer`, `ToClient`, the
//! hellos that are checked next), the model file, the model card, a client's key file,
//! the server's identity files, credential lines and files, the group key file, the
//! protocol v2 server state (the checkpoint), the key files of `train --state-dir`, CSV
//! and IDX (MNIST) files.
//!
//! Cases per harness: `PROPTEST_CASES` (default 64 here, to keep `cargo test` fast);
//! `.ci/run` runs them again with more cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use gelunet_datasets::{load_csv, load_mnist, CsvOptions, MnistOptions};
use gelunet_net::{decode_frame, encode_frame, ServerIdentity, PREAUTH_MAX_FRAME};
use gelunet_paillier::PrivateKey;
use gelunet_protocol::envelope::{Register, ToClient, ToServer, SHELL_VERSION};
use gelunet_protocol::group_key::GroupKey;
use gelunet_protocol::messages::{ClientHello, ClientMessage, PublicModulus, ServerMessage};
use gelunet_protocol::{Activation, FixedModel, ModelSpec, Scales};
use gelunet_run::train_state;
use gelunet_run::{
    load_checkpoint, parse_credential, save_checkpoint, CheckpointFile, DataCard, ListenOptions,
    ModelCard, ModelFile, RunContext,
};
use gelunet_server::{Coordinator, CoordinatorConfig, Server, ServerConfig};
use proptest::collection::vec;
use proptest::prelude::*;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

/// Cases per harness: `PROPTEST_CASES`, else 64.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A fresh scratch directory per case.
fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gelunet-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `f` on `bytes` written to `dir/name`, then removes the directory.
fn with_file<T>(name: &str, bytes: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    let dir = scratch();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = f(&path);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// `seed` with up to 8 bytes overwritten, then truncated or extended.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = seed.len().max(1);
    (
        vec((0..n, any::<u8>()), 0..8),
        0..=n + 16,
        any::<bool>(),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(edits, cut, extend, tail)| {
            let mut b = seed.clone();
            for (i, v) in edits {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            if extend {
                b.extend(tail);
            } else {
                b.truncate(cut);
            }
            b
        })
}

/// Arbitrary bytes, or a mutation of `seed`.
fn bytes_like(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..1024), mutated(seed)]
}

fn small_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| {
        let mut rng = rand_chacha_rng();
        PrivateKey::generate_insecure_for_tests(512, &mut rng).unwrap()
    })
}

fn rand_chacha_rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(13)
}

fn spec() -> ModelSpec {
    ModelSpec::new(vec![4, 3, 2], Activation::Sigmoid)
}

fn v2_server() -> Server {
    let mut cfg = ServerConfig::new(spec(), 0.5, 1);
    cfg.insecure.allow_test_keys = true;
    Server::new(cfg, None).unwrap()
}

/// Frames of real messages: a registration, a client hello, a server hello.
fn frame_seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let register = ToServer::Register(Register {
            version: SHELL_VERSION,
            name: "alice".into(),
            token: "token".into(),
            samples: 40,
            reference: None,
        });
        let hello = ToServer::Message(ClientMessage::Hello(ClientHello {
            version: gelunet_protocol::messages::PROTOCOL_VERSION,
            server_key_id: None,
            client_key: PublicModulus {
                n: small_key().public_key().n().clone(),
            },
        }));
        let welcome = ToClient::Welcome(v2_server().hello());
        vec![
            encode_frame(&register).unwrap(),
            encode_frame(&hello).unwrap(),
            encode_frame(&welcome).unwrap(),
        ]
    })
}

/// The checks a party runs on a decoded message before anything else: a hello's spec,
/// scales and key (bounded by the 4096-bit maximum).
fn check_decoded_to_server(m: &ToServer) {
    if let ToServer::Message(ClientMessage::Hello(h)) = m {
        let _ = gelunet_paillier::PublicKey::from_n_for_run(h.client_key.n.clone(), true);
    }
}

fn check_decoded_to_client(m: &ToClient) {
    match m {
        ToClient::Welcome(h) => {
            let _ = h.spec.validate();
            let _ = h.scales.validate();
            if h.spec.validate().is_ok() {
                let _ = h.spec.max_message_len(h.batch_size as usize);
            }
        }
        ToClient::Message(ServerMessage::Error(e)) => {
            let _ = format!("{e:?}");
        }
        _ => {}
    }
}

fn model_file_bytes() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let scales = Scales::default();
        let model = FixedModel::init(&spec(), &scales, 1).unwrap();
        let file = ModelFile {
            model,
            scales,
            data: DataCard {
                mean: vec![0.5; 4],
                std: vec![2.0; 4],
                class_names: vec!["no".into(), "yes".into()],
                feature_names: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                dataset: "toy".into(),
                split_seed: 1,
                test_fraction: 0.2,
            },
        };
        let dir = scratch();
        let path = dir.join("model.bin");
        file.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

fn card_bytes() -> Vec<u8> {
    let dir = scratch();
    let path = dir.join("model.bin");
    std::fs::write(&path, model_file_bytes()).unwrap();
    let card = ModelFile::load(&path).unwrap().card();
    let json = serde_json::to_vec_pretty(&card).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    json
}

/// The key files of `train --state-dir` (group key, client 0's key), as written.
fn train_key_files() -> &'static (Vec<u8>, Vec<u8>) {
    static B: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = scratch();
        let gk = gelunet_protocol::group_key::GroupKey::from_bytes([3; 32]);
        train_state::save_keys(&dir, &gk, std::slice::from_ref(small_key())).unwrap();
        let files = (
            std::fs::read(train_state::group_key_path(&dir)).unwrap(),
            std::fs::read(train_state::client_key_path(&dir, 0)).unwrap(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        files
    })
}

/// Runs `load_keys` on a state directory holding `group` and `client` (client 0).
fn load_train_keys(group: &[u8], client: &[u8]) -> bool {
    let dir = scratch();
    std::fs::write(train_state::group_key_path(&dir), group).unwrap();
    std::fs::write(train_state::client_key_path(&dir, 0), client).unwrap();
    let ok = train_state::load_keys(&dir, 1, true).is_ok();
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// A ciphertext document of two values under [`small_key`], as `keys encrypt` writes it.
fn phe_document() -> String {
    use gelunet_paillier::phe_json::{ciphertexts_to_json, PheCiphertext};
    let pk = small_key().public_key();
    let mut rng = rand_chacha_rng();
    let cts: Vec<PheCiphertext> = [0.5, -7.25]
        .iter()
        .map(|&x| PheCiphertext::encrypt_f64(pk, x, &mut rng).unwrap())
        .collect();
    ciphertexts_to_json(pk, &cts)
}

fn checkpoint_bytes() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let now = std::time::Instant::now();
        let co = Coordinator::new(
            v2_server(),
            CoordinatorConfig::new(1),
            vec!["alice".into()],
            now,
        )
        .unwrap();
        let file = CheckpointFile {
            context: RunContext::new("serve", None),
            checkpoint: co.checkpoint(now).unwrap(),
            parties: Some(gelunet_run::checkpoint::PartyFingerprints {
                group_key: [1; 32],
                clients: vec![[2; 32]],
            }),
        };
        let dir = scratch();
        let path = dir.join("checkpoint.bin");
        save_checkpoint(&path, &file).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

/// The framing of the model and state files (magic, version, length, SHA-256, payload)
/// around `payload`, with a correct checksum, so that the payload decoder is reached.
fn reframe(file: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = file[..12].to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// A framed file whose payload is arbitrary or a mutation of the real payload, with a
/// valid checksum; or the whole file mutated.
fn framed_like(file: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    let payload = file[52..].to_vec();
    prop_oneof![
        mutated(payload).prop_map(move |p| reframe(file, &p)),
        vec(any::<u8>(), 0..512).prop_map(move |p| reframe(file, &p)),
        mutated(file.to_vec()),
    ]
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX images (2 samples of 2×3) and labels, uncompressed.
fn idx_seeds() -> (Vec<u8>, Vec<u8>) {
    let mut images = vec![0, 0, 8, 3];
    for d in [2u32, 2, 3] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend_from_slice(&[0, 255, 7, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&2u32.to_be_bytes());
    labels.extend_from_slice(&[3, 9]);
    (images, labels)
}

/// CSV-like text: tokens that matter to the parser.
fn csv_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just(","),
        Just("\n"),
        Just("\r\n"),
        Just("\""),
        Just(" "),
        Just("1"),
        Just("-2.5"),
        Just("1e308"),
        Just("1e999"),
        Just("nan"),
        Just("inf"),
        Just("-inf"),
        Just("?"),
        Just("a"),
        Just("label"),
        Just("\u{e9}"),
        Just("\u{0}"),
    ];
    vec(token, 0..120).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frames_and_messages_to_the_server_never_panic(
        bytes in (0..3usize).prop_flat_map(|i| bytes_like(frame_seeds()[i].clone()))
    ) {
        for max in [PREAUTH_MAX_FRAME, 1 << 20] {
            if let Ok(m) = decode_frame::<ToServer>(&bytes, max) {
                check_decoded_to_server(&m);
            }
        }
        if let Ok(m) = postcard::from_bytes::<ToServer>(bytes.get(4..).unwrap_or_default()) {
            check_decoded_to_server(&m);
        }
    }

    #[test]
    fn frames_and_messages_to_a_client_never_panic(
        bytes in (0..3usize).prop_flat_map(|i| bytes_like(frame_seeds()[i].clone()))
    ) {
        if let Ok(m) = decode_frame::<ToClient>(&bytes, 1 << 20) {
            check_decoded_to_client(&m);
        }
        if let Ok(m) = postcard::from_bytes::<ToClient>(bytes.get(4..).unwrap_or_default()) {
            check_decoded_to_client(&m);
        }
    }

    #[test]
    fn model_files_never_panic(bytes in framed_like(model_file_bytes())) {
        let _ = with_file("model.bin", &bytes, ModelFile::load);
    }

    #[test]
    fn model_cards_never_panic(bytes in bytes_like(card_bytes())) {
        let _ = with_file("model-card.json", &bytes, ModelCard::load);
    }

    #[test]
    fn checkpoint_files_never_panic(bytes in framed_like(checkpoint_bytes())) {
        let _ = with_file("checkpoint.bin", &bytes, load_checkpoint);
    }

    #[test]
    fn train_state_key_files_never_panic(
        group in framed_like(&train_key_files().0),
        client in framed_like(&train_key_files().1),
    ) {
        let _ = load_train_keys(&group, &client);
    }

    #[test]
    fn key_files_never_panic(
        bytes in bytes_like(small_key().to_secret_bytes().to_vec())
    ) {
        let _ = PrivateKey::from_secret_bytes_for_run(&bytes, true);
        let _ = PrivateKey::from_secret_bytes(&bytes);
        let _ = with_file("client.key", &bytes, |p| {
            gelunet_run::KeyOptions { key_bits: 512, allow_test_keys: true }.load_or_create(p)
        });
    }

    /// python-paillier JSON from outside: key files (`keys inspect|convert`, `join
    /// --key-file`), ciphertext documents (`keys decrypt`) and values files (`keys
    /// encrypt`), mutated from valid ones.
    #[test]
    fn python_paillier_json_never_panics(
        private in bytes_like(gelunet_paillier::phe_json::private_key_to_json(small_key()).as_bytes().to_vec()),
        public in bytes_like(gelunet_paillier::phe_json::public_key_to_json(small_key().public_key()).into_bytes()),
        doc in bytes_like(phe_document().into_bytes()),
        values in "(?s)[-0-9.e,\\[\\] \n]{0,80}",
    ) {
        use gelunet_paillier::phe_json;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let _ = phe_json::private_key_from_json(&text(&private), true);
        let _ = phe_json::public_key_from_json(&text(&public), true);
        if let Ok(cts) = phe_json::ciphertexts_from_json(small_key().public_key(), &text(&doc)) {
            for ct in cts {
                let _ = ct.decrypt_f64(small_key());
            }
        }
        let _ = with_file("key.json", &private, |p| gelunet_run::load_key(p, true));
        let _ = with_file("values.json", values.as_bytes(), gelunet_run::read_values);
        let _ = with_file("values.csv", values.as_bytes(), gelunet_run::read_values);
    }

    #[test]
    fn server_identity_files_never_panic(
        cert in vec(any::<u8>(), 0..600),
        key in vec(any::<u8>(), 0..600),
    ) {
        let dir = scratch();
        std::fs::write(dir.join(gelunet_net::CERT_FILE), &cert).unwrap();
        std::fs::write(dir.join(gelunet_net::KEY_FILE), &key).unwrap();
        let _ = ServerIdentity::load(&dir);
        let _ = gelunet_net::load_certificate(dir.join(gelunet_net::CERT_FILE));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn credentials_and_group_keys_never_panic(text in "(?s).{0,200}") {
        let _ = parse_credential(&text);
        let _ = GroupKey::parse(&text);
        let dir = scratch();
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, &text).unwrap();
        let listen = ListenOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: dir.clone(),
            cert_names: Vec::new(),
            tokens_file: Some(tokens.clone()),
            credentials: Vec::new(),
        };
        let _ = listen.load_credentials();
        let _ = GroupKey::load(&tokens);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn group_key_files_never_panic(
        bytes in bytes_like(GroupKey::generate().to_file_text().as_bytes().to_vec())
    ) {
        let _ = with_file("group.key", &bytes, GroupKey::load);
    }

    #[test]
    fn csv_files_never_panic(
        text in csv_text(),
        label in -3isize..3,
        header in prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
        ignore in vec(-3isize..3, 0..2),
    ) {
        let opts = CsvOptions { label_column: label, header, ignore_columns: ignore, ..CsvOptions::default() };
        let _ = with_file("data.csv", text.as_bytes(), |p| load_csv(p, &opts));
    }

    #[test]
    fn idx_files_never_panic(
        images in bytes_like(idx_seeds().0),
        labels in bytes_like(idx_seeds().1),
        compress in any::<bool>(),
        limit in prop_oneof![Just(None), (0usize..4).prop_map(Some)],
    ) {
        let dir = scratch();
        let (images, labels) = if compress { (gz(&images), gz(&labels)) } else { (images, labels) };
        let (good_images, good_labels) = idx_seeds();
        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        std::fs::write(dir.join(gelunet_datasets::MNIST_TRAIN_IMAGES), &images).unwrap();
        std::fs::write(dir.join(gelunet_datasets::MNIST_TRAIN_LABELS), &labels).unwrap();
        std::fs::write(dir.join(gelunet_datasets::MNIST_TEST_IMAGES), gz(&good_images)).unwrap();
        std::fs::write(dir.join(gelunet_datasets::MNIST_TEST_LABELS), gz(&good_labels)).unwrap();
        let _ = load_mnist(&dir, MnistOptions { max_train: limit, max_test: limit });
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The harnesses start from inputs that decode: their seeds are valid, so the mutations
/// explore the decoders' depths and not only their first check.
#[test]
fn the_seeds_decode() {
    for f in frame_seeds() {
        assert!(
            decode_frame::<ToServer>(f, PREAUTH_MAX_FRAME).is_ok()
                || decode_frame::<ToClient>(f, 1 << 20).is_ok()
        );
    }
    with_file("model.bin", model_file_bytes(), |p| {
        ModelFile::load(p).unwrap()
    });
    with_file("card.json", &card_bytes(), |p| ModelCard::load(p).unwrap());
    with_file("checkpoint.bin", checkpoint_bytes(), |p| {
        load_checkpoint(p).unwrap()
    });
    let (group, client) = train_key_files();
    assert!(load_train_keys(group, client));
    let payload = &model_file_bytes()[52..];
    with_file("model.bin", &reframe(model_file_bytes(), payload), |p| {
        ModelFile::load(p).unwrap()
    });
    PrivateKey::from_secret_bytes_for_run(&small_key().to_secret_bytes(), true).unwrap();
    let dir = scratch();
    let (images, labels) = idx_seeds();
    std::fs::create_dir_all(dir.join("mnist")).unwrap();
    for (name, bytes) in [
        (gelunet_datasets::MNIST_TRAIN_IMAGES, &images),
        (gelunet_datasets::MNIST_TRAIN_LABELS, &labels),
        (gelunet_datasets::MNIST_TEST_IMAGES, &images),
        (gelunet_datasets::MNIST_TEST_LABELS, &labels),
    ] {
        std::fs::write(dir.join(name), gz(bytes)).unwrap();
    }
    let m = load_mnist(&dir, MnistOptions::default()).unwrap();
    assert_eq!(m.train.n_samples(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
