//! Fuzz-style robustness: hundreds of seeded mutations of a checkpoint's weights file, its
//! `config.json`, its tokenizer files and an analysis spec. Loading each must give a model or a
//! clean error that names the damaged file — never a panic.

mod common;

use candle_core::Device;
use common::fixture;
use repdef::checkpoint::load_encoder;
use repdef::rng::Rng;
use repdef::spec::AnalysisSpec;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const MUTATIONS: usize = 200;

/// One random edit of `bytes`: flip a byte, cut the tail, duplicate a slice, or insert a byte
/// from `alphabet` (so that text stays mostly text). Edits favour the first `hot` bytes (a
/// safetensors header, the start of a JSON file), where damage is most varied.
fn mutate(bytes: &[u8], hot: usize, alphabet: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = |rng: &mut Rng, len: usize| if rng.uniform() < 0.8 { rng.below(hot.min(len).max(1)) } else { rng.below(len.max(1)) };
    for _ in 0..1 + rng.below(3) {
        let i = at(rng, out.len());
        match rng.below(4) {
            0 if !out.is_empty() => {
                let last = out.len() - 1;
                out[i.min(last)] ^= 1 << rng.below(8);
            }
            1 => out.truncate(i),
            2 if i < out.len() => {
                let end = (i + 1 + rng.below(16)).min(out.len());
                let slice = out[i..end].to_vec();
                out.splice(i..i, slice);
            }
            _ => out.insert(i.min(out.len()), alphabet[rng.below(alphabet.len())]),
        }
    }
    out
}

/// Loads the encoder in `dir` with panics caught; a failure must name `damaged`. Returns
/// whether the load was refused.
fn assert_loads_or_names(dir: &Path, damaged: &str, case: usize) -> bool {
    let outcome = catch_unwind(AssertUnwindSafe(|| load_encoder(dir, None, &Device::Cpu)));
    match outcome {
        Err(_) => panic!("case {case}: loading a damaged {damaged} panicked"),
        Ok(Ok(_)) => false,
        Ok(Err(error)) => {
            let message = format!("{error:#}");
            assert!(message.contains(damaged), "case {case}: the error does not name {damaged}: {message}");
            true
        }
    }
}

/// Every mutation of `file` in a copy of the tiny BERT dir loads or fails naming the file.
fn fuzz_model_file(file: &str, hot: usize, alphabet: &[u8], seed: u64) -> usize {
    let source = fixture("hf-bert-tiny");
    let original = std::fs::read(source.join(file)).unwrap();
    let mut rng = Rng::new(seed);
    let mut refused = 0;
    for case in 0..MUTATIONS {
        let dir = tempfile::tempdir().unwrap();
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join(file), mutate(&original, hot, alphabet, &mut rng)).unwrap();
        refused += usize::from(assert_loads_or_names(dir.path(), file, case));
    }
    refused
}

const JSON_ALPHABET: &[u8] = b"{}[]\",:0123456789.-eE truefalsnul\\";

#[test]
fn damaged_weights_files_load_or_fail_cleanly() {
    // The header (8-byte length + JSON) is the first ~6 KB of the file.
    let refused = fuzz_model_file("model.safetensors", 6_000, JSON_ALPHABET, 1);
    assert!(refused > MUTATIONS / 2, "most header damage is detected ({refused} of {MUTATIONS})");
}

#[test]
fn damaged_configs_load_or_fail_cleanly() {
    let refused = fuzz_model_file("config.json", 600, JSON_ALPHABET, 2);
    assert!(refused > MUTATIONS / 4, "{refused} of {MUTATIONS}");
}

#[test]
fn damaged_tokenizers_load_or_fail_cleanly() {
    let refused = fuzz_model_file("tokenizer.json", 3_000, JSON_ALPHABET, 3);
    assert!(refused > MUTATIONS / 4, "{refused} of {MUTATIONS}");
}

#[test]
fn damaged_specs_parse_and_resolve_or_fail_cleanly() {
    let original = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("analyses/ci_guard.toml")).unwrap();
    let mut rng = Rng::new(4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    let mut refused = 0;
    for case in 0..MUTATIONS {
        std::fs::write(&path, mutate(&original, original.len(), b"[]=\"'#.,0123456789 \nabcxyz", &mut rng)).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| AnalysisSpec::load(&path, &[]).and_then(AnalysisSpec::resolve)));
        match outcome {
            Err(_) => panic!("case {case}: a damaged spec panicked"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                refused += 1;
                let message = format!("{error:#}");
                assert!(!message.trim().is_empty() && !message.contains("panicked"), "case {case}: {message}");
            }
        }
    }
    assert!(refused > MUTATIONS / 4, "{refused} of {MUTATIONS}");
}
