//! The network: a BERT/RoBERTa encoder, the MLM head, and the MAE-LM decoder, built from
//! candle `VarBuilder`s so that fresh (trainable) and on-disk weights go through the same
//! `load` functions, with HF tensor names falling out of the nesting. No file IO here.

pub(crate) mod embeddings;
mod encoder;
mod head;
pub mod heap;
pub mod init;
mod kernels;
mod layer;
pub mod maelm;
mod ops;
pub mod relative_position;
pub mod taps;

pub use encoder::{Encoder, EncoderInput};
pub use head::MlmHead;
pub use maelm::{Compaction, Decoder};
pub use ops::{Activation, Ctx, Mode};
pub use taps::{Recorder, Tap, TapCache};

use crate::config::{ModelConfig, Objective};
use crate::data::masking::{MaskedBatch, TokenClass};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// Encoder + pretraining head (+ decoder for MAE-LM): what `train` optimises.
pub struct PretrainingModel {
    pub config: ModelConfig,
    pub encoder: Encoder,
    head: MlmHead,
    /// MAE-LM only: the decoder and the id whose embedding row fills dropped positions.
    decoder: Option<(Decoder, u32)>,
}

impl PretrainingModel {
    /// `vb` at the checkpoint root (tensors `bert.*`, `cls.predictions.*`, `decoder.*`). A config
    /// without repdef's section (a HF checkpoint) is an MLM model.
    pub fn load(vb: VarBuilder, config: &ModelConfig) -> Result<Self> {
        let decoder = match config.objective() {
            Objective::Mlm => None,
            Objective::ReplacedTokenDetection => bail!("an ELECTRA discriminator has no MLM head; repdef uses only its encoder"),
            Objective::MaeLm => {
                let repdef = config.repdef.as_ref().context("an MAE-LM config needs repdef's section")?;
                Some((Decoder::load(vb.pp("decoder"), config, repdef.decoder_layers)?, repdef.mask_token_id))
            }
        };
        let encoder = Encoder::load(vb.pp("bert"), config)?;
        let head = MlmHead::load(vb.pp("cls.predictions"), config, &encoder.embeddings.word)?;
        Ok(PretrainingModel { config: config.clone(), encoder, head, decoder })
    }

    /// MLM-head logits `[n, d_vocab]` for final hidden states `[n, d_model]`.
    pub fn head_logits(&self, hidden: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.head.forward(hidden, &self.encoder.embeddings.word, ctx)
    }

    /// The MLM head's mean cross-entropy at the batch's picked positions against `targets` (in
    /// `picked_indices` order), and its top-scoring id at each.
    pub fn picked_loss(&self, batch: &MaskedBatch, targets: &[u32], ctx: &mut Ctx) -> Result<(Tensor, Vec<u32>)> {
        let hidden = self.picked_hidden(batch, ctx)?;
        self.head.loss(&hidden, &self.encoder.embeddings.word, targets, ctx)
    }

    /// The final hidden states `[n_picked, d_model]` at the batch's picked positions (in
    /// `picked_indices` order). The only place where MLM and MAE-LM differ. The last block (the
    /// encoder's, or MAE-LM's decoder's) runs only at the picked rows, the only ones the head
    /// reads.
    fn picked_hidden(&self, batch: &MaskedBatch, ctx: &mut Ctx) -> Result<Tensor> {
        let device = self.encoder.embeddings.word.device().clone();
        let picked = batch.picked_indices();
        let n_picked = picked.len();
        let picked = Tensor::from_vec(picked, n_picked, &device)?;
        match &self.decoder {
            None => {
                let input = EncoderInput::from_ids(&self.config, &batch.input_ids, None, batch.batch, &device)?;
                self.encoder.forward_rows_at(&input, Some(&picked), ctx)
            }
            Some((decoder, mask_token_id)) => self.mae_lm_hidden(decoder, *mask_token_id, batch, &picked, ctx),
        }
    }

    /// Encoder on the kept tokens only, scattered back for the decoder → the decoder's output at
    /// the `picked` rows of `[batch·pos]`: `[n_picked, d_model]`.
    fn mae_lm_hidden(&self, decoder: &Decoder, mask_token_id: u32, batch: &MaskedBatch, picked: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let device = picked.device();
        let compaction = Compaction::new(&batch.input_ids, &batch.encoder_visible, batch.batch, self.config.pad_token_id)?;
        let (ids, position_ids, attention_mask) = compaction.tensors(device)?;
        let token_type_ids = ids.zeros_like()?;
        let input = EncoderInput { ids, position_ids, token_type_ids, attention_mask };
        let encoded = self.encoder.forward_rows(&input, ctx)?;
        let mask_row = self.encoder.embeddings.word.narrow(0, mask_token_id as usize, 1)?;
        let scattered = compaction.scatter(&encoded, &mask_row)?;
        let not_pad: Vec<u8> = batch.classes.iter().map(|&c| u8::from(c != TokenClass::Pad)).collect();
        let full_mask = Tensor::from_vec(not_pad, (batch.batch, batch.pos), device)?;
        decoder.forward(&scattered, &full_mask, Some(picked), ctx)
    }
}
