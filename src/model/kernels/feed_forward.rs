//! The feed-forward half of a post-LN block, `LayerNorm(dropout(act(x W_inᵀ + b_in) W_outᵀ +
//! b_out) + x)`, as one op with hand-written backward, composed of the `activation`,
//! `projection` and `layer_norm` kernels' slice-level passes.
//!
//! As separate ops, the block's intermediate activations (the widest of a step, `d_mlp` per
//! row) and its projection would each be a node of candle's graph, whose backward zero-fills a
//! fresh gradient for each and adds into it, serially on one thread; and `x`, which feeds both
//! the product and the residual, would receive two gradients. Here they stay inside the op: the
//! only gradient candle accumulates is the block input's, once.

use super::activation;
use super::dropout::DropoutMask;
use super::layer_norm::{check_residual_sizes, residual_norm_backward, residual_norm_forward};
use super::par::{cpu_f32, storage_f32};
use super::projection::{self, Operand};
use crate::model::Activation;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

/// The parameters of the feed-forward half of a block: the two linear layers (weights in
/// PyTorch's `[out, in]` layout) and the LayerNorm that follows the residual add.
pub struct FeedForwardWeights<'a> {
    pub w_in: &'a Tensor,
    pub b_in: &'a Tensor,
    pub w_out: &'a Tensor,
    pub b_out: &'a Tensor,
    pub ln_weight: &'a Tensor,
    pub ln_bias: &'a Tensor,
}

/// `LayerNorm(dropout(act(xs W_inᵀ + b_in) W_outᵀ + b_out) + xs)` for `xs`: `[rows, d]`. Unless
/// `differentiable`, nothing is kept for backward.
pub fn feed_forward(
    xs: &Tensor,
    weights: FeedForwardWeights,
    activation: Activation,
    eps: f64,
    dropout: Option<Arc<DropoutMask>>,
    differentiable: bool,
) -> Result<Tensor> {
    let FeedForwardWeights { w_in, b_in, w_out, b_out, ln_weight, ln_bias } = weights;
    // A custom op takes at most three tensors: the parameters travel as two matrices, grouped
    // by row width (`[w_in; b_out; ln_weight; ln_bias]`, rows of d, and `[w_out; b_in]`, rows of
    // d_mlp), so each parameter is one part of one concatenation and backward hands each its
    // gradient in one step.
    let row = |v: &Tensor| v.unsqueeze(0);
    let rows_of_d = Tensor::cat(&[w_in, &row(b_out)?, &row(ln_weight)?, &row(ln_bias)?], 0)?;
    let rows_of_d_mlp = Tensor::cat(&[w_out, &row(b_in)?], 0)?;
    let op = FeedForward { d_mlp: w_in.dim(0)?, activation, eps: eps as f32, dropout, differentiable, saved: OnceLock::new() };
    xs.contiguous()?.apply_op3(&rows_of_d, &rows_of_d_mlp, op)
}

struct FeedForward {
    d_mlp: usize,
    activation: Activation,
    eps: f32,
    dropout: Option<Arc<DropoutMask>>,
    /// Whether backward may run: otherwise nothing is kept for it.
    differentiable: bool,
    /// Set by the forward pass, read by backward: the first product `xs W_inᵀ`, its activations
    /// and the second product, each `[rows, ·]`.
    saved: OnceLock<[Vec<f32>; 3]>,
}

/// The packed parameters, split: `[w_in (d_mlp·d) | b_out, ln_weight, ln_bias (3·d)]` (the
/// last three in the layout of `residual_norm_forward`) and `[w_out (d·d_mlp) | b_in (d_mlp)]`.
struct Parts<'a> {
    w_in: &'a [f32],
    b_in: &'a [f32],
    w_out: &'a [f32],
    norm: &'a [f32],
}

impl<'a> Parts<'a> {
    fn split(rows_of_d: &'a [f32], rows_of_d_mlp: &'a [f32], d: usize, d_mlp: usize) -> Result<Self> {
        if rows_of_d.len() != (d_mlp + 3) * d || rows_of_d_mlp.len() != (d + 1) * d_mlp {
            bail!("feed forward: {} and {} parameters do not fit d_model {d} and d_mlp {d_mlp}", rows_of_d.len(), rows_of_d_mlp.len());
        }
        let (w_in, norm) = rows_of_d.split_at(d_mlp * d);
        let (w_out, b_in) = rows_of_d_mlp.split_at(d * d_mlp);
        Ok(Parts { w_in, b_in, w_out, norm })
    }
}

impl CustomOp3 for FeedForward {
    fn name(&self) -> &'static str {
        "repdef-feed-forward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, p: &CpuStorage, pl: &Layout, q: &CpuStorage, ql: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = xl.shape().dims2()?;
        let (xs, n) = (cpu_f32(xs, xl)?, self.d_mlp);
        let parts = Parts::split(cpu_f32(p, pl)?, cpu_f32(q, ql)?, d, n)?;
        check_residual_sizes(rows * d, xs.len(), parts.norm.len(), self.dropout.as_deref())?;
        let (product, activations) = activation::forward(self.activation, xs, parts.w_in, parts.b_in, (rows, d, n));
        // In inference the first product goes before the rest of the block runs.
        let product = self.differentiable.then_some(product);
        let ys = projection::product(rows, n, d, Operand::rows(&activations, n), Operand::transposed(parts.w_out, n));
        let out = residual_norm_forward(&ys, xs, parts.norm, self.eps, self.dropout.as_deref());
        if let Some(product) = product {
            if self.saved.set([product, activations, ys]).is_err() {
                bail!("feed forward op applied twice");
            }
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        rows_of_d: &Tensor,
        rows_of_d_mlp: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some([product, activations, ys]) = self.saved.get() else { bail!("feed forward backward before forward") };
        let ((rows, d), n) = (xs.dims2()?, self.d_mlp);
        let grad = grad.contiguous()?;
        let (xs_s, xs_l) = xs.storage_and_layout();
        let (p_s, p_l) = rows_of_d.storage_and_layout();
        let (q_s, q_l) = rows_of_d_mlp.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (xs_v, g) = (storage_f32(&xs_s, xs_l)?, storage_f32(&g_s, g_l)?);
        let parts = Parts::split(storage_f32(&p_s, p_l)?, storage_f32(&q_s, q_l)?, d, n)?;
        let (dh, dys, dnorm) = residual_norm_backward((ys, xs_v, parts.norm), g, self.eps, self.dropout.as_deref());
        let dys = dys.as_deref().unwrap_or(&dh);
        let (dactivations, dw_out) = projection::product_grads(dys, activations, parts.w_out, (rows, n, d));
        let (mut dx, dw_in, db_in) = activation::backward(self.activation, (product, xs_v, parts.w_in, parts.b_in), &dactivations, (rows, d, n));
        // `xs` also feeds the residual add, whose gradient is ∂/∂h.
        dx.iter_mut().zip(&dh).for_each(|(dx, &dh)| *dx += dh);
        let device = xs.device();
        Ok((
            Some(Tensor::from_vec(dx, xs.shape(), device)?),
            Some(Tensor::from_vec([dw_in, dnorm].concat(), rows_of_d.shape(), device)?),
            Some(Tensor::from_vec([dw_out, db_in].concat(), rows_of_d_mlp.shape(), device)?),
        ))
    }
}
