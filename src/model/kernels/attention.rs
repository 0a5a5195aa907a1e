//! The core of multi-head self-attention: `[rows, d_in]` hidden states → the query/key/value
//! projections → `[rows, d]` attended values, before the output projection, forward and
//! backward on slices (the op around it, with the output projection and the residual
//! LayerNorm, is `attention_block`). The queries may be some rows only: every row is attended
//! to, but only those attend (the last block of a pretraining model, read at the picked rows).
//!
//! Forward computes the queries (at their rows) and the keys and values (at every row) as two
//! products (gemm, as in `projection`), adds their biases in place (folding 1/√d_head into the
//! queries), and runs `softmax(q·kᵀ + additive)`, dropout and `·v` per head, where `additive` is
//! the padding mask and, in models with one, the relative-position bias. Each head's products
//! read its columns of the projections and write its columns of the `[queries, d]` output
//! directly (strided gemm operands), so no pass splits or merges the heads, in either direction.
//! Forward keeps the biased projections and the probabilities for backward, which is written
//! out by hand: as composed ops the scores alone would pass through ~9 nodes, each 3 memory
//! passes in backward.
//!
//! The work is cut into chunks of a few sequences that run in parallel, each chunk's scores
//! staying in cache; within a chunk the per-head products call gemm one after another on the
//! chunk's thread. (One batched matmul over all heads would let gemm split every 128×64 product
//! across the threads, which on two cores is slower than not splitting at all.)

use super::dropout::DropoutMask;
use super::par::{par_chunks_mut, par_uneven_chunks, sum_partials, BLOCK_ROWS};
use super::projection::{self, sequential_products_into, Operand};
use super::simd::{dot, exp, max, sum};
use crate::vectorize::{self, Vectorized};
use candle_core::{bail, Result, Shape};
use std::borrow::Cow;
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
    queries: Queries,
    /// The input at the query rows when not all (otherwise backward reads the input).
    xs_q: Option<Vec<f32>>,
    /// `[queries, d]`: the queries, biases added, scaled by 1/√d_head.
    q: Vec<f32>,
    /// `[rows, 2·d]`: the keys and values, biases added.
    kv: Vec<f32>,
    chunks: Vec<ChunkSaved>,
}

/// What backward needs of one chunk of sequences besides its rows of `q` and `kv`.
struct ChunkSaved {
    /// Per sequence and head, `[its queries, pos]`: the softmax output, before dropout.
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

/// The rows that attend (the queries): every row, or some rows of each sequence. The output
/// has one row per query, in row order. Also how the sequences split into the chunks that run
/// in parallel.
struct Queries {
    /// The query rows of the `[batch·pos]` input, ascending; `None`: every row.
    rows: Option<Vec<u32>>,
    /// `[batch + 1]`: sequence `s`'s queries are output rows `starts[s]..starts[s + 1]`.
    starts: Vec<usize>,
    /// `[n_chunks + 1]`: each chunk's first sequence, and its first query.
    chunk_seqs: Vec<usize>,
    chunk_queries: Vec<usize>,
}

impl Queries {
    fn new(rows: Option<&[u32]>, batch: usize, pos: usize) -> Result<Self> {
        let starts: Vec<usize> = match rows {
            None => (0..=batch).map(|s| s * pos).collect(),
            Some(rows) => {
                if let Some(pair) = rows.windows(2).find(|pair| pair[0] >= pair[1]) {
                    bail!("attention: query rows must ascend, each once ({} before {})", pair[0], pair[1]);
                }
                if let Some(&last) = rows.last().filter(|&&last| last as usize >= batch * pos) {
                    bail!("attention: query row {last} of {} rows", batch * pos);
                }
                (0..=batch).map(|s| rows.partition_point(|&r| (r as usize) < s * pos)).collect()
            }
        };
        let chunk_seqs: Vec<usize> = (0..=batch.div_ceil(SEQS_PER_CHUNK)).map(|c| batch.min(c * SEQS_PER_CHUNK)).collect();
        let chunk_queries = chunk_seqs.iter().map(|&s| starts[s]).collect();
        Ok(Queries { rows: rows.map(<[u32]>::to_vec), starts, chunk_seqs, chunk_queries })
    }

    fn n_chunks(&self) -> usize {
        self.chunk_seqs.len() - 1
    }

    /// Chunk `c`'s part of a buffer with a row of `width` per query.
    fn chunk_query_range(&self, c: usize, width: usize) -> Range<usize> {
        self.chunk_queries[c] * width..self.chunk_queries[c + 1] * width
    }

