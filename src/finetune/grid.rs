//! The paper's fine-tuning protocol, scaled down: every learning rate of a small grid is
//! fine-tuned over the same seeds (each point a `finetune` run in `OUT/lr-<lr>/`); the task's
//! result is the median over seeds at the grid point whose median dev score is best, and every
//! point's per-seed scores are kept (`grid.json`), with the encoder's real-token rank on dev
//! before and after fine-tuning at the chosen point. Points already fine-tuned with the same
//! settings from the same weights are reused, so an interrupted grid continues where it stopped.

use super::metrics::Metric;
use super::results::{FinetuneSummary, SUMMARY_FILE};
use super::run::{finetune_loaded, load_inputs, FinetuneRequest, Inputs};
use crate::analysis::tables::{paper_rank, read_table, RankRow};
use crate::analysis::RANKS_FILE;
use crate::extract::{Condition, Group};
use crate::fsutil::{read_json, write_json_atomic};
use crate::stats::median;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Marks a grid's output dir and holds its result.
pub const GRID_FILE: &str = "grid.json";

/// The default learning rates (see the README, "Fine-tuning protocol", for the measurements).
pub const DEFAULT_LR_GRID: [f64; 3] = [1e-4, 3e-4, 1e-3];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub lr: f64,
    /// `(seed, final dev score)` per seed.
    pub scores: Vec<(u64, f64)>,
    pub median: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridSummary {
    pub model: PathBuf,
    pub task: String,
    pub metric: Metric,
    /// The dev score of the best constant predictor.
    pub chance: f64,
    pub points: Vec<GridPoint>,
    /// The grid point with the best median dev score (the first of equals).
    pub chosen_lr: f64,
    /// The median over seeds at the chosen point: the task's result.
    pub score: f64,
    pub beats_chance: bool,
    /// var@0.9 (uncentred) of the real tokens of dev, per layer (0 = embeddings): the pretrained
    /// encoder's, and the median over seeds of the fine-tuned encoders' at the chosen point.
    pub rank_before: Vec<f64>,
    pub rank_after: Vec<f64>,
}

/// Fine-tunes `req` at every learning rate of `lrs` (its own `config.lr` is ignored).
pub fn finetune_grid(req: &FinetuneRequest, lrs: &[f64]) -> Result<GridSummary> {
    ensure!(!lrs.is_empty(), "the learning-rate grid is empty");
    crate::outdir::claim(&req.out, GRID_FILE)?;
    // Once for every point: the points differ in their learning rate only.
    let inputs = load_inputs(req)?;
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    // An empty summary marks the dir as this grid's before the first point is done.
    if !req.out.join(GRID_FILE).exists() {
        write_json_atomic(&req.out.join(GRID_FILE), &serde_json::json!({ "complete": false }))?;
    }
    let mut summaries = Vec::with_capacity(lrs.len());
    for &lr in lrs {
        let point = FinetuneRequest { config: super::FinetuneConfig { lr, ..req.config.clone() }, out: point_dir(&req.out, lr), ..req.clone() };
        summaries.push(match reusable(&point, &inputs) {
            Some(done) => {
                eprintln!("lr {lr:.0e}: already fine-tuned in {}", point.out.display());
                done
            }
            None => {
                crate::outdir::claim(&point.out, SUMMARY_FILE)?;
                finetune_loaded(&point, &inputs)?.summary
            }
        });
    }
    let summary = summarise(req, &summaries)?;
    write_json_atomic(&req.out.join(GRID_FILE), &summary)?;
    Ok(summary)
}

fn point_dir(out: &Path, lr: f64) -> PathBuf {
    out.join(format!("lr-{lr:e}"))
}

