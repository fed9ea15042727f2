//! PROUD (Jiang et al., "PROUD: PRivacy-preserving OUtsourced Deep learning",
//! `../shared/papers/proud.txt`): the server evaluates every linear layer on one
//! *packed* homomorphic ciphertext (MatF, after Jiang et al. CCS 2018), the client
//! decrypts the pre-activations, applies the activation in plaintext and re-encrypts
//! (NlnF), as GELU-Net does with Paillier.
//!
//! The paper uses CKKS; `fhe.rs` has no CKKS, so this module uses BFV (exact integer
//! arithmetic modulo a plaintext prime `t`) on fixed-point integers. The products are
//! then exact, which is what the tests check, and the costs are those of a
//! leveled RLWE scheme at the same ring degree (`N = 8192`, 128-bit security, see
//! [`crate::bfv`] for the parameter set, reused here).
//!
//! # Parties and inputs
//!
//! - **Client** ([`ProudClient`]). Private: the input `x`, the secret key, every
//!   pre-activation `z_l` and activation. Public: the layer widths, the BFV parameters,
//!   the rotation (Galois) keys and relinearization-free evaluation key it sends.
//! - **Server** ([`ProudServer`]). Private: the weights `W_l` and biases `b_l` (integers
//!   at the model's fixed-point scale). Sees only ciphertexts.
//!
//! # The math: the diagonal method with baby-step giant-step rotations
//!
//! BFV SIMD packing makes a plaintext a `2 × N/2` matrix of slots; a Galois
//! automorphism rotates each row cyclically ([`fhe::bfv::EvaluationKey::rotates_columns_by`],
//! `rot(x, i)[j] = x[j + i]`). The client packs `x` (length `n`, zero-padded to a
//! power of two `n' ≤ N/2`) *periodically* over all slots, so a row rotation acts as a
//! cyclic rotation modulo `n'`. For `W` (`m × n`, zero-padded to `m' × n'`, `m'` the
//! next power of two of `m`, `m' ≤ n'`) the generalized diagonals (Halevi–Shoup 2014)
//! are `d_i[j] = W[j mod m', (j + i) mod n']`, `i < m'`, and
//!
//! ```text
//! y'   = Σ_{i<m'} d_i ⊙ rot(x, i)                                  (m' plaintext products)
//! y[r] = Σ_{k < n'/m'} y'[r + k·m'] = Σ_c W[r, c]·x[c]              (log2(n'/m') rotations)
//! ```
//!
//! With `i = g·a + b` (`g ≈ √m'` baby steps) the rotations are shared:
//! `y' = Σ_a rot( Σ_b rot(d_{ga+b}, −g·a) ⊙ rot(x, b), g·a )`, `g − 1 + m'/g − 1`
//! rotations instead of `m' − 1`; the pre-rotated diagonals are encoded once when the
//! model is loaded. The bias is added as a plaintext, and the result is switched down
//! to two ciphertext primes before it is returned (fewer bytes down).
//!
//! Exactness: slot arithmetic is modulo `t`; [`ProudServer::new`] checks
//! `2·(Σ_c |W[r,c]|·B + |b_r|) < t` for the agreed input bound `B` of every layer and
//! returns [`BaselineError::PlaintextModulusTooSmall`] otherwise.

use std::collections::BTreeSet;
use std::sync::Arc;

use fhe::bfv::{
    dot_product_scalar, BfvParameters, Ciphertext, Encoding, EvaluationKey, EvaluationKeyBuilder,
    Plaintext, SecretKey,
};
use fhe_traits::{FheDecoder, FheDecrypter, FheEncoder, FheEncrypter, Serialize as _};
use ndarray::{Array1, Array2};
use rand09::SeedableRng;
use rand_chacha09::ChaCha20Rng;
use rayon::prelude::*;

use crate::bfv::BfvConfig;
use crate::error::{BaselineError, Result};

/// One dense layer on integers: `z = W·x + b`, `W` of shape `outputs × inputs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntLayer {
    /// Weights, `outputs × inputs`.
    pub w: Array2<i64>,
    /// Biases, `outputs`.
    pub b: Array1<i64>,
}

