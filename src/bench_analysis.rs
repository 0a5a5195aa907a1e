//! `repdef bench analyze`: end-to-end analysis speed and peak memory of a random-init model (the
//! `mini` preset, or all-MiniLM-L6-v2's shape) on random tokens — both conditions' forward
//! passes, Gram accumulation, spectra and estimators — for several token counts. Each count runs
//! in a fresh child process so that its peak RSS is its own; memory must stay flat as tokens grow.
//! Ratios are printed against `bench/analyze_reference.py` (transformers + numpy, streamed Gram or
//! SVD), see `bench/ANALYZE.md`.

use crate::analysis::tables::compute;
use crate::bench::Peak;
use crate::config::{MaskConfig, Objective, Preset};
use crate::data::packing::PackedSequences;
use crate::data::tokenizer::SpecialIds;
use crate::extract::{accumulate, Accumulators, ModelRun};
use crate::model::{init, Encoder, Tap};
use crate::rank::{Estimator, GramAccumulator};
use crate::rng::Rng;
use crate::spec::Centring;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// The model the analysis benchmark runs (random-init BERT, vocab 8192).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AnalysisShape {
    /// repdef's `mini` preset: 4 layers, d_model 256, 4 heads, d_mlp 1024.
    Mini,
    /// all-MiniLM-L6-v2's shape: 6 layers, d_model 384, 12 heads, d_mlp 1536.
    Minilm,
}

impl AnalysisShape {
    /// (layers, d_model, heads, d_mlp).
    fn dims(self) -> (usize, usize, usize, usize) {
        match self {
            AnalysisShape::Mini => (4, 256, 4, 1024),
            AnalysisShape::Minilm => (6, 384, 12, 1536),
        }
    }
}

/// The reference script's route from hidden states to spectra (`--route` of
/// `bench/analyze_reference.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceRoute {
    /// Streamed float64 Gram matrices, then `eigvalsh`: flat memory, the cheaper way.
    Gram,
    /// Every row kept, then one SVD per group: memory grows with the tokens.
    Svd,
}

/// The name clap gives `value` on the command line (the child process and the reference script
/// are passed the same spelling).
fn cli_name(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_owned()).expect("no enum value is skipped")
}

#[derive(clap::Args)]
pub struct AnalyzeBenchArgs {
    /// The model's shape (both sides).
    #[arg(long, value_enum, default_value = "mini")]
    shape: AnalysisShape,
    /// Token counts to measure, each in its own process.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000], value_parser = clap::value_parser!(u64).range(1..))]
    tokens: Vec<u64>,
    #[arg(long, default_value_t = 32, value_parser = crate::bench::at_least(1))]
    batch_size: usize,
    /// Directory with `reference_analyze_<tokens>.json` files from `bench/analyze_reference.py`.
    #[arg(long, conflicts_with = "reference_script")]
    reference_dir: Option<PathBuf>,
    /// Run this reference script (`bench/analyze_reference.py`) alternately with repdef,
    /// `--pairs` times per token count, and report the median of the per-pair ratios with their
    /// range (the protocol).
    #[arg(long)]
    reference_script: Option<PathBuf>,
    #[arg(long, default_value_t = 5, value_parser = crate::bench::at_least(1))]
    pairs: usize,
    /// The reference's route to the spectra.
    #[arg(long, value_enum, default_value = "gram")]
    route: ReferenceRoute,
    /// The Python that runs the reference script.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Run a single measurement in this process and print it as JSON (used by the parent).
    #[arg(long, hide = true)]
    single: bool,
}

#[derive(Serialize, Deserialize)]
struct Measurement {
    tokens: u64,
    seconds: f64,
    peak_rss_mib: f64,
    /// repdef's side only: the rows added to all Gram accumulators (a row once per group it is
    /// in), for [`analysis_flops`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gram_rows: Option<u64>,
}

/// What the GFLOP/s column counts, printed under the tables.
const FLOPS_COUNTED: &str = "FLOPs: both conditions' encoder matmuls (f32) and one lower-triangle update per row of each Gram \
                             matrix (f64), the work of the reference's Gram route; % of the f32 peak";

