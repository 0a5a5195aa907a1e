//! `activation(x Wᵀ + bias)`, the first half of the feed-forward block and of the MLM head, as
//! one op with hand-written backward: the product (gemm, as in `projection`) and then one pass
//! for the bias and the activation. The product before the activation is kept inside the op
//! rather than being a node of candle's graph, whose backward would zero-fill and add a
//! gradient for it (the widest activation of a block); candle would also compose GELU's
//! gradient from about ten primitives.

use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use super::projection::{self, Operand};
use super::simd;
use crate::model::Activation;
use crate::vectorize;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::f32::consts::{FRAC_1_SQRT_2, PI};
use std::sync::OnceLock;

/// `activation(xs Wᵀ + bias)` for `xs`: `[rows, d_in]`, `weight`: `[n, d_in]`, `bias`: `[n]`.
pub fn linear_activation(xs: &Tensor, weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Tensor> {
    xs.contiguous()?.apply_op3(&weight.contiguous()?, bias, LinearActivation { activation, product: OnceLock::new() })
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
#[inline(always)]
fn gelu_tanh(u: f32) -> f32 {
    0.5 * u * (1.0 + (SQRT_TWO_OVER_PI * u * (1.0 + 0.044715 * u * u)).tanh())
}

#[inline(always)]
fn gelu_tanh_derivative(u: f32) -> f32 {
    let t = (SQRT_TWO_OVER_PI * u * (1.0 + 0.044715 * u * u)).tanh();
    0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * u * u)
}

#[inline(always)]
fn relu(u: f32) -> f32 {
    u.max(0.0)
}

/// candle's relu gradient counts 0 as positive.
#[inline(always)]
fn relu_derivative(u: f32) -> f32 {
    f32::from(u >= 0.0)
}

/// `out = f(ys + bias)` row by row: one monomorphic loop per activation, so that it vectorises.
fn map_rows(ys: &[f32], bias: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    struct MapRows<'a, F> {
        ys: &'a [f32],
        bias: &'a [f32],
        out: &'a mut [f32],
        f: F,
    }
    impl<F: Fn(f32) -> f32> vectorize::Vectorized for MapRows<'_, F> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            let Self { ys, bias, out, f } = self;
            for (o, ys) in out.chunks_exact_mut(bias.len()).zip(ys.chunks_exact(bias.len())) {
                for ((o, &y), &b) in o.iter_mut().zip(ys).zip(bias) {
                    *o = f(y + b);
                }
            }
        }
    }
    vectorize::dispatch(MapRows { ys, bias, out, f })
}

/// `dy = g · f'(ys + bias)` row by row, adding `dy`'s column sums to `db`.
fn map_grad_rows(ys: &[f32], bias: &[f32], g: &[f32], dy: &mut [f32], db: &mut [f32], f: impl Fn(f32) -> f32) {
    struct MapGradRows<'a, F> {
        ys: &'a [f32],
        bias: &'a [f32],
        g: &'a [f32],
        dy: &'a mut [f32],
        db: &'a mut [f32],
        f: F,
    }
    impl<F: Fn(f32) -> f32> vectorize::Vectorized for MapGradRows<'_, F> {
        type Output = ();
        #[inline(always)]
        fn run(self) {
            let Self { ys, bias, g, dy, db, f } = self;
            let n = bias.len();
            for ((dy, ys), g) in dy.chunks_exact_mut(n).zip(ys.chunks_exact(n)).zip(g.chunks_exact(n)) {
                for ((((dy, &y), &g), &b), db) in dy.iter_mut().zip(ys).zip(g).zip(bias).zip(db.iter_mut()) {
                    *dy = g * f(y + b);
                    *db += *dy;
                }
            }
        }
    }
    vectorize::dispatch(MapGradRows { ys, bias, g, dy, db, f })
}

/// `activation(xs Wᵀ + bias)` on slices (`xs`: `[rows, d_in]`, `w`: `[n, d_in]`) → (the product
/// `xs Wᵀ`, which backward needs, and the activations), both `[rows, n]`.
pub(super) fn forward(activation: Activation, xs: &[f32], w: &[f32], bias: &[f32], (rows, d_in, n): (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let ys = projection::product(rows, d_in, n, Operand::rows(xs, d_in), Operand::transposed(w, d_in));
    let (_, [out]) = par_row_blocks(rows, [n], |rows, [o]| {
        let ys = &ys[rows.start * n..rows.end * n];
        match activation {
            Activation::Gelu => map_rows(ys, bias, o, gelu),
            Activation::GeluTanh => map_rows(ys, bias, o, gelu_tanh),
            Activation::Relu => map_rows(ys, bias, o, relu),
        }
    });
    (ys, out)
}

/// The gradients of [`forward`] for the output gradient `g` (`[rows, n]`), given the product
/// `ys` it saved → (∂/∂xs, ∂/∂W, ∂/∂bias).
pub(super) fn backward(
    activation: Activation,
    (ys, xs, w, bias): (&[f32], &[f32], &[f32], &[f32]),
    g: &[f32],
    (rows, d_in, n): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (partials, [dy]) = par_row_blocks(rows, [n], |rows, [o]| {
        let span = rows.start * n..rows.end * n;
        let (ys, g) = (&ys[span.clone()], &g[span]);
        let mut db = vec![0f32; n];
        match activation {
            Activation::Gelu => map_grad_rows(ys, bias, g, o, &mut db, gelu_derivative),
            Activation::GeluTanh => map_grad_rows(ys, bias, g, o, &mut db, gelu_tanh_derivative),
            Activation::Relu => map_grad_rows(ys, bias, g, o, &mut db, relu_derivative),
        }
        db
    });
    let (dx, dw) = projection::product_grads(&dy, xs, w, (rows, d_in, n));
    (dx, dw, sum_partials(partials, n))
}

struct LinearActivation {
    activation: Activation,
    /// `x Wᵀ`, set by the forward pass, read by backward.
    product: OnceLock<Vec<f32>>,
}

impl CustomOp3 for LinearActivation {
    fn name(&self) -> &'static str {
        "repdef-linear-activation"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, bias: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in, n) = projection::dims(xl.shape(), wl.shape())?;
        let (xs, w, bias) = (cpu_f32(xs, xl)?, cpu_f32(w, wl)?, cpu_f32(bias, bl)?);
        if bias.len() != n {
            bail!("linear activation: bias of {} for {n} outputs", bias.len());
        }
        let (ys, out) = forward(self.activation, xs, w, bias, (rows, d_in, n));
        if self.product.set(ys).is_err() {
            bail!("linear activation op applied twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }

    fn bwd(&self, xs: &Tensor, w: &Tensor, bias: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(ys_v) = self.product.get() else { bail!("linear activation backward before forward") };
        let (rows, d_in, n) = projection::dims(xs.shape(), w.shape())?;
        let grad = grad.contiguous()?;
        let (xs_s, xs_l) = xs.storage_and_layout();
        let (w_s, w_l) = w.storage_and_layout();
        let (b_s, b_l) = bias.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (xs_v, w_v, b, g) = (storage_f32(&xs_s, xs_l)?, storage_f32(&w_s, w_l)?, storage_f32(&b_s, b_l)?, storage_f32(&g_s, g_l)?);
        let (dx, dw, db) = backward(self.activation, (ys_v, xs_v, w_v, b), g, (rows, d_in, n));
        let device = xs.device();
        Ok((Some(Tensor::from_vec(dx, xs.shape(), device)?), Some(Tensor::from_vec(dw, w.shape(), device)?), Some(Tensor::from_vec(db, n, device)?)))
    }
}
