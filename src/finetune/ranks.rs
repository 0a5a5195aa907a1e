//! Per-layer effective rank of an encoder on the task's dev sentences (clean input: fine-tuning
//! never shows `[MASK]`), before and after fine-tuning, so users can see whether fine-tuning
//! puts the dimensions MLM reserved for `[MASK]` to use (issue 5, scope 4). Rows use
//! `repdef analyze`'s tidy schema and code path: groups `all` (non-pad tokens) and `real`
//! (non-special tokens, as marked by the tokenizer), var@0.9 uncentred and centred.

use super::batching::{collate, eval_batches, Encoded};
use crate::analysis::tables::{compute, RankRow};
use crate::config::ModelConfig;
use crate::extract::conditions::ConditionInput;
use crate::extract::{accumulate_condition, Accumulators, Condition, Group};
use crate::model::{Encoder, Tap};
use crate::rank::Estimator;
use crate::spec::Centring;
use anyhow::Result;
use candle_core::Device;

/// var@0.9 rows (uncentred and centred) for every layer of `encoder` on `examples`, labelled `label`.
pub fn dev_ranks(label: &str, config: &ModelConfig, encoder: &Encoder, examples: &[Encoded], batch_size: usize, device: &Device) -> Result<Vec<RankRow>> {
    let taps = Tap::encoder_taps(encoder.n_layers());
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let mut accumulators = Accumulators::new();
    for indices in eval_batches(&lengths, batch_size) {
        let batch: Vec<&Encoded> = indices.iter().map(|&i| &examples[i]).collect();
        let condition = ConditionInput { condition: Condition::Clean, input: collate(config, &batch, device)?.input, groups: groups(&batch) };
        accumulate_condition(label, encoder, &taps, &condition, &mut accumulators)?;
    }
    Ok(compute(&accumulators, &[Estimator::PAPER], &[Centring::Uncentred, Centring::Centred])?.ranks)
}

/// The flat rows (`b·pos + t`, `pos` = the longest example) of the `all` and `real` groups.
fn groups(batch: &[&Encoded]) -> Vec<(Group, Vec<u32>)> {
    let pos = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let rows = |real_only: bool| -> Vec<u32> {
        batch
            .iter()
            .enumerate()
            .flat_map(|(b, e)| e.special.iter().enumerate().filter(move |(_, &s)| !(real_only && s)).map(move |(t, _)| (b * pos + t) as u32))
            .collect()
    };
    vec![(Group::All, rows(false)), (Group::Real, rows(true))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_skip_padding_and_special_tokens() {
        let short = Encoded { ids: vec![2, 7, 3], type_ids: vec![0; 3], special: vec![true, false, true], target: 0.0 };
        let long = Encoded { ids: vec![2, 7, 8, 9, 3], type_ids: vec![0; 5], special: vec![true, false, false, false, true], target: 1.0 };
        let groups = groups(&[&short, &long]);
        assert_eq!(groups[0], (Group::All, vec![0, 1, 2, 5, 6, 7, 8, 9]));
        assert_eq!(groups[1], (Group::Real, vec![1, 6, 7, 8]));
    }
}
