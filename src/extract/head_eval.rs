//! How far a model without a repdef training record (a foreign MLM checkpoint that ships its MLM
//! head) is from the unigram plateau: its masked-token loss and accuracy on the first analysed
//! sequences, and the plateau loss of the analysed text, so that the report judges "left the
//! plateau" for it by the same rule as for repdef's own runs.

use crate::checkpoint::LoadedEncoder;
use crate::config::{MaskConfig, MaskPolicy};
use crate::data::masking::Masker;
use crate::data::packing::PackedSequences;
use crate::data::tokenizer::SpecialIds;
use crate::train::eval::{evaluate, unigram_plateau_loss};
use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Sequences scored: ~10⁴ predictions at 128 tokens, so the loss is known to ~0.01 nats.
pub const HEAD_EVAL_SEQUENCES: usize = 512;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadEvaluation {
    /// The first this many analysed sequences (the same for every shard) were scored.
    pub sequences: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub n_predictions: usize,
    /// The unigram plateau on those sequences, with token frequencies counted over the whole
    /// analysed data source (in-sample, so the plateau is if anything low, and "left the
    /// plateau" is judged conservatively).
    pub plateau_loss: f64,
}

/// Scores the MLM head of the `loaded` checkpoint on the first `n_selected` (≤
/// [`HEAD_EVAL_SEQUENCES`]) of `sequences`, masked as the analysis masks them; `None` when the
/// checkpoint has no MLM head.
pub fn evaluate_head(
    loaded: &LoadedEncoder,
    sequences: &PackedSequences,
    n_selected: usize,
    special: SpecialIds,
    mask_prob: f64,
    seed: u64,
) -> Result<Option<HeadEvaluation>> {
    let Some(model) = loaded.mlm_model(&Device::Cpu)? else { return Ok(None) };
    let masker = Masker {
        config: MaskConfig { prob: mask_prob, policy: MaskPolicy::AllMask, keep_mask_frac: 0.0, protect_special: true },
        special,
        vocab_size: model.config.vocab_size,
        drop_picked: false,
    };
    let n = n_selected.min(HEAD_EVAL_SEQUENCES);
    let result = evaluate(&model, sequences, &masker, n, 32, seed)?;
    Ok(Some(HeadEvaluation {
        sequences: n,
        loss: result.loss,
        accuracy: result.accuracy,
        n_predictions: result.n_predictions,
        plateau_loss: unigram_plateau_loss(sequences, sequences, n, &masker),
    }))
}
