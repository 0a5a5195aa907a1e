//! The fine-tuning loop: for each seed, a fresh classifier from the pretrained encoder, a few
//! epochs of AdamW with linear warmup and decay over length-bucketed batches, and an evaluation
//! on dev after every epoch; then the effective ranks of every encoder on dev.
//!
//! Hyper-parameters follow fairseq's RoBERTa GLUE recipe (the MAE-LM code is a fairseq fork and
//! publishes no fine-tuning script): β 0.9/0.98, ε 1e-6, weight decay 0.1, 6% warmup, no
//! gradient clipping; learning rates are higher because the encoders here are small, and no single
//! one suits every encoder (1e-4 leaves the tiny fixture at chance after 3 epochs of 4000
//! examples, and an earlier standard-budget MLM encoder at 0.66; 1e-3 kept that encoder at
//! chance, training loss ln 2 for 3 epochs on every seed, where 3e-4 reached 0.71), hence the
//! grid of `grid.rs`; one run's default, 3e-4, is the grid's middle point.
//! Each seed draws its head, batch order and dropout from its own streams; the training
//! subsample is the same for every seed and model, so seeds differ only in optimisation and
//! models only in their pretraining.

use super::batching::{collate, encode, eval_batches, train_batches, Encoded};
use super::classifier::{task_loss, Classifier};
use super::metrics::Metric;
use super::ranks::dev_ranks;
use super::results::{write_outputs, EpochRow, FinetuneOutcome, FinetuneSummary, SeedResult};
use super::tasks::{Head, Splits, Task};
use crate::checkpoint::{load_encoder, LoadedEncoder};
use crate::model::Ctx;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::train::optimizer::{AdamW, AdamWConfig};
use crate::train::schedule::lr_at;
use anyhow::{ensure, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub batch_size: usize,
    /// Tokens per example, special tokens included (longer ones are truncated).
    pub max_len: usize,
    /// Train on a seeded subsample of this many examples; `None` uses the whole training set.
    pub train_examples: Option<usize>,
    /// Share of the optimiser steps spent warming up.
    pub warmup_frac: f64,
    pub weight_decay: f64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig { epochs: 3, lr: 3e-4, batch_size: 32, max_len: 64, train_examples: Some(DEFAULT_TRAIN_EXAMPLES), warmup_frac: 0.06, weight_decay: 0.1 }
    }
}

/// Default training subsample: 3 seeds × 3 epochs of a 4 × 128 encoder take minutes on 2 CPU
/// cores, and it is enough for the tiny fixture to leave chance (0.65 dev accuracy).
pub const DEFAULT_TRAIN_EXAMPLES: usize = 4000;

impl FinetuneConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.epochs > 0, "epochs must be positive");
        ensure!(self.batch_size > 0, "batch size must be positive");
        ensure!(self.lr > 0.0 && self.lr.is_finite(), "learning rate must be positive, got {}", self.lr);
        ensure!(self.max_len >= 8, "max length {} is too short (at least 8 tokens)", self.max_len);
        ensure!(self.train_examples != Some(0), "train examples must be positive");
        ensure!((0.0..1.0).contains(&self.warmup_frac), "warmup fraction must be in [0, 1), got {}", self.warmup_frac);
        Ok(())
    }
}

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct FinetuneRequest {
    /// A repdef run dir or a HF BERT/RoBERTa dir.
    pub model: PathBuf,
    /// Its tokenizer, when not the one the directory ships (see `load_encoder`).
    pub tokenizer: Option<PathBuf>,
    pub task: Task,
    pub seeds: Vec<u64>,
    pub config: FinetuneConfig,
    /// Where `results.csv`, `ranks.csv` and `summary.json` go.
    pub out: PathBuf,
}

/// The task tokenised for one model.
struct TaskData {
    train: Vec<Encoded>,
    dev: Vec<Encoded>,
    head: Head,
    metric: Metric,
    /// The dev score of the best constant predictor.
    chance: f64,
}

impl TaskData {
    /// FNV-1a of the token ids, token types and targets of every training and dev example, as 16
    /// hex digits: it changes with the task files' contents, their description, the subsample
    /// and the tokenizer, whatever their paths.
    fn fnv1a64(&self) -> String {
        let mut hash = crate::fingerprint::Fnv1a64::new();
        for (split, examples) in [(0u8, &self.train), (1u8, &self.dev)] {
            hash.update(&[split]);
            for example in examples.iter() {
                hash.update(&(example.ids.len() as u64).to_le_bytes());
                example.ids.iter().chain(&example.type_ids).for_each(|v| hash.update(&v.to_le_bytes()));
                hash.update(&example.target.to_le_bytes());
            }
        }
        format!("{:016x}", hash.finish())
    }
}

