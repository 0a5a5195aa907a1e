//! The MLM prediction head (HF `BertLMPredictionHead`, and the same layers of DistilBERT and the
//! ELECTRA generator): dense → activation → LayerNorm → logits tied to the word embeddings, plus
//! a bias (or, in a checkpoint saved untied, its own output projection and that projection's
//! bias). The transform maps to the embeddings' width (below the model's in ELECTRA). Applied only at picked positions, because the
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
    /// The output projection `[d_vocab, d_embedding]` when it is not the word embeddings.
    untied_projection: Option<Tensor>,
    bias: Tensor,
}

impl MlmHead {
    /// `vb` at `cls.predictions`; `word_embeddings`: the encoder's table. A checkpoint saved with
    /// `tie_word_embeddings: false` stores a `decoder.weight` other than the table: the head
    /// then projects with it and adds `decoder.bias` (the bias transformers' forward adds). A
    /// tied head (no `decoder.weight`, or a copy of the table, as PyTorch state dicts store it)
    /// projects with the table and adds `bias`.
    pub fn load(vb: VarBuilder, cfg: &ModelConfig, word_embeddings: &Tensor) -> Result<Self> {
        let width = cfg.embedding_width();
        let untied_projection = match vb.contains_tensor("decoder.weight") {
            true => Some(vb.get((cfg.vocab_size, width), "decoder.weight")?).filter(|w| !same_values(w, word_embeddings)),
            false => None,
        };
        let bias_name = if untied_projection.is_some() && vb.contains_tensor("decoder.bias") { "decoder.bias" } else { "bias" };
        Ok(MlmHead {
            dense: Linear::load(vb.pp("transform.dense"), cfg.hidden_size, width)?,
            activation: Activation::parse(&cfg.hidden_act)?,
            layer_norm: LayerNorm::load(vb.pp("transform.LayerNorm"), width, cfg.layer_norm_eps)?,
            untied_projection,
            bias: vb.get(cfg.vocab_size, bias_name)?,
        })
    }

    /// The output projection: the head's own, or the word embeddings it is tied to.
    fn projection<'a>(&'a self, word_embeddings: &'a Tensor) -> &'a Tensor {
        self.untied_projection.as_ref().unwrap_or(word_embeddings)
    }

    /// `hidden`: `[n, d_model]`, `word_embeddings`: `[d_vocab, d_embedding]` → logits `[n, d_vocab]`.
    pub fn forward(&self, hidden: &Tensor, word_embeddings: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.logits(&self.transform(hidden, ctx)?, self.projection(word_embeddings))
    }

    /// Mean cross-entropy of the logits at `hidden` (`[n, d_model]`) over the vocabulary of
    /// `word_embeddings` (`[d_vocab, d_embedding]`) against `targets` (`n` ids), and each row's
    /// top-scoring id. On the CPU the logits never leave one fused op (training reads the head
    /// only here; [`MlmHead::forward`] serves inspection and the parity tests).
    pub fn loss(&self, hidden: &Tensor, word_embeddings: &Tensor, targets: &[u32], ctx: &Ctx) -> Result<(Tensor, Vec<u32>)> {
        let normed = self.transform(hidden, ctx)?;
        let projection = self.projection(word_embeddings);
        if ctx.fused(&normed) {
            return Ok(kernels::vocabulary_cross_entropy(&normed, projection, &self.bias, targets)?);
        }
        let logits = self.logits(&normed, projection)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &Tensor::from_slice(targets, targets.len(), logits.device())?)?;
        Ok((loss, logits.argmax(1)?.to_vec1()?))
    }

    /// The vocabulary projection plus the bias, by composed candle ops.
    fn logits(&self, normed: &Tensor, projection: &Tensor) -> Result<Tensor> {
        Ok(normed.matmul(&projection.t()?)?.broadcast_add(&self.bias)?)
    }

    /// dense → activation → LayerNorm.
    fn transform(&self, hidden: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let transformed = self.dense.forward_activated(hidden, self.activation, ctx)?;
        self.layer_norm.forward(&transformed, ctx)
    }
}

/// Whether two tensors of one shape hold the same values (a shape mismatch is not the same).
fn same_values(a: &Tensor, b: &Tensor) -> bool {
    a.dims() == b.dims() && a.ne(b).and_then(|ne| ne.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()).is_ok_and(|n| n == 0.0)
}
