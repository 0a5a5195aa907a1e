//! `ys + bias` over rows (the MLM head's vocabulary bias). candle's `broadcast_add` backward sums
//! the bias gradient with a strided reduction over rows; this one sums contiguous rows.

use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `ys + bias` for `ys`: `[rows, n]`, `bias`: `[n]`.
pub fn add_bias(ys: &Tensor, bias: &Tensor) -> Result<Tensor> {
    ys.contiguous()?.apply_op2(bias, AddBias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "repdef-add-bias"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, bias: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ys, bias) = (cpu_f32(ys, yl)?, cpu_f32(bias, bl)?);
        let n = bias.len();
        if n == 0 || ys.len() % n != 0 {
            bail!("bias of {n} for {} elements", ys.len());
        }
        let (_, [out]) = par_row_blocks(ys.len() / n, [n], |rows, [o]| {
            for (o, ys) in o.chunks_exact_mut(n).zip(ys[rows.start * n..rows.end * n].chunks_exact(n)) {
                o.iter_mut().zip(ys).zip(bias).for_each(|((o, &y), &b)| *o = y + b);
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }

    fn bwd(&self, _ys: &Tensor, bias: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = bias.elem_count();
        let db = {
            let (g_s, g_l) = grad.storage_and_layout();
            let g = storage_f32(&g_s, g_l)?;
            let (partials, []) = par_row_blocks(g.len() / n, [], |rows, []| {
                let mut db = vec![0f32; n];
                for g in g[rows.start * n..rows.end * n].chunks_exact(n) {
                    db.iter_mut().zip(g).for_each(|(a, &x)| *a += x);
                }
                db
            });
            sum_partials(partials, n)
        };
        Ok((Some(grad.clone()), Some(Tensor::from_vec(db, n, bias.device())?)))
    }
}