/// FLOPs of one measurement: both conditions' encoder passes over `tokens` (the projections,
/// the MLP, and attention's two products over the sequence) and one lower-triangle update per
/// Gram row, d(d+1)/2 multiply-adds each, as the reference's `syrk` does them. repdef's exact
/// accumulator does more (three products per row of each atom, `bench/ANALYZE.md`), so this is
/// the rate at which the analysis gets done, not the rate of repdef's own arithmetic.
fn analysis_flops(shape: AnalysisShape, tokens: u64, gram_rows: u64) -> f64 {
    let (layers, d, _, d_mlp) = shape.dims();
    let (d, d_mlp, seq) = (d as f64, d_mlp as f64, SEQ_LEN as f64);
    let forward_macs_per_token = layers as f64 * (4.0 * d * d + 2.0 * d * d_mlp + 2.0 * seq * d);
    2.0 * (2.0 * tokens as f64 * forward_macs_per_token + gram_rows as f64 * d * (d + 1.0) / 2.0)
}

/// Tokens/s, GFLOP/s and % of `peak` of repdef's `measurement` taking `seconds`.
fn rates(shape: AnalysisShape, measurement: &Measurement, seconds: f64, peak: &Peak) -> Result<(f64, f64, f64)> {
    let gram_rows = measurement.gram_rows.context("repdef's measurement lacks its Gram row count")?;
    let gflops = analysis_flops(shape, measurement.tokens, gram_rows) / seconds / 1e9;
    Ok((measurement.tokens as f64 / seconds, gflops, 100.0 * gflops / peak.gflops()))
}

const SEQ_LEN: usize = 128;
/// Tokens of the untimed run of each side before the alternating pairs.
const WARM_UP_TOKENS: u64 = 2048;
const VOCAB: usize = 8192;

pub fn bench_analyze(args: &AnalyzeBenchArgs) -> Result<()> {
    if args.single {
        let measurement = measure(args.tokens[0], args.batch_size, args.shape)?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(());
    }
    let (layers, d_model, heads, _) = args.shape.dims();
    println!(
        "analysis of a random-init {} model ({layers} layers × {d_model}, {heads} heads), {SEQ_LEN}-token sequences, batch {}",
        cli_name(args.shape),
        args.batch_size
    );
    let peak = Peak::detect(rayon::current_num_threads());
    println!("{}", peak.describe());
    if let Some(script) = &args.reference_script {
        return bench_pairs(args, script, &peak);
    }
    println!("{:>10} {:>10} {:>12} {:>9} {:>8} {:>14} {:>22}", "tokens", "seconds", "tokens/s", "GFLOP/s", "of peak", "peak RSS MiB", "vs reference");
    for &tokens in &args.tokens {
        let m = run_child(tokens, args)?;
        let (rate, gflops, of_peak) = rates(args.shape, &m, m.seconds, &peak)?;
        let comparison = match reference(args, tokens)? {
            Some(r) => format!("{:.2}× speed, {:.2}× mem", rate / (r.tokens as f64 / r.seconds), r.peak_rss_mib / m.peak_rss_mib),
            None => "-".into(),
        };
        println!("{:>10} {:>10.2} {rate:>12.0} {gflops:>9.1} {of_peak:>7.1}% {:>14.0} {comparison:>22}", m.tokens, m.seconds, m.peak_rss_mib);
    }
    println!("{FLOPS_COUNTED}");
    Ok(())
}

