//! The core of multi-head self-attention as one op: `[rows, 3·d]` query/key/value projections
//! (before their bias) → `[rows, d]` attended values, before the output projection.
//!
//! Forward splits the heads (adding the bias and folding 1/√d_head into the queries), runs
//! `softmax(q·kᵀ + mask)`, dropout and `·v`; the products use candle's matmul. It keeps the split
//! heads and the probabilities for backward, which is written out by hand: as composed ops the
//! scores alone would pass through ~9 nodes, each 3 memory passes in backward.
//!
//! The work is cut into chunks of a few sequences that run in parallel, each chunk's scores
//! staying in cache. (One batched matmul over all heads would let gemm split every 128×64
//! product across the threads, which on two cores is slower than not splitting at all.)

use super::dropout::DropoutMask;
use super::par::{cpu_f32, par_row_chunks, storage_f32, sum_partials};
use super::simd::{dot, exp, max, sum};
use candle_core::{bail, CpuStorage, CustomOp3, Device, IndexOp, Layout, Result, Shape, Tensor};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// Attention over `qkv`: `[batch·pos, 3·d]` (query, key, value projections without their
/// `bias`: `[3·d]`), with `additive_mask`: `[batch, pos]` (0 or a large negative per key) and
/// dropout on the probabilities → `[batch·pos, d]`.
pub fn attention(qkv: &Tensor, bias: &Tensor, additive_mask: &Tensor, n_heads: usize, dropout: Option<Arc<DropoutMask>>) -> Result<Tensor> {
    let op = Attention { n_heads, dropout, saved: OnceLock::new() };
    qkv.contiguous()?.apply_op3(bias, &additive_mask.contiguous()?, op)
}

/// Sequences per work unit: enough for a few matmuls of useful size, few enough for the scores
/// (`SEQS_PER_CHUNK · heads · pos²` floats) to stay in cache.
const SEQS_PER_CHUNK: usize = 2;

struct Attention {
    n_heads: usize,
    dropout: Option<Arc<DropoutMask>>,
    /// Set by the forward pass (one entry per chunk), read by backward.
    saved: OnceLock<Vec<Saved>>,
}

/// What backward needs of one chunk of sequences.
struct Saved {
    /// `[3, seqs·heads, pos, d_head]`: scaled queries, keys, values.
    heads: Tensor,
    /// `[seqs·heads, pos, pos]` softmax output, before dropout.
    probs: Tensor,
    /// `probs` after dropout (the same tensor without dropout).
    dropped: Tensor,
}

/// Sizes shared by all chunks of one call.
#[derive(Clone, Copy)]
struct Dims {
    n_heads: usize,
    pos: usize,
    d_head: usize,
}

impl Dims {
    fn d_model(self) -> usize {
        self.n_heads * self.d_head
    }

    fn scale(self) -> f32 {
        1.0 / (self.d_head as f32).sqrt()
    }

    /// For row `r` of a `[seqs·heads, pos, ·]` tensor: its row in `[seqs·pos, ·]` and its head.
    fn token_and_head(self, r: usize) -> (usize, usize) {
        let (sh, l) = (r / self.pos, r % self.pos);
        let (s, h) = (sh / self.n_heads, sh % self.n_heads);
        (s * self.pos + l, h)
    }

    /// `([seqs·pos, width]` columns `part·d..(part+1)·d` `+ bias) · factor` → `[seqs·heads·pos, d_head]`.
    fn split_heads(self, src: &[f32], width: usize, part: usize, bias: Option<&[f32]>, factor: f32, out: &mut [f32]) {
        let dh = self.d_head;
        for (r, o) in out.chunks_exact_mut(dh).enumerate() {
            let (token, h) = self.token_and_head(r);
            let src = &src[token * width + part * self.d_model() + h * dh..][..dh];
            match bias {
                Some(bias) => {
                    let bias = &bias[h * dh..(h + 1) * dh];
                    o.iter_mut().zip(src).zip(bias).for_each(|((o, &x), &b)| *o = (x + b) * factor);
                }
                None => o.iter_mut().zip(src).for_each(|(o, &x)| *o = x * factor),
            }
        }
    }

