//! `activation(y + bias)`, the first half of the feed-forward block and of the MLM head, in one
//! pass, with hand-written backward (candle composes GELU's gradient from about ten primitives).

use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use super::simd;
use crate::model::Activation;
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::f32::consts::{FRAC_1_SQRT_2, PI};

/// `activation(ys + bias)` for `ys`: `[rows, n]`, `bias`: `[n]`.
pub fn bias_activation(ys: &Tensor, bias: &Tensor, activation: Activation) -> Result<Tensor> {
    ys.contiguous()?.apply_op2(bias, BiasActivation(activation))
}

/// √(2/π), as in candle's tanh-approximated GELU.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;

/// Exact GELU `u·Φ(u)` with the vectorisable erf.
#[inline(always)]
fn gelu(u: f32) -> f32 {
    0.5 * u * (1.0 + simd::erf(u * FRAC_1_SQRT_2))
}

/// `Φ(u) + u·φ(u)`.
#[inline(always)]
fn gelu_derivative(u: f32) -> f32 {
    0.5 * (1.0 + simd::erf(u * FRAC_1_SQRT_2)) + u * simd::exp(-0.5 * u * u) / (2.0 * PI).sqrt()
}

/// candle's formula (libm tanh: this activation is rare enough not to need a faster one).
fn gelu_tanh(u: f32) -> f32 {
    0.5 * u * (1.0 + (SQRT_TWO_OVER_PI * u * (1.0 + 0.044715 * u * u)).tanh())
}

fn gelu_tanh_derivative(u: f32) -> f32 {
    let t = (SQRT_TWO_OVER_PI * u * (1.0 + 0.044715 * u * u)).tanh();
    0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * u * u)
}

fn relu(u: f32) -> f32 {
    u.max(0.0)
}

/// candle's relu gradient counts 0 as positive.
fn relu_derivative(u: f32) -> f32 {
    f32::from(u >= 0.0)
}

/// `out = f(ys + bias)` row by row: one monomorphic loop per activation, so that it vectorises.
#[inline(always)]
fn map_rows(ys: &[f32], bias: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, ys) in out.chunks_exact_mut(bias.len()).zip(ys.chunks_exact(bias.len())) {
        for ((o, &y), &b) in o.iter_mut().zip(ys).zip(bias) {
            *o = f(y + b);
        }
    }
}

/// `dy = g · f'(ys + bias)` row by row, adding `dy`'s column sums to `db`.
#[inline(always)]
fn map_grad_rows(ys: &[f32], bias: &[f32], g: &[f32], dy: &mut [f32], db: &mut [f32], f: impl Fn(f32) -> f32) {
    let n = bias.len();
    for ((dy, ys), g) in dy.chunks_exact_mut(n).zip(ys.chunks_exact(n)).zip(g.chunks_exact(n)) {
        for ((((dy, &y), &g), &b), db) in dy.iter_mut().zip(ys).zip(g).zip(bias).zip(db.iter_mut()) {
            *dy = g * f(y + b);
            *db += *dy;
        }
    }
}

struct BiasActivation(Activation);

fn rows_of(len: usize, n: usize) -> Result<usize> {
    if n == 0 || len % n != 0 {
        bail!("bias of {n} for {len} elements");
    }
    Ok(len / n)
}

impl CustomOp2 for BiasActivation {
    fn name(&self) -> &'static str {
        "repdef-bias-activation"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, bias: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ys, bias) = (cpu_f32(ys, yl)?, cpu_f32(bias, bl)?);
        let n = bias.len();
        let (_, [out]) = par_row_blocks(rows_of(ys.len(), n)?, [n], |rows, [o]| {
            let ys = &ys[rows.start * n..rows.end * n];
            match self.0 {
                Activation::Gelu => map_rows(ys, bias, o, gelu),
                Activation::GeluTanh => map_rows(ys, bias, o, gelu_tanh),
                Activation::Relu => map_rows(ys, bias, o, relu),
            }
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }

    fn bwd(&self, ys: &Tensor, bias: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (ys_s, ys_l) = ys.storage_and_layout();
        let (b_s, b_l) = bias.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (ys_v, b, g) = (storage_f32(&ys_s, ys_l)?, storage_f32(&b_s, b_l)?, storage_f32(&g_s, g_l)?);
        let n = b.len();
        let (partials, [dy]) = par_row_blocks(rows_of(ys_v.len(), n)?, [n], |rows, [o]| {
            let span = rows.start * n..rows.end * n;
            let (ys, g) = (&ys_v[span.clone()], &g[span]);
            let mut db = vec![0f32; n];
            match self.0 {
                Activation::Gelu => map_grad_rows(ys, b, g, o, &mut db, gelu_derivative),
                Activation::GeluTanh => map_grad_rows(ys, b, g, o, &mut db, gelu_tanh_derivative),
                Activation::Relu => map_grad_rows(ys, b, g, o, &mut db, relu_derivative),
            }
            db
        });
        let device = ys.device();
        Ok((Some(Tensor::from_vec(dy, ys.shape(), device)?), Some(Tensor::from_vec(sum_partials(partials, n), n, device)?)))
    }
}