impl IntLayer {
    /// `W·x + b` on integers (the plaintext reference).
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if `x` has the wrong length;
    /// [`BaselineError::Overflow`] if an `i64` overflows.
    pub fn forward(&self, x: &[i64]) -> Result<Vec<i64>> {
        if x.len() != self.w.ncols() {
            return Err(BaselineError::ShapeMismatch {
                what: "layer input",
                expected: vec![self.w.ncols()],
                got: vec![x.len()],
            });
        }
        self.w
            .outer_iter()
            .zip(self.b.iter())
            .map(|(row, &b)| {
                row.iter().zip(x).try_fold(b, |acc, (&w, &v)| {
                    w.checked_mul(v).and_then(|p| acc.checked_add(p)).ok_or(
                        BaselineError::Overflow {
                            what: "integer layer",
                        },
                    )
                })
            })
            .collect()
    }

    /// Worst-case `|z|` for inputs with `|x| ≤ bound`.
    ///
    /// # Errors
    /// [`BaselineError::Overflow`] if it leaves `u128`.
    pub fn output_bound(&self, bound: i64) -> Result<u128> {
        let mut best = 0u128;
        for (row, &b) in self.w.outer_iter().zip(self.b.iter()) {
            let s = row
                .iter()
                .try_fold(u128::from(b.unsigned_abs()), |acc, &w| {
                    u128::from(w.unsigned_abs())
                        .checked_mul(u128::from(bound.unsigned_abs()))
                        .and_then(|p| acc.checked_add(p))
                });
            best = best.max(s.ok_or(BaselineError::Overflow {
                what: "layer output bound",
            })?);
        }
        Ok(best)
    }
}

/// The packing of one layer: `(n', m', g)` = padded input width, padded output width,
/// baby steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Padded input width `n'` (power of two, `≤ N/2`): the period of the packed input.
    pub period: usize,
    /// Padded output width `m'` (power of two, `≤ n'`).
    pub rows: usize,
    /// Baby steps `g` (power of two, `g ≤ m'`).
    pub baby: usize,
}

impl Packing {
    /// The packing of an `outputs × inputs` layer in rows of `half_slots = N/2` slots.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if the layer is empty or wider than `N/2`.
    pub fn new(inputs: usize, outputs: usize, half_slots: usize) -> Result<Self> {
        if inputs == 0 || outputs == 0 {
            return Err(BaselineError::InvalidParameter {
                name: "layer",
                reason: "empty layer".into(),
            });
        }
        let period = inputs.next_power_of_two().max(outputs.next_power_of_two());
        if period > half_slots {
            return Err(BaselineError::InvalidParameter {
                name: "layer",
                reason: format!(
                    "{outputs}×{inputs} needs {period} slots per row, the ring has {half_slots}"
                ),
            });
        }
        let rows = outputs.next_power_of_two();
        let baby = 1usize << rows.trailing_zeros().div_ceil(2);
        Ok(Self { period, rows, baby })
    }

    /// The rotation amounts the layer needs: baby steps `1..g`, giant steps `g·a`, the
    /// fold `m'·2^s < n'`.
    #[must_use]
    pub fn rotations(&self) -> BTreeSet<usize> {
        let mut r: BTreeSet<usize> = (1..self.baby).collect();
        r.extend((1..self.rows / self.baby).map(|a| a * self.baby));
        let mut s = self.rows;
        while s < self.period {
            r.insert(s);
            s *= 2;
        }
        r
    }
}

/// Public material for the server: parameters and the Galois (rotation) keys.
#[derive(Clone, Debug)]
pub struct ProudKey {
    params: Arc<BfvParameters>,
    ek: Arc<EvaluationKey>,
    config: BfvConfig,
}

impl ProudKey {
    /// Bytes of the evaluation key (sent once).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.ek.to_bytes().len()
    }

    /// The parameters.
    #[must_use]
    pub fn config(&self) -> &BfvConfig {
        &self.config
    }
}

