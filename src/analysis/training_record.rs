//! What an analysis records of each repdef-trained model's pretraining (steps, tokens seen,
//! holdout loss and accuracy, the unigram plateau, the corpus, the training curve), read from the
//! run dir when the analysis runs and kept in `manifest.json`, so that `report`, `plot` and
//! `check` work from the analysis dir alone (a committed report re-renders on a fresh clone).

use crate::data::corpus::CorpusMeta;
use crate::fsutil::read_json;
use crate::train::curve::{read_metrics, MetricsPoint};
use crate::train::state::{TrainState, DATA_META_FILE, METRICS_FILE, TRAIN_STATE_FILE};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub steps: u64,
    /// Tokens (padding and specials included) in the batches of pretraining.
    pub pretraining_tokens: u64,
    pub holdout_loss: Option<f64>,
    pub holdout_accuracy: Option<f64>,
    /// Holdout loss of the training split's unigram distribution.
    pub plateau_loss: f64,
    /// The corpus the model was pretrained on (absent for runs made before runs recorded it).
    pub corpus: Option<CorpusRecord>,
    /// Every row of the run's `metrics.csv`.
    pub curve: Vec<MetricsPoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusRecord {
    /// Per source, in input order (the run's `data_meta.json` lists every file).
    pub sources: Vec<SourceRecord>,
    pub train_tokens: u64,
    pub holdout_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    pub files: usize,
    pub train_tokens: u64,
    pub holdout_tokens: u64,
}

impl TrainingRecord {
    /// Whether the model in `dir` was trained by repdef (it has a training state).
    pub fn exists(dir: &Path) -> bool {
        dir.join(TRAIN_STATE_FILE).exists()
    }

    /// The record of the run in `dir`, or `None` for a model with no training state (a HF
    /// checkpoint).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        if !Self::exists(dir) {
            return Ok(None);
        }
        let state_path = dir.join(TRAIN_STATE_FILE);
        let state: TrainState = read_json(&state_path)?;
        let metrics = dir.join(METRICS_FILE);
        let curve = if metrics.exists() { read_metrics(&metrics)? } else { Vec::new() };
        let data_meta = dir.join(DATA_META_FILE);
        let corpus = if data_meta.exists() { Some(CorpusRecord::from_meta(&read_json(&data_meta)?)) } else { None };
        Ok(Some(TrainingRecord {
            steps: state.step,
            pretraining_tokens: state.tokens_seen,
            holdout_loss: state.last_eval.map(|e| e.loss),
            holdout_accuracy: state.last_eval.map(|e| e.accuracy),
            plateau_loss: state.plateau_loss,
            corpus,
            curve,
        }))
    }
}

impl CorpusRecord {
    fn from_meta(meta: &CorpusMeta) -> Self {
        let mut sources: Vec<SourceRecord> = Vec::new();
        for input in &meta.inputs {
            let index = match sources.iter().position(|s| s.name == input.source) {
                Some(i) => i,
                None => {
                    sources.push(SourceRecord { name: input.source.clone(), files: 0, train_tokens: 0, holdout_tokens: 0 });
                    sources.len() - 1
                }
            };
            let source = &mut sources[index];
            source.files += 1;
            source.train_tokens += input.n_tokens_train;
            source.holdout_tokens += input.n_tokens_holdout;
        }
        CorpusRecord { sources, train_tokens: meta.n_tokens_train, holdout_tokens: meta.n_tokens_holdout }
    }
}
