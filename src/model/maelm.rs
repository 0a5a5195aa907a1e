//! MAE-LM (DESIGN §1; official code: yumeng5/MAE-LM `fairseq/models/ae/model.py`): the encoder
//! sees only the kept tokens, compacted, each with its *original* position id; a shallow decoder
//! gets a full-length sequence of encoder outputs scattered back, with the shared `[MASK]`
//! embedding row at dropped positions, adds its own position embeddings and LayerNorm, and runs
//! post-LN blocks with dropout 0. Optionally (the official `--decoder-rel-pos 1`) the decoder has
//! its own relative-position bias table (`decoder.relative_attention_bias.weight`) over its
//! contiguous positions.

use super::embeddings::sum_of_lookups;
use super::layer::{run_blocks, Layer};
use super::ops::{AttentionMask, Ctx, LayerNorm};
use super::relative_position::RelativePositionBias;
use super::taps::Tap;
use crate::config::ModelConfig;
use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

/// How a `[batch, pos]` batch maps onto the compacted `[batch, kept_len]` encoder input.
#[derive(Debug, PartialEq)]
pub struct Compaction {
    pub batch: usize,
    pub kept_len: usize,
    /// `[batch, kept_len]`: visible ids, left-aligned, padded with `pad_id`.
    pub ids: Vec<u32>,
    /// `[batch, kept_len]`: each kept token's original position (0 on padding).
    pub position_ids: Vec<u32>,
    /// `[batch, kept_len]`: 1 on kept tokens, 0 on padding.
    pub attention_mask: Vec<u8>,
    /// `[batch · pos]`: for every original position, its row in the flattened encoder output,
    /// or `batch · kept_len` (one past the end: the `[MASK]` embedding row) where it was dropped.
    pub scatter_index: Vec<u32>,
}

impl Compaction {
    /// `ids`, `visible`: row-major `[batch, pos]`.
    pub fn new(ids: &[u32], visible: &[bool], batch: usize, pad_id: u32) -> Result<Self> {
        ensure!(batch > 0 && ids.len() == visible.len() && ids.len() % batch == 0, "inconsistent batch shape");
        let pos = ids.len() / batch;
        let kept_len = visible.chunks(pos).map(|r| r.iter().filter(|&&v| v).count()).max().unwrap_or(0);
        ensure!(kept_len > 0, "every position of the batch was dropped");
        let mask_row = (batch * kept_len) as u32;
        let mut c = Compaction {
            batch,
            kept_len,
            ids: vec![pad_id; batch * kept_len],
            position_ids: vec![0; batch * kept_len],
            attention_mask: vec![0; batch * kept_len],
            scatter_index: vec![mask_row; batch * pos],
        };
        for b in 0..batch {
            let mut k = 0;
            for t in 0..pos {
                if visible[b * pos + t] {
                    let slot = b * kept_len + k;
                    c.ids[slot] = ids[b * pos + t];
                    c.position_ids[slot] = t as u32;
                    c.attention_mask[slot] = 1;
                    c.scatter_index[b * pos + t] = slot as u32;
                    k += 1;
                }
            }
        }
        Ok(c)
    }

    /// Encoder output `[batch·kept_len, d_model]` + `[MASK]` row `[1, d_model]` → the rows
    /// `[batch·kept_len + 1, d_model]` and the index `[batch·pos]` that scatter them back:
    /// `rows[index]` is the decoder's full-length input.
    pub fn scatter(&self, encoded: &Tensor, mask_row: &Tensor) -> Result<Scattered> {
        let rows = Tensor::cat(&[encoded, mask_row], 0)?;
        let index = Tensor::from_slice(&self.scatter_index, self.scatter_index.len(), encoded.device())?;
        Ok(Scattered { rows, index })
    }

    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let shape = (self.batch, self.kept_len);
        Ok((
            Tensor::from_slice(&self.ids, shape, device)?,
            Tensor::from_slice(&self.position_ids, shape, device)?,
            Tensor::from_slice(&self.attention_mask, shape, device)?,
        ))
    }
}

