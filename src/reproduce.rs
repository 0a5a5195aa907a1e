//! `repdef reproduce`: the whole chain on the bundled corpus with matched MLM and MAE-LM budgets
//! (same data, steps, batch, seeds and encoder size): prepare → train → analyze → fine-tune on
//! the bundled GLUE tasks over a learning-rate grid → figures → report. Every stage skips what is already done and training resumes where
//! it stopped, so re-running an interrupted reproduction continues it.

use crate::analysis::{analyze_into, ANALYSIS_DIR};
use crate::bundled::bundled;
use crate::config::{Objective, Preset, TrainConfig};
use crate::data::corpus::{prepare, PrepareOptions};
use crate::data::sources::{read_bundle, CorpusFile, HoldoutRule, BUNDLE_MANIFEST};
use crate::finetune::{finetune_grid, FinetuneConfig, FinetuneRequest, Task, BUNDLED_TASKS, DEFAULT_LR_GRID};
use crate::outdir::{claim_replaceable, Replaceable};
use crate::progress::StageClock;
use crate::report::verdicts::{Downstream, TaskDownstream, Verdict};
use crate::report::DOWNSTREAM_FILE;
use crate::spec::{AnalysisSpec, DataSpec, MeasureSpec, ModelSpec};
use crate::train::state::{TrainState, TRAIN_STATE_FILE};
use crate::train::{train, TrainRequest};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BudgetName {
    /// A few steps of the `tiny` preset: checks the pipeline end to end (CI), not the science.
    Tiny,
    /// 12–25 minutes on 2 CPU cores, mostly training and fine-tuning (measured on a quiet and on a
    /// loaded VM; it prints its stage times at the end).
    Quick,
    /// The quick models trained about eight times longer, fine-tuned over five seeds (at most 3½
    /// hours on 2 CPU cores, timed before the faster training kernels; it can be continued across
    /// sittings, see the README).
    Standard,
}

/// Everything a reproduction varies; MLM and MAE-LM always get the same values (the decoder,
/// which only MAE-LM has, aside).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub name: &'static str,
    pub preset: Preset,
    /// `key=value` model-config overrides of the preset.
    pub model_overrides: &'static [&'static str],
    /// MAE-LM's decoder gets its own relative-position bias table (the official
    /// `--decoder-rel-pos 1`; needs the encoder's bucketing). MLM's `[MASK]` positions see the
    /// encoder's bias in every layer; without a decoder table, MAE-LM's dropped positions would
    /// see none (reports/recipe/README.md, "MAE-LM on real text").
    pub decoder_relative_attention: bool,
    pub vocab_size: usize,
    /// The corpus used when `--corpus` is not given.
    pub corpus: BundledCorpus,
    pub steps: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Pretraining seeds: one MLM and one MAE-LM run each.
    pub seeds: Vec<u64>,
    pub eval_every: u64,
    pub analysis_tokens: u64,
    /// Fine-tuning of each objective's first-seed encoder on the bundled tasks (claim 4).
    pub finetune: FinetuneBudget,
}

/// Which bundled corpus a budget pretrains on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundledCorpus {
    /// WikiText-2 valid + test (0.5 M tokens, holdout = the last 10% of articles): prepares in
    /// seconds, for the pipeline check; far too small for the science (DESIGN §1, "Scale matters").
    WikiText,
    /// Everything in `fixtures/corpus/bundle.toml` (~23 M tokens) with its fixed holdout, and the
    /// tokenizer shipped beside it ([`BUNDLE_TOKENIZER`]).
    Full,
}

/// The 8k WordPiece tokenizer of the bundled corpus (trained once by `repdef prepare --bundle`,
/// see `fixtures/corpus/README.md`). WordPiece training is not deterministic, so shipping it
/// makes prepared data, and so every run, the same on every machine — and lets a run committed
/// half-way continue on a fresh clone.
pub const BUNDLE_TOKENIZER: &str = "fixtures/corpus/tokenizer.json";

/// How much fine-tuning a budget does on every bundled task; the rest of [`FinetuneConfig`]
/// keeps its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneBudget {
    pub lrs: &'static [f64],
    pub seeds: &'static [u64],
    pub epochs: usize,
    /// Per task (a task with fewer uses all of them).
    pub train_examples: usize,
}