    /// `[seqs·heads, pos, d_head]` parts, each times its factor → their concatenation as
    /// `[seqs·pos, P·d]` rows in `out`; adds the column sums of `out` to `col_sums` if given.
    fn merge_heads<const P: usize>(self, parts: [(&[f32], f32); P], out: &mut [f32], mut col_sums: Option<&mut [f32]>) {
        let (d, dh) = (self.d_model(), self.d_head);
        for (token, o) in out.chunks_exact_mut(P * d).enumerate() {
            let (s, l) = (token / self.pos, token % self.pos);
            for (part, &(src, factor)) in parts.iter().enumerate() {
                for h in 0..self.n_heads {
                    let r = (s * self.n_heads + h) * self.pos + l;
                    let cols = part * d + h * dh..part * d + (h + 1) * dh;
                    o[cols.clone()].iter_mut().zip(&src[r * dh..(r + 1) * dh]).for_each(|(o, &x)| *o = x * factor);
                    if let Some(sums) = col_sums.as_deref_mut() {
                        sums[cols.clone()].iter_mut().zip(&o[cols]).for_each(|(s, &x)| *s += x);
                    }
                }
            }
        }
    }

    /// Row-wise softmax of `scores + mask` (`mask`: `[seqs, pos]`) → probabilities.
    fn softmax(self, scores: &[f32], mask: &[f32]) -> Vec<f32> {
        let pos = self.pos;
        let mut probs = vec![0f32; scores.len()];
        for (r, (o, s)) in probs.chunks_exact_mut(pos).zip(scores.chunks_exact(pos)).enumerate() {
            let seq = r / (self.n_heads * pos);
            o.iter_mut().zip(s).zip(&mask[seq * pos..(seq + 1) * pos]).for_each(|((o, &s), &m)| *o = s + m);
            let top = max(o);
            o.iter_mut().for_each(|o| *o = exp(*o - top));
            let inv = 1.0 / sum(o);
            o.iter_mut().for_each(|o| *o *= inv);
        }
        probs
    }
}

impl Attention {
    fn dims(&self, qkv_len: usize, mask_shape: &Shape) -> Result<(Dims, usize)> {
        let (batch, pos) = mask_shape.dims2()?;
        let d3 = qkv_len / (batch * pos).max(1);
        if qkv_len != batch * pos * d3 || d3 % (3 * self.n_heads) != 0 {
            bail!("attention: {qkv_len} projections do not fit a [{batch}·{pos}, 3·d] input with {} heads", self.n_heads);
        }
        Ok((Dims { n_heads: self.n_heads, pos, d_head: d3 / (3 * self.n_heads) }, batch))
    }

