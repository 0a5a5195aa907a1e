//! repdef: train MLM and MAE-LM encoders, extract per-layer hidden states, and measure how many
//! dimensions they use for real vs `[MASK]` tokens (Meng et al., ICLR 2024). See the README's codemap.

pub mod analysis;
pub mod bench;
pub mod bench_analysis;
pub mod bundled;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod extract;
pub mod finetune;
pub mod fingerprint;
pub mod fsutil;
pub mod hf_cache;
pub mod hidden_states;
pub mod inspect;
pub mod model;
pub mod outdir;
pub mod panic_guard;
pub mod progress;
pub mod rank;
pub mod report;
pub mod reproduce;
pub mod rng;
pub mod spec;
pub mod stats;
pub mod train;
pub mod vectorize;
