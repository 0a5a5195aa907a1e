//! The core of multi-head self-attention as one op: `[rows, d_in]` hidden states → the
//! query/key/value projections → `[rows, d]` attended values, before the output projection.
//!
//! Forward computes the three projections as one product (gemm, as in `projection`; the product
//! stays inside the op, not a node whose gradient candle would zero-fill and add), splits the
//! heads (adding the bias and folding 1/√d_head into the queries), runs
//! `softmax(q·kᵀ + additive)`, dropout and `·v`, where `additive` is the padding mask and, in
//! models with one, the relative-position bias. It keeps the split heads and the probabilities
//! for backward, which is written out by hand: as composed ops the scores alone would pass
//! through ~9 nodes, each 3 memory passes in backward.
//!
//! The work is cut into chunks of a few sequences that run in parallel, each chunk's scores
//! staying in cache; within a chunk the per-head products call gemm one after another on the
//! chunk's thread. (One batched matmul over all heads would let gemm split every 128×64 product
//! across the threads, which on two cores is slower than not splitting at all.)

use super::dropout::DropoutMask;
use super::par::{cpu_f32, par_row_chunks, storage_f32, sum_partials};
use super::projection::{self, sequential_products, Operand};
use super::simd::{dot, exp, max, sum};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// Attention over `xs`: `[batch·pos, d_in]`, whose query, key and value projections are
/// `projections`: `[3·d, d_in + 1]` (each row an output's weights, then its bias), with
/// `additive` added to the logits and dropout on the probabilities → `[batch·pos, d]`. `additive` is `[1 or batch, 1 or n_heads, 1 or pos, pos]` (sequence, head,
/// query, key), broadcast over the dimensions of size 1. A per-key term (`[·, ·, 1, pos]`) is a
/// padding mask and gets no gradient; a per-query one (a learned position bias) gets its
/// gradient, summed over the dimensions it was broadcast along.
pub fn attention(xs: &Tensor, projections: &Tensor, additive: &Tensor, n_heads: usize, dropout: Option<Arc<DropoutMask>>) -> Result<Tensor> {
    let op = Attention { n_heads, dropout, saved: OnceLock::new() };
    xs.contiguous()?.apply_op3(&projections.contiguous()?, &additive.contiguous()?, op)
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
    heads: Vec<f32>,
    /// `[seqs·heads, pos, pos]` softmax output, before dropout.
    probs: Vec<f32>,
    /// `probs` after dropout (none without dropout).
    dropped: Option<Vec<f32>>,
}

impl Saved {
    /// The probabilities as the values saw them.
    fn dropped(&self) -> &[f32] {
        self.dropped.as_deref().unwrap_or(&self.probs)
    }
}

/// Sizes shared by all chunks of one call.
#[derive(Clone, Copy)]
struct Dims {
    n_heads: usize,
    pos: usize,
    d_head: usize,
    additive: Additive,
}

/// Where the additive term of a (sequence, head, query) row of logits starts in the
/// `[1 or batch, 1 or n_heads, 1 or pos, pos]` input: a stride of 0 along a broadcast dimension.
#[derive(Clone, Copy)]
struct Additive {
    seq_stride: usize,
    head_stride: usize,
    query_stride: usize,
}

impl Additive {
    fn new(shape: &Shape, batch: usize, n_heads: usize, pos: usize) -> Result<Self> {
        let (b, h, q, k) = shape.dims4()?;
        if k != pos || ![1, batch].contains(&b) || ![1, n_heads].contains(&h) || ![1, pos].contains(&q) {
            bail!("attention: additive term {shape:?} does not broadcast to [{batch}, {n_heads}, {pos}, {pos}]");
        }
        let stride = |size: usize, inner: usize| if size == 1 { 0 } else { inner };
        Ok(Additive { seq_stride: stride(b, h * q * k), head_stride: stride(h, q * k), query_stride: stride(q, k) })
    }

    /// Whether the term varies by query: a learned bias that backward differentiates.
    fn per_query(self) -> bool {
        self.query_stride != 0
    }

