//! What a fine-tuning run leaves in its `--out` dir, each file written atomically:
//! `results.csv` (one row per seed and epoch), `ranks.csv` (the analysis tables' tidy schema:
//! the encoder before and after fine-tuning) and `summary.json` (settings, each seed's final dev
//! score, their median, the chance level); plus the summary printed on the terminal. Scores are
//! the task's metric (accuracy, Matthews or Pearson/Spearman); older files called them accuracy.

use super::metrics::Metric;
use super::run::FinetuneConfig;
use crate::analysis::tables::{write_csv, RankRow};
use crate::analysis::RANKS_FILE;
use crate::fsutil::write_json_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub const RESULTS_FILE: &str = "results.csv";
pub const SUMMARY_FILE: &str = "summary.json";

/// One evaluation on dev, after an epoch of one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub seed: u64,
    /// 1-based.
    pub epoch: usize,
    #[serde(alias = "dev_accuracy")]
    pub dev_score: f64,
    pub dev_loss: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
}

/// A seed's result after its last epoch (no selection of the best epoch on dev).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    #[serde(alias = "dev_accuracy")]
    pub dev_score: f64,
    pub dev_loss: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    pub model: PathBuf,
    /// [`crate::fingerprint::file_fnv1a64`] of the model's weights file (absent in older
    /// summaries): a grid reuses the point for these weights wherever the model dir now is, and
    /// never for other weights at the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_fnv1a64: Option<String>,
    /// FNV-1a of the tokenised training and dev examples (absent in older summaries): a grid
    /// reuses the point only for the same examples, so edited task files are fine-tuned afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fnv1a64: Option<String>,
    pub task: String,
    pub train_file: PathBuf,
    pub dev_file: PathBuf,
    /// Training examples actually used (after `train_examples` subsampling).
    pub train_examples: usize,
    pub dev_examples: usize,
    pub config: FinetuneConfig,
    #[serde(default)]
    pub metric: Metric,
    /// The dev score of the best constant predictor (absent in older summaries).
    #[serde(default)]
    pub chance: Option<f64>,
    pub seeds: Vec<SeedResult>,
    /// The paper reports medians over seeds.
    #[serde(alias = "median_dev_accuracy")]
    pub median_dev_score: f64,
    pub elapsed_s: f64,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct FinetuneOutcome {
    pub summary: FinetuneSummary,
    pub epochs: Vec<EpochRow>,
    /// Labelled `pretrained` and `finetuned-seed{N}`, condition `clean`.
    pub ranks: Vec<RankRow>,
}

pub fn write_outputs(out: &Path, outcome: &FinetuneOutcome) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_csv(&out.join(RESULTS_FILE), &outcome.epochs)?;
    write_csv(&out.join(RANKS_FILE), &outcome.ranks)?;
    write_json_atomic(&out.join(SUMMARY_FILE), &outcome.summary)
}

/// Per-seed dev score, the median and the chance level, one line each.
pub fn render(summary: &FinetuneSummary) -> String {
    let metric = summary.metric.name();
    let mut text = String::new();
    for s in &summary.seeds {
        let _ = writeln!(text, "seed {:<3} dev {metric} {:.4}  (dev loss {:.4})", s.seed, s.dev_score, s.dev_loss);
    }
    let _ = writeln!(
        text,
        "median dev {metric} over {} seeds: {:.4}  ({} on {} train / {} dev examples, lr {:.0e})",
        summary.seeds.len(),
        summary.median_dev_score,
        summary.task,
        summary.train_examples,
        summary.dev_examples,
        summary.config.lr
    );
    if let Some(chance) = summary.chance {
        let verdict = if summary.median_dev_score > chance { "above it" } else { "NOT above it: the encoder learned nothing usable here" };
        let _ = writeln!(text, "chance (best constant predictor): {chance:.4}; the median is {verdict}");
    }
    text
}