impl FinetuneBudget {
    fn config(&self) -> FinetuneConfig {
        FinetuneConfig { epochs: self.epochs, train_examples: Some(self.train_examples), ..FinetuneConfig::default() }
    }

    /// The protocol in words, for the report.
    fn describe(&self) -> String {
        let config = self.config();
        let list = |values: Vec<String>| values.join(", ");
        format!(
            "learning rates {} × seeds {}, at most {} training examples per task, {} epochs, batch {}, at most {} tokens per example",
            list(self.lrs.iter().map(|lr| format!("{lr:.0e}")).collect()),
            list(self.seeds.iter().map(u64::to_string).collect()),
            self.train_examples,
            config.epochs,
            config.batch_size,
            config.max_len
        )
    }
}

impl Budget {
    /// The model-config overrides of `objective`'s run: the budget's, plus, for MAE-LM, the
    /// decoder's own relative-position bias when the budget gives it one.
    pub fn model_overrides(&self, objective: Objective) -> Vec<String> {
        let mut overrides: Vec<String> = self.model_overrides.iter().map(|s| s.to_string()).collect();
        if objective == Objective::MaeLm && self.decoder_relative_attention {
            overrides.push("repdef.decoder_relative_attention=true".into());
        }
        overrides
    }
}

impl BudgetName {
    pub fn budget(self) -> Budget {
        match self {
            BudgetName::Tiny => Budget {
                name: "tiny",
                preset: Preset::Tiny,
                model_overrides: &[],
                decoder_relative_attention: false,
                vocab_size: 2000,
                corpus: BundledCorpus::WikiText,
                steps: 4,
                batch_size: 4,
                seq_len: 32,
                lr: 2e-3,
                warmup_steps: 1,
                seeds: vec![0],
                eval_every: 2,
                analysis_tokens: 1024,
                finetune: FinetuneBudget { lrs: &[3e-4, 1e-3], seeds: &[0], epochs: 1, train_examples: 64 },
            },
            BudgetName::Quick => Budget {
                name: "quick",
                preset: Preset::Mini,
                // The official encoders' relative-position bias (32 buckets, as the fork's RoBERTa
                // baseline; max distance 128) on top of the absolute positions. Weights are drawn
                // with the per-matrix gain of BERT's N(0, 0.02) at width 768, σ = 0.02 · √(768 / 128)
                // ≈ 0.049, which the width override carries with it (`apply_model_overrides`).
                model_overrides: &["hidden_size=128", "intermediate_size=512", "num_attention_heads=2", "relative_attention_num_buckets=32"],
                decoder_relative_attention: true,
                vocab_size: 8192,
                corpus: BundledCorpus::Full,
                steps: 1200,
                batch_size: 32,
                seq_len: 128,
                // Measured on the bundled corpus (reports/recipe/README.md): 1e-3 gets
                // furthest below the plateau in the same steps; 2e-3 and 5e-4 lag behind.
                lr: 1e-3,
                warmup_steps: 100,
                seeds: vec![0],
                eval_every: 200,
                analysis_tokens: 40_000,
                // Two learning rates on 1000 examples per task keep the 16 grid points (2 encoders × 4
                // tasks × 2 rates, 3 seeds each) to ~4 minutes on 2 cores; standard runs the full grid.
                finetune: FinetuneBudget { lrs: &[3e-4, 1e-3], seeds: &[0, 1, 2], epochs: 3, train_examples: 1000 },
            },
            BudgetName::Standard => Budget {
                name: "standard",
                steps: 10_000,
                warmup_steps: 400,
                eval_every: 500,
                finetune: FinetuneBudget { lrs: &DEFAULT_LR_GRID, seeds: &[0, 1, 2, 3, 4], epochs: 3, train_examples: 2000 },
                ..BudgetName::Quick.budget()
            },
        }
    }
}

pub struct ReproduceRequest {
    pub budget: Budget,
    pub corpus: CorpusChoice,
    /// Where prepared data and run dirs go.
    pub work_dir: PathBuf,
    /// The report dir.
    pub out: PathBuf,
}

