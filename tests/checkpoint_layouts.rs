//! Model directories as people have them, through the real binary: vocab-only tokenizers (a BERT
//! `vocab.txt`, also one level up; a RoBERTa `vocab.json` + `merges.txt`), `pytorch_model.bin`
//! weights, `--tokenizer`, `hf:` ids in a local HuggingFace cache, and pickles that are not state
//! dicts. Hidden states are compared with what `transformers` computed for the same weights
//! (`fixtures/golden/make_golden.py`); the vocab-only layouts come from `make_vocab_layouts.py`.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{assert_fails_naming, fixture};
use repdef::checkpoint::read_safetensors;
use repdef::model::Tap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOLERANCE: f32 = 1e-4;
/// The golden inputs' first two sentences are single sentences (the third is a pair).
const SENTENCES: usize = 2;

fn repdef(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_repdef"));
    command.args(args).env_remove("HF_HUB_CACHE").env_remove("HF_HOME");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn assert_success(output: &Output) {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

fn copy_files(from: &Path, names: &[&str], to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in names {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// Runs `repdef hidden-states` on the first golden sentences of `golden` (`bert`, `roberta`,
/// or a family golden made from BERT's inputs: `distilbert`, `electra_discriminator`) with
/// `model_args`, and requires the token ids and every layer's hidden states of the real tokens
/// to equal what `transformers` computed.
fn assert_hidden_states_match_transformers(golden: &str, model_args: &[&str], env: &[(&str, &Path)]) {
    let inputs_of = if golden == "roberta" { "roberta" } else { "bert" };
    let inputs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture(&format!("golden/{inputs_of}_tiny_inputs.json"))).unwrap()).unwrap();
    let sentences: Vec<&str> = (0..SENTENCES).map(|i| inputs["sentences"][i][0].as_str().unwrap()).collect();
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("hidden.safetensors");
    let mut args = vec!["hidden-states"];
    args.extend_from_slice(model_args);
    for sentence in &sentences {
        args.extend(["--text", sentence]);
    }
    args.extend(["--out", out_file.to_str().unwrap()]);
    assert_success(&repdef(&args, env));

    let got = read_safetensors(&out_file, &Device::Cpu).unwrap().tensors;
    let want = read_safetensors(&fixture(&format!("golden/{golden}_tiny_golden.safetensors")), &Device::Cpu).unwrap().tensors;
    let rows = |t: &Tensor| t.narrow(0, 0, SENTENCES).unwrap();
    assert_eq!(ids(&got["input_ids"]), ids(&rows(&want["input_ids"])), "{golden}: token ids");
    let mask = ids(&got["attention_mask"]);
    assert_eq!(mask, ids(&rows(&want["attention_mask"])));
    for tap in Tap::encoder_taps(2) {
        let got: Vec<f32> = got[&tap.to_string()].flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = rows(&want[&format!("hidden_states.{}", tap.hf_index().unwrap())]).flatten_all().unwrap().to_vec1().unwrap();
        let d = got.len() / mask.len();
        let worst = got.iter().zip(&want).enumerate().filter(|(i, _)| mask[i / d] == 1).map(|(_, (g, w))| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst < TOLERANCE, "{golden} {tap}: max diff {worst}");
    }
}

/// `root/vocab.txt` (+ its tokenizer_config.json) and `root/checkpoint-500/` holding only
/// `config.json` and `pytorch_model.bin`: a BERT run exported by older transformers versions.
fn bert_with_vocab_one_level_up(root: &Path) -> PathBuf {
    let source = fixture("hf-bert-vocab");
    copy_files(&source, &["vocab.txt", "tokenizer_config.json"], root);
    let model = root.join("checkpoint-500");
    copy_files(&source, &["config.json", "pytorch_model.bin"], &model);
    model
}

#[test]
fn bert_with_vocab_txt_and_pytorch_bin_matches_transformers_in_hidden_states_and_analyze() {
    assert_hidden_states_match_transformers("bert", &["--model", fixture("hf-bert-vocab").to_str().unwrap()], &[]);
    let root = tempfile::tempdir().unwrap();
    let model = bert_with_vocab_one_level_up(root.path());
    assert_hidden_states_match_transformers("bert", &["--model", model.to_str().unwrap()], &[]);

    let out = root.path().join("analysis");
    let model_arg = format!("BERT={}", model.display());
    let corpus = fixture("corpus/wikitext2_valid.txt");
    let args = ["analyze", "--model", &model_arg, "--data", corpus.to_str().unwrap(), "--tokens", "256", "--seq-len", "32", "--out", out.to_str().unwrap()];
    assert_success(&repdef(&args, &[]));
    let ranks = std::fs::read_to_string(out.join("ranks.csv")).unwrap();
    assert!(ranks.lines().filter(|l| l.starts_with("BERT,")).count() > 10, "{ranks}");
}

#[test]
fn roberta_with_vocab_json_and_merges_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    copy_files(&fixture("hf-roberta-tiny"), &["config.json", "pytorch_model.bin"], dir.path());
    copy_files(&fixture("hf-roberta-bpe"), &["vocab.json", "merges.txt", "tokenizer_config.json"], dir.path());
    assert_hidden_states_match_transformers("roberta", &["--model", dir.path().to_str().unwrap()], &[]);
}

#[test]
fn roberta_without_pad_token_id_pads_with_transformers_default_and_fits_its_positions() {
    let dir = tempfile::tempdir().unwrap();
    copy_files(&fixture("hf-roberta-tiny"), &["pytorch_model.bin", "tokenizer.json"], dir.path());
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("hf-roberta-tiny/config.json")).unwrap()).unwrap();
    assert_eq!(config.as_object_mut().unwrap().remove("pad_token_id"), Some(1.into()));
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    assert_hidden_states_match_transformers("roberta", &["--model", dir.path().to_str().unwrap()], &[]);
    // Its positions start after the padding index (1): 66 position embeddings fit 64 tokens, and
    // more is refused before any model is analysed.
    let model = format!("r={}", dir.path().display());
    let corpus = fixture("corpus/wikitext2_test.txt");
    let out = dir.path().join("analysis");
    let args = ["analyze", "--model", &model, "--data", corpus.to_str().unwrap(), "--tokens", "256", "--seq-len", "65", "--out", out.to_str().unwrap()];
    assert_fails_naming(&repdef(&args, &[]), &["data.seq_len 65 exceeds the 64 tokens"]);
}

