//! The core of multi-head self-attention: `[rows, d_in]` hidden states → the query/key/value
//! projections → `[rows, d]` attended values, before the output projection, forward and
//! backward on slices (the op around it, with the output projection and the residual
//! LayerNorm, is `attention_block`).
//!
//! Forward computes the three projections as one product (gemm, as in `projection`), splits the
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
use super::par::{par_row_chunks, sum_partials};
use super::projection::{self, sequential_products, Operand};
use super::simd::{dot, exp, max, sum};
use candle_core::{bail, Result, Shape};
use std::ops::Range;
use std::sync::Arc;

/// Sequences per work unit: enough for a few matmuls of useful size, few enough for the scores
/// (`SEQS_PER_CHUNK · heads · pos²` floats) to stay in cache.
const SEQS_PER_CHUNK: usize = 2;

/// Attention with `n_heads` heads, and dropout on the probabilities if a mask is given.
pub(super) struct Attention {
    pub n_heads: usize,
    pub dropout: Option<Arc<DropoutMask>>,
}

/// What [`Attention::forward`] keeps for [`Attention::backward`].
pub(super) struct Saved {
    dims: Dims,
    batch: usize,
    chunks: Vec<ChunkSaved>,
}

/// What backward needs of one chunk of sequences.
struct ChunkSaved {
    /// `[3, seqs·heads, pos, d_head]`: scaled queries, keys, values.
    heads: Vec<f32>,
    /// `[seqs·heads, pos, pos]` softmax output, before dropout.
    probs: Vec<f32>,
    /// `probs` after dropout (none without dropout).
    dropped: Option<Vec<f32>>,
}

impl ChunkSaved {
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
    /// The sizes of a pass over `rows` inputs of `d_in` projected to `d` per part, with an
    /// additive term of `additive_shape` → (sizes, batch).
    fn dims(&self, (rows, d_in, d): (usize, usize, usize), additive_shape: &Shape) -> Result<(Dims, usize)> {
        let pos = additive_shape.dims4()?.3;
        if pos == 0 || rows % pos != 0 || d % self.n_heads != 0 || d_in == 0 {
            bail!("attention: {rows} rows projected to {d} do not fit sequences of {pos} tokens with {} heads", self.n_heads);
        }
        let batch = rows / pos;
        let additive = Additive::new(additive_shape, batch, self.n_heads, pos)?;
        Ok((Dims { n_heads: self.n_heads, pos, d_head: d / self.n_heads, additive }, batch))
    }

    /// Forward of the sequences `seqs`: `qkv` and `out` are their rows; `additive` is the whole term.
    fn forward_chunk(&self, dims: Dims, seqs: Range<usize>, (qkv, bias, additive): (&[f32], &[f32], &[f32]), out: &mut [f32]) -> Result<ChunkSaved> {
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
        let saved = ChunkSaved { heads, probs, dropped };
        let [_, _, v] = dims.parts(&saved.heads, n);
        let attended =
            sequential_products(n, (pos, pos, dh), |h| Operand::rows(&saved.dropped()[h * per_score..], pos), |h| Operand::rows(&v[h * per_head..], dh));
        dims.merge_heads([(&attended[..], 1.0)], out, None);
        Ok(saved)
    }

    /// Backward of the sequences `seqs` (`grad`, `dqkv`: their rows); returns ∂/∂bias, and adds
    /// ∂/∂additive to `d_additive` (the chunk's sequences' part of it, or the whole shared term)
    /// when the term is per query.
    fn backward_chunk(&self, dims: Dims, seqs: Range<usize>, saved: &ChunkSaved, grad: &[f32], dqkv: &mut [f32], d_additive: &mut [f32]) -> Vec<f32> {
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
        dbias
    }
}

impl Attention {
    /// The attended values of `xs` (`[rows, d_in]`) for `projections` (`[3·d, d_in + 1]`, each
    /// row an output's weights, then its bias) and the additive term `(values, shape)` →
    /// (`[rows, d]`, what backward needs).
    pub(super) fn forward(
        &self,
        xs: &[f32],
        projections: &[f32],
        (additive, additive_shape): (&[f32], &Shape),
        (rows, d_in, d): (usize, usize, usize),
    ) -> Result<(Vec<f32>, Saved)> {
        let (dims, batch) = self.dims((rows, d_in, d), additive_shape)?;
        let pos = dims.pos;
        let qkv = projection::product(rows, d_in, 3 * d, Operand::rows(xs, d_in), Operand::transposed(projections, d_in + 1));
        let bias: Vec<f32> = projections.chunks_exact(d_in + 1).map(|row| row[d_in]).collect();
        let (qkv, bias) = (&qkv[..], &bias[..]);
        let (chunks, [out]) = par_row_chunks(batch, SEQS_PER_CHUNK, [pos * d], |seqs, [o]| {
            let qkv = &qkv[seqs.start * pos * 3 * d..seqs.end * pos * 3 * d];
            self.forward_chunk(dims, seqs, (qkv, bias, additive), o)
        });
        Ok((out, Saved { dims, batch, chunks: chunks.into_iter().collect::<Result<_>>()? }))
    }

    /// The gradients of [`Attention::forward`] for the output gradient `g` (`[rows, d]`) →
    /// (∂/∂xs, ∂/∂projections in their layout, ∂/∂additive in its layout when the term is per
    /// query: a padding mask gets none).
    pub(super) fn backward(&self, saved: &Saved, xs: &[f32], projections: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
        let (dims, batch) = (saved.dims, saved.batch);
        let (d, pos) = (dims.d_model(), dims.pos);
        let d_in = projections.len() / (3 * d) - 1;
        // ∂/∂additive: written per sequence when each has its own term, otherwise summed over
        // chunk-local copies of the shared term (none for a padding mask).
        let per_seq = dims.additive.per_query() && dims.additive.per_sequence();
        let shared_len = if dims.additive.per_query() && !per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let seq_len = if per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let (partials, [dqkv, d_additive]) = par_row_chunks(batch, SEQS_PER_CHUNK, [pos * 3 * d, seq_len], |seqs, [o, da]| {
            let chunk = seqs.start / SEQS_PER_CHUNK;
            let mut shared = vec![0f32; shared_len];
            let target = if per_seq { da } else { &mut shared[..] };
            let dbias = self.backward_chunk(dims, seqs.clone(), &saved.chunks[chunk], &g[seqs.start * pos * d..seqs.end * pos * d], o, target);
            (dbias, shared)
        });
        let (dbias, shared): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
        // ∂/∂W laid out as `projections`, each row followed by its ∂/∂bias.
        let (dx, dw) = projection::product_grads(&dqkv, xs, projections, (batch * pos, d_in, 3 * d), d_in + 1);
        let dbias = sum_partials(dbias, 3 * d);
        let dprojections: Vec<f32> = dw.chunks_exact(d_in).zip(dbias).flat_map(|(row, b)| row.iter().copied().chain([b])).collect();
        let d_additive = match (per_seq, shared_len) {
            (true, _) => Some(d_additive),
            (false, 0) => None,
            (false, n) => Some(sum_partials(shared, n)),
        };
        (dx, dprojections, d_additive)
    }
}
