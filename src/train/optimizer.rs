//! AdamW with decoupled weight decay, no decay on biases and LayerNorm parameters, and
//! global-norm gradient clipping. candle-nn's `AdamW` has no parameter groups, hence our own;
//! owning the moments also makes saving and restoring them trivial.
//!
//! The update is one loop over each parameter's f32 slices, writing the weights in place (a
//! candle in-place op) and split over the threads: as tensor ops it was ~10 passes and
//! allocations per parameter per step.
//! The moments are plain vectors, so the optimizer runs on the CPU.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Storage, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;
use std::cell::RefCell;
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
    /// First and second moments, element for element of the variable.
    m: Vec<f32>,
    v: Vec<f32>,
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
                if !var.device().is_cpu() {
                    bail!("AdamW keeps its moments on the CPU, but {name} is on {:?}", var.device());
                }
                let n = var.elem_count();
                Ok(Param { name: name.clone(), m: vec![0.0; n], v: vec![0.0; n], decay: decays(name), var })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { params, config, t: 0 })
    }

    /// Global L2 norm of all gradients; parameters without a gradient count as zero. Summed in
    /// runs over the threads, the runs' sums added in order: the same bits for any thread count.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        const RUN: usize = 16 * 1024;
        let mut sum_sq = 0f64;
        for p in &self.params {
            if let Some(g) = grads.get(&p.var) {
                let g = g.contiguous()?;
                let (storage, layout) = g.storage_and_layout();
                let runs: Vec<f64> = cpu_f32(&storage, layout)?.par_chunks(RUN).map(|run| run.iter().map(|&x| (x as f64) * (x as f64)).sum()).collect();
                sum_sq += runs.iter().sum::<f64>();
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
        let coefficients = |decay: bool| Update {
            grad_scale: grad_scale as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            inv_correction1: (1.0 / (1.0 - beta1.powi(self.t as i32))) as f32,
            inv_correction2: (1.0 / (1.0 - beta2.powi(self.t as i32))) as f32,
            eps: eps as f32,
            lr: lr as f32,
            keep: if decay { (1.0 - lr * weight_decay) as f32 } else { 1.0 },
        };
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            let op = UpdateOp { coefficients: coefficients(p.decay), moments: RefCell::new((&mut p.m, &mut p.v)) };
            p.var.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
        }
        Ok(())
    }

    /// First and second moments as named tensors (`m.NAME`, `v.NAME`) for the checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let tensor =
            |p: &Param, moment: &[f32]| Tensor::from_slice(moment, p.var.shape(), p.var.device()).expect("moments have their variable's size (new, restore)");
        self.params.iter().flat_map(|p| [(format!("m.{}", p.name), tensor(p, &p.m)), (format!("v.{}", p.name), tensor(p, &p.v))]).collect()
    }

    pub fn restore(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for p in &mut self.params {
            for (prefix, slot) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let saved = state.get(&key).with_context(|| format!("optimizer state has no tensor {key}"))?;
                anyhow::ensure!(saved.shape() == p.var.shape(), "optimizer tensor {key} has shape {:?}, expected {:?}", saved.shape(), p.var.shape());
                *slot = saved.flatten_all()?.to_vec1()?;
            }
        }
        self.t = t;
        Ok(())
    }
}

/// The f32 elements of a contiguous CPU tensor.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (Storage::Cpu(cpu), Some((start, end))) => Ok(&cpu.as_slice::<f32>()?[start..end]),
        _ => bail!("AdamW needs contiguous CPU tensors"),
    }
}

/// The scalars of one AdamW step for one parameter group.
#[derive(Clone, Copy)]
struct Update {
    grad_scale: f32,
    beta1: f32,
    beta2: f32,
    inv_correction1: f32,
    inv_correction2: f32,
    eps: f32,
    lr: f32,
    /// 1 − lr·weight_decay, or 1 without decay.
    keep: f32,
}

impl Update {
    /// The update of every element, in runs spread over the threads (elementwise, so the
    /// result does not depend on how many there are).
    fn apply(self, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        const RUN: usize = 16 * 1024;
        let runs = theta.par_chunks_mut(RUN).zip(g.par_chunks(RUN)).zip(m.par_chunks_mut(RUN)).zip(v.par_chunks_mut(RUN));
        runs.for_each(|(((theta, g), m), v)| self.apply_run(theta, g, m, v));
    }