#[test]
fn bare_distilbert_and_electra_exports_match_transformers() {
    assert_hidden_states_match_transformers("distilbert", &["--model", fixture("hf-distilbert-bare").to_str().unwrap()], &[]);
    assert_hidden_states_match_transformers("electra_discriminator", &["--model", fixture("hf-electra-bare").to_str().unwrap()], &[]);
}

#[test]
fn a_model_without_a_tokenizer_needs_the_tokenizer_flag() {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("weights-only");
    copy_files(&fixture("hf-bert-vocab"), &["config.json", "pytorch_model.bin"], &model);
    let output = repdef(&["hidden-states", "--model", model.to_str().unwrap(), "--text", "a", "--out", root.path().join("h").to_str().unwrap()], &[]);
    assert_fails_naming(&output, &["weights-only", "no tokenizer", "--tokenizer"]);
    let vocab = fixture("hf-bert-vocab/vocab.txt");
    assert_hidden_states_match_transformers("bert", &["--model", model.to_str().unwrap(), "--tokenizer", vocab.to_str().unwrap()], &[]);
    // A tokenizer of another model is refused before anything runs.
    let roberta = fixture("hf-roberta-tiny/tokenizer.json");
    let out = root.path().join("h.safetensors");
    let small_model = fixture("repdef-tiny-mlm");
    let args =
        ["hidden-states", "--model", small_model.to_str().unwrap(), "--tokenizer", roberta.to_str().unwrap(), "--text", "a", "--out", out.to_str().unwrap()];
    assert_fails_naming(&repdef(&args, &[]), &["hf-roberta-tiny/tokenizer.json", "does not belong to this model"]);
    assert!(!out.exists());
    // A model that ships its tokenizer keeps it: another vocabulary of the same size is refused,
    // its own given again is fine.
    let bert = fixture("hf-bert-tiny");
    let with = |tokenizer: &Path| {
        repdef(
            &["hidden-states", "--model", bert.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap(), "--text", "a", "--out", out.to_str().unwrap()],
            &[],
        )
    };
    assert_fails_naming(&with(&roberta), &["hf-roberta-tiny/tokenizer.json", "another vocabulary than the model's own"]);
    assert_success(&with(&bert.join("tokenizer.json")));
    // A RoBERTa model under a dir with a BERT vocabulary: the ids fit its embeddings, the
    // padding id does not.
    let roberta = root.path().join("with-bert-vocab/roberta");
    copy_files(&fixture("hf-roberta-tiny"), &["config.json", "pytorch_model.bin"], &roberta);
    copy_files(&fixture("hf-bert-vocab"), &["vocab.txt", "tokenizer_config.json"], roberta.parent().unwrap());
    let args = ["hidden-states", "--model", roberta.to_str().unwrap(), "--text", "a", "--out", out.to_str().unwrap()];
    assert_fails_naming(&repdef(&args, &[]), &["vocab.txt", "pads with id 0", "pad_token_id is 1"]);
}

