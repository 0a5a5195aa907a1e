//! Inverted dropout: a mask drawn from repdef's seeded generator (candle's CPU RNG cannot be
//! seeded), applied by a kernel whose backward multiplies by the same mask. candle's `mul` by a
//! mask tensor would also compute a gradient for the mask, a wasted pass over the activations.

use super::par::{cpu_f32, par_elementwise, storage_f32};
use crate::rng::Rng;
use candle_core::{bail, CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

/// Elements per independently seeded run of dropout draws.
const DRAW_CHUNK: usize = 1 << 16;

/// Which elements of a tensor dropout zeroes, and the factor that scales the kept ones.
pub struct DropoutMask {
    dropped: Vec<bool>,
    scale: f32,
}

impl DropoutMask {
    /// A mask for `n` elements with drop probability `p`; `None` (and no draws) when `p` is 0.
    ///
    /// `rng` gives one seed; each run of [`DRAW_CHUNK`] elements draws from its own generator
    /// seeded from it and the run's index, so the runs are drawn in parallel and the mask is
    /// the same whatever the number of threads.
    pub fn draw(rng: &mut Rng, n: usize, p: f64) -> Option<Arc<DropoutMask>> {
        (p > 0.0).then(|| {
            let seed = rng.next_u64();
            let mut dropped = vec![false; n];
            dropped.par_chunks_mut(DRAW_CHUNK).enumerate().for_each(|(run, chunk)| {
                Rng::new(seed ^ (run as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).fill_bernoulli(chunk, p);
            });
            Arc::new(DropoutMask { dropped, scale: (1.0 / (1.0 - p)) as f32 })
        })
    }

    pub fn len(&self) -> usize {
        self.dropped.len()
    }

    /// The factors (0 or 1/(1-p)) of the elements `range`.
    #[inline(always)]
    pub fn factors(&self, range: Range<usize>) -> impl Iterator<Item = f32> + '_ {
        self.dropped[range].iter().map(|&d| if d { 0.0 } else { self.scale })
    }

    /// `out[i] = xs[i] · factor(offset + i)`.
    pub fn apply(&self, xs: &[f32], offset: usize, out: &mut [f32]) {
        for ((o, &x), f) in out.iter_mut().zip(xs).zip(self.factors(offset..offset + xs.len())) {
            *o = x * f;
        }
    }

    /// The mask as a tensor of factors, for the composed path.
    pub fn to_tensor(&self, shape: &Shape, device: &Device) -> Result<Tensor> {
        Tensor::from_iter(self.factors(0..self.len()), device)?.reshape(shape)
    }

    /// `xs · mask` elementwise, spread over the threads.
    fn apply_all(&self, xs: &[f32]) -> Vec<f32> {
        par_elementwise(xs.len(), |range, o| self.apply(&xs[range.clone()], range.start, o))
    }
}

/// Dropout of `xs` with a mask drawn for its `elem_count()` elements.
pub fn dropout(xs: &Tensor, mask: Arc<DropoutMask>) -> Result<Tensor> {
    xs.contiguous()?.apply_op1(Dropout(mask))
}

struct Dropout(Arc<DropoutMask>);

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "repdef-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = cpu_f32(storage, layout)?;
        if xs.len() != self.0.len() {
            bail!("dropout mask of {} elements for a tensor of {}", self.0.len(), xs.len());
        }
        Ok((CpuStorage::F32(self.0.apply_all(xs)), layout.shape().clone()))
    }

    fn bwd(&self, _xs: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let g = storage_f32(&storage, layout)?;
        Ok(Some(Tensor::from_vec(self.0.apply_all(g), layout.shape(), grad.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw_with_threads(threads: usize, seed: u64, n: usize) -> Vec<bool> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| DropoutMask::draw(&mut Rng::new(seed), n, 0.2).unwrap().dropped.clone())
    }

    #[test]
    fn masks_do_not_depend_on_the_thread_count_and_keep_their_rate_across_runs() {
        let n = 3 * DRAW_CHUNK + 5;
        let mask = draw_with_threads(2, 9, n);
        assert_eq!(mask, draw_with_threads(1, 9, n));
        assert_ne!(mask, draw_with_threads(2, 10, n), "another seed, another mask");
        let (first, last) = (&mask[..DRAW_CHUNK], &mask[DRAW_CHUNK..2 * DRAW_CHUNK]);
        assert_ne!(first, last, "each run draws from its own stream");
        let rate = mask.iter().filter(|&&d| d).count() as f64 / n as f64;
        assert!((rate - 0.2).abs() < 0.005, "{rate}");
    }
}