/// The pretrained encoder and the task tokenised for it: what every grid point shares.
pub(super) struct Inputs {
    pretrained: LoadedEncoder,
    /// The fingerprint of the pretrained weights file, recorded in the summary.
    pub(super) model_fnv1a64: String,
    /// The fingerprint of the tokenised task ([`TaskData::fnv1a64`]), recorded in the summary.
    pub(super) data_fnv1a64: String,
    data: TaskData,
}

/// Fine-tunes the request's encoder once per seed, writes the outputs into `req.out`, and
/// returns them.
pub fn finetune(req: &FinetuneRequest) -> Result<FinetuneOutcome> {
    crate::outdir::claim(&req.out, super::results::SUMMARY_FILE)?;
    finetune_loaded(req, &load_inputs(req)?)
}

/// [`finetune`] on `inputs` loaded for `req` (or for a request that differs in its learning rate
/// only), into a `req.out` the caller has claimed.
pub(super) fn finetune_loaded(req: &FinetuneRequest, inputs: &Inputs) -> Result<FinetuneOutcome> {
    let cfg = &req.config;
    cfg.validate()?;
    let Inputs { pretrained, model_fnv1a64, data_fnv1a64, data } = inputs;
    let start = Instant::now();
    let device = Device::Cpu;
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let steps_per_seed = (cfg.epochs * data.train.len().div_ceil(cfg.batch_size)) as u64;
    let progress = Progress::new(steps_per_seed * req.seeds.len() as u64, 0, "steps");
    progress.log(&format!(
        "fine-tuning {} on {}: {} train / {} dev examples, {}, {} seeds × {} epochs × {} steps",
        req.model.display(),
        req.task.name,
        data.train.len(),
        data.dev.len(),
        match data.head {
            Head::Classes(n) => format!("{n} classes"),
            Head::Score => "a score".into(),
        },
        req.seeds.len(),
        cfg.epochs,
        steps_per_seed / cfg.epochs as u64
    ));
    // Names the run in each epoch's line: grids of two encoders may be fine-tuned side by side.
    let tag = format!("{} {} lr {:.0e}", req.model.file_name().map_or("model".into(), |n| n.to_string_lossy()), req.task.name, cfg.lr);
    let mut ranks = dev_ranks("pretrained", &pretrained.config, &pretrained.encoder, &data.dev, cfg.batch_size, &device)?;
    let (mut epochs, mut seeds) = (Vec::new(), Vec::new());
    for (i, &seed) in req.seeds.iter().enumerate() {
        let step_offset = i as u64 * steps_per_seed;
        let (model, rows) = train_seed(req, data, seed, (&progress, &tag, step_offset), &device).with_context(|| format!("seed {seed}"))?;
        ranks.extend(dev_ranks(&format!("finetuned-seed{seed}"), &model.config, &model.encoder, &data.dev, cfg.batch_size, &device)?);
        let last = rows.last().expect("at least one epoch");
        seeds.push(SeedResult { seed, dev_score: last.dev_score, dev_loss: last.dev_loss });
        epochs.extend(rows);
    }
    progress.finish();
    let summary = FinetuneSummary {
        model: req.model.clone(),
        model_fnv1a64: Some(model_fnv1a64.clone()),
        data_fnv1a64: Some(data_fnv1a64.clone()),
        task: req.task.name.clone(),
        train_file: req.task.train.clone(),
        dev_file: req.task.dev.clone(),
        train_examples: data.train.len(),
        dev_examples: data.dev.len(),
        config: cfg.clone(),
        metric: data.metric,
        chance: Some(data.chance),
        median_dev_score: crate::stats::median(&seeds.iter().map(|s| s.dev_score).collect::<Vec<_>>()).unwrap_or(f64::NAN),
        seeds,
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    let outcome = FinetuneOutcome { summary, epochs, ranks };
    write_outputs(&req.out, &outcome)?;
    Ok(outcome)
}

/// Checks the settings and loads the encoder and the task: everything that bad input can fail,
/// before anything is written.
pub(super) fn load_inputs(req: &FinetuneRequest) -> Result<Inputs> {
    req.config.validate()?;
    ensure!(!req.seeds.is_empty(), "no seeds to fine-tune with");
    let pretrained = load_encoder(&req.model, req.tokenizer.as_deref(), &Device::Cpu)?;
    let model_fnv1a64 = crate::fingerprint::file_fnv1a64(&pretrained.weights_path)?;
    let data = load_task(req, &pretrained)?;
    Ok(Inputs { pretrained, model_fnv1a64, data_fnv1a64: data.fnv1a64(), data })
}

/// Loads, subsamples and tokenises the task with the model's tokenizer.
fn load_task(req: &FinetuneRequest, pretrained: &LoadedEncoder) -> Result<TaskData> {
    let mut splits = req.task.load()?;
    if let Some(n) = req.config.train_examples {
        // Seed 0 for every run: all seeds and models train on the same examples.
        splits.subsample_train(n, &mut Rng::derive(0, "finetune-train-subsample"));
    }
    let max_len = req.config.max_len.min(pretrained.config.max_tokens());
    let tokenize = |examples, split: &PathBuf| encode(&pretrained.tokenizer, examples, max_len).with_context(|| format!("tokenising {}", split.display()));
    let chance = splits.metric.chance(&Splits::targets(&splits.dev));
    Ok(TaskData {
        train: tokenize(&splits.train, &req.task.train)?,
        dev: tokenize(&splits.dev, &req.task.dev)?,
        head: splits.head,
        metric: splits.metric,
        chance,
    })
}

/// One seed: a fresh head, every epoch's training and dev evaluation. `report`: the progress bar,
/// the run's name for log lines, and the optimiser steps of earlier seeds.
fn train_seed(req: &FinetuneRequest, data: &TaskData, seed: u64, report: (&Progress, &str, u64), device: &Device) -> Result<(Classifier, Vec<EpochRow>)> {
    let (progress, tag, step_offset) = report;
    let cfg = &req.config;
    let (model, varmap) = Classifier::from_pretrained(&req.model, data.head.outputs(), &mut Rng::derive(seed, "finetune-head-init"), device)?;
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: cfg.weight_decay };
    let mut optimizer = AdamW::new(&varmap, adamw)?;
    let mut order_rng = Rng::derive(seed, "finetune-batch-order");
    let mut dropout_rng = Rng::derive(seed, "finetune-dropout");
    let lengths: Vec<usize> = data.train.iter().map(|e| e.ids.len()).collect();
    let total = (cfg.epochs * data.train.len().div_ceil(cfg.batch_size)) as u64;
    let warmup = (cfg.warmup_frac * total as f64).round() as u64;
    let mut step = 0u64;
    let mut rows = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let batches = train_batches(&lengths, cfg.batch_size, &mut order_rng);
        let mut loss_sum = 0.0;
        for indices in &batches {
            let lr = lr_at(step, cfg.lr, warmup, total);
            let examples: Vec<&Encoded> = indices.iter().map(|&i| &data.train[i]).collect();
            let loss = train_step(&model, &mut optimizer, &examples, data.head, lr, &mut dropout_rng, device)?;
            loss_sum += loss;
            step += 1;
            progress.advance(step_offset + step, format!("seed {seed} epoch {epoch} loss {loss:.3} lr {lr:.1e}"));
        }
        let train_s = epoch_start.elapsed().as_secs_f64();
        let (dev_loss, dev_score) = evaluate(&model, data, cfg.batch_size, device)?;
        let row = EpochRow { seed, epoch, dev_score, dev_loss, train_loss: loss_sum / batches.len() as f64 };
        progress.log(&format!(
            "{tag} seed {seed} epoch {epoch}/{}: train loss {:.4}, dev loss {:.4}, dev {} {:.4} (train {train_s:.1} s, dev {:.1} s)",
            cfg.epochs,
            row.train_loss,
            row.dev_loss,
            data.metric.name(),
            row.dev_score,
            epoch_start.elapsed().as_secs_f64() - train_s
        ));
        rows.push(row);
    }
    Ok((model, rows))
}

