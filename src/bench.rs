//! `repdef bench train`: training-step speed of MLM and MAE-LM at a preset (or a reproduction
//! budget's model), on random tokens,
//! printed as ms/step and tokens/s, with ratios against a PyTorch reference measured by
//! `bench/train_reference.py` on the same machine: from its JSON, or (the protocol, see
//! `bench/README.md`) by running it alternately with repdef and taking the median pair ratio,
//! with achieved GFLOP/s against the machine's assumed peak.

use crate::config::{apply_model_overrides, MaskConfig, ModelConfig, Objective, Preset};
use crate::data::masking::Masker;
use crate::data::tokenizer::SpecialIds;
use crate::model::{init, Ctx, PretrainingModel};
use crate::reproduce::BudgetName;
use crate::rng::Rng;
use crate::train::loss::masked_token_loss;
use crate::train::optimizer::{AdamW, AdamWConfig};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct TrainBenchArgs {
    #[arg(long, value_enum, default_value = "mini")]
    preset: Preset,
    /// Time the model of this reproduction budget instead of a preset (quick and standard:
    /// 4 × 128, 2 heads, relative-position bias, MAE-LM's decoder with its own).
    #[arg(long, value_enum, conflicts_with = "preset")]
    budget: Option<BudgetName>,
    /// MAE-LM's decoder depth, instead of the preset's or budget's (the official 4 layers for a
    /// 12-layer encoder, scaled to a 4-layer one, is 1).
    #[arg(long)]
    decoder_layers: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = at_least(1))]
    batch_size: usize,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    #[arg(long, default_value_t = 128, value_parser = at_least(3))]
    seq_len: usize,
    /// The random ids are drawn from 5 (the first id after the special ones) to this − 1.
    #[arg(long, default_value_t = 8192, value_parser = at_least(6))]
    vocab_size: usize,
    /// Timed steps per objective (after one untimed warm-up step).
    #[arg(long, default_value_t = 5, value_parser = at_least(1))]
    steps: usize,
    /// JSON from `bench/train_reference.py` (`{"mlm": ms_per_step, "mae-lm": ms_per_step, ...}`).
    #[arg(long, conflicts_with = "reference_script")]
    reference: Option<PathBuf>,
    /// Run this reference script (`bench/train_reference.py`) alternately with repdef, `--pairs`
    /// times, and report the median of the per-pair ratios with their range (the protocol).
    #[arg(long)]
    reference_script: Option<PathBuf>,
    #[arg(long, default_value_t = 5, value_parser = at_least(1))]
    pairs: usize,
    /// The Python that runs the reference script.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// A command-line count that must be at least `min` (clap names the flag and the bound).
pub(crate) fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..)
}

/// CPU seconds used so far by all threads of this process (Linux `/proc`; `None` elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Milliseconds per full training step (mask, forward, backward, AdamW update): the median
/// wall time of the timed steps (a step slowed by another process does not move it) and the
/// mean CPU time.
fn time_steps(objective: Objective, args: &TrainBenchArgs) -> Result<(f64, Option<f64>)> {
    let device = Device::Cpu;
    let model_config = model_config(objective, args)?;
    let varmap = VarMap::new();
    let model = PretrainingModel::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), &model_config)?;
    let mut rng = Rng::new(0);
    init::initialize(&varmap, model_config.initializer_range, &mut rng)?;
    let mut optimizer = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.01 })?;
    let masker = Masker { config: MaskConfig::default(), special: SpecialIds::REPDEF, vocab_size: args.vocab_size, drop_picked: objective == Objective::MaeLm };
    let rows: Vec<Vec<u32>> = (0..args.batch_size)
        .map(|_| {
            let mut row: Vec<u32> = (0..args.seq_len).map(|_| 5 + rng.below(args.vocab_size - 5) as u32).collect();
            row[0] = SpecialIds::REPDEF.cls;
            row[args.seq_len - 1] = SpecialIds::REPDEF.sep;
            row
        })
        .collect();
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let mut step_ms = Vec::with_capacity(args.steps);
    let mut cpu_start = None;
    for i in 0..=args.steps {
        if i == 1 {
            cpu_start = process_cpu_seconds();
        }
        let start = Instant::now();
        let batch = masker.mask(&refs, &mut rng);
        let loss = masked_token_loss(&model, &batch, &mut Ctx::train(&mut rng))?;
        let grads = loss.loss.backward()?;
        optimizer.step(&grads, 1e-4, 1.0)?;
        if i > 0 {
            step_ms.push(1000.0 * start.elapsed().as_secs_f64());
        }
    }
    let cpu = cpu_start.zip(process_cpu_seconds()).map(|(a, b)| 1000.0 * (b - a) / args.steps as f64);
    Ok((median(&step_ms), cpu))
}

