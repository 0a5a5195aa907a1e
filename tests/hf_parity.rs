//! Parity with HuggingFace `transformers`, both ways, within 1e-4 on real tokens:
//! - HF checkpoints in repdef: the tiny random BERT and RoBERTa checkpoints and their outputs were
//!   produced by `fixtures/golden/make_golden.py`, the DistilBERT and ELECTRA (generator and
//!   discriminator) ones by `make_family_golden.py`; repdef reproduces every layer and the MLM
//!   logits (the discriminator has no MLM head).
//! - repdef checkpoints in HF: `fixtures/golden/make_repdef_golden.py` trained tiny MLM and MAE-LM
//!   runs with repdef, loaded them in `transformers` (`BertForMaskedLM`, `BertModel`) with no
//!   missing weights, and saved what `transformers` computes; repdef must agree with it.

use candle_core::{DType, Device, Tensor};
use repdef::checkpoint::{load_encoder, load_pretraining_model, read_safetensors};
use repdef::model::{Ctx, EncoderInput, Tap, TapCache};
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

/// Max |a − b| over positions whose attention mask is 1 (`a`, `b`: `[batch, pos, d]`).
fn max_diff_on_real_tokens(name: &str, got: &Tensor, want: &Tensor, mask: &[u32]) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let d = got.dim(2).unwrap();
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if mask[i / d] == 1 {
            worst = worst.max((g - w).abs());
        }
    }
    if worst > TOLERANCE {
        eprintln!("{name}: first values got {:?} want {:?}", &got[..4], &want[..4]);
        eprintln!("HINT: regenerate with `python3 fixtures/golden/make_golden.py` if the fixture is stale");
    }
    worst
}

/// Runs the model on the golden inputs (`prefix` = "" or "masked_") and compares every layer and the logits.
fn check_against_golden(model_dir: &str, golden: &str, prefix: &str) {
    let device = Device::Cpu;
    let loaded = load_encoder(&fixture(model_dir), None, &device).unwrap();
    let golden = read_safetensors(&fixture(golden), &device).unwrap().tensors;
    let input_ids = &golden[&format!("{prefix}input_ids")];
    let batch = input_ids.dim(0).unwrap();
    let mask = ids(&golden["attention_mask"]);
    let token_types = golden.get("token_type_ids").map(ids);
    let input = EncoderInput::from_ids(&loaded.config, &ids(input_ids), token_types.as_deref(), batch, &device).unwrap();
    if let Some(positions) = golden.get("position_ids") {
        assert_eq!(ids(&input.position_ids), ids(positions), "RoBERTa position ids");
    }
    let mut cache = TapCache::default();
    let last = loaded.encoder.forward(&input, &mut Ctx::infer().with_recorder(&mut cache)).unwrap();
    for tap in Tap::encoder_taps(loaded.config.num_hidden_layers) {
        let want = &golden[&format!("{prefix}hidden_states.{}", tap.hf_index().unwrap())];
        let diff = max_diff_on_real_tokens(&tap.to_string(), &cache.tensors[&tap], want, &mask);
        assert!(diff < TOLERANCE, "{model_dir} {prefix}{tap}: max diff {diff}");
    }
    // Models without an MLM head (the ELECTRA discriminator) have no golden logits.
    let Some(want_logits) = golden.get(&format!("{prefix}logits")) else { return };
    let model = load_pretraining_model(&fixture(model_dir), &device).unwrap();
    let (b, pos, d) = last.dims3().unwrap();
    let logits = model.head_logits(&last.reshape((b * pos, d)).unwrap(), &Ctx::infer()).unwrap();
    let logits = logits.reshape((b, pos, ())).unwrap();
    let diff = max_diff_on_real_tokens("logits", &logits, want_logits, &mask);
    assert!(diff < TOLERANCE, "{model_dir} {prefix}logits: max diff {diff}");
}

/// [`check_against_golden`] on the golden's clean and `[MASK]`-bearing inputs.
fn check_clean_and_masked(model_dir: &str, golden: &str) {
    check_against_golden(model_dir, golden, "");
    check_against_golden(model_dir, golden, "masked_");
}

#[test]
fn bert_matches_transformers_on_clean_and_masked_input() {
    check_clean_and_masked("hf-bert-tiny", "golden/bert_tiny_golden.safetensors");
}

#[test]
fn bert_with_an_untied_mlm_head_matches_transformers() {
    check_clean_and_masked("hf-bert-untied", "golden/bert_untied_golden.safetensors");
}

#[test]
fn roberta_from_pytorch_bin_matches_transformers() {
    check_clean_and_masked("hf-roberta-tiny", "golden/roberta_tiny_golden.safetensors");
}

#[test]
fn repdef_mlm_checkpoint_means_the_same_in_transformers() {
    check_against_golden("repdef-tiny-mlm", "golden/repdef_tiny_mlm_hf.safetensors", "");
}

#[test]
fn repdef_mae_lm_encoder_means_the_same_in_transformers() {
    check_against_golden("repdef-tiny-maelm", "golden/repdef_tiny_maelm_hf.safetensors", "");
}

#[test]
fn distilbert_matches_transformers() {
    check_clean_and_masked("hf-distilbert-tiny", "golden/distilbert_tiny_golden.safetensors");
}

#[test]
fn electra_generator_with_narrow_embeddings_matches_transformers() {
    check_clean_and_masked("hf-electra-generator-tiny", "golden/electra_generator_tiny_golden.safetensors");
}

#[test]
fn electra_discriminator_encoder_matches_transformers() {
    check_clean_and_masked("hf-electra-discriminator-tiny", "golden/electra_discriminator_tiny_golden.safetensors");
}
