//! The attention half of a post-LN block, `LayerNorm(dropout(attention(x) W_oᵀ + b_o) + x)`, as
//! one op with hand-written backward: the attention core (`attention`), the output projection
//! and the residual LayerNorm (`layer_norm`'s slice-level passes), optionally only at some rows
//! (the last block of a pretraining model, whose output the loss reads at the picked ~15%): then
//! only those rows attend (are queries), though every row is attended to.
//!
//! As separate ops, the attended values and their projection would be nodes of candle's graph,
//! each given a zero-filled gradient and an add in backward (serially, on one thread), and `x`,
//! which feeds both the attention and the residual, two gradients to add. Here the block input's
//! gradient is the only one candle accumulates.

use super::attention::{self, add_into_rows, gather_rows, gathered, Attention};
use super::dropout::DropoutMask;
use super::layer_norm::{check_residual_sizes, residual_norm_backward, residual_norm_forward};
use super::par::{cpu_f32, storage_f32};
use super::projection::{self, Operand};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// The parameters of the attention half of a block: the query, key, value and output
/// projections, each `(weight, bias)` (`[d, d]` in PyTorch's `[out, in]` layout, and `[d]`), and
/// the LayerNorm after the residual add.
pub struct AttentionWeights<'a> {
    pub projections: [(&'a Tensor, &'a Tensor); 4],
    pub ln_weight: &'a Tensor,
    pub ln_bias: &'a Tensor,
}

/// The block's dropout masks: on the attention probabilities and on the projected output.
pub struct AttentionDropout {
    pub probs: Option<Arc<DropoutMask>>,
    pub hidden: Option<Arc<DropoutMask>>,
}

/// `LayerNorm(dropout(attention(xs) W_oᵀ + b_o) + xs)` for `xs`: `[batch·pos, d]`, with
/// `n_heads` heads and `additive` added to the logits (`[1 or batch, 1 or n_heads, 1 or pos,
/// pos]`: a padding mask, or with a position bias, which gets its gradient) → `[batch·pos, d]`;
/// with `rows` (u32 indices of rows of `xs`), the output at those rows only, `[rows.len(), d]`
/// (every row is still attended to). Unless `differentiable`, nothing is kept for backward.
pub fn attention_block(
    xs: &Tensor,
    weights: AttentionWeights,
    (additive, n_heads): (&Tensor, usize),
    eps: f64,
    rows: Option<&Tensor>,
    dropout: AttentionDropout,
    differentiable: bool,
) -> Result<Tensor> {
    let AttentionWeights { projections: [(w_q, b_q), (w_k, b_k), (w_v, b_v), (w_out, b_out)], ln_weight, ln_bias } = weights;
    // A custom op takes at most three tensors: the parameters travel as one `[4·d + 6, d]`
    // matrix, rows in the order `Parts::split` reads them. Each parameter is one part of one
    // concatenation, so backward hands each its gradient in one step.
    let row = |v: &Tensor| v.unsqueeze(0);
    let biases = [row(b_q)?, row(b_k)?, row(b_v)?, row(b_out)?, row(ln_weight)?, row(ln_bias)?];
    let params = Tensor::cat(&[w_q, w_k, w_v, w_out].into_iter().chain(&biases).collect::<Vec<_>>(), 0)?;
    let op = AttentionBlock {
        attention: Attention { n_heads, dropout: dropout.probs },
        rows: rows.map(Tensor::to_vec1::<u32>).transpose()?.map(OutputRows::new),
        eps: eps as f32,
        dropout: dropout.hidden,
        differentiable,
        saved: OnceLock::new(),
    };
    xs.contiguous()?.apply_op3(&params, &additive.contiguous()?, op)
}

struct AttentionBlock {
    attention: Attention,
    /// The output rows, if not all.
    rows: Option<OutputRows>,
    eps: f32,
    dropout: Option<Arc<DropoutMask>>,
    /// Whether backward may run: otherwise nothing is kept for it.
    differentiable: bool,
    saved: OnceLock<Saved>,
}

/// The rows a block's output is wanted at, and the queries of its attention.
struct OutputRows {
    /// As asked for: any order, repeats allowed.
    rows: Vec<u32>,
    /// The same rows, ascending, each once: the rows that attend.
    queries: Vec<u32>,
    /// For each output row, its index in `queries`; `None` when the rows already are the queries.
    query_of: Option<Vec<u32>>,
}

impl OutputRows {
    fn new(rows: Vec<u32>) -> Self {
        let mut queries = rows.clone();
        queries.sort_unstable();
        queries.dedup();
        let query_of = (queries != rows).then(|| rows.iter().map(|r| queries.binary_search(r).expect("every row is a query") as u32).collect());
        OutputRows { rows, queries, query_of }
    }

    /// The attended values of the queries (rows of `d`) → those of the output rows.
    fn at_output_rows(&self, attended: Vec<f32>, d: usize) -> Vec<f32> {
        match &self.query_of {
            Some(query_of) => gather_rows(&attended, query_of, d),
            None => attended,
        }
    }

    /// The gradient for the output rows → that for the queries (a repeated row's added up).
    fn summed_per_query(&self, g: Vec<f32>, d: usize) -> Vec<f32> {
        let Some(query_of) = &self.query_of else { return g };
        let mut summed = vec![0f32; self.queries.len() * d];
        add_into_rows(&g, query_of, &mut summed, d);
        summed
    }
}

/// What the forward pass keeps for backward.
struct Saved {
    attention: attention::Saved,
    /// The attended values at the output rows, `[out_rows, d]`.
    attended: Vec<f32>,
    /// Their projection `attended W_oᵀ`.
    projected: Vec<f32>,
    /// The block input at the output rows when not all (otherwise backward reads the input).
    residual_rows: Option<Vec<f32>>,
}

