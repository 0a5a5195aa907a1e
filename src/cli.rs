//! Command-line parsing (clap) and dispatch. No logic beyond turning flags into requests.

use crate::config::{MaskPolicy, Objective, Preset, TrainConfig};
use crate::data::corpus::{prepare, PrepareOptions};
use crate::spec::{AnalysisSpec, DataSpec, MeasureSpec, ModelSpec};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "repdef", version, about = "Measure representation deficiency in masked language models (MLM vs MAE-LM)")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a WordPiece tokenizer and turn text files into token-id streams (train + holdout).
    Prepare(PrepareArgs),
    /// Pretrain an MLM or MAE-LM encoder on a prepared data dir.
    Train(TrainArgs),
    /// Save per-layer hidden states of an encoder on clean text (safetensors).
    HiddenStates(HiddenStatesArgs),
    /// Show a model or run directory: config, parameters, tensors, tokenizer, training state.
    Inspect {
        /// A repdef run dir, a HuggingFace BERT/RoBERTa directory, or hf:ORG/NAME[@REVISION].
        dir: PathBuf,
        /// The tokenizer, if the directory (and its parent) has none that repdef finds.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Per-layer effective rank of real vs [MASK] token representations.
    Analyze(AnalyzeArgs),
    /// Merge analysis dirs computed on different shards of the same spec.
    Merge {
        /// Analysis dirs (each with accumulators.safetensors and manifest.json).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prepare, train MLM + MAE-LM (matched), analyze and report, on the bundled corpus.
    Reproduce {
        #[arg(long, value_enum, default_value = "quick")]
        budget: crate::reproduce::BudgetName,
        /// Report dir (default: reports/<budget>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where prepared data and run dirs go (default: runs/reproduce-<budget>).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Corpus text files (plain or .gz), the last 10% of their documents held out (default:
        /// the bundled corpus of fixtures/corpus/bundle.toml; WikiText-2 for the tiny budget).
        #[arg(long, num_args = 1..)]
        corpus: Vec<PathBuf>,
        /// Pretrain this many seeds (0, 1, …) of each objective instead of the budget's one;
        /// runs already made are reused, and the figures show the spread over seeds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: Option<u64>,
    },
    /// (Re)draw the figures and write report.md and report.html of an analysis dir, with
    /// computed verdicts.
    Report { dir: PathBuf },
    /// (Re)draw the figures (fig_*.png and .svg) of an analysis dir.
    Plot { dir: PathBuf },
    /// Exit 1 when ranks dropped below a baseline table (dimension-utilisation regression), 2 on
    /// bad input (an empty baseline, or one with no row in common with the current table).
    Check {
        /// An analysis dir or its ranks.csv.
        current: PathBuf,
        /// The baseline: a ranks.csv, or an analysis dir.
        #[arg(long)]
        baseline: PathBuf,
        /// Allowed absolute drop: `2` for every estimator, or `var@0.9=2` for one (repeatable).
        #[arg(long)]
        max_drop: Vec<String>,
        /// Allowed relative drop (fraction of the baseline), same forms as --max-drop.
        #[arg(long)]
        rel_tol: Vec<String>,
    },
    /// Fine-tune an encoder on a classification task over several seeds; print dev accuracies.
    Finetune(FinetuneArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct PrepareArgs {
    /// Text files (UTF-8, or gzip-compressed if named `*.gz`); WikiText ` = Title = ` lines or
    /// blank lines separate documents.
    #[arg(long = "input", required_unless_present = "bundle", num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Text files held out whole: never seen by tokenizer or model training. The holdout is then
    /// interleaved from all held-out documents, and --holdout-frac is not used.
    #[arg(long = "holdout-input", num_args = 1..)]
    holdout_inputs: Vec<PathBuf>,
    /// A corpus manifest listing files with their document and holdout rules (the bundled
    /// corpus: fixtures/corpus/bundle.toml); --input/--holdout-input files are added to it.
    #[arg(long)]
    bundle: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    #[arg(long)]
    lowercase: bool,
    /// When no file is held out (by --holdout-input or the manifest): the fraction of documents,
    /// the last ones, held out from training for evaluation and analysis.
    #[arg(long, default_value_t = 0.1)]
    holdout_frac: f64,
    /// Use this HF tokenizer.json instead of training one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_enum)]
    objective: Option<Objective>,
    /// Prepared data dir (from `repdef prepare`).
    #[arg(long)]
    data: PathBuf,
    /// Run dir to create (or to continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Model size and default settings [default: mini].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Optimiser steps (default: the preset's). With --resume: the run's new total length.
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long, value_parser = finite_number)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum)]
    mask_policy: Option<MaskPolicy>,
    /// MAE-LM ablation δ: fraction of picked positions kept as [MASK] in the encoder.
    #[arg(long, value_parser = finite_number)]
    keep_mask_frac: Option<f64>,
    /// MAE-LM decoder depth (default: 2 below `base`, 4 for `base`).
    #[arg(long)]
    decoder_layers: Option<usize>,
    /// Override any setting: `--set warmup_steps=100`, `--set mask.prob=0.2`,
    /// `--set model.hidden_dropout_prob=0` (model config keys start with `model.`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run in --out from its last checkpoint, on the same --data, with its saved
    /// settings: other settings flags are refused unless they equal the saved ones, except
    /// --steps, which extends (or shortens) the run.
    #[arg(long)]
    resume: bool,
    /// Write a checkpoint and stop after this step (continue later with --resume).
    #[arg(long)]
    stop_at: Option<u64>,
}

