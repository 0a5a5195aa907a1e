//! One post-LN transformer block: self-attention → add & LayerNorm → GELU FFN → add & LayerNorm.
//! Mirrors HF `BertLayer` (names `attention.self.{query,key,value}`, `attention.output.*`,
//! `intermediate.dense`, `output.*`); also used, with dropout 0, by the MAE-LM decoder.

use super::kernels;
use super::ops::{Activation, AttentionMask, Ctx, LayerNorm, Linear};
use super::taps::Tap;
use crate::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

pub struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    activation: Activation,
    n_heads: usize,
    hidden_dropout: f64,
    attention_dropout: f64,
}

impl Layer {
    /// `dropout_scale` is 1 for encoder layers and 0 for the MAE-LM decoder (official default).
    pub fn load(vb: VarBuilder, cfg: &ModelConfig, dropout_scale: f64) -> Result<Self> {
        let (d, d_mlp, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attention = vb.pp("attention");
        Ok(Layer {
            query: Linear::load(attention.pp("self.query"), d, d)?,
            key: Linear::load(attention.pp("self.key"), d, d)?,
            value: Linear::load(attention.pp("self.value"), d, d)?,
            attention_out: Linear::load(attention.pp("output.dense"), d, d)?,
            attention_norm: LayerNorm::load(attention.pp("output.LayerNorm"), d, eps)?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), d, d_mlp)?,
            output: Linear::load(vb.pp("output.dense"), d_mlp, d)?,
            output_norm: LayerNorm::load(vb.pp("output.LayerNorm"), d, eps)?,
            activation: Activation::parse(&cfg.hidden_act)?,
            n_heads: cfg.num_attention_heads,
            hidden_dropout: cfg.hidden_dropout_prob * dropout_scale,
            attention_dropout: cfg.attention_probs_dropout_prob * dropout_scale,
        })
    }

    /// `xs`: `[batch·pos, d_model]` → the same shape.
    pub fn forward(&self, xs: &Tensor, mask: &AttentionMask, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_at(xs, mask, None, ctx)
    }

    /// [`Layer::forward`] whose output is wanted only at `rows` (of `xs`), if given: every row
    /// is still attended to (keys and values everywhere), but only those rows attend, and the
    /// output projection, the FFN and both LayerNorms run there only → `[rows.len(), d_model]`.
    /// The pretraining loss reads the last block at the picked ~15% of positions, so this skips
    /// most of that block's work.
    pub fn forward_at(&self, xs: &Tensor, mask: &AttentionMask, rows: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        let resid_mid = self.attention_half(xs, mask, rows, ctx)?;
        self.feed_forward_half(&resid_mid, ctx)
    }

    /// `LayerNorm(dropout(activation(xs W_inᵀ + b_in) W_outᵀ + b_out) + xs)` for `xs`: `[rows,
    /// d_model]`; one fused op on the CPU.
    pub(super) fn feed_forward_half(&self, xs: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.fused(xs) {
            let mask = ctx.dropout_mask(xs.elem_count(), self.hidden_dropout);
            let (ln_weight, ln_bias, eps) = self.output_norm.params();
            let weights = kernels::FeedForwardWeights {
                w_in: self.intermediate.weight(),
                b_in: self.intermediate.bias(),
                w_out: self.output.weight(),
                b_out: self.output.bias(),
                ln_weight,
                ln_bias,
            };
            return Ok(kernels::feed_forward(xs, weights, self.activation, eps, mask, ctx.training())?);
        }
        let mlp = self.activation.forward(&self.intermediate.forward(xs)?)?;
        self.output_norm.forward_residual(&self.output, &mlp, xs, self.hidden_dropout, ctx)
    }

    /// `LayerNorm(dropout(attention(xs) W_oᵀ + b_o) + xs)`, at `rows` only if given; one fused op
    /// on the CPU.
    fn attention_half(&self, xs: &Tensor, mask: &AttentionMask, rows: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        if ctx.fused(xs) {
            let (batch, pos, d_model) = (mask.batch, mask.pos, xs.dim(1)?);
            let out_rows = rows.map_or(Ok(batch * pos), |rows| rows.dim(0))?;
            // Drawn in the order of the composed path below.
            let dropout = kernels::AttentionDropout {
                probs: ctx.dropout_mask(batch * self.n_heads * pos * pos, self.attention_dropout),
                hidden: ctx.dropout_mask(out_rows * d_model, self.hidden_dropout),
            };
            let (ln_weight, ln_bias, eps) = self.attention_norm.params();
            let projections = [&self.query, &self.key, &self.value, &self.attention_out].map(|linear| (linear.weight(), linear.bias()));
            let weights = kernels::AttentionWeights { projections, ln_weight, ln_bias };
            return Ok(kernels::attention_block(xs, weights, (&mask.additive, self.n_heads), eps, rows, dropout, ctx.training())?);
        }
        let attended = self.self_attention(xs, mask, ctx)?;
        let (attended, xs) = match rows {
            Some(rows) => (attended.index_select(rows, 0)?, xs.index_select(rows, 0)?),
            None => (attended, xs.clone()),
        };
        self.attention_norm.forward_residual(&self.attention_out, &attended, &xs, self.hidden_dropout, ctx)
    }

    /// Multi-head scaled dot-product attention by composed candle ops, before the output
    /// projection: `[batch·pos, d_model]`.
    fn self_attention(&self, xs: &Tensor, mask: &AttentionMask, ctx: &mut Ctx) -> Result<Tensor> {
        let (rows, d_model) = xs.dims2()?;
        let (batch, pos) = (mask.batch, mask.pos);
        let d_head = d_model / self.n_heads;
        // [batch·pos, d_model] → [batch, n_heads, pos, d_head]
        let heads = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((batch, pos, self.n_heads, d_head))?.transpose(1, 2)?.contiguous()?) };
        let q = heads(self.query.forward(xs)?)?;
        let k = heads(self.key.forward(xs)?)?;
        let v = heads(self.value.forward(xs)?)?;
        // [batch, n_heads, pos, pos]
        let scores = (q.matmul(&k.t()?)? / (d_head as f64).sqrt())?.broadcast_add(&mask.additive)?;
        let probs = ctx.dropout(&ctx.softmax_last_dim(&scores)?, self.attention_dropout)?;
        // [batch, n_heads, pos, d_head] → [batch·pos, d_model]
        Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, d_model))?)
    }
}

/// Runs `layers` in order over `hidden` (`[batch·pos, d_model]`), recording each block's output
/// as `tap(i)`. With `rows`, the output is wanted only there → `[rows.len(), d_model]`: the last
/// block runs only at those rows ([`Layer::forward_at`]) and its tap is not recorded.
pub fn run_blocks(layers: &[Layer], mut hidden: Tensor, mask: &AttentionMask, rows: Option<&Tensor>, tap: fn(usize) -> Tap, ctx: &mut Ctx) -> Result<Tensor> {
    for (i, layer) in layers.iter().enumerate() {
        if let Some(rows) = rows.filter(|_| i + 1 == layers.len()) {
            return layer.forward_at(&hidden, mask, Some(rows), ctx);
        }
        hidden = layer.forward(&hidden, mask, ctx)?;
        ctx.record(tap(i), &hidden, mask)?;
    }
    Ok(match rows {
        Some(rows) => hidden.index_select(rows, 0)?,
        None => hidden,
    })
}
