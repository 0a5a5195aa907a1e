//! Holdout evaluation: masked-token loss and accuracy on a fixed set of holdout sequences with
//! fixed masks (a dedicated generator, reset every time), so evaluations are comparable across steps.

use super::loss::masked_token_loss;
use crate::data::masking::Masker;
use crate::data::packing::PackedSequences;
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

/// The loss of the "unigram plateau" an MLM sits on before it learns to use context (DESIGN §1,
/// "Scale matters"): the cross-entropy (nats) of predicting each token from the training split's
/// token frequencies alone, measured on the holdout sequences [`evaluate`] uses, so it is directly
/// comparable with the holdout loss. (The holdout's token mix differs from the training split's,
/// so the training split's own unigram entropy would understate the plateau.) Masked positions are
/// a uniform sample of the candidate ones, so every holdout token the masker could pick counts.
/// Counts are add-one smoothed over those ids, so a token unseen in training costs a finite loss.
pub fn unigram_plateau_loss(train: &PackedSequences, holdout: &PackedSequences, n_sequences: usize, masker: &Masker) -> f64 {
    let mut counts = vec![0u64; masker.vocab_size];
    for &id in (0..train.len()).flat_map(|i| train.seq(i)) {
        counts[id as usize] += 1;
    }
    let smoothed = |id: u32| (counts[id as usize] + 1) as f64;
    let total: f64 = (0..masker.vocab_size as u32).filter(|&id| masker.may_pick(id)).map(smoothed).sum();
    let (mut loss_sum, mut n_targets) = (0.0, 0usize);
    for &id in (0..n_sequences.min(holdout.len())).flat_map(|i| holdout.seq(i)).filter(|&&id| masker.may_pick(id)) {
        loss_sum -= (smoothed(id) / total).ln();
        n_targets += 1;
    }
    loss_sum / n_targets as f64
}

pub fn evaluate(model: &PretrainingModel, holdout: &PackedSequences, masker: &Masker, n_sequences: usize, batch_size: usize, seed: u64) -> Result<EvalResult> {
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
    Ok(EvalResult { loss: loss_sum / n_predictions as f64, accuracy: n_correct as f64 / n_predictions as f64, n_predictions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaskConfig;
    use crate::data::tokenizer::SpecialIds;

    #[test]
    fn unigram_plateau_loss_scores_the_first_holdout_sequences_with_add_one_smoothed_training_counts() {
        let special = SpecialIds::REPDEF;
        let masker = Masker { config: MaskConfig::default(), special, vocab_size: 13, drop_picked: false };
        // Vocabulary 0..13: `[UNK]` and ids 5..=12 are the 9 possible targets.
        let train = PackedSequences::from_stream(&[10, 10, 11, 10, 10, 11], 8, 2, 3).unwrap();
        let holdout = PackedSequences::from_stream(&[10, 12, 1, 11, 10, 10, 5, 5, 5, 5, 5, 5], 8, 2, 3).unwrap();
        // Counts + 1: id 10 → 5, id 11 → 3, the other seven → 1; total 15. Only the first holdout
        // sequence [cls 10 12 1 11 10 10 sep] is scored.
        let expected = -[5.0, 1.0, 1.0, 3.0, 5.0, 5.0].map(|c: f64| (c / 15.0).ln()).iter().sum::<f64>() / 6.0;
        let loss = unigram_plateau_loss(&train, &holdout, 1, &masker);
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
    }
}