/// The model `objective` is timed with: the preset's, or the budget's, with `--decoder-layers`.
fn model_config(objective: Objective, args: &TrainBenchArgs) -> Result<ModelConfig> {
    let mut config = match args.budget {
        None => args.preset.model_config(args.vocab_size, &SpecialIds::REPDEF, objective, MaskConfig::default()),
        Some(name) => {
            let budget = name.budget();
            let preset = budget.preset.model_config(args.vocab_size, &SpecialIds::REPDEF, objective, MaskConfig::default());
            apply_model_overrides(&preset, &budget.model_overrides(objective))?
        }
    };
    if let (Some(layers), Some(repdef)) = (args.decoder_layers, config.repdef.as_mut()) {
        if objective == Objective::MaeLm {
            anyhow::ensure!(layers > 0, "--decoder-layers must be at least 1");
            repdef.decoder_layers = layers;
        }
    }
    Ok(config)
}

/// The reference script's arguments for the same models as [`model_config`] (MAE-LM's, which
/// has everything MLM's has plus the decoder).
fn reference_model_args(args: &TrainBenchArgs) -> Result<Vec<String>> {
    let cfg = model_config(Objective::MaeLm, args)?;
    let decoder_relative = cfg.repdef.as_ref().is_some_and(|r| r.decoder_relative_attention);
    let mut out: Vec<String> = [
        ("--hidden-size", cfg.hidden_size),
        ("--layers", cfg.num_hidden_layers),
        ("--heads", cfg.num_attention_heads),
        ("--intermediate-size", cfg.intermediate_size),
        ("--decoder-layers", cfg.decoder_layers()),
        ("--relative-buckets", cfg.relative_attention_num_buckets),
        ("--relative-max-distance", cfg.relative_attention_max_distance),
    ]
    .iter()
    .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
    .collect();
    if decoder_relative {
        out.push("--decoder-relative".into());
    }
    Ok(out)
}

pub fn bench_train(args: &TrainBenchArgs) -> Result<()> {
    let tokens = (args.batch_size * args.seq_len) as f64;
    let model = match args.budget {
        Some(name) => format!("budget {}'s model", name.budget().name),
        None => format!("preset {:?}", args.preset),
    };
    println!("{model}, batch {} × {} tokens, vocab {}, {} timed steps", args.batch_size, args.seq_len, args.vocab_size, args.steps);
    if let Some(script) = &args.reference_script {
        return bench_pairs(args, script);
    }
    let reference: Option<HashMap<String, serde_json::Value>> = match &args.reference {
        Some(path) => Some(crate::fsutil::read_json(path).context("reading the PyTorch reference timings")?),
        None => None,
    };
    println!("{:<8} {:>10} {:>10} {:>14} {:>14}", "objective", "ms/step", "tokens/s", "vs PyTorch", "CPU ms/step");
    let mut step_ms = Vec::new();
    for (objective, key) in OBJECTIVES {
        let (ms, cpu_ms) = time_steps(objective, args)?;
        step_ms.push(ms);
        let ratio = reference.as_ref().and_then(|r| r.get(key)?.as_f64()).map_or("-".to_string(), |reference_ms| format!("{:.2}× speed", reference_ms / ms));
        let cpu_ms = cpu_ms.map_or("-".to_string(), |c| format!("{c:.0}"));
        println!("{key:<8} {ms:>10.1} {:>10.0} {ratio:>14} {cpu_ms:>14}", tokens / (ms / 1000.0));
    }
    println!("MAE-LM step ÷ MLM step: {:.2}× (matmul work: {:.2}×)", step_ms[1] / step_ms[0], work_ratio(args)?);
    Ok(())
}

