//! The real binary on bad input: a clear one-line error naming the file, a non-zero exit, and
//! no output file left behind. Plus the happy path of `hidden-states` and `inspect`.

use repdef::checkpoint::{read_safetensors, write_safetensors};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repdef(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repdef")).args(args).output().unwrap()
}

/// Asserts failure with a single `error:` line on stderr containing every `needle`.
fn assert_fails_naming(output: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure, got success; stderr: {stderr}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "expected one error line, got: {stderr}");
    for needle in needles {
        assert!(error_lines[0].contains(needle), "error {:?} does not mention {needle:?}", error_lines[0]);
    }
}

fn bert_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf-bert-tiny")
}

/// A copy of the tiny HF BERT dir that a test may damage.
fn copy_of_bert(dir: &Path) -> PathBuf {
    let copy = dir.join("bert");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(bert_fixture().join(name), copy.join(name)).unwrap();
    }
    copy
}

fn hidden_states(model: &Path, out: &Path) -> Output {
    repdef(&["hidden-states", "--model", model.to_str().unwrap(), "--text", "the lobster is blue .", "--out", out.to_str().unwrap()])
}

#[test]
fn empty_and_non_utf8_corpora_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let out = dir.path().join("data");
    assert_fails_naming(&repdef(&["prepare", "--input", empty.to_str().unwrap(), "--out", out.to_str().unwrap()]), &["empty.txt"]);
    let binary = dir.path().join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait\n").unwrap();
    assert_fails_naming(&repdef(&["prepare", "--input", binary.to_str().unwrap(), "--out", out.to_str().unwrap()]), &["latin1.txt", "UTF-8"]);
    assert!(!out.join("meta.json").exists());
}

#[test]
fn corrupt_checkpoint_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_of_bert(dir.path());
    std::fs::write(model.join("model.safetensors"), b"definitely not safetensors").unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "not a valid safetensors"]);
    assert!(!out.exists());
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_of_bert(dir.path());
    let weights = model.join("model.safetensors");
    let mut file = read_safetensors(&weights, &candle_core::Device::Cpu).unwrap();
    file.tensors.remove("bert.encoder.layer.1.output.dense.weight");
    write_safetensors(&weights, &file.tensors, &[]).unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "bert.encoder.layer.1.output.dense.weight"]);

    let model = copy_of_bert(&dir.path().join("second"));
    let config_path = model.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&config_path, config).unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "shape"]);
    assert!(!out.exists());
}

#[test]
fn missing_model_dir_and_tokenizer_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&dir.path().join("nowhere"), &out), &["nowhere", "config.json"]);
    let model = copy_of_bert(dir.path());
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["tokenizer.json"]);
}

#[test]
fn hidden_states_and_inspect_work_on_a_hf_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hs.safetensors");
    let output = hidden_states(&bert_fixture(), &out);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = read_safetensors(&out, &candle_core::Device::Cpu).unwrap();
    for name in ["hook_full_embed", "blocks.0.hook_normalized_resid_post", "blocks.1.hook_normalized_resid_post", "input_ids"] {
        assert!(saved.tensors.contains_key(name), "missing {name}");
    }
    // "[CLS] the lo ##b ##st ##er is bl ##ue . [SEP]": 11 tokens of width 32.
    assert_eq!(saved.tensors["hook_full_embed"].dims(), &[1, 11, 32]);

    let inspect = repdef(&["inspect", bert_fixture().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success());
    assert!(stdout.contains("2 layers × d_model 32") && stdout.contains("bert.encoder.layer.0.attention.self.query.weight"), "{stdout}");
}

#[test]
fn plot_and_report_name_a_dir_that_is_not_an_analysis() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["plot", "report"] {
        assert_fails_naming(&repdef(&[command, dir.path().to_str().unwrap()]), &["manifest.json"]);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}
