//! The training loop: one readable function from a data dir to a run dir.
//!
//! Each step: set the LR from `lr_at(step)`, draw a batch, mask it, forward/backward, clip,
//! update, then log, evaluate and checkpoint on their cadences. Ctrl-C finishes the current
//! step, writes a checkpoint and stops; a non-finite loss stops without touching the last
//! good checkpoint.

use super::eval::{evaluate, unigram_plateau_loss, EvalResult};
use super::loss::masked_token_loss;
use super::metrics::{MetricsLog, MetricsRow};
use super::optimizer::{AdamW, AdamWConfig};
use super::schedule::lr_at;
use super::state::{read_checkpoint, write_checkpoint, TrainState, DATA_META_FILE, METRICS_FILE, TRAIN_CONFIG_FILE, TRAIN_STATE_FILE};
use crate::checkpoint::{CONFIG_FILE, TOKENIZER_FILE};
use crate::config::{apply_model_overrides, ModelConfig, Objective, TrainConfig};
use crate::data::batches::BatchSampler;
use crate::data::corpus::{read_meta, META_FILE};
use crate::data::masking::Masker;
use crate::data::packing::{PackedSequences, Split};
use crate::fsutil::write_json_atomic;
use crate::model::{init, Ctx, PretrainingModel};
use crate::progress::Progress;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// What the user asked for.
pub struct TrainRequest {
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub config: TrainConfig,
    /// `--set model.KEY=VALUE` overrides of the preset's model config (keys without `model.`).
    pub model_overrides: Vec<String>,
    pub decoder_layers: Option<usize>,
    /// Continue the run in `out` from its last checkpoint, on the same data dir. `config` must
    /// equal the saved configuration except for `steps` (see [`super::resume`]).
    pub resume: bool,
    /// Checkpoint and stop after this step, as if interrupted (for time-sliced or preemptible jobs).
    pub stop_at: Option<u64>,
}

#[derive(Debug)]
pub struct TrainOutcome {
    pub steps: u64,
    pub last_eval: Option<EvalResult>,
    pub run_dir: PathBuf,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Trainings running now (`reproduce` runs two side by side).
static TRAINING: AtomicUsize = AtomicUsize::new(0);

/// Ctrl-C while a training runs asks it to checkpoint and stop; at any other time (a
/// reproduction's fine-tuning after its trainings) it ends the process as Ctrl-C does by
/// default, exit code 130, since nothing else would ever look at the flag.
fn install_interrupt_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Another handler may already own SIGINT (e.g. in an embedding program); then Ctrl-C
        // simply kills the process and the last cadence checkpoint remains.
        let _ = ctrlc::set_handler(|| match TRAINING.load(Ordering::SeqCst) {
            0 => std::process::exit(130),
            _ => INTERRUPTED.store(true, Ordering::SeqCst),
        });
    });
}

/// Counts a training as running for its lifetime.
struct Running;

