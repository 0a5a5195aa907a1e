//! Deterministic BERT initialisation (HF `BertPreTrainedModel._init_weights`): weights and
//! embeddings N(0, initializer_range), biases 0, LayerNorm weights 1.
//!
//! candle's `VarMap` initialises from the device RNG, which cannot be seeded on the CPU; so
//! every variable is overwritten here from repdef's generator, in sorted-name order.

use crate::rng::Rng;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarMap;

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