/// The summary of a point fine-tuned earlier with exactly these settings, from the same weights
/// (`model_fnv1a64`; a summary that predates the fingerprint must name the same model path) on
/// the same tokenised examples (`data_fnv1a64`, where the summary records it).
fn reusable(point: &FinetuneRequest, inputs: &Inputs) -> Option<FinetuneSummary> {
    let done: FinetuneSummary = read_json(&point.out.join(SUMMARY_FILE)).ok()?;
    let same_model = match &done.model_fnv1a64 {
        Some(fingerprint) => *fingerprint == inputs.model_fnv1a64,
        None => done.model == point.model,
    };
    let same_data = done.data_fnv1a64.as_ref().is_none_or(|fingerprint| *fingerprint == inputs.data_fnv1a64);
    let same = done.config == point.config && done.task == point.task.name && same_model && same_data;
    (same && done.seeds.iter().map(|s| s.seed).eq(point.seeds.iter().copied())).then_some(done)
}

fn summarise(req: &FinetuneRequest, summaries: &[FinetuneSummary]) -> Result<GridSummary> {
    let first = summaries.first().context("no grid points")?;
    let points: Vec<GridPoint> = summaries
        .iter()
        .map(|s| GridPoint { lr: s.config.lr, scores: s.seeds.iter().map(|r| (r.seed, r.dev_score)).collect(), median: s.median_dev_score })
        .collect();
    // The first of the points with the best median.
    let chosen = (1..points.len()).fold(0, |best, i| if points[i].median > points[best].median { i } else { best });
    let best = &points[chosen];
    let chance = first.chance.context("fine-tuning summaries record their chance level")?;
    let score = best.median;
    let (rank_before, rank_after) = real_ranks(&point_dir(&req.out, best.lr), &summaries[chosen])?;
    Ok(GridSummary {
        model: req.model.clone(),
        task: req.task.name.clone(),
        metric: first.metric,
        chance,
        chosen_lr: best.lr,
        score,
        beats_chance: score > chance,
        points,
        rank_before,
        rank_after,
    })
}

/// Per layer, the real-token rank of the pretrained encoder and the median over the fine-tuned
/// seeds, from a point's `ranks.csv`.
fn real_ranks(point: &Path, summary: &FinetuneSummary) -> Result<(Vec<f64>, Vec<f64>)> {
    let path = point.join(RANKS_FILE);
    let ranks: Vec<RankRow> = read_table(&path)?;
    let rank = |model: &str, layer| paper_rank(&ranks, model, Condition::Clean, Group::Real, layer);
    let mut before = Vec::new();
    while let Some(value) = rank("pretrained", before.len()) {
        before.push(value);
    }
    ensure!(!before.is_empty(), "{}: no real-token ranks of the pretrained encoder", path.display());
    let after = (0..before.len())
        .map(|layer| {
            let seeds: Option<Vec<f64>> = summary.seeds.iter().map(|s| rank(&format!("finetuned-seed{}", s.seed), layer)).collect();
            seeds
                .and_then(|values| median(&values))
                .with_context(|| format!("{}: a fine-tuned seed's real-token rank at layer {layer} is missing", path.display()))
        })
        .collect::<Result<_>>()?;
    Ok((before, after))
}

/// One line per grid point, then the choice and the chance level.
pub fn render_grid(grid: &GridSummary) -> String {
    let metric = grid.metric.name();
    let mut text = String::new();
    for p in &grid.points {
        let scores: Vec<String> = p.scores.iter().map(|(seed, s)| format!("{seed}: {s:.4}")).collect();
        let _ = writeln!(text, "lr {:<8.0e} median dev {metric} {:.4}  (seeds {})", p.lr, p.median, scores.join(", "));
    }
    let _ = writeln!(text, "{}: lr {:.0e} chosen by its median; dev {metric} {:.4}", grid.task, grid.chosen_lr, grid.score);
    let verdict = if grid.beats_chance { "above it" } else { "NOT above it: the encoder learned nothing usable here" };
    let _ = writeln!(text, "chance (best constant predictor): {:.4}; the result is {verdict}", grid.chance);
    if let (Some(before), Some(after)) = (grid.rank_before.last(), grid.rank_after.last()) {
        let _ = writeln!(text, "real-token var@0.9 rank on dev at the last layer: {before:.0} before fine-tuning, {after:.0} after (median over seeds)");
    }
    text
}
