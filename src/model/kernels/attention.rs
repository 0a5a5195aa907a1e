//! The core of multi-head self-attention: `[rows, d_in]` hidden states → the query/key/value
//! projections → `[rows, d]` attended values, before the output projection, forward and
//! backward on slices (the op around it, with the output projection and the residual
//! LayerNorm, is `attention_block`).
//!
//! Forward computes the three projections as one product (gemm, as in `projection`), adds their
//! biases in place (folding 1/√d_head into the queries), and runs `softmax(q·kᵀ + additive)`,
//! dropout and `·v` per head, where `additive` is the padding mask and, in models with one, the
//! relative-position bias. Each head's products read its columns of the `[rows, 3·d]` product
//! and write its columns of the `[rows, d]` output directly (strided gemm operands), so no pass
//! splits or merges the heads, in either direction. Forward keeps the biased product and the
//! probabilities for backward, which is written out by hand: as composed ops the scores alone
//! would pass through ~9 nodes, each 3 memory passes in backward.
//!
//! The work is cut into chunks of a few sequences that run in parallel, each chunk's scores
//! staying in cache; within a chunk the per-head products call gemm one after another on the
//! chunk's thread. (One batched matmul over all heads would let gemm split every 128×64 product
//! across the threads, which on two cores is slower than not splitting at all.)

use super::dropout::DropoutMask;
use super::par::{par_chunks_mut, par_row_chunks, sum_partials, BLOCK_ROWS};
use super::projection::{self, sequential_products, sequential_products_into, Operand};
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
    /// `[rows, 3·d]`: the queries (scaled by 1/√d_head), keys and values, biases added.
    qkv: Vec<f32>,
    chunks: Vec<ChunkSaved>,
}

/// What backward needs of one chunk of sequences besides its rows of `qkv`.
struct ChunkSaved {
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

    /// Where head `h` (sequence-major, `sequence · n_heads + head`) of part `part` starts in a
    /// chunk's rows of `parts · d` (the `[rows, 3·d]` projections, parts 0–2: queries, keys,
    /// values; or a `[rows, d]` output or gradient, part 0 of 1).
    fn head_start(self, h: usize, part: usize, parts: usize) -> usize {
        let (seq, head) = (h / self.n_heads, h % self.n_heads);
        (seq * self.pos * parts + part) * self.d_model() + head * self.d_head
    }

    /// The (sequence, head, query) of row `r` of a chunk's `[seqs·heads·pos, pos]` logits.
    fn row_indices(self, r: usize) -> (usize, usize, usize) {
        let (sh, query) = (r / self.pos, r % self.pos);
        (sh / self.n_heads, sh % self.n_heads, query)
    }

    /// Row-wise softmax of `scores + additive`, in place, for the chunk of sequences starting
    /// at `first_seq` (`additive`: the whole term, see [`Additive`]) → probabilities.
    fn softmax(self, mut scores: Vec<f32>, additive: &[f32], first_seq: usize) -> Vec<f32> {
        let pos = self.pos;
        for (r, o) in scores.chunks_exact_mut(pos).enumerate() {
            let (seq, head, query) = self.row_indices(r);
            let start = self.additive.row(first_seq + seq, head, query);
            o.iter_mut().zip(&additive[start..start + pos]).for_each(|(o, &m)| *o += m);
            let top = max(o);
            o.iter_mut().for_each(|o| *o = exp(*o - top));
            let inv = 1.0 / sum(o);
            o.iter_mut().for_each(|o| *o *= inv);
        }
        scores
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
    fn forward_chunk(&self, dims: Dims, seqs: Range<usize>, (qkv, additive): (&[f32], &[f32]), out: &mut [f32]) -> Result<ChunkSaved> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let part = |part: usize, h: usize| &qkv[dims.head_start(h, part, 3)..];
        let scores = sequential_products(n, (pos, dh, pos), |h| Operand::rows(part(0, h), 3 * d), |h| Operand::transposed(part(1, h), 3 * d));
        let probs = dims.softmax(scores, additive, seqs.start);
        let per_score = pos * pos;
        let dropped = self.dropout.as_ref().map(|dropout| {
            let mut dropped = vec![0f32; probs.len()];
            dropout.apply(&probs, seqs.start * dims.n_heads * per_score, &mut dropped);
            dropped
        });
        let saved = ChunkSaved { probs, dropped };
        let (probs, values) = (|h| Operand::rows(&saved.dropped()[h * per_score..], pos), |h| Operand::rows(part(2, h), 3 * d));
        sequential_products_into(out, (|h| dims.head_start(h, 0, 1), d), n, (pos, pos, dh), (probs, values), 1.0);
        Ok(saved)
    }

