//! The relative-position attention bias against an independent PyTorch implementation
//! (`fixtures/golden/make_relpos_golden.py` wrote `fixtures/repdef-tiny-relpos/` and the golden
//! file): the bucketing, every layer's hidden states for contiguous positions and for
//! MAE-LM-style compacted rows that keep their original positions, and the MLM loss and every
//! gradient (the table's included) through the fused training kernels.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use repdef::checkpoint::{load_pretraining_model, read_safetensors};
use repdef::data::masking::{MaskedBatch, TokenClass};
use repdef::model::relative_position::bucket;
use repdef::model::{Ctx, EncoderInput, Tap, TapCache};
use repdef::rng::Rng;
use repdef::train::loss::masked_token_loss;
use std::collections::HashMap;

const HINT: &str = "HINT: regenerate with `python3 fixtures/golden/make_relpos_golden.py` if the fixture is stale";

fn golden() -> HashMap<String, Tensor> {
    read_safetensors(&fixture("golden/repdef_tiny_relpos_golden.safetensors"), &Device::Cpu).unwrap().tensors
}

fn ints(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn buckets_match_pytorch() {
    let want = ints(&golden()["buckets"]);
    let got: Vec<u32> = (-40..=40).map(|d| bucket(d, 32, 20)).collect();
    assert_eq!(got, want, "buckets of distances -40..=40 (32 buckets, max distance 20)");
}

/// Every layer of the inference forward on `{prefix}` inputs, on real tokens.
fn check_hidden_states(prefix: &str, ids: &str, positions: &str, mask: &str) {
    let golden = golden();
    let model = load_pretraining_model(&fixture("repdef-tiny-relpos"), &Device::Cpu).unwrap();
    let keep = ints(&golden[mask]);
    let input = EncoderInput {
        ids: golden[ids].to_dtype(DType::U32).unwrap(),
        position_ids: golden[positions].to_dtype(DType::U32).unwrap(),
        token_type_ids: golden[ids].zeros_like().unwrap().to_dtype(DType::U32).unwrap(),
        attention_mask: golden[mask].to_dtype(DType::U8).unwrap(),
    };
    let mut cache = TapCache::default();
    model.encoder.forward(&input, &mut Ctx::infer().with_recorder(&mut cache)).unwrap();
    for tap in Tap::encoder_taps(model.config.num_hidden_layers) {
        let want = &golden[&format!("{prefix}.{}", tap.hf_index().unwrap())];
        let d = want.dim(2).unwrap();
        let (got, want): (Vec<f32>, Vec<f32>) = (cache.tensors[&tap].flatten_all().unwrap().to_vec1().unwrap(), want.flatten_all().unwrap().to_vec1().unwrap());
        let worst = got.iter().zip(&want).enumerate().filter(|(i, _)| keep[i / d] == 1).map(|(_, (g, w))| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{prefix} {tap}: max |repdef − PyTorch| = {worst} on real tokens\n{HINT}");
    }
}

#[test]
fn hidden_states_match_pytorch_for_contiguous_positions() {
    check_hidden_states("contiguous", "ids", "positions", "mask");
}

#[test]
fn hidden_states_match_pytorch_for_compacted_rows_with_original_positions() {
    check_hidden_states("compacted", "c_ids", "c_pos", "c_mask");
}

#[test]
fn mlm_loss_and_every_gradient_match_pytorch_through_the_training_kernels() {
    let golden = golden();
    let (varmap, model) = common::trainable_model(&fixture("repdef-tiny-relpos"));

    let (batch, pos) = golden["masked"].dims2().unwrap();
    let input_ids = ints(&golden["masked"]);
    let labels: Vec<i64> = golden["labels"].flatten_all().unwrap().to_vec1().unwrap();
    let keep = ints(&golden["mask"]);
    let picked: Vec<bool> = labels.iter().map(|&l| l >= 0).collect();
    let masked = MaskedBatch {
        batch,
        pos,
        original_ids: input_ids.iter().zip(&labels).map(|(&i, &l)| if l >= 0 { l as u32 } else { i }).collect(),
        classes: (0..batch * pos)
            .map(|i| {
                if keep[i] == 0 {
                    TokenClass::Pad
                } else if picked[i] {
                    TokenClass::Mask
                } else {
                    TokenClass::Real
                }
            })
            .collect(),
        input_ids,
        encoder_visible: vec![true; batch * pos],
        picked,
    };
    let mut rng = Rng::new(0);
    let loss = masked_token_loss(&model, &masked, &mut Ctx::train(&mut rng)).unwrap();
    let want: Vec<f32> = golden["loss"].to_vec1().unwrap();
    assert!((loss.value().unwrap() - f64::from(want[0])).abs() < 1e-5, "loss {} vs PyTorch {}\n{HINT}", loss.value().unwrap(), want[0]);
    let grads = loss.loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    assert!(vars.contains_key("bert.encoder.relative_attention_bias.weight"), "the model has the table");
    for (name, var) in vars.iter() {
        let want = golden.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("no golden gradient for {name}"));
        let got = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let (error, scale) = (max_abs(&(got - want).unwrap()), max_abs(want).max(1e-6));
        assert!(error <= 1e-4 * scale, "{name}: max |Δgrad| {error:e} against max |grad| {scale:e}\n{HINT}");
    }
}