/// A hub cache in `root` holding `org/bert-tiny` (fixtures/hf-bert-tiny) at one commit, which
/// `main` and the tag `v1` point at (`huggingface_hub` records each revision asked for under `refs/`).
fn hub_cache(root: &Path) -> PathBuf {
    let commit = "4f0c2a1e9b8d7c6f5e4d3c2b1a0f9e8d7c6b5a49";
    let repo = root.join("models--org--bert-tiny");
    copy_files(&fixture("hf-bert-tiny"), &["config.json", "model.safetensors", "tokenizer.json"], &repo.join("snapshots").join(commit));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::write(repo.join("refs/v1"), commit).unwrap();
    root.to_path_buf()
}

#[test]
fn hub_ids_resolve_offline_in_the_local_cache() {
    let root = tempfile::tempdir().unwrap();
    let cache = hub_cache(&root.path().join("hub"));
    for (id, env) in [("hf:org/bert-tiny", ("HF_HUB_CACHE", cache.as_path())), ("hf:org/bert-tiny@v1", ("HF_HOME", root.path()))] {
        assert_hidden_states_match_transformers("bert", &["--model", id], &[env]);
    }
    let output = repdef(&["inspect", "hf:org/bert-tiny"], &[("HF_HUB_CACHE", &cache)]);
    assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("snapshots"));

    let out = root.path().join("analysis");
    let corpus = fixture("corpus/wikitext2_valid.txt");
    let args =
        ["analyze", "--model", "B=hf:org/bert-tiny", "--data", corpus.to_str().unwrap(), "--tokens", "128", "--seq-len", "32", "--out", out.to_str().unwrap()];
    assert_success(&repdef(&args, &[("HF_HUB_CACHE", &cache)]));

    let output = repdef(&["inspect", "hf:org/missing"], &[("HF_HUB_CACHE", &cache)]);
    assert_fails_naming(&output, &["hf:org/missing", "models--org--missing", "HF_HUB_CACHE", "never downloads"]);
}