    /// Backward of the sequences `seqs` (`qkv`, `grad`, `dqkv`: their rows); returns ∂/∂bias, and
    /// adds ∂/∂additive to `d_additive` (the chunk's sequences' part of it, or the whole shared
    /// term) when the term is per query.
    fn backward_chunk(
        &self,
        dims: Dims,
        seqs: Range<usize>,
        (saved, qkv): (&ChunkSaved, &[f32]),
        grad: &[f32],
        dqkv: &mut [f32],
        d_additive: &mut [f32],
    ) -> Vec<f32> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let n = seqs.len() * dims.n_heads;
        let per_score = pos * pos;
        let part = |part: usize, h: usize| &qkv[dims.head_start(h, part, 3)..];
        let into_part = |part: usize| (move |h| dims.head_start(h, part, 3), 3 * d);
        let g_head = |h: usize| Operand::rows(&grad[dims.head_start(h, 0, 1)..], d);
        let dropped_t = |h: usize| Operand::transposed(&saved.dropped()[h * per_score..], pos);
        sequential_products_into(dqkv, into_part(2), n, (pos, pos, dh), (dropped_t, g_head), 1.0);
        // Softmax backward: ds = p ⊙ (dp − Σ dp ⊙ p), dp being ∂/∂dropped times the dropout factors.
        let d_dropped = sequential_products(n, (pos, dh, pos), g_head, |h| Operand::transposed(part(2, h), 3 * d));
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
        // The queries were scaled before the product, so ∂/∂q carries the scale and ∂/∂k does not.
        let (ds_rows, ds_t) = (|h| Operand::rows(&ds[h * per_score..], pos), |h| Operand::transposed(&ds[h * per_score..], pos));
        sequential_products_into(dqkv, into_part(0), n, (pos, pos, dh), (ds_rows, |h| Operand::rows(part(1, h), 3 * d)), dims.scale());
        sequential_products_into(dqkv, into_part(1), n, (pos, pos, dh), (ds_t, |h| Operand::rows(part(0, h), 3 * d)), 1.0);
        let mut dbias = vec![0f32; 3 * d];
        for row in dqkv.chunks_exact(3 * d) {
            dbias.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
        }
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
        let mut qkv = projection::product(rows, d_in, 3 * d, Operand::rows(xs, d_in), Operand::transposed(projections, d_in + 1));
        let bias: Vec<f32> = projections.chunks_exact(d_in + 1).map(|row| row[d_in]).collect();
        let scale = dims.scale();
        par_chunks_mut(&mut qkv, BLOCK_ROWS * 3 * d, |chunk| {
            for row in chunk.chunks_exact_mut(3 * d) {
                let (queries, keys_values) = row.split_at_mut(d);
                queries.iter_mut().zip(&bias[..d]).for_each(|(x, &b)| *x = (*x + b) * scale);
                keys_values.iter_mut().zip(&bias[d..]).for_each(|(x, &b)| *x += b);
            }
        });
        let (chunks, [out]) = par_row_chunks(batch, SEQS_PER_CHUNK, [pos * d], |seqs, [o]| {
            let qkv = &qkv[seqs.start * pos * 3 * d..seqs.end * pos * 3 * d];
            self.forward_chunk(dims, seqs, (qkv, additive), o)
        });
        Ok((out, Saved { dims, batch, qkv, chunks: chunks.into_iter().collect::<Result<_>>()? }))
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
            let qkv = &saved.qkv[seqs.start * pos * 3 * d..seqs.end * pos * 3 * d];
            let grad = &g[seqs.start * pos * d..seqs.end * pos * d];
            let dbias = self.backward_chunk(dims, seqs.clone(), (&saved.chunks[chunk], qkv), grad, o, target);
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
