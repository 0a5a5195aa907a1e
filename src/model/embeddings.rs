//! The encoder's input embeddings: word + learned absolute position + token type (none in
//! DistilBERT), then LayerNorm and dropout. Mirrors HF `BertEmbeddings` / `RobertaEmbeddings` /
//! `ElectraEmbeddings` (whose width may be below the model's: see `Encoder`).

use super::ops::{Ctx, LayerNorm};
use crate::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

pub struct Embeddings {
    /// `[d_vocab, d_embedding]`; also the MLM head's output projection and the MAE-LM `[MASK]` row.
    pub word: Tensor,
    position: Tensor,
    token_type: Option<Tensor>,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let d = cfg.embedding_width();
        let token_type = match cfg.type_vocab_size {
            0 => None,
            n => Some(vb.get((n, d), "token_type_embeddings.weight")?),
        };
        Ok(Embeddings {
            word: vb.get((cfg.vocab_size, d), "word_embeddings.weight")?,
            position: vb.get((cfg.max_position_embeddings, d), "position_embeddings.weight")?,
            token_type,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), d, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// `ids`, `position_ids`, `token_type_ids`: `[batch, pos]` u32 → `[batch·pos, d_embedding]`.
    pub fn forward(&self, ids: &Tensor, position_ids: &Tensor, token_type_ids: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut summed = (lookup(&self.word, ids)? + lookup(&self.position, position_ids)?)?;
        if let Some(token_type) = &self.token_type {
            summed = (summed + lookup(token_type, token_type_ids)?)?;
        }
        let normed = self.layer_norm.forward(&summed, ctx)?;
        ctx.dropout(&normed, self.dropout)
    }
}

/// Rows of `table` (`[n, d]`) for `[batch, pos]` ids → `[batch·pos, d]`.
pub fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    Ok(table.index_select(&ids.flatten_all()?, 0)?)
}
