//! AdamW with decoupled weight decay, no decay on biases and LayerNorm parameters, and
//! global-norm gradient clipping. candle-nn's `AdamW` has no parameter groups, hence our own;
//! owning the moments also makes saving and restoring them trivial.

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    /// Updates applied so far (for bias correction).
    t: u64,
}

/// Biases and LayerNorm parameters are not decayed (BERT's convention).
fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm"))
}

impl AdamW {
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        let vars = varmap.data().lock().expect("VarMap lock poisoned");
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let params = names
            .into_iter()
            .map(|name| {
                let var = vars[name].clone();
                Ok(Param { name: name.clone(), m: var.zeros_like()?, v: var.zeros_like()?, decay: decays(name), var })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { params, config, t: 0 })
    }

    /// Global L2 norm of all gradients; parameters without a gradient count as zero.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum_sq = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(&p.var) {
                sum_sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sum_sq.sqrt())
    }

    /// Names of trainable variables that got no (or an all-zero) gradient.
    pub fn params_without_gradient(&self, grads: &GradStore) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for p in &self.params {
            let nonzero = match grads.get(&p.var) {
                Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
                None => false,
            };
            if !nonzero {
                missing.push(p.name.clone());
            }
        }
        Ok(missing)
    }

    /// One update with learning rate `lr`, gradients scaled by `grad_scale` (clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.config;
        let correction1 = 1.0 - beta1.powi(self.t as i32);
        let correction2 = 1.0 - beta2.powi(self.t as i32);
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            let g = (g * grad_scale)?;
            p.m = ((&p.m * beta1)? + (&g * (1.0 - beta1))?)?;
            p.v = ((&p.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&p.m / correction1)?;
            let v_hat = (&p.v / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
            let theta = p.var.as_tensor();
            let decayed = if p.decay { (theta * (1.0 - lr * weight_decay))? } else { theta.clone() };
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// First and second moments as named tensors (`m.NAME`, `v.NAME`) for the checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .flat_map(|p| [(format!("m.{}", p.name), p.m.clone()), (format!("v.{}", p.name), p.v.clone())])
            .collect()
    }

    pub fn restore(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for (prefix, slot) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let saved = state.get(&key).with_context(|| format!("optimizer state has no tensor {key}"))?;
                anyhow::ensure!(saved.shape() == slot.shape(), "optimizer tensor {key} has shape {:?}, expected {:?}", saved.shape(), slot.shape());
                *slot = saved.clone();
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn decay_groups_follow_bert() {
        assert!(decays("bert.encoder.layer.0.output.dense.weight"));
        assert!(!decays("bert.encoder.layer.0.output.dense.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_against_the_gradient_sign() {
        // With bias correction, Adam's first update is lr · g/|g| (up to eps).
        let varmap = VarMap::new();
        let w = varmap.get((2,), "w.weight", candle_nn::Init::Const(1.0), DType::F32, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-12, weight_decay: 0.0 }).unwrap();
        let loss = (w.mul(&Tensor::new(&[3f32, -0.5], &Device::Cpu).unwrap()).unwrap()).sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.1, 1.0).unwrap();
        let after = w.to_vec1::<f32>().unwrap();
        assert!((after[0] - 0.9).abs() < 1e-6 && (after[1] - 1.1).abs() < 1e-6, "{after:?}");
    }
}
