//! The end of the MLM head and the loss as one op: logits over the vocabulary, `normed Eᵀ +
//! bias` (`E` the tied word embeddings), their mean cross-entropy against the target ids, and
//! each row's top-scoring id (the accuracy), with hand-written backward
//! `(softmax − one-hot) / n` into the product's gradients.
//!
//! The `[n_picked, d_vocab]` logits are the largest activation of a pretraining step. As a
//! product, a bias add and a loss, they would be two nodes of candle's graph, each given a
//! zero-filled gradient of that size and an add, serially; here they stay inside the op, and the
//! bias and the softmax are one pass over each row.

use super::par::{cpu_f32, par_row_blocks, storage_f32, sum_partials};
use super::projection::{self, Operand};
use super::simd::{exp, max, sum};
use crate::vectorize;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::{Arc, OnceLock};

/// For `normed`: `[n, d_embedding]`, `embeddings`: `[d_vocab, d_embedding]`, `bias`: `[d_vocab]`
/// and `targets` (`n` ids) → (the mean over rows of `−log softmax(logits)[target]`, a scalar;
/// each row's argmax, the first of equal maxima).
pub fn vocabulary_cross_entropy(normed: &Tensor, embeddings: &Tensor, bias: &Tensor, targets: &[u32]) -> Result<(Tensor, Vec<u32>)> {
    let predicted = Arc::new(OnceLock::new());
    let op = VocabularyCrossEntropy { targets: targets.to_vec(), predicted: Arc::clone(&predicted), saved: OnceLock::new() };
    let loss = normed.contiguous()?.apply_op3(&embeddings.contiguous()?, &bias.contiguous()?, op)?;
    let Some(predicted) = predicted.get() else { bail!("vocabulary cross-entropy: no predictions from the forward pass") };
    Ok((loss, predicted.clone()))
}

struct VocabularyCrossEntropy {
    targets: Vec<u32>,
    /// Each row's argmax, set by the forward pass for the caller.
    predicted: Arc<OnceLock<Vec<u32>>>,
    /// Set by the forward pass, read by backward: the product `normed Eᵀ` (without the bias)
    /// and each row's log Σ exp of the logits.
    saved: OnceLock<(Vec<f32>, Vec<f32>)>,
}

impl VocabularyCrossEntropy {
    /// `(n, d_embedding, d_vocab)` of the inputs, checked against each other and the targets.
    fn dims(&self, normed: &Shape, embeddings: &Shape, bias_len: usize) -> Result<(usize, usize, usize)> {
        let (rows, d_in, vocab) = projection::dims(normed, embeddings)?;
        if bias_len != vocab || self.targets.len() != rows || self.targets.iter().any(|&t| t as usize >= vocab) {
            bail!("vocabulary cross-entropy: {} targets for {rows} rows of {vocab} classes (bias of {bias_len}), or a target beyond them", self.targets.len());
        }
        Ok((rows, d_in, vocab))
    }
}