/// The packed parameters, split: `[w_q, w_k, w_v (3·d·d) | w_out (d·d) | b_q, b_k, b_v (3·d) |
/// b_out, ln_weight, ln_bias (3·d)]`; the last three in the layout of `residual_norm_forward`.
struct Parts<'a> {
    /// The query, key and value weights, `[3·d, d]`.
    w_qkv: &'a [f32],
    w_out: &'a [f32],
    b_qkv: &'a [f32],
    norm: &'a [f32],
}

impl<'a> Parts<'a> {
    fn split(params: &'a [f32], d: usize) -> Result<Self> {
        if params.len() != 4 * d * d + 6 * d {
            bail!("attention block: {} parameters do not fit d_model {d}", params.len());
        }
        let (w_qkv, rest) = params.split_at(3 * d * d);
        let (w_out, rest) = rest.split_at(d * d);
        let (b_qkv, norm) = rest.split_at(3 * d);
        Ok(Parts { w_qkv, w_out, b_qkv, norm })
    }
}

impl AttentionBlock {
    /// `xs` (rows of `d`) at the output rows.
    fn at_rows<'a>(&self, xs: &'a [f32], d: usize) -> Cow<'a, [f32]> {
        match &self.rows {
            Some(rows) => Cow::Owned(gather_rows(xs, &rows.rows, d)),
            None => Cow::Borrowed(xs),
        }
    }

    /// Adds `g` (`[out_rows, d]`) into `into` (`[rows, d]`) at the output rows.
    fn add_at_rows(&self, g: &[f32], into: &mut [f32], d: usize) {
        match &self.rows {
            Some(rows) => add_into_rows(g, &rows.rows, into, d),
            None => into.iter_mut().zip(g).for_each(|(x, &g)| *x += g),
        }
    }
}

impl CustomOp3 for AttentionBlock {
    fn name(&self) -> &'static str {
        "repdef-attention-block"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, p: &CpuStorage, pl: &Layout, additive: &CpuStorage, al: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, d) = xl.shape().dims2()?;
        let (xs, additive) = (cpu_f32(xs, xl)?, cpu_f32(additive, al)?);
        let parts = Parts::split(cpu_f32(p, pl)?, d)?;
        if let Some(bad) = self.rows.iter().flat_map(|rows| &rows.queries).find(|&&r| r as usize >= n) {
            bail!("attention block: output row {bad} of {n} rows");
        }
        let queries = self.rows.as_ref().map(|rows| &rows.queries[..]);
        let (attended, attention) = self.attention.forward(xs, (parts.w_qkv, parts.b_qkv), (additive, al.shape()), (n, d, d), queries)?;
        // In inference the projections and probabilities go before the rest of the block runs.
        let attention = self.differentiable.then_some(attention);
        let attended = match &self.rows {
            Some(rows) => rows.at_output_rows(attended, d),
            None => attended,
        };
        let residual = self.at_rows(xs, d);
        check_residual_sizes(attended.len(), residual.len(), parts.norm.len(), self.dropout.as_deref())?;
        let out_rows = attended.len() / d;
        let projected = projection::product(out_rows, d, d, Operand::rows(&attended, d), Operand::transposed(parts.w_out, d));
        let out = residual_norm_forward(&projected, &residual, parts.norm, self.eps, self.dropout.as_deref());
        if let Some(attention) = attention {
            if self.saved.set(Saved { attention, attended, projected, residual_rows: gathered(residual) }).is_err() {
                bail!("attention block op applied twice");
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((out_rows, d))))
    }

    fn bwd(&self, xs: &Tensor, params: &Tensor, additive: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else { bail!("attention block backward before forward") };
        let d = xs.dim(1)?;
        let grad = grad.contiguous()?;
        let (xs_s, xs_l) = xs.storage_and_layout();
        let (p_s, p_l) = params.storage_and_layout();
        let (g_s, g_l) = grad.storage_and_layout();
        let (xs_v, g) = (storage_f32(&xs_s, xs_l)?, storage_f32(&g_s, g_l)?);
        let parts = Parts::split(storage_f32(&p_s, p_l)?, d)?;
        let residual = saved.residual_rows.as_deref().unwrap_or(xs_v);
        let (dh, dprojected, dnorm) = residual_norm_backward((&saved.projected, residual, parts.norm), g, self.eps, self.dropout.as_deref());
        let dprojected = dprojected.as_deref().unwrap_or(&dh);
        let out_rows = saved.attended.len() / d;
        let (dattended, dw_out) = projection::product_grads(dprojected, &saved.attended, parts.w_out, (out_rows, d, d));
        let dattended = match &self.rows {
            Some(rows) => rows.summed_per_query(dattended, d),
            None => dattended,
        };
        let attention::AttentionGrads { mut dx, dw_q, dw_kv, dbias, d_additive } = self.attention.backward(&saved.attention, xs_v, parts.w_qkv, &dattended);
        // `xs` also feeds the residual add, whose gradient is ∂/∂h.
        self.add_at_rows(&dh, &mut dx, d);
        let dparams = [dw_q, dw_kv, dw_out, dbias, dnorm].concat();
        let device = xs.device();
        Ok((
            Some(Tensor::from_vec(dx, xs.shape(), device)?),
            Some(Tensor::from_vec(dparams, params.shape(), device)?),
            d_additive.map(|da| Tensor::from_vec(da, additive.shape(), device)).transpose()?,
        ))
    }
}
