//! Shared set-up for integration tests: a small prepared corpus and a tiny training request.

#![allow(dead_code)] // each test binary uses a different subset

use repdef::config::{Objective, Preset, TrainConfig};
use repdef::data::corpus::{prepare, PrepareOptions};
use repdef::train::TrainRequest;
use std::path::{Path, PathBuf};

/// The first ~8 WikiText articles, prepared with a 400-token vocabulary, in `dir/data`.
pub fn small_corpus(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/wikitext2_valid.txt");
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