    /// Whether each sequence has its own term (rather than one shared by the batch).
    fn per_sequence(self) -> bool {
        self.seq_stride != 0
    }

    /// Elements of the term per sequence (the whole term when it is shared).
    fn seq_len(self, n_heads: usize, pos: usize) -> usize {
        let heads = if self.head_stride == 0 { 1 } else { n_heads };
        let queries = if self.per_query() { pos } else { 1 };
        heads * queries * pos
    }

    /// Offset of the row of sequence `seq`, head `head`, query `query` (any `seq` gives the
    /// shared term's row).
    fn row(self, seq: usize, head: usize, query: usize) -> usize {
        seq * self.seq_stride + head * self.head_stride + query * self.query_stride
    }
}

impl Dims {
    fn d_model(self) -> usize {
        self.n_heads * self.d_head
    }

    fn scale(self) -> f32 {
        1.0 / (self.d_head as f32).sqrt()
    }

    /// The queries, keys and values of `heads` (`[3, n, pos, d_head]`) for `n` sequence-heads.
    fn parts(self, heads: &[f32], n: usize) -> [&[f32]; 3] {
        let len = n * self.pos * self.d_head;
        [&heads[..len], &heads[len..2 * len], &heads[2 * len..3 * len]]
    }

    /// For row `r` of a `[seqs·heads, pos, ·]` tensor: its row in `[seqs·pos, ·]` and its head.
    fn token_and_head(self, r: usize) -> (usize, usize) {
        let (s, h, l) = self.row_indices(r);
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

    /// The (sequence, head, query) of row `r` of a chunk's `[seqs·heads·pos, pos]` logits.
    fn row_indices(self, r: usize) -> (usize, usize, usize) {
        let (sh, query) = (r / self.pos, r % self.pos);
        (sh / self.n_heads, sh % self.n_heads, query)
    }

    /// Row-wise softmax of `scores + additive` for the chunk of sequences starting at
    /// `first_seq` (`additive`: the whole term, see [`Additive`]) → probabilities.
    fn softmax(self, scores: &[f32], additive: &[f32], first_seq: usize) -> Vec<f32> {
        let pos = self.pos;
        let mut probs = vec![0f32; scores.len()];
        for (r, (o, s)) in probs.chunks_exact_mut(pos).zip(scores.chunks_exact(pos)).enumerate() {
            let (seq, head, query) = self.row_indices(r);
            let start = self.additive.row(first_seq + seq, head, query);
            o.iter_mut().zip(s).zip(&additive[start..start + pos]).for_each(|((o, &s), &m)| *o = s + m);
            let top = max(o);
            o.iter_mut().for_each(|o| *o = exp(*o - top));
            let inv = 1.0 / sum(o);
            o.iter_mut().for_each(|o| *o *= inv);
        }
        probs
    }
}

impl Attention {
    /// The sizes of the op's inputs `xs`: `[rows, d_in]`, `projections`: `[3·d, d_in + 1]` and
    /// `additive` → (sizes, batch, d_in).
    fn dims(&self, xs: &Shape, projections: &Shape, additive_shape: &Shape) -> Result<(Dims, usize, usize)> {
        let ((rows, d_in), (d3, row_len)) = (xs.dims2()?, projections.dims2()?);
        if row_len != d_in + 1 {
            bail!("attention: projections {projections:?} do not fit inputs {xs:?} (expected [3·d, {}])", d_in + 1);
        }
        let pos = additive_shape.dims4()?.3;
        if pos == 0 || rows % pos != 0 || d3 % (3 * self.n_heads) != 0 {
            bail!("attention: {rows} rows projected to {d3} do not fit sequences of {pos} tokens with {} heads", self.n_heads);
        }
        let batch = rows / pos;
        let additive = Additive::new(additive_shape, batch, self.n_heads, pos)?;
        Ok((Dims { n_heads: self.n_heads, pos, d_head: d3 / (3 * self.n_heads), additive }, batch, d_in))
    }