    /// Chunk `c`'s part of a buffer with `width` elements per sequence.
    fn chunk_seq_range(&self, c: usize, width: usize) -> Range<usize> {
        self.chunk_seqs[c] * width..self.chunk_seqs[c + 1] * width
    }

    fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    /// The position in its sequence `seq` of query `i` (an output row).
    fn position(&self, i: usize, seq: usize, pos: usize) -> usize {
        match &self.rows {
            Some(rows) => rows[i] as usize - seq * pos,
            None => i - seq * pos,
        }
    }

    /// The queries' rows of `xs` (rows of `d`).
    fn gather<'a>(&self, xs: &'a [f32], d: usize) -> Cow<'a, [f32]> {
        match &self.rows {
            Some(rows) => Cow::Owned(gather_rows(xs, rows, d)),
            None => Cow::Borrowed(xs),
        }
    }

    /// The sequences of chunk `c`.
    fn chunk(&self, c: usize) -> Vec<ChunkSeq> {
        let (seqs, first) = (self.chunk_seqs[c]..self.chunk_seqs[c + 1], self.chunk_queries[c]);
        seqs.clone()
            .map(|index| ChunkSeq {
                index,
                local: index - seqs.start,
                global_first_query: self.starts[index],
                first_query: self.starts[index] - first,
                n_queries: self.starts[index + 1] - self.starts[index],
            })
            .collect()
    }
}

/// One sequence of a chunk.
#[derive(Clone, Copy)]
struct ChunkSeq {
    /// Its index in the batch, and in the chunk.
    index: usize,
    local: usize,
    /// Its first query among all, and in the chunk; its number of queries.
    global_first_query: usize,
    first_query: usize,
    n_queries: usize,
}

impl ChunkSeq {
    /// Where the `[n_queries, pos]` scores of head `head` start in the chunk's: per sequence,
    /// then per head.
    fn scores_start(self, head: usize, dims: Dims) -> usize {
        (self.first_query * dims.n_heads + head * self.n_queries) * dims.pos
    }

    /// Where head `head`'s columns of this sequence's part `part` (0: keys, 1: values) start
    /// in the chunk's `[seqs·pos, 2·d]` keys and values.
    fn kv_start(self, part: usize, head: usize, dims: Dims) -> usize {
        (self.local * dims.pos * 2 + part) * dims.d_model() + head * dims.d_head
    }

    /// Where head `head`'s columns of this sequence's first query start in the chunk's `[queries, d]`.
    fn query_start(self, head: usize, dims: Dims) -> usize {
        self.first_query * dims.d_model() + head * dims.d_head
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

    /// (sequence, head, query position) of each row of a chunk's scores, in their order.
    fn score_rows<'a>(self, seqs: &'a [ChunkSeq], queries: &'a Queries) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
        seqs.iter().flat_map(move |&seq| {
            (0..self.n_heads)
                .flat_map(move |head| (0..seq.n_queries).map(move |i| (seq.index, head, queries.position(seq.global_first_query + i, seq.index, self.pos))))
        })
    }

