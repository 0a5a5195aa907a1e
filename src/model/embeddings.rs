//! The encoder's input embeddings: word + learned absolute position + token type (none in
//! DistilBERT), then LayerNorm and dropout. Mirrors HF `BertEmbeddings` / `RobertaEmbeddings` /
//! `ElectraEmbeddings` (whose width may be below the model's: see `Encoder`).

use super::kernels;
use super::ops::{Ctx, LayerNorm};
use crate::config::ModelConfig;
use anyhow::{bail, Result};
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
        let mut terms = vec![(&self.word, ids), (&self.position, position_ids)];
        if let Some(token_type) = &self.token_type {
            terms.push((token_type, token_type_ids));
        }
        let normed = self.layer_norm.forward(&sum_of_lookups(&terms, ctx)?, ctx)?;
        ctx.dropout(&normed, self.dropout)
    }
}

/// `Σ table[ids]` over `terms`, added in their order (each table `[n, d]`, its ids `[batch, pos]`
/// or `[batch·pos]`, u32) → `[batch·pos, d]`; one fused op on the CPU.
pub fn sum_of_lookups(terms: &[(&Tensor, &Tensor)], ctx: &Ctx) -> Result<Tensor> {
    let Some(((first_table, first_ids), rest)) = terms.split_first() else { bail!("a sum of no lookups") };
    if ctx.fused(first_table) && !rest.is_empty() {
        let tables: Vec<&Tensor> = terms.iter().map(|(table, _)| *table).collect();
        let ids = terms.iter().map(|(_, ids)| ids.flatten_all()?.to_vec1::<u32>()).collect::<candle_core::Result<_>>()?;
        return Ok(kernels::lookup_sum(&tables, ids)?);
    }
    let lookup = |table: &Tensor, ids: &Tensor| table.index_select(&ids.flatten_all()?, 0);
    let first = lookup(first_table, first_ids)?;
    Ok(rest.iter().try_fold(first, |sum, (table, ids)| sum.add(&lookup(table, ids)?))?)
}
