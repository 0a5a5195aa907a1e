//! Conditions and token groups of the analysis (DESIGN §1, "The analysis").
//!
//! The same text is fed twice: *masked* (pretraining-like, 15% `[MASK]`) and *clean* (no
//! `[MASK]`). Groups pick rows of the encoder output: `all` (every non-pad token), `real`
//! (unpicked non-special tokens — the same positions in both conditions) and `mask` (picked
//! positions). An MAE-LM encoder's pretraining view drops the picked positions, so its
//! `masked/mask` group does not exist (n/a) — unless it was trained with the δ ablation, whose
//! kept `[MASK]` positions form it; `mask-fed` feeds it `[MASK]` at every picked position.

use crate::config::ModelConfig;
use crate::data::masking::{MaskedBatch, TokenClass};
use crate::model::{Compaction, EncoderInput};
use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The model's pretraining view: `[MASK]` tokens for MLM, dropped positions for MAE-LM.
    Masked,
    /// The same text without any `[MASK]`.
    Clean,
    /// MAE-LM only: `[MASK]` tokens fed into an encoder that never saw them in pretraining.
    MaskFed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    All,
    Real,
    Mask,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Masked, Condition::Clean, Condition::MaskFed];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Masked => "masked",
            Condition::Clean => "clean",
            Condition::MaskFed => "mask-fed",
        }
    }
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::All => "all",
            Group::Real => "real",
            Group::Mask => "mask",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One condition of one batch: the encoder input, and per group the rows of the flattened
/// encoder output `[batch · pos, d_model]` that belong to it.
pub struct ConditionInput {
    pub condition: Condition,
    pub input: EncoderInput,
    pub groups: Vec<(Group, Vec<u32>)>,
}

/// Builds every condition of `batch` for a model (`mae_lm` selects the MAE-LM pretraining view).
pub fn condition_inputs(config: &ModelConfig, batch: &MaskedBatch, mae_lm: bool, device: &Device) -> Result<Vec<ConditionInput>> {
    let rows_where = |pred: &dyn Fn(usize) -> bool| -> Vec<u32> { (0..batch.classes.len()).filter(|&i| pred(i)).map(|i| i as u32).collect() };
    let non_pad = rows_where(&|i| batch.classes[i] != TokenClass::Pad);
    let real = rows_where(&|i| batch.classes[i] == TokenClass::Real);
    let mask = rows_where(&|i| batch.classes[i] == TokenClass::Mask);
    let full = |ids: &[u32]| EncoderInput::from_ids(config, ids, None, batch.batch, device);

    let mut inputs = vec![ConditionInput {
        condition: Condition::Clean,
        input: full(&batch.original_ids)?,
        groups: vec![(Group::All, non_pad.clone()), (Group::Real, real.clone())],
    }];
    let with_mask_tokens = vec![(Group::All, non_pad), (Group::Real, real), (Group::Mask, mask)];
    if mae_lm {
        inputs.push(dropped_view(config, batch, device)?);
        inputs.push(ConditionInput { condition: Condition::MaskFed, input: full(&batch.input_ids)?, groups: with_mask_tokens });
    } else {
        inputs.push(ConditionInput { condition: Condition::Masked, input: full(&batch.input_ids)?, groups: with_mask_tokens });
    }
    Ok(inputs)
}

/// MAE-LM's pretraining view: picked positions removed (but for those the masker kept visible,
/// the δ ablation), the rest compacted with their original positions.
fn dropped_view(config: &ModelConfig, batch: &MaskedBatch, device: &Device) -> Result<ConditionInput> {
    let compaction = Compaction::new(&batch.input_ids, &batch.encoder_visible, batch.batch, config.pad_token_id)?;
    let (ids, position_ids, attention_mask) = compaction.tensors(device)?;
    let (mut all, mut real, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (original, &slot) in compaction.scatter_index.iter().enumerate() {
        if batch.encoder_visible[original] && batch.classes[original] != TokenClass::Pad {
            all.push(slot);
            match batch.classes[original] {
                TokenClass::Real => real.push(slot),
                TokenClass::Mask => mask.push(slot),
                _ => {}
            }
        }
    }
    all.sort_unstable();
    real.sort_unstable();
    mask.sort_unstable();
    let mut groups = vec![(Group::All, all), (Group::Real, real)];
    if !mask.is_empty() {
        groups.push((Group::Mask, mask));
    }
    let token_type_ids = ids.zeros_like()?;
    Ok(ConditionInput { condition: Condition::Masked, input: EncoderInput { ids, position_ids, token_type_ids, attention_mask }, groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MaskConfig, Objective, Preset};
    use crate::data::masking::Masker;
    use crate::data::tokenizer::SpecialIds;
    use crate::rng::Rng;

    fn batch(mae_lm: bool) -> MaskedBatch {
        let row: Vec<u32> = [2].into_iter().chain(10..40).chain([3]).collect();
        let masker = Masker { config: MaskConfig::default(), special: SpecialIds::REPDEF, vocab_size: 100, drop_picked: mae_lm };
        masker.mask(&[&row, &row], &mut Rng::new(5))
    }

    #[test]
    fn mlm_groups_cover_the_right_positions() {
        let config = Preset::Tiny.model_config(100, &SpecialIds::REPDEF, Objective::Mlm, MaskConfig::default());
        let b = batch(false);
        let inputs = condition_inputs(&config, &b, false, &Device::Cpu).unwrap();
        let names: Vec<Condition> = inputs.iter().map(|c| c.condition).collect();
        assert_eq!(names, vec![Condition::Clean, Condition::Masked]);
        let masked = &inputs[1].groups;
        let n_picked = b.picked.iter().filter(|&&p| p).count();
        assert_eq!(masked[0].1.len(), 64);
        assert_eq!(masked[2].1.len(), n_picked);
        assert_eq!(masked[1].1.len(), 64 - 4 - n_picked);
        assert_eq!(inputs[0].groups[1].1, masked[1].1, "clean/real and masked/real are the same positions");
    }

    #[test]
    fn mae_lm_view_drops_picked_positions_and_has_no_mask_group() {
        let config = Preset::Tiny.model_config(100, &SpecialIds::REPDEF, Objective::MaeLm, MaskConfig::default());
        let b = batch(true);
        let inputs = condition_inputs(&config, &b, true, &Device::Cpu).unwrap();
        let dropped = inputs.iter().find(|c| c.condition == Condition::Masked).unwrap();
        let n_picked = b.picked.iter().filter(|&&p| p).count();
        assert_eq!(dropped.groups.len(), 2);
        assert_eq!(dropped.groups[0].1.len(), 64 - n_picked);
        assert_eq!(dropped.groups[1].1.len(), 64 - 4 - n_picked);
        assert!(inputs.iter().any(|c| c.condition == Condition::MaskFed && c.groups.len() == 3));
    }
}