impl CustomOp3 for VocabularyCrossEntropy {
    fn name(&self) -> &'static str {
        "repdef-vocabulary-cross-entropy"
    }

    fn cpu_fwd(&self, normed: &CpuStorage, nl: &Layout, e: &CpuStorage, el: &Layout, bias: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (normed, e, bias) = (cpu_f32(normed, nl)?, cpu_f32(e, el)?, cpu_f32(bias, bl)?);
        let (n, d_in, vocab) = self.dims(nl.shape(), el.shape(), bias.len())?;
        let product = projection::product(n, d_in, vocab, Operand::rows(normed, d_in), Operand::transposed(e, d_in));
        let (blocks, [lse]) = par_row_blocks(n, [1], |rows, [lse]| {
            let span = rows.start * vocab..rows.end * vocab;
            vectorize::dispatch(LossRows { product: &product[span], bias, targets: &self.targets[rows], lse })
        });
        let (losses, predicted): (Vec<f64>, Vec<Vec<u32>>) = blocks.into_iter().unzip();
        if self.predicted.set(predicted.concat()).is_err() || self.saved.set((product, lse)).is_err() {
            bail!("vocabulary cross-entropy op applied twice");
        }
        let mean = (losses.iter().sum::<f64>() / n.max(1) as f64) as f32;
        Ok((CpuStorage::F32(vec![mean]), Shape::from(())))
    }

    fn bwd(&self, normed: &Tensor, e: &Tensor, bias: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some((product, lse)) = self.saved.get() else { bail!("vocabulary cross-entropy backward before forward") };
        let (n, d_in, vocab) = self.dims(normed.shape(), e.shape(), bias.elem_count())?;
        let scale = if n == 0 { 0.0 } else { grad.to_scalar::<f32>()? / n as f32 };
        let (normed_s, normed_l) = normed.storage_and_layout();
        let (e_s, e_l) = e.storage_and_layout();
        let (b_s, b_l) = bias.storage_and_layout();
        let (normed_v, e_v, b) = (storage_f32(&normed_s, normed_l)?, storage_f32(&e_s, e_l)?, storage_f32(&b_s, b_l)?);
        // ∂/∂logits = (softmax − one-hot) · scale, row by row; its column sums are ∂/∂bias.
        let (partials, [dlogits]) = par_row_blocks(n, [vocab], |rows, [d]| {
            let span = rows.start * vocab..rows.end * vocab;
            let mut dbias = vec![0f32; vocab];
            let (targets, lse) = (&self.targets[rows.clone()], &lse[rows]);
            vectorize::dispatch(GradientRows { product: &product[span], bias: b, targets, lse, scale, dlogits: d, dbias: &mut dbias });
            dbias
        });
        let (dnormed, de) = projection::product_grads(&dlogits, normed_v, e_v, (n, d_in, vocab));
        let device = normed.device();
        Ok((
            Some(Tensor::from_vec(dnormed, normed.shape(), device)?),
            Some(Tensor::from_vec(de, e.shape(), device)?),
            Some(Tensor::from_vec(sum_partials(partials, vocab), vocab, device)?),
        ))
    }
}

/// The forward pass over a block of rows (dispatched to the CPU's widest vectors): for each
/// row of `product` (`normed Eᵀ`), the logits `product + bias`, their log Σ exp into `lse`, and
/// → (the block's summed loss, each row's argmax).
struct LossRows<'a> {
    product: &'a [f32],
    bias: &'a [f32],
    targets: &'a [u32],
    lse: &'a mut [f32],
}

impl vectorize::Vectorized for LossRows<'_> {
    type Output = (f64, Vec<u32>);
    #[inline(always)]
    fn run(self) -> (f64, Vec<u32>) {
        let Self { product, bias, targets, lse } = self;
        let vocab = bias.len();
        let (mut loss, mut predicted, mut logits) = (0f64, Vec::with_capacity(targets.len()), vec![0f32; vocab]);
        for ((row, &target), lse) in product.chunks_exact(vocab).zip(targets).zip(lse) {
            for ((l, &p), &b) in logits.iter_mut().zip(row).zip(bias) {
                *l = p + b;
            }
            let top = max(&logits);
            predicted.push(logits.iter().position(|&l| l == top).unwrap_or(0) as u32);
            let target_logit = logits[target as usize];
            for l in logits.iter_mut() {
                *l = exp(*l - top);
            }
            *lse = top + sum(&logits).ln();
            loss += (*lse - target_logit) as f64;
        }
        (loss, predicted)
    }
}

/// The backward pass over a block of rows (dispatched): from the saved `product` and `lse`,
/// ∂/∂logits `= (softmax − one-hot) · scale` (the incoming gradient over the number of rows)
/// into `dlogits`, adding its column sums (∂/∂bias) to `dbias`.
struct GradientRows<'a> {
    product: &'a [f32],
    bias: &'a [f32],
    targets: &'a [u32],
    lse: &'a [f32],
    scale: f32,
    dlogits: &'a mut [f32],
    dbias: &'a mut [f32],
}

impl vectorize::Vectorized for GradientRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { product, bias, targets, lse, scale, dlogits, dbias } = self;
        let vocab = bias.len();
        for (((d, row), &target), &lse) in dlogits.chunks_exact_mut(vocab).zip(product.chunks_exact(vocab)).zip(targets).zip(lse) {
            for ((d, &p), &b) in d.iter_mut().zip(row).zip(bias) {
                *d = exp(p + b - lse) * scale;
            }
            d[target as usize] -= scale;
            for (s, &x) in dbias.iter_mut().zip(d.iter()) {
                *s += x;
            }
        }
    }
}
