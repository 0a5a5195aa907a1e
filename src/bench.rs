//! `repdef bench train`: training-step speed of MLM and MAE-LM at a preset, on random tokens,
//! printed as ms/step and tokens/s, with ratios against a PyTorch reference measured by
//! `bench/train_reference.py` on the same machine (see `bench/README.md` for the protocol).

use crate::config::{MaskConfig, Objective, Preset};
use crate::data::masking::Masker;
use crate::data::tokenizer::SpecialIds;
use crate::model::{init, Ctx, PretrainingModel};
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
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// Timed steps per objective (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// JSON from `bench/train_reference.py` (`{"mlm": ms_per_step, "mae-lm": ms_per_step, ...}`).
    #[arg(long)]
    reference: Option<PathBuf>,
}

const SPECIAL: SpecialIds = SpecialIds { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 };

/// CPU seconds used so far by all threads of this process (Linux `/proc`; `None` elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Mean wall and CPU milliseconds per full training step (mask, forward, backward, AdamW update).
fn time_steps(objective: Objective, args: &TrainBenchArgs) -> Result<(f64, Option<f64>)> {
    let device = Device::Cpu;
    let model_config = args.preset.model_config(args.vocab_size, &SPECIAL, objective, MaskConfig::default());
    let varmap = VarMap::new();
    let model = PretrainingModel::load(VarBuilder::from_varmap(&varmap, DType::F32, &device), &model_config)?;
    let mut rng = Rng::new(0);
    init::initialize(&varmap, 0.02, &mut rng)?;
    let mut optimizer = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.01 })?;
    let masker = Masker { config: MaskConfig::default(), special: SPECIAL, vocab_size: args.vocab_size, drop_picked: objective == Objective::MaeLm };
    let rows: Vec<Vec<u32>> = (0..args.batch_size)
        .map(|_| {
            let mut row: Vec<u32> = (0..args.seq_len).map(|_| 5 + rng.below(args.vocab_size - 5) as u32).collect();
            row[0] = SPECIAL.cls;
            row[args.seq_len - 1] = SPECIAL.sep;
            row
        })
        .collect();
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let mut total = 0.0;
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
            total += start.elapsed().as_secs_f64();
        }
    }
    let cpu = cpu_start.zip(process_cpu_seconds()).map(|(a, b)| 1000.0 * (b - a) / args.steps as f64);
    Ok((1000.0 * total / args.steps as f64, cpu))
}

pub fn bench_train(args: &TrainBenchArgs) -> Result<()> {
    let reference: Option<HashMap<String, serde_json::Value>> = match &args.reference {
        Some(path) => Some(crate::fsutil::read_json(path).context("reading the PyTorch reference timings")?),
        None => None,
    };
    let tokens = (args.batch_size * args.seq_len) as f64;
    println!("preset {:?}, batch {} × {} tokens, vocab {}, {} timed steps", args.preset, args.batch_size, args.seq_len, args.vocab_size, args.steps);
    println!("{:<8} {:>10} {:>10} {:>14} {:>14}", "objective", "ms/step", "tokens/s", "vs PyTorch", "CPU ms/step");
    for (objective, key) in [(Objective::Mlm, "mlm"), (Objective::MaeLm, "mae-lm")] {
        let (ms, cpu_ms) = time_steps(objective, args)?;
        let ratio = reference.as_ref().and_then(|r| r.get(key)?.as_f64()).map_or("-".to_string(), |reference_ms| format!("{:.2}× speed", reference_ms / ms));
        let cpu_ms = cpu_ms.map_or("-".to_string(), |c| format!("{c:.0}"));
        println!("{key:<8} {ms:>10.1} {:>10.0} {ratio:>14} {cpu_ms:>14}", tokens / (ms / 1000.0));
    }
    Ok(())
}