/// What to pretrain on; resolved only after the output dirs are checked.
pub enum CorpusChoice {
    /// The budget's bundled corpus ([`bundled_corpus`]) and its shipped tokenizer, if any.
    Bundled,
    /// Text files given with `--corpus`: documents found in the text, the last 10% held out, a
    /// tokenizer trained on them.
    Files(Vec<PathBuf>),
}

impl CorpusChoice {
    /// The corpus files and the tokenizer to prepare them with (`None`: train one).
    fn resolve(&self, budget: &Budget) -> Result<(Vec<CorpusFile>, Option<PathBuf>)> {
        Ok(match self {
            CorpusChoice::Bundled => {
                let tokenizer = (budget.corpus == BundledCorpus::Full).then(|| bundled(BUNDLE_TOKENIZER)).transpose()?;
                (bundled_corpus(budget)?, tokenizer)
            }
            CorpusChoice::Files(paths) => (paths.iter().map(|p| CorpusFile::plain(p.clone(), HoldoutRule::None)).collect(), None),
        })
    }
}

/// Holdout sequences per evaluation in every budget.
const EVAL_SEQUENCES: usize = 512;

/// The budget's bundled corpus ([`crate::bundled`]).
fn bundled_corpus(budget: &Budget) -> Result<Vec<CorpusFile>> {
    match budget.corpus {
        BundledCorpus::WikiText => ["fixtures/corpus/wikitext2_valid.txt", "fixtures/corpus/wikitext2_test.txt"]
            .into_iter()
            .map(|p| Ok(CorpusFile::plain(bundled(p)?, HoldoutRule::None)))
            .collect(),
        BundledCorpus::Full => read_bundle(&bundled(BUNDLE_MANIFEST)?),
    }
}

/// Prepares the corpus into `data_dir` unless that holds it already; refuses a dir prepared from
/// other files, whose runs would silently be reused.
fn prepare_data(req: &ReproduceRequest, data_dir: &Path) -> Result<()> {
    let (corpus, tokenizer) = req.corpus.resolve(&req.budget)?;
    let wanted: Vec<&Path> = corpus.iter().map(|f| f.path.as_path()).collect();
    match crate::data::corpus::read_meta(data_dir) {
        Ok(meta) if meta.inputs.iter().map(|i| i.file.path.as_path()).eq(wanted.iter().copied()) => {
            eprintln!("[1/5] using prepared data in {}", data_dir.display());
            Ok(())
        }
        Ok(_) => {
            bail!("{} was prepared from other corpus files than this reproduction's ({} files); give another --work-dir", data_dir.display(), wanted.len())
        }
        Err(_) => {
            let mut sources: Vec<&str> = corpus.iter().map(|f| f.source.as_str()).collect();
            sources.dedup();
            eprintln!("[1/5] preparing {} files ({}) → {}", wanted.len(), sources.join(", "), data_dir.display());
            let options = PrepareOptions { vocab_size: req.budget.vocab_size, tokenizer, ..PrepareOptions::of_files(corpus.clone(), data_dir.to_path_buf()) };
            let meta = prepare(&options)?;
            eprintln!("[1/5] {} training / {} holdout tokens, vocabulary {}", meta.n_tokens_train, meta.n_tokens_holdout, meta.vocab_size);
            Ok(())
        }
    }
}

fn label(objective: Objective, seed: u64, n_seeds: usize) -> String {
    if n_seeds == 1 {
        objective.to_string()
    } else {
        format!("{objective}#seed{seed}")
    }
}

/// `mlm-seed0`, `maelm-seed1`, …: the run dir's name in the work dir.
fn run_name(objective: Objective, seed: u64) -> String {
    let name = match objective {
        Objective::Mlm => "mlm",
        Objective::MaeLm => "maelm",
        Objective::ReplacedTokenDetection => unreachable!("reproduce trains MLM and MAE-LM models only"),
    };
    format!("{name}-seed{seed}")
}

fn run_dir(work: &Path, objective: Objective, seed: u64) -> PathBuf {
    work.join(run_name(objective, seed))
}