    /// Where row (sequence, head, query position) of the full `[batch, heads, pos, pos]` logits
    /// starts: the dropout mask's layout.
    fn logit_row(self, seq: usize, head: usize, query: usize) -> usize {
        ((seq * self.n_heads + head) * self.pos + query) * self.pos
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

    /// Forward of the chunk's sequences `seqs`: `q`, `kv` and `out` are their rows; `additive`
    /// is the whole term.
    fn forward_chunk(&self, dims: Dims, (seqs, queries): (&[ChunkSeq], &Queries), (q, kv, additive): (&[f32], &[f32], &[f32]), out: &mut [f32]) -> ChunkSaved {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let mut scores = vec![0f32; q.len() / d * dims.n_heads * pos];
        for &seq in seqs.iter().filter(|seq| seq.n_queries > 0) {
            let (queries, keys) = (|h| Operand::rows(&q[seq.query_start(h, dims)..], d), |h| Operand::transposed(&kv[seq.kv_start(0, h, dims)..], 2 * d));
            sequential_products_into(&mut scores, (|h| seq.scores_start(h, dims), pos), dims.n_heads, (seq.n_queries, dh, pos), (queries, keys), 1.0);
        }
        let rows = || dims.score_rows(seqs, queries);
        let additive_rows = rows().map(|(seq, head, query)| &additive[dims.additive.row(seq, head, query)..][..pos]);
        vectorize::dispatch(SoftmaxRows { scores: &mut scores, additive_rows, pos });
        let dropped = self.dropout.as_ref().map(|dropout| {
            let mut dropped = vec![0f32; scores.len()];
            for ((o, p), (seq, head, query)) in dropped.chunks_exact_mut(pos).zip(scores.chunks_exact(pos)).zip(rows()) {
                dropout.apply(p, dims.logit_row(seq, head, query), o);
            }
            dropped
        });
        let saved = ChunkSaved { probs: scores, dropped };
        for &seq in seqs.iter().filter(|seq| seq.n_queries > 0) {
            let (probs, values) =
                (|h| Operand::rows(&saved.dropped()[seq.scores_start(h, dims)..], pos), |h| Operand::rows(&kv[seq.kv_start(1, h, dims)..], 2 * d));
            sequential_products_into(out, (|h| seq.query_start(h, dims), d), dims.n_heads, (seq.n_queries, pos, dh), (probs, values), 1.0);
        }
        saved
    }

    /// Backward of the chunk's sequences `seqs` (`q`, `kv`, `grad`, `dq`, `dkv`: their rows);
    /// returns ∂/∂bias, and adds ∂/∂additive to `d_additive` (the chunk's sequences' part of
    /// it, or the whole shared term) when the term is per query.
    fn backward_chunk(
        &self,
        dims: Dims,
        (seqs, queries): (&[ChunkSeq], &Queries),
        (saved, q, kv): (&ChunkSaved, &[f32], &[f32]),
        grad: &[f32],
        [dq, dkv, d_additive]: [&mut [f32]; 3],
    ) -> Vec<f32> {
        let (d, pos, dh) = (dims.d_model(), dims.pos, dims.d_head);
        let mut d_dropped = vec![0f32; saved.probs.len()];
        for &seq in seqs.iter().filter(|seq| seq.n_queries > 0) {
            let m = seq.n_queries;
            let g_head = |h| Operand::rows(&grad[seq.query_start(h, dims)..], d);
            let dropped_t = |h| Operand::transposed(&saved.dropped()[seq.scores_start(h, dims)..], pos);
            sequential_products_into(dkv, (|h| seq.kv_start(1, h, dims), 2 * d), dims.n_heads, (pos, m, dh), (dropped_t, g_head), 1.0);
            let values_t = |h| Operand::transposed(&kv[seq.kv_start(1, h, dims)..], 2 * d);
            sequential_products_into(&mut d_dropped, (|h| seq.scores_start(h, dims), pos), dims.n_heads, (m, dh, pos), (g_head, values_t), 1.0);
        }
        // Softmax backward, in place.
        let mut ds = d_dropped;
        vectorize::dispatch(SoftmaxGradRows { dims, seqs, queries, dropout: self.dropout.as_deref(), probs: &saved.probs, ds: &mut ds, d_additive });
        // The queries were scaled before the product, so ∂/∂q carries the scale and ∂/∂k does not.
        for &seq in seqs.iter().filter(|seq| seq.n_queries > 0) {
            let m = seq.n_queries;
            let (ds_rows, keys) = (|h| Operand::rows(&ds[seq.scores_start(h, dims)..], pos), |h| Operand::rows(&kv[seq.kv_start(0, h, dims)..], 2 * d));
            sequential_products_into(dq, (|h| seq.query_start(h, dims), d), dims.n_heads, (m, pos, dh), (ds_rows, keys), dims.scale());
            let (ds_t, queries) = (|h| Operand::transposed(&ds[seq.scores_start(h, dims)..], pos), |h| Operand::rows(&q[seq.query_start(h, dims)..], d));
            sequential_products_into(dkv, (|h| seq.kv_start(0, h, dims), 2 * d), dims.n_heads, (pos, m, dh), (ds_t, queries), 1.0);
        }
        let mut dbias = vec![0f32; 3 * d];
        let (dbias_q, dbias_kv) = dbias.split_at_mut(d);
        for (sums, rows) in [(dbias_q, &*dq), (dbias_kv, &*dkv)] {
            for row in rows.chunks_exact(sums.len()) {
                sums.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
            }
        }
        dbias
    }
}

/// Softmax of each row of `scores + additive`, in place, `additive_rows` giving each row's term;
/// dispatched to the CPU's widest vectors (the same bits on every path).
struct SoftmaxRows<'a, I> {
    scores: &'a mut [f32],
    additive_rows: I,
    pos: usize,
}

