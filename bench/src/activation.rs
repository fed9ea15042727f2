//! Part 3, the cost of one activation (GELU-Net paper, Table 1).
//!
//! GELU-Net outsources every activation to the client: the server sends the encrypted
//! pre-activation `[z]_c`, the client decrypts it, applies the real activation (sigmoid)
//! and re-encrypts `[a]_c`, which goes back to the server. Here the two parties run in
//! one process and talk over **loopback QUIC** (`gelunet-net`: a server endpoint with a
//! self-signed certificate and a client pinning it, length-prefixed postcard frames). The
//! server times the round trip; the client times its decryption, activation and
//! encryption and reports them in its reply, so the round trip splits into
//!
//! ```text
//! crypto        = decrypt + encrypt              (client)
//! activation    = decode, sigmoid, encode        (client)
//! communication = round trip − crypto − activation   (serialization, QUIC, loopback)
//! ```
//!
//! both for one value per ciphertext and for *packed* ciphertexts (`P` signed slots of
//! `β` bits per plaintext, `P·β ≤ |N| − 2`, packed and unpacked by
//! [`gelunet_protocol::packing`], [`slot_bits`]). The client encrypts with
//! [`PrivateKey::encrypt_crt`] (it owns the key). The FHE side is measured with the
//! baselines' helpers on one full BFV ciphertext (`N` slots): the square `x²`
//! (CryptoNets) and the degree-5 Taylor sigmoid (BGN-Net's activation, evaluated under
//! BFV as the paper compares with FHE), per ciphertext and per slot.

use std::net::SocketAddr;
use std::time::Instant;

use gelunet_baselines::measure::{time_encrypt_decrypt, time_poly5, time_square, OpTiming};
use gelunet_baselines::{BfvConfig, BfvContext, BfvDescription};
use gelunet_net::{
    accept, client_bind_addr, client_endpoint, connect, server_endpoint, Channel, ServerIdentity,
    TransportSettings,
};
use gelunet_paillier::{BigInt, Ciphertext, PrivateKey};
use gelunet_protocol::packing::{pack_signed, slots_per_plaintext, unpack_signed};
use gelunet_protocol::{Activation, Scales, ValueKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Slot width `β` for packed pre-activations and activations: a signed slot holding
/// `|z| < 2^max_bits(PreActivation)` (`2^(limit + fa + fw)` = `2^76` with the default
/// scales) needs `max_bits + 1` bits; one guard bit more makes `β = max_bits + 2`, 78 bits
/// with [`Scales::default`]. The activations `0 ≤ a ≤ 2^fa` fit the same slots.
#[must_use]
pub fn slot_bits(scales: &Scales) -> u32 {
    scales.max_bits(ValueKind::PreActivation) + 2
}

/// Time split of one outsourced activation round (seconds).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Split {
    /// Round trip minus the client's work.
    pub communication: f64,
    /// Decryption + encryption.
    pub crypto: f64,
    /// Decryption alone.
    pub decrypt: f64,
    /// Encryption alone.
    pub encrypt: f64,
    /// Decode, sigmoid, encode.
    pub activation: f64,
    /// Round trip.
    pub total: f64,
}

impl Split {
    fn scaled(&self, k: f64) -> Self {
        Self {
            communication: self.communication * k,
            crypto: self.crypto * k,
            decrypt: self.decrypt * k,
            encrypt: self.encrypt * k,
            activation: self.activation * k,
            total: self.total * k,
        }
    }
}

/// GELU-Net's outsourced activation with `values` values per ciphertext.
#[derive(Clone, Debug, Serialize)]
pub struct GeluCost {
    /// Values per ciphertext (1: unpacked).
    pub values_per_ciphertext: usize,
    /// Slot width in bits (0: unpacked).
    pub slot_bits: u32,
    /// Mean per ciphertext.
    pub per_ciphertext: Split,
    /// Mean per value.
    pub per_value: Split,
    /// Bytes on the wire per round (both directions, framed postcard).
    pub wire_bytes: u64,
    /// Whether every activation came back correct (checked against the plaintext).
    pub correct: bool,
}

/// Part 3's results.
#[derive(Clone, Debug, Serialize)]
pub struct ActivationReport {
    /// Paillier key size.
    pub key_bits: u64,
    /// Test-size keys.
    pub test_keys: bool,
    /// Timed rounds per configuration.
    pub repetitions: usize,
    /// Unpacked and packed.
    pub gelu: Vec<GeluCost>,
    /// BFV parameters of the FHE measurements.
    pub bfv_parameters: BfvDescription,
    /// BFV square (CryptoNets' activation), one full ciphertext.
    pub bfv_square: OpTiming,
    /// BFV degree-5 Taylor sigmoid (BGN-Net's activation), one full ciphertext.
    pub bfv_taylor5: OpTiming,
    /// BFV encryption of one full ciphertext.
    pub bfv_encrypt: OpTiming,
    /// BFV decryption of one full ciphertext.
    pub bfv_decrypt: OpTiming,
    /// Rayon threads (the client's crypto here is single-threaded per ciphertext).
    pub threads: usize,
    /// Tokio worker threads of the QUIC endpoints.
    pub tokio_workers: usize,
}