/// The request that trains (or resumes) one run; `None` when the run is already complete.
fn train_request(budget: &Budget, data_dir: &Path, out: &Path, objective: Objective, seed: u64) -> Option<TrainRequest> {
    let mut config = TrainConfig::defaults(objective, budget.preset, Some(budget.steps));
    config.seed = seed;
    config.batch_size = budget.batch_size;
    config.seq_len = budget.seq_len;
    config.lr = budget.lr;
    config.warmup_steps = budget.warmup_steps;
    config.eval_every = budget.eval_every;
    // ~10k masked predictions per evaluation: the holdout loss to ±0.03 nats, so the margin
    // below the plateau is not noise (128 sequences gave ±0.06).
    config.eval_sequences = EVAL_SEQUENCES;
    config.checkpoint_every = budget.eval_every;
    let resume = match crate::fsutil::read_json::<TrainState>(&out.join(TRAIN_STATE_FILE)) {
        Ok(state) if state.step >= budget.steps => return None,
        Ok(_) => true,
        Err(_) => false,
    };
    let model_overrides = budget.model_overrides(objective);
    Some(TrainRequest { data_dir: data_dir.to_path_buf(), out: out.to_path_buf(), config, model_overrides, decoder_layers: None, resume, stop_at: None })
}

/// A reproduction's report dir: an analysis dir with the fine-tuning results beside it.
const REPORT_DIR: Replaceable =
    Replaceable { marker: ANALYSIS_DIR.marker, what: "a reproduction's report", holds: |name| (ANALYSIS_DIR.holds)(name) || name == DOWNSTREAM_FILE };

pub fn reproduce(req: &ReproduceRequest) -> Result<Vec<Verdict>> {
    let budget = &req.budget;
    claim_replaceable(&req.out, &REPORT_DIR)?;
    let absolute = |p: &Path| std::env::current_dir().map(|d| d.join(p));
    if absolute(&req.work_dir)?.starts_with(absolute(&req.out)?) {
        bail!("--work-dir {} is inside the report dir {}, which the analysis replaces: choose another", req.work_dir.display(), req.out.display());
    }
    // The fine-tuning stage's data, found before hours of training rather than after.
    for (name, _, _) in BUNDLED_TASKS {
        let task = Task::named(name)?;
        for file in [&task.train, &task.dev] {
            ensure!(file.is_file(), "task {name}: {} not found (bundled data: run repdef from the repository's root)", file.display());
        }
    }
    let mut clock = StageClock::start();
    let data_dir = req.work_dir.join("data");
    prepare_data(req, &data_dir)?;
    clock.lap("prepare");
    let mut models = Vec::new();
    let mut pending = Vec::new();
    for &seed in &budget.seeds {
        for objective in [Objective::Mlm, Objective::MaeLm] {
            let out = run_dir(&req.work_dir, objective, seed);
            match train_request(budget, &data_dir, &out, objective, seed) {
                None => eprintln!("[2/5] {} is already trained", out.display()),
                Some(request) => {
                    eprintln!("[2/5] training {objective} seed {seed} ({} steps) → {}", budget.steps, out.display());
                    pending.push(request);
                }
            }
            models.push(ModelSpec { label: label(objective, seed, budget.seeds.len()), path: out, tokenizer: None });
        }
    }
    train_concurrently(&pending)?;
    clock.lap("train");
    eprintln!("[3/5] analysing {} models on {} holdout tokens each", models.len(), budget.analysis_tokens);
    let spec = AnalysisSpec {
        name: budget.name.to_string(),
        seed: 0,
        models,
        data: DataSpec { paths: vec![data_dir], tokens: budget.analysis_tokens, seq_len: budget.seq_len, batch_size: 32, shard: None },
        measure: MeasureSpec::default(),
    };
    let results = analyze_into(&spec.resolve()?, &req.out, &REPORT_DIR)?;
    eprint!("{}", crate::analysis::summary::render(&results.ranks));
    clock.lap("analyse");
    let downstream = fine_tune_encoders(budget, &req.work_dir)?;
    crate::fsutil::write_json_atomic(&req.out.join(DOWNSTREAM_FILE), &downstream)?;
    clock.lap("fine-tune");
    eprintln!("[5/5] drawing the figures and writing the report");
    let verdicts = crate::report::plot_and_report(&req.out)?;
    clock.lap("report");
    eprintln!("[5/5] done in {}", clock.summary());
    Ok(verdicts)
}