    fn apply_run(self, theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let Update { grad_scale, beta1, beta2, inv_correction1, inv_correction2, eps, lr, keep } = self;
        for (((theta, &g), m), v) in theta.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * grad_scale;
            *m = *m * beta1 + g * (1.0 - beta1);
            *v = *v * beta2 + g * g * (1.0 - beta2);
            let update = (*m * inv_correction1) / ((*v * inv_correction2).sqrt() + eps);
            *theta = *theta * keep - update * lr;
        }
    }
}

/// [`Update`] applied in place to a variable's storage, with its gradient as the source.
/// `inplace_op2` passes `&self`, hence the moments behind a `RefCell`.
struct UpdateOp<'a> {
    coefficients: Update,
    moments: RefCell<(&'a mut Vec<f32>, &'a mut Vec<f32>)>,
}

impl InplaceOp2 for UpdateOp<'_> {
    fn name(&self) -> &'static str {
        "repdef-adamw"
    }

    fn cpu_fwd(&self, theta: &mut CpuStorage, theta_l: &Layout, g: &CpuStorage, g_l: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), Some((t0, t1)), Some((g0, g1))) = (theta, theta_l.contiguous_offsets(), g_l.contiguous_offsets()) else {
            candle_core::bail!("AdamW needs contiguous f32 weights and gradients")
        };
        let (theta, g) = (&mut theta[t0..t1], &g.as_slice::<f32>()?[g0..g1]);
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if g.len() != theta.len() || m.len() != theta.len() {
            candle_core::bail!("AdamW: {} weights, {} gradients, {} moments", theta.len(), g.len(), m.len());
        }
        self.coefficients.apply(theta, g, m, v);
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
    fn steps_follow_the_adamw_formula_with_decay_groups_and_grad_scale() {
        let device = Device::Cpu;
        let mut varmap = VarMap::new();
        let init = [0.5f32, -1.0, 2.0];
        let w = varmap.get(3, "dense.weight", candle_nn::Init::Const(0.0), DType::F32, &device).unwrap();
        let b = varmap.get(3, "dense.bias", candle_nn::Init::Const(0.0), DType::F32, &device).unwrap();
        for name in ["dense.weight", "dense.bias"] {
            varmap.set_one(name, Tensor::new(&init, &device).unwrap()).unwrap();
        }
        let config = AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1 };
        let mut opt = AdamW::new(&varmap, config).unwrap();
        let (lr, scale) = (0.01, 0.5);
        // Reference in f64: θ ← θ(1 − lr·wd) − lr·m̂/(√v̂ + eps) for decayed parameters.
        let mut reference = [(init.map(f64::from), [0.0; 3], [0.0; 3], true), (init.map(f64::from), [0.0; 3], [0.0; 3], false)];
        for step in 1..=3 {
            let coef: Vec<f32> = (0..3).map(|i| (step * 3 + i) as f32 * if i == 1 { -1.0 } else { 1.0 }).collect();
            let coef = Tensor::new(coef.as_slice(), &device).unwrap();
            let loss = (w.mul(&coef).unwrap() + b.mul(&coef).unwrap()).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), lr, scale).unwrap();
            let g = coef.to_vec1::<f32>().unwrap();
            for (theta, m, v, decay) in &mut reference {
                for i in 0..3 {
                    let g = g[i] as f64 * scale;
                    m[i] = 0.9 * m[i] + 0.1 * g;
                    v[i] = 0.98 * v[i] + 0.02 * g * g;
                    let update = (m[i] / (1.0 - 0.9f64.powi(step))) / ((v[i] / (1.0 - 0.98f64.powi(step))).sqrt() + 1e-6);
                    theta[i] = theta[i] * if *decay { 1.0 - lr * 0.1 } else { 1.0 } - lr * update;
                }
            }
        }
        for (var, (theta, ..)) in [&w, &b].into_iter().zip(&reference) {
            let got = var.to_vec1::<f32>().unwrap();
            assert!(got.iter().zip(theta).all(|(g, t)| (*g as f64 - t).abs() < 1e-6), "{got:?} vs {theta:?}");
        }
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