/// A packed ciphertext travelling between the parties.
#[derive(Clone, Debug)]
pub struct PackedCiphertext {
    ct: Ciphertext,
    params: Arc<BfvParameters>,
}

impl PackedCiphertext {
    /// Serialized size in bytes (what goes over the wire).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.ct.to_bytes().len()
    }
}

/// The client: secret key and the layer widths.
pub struct ProudClient {
    params: Arc<BfvParameters>,
    sk: SecretKey,
    rng: ChaCha20Rng,
    key: ProudKey,
}

impl std::fmt::Debug for ProudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProudClient")
            .field("config", &self.key.config)
            .finish_non_exhaustive()
    }
}

impl ProudClient {
    /// Generates the secret key and the Galois keys for the layers `widths`
    /// (`n_0, n_1, …, n_L`), deterministically from `seed`.
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for a layer that does not fit a row;
    /// [`BaselineError::Fhe`] from key generation.
    pub fn new(config: &BfvConfig, widths: &[usize], seed: [u8; 32]) -> Result<Self> {
        let params = config.build()?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let sk = SecretKey::random(&params, &mut rng);
        let mut rotations = BTreeSet::new();
        for pair in widths.windows(2) {
            rotations.extend(Packing::new(pair[0], pair[1], params.degree() / 2)?.rotations());
        }
        let mut builder = EvaluationKeyBuilder::new(&sk)?;
        for r in rotations {
            builder.enable_column_rotation(r)?;
        }
        let ek = Arc::new(builder.build(&mut rng)?);
        let key = ProudKey {
            params: params.clone(),
            ek,
            config: config.clone(),
        };
        Ok(Self {
            params,
            sk,
            rng,
            key,
        })
    }

    /// The server's key.
    #[must_use]
    pub fn server_key(&self) -> ProudKey {
        self.key.clone()
    }

    /// Encodes `x` periodically with period `period` (a layer's [`Packing::period`])
    /// over all `N` slots and encrypts it (the client's "encode + encrypt").
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] if `x` is longer than the period or the
    /// period does not divide `N/2`; [`BaselineError::InputOutOfRange`] if a value is
    /// not below `t/2`; [`BaselineError::Fhe`].
    pub fn encrypt(&mut self, x: &[i64], period: usize) -> Result<PackedCiphertext> {
        let n = self.params.degree();
        if x.len() > period || period == 0 || !(n / 2).is_multiple_of(period) {
            return Err(BaselineError::InvalidParameter {
                name: "period",
                reason: format!(
                    "{} values with period {period} in rows of {}",
                    x.len(),
                    n / 2
                ),
            });
        }
        let half_t = self.params.plaintext() / 2;
        if let Some(&v) = x.iter().find(|v| v.unsigned_abs() >= half_t) {
            return Err(BaselineError::InputOutOfRange {
                value: v,
                bound: i64::try_from(half_t).unwrap_or(i64::MAX),
            });
        }
        let slots: Vec<i64> = (0..n)
            .map(|j| x.get(j % period).copied().unwrap_or(0))
            .collect();
        let pt = Plaintext::try_encode(&slots[..], Encoding::simd(), &self.params)?;
        Ok(PackedCiphertext {
            ct: self.sk.try_encrypt(&pt, &mut self.rng)?,
            params: self.params.clone(),
        })
    }

    /// Decrypts and decodes the first `len` slots (centred: `(−t/2, t/2]`).
    ///
    /// # Errors
    /// [`BaselineError::Fhe`] if the ciphertext is not under this key's parameters.
    pub fn decrypt(&self, ct: &PackedCiphertext, len: usize) -> Result<Vec<i64>> {
        let pt = self.sk.try_decrypt(&ct.ct)?;
        let v = Vec::<i64>::try_decode(&pt, Encoding::simd())?;
        Ok(v.into_iter().take(len).collect())
    }
}