impl Running {
    fn start() -> Self {
        TRAINING.fetch_add(1, Ordering::SeqCst);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        TRAINING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Creates a new run dir (configs + tokenizer) or reads a resumed one's configs.
fn prepare_run_dir(req: &TrainRequest) -> Result<(TrainConfig, ModelConfig)> {
    let out = &req.out;
    if req.resume {
        return super::resume::resumed_settings(req);
    }
    if out.join(TRAIN_STATE_FILE).exists() {
        bail!("{}: already holds a training run (use --resume to continue it, or another --out)", out.display());
    }
    // A run dir whose first checkpoint was never written carries only configs: start it afresh.
    crate::outdir::claim(out, TRAIN_CONFIG_FILE)?;
    let config = &req.config;
    config.validate()?;
    let meta = read_meta(&req.data_dir)?;
    let tokenizer = crate::data::tokenizer::load_tokenizer(&req.data_dir.join(TOKENIZER_FILE))?;
    let mut model = config.preset.model_config(tokenizer.get_vocab_size(true), &meta.special_ids, config.objective, config.mask.clone());
    if let (Some(layers), Some(repdef)) = (req.decoder_layers, model.repdef.as_mut()) {
        if config.objective != Objective::MaeLm {
            bail!("--decoder-layers only applies to --objective mae-lm");
        }
        repdef.decoder_layers = layers;
    }
    let model = apply_model_overrides(&model, &req.model_overrides)?;
    model.validate()?;
    // Masking has one home, the training settings; config.json records a copy for the analysis.
    if model.repdef.as_ref().is_some_and(|r| r.mask != config.mask) {
        bail!("--set model.repdef.mask…: masking is a training setting; use --mask-policy, --keep-mask-frac or --set mask.KEY=VALUE");
    }
    if config.seq_len > model.max_position_embeddings {
        bail!("seq_len {} exceeds the model's {} position embeddings", config.seq_len, model.max_position_embeddings);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::copy(req.data_dir.join(TOKENIZER_FILE), out.join(TOKENIZER_FILE)).context("copying tokenizer.json into the run dir")?;
    std::fs::copy(req.data_dir.join(META_FILE), out.join(DATA_META_FILE)).context("copying the corpus's meta.json into the run dir")?;
    write_json_atomic(&out.join(CONFIG_FILE), &model)?;
    write_json_atomic(&out.join(TRAIN_CONFIG_FILE), config)?;
    Ok((config.clone(), model))
}

pub fn train(req: &TrainRequest) -> Result<TrainOutcome> {
    let (config, model_config) = prepare_run_dir(req)?;
    let out = &req.out;
    let device = Device::Cpu;
    let meta = read_meta(&req.data_dir)?;
    let train_seqs = PackedSequences::load(&req.data_dir, Split::Train, config.seq_len)?;
    let holdout = PackedSequences::load(&req.data_dir, Split::Holdout, config.seq_len)?;

    let varmap = VarMap::new();
    let model = PretrainingModel::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), &model_config)?;
    init::initialize(&varmap, model_config.initializer_range, &mut Rng::derive(config.seed, "init"))?;
    let adamw = AdamWConfig { beta1: config.beta1, beta2: config.beta2, eps: config.eps, weight_decay: config.weight_decay };
    let mut optimizer = AdamW::new(&varmap, adamw)?;
    let masker = Masker {
        config: config.mask.clone(),
        special: meta.special_ids,
        vocab_size: model_config.vocab_size,
        drop_picked: config.objective == Objective::MaeLm,
    };
    let plateau_loss = unigram_plateau_loss(&train_seqs, &holdout, config.eval_sequences, &masker);
    let mut state = if req.resume {
        let mut state = read_checkpoint(out, &varmap, &mut optimizer, &device)?;
        if state.sampler.offset > train_seqs.len() {
            bail!(
                "{}: the run had read {} training sequences of its epoch, more than the {} of {}: --data is not the run's data dir",
                out.join(TRAIN_STATE_FILE).display(),
                state.sampler.offset,
                train_seqs.len(),
                req.data_dir.display()
            );
        }
        if state.plateau_loss != plateau_loss {
            // Runs made before the plateau was measured on the holdout split carry the training
            // split's unigram entropy; weights and moments are untouched, so only the state is
            // rewritten.
            state.plateau_loss = plateau_loss;
            write_json_atomic(&out.join(TRAIN_STATE_FILE), &state)?;
        }
        state
    } else {
        TrainState::fresh(config.seed, plateau_loss)
    };
    let mut sampler = BatchSampler::new(train_seqs.len(), config.batch_size, config.seed, state.sampler);
    let mut metrics = MetricsLog::open(&out.join(METRICS_FILE), req.resume.then_some(state.step))?;
    let progress = Progress::new(config.steps, state.step, "steps");
    // Names the run in log lines, which interleave when runs train side by side.
    let run_name = out.file_name().map_or_else(|| out.display().to_string(), |n| n.to_string_lossy().into_owned());
    progress.log(&format!(
        "{} {} {}×{} (d_mlp {}), {} train / {} holdout sequences of {} tokens, {} → {}",
        if req.resume { format!("resuming at step {}:", state.step) } else { "training".into() },
        config.objective,
        model_config.num_hidden_layers,
        model_config.hidden_size,
        model_config.intermediate_size,
        train_seqs.len(),
        holdout.len(),
        config.seq_len,
        req.data_dir.display(),
        out.display()
    ));
    let _running = Running::start();
    install_interrupt_handler();
    INTERRUPTED.store(false, Ordering::SeqCst);

    let run_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    while state.step < config.steps {
        let step_start = Instant::now();
        let lr = lr_at(state.step, config.lr, config.warmup_steps, config.steps);
        let rows: Vec<&[u32]> = sampler.next_batch().into_iter().map(|i| train_seqs.seq(i)).collect();
        let batch = masker.mask(&rows, &mut state.rng);
        let step_loss = masked_token_loss(&model, &batch, &mut Ctx::train(&mut state.rng))?;
        let loss = step_loss.value()?;
        if !loss.is_finite() {
            progress.finish();
            let kept = match out.join(TRAIN_STATE_FILE).exists() {
                true => format!("the last good checkpoint in {} is kept", out.display()),
                false => format!("no checkpoint was written yet, so {} has none to resume from", out.display()),
            };
            bail!("loss became {loss} at step {} (lr {lr:.2e}); stopped: {kept}; try a lower --lr or more --set warmup_steps", state.step + 1);
        }
        let grads = step_loss.loss.backward()?;
        let grad_norm = optimizer.grad_norm(&grads)?;
        let grad_scale = if config.grad_clip > 0.0 && grad_norm > config.grad_clip { config.grad_clip / grad_norm } else { 1.0 };
        optimizer.step(&grads, lr, grad_scale)?;

        state.step += 1;
        state.sampler = sampler.position();
        state.tokens_seen += (batch.batch * batch.pos) as u64;
        state.elapsed_s = elapsed_before + run_start.elapsed().as_secs_f64();
        let tokens_per_s = (batch.batch * batch.pos) as f64 / step_start.elapsed().as_secs_f64();
        let accuracy = step_loss.n_correct as f64 / step_loss.n_predictions as f64;
        progress.advance(state.step, format!("loss {loss:.3} lr {lr:.1e} {tokens_per_s:.0} tok/s"));
        if state.step % config.log_every == 0 || state.step == config.steps {
            metrics.write(&MetricsRow {
                step: state.step,
                kind: "train",
                loss,
                accuracy,
                lr: Some(lr),
                grad_norm: Some(grad_norm),
                tokens_per_s: Some(tokens_per_s),
                elapsed_s: state.elapsed_s,
            })?;
            if !progress.is_terminal() {
                progress.log(&format!(
                    "{run_name} step {:>6}/{} loss {loss:.4} acc {accuracy:.3} lr {lr:.2e} |g| {grad_norm:.2} {tokens_per_s:.0} tok/s",
                    state.step, config.steps
                ));
            }
        }
        let last = state.step == config.steps;
        if last || (config.eval_every > 0 && state.step % config.eval_every == 0) {
            let result = evaluate(&model, &holdout, &masker, config.eval_sequences, config.batch_size, config.seed)?;
            metrics.write(&MetricsRow {
                step: state.step,
                kind: "eval",
                loss: result.loss,
                accuracy: result.accuracy,
                lr: None,
                grad_norm: None,
                tokens_per_s: None,
                elapsed_s: state.elapsed_s,
            })?;
            progress.log(&format!(
                "{run_name} step {:>6}: holdout loss {:.4}, masked-token accuracy {:.3} ({} predictions)",
                state.step, result.loss, result.accuracy, result.n_predictions
            ));
            state.last_eval = Some(result);
        }
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let stopping = req.stop_at == Some(state.step);
        if last || interrupted || stopping || (config.checkpoint_every > 0 && state.step % config.checkpoint_every == 0) {
            write_checkpoint(out, &varmap, &optimizer, &state)?;
        }
        if interrupted {
            progress.finish();
            bail!("interrupted at step {}; checkpoint written to {} (continue with --resume)", state.step, out.display());
        }
        if stopping {
            progress.log(&format!("stopped at step {} as requested; continue with --resume", state.step));
            break;
        }
    }
    progress.finish();
    Ok(TrainOutcome { steps: state.step, last_eval: state.last_eval, run_dir: out.to_path_buf() })
}
