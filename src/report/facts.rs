//! Training facts of each analysed model (objective, depth, holdout loss and accuracy, the
//! unigram plateau, pretraining tokens), from the analysis manifest's training records; for HF
//! checkpoints, the loss and plateau their own MLM head scored on the analysed text, if any.

use super::verdicts::ModelFacts;
use crate::analysis::manifest::Manifest;
use crate::config::Objective;
use anyhow::{bail, Result};

pub fn load_facts(manifest: &Manifest) -> Result<Vec<ModelFacts>> {
    manifest
        .models
        .iter()
        .map(|record| {
            let objective = match record.objective.as_str() {
                "MLM" => Objective::Mlm,
                "MAE-LM" => Objective::MaeLm,
                "RTD" => Objective::ReplacedTokenDetection,
                other => bail!("manifest.json: model {:?} has an unknown objective {other:?}", record.label),
            };
            let training = record.training.as_ref();
            let head = record.head_evaluation.as_ref();
            Ok(ModelFacts {
                label: record.label.clone(),
                objective,
                n_layers: record.n_layers,
                holdout_loss: training.and_then(|t| t.holdout_loss).or(head.map(|h| h.loss)),
                holdout_accuracy: training.and_then(|t| t.holdout_accuracy).or(head.map(|h| h.accuracy)),
                plateau_loss: training.map(|t| t.plateau_loss).or(head.map(|h| h.plateau_loss)),
            })
        })
        .collect()
}
