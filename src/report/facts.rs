//! Training facts of each analysed model (objective, depth, holdout loss and accuracy, the
//! unigram plateau), read from its run dir; HF checkpoints have no training state.

use super::verdicts::ModelFacts;
use crate::analysis::manifest::Manifest;
use crate::checkpoint::CONFIG_FILE;
use crate::config::ModelConfig;
use crate::fsutil::read_json;
use crate::train::state::{TrainState, TRAIN_STATE_FILE};
use anyhow::Result;
use std::path::Path;

pub fn load_facts(manifest: &Manifest) -> Result<Vec<ModelFacts>> {
    manifest
        .models
        .iter()
        .map(|record| {
            let dir = Path::new(&record.path);
            let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
            let state_path = dir.join(TRAIN_STATE_FILE);
            let state: Option<TrainState> = if state_path.exists() { Some(read_json(&state_path)?) } else { None };
            let eval = state.as_ref().and_then(|s| s.last_eval);
            Ok(ModelFacts {
                label: record.label.clone(),
                objective: config.objective(),
                n_layers: config.num_hidden_layers,
                holdout_loss: eval.map(|e| e.loss),
                holdout_accuracy: eval.map(|e| e.accuracy),
                plateau_loss: state.map(|s| s.plateau_loss),
            })
        })
        .collect()
}
