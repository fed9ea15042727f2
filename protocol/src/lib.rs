//! The shared core of GELU-Net (Zhang et al., IJCAI-18) for gelunet: model specification,
//! fixed-point codec, the plaintext network math in exact integers, gradient masks,
//! session scheduling, the messages of the two parties, and the plaintext reference
//! trainer.
//!
//! The server and client state machines (crates `gelunet-server`, `gelunet-client`) are
//! built on these pieces; they share every line of plaintext math with
//! [`reference::ReferenceTrainer`], which is what makes the encrypted training *exactly*
//! equal to plaintext fixed-point training (docs/DESIGN.md).
//!
//! | module | contents | source |
//! | --- | --- | --- |
//! | [`spec`] | [`ModelSpec`], [`Activation`] | paper §2.1 |
//! | [`fixed`] | [`Scales`], [`ValueKind`], rounding | docs/DESIGN.md "Fixed-point numbers" |
//! | [`arch`] | [`arch::Arch`]: layer syntax, the named `conv1` and `lenet5`, shape inference | paper §5, Table 4 |
//! | [`conv`] | [`conv::ConvGeometry`], its index map, convolution, transpose, kernel gradients | paper §4 end, Table 4; docs/DESIGN.md "Convolutional layers" |
//! | [`conv_net`] | [`conv_net::ConvNet`]: plaintext fixed-point training of an [`arch::Arch`] (the reference of conv models, [`ReferenceTrainer`]) | docs/DESIGN.md "Convolutional layers" |
//! | [`pool`] | [`pool::MeanPool2`]: 2×2 mean pooling as an exact sum (the server pools ciphertexts through [`linear_layer`]) | docs/DESIGN.md "Convolutional layers" |
//! | [`linear_layer`] | [`linear_layer::LinearLayer`]: a dense layer or a convolution with its sum pooling, one index logic for every party | paper §4 end; docs/DESIGN.md "Convolutional layers" |
//! | [`learning_rate`] | [`LearningRateSchedule`]: the public rate `η_s` of each session | docs/DESIGN.md "Learning-rate schedule" |
//! | [`math`] | forward, softmax error, backward, gradients, SGD | paper Eq. 1, Alg. 1–2 |
//! | [`mask`] | [`MaskMode`], modular helpers | paper Alg. 3–4, docs/DESIGN.md "Masked update" |
//! | [`schedule`] | [`Scheduler`], the `d_max` bound | paper §4.1, docs/DESIGN.md "Sessions and the d_max bound" |
//! | [`data`] | [`Dataset`], [`BatchSampler`] | |
//! | [`messages`] | wire messages | paper Alg. 1–5, inference |
//! | [`envelope`] | the shells' frames around them (registration, refusal, summary) | |
//! | [`group_key`] | protocol v2: the clients' group key, per-version seeds | docs/DESIGN.md "Protocol v2" |
//! | [`v2`] | protocol v2: parameters and plaintext update messages | docs/DESIGN.md "Protocol v2" |
//! | [`version_mask`] | protocol v2: the masks `P_v` | docs/DESIGN.md "Protocol v2" |
//! | [`packing`] | sample, update and row packing | docs/DESIGN.md "Batches and packing" |
//! | [`randomness`] | OS randomness, or the insecure reproducible mode | |
//! | [`redacted_debug!`] | `Debug` that prints `<redacted>` for secret fields | |
//! | [`reference`](mod@reference) | [`ReferenceTrainer`] | |
//! | [`violation`] | [`ProtocolViolation`]: faults of the other party's messages, one error code | docs/DESIGN.md "Wire protocol and processes" |

pub mod arch;
pub mod conv;
pub mod conv_net;
pub mod data;
pub mod envelope;
mod error;
pub mod fixed;
pub mod group_key;
pub mod learning_rate;
pub mod linear_layer;
pub mod mask;
pub mod math;
pub mod messages;
pub mod packing;
pub mod pool;
pub mod randomness;
mod redact;
pub mod reference;
pub mod schedule;
pub mod spec;
pub mod v2;
pub mod version_mask;
pub mod violation;

pub use data::{BatchSampler, Dataset};
pub use error::{Error, Result};
pub use fixed::{Limits, Scales, ValueKind};
pub use learning_rate::LearningRateSchedule;
pub use mask::{MaskMode, MaskTarget};
pub use math::{FixedModel, Gradients, LayerGradients, LayerParams};
pub use reference::ReferenceTrainer;
pub use schedule::{ClientOrder, Scheduler, SessionLength, SessionPlan, SessionPolicy};
pub use spec::{Activation, ModelSpec, MAX_LAYERS, MAX_PARAMETERS, MAX_WIDTH, MESSAGE_OVERHEAD};
pub use violation::ProtocolViolation;
