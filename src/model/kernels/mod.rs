//! Fused CPU kernels for the training path: candle custom ops with hand-written backward.
//!
//! candle's own fused `layer_norm`/`softmax_last_dim` have no backward (DESIGN §6), and the
//! differentiable compositions cost a full memory pass and an allocation per primitive, plus in
//! backward a gradient kernel and a zero-fill and add per input (candle accumulates every
//! gradient into a fresh zero tensor, serially). Each op here replaces such a chain by one node:
//! a block is two ops (`attention_block`, `feed_forward`), the MLM head's end and its loss one
//! (`vocabulary_loss`), the embedding lookups and their sum one (`lookup_sum`). The first three
//! are composed of slice-level passes (`attention`, `activation`, `layer_norm`, `projection`,
//! whose products call gemm directly) with hand-written backward.
//!
//! The composed versions remain in `ops`/`layer` as the reference (the tests below compare
//! values and gradients) and as the path for devices other than the CPU.

mod activation;
mod attention;
mod attention_block;
mod dropout;
mod feed_forward;
mod layer_norm;
mod lookup_sum;
mod par;
mod projection;
mod simd;
mod vocabulary_loss;

pub use activation::linear_activation;
pub use attention_block::{attention_block, AttentionDropout, AttentionWeights};
pub use dropout::{dropout, DropoutMask};
pub use feed_forward::{feed_forward, FeedForwardWeights};
pub use layer_norm::layer_norm;
pub use lookup_sum::lookup_sum;
pub use vocabulary_loss::vocabulary_cross_entropy;

#[cfg(test)]
mod tests;