    /// Forward of the sequences `seqs`: `qkv` and `out` are their rows, `mask` their `[seqs, pos]`.
    fn forward_chunk(&self, dims: Dims, seqs: Range<usize>, (qkv, bias, mask): (&[f32], &[f32], &[f32]), out: &mut [f32]) -> Result<Saved> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let mut heads = vec![0f32; 3 * n * pos * dh];
        for (part, o) in heads.chunks_exact_mut(n * pos * dh).enumerate() {
            let factor = if part == 0 { dims.scale() } else { 1.0 };
            dims.split_heads(qkv, 3 * d, part, Some(&bias[part * d..(part + 1) * d]), factor, o);
        }
        let heads = Tensor::from_vec(heads, (3, n, pos, dh), &Device::Cpu)?;
        let (q, k, v) = (heads.i(0)?, heads.i(1)?, heads.i(2)?);
        let scores = q.matmul(&k.t()?)?;
        let (s_s, s_l) = scores.storage_and_layout();
        let probs = dims.softmax(storage_f32(&s_s, s_l)?, mask);
        let dropped = self.dropout.as_ref().map(|dropout| {
            let mut dropped = vec![0f32; probs.len()];
            dropout.apply(&probs, seqs.start * dims.n_heads * pos * pos, &mut dropped);
            dropped
        });
        let probs = Tensor::from_vec(probs, (n, pos, pos), &Device::Cpu)?;
        let dropped = match dropped {
            Some(dropped) => Tensor::from_vec(dropped, (n, pos, pos), &Device::Cpu)?,
            None => probs.clone(),
        };
        let attended = dropped.matmul(&v)?;
        let (a_s, a_l) = attended.storage_and_layout();
        dims.merge_heads([(storage_f32(&a_s, a_l)?, 1.0)], out, None);
        Ok(Saved { heads, probs, dropped })
    }

    /// Backward of the sequences `seqs` (`grad`, `dqkv`: their rows); returns ∂/∂bias.
    fn backward_chunk(&self, dims: Dims, seqs: Range<usize>, saved: &Saved, grad: &[f32], dqkv: &mut [f32]) -> Result<Vec<f32>> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let mut g_heads = vec![0f32; n * pos * dh];
        dims.split_heads(grad, d, 0, None, 1.0, &mut g_heads);
        let g_heads = Tensor::from_vec(g_heads, (n, pos, dh), &Device::Cpu)?;
        let (q, k, v) = (saved.heads.i(0)?, saved.heads.i(1)?, saved.heads.i(2)?);
        let dv = saved.dropped.t()?.matmul(&g_heads)?;
        // Softmax backward: ds = p ⊙ (dp − Σ dp ⊙ p), dp being ∂/∂dropped times the dropout factors.
        let d_dropped = g_heads.matmul(&v.t()?)?;
        let mut ds = vec![0f32; n * pos * pos];
        {
            let (p_s, p_l) = saved.probs.storage_and_layout();
            let (dd_s, dd_l) = d_dropped.storage_and_layout();
            let (p, d_dropped) = (storage_f32(&p_s, p_l)?, storage_f32(&dd_s, dd_l)?);
            let offset = seqs.start * dims.n_heads * pos * pos;
            for (r, ((o, p), dd)) in ds.chunks_exact_mut(pos).zip(p.chunks_exact(pos)).zip(d_dropped.chunks_exact(pos)).enumerate() {
                match &self.dropout {
                    Some(mask) => mask.apply(dd, offset + r * pos, o),
                    None => o.copy_from_slice(dd),
                }
                let c = dot(o, p);
                o.iter_mut().zip(p).for_each(|(o, &p)| *o = p * (*o - c));
            }
        }
        let ds = Tensor::from_vec(ds, (n, pos, pos), &Device::Cpu)?;
        let (dq, dk) = (ds.matmul(&k)?, ds.t()?.matmul(&q)?);
        let (dq_s, dq_l) = dq.storage_and_layout();
        let (dk_s, dk_l) = dk.storage_and_layout();
        let (dv_s, dv_l) = dv.storage_and_layout();
        let parts = [(storage_f32(&dq_s, dq_l)?, dims.scale()), (storage_f32(&dk_s, dk_l)?, 1.0), (storage_f32(&dv_s, dv_l)?, 1.0)];
        let mut dbias = vec![0f32; 3 * d];
        dims.merge_heads(parts, dqkv, Some(&mut dbias));
        Ok(dbias)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "repdef-attention"
    }

    fn cpu_fwd(&self, qkv: &CpuStorage, ql: &Layout, bias: &CpuStorage, bl: &Layout, mask: &CpuStorage, ml: &Layout) -> Result<(CpuStorage, Shape)> {
        let (qkv, bias, mask) = (cpu_f32(qkv, ql)?, cpu_f32(bias, bl)?, cpu_f32(mask, ml)?);
        let (dims, batch) = self.dims(qkv.len(), ml.shape())?;
        let (d, pos) = (dims.d_model(), dims.pos);
        let mut out = vec![0f32; batch * pos * d];
        let saved = par_row_chunks(batch, SEQS_PER_CHUNK, [(&mut out, pos * d)], |seqs, [o]| {
            let qkv = &qkv[seqs.start * pos * 3 * d..seqs.end * pos * 3 * d];
            let mask = &mask[seqs.start * pos..seqs.end * pos];
            self.forward_chunk(dims, seqs, (qkv, bias, mask), o)
        });
        if self.saved.set(saved.into_iter().collect::<Result<_>>()?).is_err() {
            bail!("attention op applied twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((batch * pos, d))))
    }

    fn bwd(&self, qkv: &Tensor, bias: &Tensor, mask: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else { bail!("attention backward before forward") };
        let (dims, batch) = self.dims(qkv.elem_count(), mask.shape())?;
        let (d, pos) = (dims.d_model(), dims.pos);
        let grad = grad.contiguous()?;
        let (g_s, g_l) = grad.storage_and_layout();
        let g = storage_f32(&g_s, g_l)?;
        let mut dqkv = vec![0f32; batch * pos * 3 * d];
        let dbias = par_row_chunks(batch, SEQS_PER_CHUNK, [(&mut dqkv, pos * 3 * d)], |seqs, [o]| {
            let chunk = seqs.start / SEQS_PER_CHUNK;
            self.backward_chunk(dims, seqs.clone(), &saved[chunk], &g[seqs.start * pos * d..seqs.end * pos * d], o)
        });
        let dbias = sum_partials(dbias.into_iter().collect::<Result<Vec<_>>>()?, 3 * d);
        let device = qkv.device();
        Ok((Some(Tensor::from_vec(dqkv, qkv.shape(), device)?), Some(Tensor::from_vec(dbias, bias.shape(), device)?), None))
    }
}