/// One layer prepared for the server: pre-rotated diagonals per giant step.
#[derive(Debug)]
struct PreparedLayer {
    packing: Packing,
    outputs: usize,
    inputs: usize,
    /// `diag[a][b]` = `rot(d_{ga+b}, −g·a)`, encoded.
    diag: Vec<Vec<Plaintext>>,
    bias: Plaintext,
}

/// The server: the integer model prepared for packed evaluation.
#[derive(Debug)]
pub struct ProudServer {
    key: ProudKey,
    layers: Vec<PreparedLayer>,
}

impl ProudServer {
    /// Encodes every layer's diagonals; `input_bounds[l]` is the agreed bound on the
    /// inputs of layer `l`.
    ///
    /// # Errors
    /// [`BaselineError::ShapeMismatch`] if widths do not chain or the bounds do not
    /// match the layers; [`BaselineError::PlaintextModulusTooSmall`] if a layer's
    /// worst case does not fit `t`; [`BaselineError::Fhe`].
    pub fn new(layers: &[IntLayer], key: &ProudKey, input_bounds: &[i64]) -> Result<Self> {
        if layers.len() != input_bounds.len() {
            return Err(BaselineError::ShapeMismatch {
                what: "input bounds (one per layer)",
                expected: vec![layers.len()],
                got: vec![input_bounds.len()],
            });
        }
        let params = &key.params;
        let t = params.plaintext();
        let half = params.degree() / 2;
        let mut prepared = Vec::with_capacity(layers.len());
        for (l, (layer, &bound)) in layers.iter().zip(input_bounds).enumerate() {
            if l > 0 && layers[l - 1].w.nrows() != layer.w.ncols() {
                return Err(BaselineError::ShapeMismatch {
                    what: "layer widths",
                    expected: vec![layers[l - 1].w.nrows()],
                    got: vec![layer.w.ncols()],
                });
            }
            if layer.b.len() != layer.w.nrows() {
                return Err(BaselineError::ShapeMismatch {
                    what: "bias",
                    expected: vec![layer.w.nrows()],
                    got: vec![layer.b.len()],
                });
            }
            let out = layer.output_bound(bound)?;
            if out.checked_mul(2).is_none_or(|b| b >= u128::from(t)) {
                return Err(BaselineError::PlaintextModulusTooSmall {
                    needed_bits: 130 - out.leading_zeros(),
                    t_bits: 64 - t.leading_zeros(),
                });
            }
            let (m, n) = layer.w.dim();
            let pk = Packing::new(n, m, half)?;
            let w = |r: usize, c: usize| -> i64 {
                if r < m && c < n {
                    layer.w[[r, c]]
                } else {
                    0
                }
            };
            let (np, mp, g) = (pk.period, pk.rows, pk.baby);
            let diag = (0..mp / g)
                .into_par_iter()
                .map(|a| {
                    (0..g)
                        .map(|b| {
                            let i = g * a + b;
                            // rot(d_i, −g·a)[j] = d_i[j − g·a], periodic in n'.
                            let slots: Vec<i64> = (0..params.degree())
                                .map(|j| {
                                    let jj = (j % np + np - (g * a) % np) % np;
                                    w(jj % mp, (jj + i) % np)
                                })
                                .collect();
                            Ok(Plaintext::try_encode(&slots[..], Encoding::simd(), params)?)
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            let bias_slots: Vec<i64> = (0..params.degree())
                .map(|j| layer.b.get(j % mp).copied().unwrap_or(0))
                .collect();
            let bias = Plaintext::try_encode(&bias_slots[..], Encoding::simd(), params)?;
            prepared.push(PreparedLayer {
                packing: pk,
                outputs: m,
                inputs: n,
                diag,
                bias,
            });
        }
        Ok(Self {
            key: key.clone(),
            layers: prepared,
        })
    }

    /// The packing of layer `l` (the client encrypts its input with this period).
    #[must_use]
    pub fn packing(&self, l: usize) -> Option<Packing> {
        self.layers.get(l).map(|p| p.packing)
    }

    /// Number of layers.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Widths `(inputs, outputs)` of layer `l`.
    #[must_use]
    pub fn widths(&self, l: usize) -> Option<(usize, usize)> {
        self.layers.get(l).map(|p| (p.inputs, p.outputs))
    }

    /// Evaluates layer `l` on a packed ciphertext: `W_l·x + b_l` in the first
    /// `outputs` slots (MatF).
    ///
    /// # Errors
    /// [`BaselineError::InvalidParameter`] for an unknown layer or a ciphertext under
    /// other parameters; [`BaselineError::Fhe`].
    pub fn layer(&self, l: usize, x: &PackedCiphertext) -> Result<PackedCiphertext> {
        let layer = self
            .layers
            .get(l)
            .ok_or_else(|| BaselineError::InvalidParameter {
                name: "layer",
                reason: format!("layer {l} of {}", self.layers.len()),
            })?;
        if !Arc::ptr_eq(&x.params, &self.key.params) {
            return Err(BaselineError::InvalidParameter {
                name: "ciphertext",
                reason: "encrypted under other BFV parameters than the server key's".into(),
            });
        }
        let ek = &self.key.ek;
        let Packing { period, rows, baby } = layer.packing;
        let mut babies = vec![x.ct.clone()];
        babies.extend(
            (1..baby)
                .into_par_iter()
                .map(|b| Ok(ek.rotates_columns_by(&x.ct, b)?))
                .collect::<Result<Vec<_>>>()?,
        );
        let giants = (0..rows / baby)
            .into_par_iter()
            .map(|a| {
                let inner = dot_product_scalar(babies.iter(), layer.diag[a].iter())?;
                if a == 0 {
                    Ok(inner)
                } else {
                    Ok(ek.rotates_columns_by(&inner, a * baby)?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let mut acc = giants
            .into_iter()
            .reduce(|a, b| &a + &b)
            .ok_or(BaselineError::Overflow {
                what: "empty layer",
            })?;
        let mut s = period / 2;
        while s >= rows {
            let r = ek.rotates_columns_by(&acc, s)?;
            acc += &r;
            s /= 2;
        }
        acc += &layer.bias;
        let target = self.key.params.max_level().saturating_sub(1);
        acc.switch_to_level(target)?;
        Ok(PackedCiphertext {
            ct: acc,
            params: x.params.clone(),
        })
    }
}

/// Per-sample cost of one PROUD inference (the paper's Table 3 split).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProudCost {
    /// Client: encode + encrypt (seconds, all layers).
    pub client_encrypt_secs: f64,
    /// Server: MatF (seconds, all layers).
    pub server_secs: f64,
    /// Client: decrypt + decode (seconds, all layers).
    pub client_decrypt_secs: f64,
    /// Client: the activations (seconds).
    pub client_activation_secs: f64,
    /// Client → server bytes.
    pub bytes_up: usize,
    /// Server → client bytes.
    pub bytes_down: usize,
}

/// One inference: for every layer the client encrypts, the server evaluates, the client
/// decrypts and (except after the last layer) applies `activation(l, z)` in plaintext.
/// Returns the logits and the cost split.
///
/// # Errors
/// As [`ProudClient::encrypt`] and [`ProudServer::layer`].
pub fn infer(
    client: &mut ProudClient,
    server: &ProudServer,
    x: &[i64],
    activation: &dyn Fn(usize, &[i64]) -> Vec<i64>,
) -> Result<(Vec<i64>, ProudCost)> {
    let mut cost = ProudCost::default();
    let mut v = x.to_vec();
    for l in 0..server.num_layers() {
        let (pk, (_, outputs)) = server
            .packing(l)
            .zip(server.widths(l))
            .ok_or(BaselineError::Overflow { what: "layer" })?;
        let t = std::time::Instant::now();
        let ct = client.encrypt(&v, pk.period)?;
        cost.client_encrypt_secs += t.elapsed().as_secs_f64();
        cost.bytes_up += ct.bytes();
        let t = std::time::Instant::now();
        let out = server.layer(l, &ct)?;
        cost.server_secs += t.elapsed().as_secs_f64();
        cost.bytes_down += out.bytes();
        let t = std::time::Instant::now();
        let z = client.decrypt(&out, outputs)?;
        cost.client_decrypt_secs += t.elapsed().as_secs_f64();
        v = if l + 1 < server.num_layers() {
            let t = std::time::Instant::now();
            let a = activation(l, &z);
            cost.client_activation_secs += t.elapsed().as_secs_f64();
            a
        } else {
            z
        };
    }
    Ok((v, cost))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::{Rng, SeedableRng as _};

    fn random_layer(rng: &mut rand_chacha::ChaCha20Rng, m: usize, n: usize, r: i64) -> IntLayer {
        IntLayer {
            w: Array2::from_shape_fn((m, n), |_| rng.gen_range(-r..=r)),
            b: Array1::from_shape_fn(m, |_| rng.gen_range(-r..=r)),
        }
    }

    #[test]
    fn packing_shapes() {
        let p = Packing::new(784, 300, 4096).unwrap();
        assert_eq!((p.period, p.rows, p.baby), (1024, 512, 32));
        let r = p.rotations();
        assert!(r.contains(&1) && r.contains(&31) && r.contains(&480) && r.contains(&512));
        assert!(Packing::new(5000, 3, 4096).is_err());
        assert!(Packing::new(0, 3, 4096).is_err());
    }

    /// A 3-layer network (wide, tall, odd shapes): the decrypted outputs equal the
    /// integer computation exactly.
    #[test]
    fn packed_inference_equals_integer_computation() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let layers = vec![
            random_layer(&mut rng, 37, 100, 60),
            random_layer(&mut rng, 50, 37, 60),
            random_layer(&mut rng, 10, 50, 60),
        ];
        let act = |_: usize, z: &[i64]| z.iter().map(|&v| (v.max(0) >> 8).min(63)).collect();
        let config = BfvConfig::n8192(30).unwrap();
        let mut client = ProudClient::new(&config, &[100, 37, 50, 10], [3; 32]).unwrap();
        let server = ProudServer::new(&layers, &client.server_key(), &[63, 63, 63]).unwrap();
        for s in 0..2 {
            let x: Vec<i64> = (0..100).map(|_| rng.gen_range(-63..=63)).collect();
            let (out, cost) = infer(&mut client, &server, &x, &act).unwrap();
            let h1 = act(0, &layers[0].forward(&x).unwrap());
            let h2 = act(1, &layers[1].forward(&h1).unwrap());
            assert_eq!(out, layers[2].forward(&h2).unwrap(), "sample {s}");
            assert!(
                cost.bytes_up > 0 && cost.bytes_down > 0 && cost.server_secs > 0.0,
                "{cost:?}"
            );
        }
    }

    #[test]
    fn too_small_t_and_bad_inputs_are_errors() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let layers = vec![random_layer(&mut rng, 4, 8, 1000)];
        let config = BfvConfig::n8192(17).unwrap();
        let mut client = ProudClient::new(&config, &[8, 4], [4; 32]).unwrap();
        assert!(matches!(
            ProudServer::new(&layers, &client.server_key(), &[1000]),
            Err(BaselineError::PlaintextModulusTooSmall { .. })
        ));
        assert!(matches!(
            ProudServer::new(&layers, &client.server_key(), &[]),
            Err(BaselineError::ShapeMismatch { .. })
        ));
        assert!(client.encrypt(&[1; 9], 8).is_err());
        assert!(matches!(
            client.encrypt(&[1 << 40], 8),
            Err(BaselineError::InputOutOfRange { .. })
        ));
        let server = ProudServer::new(&layers, &client.server_key(), &[1]).unwrap();
        let ct = client.encrypt(&[1; 8], 8).unwrap();
        assert!(server.layer(1, &ct).is_err());
        let other = ProudClient::new(&config, &[8, 4], [5; 32]).unwrap();
        let server2 = ProudServer::new(&layers, &other.server_key(), &[1]).unwrap();
        assert!(server2.layer(0, &ct).is_err());
    }
}
