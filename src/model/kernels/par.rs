//! Reading CPU tensor data inside the kernels, and spreading row-major work over candle's
//! worker threads (the rayon pool its matmuls use, so the two never oversubscribe the cores).

use candle_core::{bail, CpuStorage, Layout, Result, Storage};
use std::ops::Range;
use std::sync::Mutex;

/// The f32 elements that a contiguous layout selects in a CPU storage.
pub fn cpu_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("fused kernels need contiguous inputs") };
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// [`cpu_f32`] for a tensor's storage (`Tensor::storage_and_layout`), as used in backward passes.
pub fn storage_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu_f32(cpu, layout),
        _ => bail!("fused kernels run on the CPU only"),
    }
}

/// Rows per work unit. Per-unit partial sums are combined in unit order, so every result is the
/// same whatever the number of threads (bit-exact resume on another machine).
pub const BLOCK_ROWS: usize = 32;

/// Runs `f(rows, outputs)` over consecutive blocks of [`BLOCK_ROWS`] of `n_rows` rows, where each
/// output buffer (with its row length) is cut into the matching rows; returns every block's
/// result in block order.
pub fn par_row_blocks<const N: usize, R: Send>(
    n_rows: usize,
    outputs: [(&mut [f32], usize); N],
    f: impl Fn(Range<usize>, [&mut [f32]; N]) -> R + Sync,
) -> Vec<R> {
    par_row_chunks(n_rows, BLOCK_ROWS, outputs, f)
}

/// [`par_row_blocks`] with blocks of `block_rows` rows.
pub fn par_row_chunks<const N: usize, R: Send>(
    n_rows: usize,
    block_rows: usize,
    outputs: [(&mut [f32], usize); N],
    f: impl Fn(Range<usize>, [&mut [f32]; N]) -> R + Sync,
) -> Vec<R> {
    let mut chunks = outputs.map(|(out, row_len)| {
        assert_eq!(out.len(), n_rows * row_len, "output buffer does not hold {n_rows} rows of {row_len}");
        out.chunks_mut(block_rows * row_len.max(1))
    });
    let blocks: Vec<_> = (0..n_rows.div_ceil(block_rows))
        .map(|b| {
            let rows = b * block_rows..n_rows.min((b + 1) * block_rows);
            (rows, std::array::from_fn::<_, N, _>(|i| chunks[i].next().unwrap_or_default()))
        })
        .collect();
    par_map(blocks, |(rows, bufs)| f(rows, bufs))
}

/// Elementwise work: `f(range, out_chunk)` over chunks of `out`, spread over the threads.
pub fn par_elementwise(out: &mut [f32], f: impl Fn(Range<usize>, &mut [f32]) + Sync) {
    const CHUNK: usize = 16 * 1024;
    let chunks: Vec<_> = out.chunks_mut(CHUNK).enumerate().map(|(i, c)| (i * CHUNK..i * CHUNK + c.len(), c)).collect();
    par_map(chunks, |(range, chunk)| f(range, chunk));
}

/// `f` over every item, the items split into one contiguous run per thread; results in item order.
fn par_map<T: Send, R: Send>(mut items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n_threads = candle_core::utils::get_num_threads().clamp(1, items.len().max(1));
    let per_thread = items.len().div_ceil(n_threads).max(1);
    let mut runs = Vec::with_capacity(n_threads);
    while !items.is_empty() {
        let rest = items.split_off(per_thread.min(items.len()));
        runs.push(Mutex::new(std::mem::replace(&mut items, rest)));
    }
    let results: Vec<Mutex<Vec<R>>> = runs.iter().map(|_| Mutex::new(Vec::new())).collect();
    candle_core::cpu::kernels::par_for_each(runs.len(), |t| {
        let run = std::mem::take(&mut *runs[t].lock().expect("kernel thread panicked"));
        *results[t].lock().expect("kernel thread panicked") = run.into_iter().map(&f).collect();
    });
    results.into_iter().flat_map(|r| r.into_inner().expect("kernel thread panicked")).collect()
}

/// Sum of per-block column sums (each `n` long), in block order.
pub fn sum_partials(partials: impl IntoIterator<Item = Vec<f32>>, n: usize) -> Vec<f32> {
    partials.into_iter().fold(vec![0.0; n], |mut acc, p| {
        acc.iter_mut().zip(&p).for_each(|(a, x)| *a += x);
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_row_once_in_order() {
        let n_rows = 3 * BLOCK_ROWS + 5;
        let (mut a, mut b) = (vec![0f32; n_rows * 2], vec![0f32; n_rows]);
        let firsts = par_row_blocks(n_rows, [(&mut a, 2), (&mut b, 1)], |rows, [a, b]| {
            assert_eq!(a.len(), 2 * rows.len());
            for (i, r) in rows.clone().enumerate() {
                a[2 * i] = r as f32;
                a[2 * i + 1] = r as f32;
                b[i] += 1.0;
            }
            rows.start
        });
        assert_eq!(firsts, (0..4).map(|i| i * BLOCK_ROWS).collect::<Vec<_>>());
        assert!(b.iter().all(|&x| x == 1.0));
        assert!(a.chunks(2).enumerate().all(|(r, p)| p == [r as f32, r as f32]));
    }
}
