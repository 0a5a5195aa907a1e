//! LayerNorm over the last dimension with hand-written backward: alone (an op), and fused with
//! what precedes it in a post-LN block, `LayerNorm(dropout(y + bias) + residual)`, as passes
//! over slices that the blocks' ops (`attention_block`, `feed_forward`) run. Statistics are
//! recomputed in backward instead of saved: one extra read of a row that is in cache anyway.

use super::dropout::DropoutMask;
use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use super::simd::{dot, squared_deviations, sum};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// `LayerNorm(xs) · weight + bias` for `xs`: `[rows, d]`.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    xs.contiguous()?.apply_op3(weight, bias, LayerNorm { eps: eps as f32 })
}

/// Mean and 1/std of one row.
fn row_stats(h: &[f32], eps: f32) -> (f32, f32) {
    let d = h.len() as f32;
    let mean = sum(h) / d;
    let var = squared_deviations(h, mean) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `out = (h - mean) / std · w + b`.
fn forward_row(h: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let (mean, rstd) = row_stats(h, eps);
    for (((o, &x), &w), &b) in out.iter_mut().zip(h).zip(w).zip(b) {
        *o = (x - mean) * rstd * w + b;
    }
}

/// Gradient of one row: `dh` from the output gradient `g`; adds to the column sums `dw`, `db`.
/// `scratch` holds x̂ and then ∂/∂x̂ (two rows of `d`).
fn backward_row(h: &[f32], g: &[f32], w: &[f32], eps: f32, dh: &mut [f32], (dw, db): (&mut [f32], &mut [f32]), scratch: &mut [f32]) {
    let d = h.len();
    let (mean, rstd) = row_stats(h, eps);
    let (xhat, dxhat) = scratch.split_at_mut(d);
    for (i, &x) in h.iter().enumerate() {
        xhat[i] = (x - mean) * rstd;
        dxhat[i] = g[i] * w[i];
        dw[i] += g[i] * xhat[i];
        db[i] += g[i];
    }
    let c1 = sum(dxhat) / d as f32;
    let c2 = dot(dxhat, xhat) / d as f32;
    for ((o, &dx), &x) in dh.iter_mut().zip(dxhat.iter()).zip(xhat.iter()) {
        *o = rstd * (dx - c1 - x * c2);
    }
}

fn check_width(rows_len: usize, d: usize, what: &str) -> Result<usize> {
    if d == 0 || rows_len % d != 0 {
        bail!("{what}: {rows_len} elements are not rows of {d}");
    }
    Ok(rows_len / d)
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "repdef-layer-norm"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (xs, w, b) = (cpu_f32(xs, xl)?, cpu_f32(w, wl)?, cpu_f32(b, bl)?);
        let d = w.len();
        let rows = check_width(xs.len(), d, "layer norm")?;
        let (_, [out]) = par_row_blocks(rows, [d], |r, [o]| {
            for (i, row) in r.enumerate() {
                forward_row(&xs[row * d..(row + 1) * d], w, b, self.eps, &mut o[i * d..(i + 1) * d]);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, _b: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xs_s, xs_l) = xs.storage_and_layout();
        let (w_s, w_l) = w.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (xs_v, w_v, g) = (storage_f32(&xs_s, xs_l)?, storage_f32(&w_s, w_l)?, storage_f32(&g_s, g_l)?);
        let d = w_v.len();
        let rows = check_width(xs_v.len(), d, "layer norm backward")?;
        let (partials, [dx]) = par_row_blocks(rows, [d], |r, [o]| {
            let (mut dw, mut db, mut scratch) = (vec![0f32; d], vec![0f32; d], vec![0f32; 2 * d]);
            for (i, row) in r.enumerate() {
                let span = row * d..(row + 1) * d;
                backward_row(&xs_v[span.clone()], &g[span], w_v, self.eps, &mut o[i * d..(i + 1) * d], (&mut dw, &mut db), &mut scratch);
            }
            (dw, db)
        });
        let (dw, db): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
        let device = xs.device();
        Ok((
            Some(Tensor::from_vec(dx, xs.shape(), device)?),
            Some(Tensor::from_vec(sum_partials(dw, d), d, device)?),
            Some(Tensor::from_vec(sum_partials(db, d), d, device)?),
        ))
    }
}

/// `h = dropout(y + bias) + residual` for one row starting at element `offset`.
fn pre_norm(dropout: Option<&DropoutMask>, ys: &[f32], bias: &[f32], residual: &[f32], offset: usize, h: &mut [f32]) {
    let rows = h.iter_mut().zip(ys).zip(bias).zip(residual);
    match dropout {
        Some(mask) => rows.zip(mask.factors(offset..offset + ys.len())).for_each(|((((h, &y), &b), &r), f)| *h = (y + b) * f + r),
        None => rows.for_each(|(((h, &y), &b), &r)| *h = y + b + r),
    }
}

/// `LayerNorm(dropout(ys + bias) + residual) · weight + ln_bias` on slices (`ys`, `residual`:
/// `[rows, d]`; `params`: `[bias, weight, ln_bias]`, `3·d`).
pub(super) fn residual_norm_forward(ys: &[f32], residual: &[f32], params: &[f32], eps: f32, dropout: Option<&DropoutMask>) -> Vec<f32> {
    let d = params.len() / 3;
    let rows = ys.len() / d;
    let (bias, w, b) = (&params[..d], &params[d..2 * d], &params[2 * d..]);
    let (_, [out]) = par_row_blocks(rows, [d], |r, [o]| {
        let mut h = vec![0f32; d];
        for (i, row) in r.enumerate() {
            let span = row * d..(row + 1) * d;
            pre_norm(dropout, &ys[span.clone()], bias, &residual[span.clone()], span.start, &mut h);
            forward_row(&h, w, b, eps, &mut o[i * d..(i + 1) * d]);
        }
    });
    out
}

/// The gradients of [`residual_norm_forward`] for the output gradient `g` → (∂/∂residual, which
/// is ∂/∂h; ∂/∂ys, that times the dropout factors, `None` without dropout, where it equals
/// ∂/∂residual; ∂/∂params).
pub(super) fn residual_norm_backward(
    (ys, residual, params): (&[f32], &[f32], &[f32]),
    g: &[f32],
    eps: f32,
    dropout: Option<&DropoutMask>,
) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
    let d = params.len() / 3;
    let rows = ys.len() / d;
    let (bias, w) = (&params[..d], &params[d..2 * d]);
    let dy_width = if dropout.is_some() { d } else { 0 };
    let (partials, [dh, dy]) = par_row_blocks(rows, [d, dy_width], |r, [dh_o, dy_o]| {
        let (mut dbias, mut dw, mut db) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
        let (mut h, mut scratch) = (vec![0f32; d], vec![0f32; 2 * d]);
        for (i, row) in r.enumerate() {
            let span = row * d..(row + 1) * d;
            pre_norm(dropout, &ys[span.clone()], bias, &residual[span.clone()], span.start, &mut h);
            let dh_row = &mut dh_o[i * d..(i + 1) * d];
            backward_row(&h, &g[span.clone()], w, eps, dh_row, (&mut dw, &mut db), &mut scratch);
            let dy_row: &[f32] = match dropout {
                Some(mask) => {
                    let dy_row = &mut dy_o[i * d..(i + 1) * d];
                    mask.apply(dh_row, span.start, dy_row);
                    dy_row
                }
                None => dh_row,
            };
            dbias.iter_mut().zip(dy_row).for_each(|(a, &x)| *a += x);
        }
        [dbias, dw, db]
    });
    let dparams: Vec<f32> = (0..3).flat_map(|k| sum_partials(partials.iter().map(|p| p[k].clone()), d)).collect();
    (dh, dropout.map(|_| dy), dparams)
}

/// Checks the inputs of a residual LayerNorm: `ys` and `residual` of whole rows of `d` (from
/// `3·d` parameters), and a dropout mask (if any) of the same size.
pub(super) fn check_residual_sizes(ys: usize, residual: usize, params: usize, dropout: Option<&DropoutMask>) -> Result<()> {
    check_width(ys, params / 3, "residual layer norm")?;
    if params % 3 != 0 || residual != ys || dropout.is_some_and(|m| m.len() != ys) {
        bail!("residual layer norm: input, residual, parameters and dropout mask sizes differ");
    }
    Ok(())
}