impl<'a, I: Iterator<Item = &'a [f32]>> Vectorized for SoftmaxRows<'_, I> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        for (o, additive) in self.scores.chunks_exact_mut(self.pos).zip(self.additive_rows) {
            o.iter_mut().zip(additive).for_each(|(o, &m)| *o += m);
            let top = max(o);
            o.iter_mut().for_each(|o| *o = exp(*o - top));
            let inv = 1.0 / sum(o);
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// Softmax backward over a chunk's rows, in place in `ds` (which holds ∂/∂dropped): ds = p ⊙
/// (dp − Σ dp ⊙ p), dp being ∂/∂dropped times the dropout factors; adds each row to its
/// ∂/∂additive row when the term is per query. Dispatched to the CPU's widest vectors.
struct SoftmaxGradRows<'a> {
    dims: Dims,
    seqs: &'a [ChunkSeq],
    queries: &'a Queries,
    dropout: Option<&'a DropoutMask>,
    probs: &'a [f32],
    ds: &'a mut [f32],
    /// Starts at the chunk's first sequence.
    d_additive: &'a mut [f32],
}

impl Vectorized for SoftmaxGradRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (dims, pos) = (self.dims, self.dims.pos);
        for ((o, p), (seq, head, query)) in self.ds.chunks_exact_mut(pos).zip(self.probs.chunks_exact(pos)).zip(dims.score_rows(self.seqs, self.queries)) {
            if let Some(mask) = self.dropout {
                let start = dims.logit_row(seq, head, query);
                o.iter_mut().zip(mask.factors(start..start + pos)).for_each(|(o, f)| *o *= f);
            }
            let c = dot(o, p);
            o.iter_mut().zip(p).for_each(|(o, &p)| *o = p * (*o - c));
            if dims.additive.per_query() {
                let start = dims.additive.row(seq - self.seqs[0].index, head, query);
                self.d_additive[start..start + pos].iter_mut().zip(o.iter()).for_each(|(d, &g)| *d += g);
            }
        }
    }
}

/// Rows `rows` of `xs` (rows of `d`), in that order.
pub(super) fn gather_rows(xs: &[f32], rows: &[u32], d: usize) -> Vec<f32> {
    rows.iter().flat_map(|&r| &xs[r as usize * d..(r as usize + 1) * d]).copied().collect()
}

/// Rows gathered to keep for backward: `None` when they were the input itself, borrowed.
pub(super) fn gathered(rows: Cow<[f32]>) -> Option<Vec<f32>> {
    match rows {
        Cow::Owned(rows) => Some(rows),
        Cow::Borrowed(_) => None,
    }
}

/// `into[rows[i]] += g[i]` for each row `i` of `g` (rows of `d`): the gradient of [`gather_rows`].
pub(super) fn add_into_rows(g: &[f32], rows: &[u32], into: &mut [f32], d: usize) {
    for (&r, g) in rows.iter().zip(g.chunks_exact(d)) {
        into[r as usize * d..(r as usize + 1) * d].iter_mut().zip(g).for_each(|(x, &g)| *x += g);
    }
}

/// `buffer[r] = (buffer[r] + bias) · factor` for each row `r` (rows as long as `bias`).
fn add_bias(buffer: &mut [f32], bias: &[f32], factor: f32) {
    par_chunks_mut(buffer, BLOCK_ROWS * bias.len(), |chunk| {
        for row in chunk.chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(x, &b)| *x = (*x + b) * factor);
        }
    });
}

impl Attention {
    /// The attended values of `xs` (`[rows, d_in]`) at the rows `queries` (ascending, each once;
    /// all if `None`) for the query, key and value projections `(weights, biases)` (`[3·d, d_in]`
    /// in PyTorch's `[out, in]` layout, and `[3·d]`) and the additive term `(values, shape)` →
    /// (`[queries, d]`, what backward needs).
    pub(super) fn forward(
        &self,
        xs: &[f32],
        (weights, bias): (&[f32], &[f32]),
        (additive, additive_shape): (&[f32], &Shape),
        (rows, d_in, d): (usize, usize, usize),
        queries: Option<&[u32]>,
    ) -> Result<(Vec<f32>, Saved)> {
        let (dims, batch) = self.dims((rows, d_in, d), additive_shape)?;
        let queries = Queries::new(queries, batch, dims.pos)?;
        let pos = dims.pos;
        if weights.len() != 3 * d * d_in || bias.len() != 3 * d {
            bail!("attention: {} weights and {} biases do not fit d {d} and d_in {d_in}", weights.len(), bias.len());
        }
        let (w_q, w_kv) = weights.split_at(d * d_in);
        let xs_q = queries.gather(xs, d_in);
        let mut q = projection::product(queries.len(), d_in, d, Operand::rows(&xs_q, d_in), Operand::transposed(w_q, d_in));
        let mut kv = projection::product(rows, d_in, 2 * d, Operand::rows(xs, d_in), Operand::transposed(w_kv, d_in));
        add_bias(&mut q, &bias[..d], dims.scale());
        add_bias(&mut kv, &bias[d..], 1.0);
        let (chunks, [out]) = par_uneven_chunks(queries.n_chunks(), [(&queries.chunk_queries[..], d)], |c, [o]| {
            let (q, kv) = (&q[queries.chunk_query_range(c, d)], &kv[queries.chunk_seq_range(c, pos * 2 * d)]);
            self.forward_chunk(dims, (&queries.chunk(c), &queries), (q, kv, additive), o)
        });
        Ok((out, Saved { dims, queries, xs_q: gathered(xs_q), q, kv, chunks }))
    }