const OBJECTIVES: [(Objective, &str); 2] = [(Objective::Mlm, "mlm"), (Objective::MaeLm, "mae-lm")];

/// The alternating protocol: `--pairs` rounds of repdef and the reference script (each first in
/// turn, [`run_pair`]), each timing both objectives; per objective the median of the per-pair
/// speed ratios with its range, the median step times, and the achieved GFLOP/s against the
/// machine's peak.
fn bench_pairs(args: &TrainBenchArgs, script: &std::path::Path) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peak = Peak::detect(threads);
    println!("{}", peak.describe());
    let mut samples: Vec<[(f64, f64); 2]> = Vec::with_capacity(args.pairs);
    let mut script_args: Vec<String> =
        [("--batch-size", args.batch_size), ("--seq-len", args.seq_len), ("--vocab-size", args.vocab_size), ("--steps", args.steps), ("--threads", threads)]
            .iter()
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .collect();
    script_args.extend(reference_model_args(args)?);
    let run_reference = || -> Result<[f64; 2]> {
        let reference: HashMap<String, serde_json::Value> = run_reference_script(&args.python, script, &script_args)?;
        let theirs = OBJECTIVES.map(|(_, key)| reference.get(key).and_then(serde_json::Value::as_f64));
        let [Some(mlm), Some(mae_lm)] = theirs else { anyhow::bail!("{}: no ms/step for mlm and mae-lm in its JSON", script.display()) };
        Ok([mlm, mae_lm])
    };
    for pair in 1..=args.pairs {
        let (ours, [mlm, mae_lm]) = run_pair(pair, || Ok([time_steps(OBJECTIVES[0].0, args)?.0, time_steps(OBJECTIVES[1].0, args)?.0]), run_reference)?;
        samples.push([(ours[0], mlm), (ours[1], mae_lm)]);
        eprintln!("pair {pair}/{}: repdef {:.0} / {:.0} ms, reference {mlm:.0} / {mae_lm:.0} ms (mlm / mae-lm)", args.pairs, ours[0], ours[1]);
    }
    println!("{:<8} {:>11} {:>11} {:>22} {:>10} {:>9} {:>8}", "objective", "repdef ms", "ref ms", "speed ratio (min–max)", "tokens/s", "GFLOP/s", "of peak");
    let mut warnings = Vec::new();
    for (i, (objective, key)) in OBJECTIVES.iter().enumerate() {
        let ours: Vec<f64> = samples.iter().map(|s| s[i].0).collect();
        let theirs: Vec<f64> = samples.iter().map(|s| s[i].1).collect();
        warnings.extend(
            [("repdef", &ours), ("the reference", &theirs)].into_iter().filter_map(|(side, times)| noise_warning(&format!("{side}'s {key} ms/step"), times)),
        );
        let ratios: Vec<f64> = samples.iter().map(|s| s[i].1 / s[i].0).collect();
        let (ms, reference_ms) = (median(&ours), median(&theirs));
        let gflops = step_flops(*objective, args)? / (ms / 1000.0) / 1e9;
        let tokens_per_s = (args.batch_size * args.seq_len) as f64 / (ms / 1000.0);
        let spread = ratio_spread(&ratios);
        println!("{key:<8} {ms:>11.1} {reference_ms:>11.1} {spread:>22} {tokens_per_s:>10.0} {gflops:>9.1} {:>7.1}%", 100.0 * gflops / peak.gflops());
    }
    warnings.iter().for_each(|warning| println!("{warning}"));
    let step_ratios = |side: fn(&(f64, f64)) -> f64| ratio_spread(&samples.iter().map(|s| side(&s[1]) / side(&s[0])).collect::<Vec<_>>());
    println!(
        "MAE-LM step ÷ MLM step, per pair: repdef {}, reference {}; repdef's matmul work: {:.2}×",
        step_ratios(|s| s.0),
        step_ratios(|s| s.1),
        work_ratio(args)?
    );
    println!("speed ratio = reference ms / repdef ms per pair (above 1: repdef is faster); FLOPs: matmuls only, backward counted as twice the forward");
    Ok(())
}

