//! The MLM prediction head (HF `BertLMPredictionHead`, and the same layers of DistilBERT and the
//! ELECTRA generator): dense → activation → LayerNorm → logits tied to the word embeddings, plus
//! a bias. The transform maps to the embeddings' width (below the model's in ELECTRA). Applied only at picked positions, because the
//! vocabulary projection is otherwise the largest matmul of a training step (DESIGN §5).

use super::kernels;
use super::ops::{Activation, Ctx, LayerNorm, Linear};
use crate::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

pub struct MlmHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    bias: Tensor,
}

impl MlmHead {
    /// `vb` at `cls.predictions`.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let width = cfg.embedding_width();
        Ok(MlmHead {
            dense: Linear::load(vb.pp("transform.dense"), cfg.hidden_size, width)?,
            activation: Activation::parse(&cfg.hidden_act)?,
            layer_norm: LayerNorm::load(vb.pp("transform.LayerNorm"), width, cfg.layer_norm_eps)?,
            bias: vb.get(cfg.vocab_size, "bias")?,
        })
    }

    /// `hidden`: `[n, d_model]`, `word_embeddings`: `[d_vocab, d_embedding]` → logits `[n, d_vocab]`.
    pub fn forward(&self, hidden: &Tensor, word_embeddings: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.logits(&self.transform(hidden, ctx)?, word_embeddings)
    }

    /// Mean cross-entropy of the logits at `hidden` (`[n, d_model]`) over the vocabulary of
    /// `word_embeddings` (`[d_vocab, d_embedding]`) against `targets` (`n` ids), and each row's
    /// top-scoring id. On the CPU the logits never leave one fused op (training reads the head
    /// only here; [`MlmHead::forward`] serves inspection and the parity tests).
    pub fn loss(&self, hidden: &Tensor, word_embeddings: &Tensor, targets: &[u32], ctx: &Ctx) -> Result<(Tensor, Vec<u32>)> {
        let normed = self.transform(hidden, ctx)?;
        if ctx.fused(&normed) {
            return Ok(kernels::vocabulary_cross_entropy(&normed, word_embeddings, &self.bias, targets)?);
        }
        let logits = self.logits(&normed, word_embeddings)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &Tensor::from_slice(targets, targets.len(), logits.device())?)?;
        Ok((loss, logits.argmax(1)?.to_vec1()?))
    }

    /// The tied vocabulary projection plus the bias, by composed candle ops.
    fn logits(&self, normed: &Tensor, word_embeddings: &Tensor) -> Result<Tensor> {
        Ok(normed.matmul(&word_embeddings.t()?)?.broadcast_add(&self.bias)?)
    }

    /// dense → activation → LayerNorm.
    fn transform(&self, hidden: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let transformed = self.dense.forward_activated(hidden, self.activation, ctx)?;
        self.layer_norm.forward(&transformed, ctx)
    }
}