    /// The gradients of [`Attention::forward`] for the output gradient `g` (`[queries, d]`), with
    /// the projections' `weights` as given to it.
    pub(super) fn backward(&self, saved: &Saved, xs: &[f32], weights: &[f32], g: &[f32]) -> AttentionGrads {
        let (dims, queries) = (saved.dims, &saved.queries);
        let (d, pos) = (dims.d_model(), dims.pos);
        let d_in = weights.len() / (3 * d);
        let batch = queries.starts.len() - 1;
        // ∂/∂additive: written per sequence when each has its own term, otherwise summed over
        // chunk-local copies of the shared term (none for a padding mask).
        let per_seq = dims.additive.per_query() && dims.additive.per_sequence();
        let shared_len = if dims.additive.per_query() && !per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let seq_len = if per_seq { dims.additive.seq_len(self.n_heads, pos) } else { 0 };
        let layouts = [(&queries.chunk_queries[..], d), (&queries.chunk_seqs[..], pos * 2 * d), (&queries.chunk_seqs[..], seq_len)];
        let (partials, [dq, dkv, d_additive]) = par_uneven_chunks(queries.n_chunks(), layouts, |c, [dq, dkv, da]| {
            let mut shared = vec![0f32; shared_len];
            let target = if per_seq { da } else { &mut shared[..] };
            let query_rows = queries.chunk_query_range(c, d);
            let inputs = (&saved.chunks[c], &saved.q[query_rows.clone()], &saved.kv[queries.chunk_seq_range(c, pos * 2 * d)]);
            let dbias = self.backward_chunk(dims, (&queries.chunk(c), queries), inputs, &g[query_rows], [dq, dkv, target]);
            (dbias, shared)
        });
        let (dbias, shared): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
        // ∂/∂xs: through the keys and values at every row, and the queries at theirs.
        let (w_q, w_kv) = weights.split_at(d * d_in);
        let (mut dx, dw_kv) = projection::product_grads(&dkv, xs, w_kv, (batch * pos, d_in, 2 * d));
        let xs_q = saved.xs_q.as_deref().unwrap_or(xs);
        let dw_q = projection::product(d, queries.len(), d_in, Operand::transposed(&dq, d), Operand::rows(xs_q, d_in));
        let dx_q = Operand::rows(&dq, d);
        match &queries.rows {
            None => projection::add_product(&mut dx, (queries.len(), d, d_in), dx_q, Operand::rows(w_q, d_in)),
            Some(rows) => add_into_rows(&projection::product(rows.len(), d, d_in, dx_q, Operand::rows(w_q, d_in)), rows, &mut dx, d_in),
        }
        let d_additive = match (per_seq, shared_len) {
            (true, _) => Some(d_additive),
            (false, 0) => None,
            (false, n) => Some(sum_partials(shared, n)),
        };
        AttentionGrads { dx, dw_q, dw_kv, dbias: sum_partials(dbias, 3 * d), d_additive }
    }
}

/// The gradients of [`Attention::forward`]'s inputs.
pub(super) struct AttentionGrads {
    /// ∂/∂xs, `[rows, d_in]`.
    pub dx: Vec<f32>,
    /// ∂/∂ of the query weights (`[d, d_in]`) and of the key and value weights (`[2·d, d_in]`).
    pub dw_q: Vec<f32>,
    pub dw_kv: Vec<f32>,
    /// ∂/∂ of the three biases, `[3·d]`.
    pub dbias: Vec<f32>,
    /// ∂/∂additive in its layout when the term is per query (a padding mask gets none).
    pub d_additive: Option<Vec<f32>>,
}