pub(crate) fn median(values: &[f64]) -> f64 {
    crate::stats::median(values).unwrap_or(f64::NAN)
}

/// Runs a reference script (`bench/*_reference.py`) with `args` and `--out` a temporary JSON
/// file, its own output discarded, and reads what it wrote.
pub(crate) fn run_reference_script<T: serde::de::DeserializeOwned>(python: &str, script: &std::path::Path, args: &[String]) -> Result<T> {
    let out = tempfile::tempdir().context("creating a directory for the reference's JSON")?;
    let json = out.path().join("reference.json");
    let status = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .arg("--out")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {python} {}", script.display()))?;
    anyhow::ensure!(status.success(), "{python} {} failed ({status})", script.display());
    crate::fsutil::read_json(&json)
}

/// Pair `pair` (counted from 1) of an alternating protocol: repdef first in odd pairs, the
/// reference first in even ones, so that a machine whose speed drifts during a run favours
/// neither side. Returns (repdef's, the reference's) measurement.
pub(crate) fn run_pair<Ours, Theirs>(pair: usize, ours: impl FnOnce() -> Result<Ours>, theirs: impl FnOnce() -> Result<Theirs>) -> Result<(Ours, Theirs)> {
    if pair % 2 == 1 {
        let ours = ours()?;
        Ok((ours, theirs()?))
    } else {
        let theirs = theirs()?;
        Ok((ours()?, theirs))
    }
}

/// Per-pair ratios as "median× (min–max)".
pub(crate) fn ratio_spread(ratios: &[f64]) -> String {
    let (low, high) = crate::stats::min_max(ratios);
    format!("{:.2}× ({low:.2}–{high:.2})", median(ratios))
}

/// How much one side's times may vary across the pairs of a run (slowest ÷ fastest) before the
/// bench says the machine was not idle: on an idle machine they vary by a few percent.
const NOISY_SPREAD: f64 = 1.25;

/// A warning when `times` (one side's, one per pair) vary by more than [`NOISY_SPREAD`].
pub(crate) fn noise_warning(what: &str, times: &[f64]) -> Option<String> {
    let (low, high) = crate::stats::min_max(times);
    let decimals = if high >= 100.0 { 0 } else { 2 };
    (high / low > NOISY_SPREAD).then(|| {
        format!(
            "warning: {what} varied {:.2}× across the pairs ({low:.decimals$}–{high:.decimals$}): the machine was not idle, so the \
             ratios are noisy (rerun with more --pairs, with nothing else running)",
            high / low
        )
    })
}