#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    Ready,
    Z(Vec<Ciphertext>),
    A {
        cts: Vec<Ciphertext>,
        decrypt: f64,
        activate: f64,
        encrypt: f64,
    },
    Done,
}

/// The slot width of `per_ct` values per ciphertext: 0 (no packing: the value itself) for
/// one, [`slot_bits`] otherwise.
fn layout_bits(scales: &Scales, per_ct: usize) -> u32 {
    if per_ct == 1 {
        0
    } else {
        slot_bits(scales)
    }
}

/// The client's work on one ciphertext: decrypt, unpack, sigmoid, pack, encrypt
/// (`per_ct` values per ciphertext).
fn client_round(
    key: &PrivateKey,
    scales: &Scales,
    cts: &[Ciphertext],
    per_ct: usize,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<Ciphertext>, f64, f64, f64)> {
    let beta = layout_bits(scales, per_ct);
    let t = Instant::now();
    let plain = cts
        .iter()
        .map(|c| key.decrypt(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let decrypt = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut acts = Vec::with_capacity(plain.len());
    for m in &plain {
        let a = unpack_signed(m, per_ct, beta)?
            .iter()
            .map(|z| {
                let zi =
                    i128::try_from(z).map_err(|_| BenchError::Check("z out of i128".into()))?;
                Ok(BigInt::from(activation_of(scales, zi)?))
            })
            .collect::<Result<Vec<_>>>()?;
        acts.push(pack_signed(&a, beta));
    }
    let activate = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = acts
        .iter()
        .map(|m| key.encrypt_crt(m, rng))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let encrypt = t.elapsed().as_secs_f64();
    Ok((out, decrypt, activate, encrypt))
}

/// `a = round(σ(z / 2^(fa+fw))·2^fa)`, the client's activation of one pre-activation
/// (the protocol's sigmoid and codec; paper Alg. 1 line 10).
fn activation_of(scales: &Scales, z: i128) -> Result<i128> {
    let x = scales.decode(ValueKind::PreActivation, z);
    Ok(scales.encode(ValueKind::Activation, Activation::Sigmoid.apply(x))?)
}

/// Measures GELU-Net's outsourced activation over loopback QUIC, unpacked and packed,
/// `reps` rounds each, with a client key of `key`.
///
/// # Errors
/// Network, Paillier and range errors; [`BenchError::Check`] if an activation came back
/// wrong.
pub fn measure_gelu(key: &PrivateKey, reps: usize) -> Result<(Vec<GeluCost>, usize)> {
    let workers = 2;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let bits = key.public_key().bits();
    let packed = slots_per_plaintext(bits, slot_bits(&Scales::default())) as usize;
    let out = rt.block_on(async {
        let mut costs = Vec::new();
        for per_ct in [1usize, packed.max(1)] {
            costs.push(round_trip(key, reps, per_ct).await?);
        }
        Ok::<_, BenchError>(costs)
    })?;
    Ok((out, workers))
}

async fn round_trip(key: &PrivateKey, reps: usize, per_ct: usize) -> Result<GeluCost> {
    let scales = Scales::default();
    let beta = layout_bits(&scales, per_ct);
    let settings = TransportSettings::default();
    let identity = ServerIdentity::generate(&["localhost".to_string()])?;
    let bind: SocketAddr = "127.0.0.1:0"
        .parse()
        .map_err(|e: std::net::AddrParseError| BenchError::Config(e.to_string()))?;
    let server = server_endpoint(bind, &identity, &settings)?;
    let addr = server.local_addr()?;
    let max = settings.max_frame_len;
    // The client: connects, opens the stream, answers every [z] with [a].
    let client_key = key.clone();
    let cert = identity.certificate().clone();
    let client_settings = settings.clone();
    let client = tokio::spawn(async move {
        let endpoint = client_endpoint(client_bind_addr(addr))?;
        let conn = connect(&endpoint, addr, "localhost", cert, &client_settings).await?;
        let mut ch = Channel::open(&conn, max).await?;
        ch.send(&Wire::Ready).await?;
        let mut rng = ChaCha20Rng::seed_from_u64(77);
        loop {
            match ch.recv::<Wire>().await? {
                Wire::Z(cts) => {
                    let (out, decrypt, activate, encrypt) =
                        client_round(&client_key, &Scales::default(), &cts, per_ct, &mut rng)?;
                    ch.send(&Wire::A {
                        cts: out,
                        decrypt,
                        activate,
                        encrypt,
                    })
                    .await?;
                }
                Wire::Done => break,
                other => {
                    return Err(BenchError::Check(format!("client got {other:?}")));
                }
            }
        }
        ch.finish().await?;
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<(), BenchError>(())
    });
    let conn = accept(&server, &settings).await?;
    let mut ch = Channel::accept(&conn, max).await?;
    match ch.recv::<Wire>().await? {
        Wire::Ready => {}
        other => return Err(BenchError::Check(format!("server got {other:?}"))),
    }
    // Pre-activations as the server's linear layer would produce them.
    let pk = key.public_key();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut sums = Split::default();
    let mut correct = true;
    let mut wire = 0u64;
    for rep in 0..=reps {
        let zs: Vec<i128> = (0..per_ct)
            .map(|_| scales.encode(ValueKind::PreActivation, rng.gen_range(-6.0..6.0)))
            .collect::<std::result::Result<_, _>>()?;
        let big: Vec<BigInt> = zs.iter().map(|&z| BigInt::from(z)).collect();
        let ct = pk.encrypt(&pack_signed(&big, beta), &mut rng)?;
        let (s0, r0) = (ch.bytes_sent(), ch.bytes_received());
        let t = Instant::now();
        ch.send(&Wire::Z(vec![ct])).await?;
        let reply = ch.recv::<Wire>().await?;
        let total = t.elapsed().as_secs_f64();
        let Wire::A {
            cts,
            decrypt,
            activate,
            encrypt,
        } = reply
        else {
            return Err(BenchError::Check("unexpected reply".into()));
        };
        // Check the returned activations (outside the timed part).
        let a = key.decrypt(
            cts.first()
                .ok_or_else(|| BenchError::Check("empty".into()))?,
        )?;
        let got = unpack_signed(&a, per_ct, beta)?;
        for (z, g) in zs.iter().zip(&got) {
            if BigInt::from(activation_of(&scales, *z)?) != *g {
                correct = false;
            }
        }
        if rep == 0 {
            continue; // warm-up
        }
        wire += (ch.bytes_sent() - s0) + (ch.bytes_received() - r0);
        let crypto = decrypt + encrypt;
        sums.total += total;
        sums.decrypt += decrypt;
        sums.encrypt += encrypt;
        sums.crypto += crypto;
        sums.activation += activate;
        sums.communication += (total - crypto - activate).max(0.0);
    }
    ch.send(&Wire::Done).await?;
    client
        .await
        .map_err(|e| BenchError::Check(format!("client task: {e}")))??;
    server.close(0u32.into(), b"done");
    #[allow(clippy::cast_precision_loss)]
    let per_ct_split = sums.scaled(1.0 / reps.max(1) as f64);
    #[allow(clippy::cast_precision_loss)]
    let per_value = per_ct_split.scaled(1.0 / per_ct as f64);
    if !correct {
        return Err(BenchError::Check(
            "an outsourced activation came back wrong".into(),
        ));
    }
    Ok(GeluCost {
        values_per_ciphertext: per_ct,
        slot_bits: beta,
        per_ciphertext: per_ct_split,
        per_value,
        wire_bytes: wire / reps.max(1) as u64,
        correct,
    })
}

/// Runs part 3: GELU-Net over loopback QUIC with a client key of `key_bits`, and BFV
/// square / Taylor-5 with `bfv`.
///
/// # Errors
/// As [`measure_gelu`]; BFV errors.
pub fn run(
    key_bits: u64,
    allow_test_keys: bool,
    reps: usize,
    bfv: &BfvConfig,
    bfv_reps: usize,
) -> Result<ActivationReport> {
    let key = crate::runs::keygen(key_bits, 4242, allow_test_keys)?;
    let (gelu, tokio_workers) = measure_gelu(&key, reps)?;
    let mut ctx = BfvContext::new(bfv, [3u8; 32])?;
    let bfv_square = time_square(&mut ctx, bfv_reps)?;
    let bfv_taylor5 = time_poly5(&mut ctx, bfv_reps)?;
    let ed = time_encrypt_decrypt(&mut ctx, bfv_reps)?;
    Ok(ActivationReport {
        key_bits,
        test_keys: key_bits < gelunet_paillier::MIN_KEY_BITS,
        repetitions: reps,
        gelu,
        bfv_parameters: ctx.describe(),
        bfv_square,
        bfv_taylor5,
        bfv_encrypt: ed.encrypt,
        bfv_decrypt: ed.decrypt,
        threads: rayon::current_num_threads(),
        tokio_workers,
    })
}