/// The alternating protocol: after one untimed run of each side, per token count `--pairs`
/// rounds of repdef (in a fresh process) and the reference script, each first in turn
/// ([`crate::bench::run_pair`]); the median of the per-pair speed and memory ratios with their
/// range.
fn bench_pairs(args: &AnalyzeBenchArgs, script: &std::path::Path, peak: &Peak) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!("{} threads on both sides, reference route {}, {} alternating pairs per token count", threads, cli_name(args.route), args.pairs);
    let run_reference = |tokens: u64| -> Result<Measurement> {
        let flags = [
            ("--tokens", tokens.to_string()),
            ("--batch-size", args.batch_size.to_string()),
            ("--seq-len", SEQ_LEN.to_string()),
            ("--threads", threads.to_string()),
            ("--route", cli_name(args.route)),
        ];
        let mut script_args: Vec<String> = flags.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect();
        script_args.extend(reference_shape_args(args.shape));
        crate::bench::run_reference_script(&args.python, script, &script_args)
    };
    // Untimed: the first run of each side pays for cold file caches (the binary, Python's
    // imports) and a CPU that has not yet clocked up.
    eprintln!("warm-up: one untimed run of each side at {WARM_UP_TOKENS} tokens");
    run_child(WARM_UP_TOKENS, args)?;
    run_reference(WARM_UP_TOKENS)?;
    println!(
        "{:>10} {:>10} {:>10} {:>22} {:>10} {:>9} {:>8} {:>11} {:>11} {:>22}",
        "tokens", "repdef s", "ref s", "speed ratio (min–max)", "tokens/s", "GFLOP/s", "of peak", "repdef MiB", "ref MiB", "memory ratio (min–max)"
    );
    for &tokens in &args.tokens {
        let mut pairs: Vec<(Measurement, Measurement)> = Vec::with_capacity(args.pairs);
        for pair in 1..=args.pairs {
            let (ours, theirs) = crate::bench::run_pair(pair, || run_child(tokens, args), || run_reference(tokens))?;
            ensure!(theirs.tokens == ours.tokens, "{}: {} tokens, repdef measured {}", script.display(), theirs.tokens, ours.tokens);
            eprintln!("{tokens} tokens, pair {pair}/{}: repdef {:.2} s, reference {:.2} s", args.pairs, ours.seconds, theirs.seconds);
            pairs.push((ours, theirs));
        }
        let column = |f: fn(&(Measurement, Measurement)) -> f64| -> Vec<f64> { pairs.iter().map(f).collect() };
        let speed = column(|(ours, theirs)| theirs.seconds / ours.seconds);
        let memory = column(|(ours, theirs)| theirs.peak_rss_mib / ours.peak_rss_mib);
        let (our_seconds, their_seconds) = (column(|p| p.0.seconds), column(|p| p.1.seconds));
        let (seconds, reference_seconds) = (crate::bench::median(&our_seconds), crate::bench::median(&their_seconds));
        let (mib, reference_mib) = (crate::bench::median(&column(|p| p.0.peak_rss_mib)), crate::bench::median(&column(|p| p.1.peak_rss_mib)));
        let (rate, gflops, of_peak) = rates(args.shape, &pairs[0].0, seconds, peak)?;
        println!(
            "{:>10} {seconds:>10.2} {reference_seconds:>10.2} {:>22} {rate:>10.0} {gflops:>9.1} {of_peak:>7.1}% {mib:>11.0} {reference_mib:>11.0} {:>22}",
            pairs[0].0.tokens,
            crate::bench::ratio_spread(&speed),
            crate::bench::ratio_spread(&memory)
        );
        for (side, times) in [("repdef", &our_seconds), ("the reference", &their_seconds)] {
            crate::bench::noise_warning(&format!("{side}'s seconds at {tokens} tokens"), times).into_iter().for_each(|warning| println!("{warning}"));
        }
    }
    println!("ratios = reference / repdef per pair (above 1: repdef is faster / leaner); tokens/s and GFLOP/s: repdef's median; peak RSS of the whole process");
    println!("{FLOPS_COUNTED}");
    Ok(())
}