    /// Forward of the sequences `seqs`: `qkv` and `out` are their rows; `additive` is the whole term.
    fn forward_chunk(&self, dims: Dims, seqs: Range<usize>, (qkv, bias, additive): (&[f32], &[f32], &[f32]), out: &mut [f32]) -> Result<Saved> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let mut heads = vec![0f32; 3 * n * pos * dh];
        for (part, o) in heads.chunks_exact_mut(n * pos * dh).enumerate() {
            let factor = if part == 0 { dims.scale() } else { 1.0 };
            dims.split_heads(qkv, 3 * d, part, Some(&bias[part * d..(part + 1) * d]), factor, o);
        }
        let (per_head, per_score) = (pos * dh, pos * pos);
        let [q, k, _] = dims.parts(&heads, n);
        let scores = sequential_products(n, (pos, dh, pos), |h| Operand::rows(&q[h * per_head..], dh), |h| Operand::transposed(&k[h * per_head..], dh));
        let probs = dims.softmax(&scores, additive, seqs.start);
        let dropped = self.dropout.as_ref().map(|dropout| {
            let mut dropped = vec![0f32; probs.len()];
            dropout.apply(&probs, seqs.start * dims.n_heads * per_score, &mut dropped);
            dropped
        });
        let saved = Saved { heads, probs, dropped };
        let [_, _, v] = dims.parts(&saved.heads, n);
        let attended =
            sequential_products(n, (pos, pos, dh), |h| Operand::rows(&saved.dropped()[h * per_score..], pos), |h| Operand::rows(&v[h * per_head..], dh));
        dims.merge_heads([(&attended[..], 1.0)], out, None);
        Ok(saved)
    }

