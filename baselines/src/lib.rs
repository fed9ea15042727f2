//! Baselines that GELU-Net is compared with.
//!
//! GELU-Net (Zhang et al., IJCAI-18) evaluates the linear layers of a network under
//! Paillier and outsources the non-linear activation to the data owner, who applies it
//! in plaintext. The systems it is compared with keep the *whole* network on the
//! server and therefore replace the activation by a polynomial:
//!
//! - **CryptoNets** (Gilad-Bachrach et al., ICML 2016) uses the square `x²` and
//!   evaluates the network under a leveled homomorphic scheme (YASHE' in the paper; BFV
//!   here, through Tancrède Lepoint's `fhe.rs`), packing one sample per SIMD slot.
//! - **BGN-Net** (Yuan and Yu 2014, as cited in the GELU-Net paper §5) uses Taylor
//!   expansions of the sigmoid of order 3 or 5.
//!
//! Modules:
//!
//! - [`poly`]: the polynomial activations on `f64` (square, Taylor-3, Taylor-5) with
//!   their derivatives, for the plaintext training baselines.
//! - [`square_net`]: a one-hidden-layer square-activation network on fixed-point
//!   integers, with an exact plaintext evaluation.
//! - [`bfv`]: CryptoNets-style encrypted inference of that network under BFV.
//! - [`train`]: plaintext `f64` mini-batch SGD generic over the hidden activation
//!   (sigmoid, square, Taylor-3, Taylor-5), for the training-stability and accuracy
//!   comparisons.
//! - [`measure`]: per-operation timings (square, degree-5 polynomial, encrypt and
//!   decrypt, whole-batch inference) for the paper's Table 1 comparison.
//! - [`complement`]: complement and partition (Sun et al.): a binary classifier that
//!   flips its output on a secret signal, split between data owner and provider, with
//!   the provider's feature-inversion and label-probe attacks.
//! - [`proud`]: PROUD (Jiang et al.): linear layers on one packed BFV ciphertext
//!   (diagonal method, baby-step giant-step rotations), activations by the client.
//! - [`securenets`]: SecureNets (Chen et al. 2018): outsourced products masked by
//!   pseudorandom scaling and permutation over `F_p`, Freivalds verification, and the
//!   ratio attack on the masking.
//! - [`square_conv`], [`square_conv_bfv`]: CryptoNets' square-activation conv nets
//!   (issue #15), exact in `i128` and under BFV, one sample per slot;
//!   [`square_conv_crt`]: the Chinese remaindering over several plaintext moduli for
//!   nets whose outputs exceed one `t`.
//! - [`error`]: the crate's error type [`BaselineError`].

pub mod bfv;
pub mod complement;
pub mod error;
pub mod measure;
pub mod poly;
pub mod proud;
pub mod securenets;
pub mod square_conv;
pub mod square_conv_bfv;
pub mod square_conv_crt;
pub mod square_net;
pub mod train;

pub use bfv::{
    BfvConfig, BfvContext, BfvDescription, EncryptedBatch, EncryptedOutput, ServerKey, SquareNetBfv,
};
pub use error::{BaselineError, Result};
pub use poly::PolyActivation;
pub use square_net::{SquareNet, SquareScales};
pub use train::{FloatNet, FloatTrainer, HiddenActivation, Sigmoid, TrainActivation};