/// The reference script's arguments for the model `shape`.
fn reference_shape_args(shape: AnalysisShape) -> Vec<String> {
    let (layers, d_model, heads, d_mlp) = shape.dims();
    [("--layers", layers), ("--hidden-size", d_model), ("--heads", heads), ("--intermediate-size", d_mlp)]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

fn run_child(tokens: u64, args: &AnalyzeBenchArgs) -> Result<Measurement> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args(["bench", "analyze", "--single", "--tokens", &tokens.to_string(), "--batch-size", &args.batch_size.to_string()])
        .args(["--shape", &cli_name(args.shape)])
        .output()
        .context("running the measurement child process")?;
    if !output.status.success() {
        bail!("measurement for {tokens} tokens failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("parsing the child's measurement")
}

fn reference(args: &AnalyzeBenchArgs, tokens: u64) -> Result<Option<Measurement>> {
    let Some(dir) = &args.reference_dir else { return Ok(None) };
    let path = dir.join(format!("reference_analyze_{tokens}.json"));
    if !path.exists() {
        return Ok(None);
    }
    crate::fsutil::read_json(&path).map(Some)
}

fn measure(tokens: u64, batch_size: usize, shape: AnalysisShape) -> Result<Measurement> {
    let device = Device::Cpu;
    let mut config = Preset::Mini.model_config(VOCAB, &SpecialIds::REPDEF, Objective::Mlm, MaskConfig::default());
    (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) = shape.dims();
    config.initializer_range = init::width_scaled_std(config.hidden_size);
    let varmap = VarMap::new();
    Encoder::load(VarBuilder::from_varmap(&varmap, DType::F32, &device).pp("bert"), &config)?;
    let mut rng = Rng::new(0);
    init::initialize(&varmap, config.initializer_range, &mut rng)?;
    // Plain tensors, as a loaded checkpoint gives: with trainable variables candle would record
    // every op of the forward for a backward that never comes.
    let weights = varmap.data().lock().expect("VarMap lock poisoned").iter().map(|(name, var)| (name.clone(), var.as_detached_tensor())).collect();
    let encoder = Encoder::load(VarBuilder::from_tensors(weights, DType::F32, &device).pp("bert"), &config)?;
    let n_seqs = tokens.div_ceil(SEQ_LEN as u64) as usize;
    let stream: Vec<u32> = (0..n_seqs * (SEQ_LEN - 2)).map(|_| 5 + rng.below(VOCAB - 5) as u32).collect();
    let sequences = PackedSequences::from_stream(&stream, SEQ_LEN, SpecialIds::REPDEF.cls, SpecialIds::REPDEF.sep)?;
    let selected: Vec<usize> = (0..sequences.len()).collect();
    let taps = Tap::encoder_taps(config.num_hidden_layers);
    let label = cli_name(shape);
    let run = ModelRun { label: &label, config: &config, encoder: &encoder, taps: &taps, special: SpecialIds::REPDEF, mask_prob: 0.15, seed: 0 };

    let start = Instant::now();
    let mut accumulators = Accumulators::new();
    let seen = accumulate(&run, &sequences, &selected, batch_size, &device, &mut accumulators, |_| ())?;
    compute(&accumulators, &[Estimator::PAPER], &[Centring::Uncentred])?;
    let seconds = start.elapsed().as_secs_f64();
    let gram_rows = accumulators.values().map(GramAccumulator::n_tokens).sum();
    Ok(Measurement { tokens: seen, seconds, peak_rss_mib: peak_rss_mib()?, gram_rows: Some(gram_rows) })
}

/// Peak resident set size of this process (Linux `VmHWM`).
fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_gets_the_shape_repdef_measures() {
        assert_eq!(reference_shape_args(AnalysisShape::Minilm).join(" "), "--layers 6 --hidden-size 384 --heads 12 --intermediate-size 1536");
        // The script's defaults are `mini`.
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/analyze_reference.py")).unwrap();
        for pair in reference_shape_args(AnalysisShape::Mini).chunks(2) {
            let default = format!("\"{}\", type=int, default={})", pair[0], pair[1]);
            assert!(script.contains(&default), "analyze_reference.py lacks {default}");
        }
    }

    #[test]
    fn the_reference_script_takes_every_route_and_shape_by_repdef_s_names() {
        use clap::ValueEnum;
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/analyze_reference.py")).unwrap();
        let routes: Vec<String> = ReferenceRoute::value_variants().iter().map(|&route| format!("{:?}", cli_name(route))).collect();
        let choices = format!("choices=[{}], default=\"gram\"", routes.join(", "));
        assert!(script.contains(&choices), "analyze_reference.py's --route lacks {choices}");
        let shapes: Vec<String> = AnalysisShape::value_variants().iter().map(|&shape| cli_name(shape)).collect();
        assert_eq!(shapes, ["mini", "minilm"], "the names bench/ANALYZE.md documents");
    }

    #[test]
    fn a_small_measurement_accumulates_every_token_of_whole_sequences() {
        let m = measure(200, 4, AnalysisShape::Mini).unwrap();
        assert_eq!(m.tokens, 2 * SEQ_LEN as u64);
        assert!(m.seconds > 0.0 && m.peak_rss_mib > 0.0);
        // Per tap (embeddings + 4 layers) the groups are masked/all, clean/all (n each),
        // masked/real and clean/real (the same unpicked positions) and masked/mask (the picked
        // ones); real + mask = n − 4 (`[CLS]` and `[SEP]` of 2 sequences).
        let (taps, n) = (5, m.tokens);
        let gram_rows = m.gram_rows.unwrap();
        assert_eq!(gram_rows % taps, 0, "{gram_rows}");
        let real = gram_rows / taps - 3 * n + 4;
        let mask = n - 4 - real;
        assert!((25..=50).contains(&mask), "{mask} picked of 252, expected ~15%");
    }

    #[test]
    fn analysis_flops_count_both_forwards_and_one_gram_triangle_per_row() {
        // `mini`: per token and layer 4·256² + 2·256·1024 + 2·128·256 = 851,968 multiply-adds,
        // × 4 layers × 2 conditions × 256 tokens × 2 FLOPs = 3,489,660,928; the Gram rows
        // 4,890 × 256·257/2 multiply-adds × 2 = 321,722,880.
        assert_eq!(analysis_flops(AnalysisShape::Mini, 256, 4890), 3_811_383_808.0);
    }
}
