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
//! `β` bits per plaintext, `P·β < |N|`). The client encrypts with
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
use gelunet_protocol::{Scales, ValueKind};
use num_traits::{One, Zero};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Slot width for packed pre-activations: `|z| < 2^(limit + fa + fw)` = `2^76` with the
/// default scales, offset to `[0, 2^77)`, plus one guard bit.
pub const SLOT_BITS: u32 = 78;

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

fn pack(values: &[BigInt], slot_bits: u32) -> BigInt {
    let offset = BigInt::one() << (slot_bits - 2);
    let mut m = BigInt::zero();
    for v in values.iter().rev() {
        m = (m << slot_bits) + (v + &offset);
    }
    m
}

fn unpack(m: &BigInt, count: usize, slot_bits: u32) -> Vec<BigInt> {
    let offset = BigInt::one() << (slot_bits - 2);
    let mask = (BigInt::one() << slot_bits) - 1;
    (0..count)
        .map(|s| ((m >> (slot_bits as usize * s)) & &mask) - &offset)
        .collect()
}

/// The client's work on one ciphertext: decrypt, unpack, sigmoid, pack, encrypt.
fn client_round(
    key: &PrivateKey,
    scales: &Scales,
    cts: &[Ciphertext],
    per_ct: usize,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<Ciphertext>, f64, f64, f64)> {
    let t = Instant::now();
    let plain = cts
        .iter()
        .map(|c| key.decrypt(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let decrypt = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut acts = Vec::with_capacity(plain.len());
    for m in &plain {
        let zs = if per_ct == 1 {
            vec![m.clone()]
        } else {
            unpack(m, per_ct, SLOT_BITS)
        };
        let a = zs
            .iter()
            .map(|z| {
                let zi =
                    i128::try_from(z).map_err(|_| BenchError::Check("z out of i128".into()))?;
                let x = scales.decode(ValueKind::PreActivation, zi);
                let s = 1.0 / (1.0 + (-x).exp());
                Ok(BigInt::from(scales.encode(ValueKind::Activation, s)?))
            })
            .collect::<Result<Vec<_>>>()?;
        acts.push(if per_ct == 1 {
            a.into_iter().next().unwrap_or_default()
        } else {
            pack(&a, SLOT_BITS)
        });
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

fn expected_activation(scales: &Scales, z: i128) -> Result<i128> {
    let x = scales.decode(ValueKind::PreActivation, z);
    Ok(scales.encode(ValueKind::Activation, 1.0 / (1.0 + (-x).exp()))?)
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
    let packed = usize::try_from((bits.saturating_sub(2)) / u64::from(SLOT_BITS))
        .map_err(|e| BenchError::Config(e.to_string()))?;
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
        let m = if per_ct == 1 {
            big[0].clone()
        } else {
            pack(&big, SLOT_BITS)
        };
        let ct = pk.encrypt(&m, &mut rng)?;
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
        let got = if per_ct == 1 {
            vec![a]
        } else {
            unpack(&a, per_ct, SLOT_BITS)
        };
        for (z, g) in zs.iter().zip(&got) {
            if BigInt::from(expected_activation(&scales, *z)?) != *g {
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
        slot_bits: if per_ct == 1 { 0 } else { SLOT_BITS },
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
