//! Deterministic BERT initialisation (HF `BertPreTrainedModel._init_weights`): weights and
//! embeddings N(0, initializer_range), biases 0, LayerNorm weights 1.
//!
//! candle's `VarMap` initialises from the device RNG, which cannot be seeded on the CPU; so
//! every variable is overwritten here from repdef's generator, in sorted-name order.
//!
//! BERT's σ = 0.02 was set for width 768; [`width_scaled_std`] keeps that per-matrix gain at
//! other widths (reports/recipe/README.md, "Initialisation": at 0.02 a narrow MAE-LM encoder
//! barely receives gradient and never leaves the unigram plateau).

use crate::rng::Rng;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarMap;

/// BERT-base's width, where σ = 0.02 comes from.
const BERT_BASE_WIDTH: f64 = 768.0;
const BERT_BASE_STD: f64 = 0.02;

/// σ that gives a `width × width` matrix the gain BERT-base's N(0, 0.02) has at width 768:
/// 0.02 · √(768 / width).
pub fn width_scaled_std(width: usize) -> f64 {
    BERT_BASE_STD * (BERT_BASE_WIDTH / width as f64).sqrt()
}

pub fn initialize(varmap: &VarMap, std: f64, rng: &mut Rng) -> Result<()> {
    let vars = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let shape = var.shape().clone();
        let value = if name.ends_with("LayerNorm.weight") {
            Tensor::ones(shape, var.dtype(), var.device())?
        } else if name.ends_with("bias") {
            Tensor::zeros(shape, var.dtype(), var.device())?
        } else {
            let values: Vec<f32> = (0..shape.elem_count()).map(|_| (rng.normal() * std) as f32).collect();
            Tensor::from_vec(values, shape, var.device())?
        };
        var.set(&value)?;
    }
    Ok(())
}
