//! Shared set-up for integration tests: a small prepared corpus, a tiny training request, and
//! running the real binary.

#![allow(dead_code)] // each test binary uses a different subset

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use repdef::checkpoint::{assign_varmap, read_model_weights, TensorFile, CONFIG_FILE};
use repdef::config::{ModelConfig, Objective, Preset, TrainConfig};
use repdef::data::corpus::{prepare, PrepareOptions};
use repdef::model::PretrainingModel;
use repdef::train::TrainRequest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Copies the dir `from`, with everything in it, to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

/// The checkpoint in `dir` as a trainable model in a fresh VarMap, dropout off (for comparing
/// losses and gradients with a reference).
pub fn trainable_model(dir: &Path) -> (VarMap, PretrainingModel) {
    let mut config = ModelConfig::load(&dir.join(CONFIG_FILE)).unwrap();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let varmap = VarMap::new();
    let model = PretrainingModel::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &config).unwrap();
    let (tensors, source) = read_model_weights(dir, &Device::Cpu).unwrap();
    assign_varmap(&varmap, &TensorFile { tensors, metadata: HashMap::new() }, &source).unwrap();
    (varmap, model)
}

/// Runs the real binary with `args` in the working directory `cwd`.
pub fn repdef_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repdef")).current_dir(cwd).args(args).output().unwrap()
}

/// Asserts failure with exit code 2 (usage or input error) and a single `error:` line on stderr
/// containing every `needle`.
pub fn assert_fails_naming(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "expected exit code 2; stderr: {stderr}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line, got: {stderr}");
    for needle in needles {
        assert!(error_lines[0].contains(needle), "error {:?} does not mention {needle:?}", error_lines[0]);
    }
}

/// A copy of the tiny HF BERT dir in `dir/bert` that a test may damage.
pub fn copy_of_bert(dir: &Path) -> PathBuf {
    let copy = dir.join("bert");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("hf-bert-tiny").join(name), copy.join(name)).unwrap();
    }
    copy
}

/// The first ~8 WikiText articles, prepared with a 400-token vocabulary, in `dir/data`.
pub fn small_corpus(dir: &Path) -> PathBuf {
    let source = fixture("corpus/wikitext2_valid.txt");
    let text: String = std::fs::read_to_string(source).unwrap().lines().take(500).map(|l| format!("{l}\n")).collect();
    let input = dir.join("small.txt");
    std::fs::write(&input, text).unwrap();
    let out = dir.join("data");
    let options = PrepareOptions { vocab_size: 400, holdout_frac: 0.25, ..PrepareOptions::new(vec![input], out.clone()) };
    prepare(&options).unwrap();
    out
}

/// A tiny, fast training request (no dropout so runs are easy to compare).
pub fn tiny_request(data_dir: &Path, out: &Path, objective: Objective, steps: u64) -> TrainRequest {
    let mut config = TrainConfig::defaults(objective, Preset::Tiny, Some(steps));
    config.batch_size = 4;
    config.seq_len = 32;
    config.log_every = 1;
    config.eval_sequences = 8;
    TrainRequest {
        data_dir: data_dir.to_path_buf(),
        out: out.to_path_buf(),
        config,
        model_overrides: vec![],
        decoder_layers: None,
        resume: false,
        stop_at: None,
    }
}