    /// Backward of the sequences `seqs` (`grad`, `dqkv`: their rows); returns ∂/∂bias, and adds
    /// ∂/∂additive to `d_additive` (the chunk's sequences' part of it, or the whole shared term)
    /// when the term is per query.
    fn backward_chunk(&self, dims: Dims, seqs: Range<usize>, saved: &Saved, grad: &[f32], dqkv: &mut [f32], d_additive: &mut [f32]) -> Result<Vec<f32>> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let mut g_heads = vec![0f32; n * pos * dh];
        dims.split_heads(grad, d, 0, None, 1.0, &mut g_heads);
        let [q, k, v] = dims.parts(&saved.heads, n);
        let (per_head, per_score) = (pos * dh, pos * pos);
        let g_head = |h: usize| Operand::rows(&g_heads[h * per_head..], dh);
        let dv = sequential_products(n, (pos, pos, dh), |h| Operand::transposed(&saved.dropped()[h * per_score..], pos), g_head);
        // Softmax backward: ds = p ⊙ (dp − Σ dp ⊙ p), dp being ∂/∂dropped times the dropout factors.
        let d_dropped = sequential_products(n, (pos, dh, pos), g_head, |h| Operand::transposed(&v[h * per_head..], dh));
        let mut ds = vec![0f32; n * pos * pos];
        {
            let p = &saved.probs;
            let offset = seqs.start * dims.n_heads * pos * pos;
            for (r, ((o, p), dd)) in ds.chunks_exact_mut(pos).zip(p.chunks_exact(pos)).zip(d_dropped.chunks_exact(pos)).enumerate() {
                match &self.dropout {
                    Some(mask) => mask.apply(dd, offset + r * pos, o),
                    None => o.copy_from_slice(dd),
                }
                let c = dot(o, p);
                o.iter_mut().zip(p).for_each(|(o, &p)| *o = p * (*o - c));
                if dims.additive.per_query() {
                    // `d_additive` starts at this chunk's first sequence.
                    let (seq, head, query) = dims.row_indices(r);
                    let start = dims.additive.row(seq, head, query);
                    d_additive[start..start + pos].iter_mut().zip(o.iter()).for_each(|(d, &g)| *d += g);
                }
            }
        }
        let dq = sequential_products(n, (pos, pos, dh), |h| Operand::rows(&ds[h * per_score..], pos), |h| Operand::rows(&k[h * per_head..], dh));
        let dk = sequential_products(n, (pos, pos, dh), |h| Operand::transposed(&ds[h * per_score..], pos), |h| Operand::rows(&q[h * per_head..], dh));
        let parts = [(&dq[..], dims.scale()), (&dk[..], 1.0), (&dv[..], 1.0)];
        let mut dbias = vec![0f32; 3 * d];
        dims.merge_heads(parts, dqkv, Some(&mut dbias));
        Ok(dbias)
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "repdef-attention"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, p: &CpuStorage, pl: &Layout, additive: &CpuStorage, al: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dims, batch, d_in) = self.dims(xl.shape(), pl.shape(), al.shape())?;
        let (d, pos) = (dims.d_model(), dims.pos);
        let (xs, p, additive) = (cpu_f32(xs, xl)?, cpu_f32(p, pl)?, cpu_f32(additive, al)?);
        let qkv = projection::product(batch * pos, d_in, 3 * d, Operand::rows(xs, d_in), Operand::transposed(p, d_in + 1));
        let bias: Vec<f32> = p.chunks_exact(d_in + 1).map(|row| row[d_in]).collect();
        let (qkv, bias) = (&qkv[..], &bias[..]);
        let (saved, [out]) = par_row_chunks(batch, SEQS_PER_CHUNK, [pos * d], |seqs, [o]| {
            let qkv = &qkv[seqs.start * pos * 3 * d..seqs.end * pos * 3 * d];
            self.forward_chunk(dims, seqs, (qkv, bias, additive), o)
        });
        if self.saved.set(saved.into_iter().collect::<Result<_>>()?).is_err() {
            bail!("attention op applied twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((batch * pos, d))))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        projections: &Tensor,
        additive: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else { bail!("attention backward before forward") };
        let (dims, batch, d_in) = self.dims(xs.shape(), projections.shape(), additive.shape())?;
        let (d, pos) = (dims.d_model(), dims.pos);
        let grad = grad.contiguous()?;
        let (g_s, g_l) = grad.storage_and_layout();
        let g = storage_f32(&g_s, g_l)?;
        // ∂/∂additive: written per sequence when each has its own term, otherwise summed over
        // chunk-local copies of the shared term (none for a padding mask).
        let per_seq = dims.additive.per_query() && dims.additive.per_sequence();
        let shared_len = if dims.additive.per_query() && !per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let seq_len = if per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let (partials, [dqkv, d_additive]) = par_row_chunks(batch, SEQS_PER_CHUNK, [pos * 3 * d, seq_len], |seqs, [o, da]| {
            let chunk = seqs.start / SEQS_PER_CHUNK;
            let mut shared = vec![0f32; shared_len];
            let target = if per_seq { da } else { &mut shared[..] };
            let dbias = self.backward_chunk(dims, seqs.clone(), &saved[chunk], &g[seqs.start * pos * d..seqs.end * pos * d], o, target)?;
            Ok((dbias, shared))
        });
        let (dbias, shared): (Vec<_>, Vec<_>) = partials.into_iter().collect::<Result<Vec<_>>>()?.into_iter().unzip();
        let device = xs.device();
        let (dx, dprojections) = {
            let (xs_s, xs_l) = xs.storage_and_layout();
            let (p_s, p_l) = projections.storage_and_layout();
            let (xs_v, p) = (storage_f32(&xs_s, xs_l)?, storage_f32(&p_s, p_l)?);
            // ∂/∂W laid out as `projections`, each row followed by its ∂/∂bias.
            let (dx, dw) = projection::product_grads(&dqkv, xs_v, p, (batch * pos, d_in, 3 * d), d_in + 1);
            let dbias = sum_partials(dbias, 3 * d);
            let packed: Vec<f32> = dw.chunks_exact(d_in).zip(dbias).flat_map(|(row, b)| row.iter().copied().chain([b])).collect();
            (Tensor::from_vec(dx, xs.shape(), device)?, Tensor::from_vec(packed, projections.shape(), device)?)
        };
        let d_additive = match (per_seq, shared_len) {
            (true, _) => Some(Tensor::from_vec(d_additive, additive.shape(), device)?),
            (false, 0) => None,
            (false, n) => Some(Tensor::from_vec(sum_partials(shared, n), additive.shape(), device)?),
        };
        Ok((Some(dx), Some(dprojections), d_additive))
    }
}