/// Forward, backward and one AdamW update on one batch; returns the batch's loss.
fn train_step(model: &Classifier, optimizer: &mut AdamW, examples: &[&Encoded], head: Head, lr: f64, rng: &mut Rng, device: &Device) -> Result<f64> {
    let batch = collate(&model.config, examples, device)?;
    let logits = model.logits(&batch.input, &mut Ctx::train(rng))?;
    let (loss, _) = task_loss(&logits, &batch.targets, head)?;
    let value = loss.to_scalar::<f32>()? as f64;
    ensure!(value.is_finite(), "the loss became {value} at learning rate {lr:.2e}; try a lower --lr");
    optimizer.step(&loss.backward()?, lr, 1.0)?;
    Ok(value)
}

/// Mean loss and the task's score on dev, without dropout or autograd.
fn evaluate(model: &Classifier, data: &TaskData, batch_size: usize, device: &Device) -> Result<(f64, f64)> {
    let examples = &data.dev;
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let (mut loss_sum, mut predictions, mut targets) = (0.0, Vec::with_capacity(examples.len()), Vec::with_capacity(examples.len()));
    for indices in eval_batches(&lengths, batch_size) {
        let batch: Vec<&Encoded> = indices.iter().map(|&i| &examples[i]).collect();
        let batch = collate(&model.config, &batch, device)?;
        let logits = model.logits(&batch.input, &mut Ctx::infer())?;
        let (loss, predicted) = task_loss(&logits, &batch.targets, data.head)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * batch.targets.len() as f64;
        predictions.extend(predicted);
        targets.extend(batch.targets);
    }
    Ok((loss_sum / examples.len() as f64, data.metric.score(&predictions, &targets)))
}
