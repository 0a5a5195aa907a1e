//! What `train --resume` accepts: the run continues on the data it was trained on, with its saved
//! settings. Only `steps` may change (to extend a finished run or end one earlier); everything
//! else that differs is refused by name, as is a data dir with another tokenizer or corpus.

use super::run::TrainRequest;
use super::state::{TrainState, DATA_META_FILE, TRAIN_CONFIG_FILE, TRAIN_STATE_FILE};
use crate::checkpoint::{CONFIG_FILE, TOKENIZER_FILE};
use crate::config::{apply_overrides, changed_settings, ModelConfig, TrainConfig};
use crate::data::corpus::META_FILE;
use crate::fsutil::{read_json, write_json_atomic};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// The saved training settings of the run in `run`, which must hold a checkpoint.
pub fn saved_config(run: &Path) -> Result<TrainConfig> {
    if !run.join(TRAIN_STATE_FILE).exists() {
        bail!("{}: no {TRAIN_STATE_FILE} to resume from (start without --resume)", run.display());
    }
    read_json(&run.join(TRAIN_CONFIG_FILE))
}

/// Checks a resume request against the run and returns its settings, with the requested number
/// of steps saved when that changed.
pub fn resumed_settings(req: &TrainRequest) -> Result<(TrainConfig, ModelConfig)> {
    let run = &req.out;
    let saved = saved_config(run)?;
    let model = ModelConfig::load(&run.join(CONFIG_FILE))?;
    check_same_data(run, &req.data_dir)?;
    let config_path = run.join(TRAIN_CONFIG_FILE);
    let mut changed = changed_settings(&saved, &TrainConfig { steps: saved.steps, ..req.config.clone() })?;
    let mut requested_model = apply_overrides(&model, &req.model_overrides)?;
    if let (Some(layers), Some(repdef)) = (req.decoder_layers, requested_model.repdef.as_mut()) {
        repdef.decoder_layers = layers;
    }
    changed.extend(changed_settings(&model, &requested_model)?.into_iter().map(|key| format!("model.{key}")));
    if !changed.is_empty() {
        bail!(
            "{}: --resume continues the run with its saved settings, but {} would change; only --steps may (start a new run with --out for other settings)",
            config_path.display(),
            changed.join(", ")
        );
    }
    let state: TrainState = read_json(&run.join(TRAIN_STATE_FILE))?;
    let steps = req.config.steps;
    if steps < state.step {
        bail!("--steps {steps}: the run in {} is already at step {}", run.display(), state.step);
    }
    let config = TrainConfig { steps, ..saved.clone() };
    if config != saved {
        write_json_atomic(&config_path, &config)?;
    }
    Ok((config, model))
}

/// Refuses a data dir other than the run's: another tokenizer, or (for runs that recorded it) a
/// corpus whose `meta.json` differs from the run's copy.
fn check_same_data(run: &Path, data_dir: &Path) -> Result<()> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let data_tokenizer = data_dir.join(TOKENIZER_FILE);
    if read(&data_tokenizer)? != read(&run.join(TOKENIZER_FILE))? {
        bail!("{}: not the tokenizer the run in {} was trained with: --data must be the run's data dir", data_tokenizer.display(), run.display());
    }
    let run_meta = run.join(DATA_META_FILE);
    if !run_meta.exists() {
        return Ok(()); // a run made before the corpus meta was copied
    }
    let data_meta = data_dir.join(META_FILE);
    let changed = changed_settings(&read_json::<serde_json::Value>(&run_meta)?, &read_json::<serde_json::Value>(&data_meta)?)?;
    if !changed.is_empty() {
        bail!("{}: differs from the run's {} in {}: --data must be the run's data dir", data_meta.display(), run_meta.display(), changed.join(", "));
    }
    Ok(())
}
