//! The BERT/RoBERTa/DistilBERT/ELECTRA encoder (embeddings, ELECTRA's projection to the model
//! width, blocks) and its batched input.
//! One forward serves training, evaluation and hidden-state extraction: taps are recorded
//! through the context's recorder instead of a second layer loop.

use super::embeddings::Embeddings;
use super::layer::{run_blocks, Layer};
use super::ops::{AttentionMask, Ctx, Linear};
use super::relative_position::RelativePositionBias;
use super::taps::Tap;
use crate::config::{Family, ModelConfig};
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

pub struct Encoder {
    pub embeddings: Embeddings,
    /// ELECTRA's `embeddings_project` when the embeddings are narrower than the model.
    embeddings_project: Option<Linear>,
    layers: Vec<Layer>,
    /// Shared by every layer (`encoder.relative_attention_bias.weight`), if the model has one.
    relative_position: Option<RelativePositionBias>,
}

/// One batch for the encoder; all tensors `[batch, pos]`.
pub struct EncoderInput {
    pub ids: Tensor,
    pub position_ids: Tensor,
    pub token_type_ids: Tensor,
    /// 1 for real tokens, 0 for padding (u8).
    pub attention_mask: Tensor,
}

impl EncoderInput {
    /// Builds an input from row-major ids with HF's position-id convention for the model family:
    /// BERT counts 0.. over every position; RoBERTa counts from `pad_token_id + 1` over non-pad
    /// tokens and gives padding `pad_token_id`.
    pub fn from_ids(cfg: &ModelConfig, ids: &[u32], token_types: Option<&[u32]>, batch: usize, device: &Device) -> Result<Self> {
        ensure!(batch > 0 && ids.len() % batch == 0, "{} ids do not form {batch} equal rows", ids.len());
        let pos = ids.len() / batch;
        let pad = cfg.pad_token_id;
        let mask: Vec<u8> = ids.iter().map(|&id| u8::from(id != pad)).collect();
        let positions: Vec<u32> = match cfg.family() {
            Family::Bert => (0..ids.len()).map(|i| (i % pos) as u32).collect(),
            Family::Roberta => ids
                .chunks(pos)
                .flat_map(|row| {
                    let mut seen = 0;
                    row.iter()
                        .map(|&id| {
                            if id == pad {
                                pad
                            } else {
                                seen += 1;
                                pad + seen
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        let max_position = positions.iter().copied().max().unwrap_or(0) as usize;
        ensure!(
            max_position < cfg.max_position_embeddings,
            "sequence of {pos} tokens needs position {max_position}, but the model has {} position embeddings",
            cfg.max_position_embeddings
        );
        let types = match token_types {
            Some(t) => t.to_vec(),
            None => vec![0; ids.len()],
        };
        let shaped = |v: Vec<u32>| Tensor::from_vec(v, (batch, pos), device);
        Ok(EncoderInput {
            ids: shaped(ids.to_vec())?,
            position_ids: shaped(positions)?,
            token_type_ids: shaped(types)?,
            attention_mask: Tensor::from_vec(mask, (batch, pos), device)?,
        })
    }
}

impl Encoder {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers).map(|i| Layer::load(vb.pp(format!("encoder.layer.{i}")), cfg, 1.0)).collect::<Result<_>>()?;
        let relative_position = RelativePositionBias::load(&vb.pp("encoder"), cfg)?;
        let embeddings_project = match cfg.embedding_width() {
            width if width == cfg.hidden_size => None,
            width => Some(Linear::load(vb.pp("embeddings_project"), width, cfg.hidden_size)?),
        };
        Ok(Encoder { embeddings: Embeddings::load(vb.pp("embeddings"), cfg)?, embeddings_project, layers, relative_position })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// → last block output `[batch, pos, d_model]`; taps recorded on the way.
    pub fn forward(&self, input: &EncoderInput, ctx: &mut Ctx) -> Result<Tensor> {
        let (batch, pos) = input.ids.dims2()?;
        Ok(self.forward_rows(input, ctx)?.reshape((batch, pos, ()))?)
    }

    /// [`Encoder::forward`] with the output as `[batch·pos, d_model]` rows, the layout the
    /// blocks work in (a reshape would cost two passes in backward).
    pub fn forward_rows(&self, input: &EncoderInput, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_rows_at(input, None, ctx)
    }

    /// [`Encoder::forward_rows`] whose output is wanted only at `rows` (of the `[batch·pos]`
    /// flattening), if given → `[rows.len(), d_model]`; the last block then runs only there
    /// ([`Layer::forward_at`]), so its tap is not recorded.
    pub fn forward_rows_at(&self, input: &EncoderInput, rows: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let mut mask = AttentionMask::new(&input.attention_mask)?;
        if let Some(bias) = &self.relative_position {
            mask = mask.with_position_bias(bias.forward(&input.position_ids)?)?;
        }
        let mut hidden = self.embeddings.forward(&input.ids, &input.position_ids, &input.token_type_ids, ctx)?;
        if let Some(project) = &self.embeddings_project {
            hidden = project.forward(&hidden)?;
        }
        ctx.record(Tap::FullEmbed, &hidden, &mask)?;
        run_blocks(&self.layers, hidden, &mask, rows, Tap::BlockOutput, ctx)
    }
}
