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
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
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
    // A custom op takes at most three tensors: the parameters travel as one vector, in the
    // order `Parts::split` reads them.
    let params = Tensor::cat(&[&w_in.flatten_all()?, b_in, &w_out.flatten_all()?, b_out, ln_weight, ln_bias], 0)?;
    let op = FeedForward { d_mlp: w_in.dim(0)?, activation, eps: eps as f32, dropout, differentiable, saved: OnceLock::new() };
    xs.contiguous()?.apply_op2(&params, op)
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

/// The packed parameter vector, split: `[w_in (d_mlp·d) | b_in (d_mlp) | w_out (d·d_mlp) |
/// b_out, ln_weight, ln_bias (3·d)]`; the last three in the layout of `residual_norm_forward`.
struct Parts<'a> {
    w_in: &'a [f32],
    b_in: &'a [f32],
    w_out: &'a [f32],
    norm: &'a [f32],
}

impl<'a> Parts<'a> {
    fn split(params: &'a [f32], d: usize, d_mlp: usize) -> Result<Self> {
        if params.len() != 2 * d * d_mlp + d_mlp + 3 * d {
            bail!("feed forward: {} parameters do not fit d_model {d} and d_mlp {d_mlp}", params.len());
        }
        let (w_in, rest) = params.split_at(d_mlp * d);
        let (b_in, rest) = rest.split_at(d_mlp);
        let (w_out, norm) = rest.split_at(d * d_mlp);
        Ok(Parts { w_in, b_in, w_out, norm })
    }
}

impl CustomOp2 for FeedForward {
    fn name(&self) -> &'static str {
        "repdef-feed-forward"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, p: &CpuStorage, pl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = xl.shape().dims2()?;
        let (xs, n) = (cpu_f32(xs, xl)?, self.d_mlp);
        let parts = Parts::split(cpu_f32(p, pl)?, d, n)?;
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

    fn bwd(&self, xs: &Tensor, params: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some([product, activations, ys]) = self.saved.get() else { bail!("feed forward backward before forward") };
        let ((rows, d), n) = (xs.dims2()?, self.d_mlp);
        let grad = grad.contiguous()?;
        let (xs_s, xs_l) = xs.storage_and_layout();
        let (p_s, p_l) = params.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (xs_v, g) = (storage_f32(&xs_s, xs_l)?, storage_f32(&g_s, g_l)?);
        let parts = Parts::split(storage_f32(&p_s, p_l)?, d, n)?;
        let (dh, dys, dnorm) = residual_norm_backward((ys, xs_v, parts.norm), g, self.eps, self.dropout.as_deref());
        let dys = dys.as_deref().unwrap_or(&dh);
        let (dactivations, dw_out) = projection::product_grads(dys, activations, parts.w_out, (rows, n, d), n);
        let (mut dx, dw_in, db_in) = activation::backward(self.activation, (product, xs_v, parts.w_in, parts.b_in), &dactivations, (rows, d, n));
        // `xs` also feeds the residual add, whose gradient is ∂/∂h.
        dx.iter_mut().zip(&dh).for_each(|(dx, &dh)| *dx += dh);
        let dparams = [dw_in, db_in, dw_out, dnorm].concat();
        let device = xs.device();
        Ok((Some(Tensor::from_vec(dx, xs.shape(), device)?), Some(Tensor::from_vec(dparams, params.shape(), device)?)))
    }
}
