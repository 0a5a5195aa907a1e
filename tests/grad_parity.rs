//! Training numbers against PyTorch: on `fixtures/repdef-tiny-mlm` with dropout off and a fixed
//! masked batch, repdef's MLM loss, every parameter's gradient and the losses of 30 AdamW steps
//! equal those of HuggingFace `BertForMaskedLM` + `torch.optim.AdamW`
//! (fixtures/golden/make_grad_golden.py wrote the golden file).

mod common;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use repdef::checkpoint::read_safetensors;
use repdef::data::masking::{MaskedBatch, TokenClass};
use repdef::model::{Ctx, PretrainingModel};
use repdef::rng::Rng;
use repdef::train::loss::masked_token_loss;
use repdef::train::optimizer::{AdamW, AdamWConfig};
use std::collections::HashMap;

fn load_model() -> (VarMap, PretrainingModel) {
    common::trainable_model(&common::fixture("repdef-tiny-mlm"))
}

/// The golden batch: `labels` is -100 where nothing is predicted.
fn golden_batch(golden: &HashMap<String, Tensor>) -> MaskedBatch {
    let (batch, pos) = golden["input_ids"].dims2().unwrap();
    let input: Vec<i64> = golden["input_ids"].flatten_all().unwrap().to_vec1().unwrap();
    let labels: Vec<i64> = golden["labels"].flatten_all().unwrap().to_vec1().unwrap();
    let picked: Vec<bool> = labels.iter().map(|&l| l >= 0).collect();
    MaskedBatch {
        batch,
        pos,
        input_ids: input.iter().map(|&i| i as u32).collect(),
        original_ids: input.iter().zip(&labels).map(|(&i, &l)| if l >= 0 { l as u32 } else { i as u32 }).collect(),
        classes: picked.iter().map(|&p| if p { TokenClass::Mask } else { TokenClass::Real }).collect(),
        encoder_visible: vec![true; batch * pos],
        picked,
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

#[test]
fn mlm_loss_gradients_and_adamw_steps_match_pytorch() {
    let golden = read_safetensors(&common::fixture("golden/repdef_tiny_mlm_grads.safetensors"), &Device::Cpu).unwrap().tensors;
    let batch = golden_batch(&golden);
    let (varmap, model) = load_model();
    let mut rng = Rng::new(0);

    let loss = masked_token_loss(&model, &batch, &mut Ctx::train(&mut rng)).unwrap();
    let expected_loss: Vec<f32> = golden["loss"].to_vec1().unwrap();
    assert!((loss.value().unwrap() - expected_loss[0] as f64).abs() < 1e-5, "loss {} vs {}", loss.value().unwrap(), expected_loss[0]);

    let grads = loss.loss.backward().unwrap();
    let mut compared = 0;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let expected = golden.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("no golden gradient for {name}"));
        let actual = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let error = max_abs(&(actual - expected).unwrap());
        let scale = max_abs(expected).max(1e-6);
        assert!(error <= 1e-4 * scale, "{name}: max |Δgrad| {error:e} against max |grad| {scale:e}");
        compared += 1;
    }
    assert_eq!(compared, golden.keys().filter(|k| k.starts_with("grad.")).count(), "every golden gradient has a parameter");

    let (varmap, model) = load_model();
    let mut optimizer = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.01 }).unwrap();
    let expected: Vec<f32> = golden["adamw_losses"].to_vec1().unwrap();
    for (step, &expected_loss) in expected.iter().enumerate() {
        let loss = masked_token_loss(&model, &batch, &mut Ctx::train(&mut rng)).unwrap();
        let value = loss.value().unwrap();
        assert!((value - expected_loss as f64).abs() < 1e-3, "step {step}: loss {value} vs PyTorch {expected_loss}");
        optimizer.step(&loss.loss.backward().unwrap(), 1e-3, 1.0).unwrap();
    }
}