/// The model a command loads, and its tokenizer.
#[derive(Args)]
struct ModelArgs {
    /// A repdef run dir, a HuggingFace BERT/RoBERTa directory, or hf:ORG/NAME[@REVISION] from the
    /// local HuggingFace cache.
    #[arg(long)]
    model: PathBuf,
    /// The tokenizer, if the model directory (and its parent) has no tokenizer.json, vocab.txt
    /// or vocab.json + merges.txt: one of those files, or a directory holding one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    /// The model directory (an `hf:` id resolved in the cache) and the tokenizer given.
    fn resolve(self) -> Result<(PathBuf, Option<PathBuf>)> {
        Ok((crate::hf_cache::resolve_model_dir(&self.model)?, self.tokenizer))
    }
}

#[derive(Args)]
struct HiddenStatesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to encode (repeatable).
    #[arg(long, required_unless_present = "input_file")]
    text: Vec<String>,
    /// A file with one text per non-empty line (UTF-8, or gzip if named `*.gz`).
    #[arg(long, conflicts_with = "text")]
    input_file: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// An analysis spec (analyses/*.toml); flags below override it.
    spec: Option<PathBuf>,
    /// LABEL=PATH of a repdef run dir, a HF BERT/RoBERTa dir or hf:ORG/NAME[@REVISION]
    /// (repeatable; replaces the spec's models).
    #[arg(long = "model", value_name = "LABEL=PATH")]
    models: Vec<String>,
    /// The tokenizer of every model, for models whose directory has none that repdef finds.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A prepared data dir, or text files (UTF-8, or gzip if named `*.gz`; replaces the spec's data paths).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Tokens per model.
    #[arg(long)]
    tokens: Option<u64>,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included (the spec's, else 128).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Sequences per forward pass (the spec's, else 32): trades memory for speed.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Analyse shard `i/n` of the sequences (merge shards with `repdef merge`); `auto` takes it
    /// from a Slurm array job, `auto/N` from a Kubernetes Indexed Job of N completions.
    #[arg(long)]
    shard: Option<String>,
    /// Override any spec key: `--set measure.mask_prob=0.2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Output dir (default: reports/<spec name>).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl AnalyzeArgs {
    fn into_spec(self) -> Result<(AnalysisSpec, Option<PathBuf>)> {
        let mut spec = match &self.spec {
            Some(path) => AnalysisSpec::load(path, &[])?,
            None => {
                if self.models.is_empty() || self.data.is_empty() || self.tokens.is_none() {
                    bail!("without a spec file, give --model LABEL=PATH, --data and --tokens");
                }
                AnalysisSpec {
                    name: "adhoc".into(),
                    seed: 0,
                    models: vec![],
                    data: DataSpec { paths: vec![], tokens: 0, seq_len: 128, batch_size: 32, shard: None },
                    measure: MeasureSpec::default(),
                }
            }
        };
        if !self.models.is_empty() {
            spec.models = self
                .models
                .iter()
                .map(|m| {
                    let (label, path) = m.split_once('=').with_context(|| format!("--model {m:?}: expected LABEL=PATH"))?;
                    Ok(ModelSpec { label: label.to_string(), path: path.into(), tokenizer: None })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(tokenizer) = &self.tokenizer {
            spec.models.iter_mut().for_each(|model| model.tokenizer = Some(tokenizer.clone()));
        }
        if !self.data.is_empty() {
            spec.data.paths = self.data;
        }
        spec.data.tokens = self.tokens.unwrap_or(spec.data.tokens);
        spec.data.seq_len = self.seq_len.unwrap_or(spec.data.seq_len);
        spec.data.batch_size = self.batch_size.unwrap_or(spec.data.batch_size);
        let shard = self.shard.or(spec.data.shard);
        spec.data.shard = shard.map(|s| crate::spec::shard_from_scheduler(&s, |name| std::env::var(name).ok())).transpose()?;
        let spec = crate::config::apply_overrides(&spec, &self.overrides)?;
        Ok((spec, self.out))
    }
}

#[derive(Args)]
struct FinetuneArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A bundled task (sst2, cola, rte, stsb), a task description FILE.toml (columns, labels,
    /// metric; see fixtures/glue/*.toml), or the name of the task given by --train and --dev.
    #[arg(long, required_unless_present = "train")]
    task: Option<String>,
    /// Training TSV: a header row, then label<TAB>text (or label<TAB>a<TAB>b) rows, labels 0..n-1.
    #[arg(long, requires = "dev")]
    train: Option<PathBuf>,
    /// Dev TSV, same columns as --train.
    #[arg(long, requires = "train")]
    dev: Option<PathBuf>,
    /// Number of seeds (0, 1, …).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Output dir: results.csv, ranks.csv and summary.json for one learning rate; for a grid,
    /// one such dir per learning rate (lr-<lr>/) and grid.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate, or a comma-separated grid (the default: 1e-4,3e-4,1e-3): each is
    /// fine-tuned over the seeds and the one with the best median dev score is reported.
    #[arg(long, value_name = "LR[,LR…]", value_delimiter = ',', value_parser = finite_number)]
    lr: Vec<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Train on a seeded subsample of N examples, or `all`.
    #[arg(long, value_name = "N|all")]
    train_examples: Option<String>,
    /// Truncate examples to this many tokens.
    #[arg(long)]
    max_len: Option<usize>,
}

impl FinetuneArgs {
    /// The request and its learning-rate grid (empty: the one learning rate in the request).
    fn into_request(self) -> Result<(crate::finetune::FinetuneRequest, Vec<f64>)> {
        use crate::finetune::{FinetuneConfig, Task};
        let task = match (self.train, self.dev) {
            (Some(train), Some(dev)) => Task::from_files(self.task.as_deref().unwrap_or("custom"), train, dev),
            _ => Task::named(self.task.as_deref().expect("clap requires --task without --train"))?,
        };
        let defaults = FinetuneConfig::default();
        let train_examples = match self.train_examples.as_deref() {
            None => defaults.train_examples,
            Some("all") => None,
            Some(n) => Some(n.parse().with_context(|| format!("--train-examples {n:?}: expected a count or `all`"))?),
        };
        let grid = match self.lr.as_slice() {
            [] => crate::finetune::DEFAULT_LR_GRID.to_vec(),
            [_] => Vec::new(),
            lrs => lrs.to_vec(),
        };
        let config = FinetuneConfig {
            epochs: self.epochs.unwrap_or(defaults.epochs),
            lr: self.lr.first().copied().unwrap_or(defaults.lr),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            max_len: self.max_len.unwrap_or(defaults.max_len),
            train_examples,
            ..defaults
        };
        let (model, tokenizer) = self.model.resolve()?;
        Ok((crate::finetune::FinetuneRequest { model, tokenizer, task, seeds: (0..self.seeds).collect(), config, out: self.out }, grid))
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training throughput of both objectives on random tokens.
    Train(crate::bench::TrainBenchArgs),
    /// Analysis throughput and peak memory for growing token counts.
    Analyze(crate::bench_analysis::AnalyzeBenchArgs),
}

impl TrainArgs {
    fn into_request(self) -> Result<crate::train::TrainRequest> {
        // A resumed run starts from its saved settings; `train` refuses flags that change them.
        let mut config = if self.resume {
            crate::train::saved_config(&self.out)?
        } else {
            let objective = self.objective.context("--objective is required (mlm or mae-lm)")?;
            TrainConfig::defaults(objective, self.preset.unwrap_or(Preset::Mini), self.steps)
        };
        config.objective = self.objective.unwrap_or(config.objective);
        config.preset = self.preset.unwrap_or(config.preset);
        config.steps = self.steps.unwrap_or(config.steps);
        config.batch_size = self.batch_size.unwrap_or(config.batch_size);
        config.seq_len = self.seq_len.unwrap_or(config.seq_len);
        config.lr = self.lr.unwrap_or(config.lr);
        config.seed = self.seed.unwrap_or(config.seed);
        config.mask.policy = self.mask_policy.unwrap_or(config.mask.policy);
        config.mask.keep_mask_frac = self.keep_mask_frac.unwrap_or(config.mask.keep_mask_frac);
        let (model_overrides, train_overrides): (Vec<String>, Vec<String>) = self.overrides.into_iter().partition(|o| o.starts_with("model."));
        let config = crate::config::apply_overrides(&config, &train_overrides)?;
        Ok(crate::train::TrainRequest {
            data_dir: self.data,
            out: self.out,
            config,
            model_overrides: model_overrides.into_iter().map(|o| o["model.".len()..].to_string()).collect(),
            decoder_layers: self.decoder_layers,
            resume: self.resume,
            stop_at: self.stop_at,
        })
    }
}

fn print_verdicts(verdicts: &[crate::report::verdicts::Verdict]) {
    for v in verdicts {
        println!("{:<55} {:<14} {}", v.claim, v.outcome.to_string(), v.evidence);
    }
}

/// The exit status of a failed run: 1 when `check` found a regression, 2 for every other error
/// (bad usage, unreadable or invalid input, a failed command), as clap's usage errors.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.is::<crate::report::check::Regressed>() {
        1
    } else {
        2
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Prepare(args) => {
            let options = PrepareOptions {
                files: crate::data::sources::command_line_files(args.bundle.as_deref(), args.inputs, args.holdout_inputs)?,
                out: args.out,
                vocab_size: args.vocab_size,
                lowercase: args.lowercase,
                holdout_frac: args.holdout_frac,
                tokenizer: args.tokenizer,
            };
            let meta = prepare(&options)?;
            println!(
                "prepared {}: vocab {}, {} train / {} holdout documents, {} / {} tokens",
                options.out.display(),
                meta.vocab_size,
                meta.n_documents_train,
                meta.n_documents_holdout,
                meta.n_tokens_train,
                meta.n_tokens_holdout
            );
            for c in crate::data::corpus::source_counts(&meta) {
                println!("  {}: {} / {} tokens", c.source, c.n_tokens_train, c.n_tokens_holdout);
            }
        }
        Command::Train(args) => {
            let outcome = crate::train::train(&args.into_request()?)?;
            match outcome.last_eval {
                Some(eval) => {
                    println!("{}: step {}, holdout loss {:.4}, masked-token accuracy {:.3}", outcome.run_dir.display(), outcome.steps, eval.loss, eval.accuracy)
                }
                None => println!("{}: step {}", outcome.run_dir.display(), outcome.steps),
            }
        }
        Command::HiddenStates(args) => {
            let texts = match &args.input_file {
                Some(path) => crate::hidden_states::read_lines(path)?,
                None => args.text,
            };
            let (model, tokenizer) = args.model.resolve()?;
            crate::hidden_states::write_hidden_states(&model, tokenizer.as_deref(), &texts, &args.out)?;
        }
        Command::Inspect { dir, tokenizer } => crate::inspect::inspect(&crate::hf_cache::resolve_model_dir(&dir)?, tokenizer.as_deref())?,
        Command::Analyze(args) => {
            let (spec, out) = args.into_spec()?;
            let plan = spec.resolve()?;
            let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&plan.spec.name));
            let results = crate::analysis::analyze(&plan, &out)?;
            print!("{}", crate::analysis::summary::render(&results.ranks));
            println!("wrote {}", out.display());
        }
        Command::Reproduce { budget, out, work_dir, corpus, seeds } => {
            let mut budget = budget.budget();
            if let Some(n) = seeds {
                budget.seeds = (0..n).collect();
            }
            let request = crate::reproduce::ReproduceRequest {
                out: out.unwrap_or_else(|| PathBuf::from("reports").join(budget.name)),
                work_dir: work_dir.unwrap_or_else(|| PathBuf::from("runs").join(format!("reproduce-{}", budget.name))),
                corpus: if corpus.is_empty() { crate::reproduce::CorpusChoice::Bundled } else { crate::reproduce::CorpusChoice::Files(corpus) },
                budget,
            };
            let verdicts = crate::reproduce::reproduce(&request)?;
            print_verdicts(&verdicts);
            println!("report: {}", request.out.join(crate::report::REPORT_MD).display());
        }
        Command::Report { dir } => {
            let verdicts = crate::report::plot_and_report(&dir)?;
            print_verdicts(&verdicts);
            println!("report: {}", dir.join(crate::report::REPORT_MD).display());
        }
        Command::Plot { dir } => {
            let outcome = crate::report::plots::draw_all(&dir)?;
            for note in &outcome.skipped {
                println!("skipped {note}");
            }
            for stem in &outcome.written {
                println!("wrote {}", dir.join(format!("{stem}.png")).display());
            }
        }
        Command::Check { current, baseline, max_drop, rel_tol } => {
            use crate::report::check::{check_files, render, Regressed, Tolerances};
            let tolerances = Tolerances::parse(&max_drop, &rel_tol)?;
            let (regressions, compared) = check_files(&current, &baseline, &tolerances)?;
            print!("{}", render(&regressions, compared));
            if !regressions.is_empty() {
                return Err(Regressed { rows: regressions.len(), compared, baseline }.into());
            }
        }
        Command::Merge { dirs, out } => {
            let results = crate::analysis::merge(&dirs, &out)?;
            print!("{}", crate::analysis::summary::render(&results.ranks));
            println!("merged {} dirs into {}", dirs.len(), out.display());
        }
        Command::Finetune(args) => {
            let (request, grid) = args.into_request()?;
            if grid.is_empty() {
                print!("{}", crate::finetune::render(&crate::finetune::finetune(&request)?.summary));
            } else {
                print!("{}", crate::finetune::render_grid(&crate::finetune::finetune_grid(&request, &grid)?));
            }
            println!("wrote {}", request.out.display());
        }
        Command::Bench(BenchCommand::Train(args)) => crate::bench::bench_train(&args)?,
        Command::Bench(BenchCommand::Analyze(args)) => crate::bench_analysis::bench_analyze(&args)?,
    }
    Ok(())
}

/// A number flag's value: NaN and infinities are refused where the flag is named (they would
/// reach the configuration and fail there, or train on NaN).
fn finite_number(text: &str) -> std::result::Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text} is not a finite number"))
    }
}