/// The decoder's full-length input, `rows[index]`, left for the decoder to look up (one pass
/// with its position embeddings).
pub struct Scattered {
    pub rows: Tensor,
    pub index: Tensor,
}

/// The MAE-LM decoder (`decoder.*` tensors).
pub struct Decoder {
    position: Tensor,
    layer_norm: LayerNorm,
    layers: Vec<Layer>,
    /// The decoder's own table, when the config asks for one.
    relative_position: Option<RelativePositionBias>,
}

impl Decoder {
    pub fn load(vb: VarBuilder, cfg: &ModelConfig, n_layers: usize) -> Result<Self> {
        let d = cfg.hidden_size;
        let layers = (0..n_layers).map(|i| Layer::load(vb.pp(format!("layer.{i}")), cfg, 0.0)).collect::<Result<_>>()?;
        let with_bias = cfg.repdef.as_ref().is_some_and(|r| r.decoder_relative_attention);
        Ok(Decoder {
            position: vb.get((cfg.max_position_embeddings, d), "embeddings.position_embeddings.weight")?,
            layer_norm: LayerNorm::load(vb.pp("embeddings.LayerNorm"), d, cfg.layer_norm_eps)?,
            layers,
            relative_position: if with_bias { RelativePositionBias::load(&vb, cfg)? } else { None },
        })
    }

    /// `scattered`: `[batch·pos, d_model]` rows, `attention_mask`: `[batch, pos]` → `[batch·pos,
    /// d_model]`, or `[rows.len(), d_model]` when the output is wanted only at `rows` (see
    /// [`run_blocks`]).
    pub fn forward(&self, scattered: &Scattered, attention_mask: &Tensor, rows: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let mut mask = AttentionMask::new(attention_mask)?;
        let position_ids = Tensor::arange(0u32, mask.pos as u32, scattered.rows.device())?.unsqueeze(0)?.repeat((mask.batch, 1))?;
        if let Some(bias) = &self.relative_position {
            mask = mask.with_position_bias(bias.forward(&position_ids)?)?;
        }
        let summed = sum_of_lookups(&[(&scattered.rows, &scattered.index), (&self.position, &position_ids)], ctx)?;
        let hidden = self.layer_norm.forward(&summed, ctx)?;
        ctx.record(Tap::DecoderFullEmbed, &hidden, &mask)?;
        run_blocks(&self.layers, hidden, &mask, rows, Tap::DecoderBlockOutput, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_original_positions_and_scatter_restores_them() {
        // 2 × 4 batch; row 0 drops positions 1 and 2, row 1 drops position 3.
        let ids = [10, 11, 12, 13, 20, 21, 22, 23];
        let visible = [true, false, false, true, true, true, true, false];
        let c = Compaction::new(&ids, &visible, 2, 0).unwrap();
        assert_eq!(c.kept_len, 3);
        assert_eq!(c.ids, vec![10, 13, 0, 20, 21, 22]);
        assert_eq!(c.position_ids, vec![0, 3, 0, 0, 1, 2]);
        assert_eq!(c.attention_mask, vec![1, 1, 0, 1, 1, 1]);

        // Encode each kept token as its own id; the mask row is -1.
        let device = Device::Cpu;
        let encoded: Vec<f32> = c.ids.iter().map(|&id| id as f32).collect();
        let encoded = Tensor::from_vec(encoded, (6, 1), &device).unwrap();
        let mask_row = Tensor::new(&[[-1f32]], &device).unwrap();
        let Scattered { rows, index } = c.scatter(&encoded, &mask_row).unwrap();
        let restored = rows.index_select(&index, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(restored, vec![10., -1., -1., 13., 20., 21., 22., -1.]);
    }

    #[test]
    fn fully_dropped_batch_is_an_error() {
        assert!(Compaction::new(&[1, 2], &[false, false], 1, 0).is_err());
    }
}
