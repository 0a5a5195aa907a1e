//! `train_state.json` and the checkpoint protocol of a run directory.
//!
//! A checkpoint is a fresh directory `checkpoints/step-N/` holding `model.safetensors` and
//! `optimizer.safetensors`; writing `train_state.json` (step N) atomically is the commit point
//! that switches the run to it. Only then is the run dir's own `model.safetensors` (what
//! `analyze` and HuggingFace load) replaced by a hard link to the new weights and older step
//! directories removed. A kill at any instant therefore leaves the last committed set intact:
//! `--resume` reads the directory `train_state.json` names and repairs the root weights.
//! Both weight files carry the step in their metadata, so a mixed set is still detected.

use super::eval::EvalResult;
use super::optimizer::AdamW;
use crate::checkpoint::{read_safetensors, varmap_tensors, write_safetensors, OPTIMIZER_FILE, STEP_METADATA_KEY, WEIGHTS_FILE};
use crate::data::batches::SamplerPosition;
use crate::fsutil::{read_json, write_atomic_with, write_json_atomic};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const TRAIN_STATE_FILE: &str = "train_state.json";
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
pub const METRICS_FILE: &str = "metrics.csv";
/// A copy of the prepared corpus's `meta.json`: what the run was trained on.
pub const DATA_META_FILE: &str = "data_meta.json";
/// The directory of a run's step directories (`step-N/`), one of them committed.
pub const CHECKPOINTS_DIR: &str = "checkpoints";

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

/// The step directory of the checkpoint written at `step`.
fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join(CHECKPOINTS_DIR).join(format!("step-{step}"))
}

pub fn write_checkpoint(dir: &Path, varmap: &VarMap, optimizer: &AdamW, state: &TrainState) -> Result<()> {
    let target = step_dir(dir, state.step);
    // `state.step` is past the committed step, so a directory already there is the leftover of
    // a checkpoint killed before its commit.
    if target.exists() {
        std::fs::remove_dir_all(&target).with_context(|| format!("removing the unfinished checkpoint {}", target.display()))?;
    }
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let step = [(STEP_METADATA_KEY, state.step.to_string())];
    write_safetensors(&target.join(WEIGHTS_FILE), &varmap_tensors(varmap), &step)?;
    write_safetensors(&target.join(OPTIMIZER_FILE), &optimizer.state_tensors(), &step)?;
    write_json_atomic(&dir.join(TRAIN_STATE_FILE), state)?;
    publish_weights(dir, &target)?;
    remove_superseded(dir, &target)
}

/// Points the run dir's `model.safetensors` at the committed step's weights (atomically; a
/// hard link where the file system allows one, else a copy).
fn publish_weights(dir: &Path, committed: &Path) -> Result<()> {
    let source = committed.join(WEIGHTS_FILE);
    write_atomic_with(&dir.join(WEIGHTS_FILE), |tmp| {
        let _ = std::fs::remove_file(tmp);
        if std::fs::hard_link(&source, tmp).is_err() {
            std::fs::copy(&source, tmp).with_context(|| format!("copying {}", source.display()))?;
        }
        Ok(())
    })
}

/// Removes every step directory but the committed one, and the root optimiser state of runs
/// made before step directories existed.
fn remove_superseded(dir: &Path, committed: &Path) -> Result<()> {
    let legacy = dir.join(OPTIMIZER_FILE);
    if legacy.exists() {
        std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
    }
    let parent = dir.join(CHECKPOINTS_DIR);
    for entry in std::fs::read_dir(&parent).with_context(|| format!("reading {}", parent.display()))? {
        let path = entry?.path();
        if path != committed && path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")) {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing the superseded checkpoint {}", path.display()))?;
        }
    }
    Ok(())
}

/// Restores weights and optimiser moments from the committed checkpoint; returns the saved state.
pub fn read_checkpoint(dir: &Path, varmap: &VarMap, optimizer: &mut AdamW, device: &Device) -> Result<TrainState> {
    let state: TrainState = read_json(&dir.join(TRAIN_STATE_FILE))?;
    let committed = step_dir(dir, state.step);
    // Runs made before step directories keep their only checkpoint in the run dir itself.
    let source = if committed.is_dir() { committed.clone() } else { dir.to_path_buf() };
    let weights_path = source.join(WEIGHTS_FILE);
    let weights = read_safetensors(&weights_path, device)?;
    let optimizer_path = source.join(OPTIMIZER_FILE);
    let moments = read_safetensors(&optimizer_path, device)?;
    for (path, file) in [(&weights_path, &weights), (&optimizer_path, &moments)] {
        let saved_step = file.metadata.get(STEP_METADATA_KEY).and_then(|s| s.parse::<u64>().ok());
        if saved_step != Some(state.step) {
            bail!(
                "{}: written at step {saved_step:?} but {TRAIN_STATE_FILE} says step {} (the checkpoint's files do not belong together; restore a backup or start the run again)",
                path.display(),
                state.step
            );
        }
    }
    crate::checkpoint::assign_varmap(varmap, &weights, &weights_path)?;
    optimizer.restore(&moments.tensors, state.step).map_err(|e| anyhow::anyhow!("{}: {e}", optimizer_path.display()))?;
    if source == committed {
        // A kill between the commit and the publication left older root weights.
        publish_weights(dir, &committed)?;
    }
    Ok(state)
}