/// Matmul FLOPs of one training step at the benchmark's shapes: the encoder over the full
/// length (MLM) or over the kept ~85% (MAE-LM, plus its decoder over the full length), the last
/// block (but its keys and values) and the head only at the ~15% picked positions
/// (`Layer::forward_at`); backward costs twice the forward.
fn step_flops(objective: Objective, args: &TrainBenchArgs) -> Result<f64> {
    let cfg = model_config(objective, args)?;
    let (d, d_mlp, v) = (cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.vocab_size as f64);
    let (batch, len) = (args.batch_size as f64, args.seq_len as f64);
    let picked = batch * (0.15 * (len - 2.0)).round();
    // A block over `tokens` tokens, its output wanted at `outputs` of them: keys and values at
    // every token; at the outputs, the queries, the two attention matmuls over `span` tokens
    // each, the output projection and the MLP.
    let block = |tokens: f64, span: f64, outputs: f64| tokens * 4.0 * d * d + outputs * (4.0 * d * d + 4.0 * span * d + 4.0 * d * d_mlp);
    // `layers` blocks over `tokens` tokens, the last one output at the picked positions only.
    let stack = |layers: usize, tokens: f64, span: f64| match layers {
        0 => 0.0,
        n => (n - 1) as f64 * block(tokens, span, tokens) + block(tokens, span, picked),
    };
    let blocks = match objective {
        Objective::MaeLm => {
            let kept = batch * len - picked;
            cfg.num_hidden_layers as f64 * block(kept, kept / batch, kept) + stack(cfg.decoder_layers(), batch * len, len)
        }
        _ => stack(cfg.num_hidden_layers, batch * len, len),
    };
    let head = picked * (2.0 * d * d + 2.0 * d * v);
    Ok(3.0 * (blocks + head))
}

/// MAE-LM's matmul FLOPs per step over MLM's in repdef: the step ratio at equal efficiency.
fn work_ratio(args: &TrainBenchArgs) -> Result<f64> {
    Ok(step_flops(Objective::MaeLm, args)? / step_flops(Objective::Mlm, args)?)
}

/// The machine's f32 peak as assumed here: threads × clock × SIMD lanes × 2 FMA units × 2.
pub(crate) struct Peak {
    threads: usize,
    ghz: f64,
    lanes: usize,
    simd: &'static str,
}

impl Peak {
    pub(crate) fn detect(threads: usize) -> Self {
        let ghz = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| info.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse::<f64>().ok())
            .map_or(2.0, |mhz| mhz / 1000.0);
        #[cfg(target_arch = "x86_64")]
        let (lanes, simd) = if std::arch::is_x86_feature_detected!("avx512f") {
            (16, "AVX-512")
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            (8, "AVX2+FMA")
        } else {
            (4, "SSE")
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (lanes, simd) = (4, "128-bit SIMD");
        Peak { threads, ghz, lanes, simd }
    }