#[test]
fn pickles_that_are_not_state_dicts_are_refused() {
    for pickle in ["whole_module.bin", "training_args.bin"] {
        let dir = tempfile::tempdir().unwrap();
        copy_files(&fixture("hf-bert-vocab"), &["config.json", "vocab.txt"], dir.path());
        std::fs::copy(fixture("pickles").join(pickle), dir.path().join("pytorch_model.bin")).unwrap();
        let model = dir.path().to_str().unwrap();
        let out = dir.path().join("h.safetensors");
        let out = out.to_str().unwrap();
        for args in [vec!["inspect", model], vec!["hidden-states", "--model", model, "--text", "a", "--out", out]] {
            assert_fails_naming(&repdef(&args, &[]), &["pytorch_model.bin", "not a state dict"]);
        }
    }
}

#[test]
fn a_foreign_mlm_head_is_scored_against_the_plateau_of_the_analysed_text() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("analysis");
    let corpus = fixture("corpus/wikitext2_valid.txt");
    let (bert, discriminator) = (fixture("hf-bert-vocab"), fixture("hf-electra-discriminator-tiny"));
    let (bert_arg, discriminator_arg) = (format!("BERT={}", bert.display()), format!("ELECTRA={}", discriminator.display()));
    let args =
        ["analyze", "--model", &bert_arg, "--model", &discriminator_arg, "--data", corpus.to_str().unwrap(), "--tokens", "2048", "--seq-len", "64", "--out"];
    let mut args = args.to_vec();
    args.push(out.to_str().unwrap());
    assert_success(&repdef(&args, &[]));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let scored = &manifest["models"][0]["head_evaluation"];
    assert_eq!(scored["sequences"], 32, "2048 tokens in 64-token sequences");
    assert!(scored["n_predictions"].as_u64().unwrap() > 100);
    let (loss, plateau) = (scored["loss"].as_f64().unwrap(), scored["plateau_loss"].as_f64().unwrap());
    // A random model is far worse than the unigram guess; the plateau of English text is a few nats.
    assert!(loss > plateau && (3.0..8.0).contains(&plateau), "loss {loss}, plateau {plateau}");
    assert!(manifest["models"][1].get("head_evaluation").is_none(), "the ELECTRA discriminator has no MLM head");
    assert_eq!((&manifest["models"][0]["objective"], &manifest["models"][1]["objective"]), (&"MLM".into(), &"RTD".into()));
    // A discriminator is part of no claim: with it alone every claim is "not measured".
    let discriminator_alone = root.path().join("discriminator");
    let args = ["analyze", "--model", &discriminator_arg, "--data", corpus.to_str().unwrap(), "--tokens", "512", "--seq-len", "64", "--out"];
    let mut args = args.to_vec();
    args.push(discriminator_alone.to_str().unwrap());
    assert_success(&repdef(&args, &[]));
    assert_success(&repdef(&["report", discriminator_alone.to_str().unwrap()], &[]));
    let report = std::fs::read_to_string(discriminator_alone.join("report.md")).unwrap();
    let claims: Vec<&str> = report.lines().filter(|l| l.starts_with("| 1.") || l.starts_with("| 2.") || l.starts_with("| 3.")).collect();
    assert!(claims.len() == 3 && claims.iter().all(|c| c.contains("**not measured**")), "{claims:?}");

    // Alone, the BERT model is judged on the plateau like repdef's own runs.
    let alone = root.path().join("alone");
    let args = ["analyze", "--model", &bert_arg, "--data", corpus.to_str().unwrap(), "--tokens", "2048", "--seq-len", "64", "--out", alone.to_str().unwrap()];
    assert_success(&repdef(&args, &[]));
    assert_success(&repdef(&["report", alone.to_str().unwrap()], &[]));
    let report = std::fs::read_to_string(alone.join("report.md")).unwrap();
    assert!(report.contains("Not trained by repdef: BERT (32 sequences"), "{report}");
    let claim = report.lines().find(|l| l.starts_with("| 1. MLM allocates")).unwrap();
    assert!(claim.contains("**inconclusive**") && claim.contains("did not leave the unigram plateau"), "{claim}");
    let setup = report.lines().find(|l| l.starts_with("| BERT |")).unwrap();
    assert!(setup.ends_with("| **no** |"), "{setup}");
}
