//! `train --resume` through the real binary: it continues only on the run's own data dir, refuses
//! settings flags that would change the run (naming them), and applies `--steps`.

mod common;

use common::{assert_fails_naming, repdef_in, small_corpus};
use std::path::Path;
use std::process::Output;

fn train(dir: &Path, data: &str, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--data", data, "--out", "run"];
    args.extend_from_slice(extra);
    repdef_in(dir, &args)
}

fn saved_steps(dir: &Path) -> u64 {
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("run/train_config.json")).unwrap()).unwrap();
    config["steps"].as_u64().unwrap()
}

/// A 2-step tiny run in `dir/run` on `dir/data`.
fn tiny_run(dir: &Path) {
    small_corpus(dir);
    let fresh = ["--objective", "mlm", "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--seq-len", "32", "--set", "eval_sequences=8"];
    let output = train(dir, "data", &fresh);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The first `lines` lines of the small corpus.
fn head(dir: &Path, lines: usize) -> String {
    std::fs::read_to_string(dir.join("small.txt")).unwrap().lines().take(lines).map(|l| format!("{l}\n")).collect()
}

/// Prepares `dir/NAME` from `text`, with `extra` prepare flags.
fn prepare(dir: &Path, name: &str, text: &str, extra: &[&str]) {
    std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    let input = format!("{name}.txt");
    let mut args = vec!["prepare", "--input", &input, "--out", name, "--holdout-frac", "0.25"];
    args.extend_from_slice(extra);
    let output = repdef_in(dir, &args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn resume_refuses_changed_settings_by_name_and_extends_with_steps() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    tiny_run(dir);
    let config_before = std::fs::read(dir.join("run/train_config.json")).unwrap();
    let refused = train(dir, "data", &["--resume", "--lr", "0.5", "--seed", "3", "--objective", "mae-lm", "--set", "model.hidden_act=relu"]);
    assert_fails_naming(&refused, &["train_config.json", "lr", "seed", "objective", "model.hidden_act", "--steps"]);
    assert_fails_naming(&train(dir, "data", &["--resume", "--preset", "base"]), &["preset"]);
    assert_eq!(std::fs::read(dir.join("run/train_config.json")).unwrap(), config_before, "a refused resume changed the run");

    let same = train(dir, "data", &["--resume", "--objective", "mlm", "--preset", "tiny"]);
    assert!(same.status.success(), "flags equal to the saved settings are accepted: {}", String::from_utf8_lossy(&same.stderr));
    let extended = train(dir, "data", &["--resume", "--steps", "4"]);
    assert!(extended.status.success(), "{}", String::from_utf8_lossy(&extended.stderr));
    assert!(String::from_utf8_lossy(&extended.stdout).contains("step 4"));
    assert_eq!(saved_steps(dir), 4);
    assert_fails_naming(&train(dir, "data", &["--resume", "--steps", "3"]), &["--steps 3", "already at step 4"]);
}

#[test]
fn resume_refuses_a_data_dir_other_than_the_runs_and_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    tiny_run(dir);
    let state_before = std::fs::read(dir.join("run/train_state.json")).unwrap();
    prepare(dir, "other-tokenizer", &head(dir, 500), &["--vocab-size", "300"]);
    assert_fails_naming(&train(dir, "other-tokenizer", &["--resume", "--steps", "4"]), &["other-tokenizer/tokenizer.json", "--data"]);
    prepare(dir, "smaller", &head(dir, 130), &["--tokenizer", "data/tokenizer.json"]);
    assert_fails_naming(&train(dir, "smaller", &["--resume", "--steps", "4"]), &["smaller/meta.json", "data_meta.json", "n_tokens_train"]);
    // A run made before data_meta.json existed: the epoch position still exposes the smaller corpus.
    std::fs::remove_file(dir.join("run/data_meta.json")).unwrap();
    let words: Vec<String> = head(dir, 4).split_whitespace().take(40).map(String::from).collect();
    let short = format!(" = A = \n{}\n", words.join(" "));
    prepare(dir, "tiniest", &format!("{short}{}", short.replace("= A =", "= B =")), &["--tokenizer", "data/tokenizer.json"]);
    assert_fails_naming(&train(dir, "tiniest", &["--resume", "--steps", "4"]), &["train_state.json", "--data"]);
    assert_eq!(std::fs::read(dir.join("run/train_state.json")).unwrap(), state_before, "a refused resume rewrote the state");
}
