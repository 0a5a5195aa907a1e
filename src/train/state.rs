//! `train_state.json` and the checkpoint protocol of a run directory.
//!
//! A checkpoint is three files written in order, each atomically: `model.safetensors`,
//! `optimizer.safetensors`, then `train_state.json` — the commit point. Both weight files carry the
//! step in their metadata, so a crash between writes is detected on resume instead of silently
//! mixing two checkpoints.

use super::eval::EvalResult;
use super::optimizer::AdamW;
use crate::checkpoint::{read_safetensors, varmap_tensors, write_safetensors, OPTIMIZER_FILE, STEP_METADATA_KEY, WEIGHTS_FILE};
use crate::data::batches::SamplerPosition;
use crate::fsutil::{read_json, write_json_atomic};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const TRAIN_STATE_FILE: &str = "train_state.json";
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
pub const METRICS_FILE: &str = "metrics.csv";
/// A copy of the prepared corpus's `meta.json`: what the run was trained on.
pub const DATA_META_FILE: &str = "data_meta.json";

/// Everything besides weights and moments needed to continue a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: u64,
    /// Generator for masking and dropout.
    pub rng: Rng,
    pub sampler: SamplerPosition,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    pub last_eval: Option<EvalResult>,
    /// Holdout loss of the training split's unigram distribution (see
    /// [`super::eval::unigram_plateau_loss`]): a holdout loss well below it means the model left
    /// the plateau and uses context.
    pub plateau_loss: f64,
}

impl TrainState {
    pub fn fresh(seed: u64, plateau_loss: f64) -> Self {
        TrainState {
            step: 0,
            rng: Rng::derive(seed, "train"),
            sampler: SamplerPosition::default(),
            tokens_seen: 0,
            elapsed_s: 0.0,
            last_eval: None,
            plateau_loss,
        }
    }
}

pub fn write_checkpoint(dir: &Path, varmap: &VarMap, optimizer: &AdamW, state: &TrainState) -> Result<()> {
    let step = [(STEP_METADATA_KEY, state.step.to_string())];
    write_safetensors(&dir.join(WEIGHTS_FILE), &varmap_tensors(varmap), &step)?;
    write_safetensors(&dir.join(OPTIMIZER_FILE), &optimizer.state_tensors(), &step)?;
    write_json_atomic(&dir.join(TRAIN_STATE_FILE), state)
}

/// Restores weights and optimiser moments; returns the saved state.
pub fn read_checkpoint(dir: &Path, varmap: &VarMap, optimizer: &mut AdamW, device: &Device) -> Result<TrainState> {
    let state: TrainState = read_json(&dir.join(TRAIN_STATE_FILE))?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let weights = read_safetensors(&weights_path, device)?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let moments = read_safetensors(&optimizer_path, device)?;
    for (path, file) in [(&weights_path, &weights), (&optimizer_path, &moments)] {
        let saved_step = file.metadata.get(STEP_METADATA_KEY).and_then(|s| s.parse::<u64>().ok());
        if saved_step != Some(state.step) {
            bail!(
                "{}: written at step {saved_step:?} but {TRAIN_STATE_FILE} says step {} (the checkpoint was interrupted mid-write; delete the run or restore a backup)",
                path.display(),
                state.step
            );
        }
    }
    crate::checkpoint::assign_varmap(varmap, &weights, &weights_path)?;
    optimizer
        .restore(&moments.tensors, state.step)
        .map_err(|e| anyhow::anyhow!("{}: {e}", optimizer_path.display()))?;
    Ok(state)
}
