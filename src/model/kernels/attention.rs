//! The core of multi-head self-attention as one op: `[rows, 3·d]` query/key/value projections
//! (before their bias) → `[rows, d]` attended values, before the output projection.
//!
//! Forward splits the heads (adding the bias and folding 1/√d_head into the queries), runs
//! `softmax(q·kᵀ + mask)`, dropout and `·v`; the batched products use candle's matmul. It keeps
//! the split heads and the probabilities for backward, which is written out by hand: as
//! composed ops the scores alone would pass through ~9 nodes, each 3 memory passes in backward.

use super::dropout::DropoutMask;
use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use super::simd::{dot, exp, max, sum};
use candle_core::{bail, CpuStorage, CustomOp3, Device, IndexOp, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

/// Attention over `qkv`: `[batch·pos, 3·d]` (query, key, value projections without their
/// `bias`: `[3·d]`), with `additive_mask`: `[batch, pos]` (0 or a large negative per key) and
/// dropout on the probabilities → `[batch·pos, d]`.
pub fn attention(qkv: &Tensor, bias: &Tensor, additive_mask: &Tensor, n_heads: usize, dropout: Option<Arc<DropoutMask>>) -> Result<Tensor> {
    let op = Attention { n_heads, dropout, saved: OnceLock::new() };
    qkv.contiguous()?.apply_op3(bias, &additive_mask.contiguous()?, op)
}

struct Attention {
    n_heads: usize,
    dropout: Option<Arc<DropoutMask>>,
    /// Set by the forward pass, read by backward.
    saved: OnceLock<Saved>,
}

struct Saved {
    /// `[3, batch·heads, pos, d_head]`: scaled queries, keys, values.
    heads: Tensor,
    /// `[batch·heads, pos, pos]` softmax output, before dropout.
    probs: Tensor,
    /// `probs` after dropout (the same tensor without dropout).
    dropped: Tensor,
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    pos: usize,
    n_heads: usize,
    d_head: usize,
}

impl Dims {
    fn d_model(self) -> usize {
        self.n_heads * self.d_head
    }

    /// Rows of a `[batch·heads, pos, ·]` tensor.
    fn head_rows(self) -> usize {
        self.batch * self.n_heads * self.pos
    }

    /// For row `r` of a `[batch·heads, pos, ·]` tensor: its row in `[batch·pos, ·]` and its head.
    fn token_and_head(self, r: usize) -> (usize, usize) {
        let (bh, l) = (r / self.pos, r % self.pos);
        let (b, h) = (bh / self.n_heads, bh % self.n_heads);
        (b * self.pos + l, h)
    }

    fn scale(self) -> f32 {
        1.0 / (self.d_head as f32).sqrt()
    }
}

impl Attention {
    fn dims(&self, qkv_len: usize, mask_shape: &Shape) -> Result<Dims> {
        let (batch, pos) = mask_shape.dims2()?;
        let d3 = qkv_len / (batch * pos).max(1);
        if qkv_len != batch * pos * d3 || d3 % (3 * self.n_heads) != 0 {
            bail!("attention: {qkv_len} projections do not fit a [{batch}·{pos}, 3·d] input with {} heads", self.n_heads);
        }
        Ok(Dims { batch, pos, n_heads: self.n_heads, d_head: d3 / (3 * self.n_heads) })
    }

    /// `[batch·pos, d]` (from part `part` of a row width `width`) → `[batch·heads·pos, d_head]` rows.
    fn split_heads(dims: Dims, src: &[f32], width: usize, part: usize, out: &mut [f32], f: impl Fn(usize, f32) -> f32 + Sync) {
        let dh = dims.d_head;
        par_row_blocks(out.len() / dh, [(out, dh)], |rows, [o]| {
            for (o, r) in o.chunks_exact_mut(dh).zip(rows) {
                let (token, h) = dims.token_and_head(r);
                let col = part * dims.d_model() + h * dh;
                for (j, (o, &x)) in o.iter_mut().zip(&src[token * width + col..][..dh]).enumerate() {
                    *o = f(col + j, x);
                }
            }
        });
    }

    /// Row-wise softmax of `scores + mask` → probabilities.
    fn softmax(dims: Dims, scores: &[f32], mask: &[f32]) -> Vec<f32> {
        let pos = dims.pos;
        let mut probs = vec![0f32; scores.len()];
        par_row_blocks(dims.head_rows(), [(&mut probs, pos)], |rows, [o]| {
            for (o, r) in o.chunks_exact_mut(pos).zip(rows) {
                let b = r / (dims.n_heads * pos);
                let mask = &mask[b * pos..(b + 1) * pos];
                for ((o, &s), &m) in o.iter_mut().zip(&scores[r * pos..(r + 1) * pos]).zip(mask) {
                    *o = s + m;
                }
                let top = max(o);
                o.iter_mut().for_each(|o| *o = exp(*o - top));
                let inv = 1.0 / sum(o);
                o.iter_mut().for_each(|o| *o *= inv);
            }
        });
        probs
    }
}

/// `[batch·heads, pos, d_head]` parts (each times its factor) → their concatenation as
/// `[batch·pos, parts·d]` in `out`; returns per-block column sums of `out`.
fn merge_heads<const P: usize>(dims: Dims, parts: [(&[f32], f32); P], out: &mut [f32]) -> Vec<Vec<f32>> {
    let (d, dh, pos) = (dims.d_model(), dims.d_head, dims.pos);
    par_row_blocks(dims.batch * pos, [(out, P * d)], |rows, [o]| {
        let mut col_sums = vec![0f32; P * d];
        for (o, token) in o.chunks_exact_mut(P * d).zip(rows) {
            let (b, l) = (token / pos, token % pos);
            for (part, &(src, factor)) in parts.iter().enumerate() {
                for h in 0..dims.n_heads {
                    let r = (b * dims.n_heads + h) * pos + l;
                    let cols = part * d + h * dh..part * d + (h + 1) * dh;
                    for ((o, s), &x) in o[cols.clone()].iter_mut().zip(&mut col_sums[cols]).zip(&src[r * dh..(r + 1) * dh]) {
                        *o = x * factor;
                        *s += *o;
                    }
                }
            }
        }
        col_sums
    })
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "repdef-attention"
    }

    fn cpu_fwd(&self, qkv: &CpuStorage, ql: &Layout, bias: &CpuStorage, bl: &Layout, mask: &CpuStorage, ml: &Layout) -> Result<(CpuStorage, Shape)> {
        let (qkv, bias, mask) = (cpu_f32(qkv, ql)?, cpu_f32(bias, bl)?, cpu_f32(mask, ml)?);
        let dims = self.dims(qkv.len(), ml.shape())?;
        let (d, dh, n) = (dims.d_model(), dims.d_head, dims.head_rows());
        let device = Device::Cpu;
        let scale = dims.scale();
        let mut heads = vec![0f32; 3 * n * dh];
        for (part, out) in heads.chunks_exact_mut(n * dh).enumerate() {
            let factor = if part == 0 { scale } else { 1.0 };
            Self::split_heads(dims, qkv, 3 * d, part, out, |col, x| (x + bias[col]) * factor);
        }
        let heads = Tensor::from_vec(heads, (3, dims.batch * dims.n_heads, dims.pos, dh), &device)?;
        let (q, k, v) = (heads.i(0)?, heads.i(1)?, heads.i(2)?);
        let scores = q.matmul(&k.t()?)?;
        let probs = {
            let (s_s, s_l) = scores.storage_and_layout();
            Self::softmax(dims, storage_f32(&s_s, s_l)?, mask)
        };
        let dropped = match &self.dropout {
            Some(dropout) => {
                let mut out = vec![0f32; probs.len()];
                super::par::par_elementwise(&mut out, |range, o| dropout.apply(&probs[range.clone()], range.start, o));
                Some(out)
            }
            None => None,
        };
        let shape = (dims.batch * dims.n_heads, dims.pos, dims.pos);
        let probs = Tensor::from_vec(probs, shape, &device)?;
        let dropped = match dropped {
            Some(d) => Tensor::from_vec(d, shape, &device)?,
            None => probs.clone(),
        };
        let attended = dropped.matmul(&v)?;
        let mut out = vec![0f32; dims.batch * dims.pos * d];
        {
            let (a_s, a_l) = attended.storage_and_layout();
            merge_heads(dims, [(storage_f32(&a_s, a_l)?, 1.0)], &mut out);
        }
        if self.saved.set(Saved { heads, probs, dropped }).is_err() {
            bail!("attention op applied twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((dims.batch * dims.pos, d))))
    }

    fn bwd(&self, qkv: &Tensor, bias: &Tensor, mask: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else { bail!("attention backward before forward") };
        let dims = self.dims(qkv.elem_count(), mask.shape())?;
        let (d, dh, n) = (dims.d_model(), dims.d_head, dims.head_rows());
        let device = qkv.device();
        let heads_shape = (dims.batch * dims.n_heads, dims.pos, dh);
        let mut g_heads = vec![0f32; n * dh];
        {
            let grad = grad.contiguous()?;
            let (g_s, g_l) = grad.storage_and_layout();
            Self::split_heads(dims, storage_f32(&g_s, g_l)?, d, 0, &mut g_heads, |_, x| x);
        }
        let g_heads = Tensor::from_vec(g_heads, heads_shape, device)?;
        let (q, k, v) = (saved.heads.i(0)?, saved.heads.i(1)?, saved.heads.i(2)?);
        let dv = saved.dropped.t()?.matmul(&g_heads)?;
        let d_dropped = g_heads.matmul(&v.t()?)?;
        let pos = dims.pos;
        // Softmax backward: ds = p ⊙ (dp − Σ dp ⊙ p), dp being ∂/∂dropped times the dropout factors.
        let mut ds = vec![0f32; n * pos];
        {
            let (p_s, p_l) = saved.probs.storage_and_layout();
            let (dpd_s, dpd_l) = d_dropped.storage_and_layout();
            let (p, dpd) = (storage_f32(&p_s, p_l)?, storage_f32(&dpd_s, dpd_l)?);
            par_row_blocks(n, [(&mut ds, pos)], |rows, [o]| {
                for (o, r) in o.chunks_exact_mut(pos).zip(rows) {
                    let span = r * pos..(r + 1) * pos;
                    match &self.dropout {
                        Some(mask) => mask.apply(&dpd[span.clone()], span.start, o),
                        None => o.copy_from_slice(&dpd[span.clone()]),
                    }
                    let p = &p[span];
                    let c = dot(o, p);
                    o.iter_mut().zip(p).for_each(|(o, &p)| *o = p * (*o - c));
                }
            });
        }
        let ds = Tensor::from_vec(ds, (dims.batch * dims.n_heads, pos, pos), device)?;
        let dq = ds.matmul(&k)?;
        let dk = ds.t()?.matmul(&q)?;
        let (dq_s, dq_l) = dq.storage_and_layout();
        let (dk_s, dk_l) = dk.storage_and_layout();
        let (dv_s, dv_l) = dv.storage_and_layout();
        let parts = [(storage_f32(&dq_s, dq_l)?, dims.scale()), (storage_f32(&dk_s, dk_l)?, 1.0), (storage_f32(&dv_s, dv_l)?, 1.0)];
        let mut dqkv = vec![0f32; dims.batch * pos * 3 * d];
        let partials = merge_heads(dims, parts, &mut dqkv);
        let dbias = sum_partials(partials, 3 * d);
        Ok((Some(Tensor::from_vec(dqkv, qkv.shape(), device)?), Some(Tensor::from_vec(dbias, bias.shape(), device)?), None))
    }
}
