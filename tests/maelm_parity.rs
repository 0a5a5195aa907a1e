//! The MAE-LM training loss against an independent PyTorch implementation of the objective
//! (`fixtures/golden/make_maelm_golden.py` wrote `fixtures/repdef-tiny-maelm-relpos/` and the
//! golden file): compaction of the kept tokens at their original positions, the scatter back with
//! the `[MASK]` row, the decoder with its own positions and relative-position bias, the head at
//! the dropped positions; the loss and every gradient through the fused training kernels.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use repdef::checkpoint::read_safetensors;
use repdef::data::masking::{MaskedBatch, TokenClass};
use repdef::model::Ctx;
use repdef::rng::Rng;
use repdef::train::loss::masked_token_loss;

const HINT: &str = "HINT: regenerate with `python3 fixtures/golden/make_maelm_golden.py` if the fixture is stale";
const MASK_ID: u32 = 4;

fn ints(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn maelm_loss_and_every_gradient_match_pytorch_with_both_relative_bias_tables() {
    let golden = read_safetensors(&fixture("golden/repdef_tiny_maelm_golden.safetensors"), &Device::Cpu).unwrap().tensors;
    let (varmap, model) = common::trainable_model(&fixture("repdef-tiny-maelm-relpos"));
    let (batch, pos) = golden["ids"].dims2().unwrap();
    let ids = ints(&golden["ids"]);
    let real = ints(&golden["mask"]);
    let dropped: Vec<bool> = ints(&golden["dropped"]).iter().map(|&d| d == 1).collect();
    let class = |i: usize| match (real[i], dropped[i], ids[i]) {
        (0, _, _) => TokenClass::Pad,
        (_, true, _) => TokenClass::Mask,
        (_, _, 2 | 3) => TokenClass::Special,
        _ => TokenClass::Real,
    };
    let masked = MaskedBatch {
        batch,
        pos,
        input_ids: ids.iter().zip(&dropped).map(|(&id, &d)| if d { MASK_ID } else { id }).collect(),
        original_ids: ids.clone(),
        classes: (0..batch * pos).map(class).collect(),
        picked: dropped.clone(),
        encoder_visible: (0..batch * pos).map(|i| real[i] == 1 && !dropped[i]).collect(),
    };
    let loss = masked_token_loss(&model, &masked, &mut Ctx::train(&mut Rng::new(0))).unwrap();
    let want: Vec<f32> = golden["loss"].to_vec1().unwrap();
    assert!((loss.value().unwrap() - f64::from(want[0])).abs() < 1e-5, "loss {} vs PyTorch {}\n{HINT}", loss.value().unwrap(), want[0]);
    let grads = loss.loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    for table in ["bert.encoder.relative_attention_bias.weight", "decoder.relative_attention_bias.weight"] {
        assert!(vars.contains_key(table), "the model has {table}");
    }
    for (name, var) in vars.iter() {
        let want = golden.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("no golden gradient for {name}"));
        let got = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let (error, scale) = (max_abs(&(got - want).unwrap()), max_abs(want).max(1e-6));
        assert!(error <= 1e-4 * scale, "{name}: max |Δgrad| {error:e} against max |grad| {scale:e}\n{HINT}");
    }
}
