//! Holdout evaluation: masked-token loss and accuracy on a fixed set of holdout sequences with
//! fixed masks (a dedicated generator, reset every time), so evaluations are comparable across steps.

use super::loss::masked_token_loss;
use crate::data::masking::Masker;
use crate::data::packing::PackedSequences;
use crate::data::tokenizer::SpecialIds;
use crate::model::{Ctx, PretrainingModel};
use crate::rng::Rng;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub n_predictions: usize,
}

/// Cross-entropy (nats) of predicting tokens from their frequencies alone: the loss of the
/// "unigram plateau" an MLM sits on before it learns to use context (DESIGN §1, "Scale matters").
/// Special tokens are never targets, so they are excluded.
pub fn unigram_entropy(ids: &[u32], special: &SpecialIds) -> f64 {
    let mut counts = std::collections::HashMap::<u32, u64>::new();
    for &id in ids.iter().filter(|&&id| !special.contains(id)) {
        *counts.entry(id).or_default() += 1;
    }
    let total = counts.values().sum::<u64>() as f64;
    counts.values().map(|&c| c as f64 / total).map(|p| -p * p.ln()).sum()
}

pub fn evaluate(
    model: &PretrainingModel,
    holdout: &PackedSequences,
    masker: &Masker,
    n_sequences: usize,
    batch_size: usize,
    seed: u64,
) -> Result<EvalResult> {
    let n = n_sequences.min(holdout.len());
    ensure!(n > 0, "the holdout split has no sequences to evaluate on");
    let mut rng = Rng::derive(seed, "eval-masking");
    let (mut loss_sum, mut n_predictions, mut n_correct) = (0.0, 0, 0);
    for start in (0..n).step_by(batch_size) {
        let rows: Vec<&[u32]> = (start..(start + batch_size).min(n)).map(|i| holdout.seq(i)).collect();
        let batch = masker.mask(&rows, &mut rng);
        let step = masked_token_loss(model, &batch, &mut Ctx::infer())?;
        loss_sum += step.value()? * step.n_predictions as f64;
        n_predictions += step.n_predictions;
        n_correct += step.n_correct;
    }
    Ok(EvalResult {
        loss: loss_sum / n_predictions as f64,
        accuracy: n_correct as f64 / n_predictions as f64,
        n_predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_entropy_of_a_uniform_stream_is_log_of_its_support() {
        let special = SpecialIds { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 };
        let ids = [10, 11, 12, 13, 2, 3, 10, 11, 12, 13];
        assert!((unigram_entropy(&ids, &special) - 4f64.ln()).abs() < 1e-12);
    }
}