    pub(crate) fn gflops(&self) -> f64 {
        self.threads as f64 * self.ghz * self.lanes as f64 * 2.0 * 2.0
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "peak assumed: {} threads × {:.2} GHz (nominal, /proc/cpuinfo) × {} f32 lanes ({}) × 2 FMA units × 2 = {:.0} GFLOP/s",
            self.threads,
            self.ghz,
            self.lanes,
            self.simd,
            self.gflops()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_spread_gives_the_median_and_the_range() {
        assert_eq!(ratio_spread(&[1.0, 2.0, 0.5]), "1.00× (0.50–2.00)");
        assert_eq!(ratio_spread(&[1.2, 0.8]), "1.00× (0.80–1.20)");
    }

    #[test]
    fn pairs_take_turns_at_going_first_and_keep_each_side_s_result() {
        let order = std::cell::RefCell::new(String::new());
        let side = |name: char, value: u32| {
            let order = &order;
            move || -> Result<u32> {
                order.borrow_mut().push(name);
                Ok(value)
            }
        };
        let results: Vec<(u32, u32)> = (1..=4).map(|pair| run_pair(pair, side('r', 10 * pair as u32), side('p', pair as u32)).unwrap()).collect();
        assert_eq!(order.into_inner(), "rpprrppr", "repdef first in odd pairs, the reference in even ones");
        assert_eq!(results, vec![(10, 1), (20, 2), (30, 3), (40, 4)], "(repdef's, the reference's) whichever ran first");

        let failing = || -> Result<u32> { anyhow::bail!("reference failed") };
        let ran_ours = std::cell::Cell::new(false);
        let ours = || -> Result<u32> {
            ran_ours.set(true);
            Ok(1)
        };
        assert!(run_pair(2, ours, failing).is_err());
        assert!(!ran_ours.get(), "a failing first side stops the pair");
    }

    #[test]
    fn noise_warning_names_a_spread_above_a_quarter() {
        assert_eq!(noise_warning("repdef's mlm ms/step", &[600.0, 620.0, 610.0, 740.0]), None);
        let warning = noise_warning("repdef's mlm ms/step", &[880.0, 1700.0, 1000.0]).unwrap();
        assert!(warning.starts_with("warning: repdef's mlm ms/step varied 1.93× across the pairs (880–1700): the machine was not idle"), "{warning}");
    }

    fn args(preset: Preset, budget: Option<BudgetName>) -> TrainBenchArgs {
        TrainBenchArgs {
            preset,
            budget,
            decoder_layers: None,
            batch_size: 2,
            seq_len: 12,
            vocab_size: 100,
            steps: 1,
            reference: None,
            reference_script: None,
            pairs: 1,
            python: "python3".into(),
        }
    }

    #[test]
    fn the_reference_gets_the_shapes_repdef_times() {
        let flags = |a: &TrainBenchArgs| reference_model_args(a).unwrap().join(" ");
        let quick = flags(&args(Preset::Mini, Some(BudgetName::Quick)));
        assert_eq!(
            quick,
            "--hidden-size 128 --layers 4 --heads 2 --intermediate-size 512 --decoder-layers 2 --relative-buckets 32 \
             --relative-max-distance 128 --decoder-relative"
        );
        assert!(flags(&args(Preset::Mini, None))
            .starts_with("--hidden-size 256 --layers 4 --heads 4 --intermediate-size 1024 --decoder-layers 2 --relative-buckets 0"));
        assert!(!flags(&args(Preset::Mini, None)).contains("--decoder-relative"));
        let one_layer = TrainBenchArgs { decoder_layers: Some(1), ..args(Preset::Mini, Some(BudgetName::Quick)) };
        assert!(flags(&one_layer).contains("--decoder-layers 1 "), "{}", flags(&one_layer));
        assert_eq!(model_config(Objective::Mlm, &one_layer).unwrap().decoder_layers(), 0);
        assert!(model_config(Objective::MaeLm, &TrainBenchArgs { decoder_layers: Some(0), ..args(Preset::Mini, None) }).is_err());
    }

    #[test]
    fn step_flops_count_the_picked_rows_last_blocks_and_maelm_kept_tokens() {
        // Preset tiny: 2 layers, d 64, d_mlp 256; 2 sequences of 12 tokens, round(0.15 · 10) = 2
        // picked each. Per forward, in multiply-adds: a layer's keys and values at all 24 tokens:
        // 24 · 2 · 64² = 196,608; per output row its query, attention over 12 tokens, output
        // projection and MLP: 64² + 2 · 12 · 64 + 64² + 2 · 64 · 256 = 42,496, at 24 rows (first
        // layer) or 4 (last); the head at 4 rows: 4 · (64² + 64 · 100) = 41,984. FLOPs = 2 · MACs,
        // times 3 for backward.
        let args = args(Preset::Tiny, None);
        let macs = 2.0 * 196_608.0 + 28.0 * 42_496.0 + 41_984.0;
        assert_eq!(step_flops(Objective::Mlm, &args).unwrap(), 6.0 * macs);
        // MAE-LM: the encoder's 2 layers over the 20 kept tokens, attending over 10 each:
        // 20 · 2 · 64² + 20 · (64² + 2 · 10 · 64 + 64² + 2 · 64 · 256) = 1,008,640 each; the
        // 1-layer decoder over all 24 tokens, output at the 4 picked: 196,608 + 4 · 42,496; the
        // same head.
        let mae_lm_macs = 2.0 * 1_008_640.0 + 196_608.0 + 4.0 * 42_496.0 + 41_984.0;
        assert_eq!(step_flops(Objective::MaeLm, &args).unwrap(), 6.0 * mae_lm_macs);
        assert!((work_ratio(&args).unwrap() - mae_lm_macs / macs).abs() < 1e-12);
    }
}