/// Trains the runs at the same time (see [`run_concurrently`]).
fn train_concurrently(requests: &[TrainRequest]) -> Result<()> {
    run_concurrently(requests, |request| train(request).map(|_| ()).with_context(|| format!("training {}", request.out.display())))?;
    Ok(())
}

/// Runs `work` on every item at the same time, each in its own thread pool with its share of
/// the cores: a small model cannot keep two cores busy on its own, and runs sharing one pool
/// contend for it (measured on the quick budget: 8.5k tokens/s for both training runs together in
/// one shared pool, ~10.3k with a pool each). A run's numbers do not depend on its pool: kernels
/// and matmuls split their work by the configured thread count, not by the threads that execute it.
fn run_concurrently<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = (candle_core::utils::get_num_threads() / items.len().max(1)).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                scope.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().context("starting a thread pool")?;
                    pool.install(|| work(item))
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Fine-tunes each objective's first-seed run on every bundled task over the budget's grid into
/// `work/finetune-<run name>/<task>/` (the two encoders side by side; points already fine-tuned
/// with these settings are reused) and collects the grids.
fn fine_tune_encoders(budget: &Budget, work: &Path) -> Result<Downstream> {
    let plan = &budget.finetune;
    let mut tasks = Vec::with_capacity(BUNDLED_TASKS.len());
    for (name, _, _) in BUNDLED_TASKS {
        let task = Task::named(name)?;
        let requests = [Objective::Mlm, Objective::MaeLm].map(|objective| FinetuneRequest {
            model: run_dir(work, objective, budget.seeds[0]),
            tokenizer: None,
            task: task.clone(),
            seeds: plan.seeds.to_vec(),
            config: plan.config(),
            out: work.join(format!("finetune-{}", run_name(objective, budget.seeds[0]))).join(name),
        });
        eprintln!("[4/5] fine-tuning both encoders on {name}: {}", plan.describe());
        let grids = run_concurrently(&requests, |request| {
            finetune_grid(request, plan.lrs).with_context(|| format!("fine-tuning {} on {name}", request.model.display()))
        })?;
        let [mlm, mae_lm]: [_; 2] = grids.try_into().expect("one grid per request");
        tasks.push(TaskDownstream { mlm, mae_lm });
    }
    Ok(Downstream { protocol: plan.describe(), tasks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{apply_model_overrides, MaskConfig};
    use crate::data::tokenizer::SpecialIds;

    /// Every budget draws its weights with the per-matrix gain BERT's N(0, 0.02) has at width 768
    /// (σ·√width), whatever width its overrides give the encoder: at 0.02 a narrow MAE-LM encoder
    /// is starved of gradient (reports/recipe/README.md, "Initialisation").
    #[test]
    fn budgets_keep_bert_base_init_gain() {
        let special = SpecialIds::REPDEF;
        for name in [BudgetName::Quick, BudgetName::Standard] {
            let budget = name.budget();
            let preset = budget.preset.model_config(100, &special, Objective::MaeLm, MaskConfig::default());
            let overrides: Vec<String> = budget.model_overrides.iter().map(|s| s.to_string()).collect();
            let config = apply_model_overrides(&preset, &overrides).unwrap();
            let gain = config.initializer_range * (config.hidden_size as f64).sqrt();
            let base_gain = 0.02 * 768f64.sqrt();
            assert!((gain / base_gain - 1.0).abs() < 0.01, "{}: σ {} at width {}", budget.name, config.initializer_range, config.hidden_size);
        }
    }

    /// The decoder's bias table is MAE-LM's alone: both runs' configs stay valid, and MLM's has none.
    #[test]
    fn decoder_bias_goes_to_mae_lm_only() {
        let special = SpecialIds::REPDEF;
        let budget = BudgetName::Standard.budget();
        let model = |objective| {
            let request = train_request(&budget, Path::new("data"), Path::new("/nonexistent/run"), objective, 0).unwrap();
            let preset = budget.preset.model_config(100, &special, objective, MaskConfig::default());
            let config = apply_model_overrides(&preset, &request.model_overrides).unwrap();
            config.validate().unwrap();
            config.repdef.unwrap().decoder_relative_attention
        };
        assert!(model(Objective::MaeLm));
        assert!(!model(Objective::Mlm));
    }
}
