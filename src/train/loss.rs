//! The pretraining loss: mean cross-entropy over picked positions, plus masked-token accuracy.
//! Objective differences stay inside `PretrainingModel::picked_loss`.

use crate::data::masking::MaskedBatch;
use crate::model::{Ctx, PretrainingModel};
use anyhow::Result;
use candle_core::Tensor;

pub struct StepLoss {
    /// Scalar mean cross-entropy (differentiable in training mode).
    pub loss: Tensor,
    pub n_predictions: usize,
    pub n_correct: usize,
}

impl StepLoss {
    pub fn value(&self) -> Result<f64> {
        Ok(self.loss.to_scalar::<f32>()? as f64)
    }
}

pub fn masked_token_loss(model: &PretrainingModel, batch: &MaskedBatch, ctx: &mut Ctx) -> Result<StepLoss> {
    let targets = batch.targets();
    let (loss, predicted) = model.picked_loss(batch, &targets, ctx)?;
    let n_correct = predicted.iter().zip(&targets).filter(|(p, t)| p == t).count();
    Ok(StepLoss { loss, n_predictions: targets.len(), n_correct })
}
