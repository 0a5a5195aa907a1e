//! Mean cross-entropy of logits against target ids, one pass per row, with hand-written backward
//! `(softmax − one-hot) / n`. candle-nn's composes `log_softmax` (six nodes over the
//! `[n_picked, d_vocab]` logits, the largest activation of a step) with a gather.

use super::par::{cpu_f32, par_row_blocks, storage_f32};
use super::simd::{exp, max, sum};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::sync::OnceLock;

/// Mean over rows of `−log softmax(logits)[target]`; `logits`: `[n, d_vocab]` f32, `targets`: `[n]` u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy { log_sum_exp: OnceLock::new() })
}

struct CrossEntropy {
    /// Each row's log Σ exp, from forward.
    log_sum_exp: OnceLock<Vec<f32>>,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "repdef-cross-entropy"
    }

    fn cpu_fwd(&self, logits: &CpuStorage, ll: &Layout, targets: &CpuStorage, tl: &Layout) -> Result<(CpuStorage, Shape)> {
        let logits = cpu_f32(logits, ll)?;
        let Some((t0, t1)) = tl.contiguous_offsets() else { bail!("cross-entropy targets must be contiguous") };
        let targets = &targets.as_slice::<u32>()?[t0..t1];
        let (n, vocab) = ll.shape().dims2()?;
        if targets.len() != n || targets.iter().any(|&t| t as usize >= vocab) {
            bail!("cross-entropy: {} targets for {n} rows, or a target beyond the {vocab} classes", targets.len());
        }
        let (losses, [lse]) = par_row_blocks(n, [1], |rows, [lse]| {
            let (mut loss, mut exps) = (0f64, vec![0f32; vocab]);
            for (lse, r) in lse.iter_mut().zip(rows) {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let top = max(row);
                exps.iter_mut().zip(row).for_each(|(e, &x)| *e = exp(x - top));
                *lse = top + sum(&exps).ln();
                loss += (*lse - row[targets[r] as usize]) as f64;
            }
            loss
        });
        let _ = self.log_sum_exp.set(lse);
        let mean = (losses.iter().sum::<f64>() / n.max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(&self, logits: &Tensor, targets: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(lse) = self.log_sum_exp.get() else { bail!("cross-entropy backward before forward") };
        let (n, vocab) = logits.dims2()?;
        let scale = grad.to_scalar::<f32>()? / n as f32;
        let targets = targets.to_vec1::<u32>()?;
        let (l_s, l_l) = logits.storage_and_layout();
        let logits_v = storage_f32(&l_s, l_l)?;
        let (_, [d]) = par_row_blocks(n, [vocab], |rows, [d]| {
            for (d, r) in d.chunks_exact_mut(vocab).zip(rows) {
                let row = &logits_v[r * vocab..(r + 1) * vocab];
                d.iter_mut().zip(row).for_each(|(d, &x)| *d = exp(x - lse[r]) * scale);
                d[targets[r] as usize] -= scale;
            }
        });
        Ok((Some(Tensor::from_vec(d, (n, vocab), logits.device())?), None))
    }
}
