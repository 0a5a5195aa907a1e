//! `manifest.json`: provenance of an analysis — the spec and its hash, each model's weights
//! hash, the data files' hashes, seed, shard, tokens analysed, software versions — and each repdef-trained model's
//! pretraining record, so the analysis dir is all that reports and figures need.

use super::training_record::TrainingRecord;
use crate::config::ModelConfig;
use crate::data::corpus::{HOLDOUT_FILE, TOKENIZER_FILE};
use crate::extract::{Extraction, HeadEvaluation};
use crate::fingerprint::file_fnv1a64;
use crate::spec::{AnalysisSpec, DataSource, Plan};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub repdef_version: String,
    pub spec: AnalysisSpec,
    pub spec_hash: String,
    pub seed: u64,
    pub models: Vec<ModelRecord>,
    /// Shards merged into this analysis (`"i/n"`), or just this run's shard.
    pub shards: Vec<String>,
    pub linear_algebra: String,
    /// The files the analysed tokens were read from, by content (manifests written before this
    /// field existed have none), so that shards read on machines with different copies of the
    /// data do not merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_files: Option<Vec<DataFileRecord>>,
}

/// A file the analysed tokens come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataFileRecord {
    pub path: String,
    /// FNV-1a 64 of the file (identity check, not cryptographic).
    pub fnv1a64: String,
}

impl DataFileRecord {
    /// The files `data` reads: each text file, or a prepared dir's holdout and tokenizer.
    fn of(data: &DataSource) -> Result<Vec<Self>> {
        let paths = match data {
            DataSource::Prepared(dir) => vec![dir.join(HOLDOUT_FILE), dir.join(TOKENIZER_FILE)],
            DataSource::TextFiles(paths) => paths.clone(),
        };
        paths.iter().map(|p| Ok(DataFileRecord { path: p.display().to_string(), fnv1a64: file_fnv1a64(p)? })).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub label: String,
    pub path: String,
    pub weights_file: String,
    /// FNV-1a 64 of the weights file (identity check, not cryptographic).
    pub weights_fnv1a64: String,
    pub objective: String,
    pub n_layers: usize,
    pub d_model: usize,
    /// MAE-LM's decoder (manifests written before this field existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderRecord>,
    pub tokens: u64,
    /// How the model was pretrained, for models trained by repdef (manifests written before
    /// this field existed have none).
    #[serde(default)]
    pub training: Option<TrainingRecord>,
    /// For a model without a training record that ships its MLM head: that head's masked-token
    /// loss on the analysed text, and the text's unigram plateau.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_evaluation: Option<HeadEvaluation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderRecord {
    pub layers: usize,
    /// Whether it has its own relative-position bias table.
    pub relative_attention: bool,
}

impl DecoderRecord {
    fn of(config: &ModelConfig) -> Option<Self> {
        config
            .repdef
            .as_ref()
            .filter(|r| r.decoder_layers > 0)
            .map(|r| DecoderRecord { layers: r.decoder_layers, relative_attention: r.decoder_relative_attention })
    }
}

impl Manifest {
    pub fn new(plan: &Plan, extraction: &Extraction) -> Result<Self> {
        let models = plan
            .models
            .iter()
            .map(|m| {
                let weights = ["model.safetensors", "pytorch_model.bin"].map(|f| m.path.join(f)).into_iter().find(|p| p.exists());
                let weights = weights.with_context(|| format!("{}: no weights file", m.path.display()))?;
                Ok(ModelRecord {
                    label: m.label.clone(),
                    path: m.path.display().to_string(),
                    weights_file: weights.display().to_string(),
                    weights_fnv1a64: file_fnv1a64(&weights)?,
                    objective: m.config.objective().to_string(),
                    n_layers: m.config.num_hidden_layers,
                    d_model: m.config.hidden_size,
                    decoder: DecoderRecord::of(&m.config),
                    tokens: extraction.tokens.get(&m.label).copied().unwrap_or(0),
                    training: TrainingRecord::read(&m.path)?,
                    head_evaluation: extraction.head_evaluations.get(&m.label).cloned(),
                })
            })
            .collect::<Result<_>>()?;
        let (index, count) = plan.shard;
        Ok(Manifest {
            repdef_version: env!("CARGO_PKG_VERSION").to_string(),
            spec: plan.spec.clone(),
            spec_hash: plan.spec.hash(),
            seed: plan.spec.seed,
            models,
            shards: vec![format!("{index}/{count}")],
            linear_algebra: crate::rank::EigenSolver::default().to_string(),
            data_files: Some(DataFileRecord::of(&plan.data)?),
        })
    }
}
