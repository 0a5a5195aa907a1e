//! Reading CPU tensor data inside the kernels, and spreading row-major work over candle's
//! worker threads (the rayon pool its matmuls use, so the two never oversubscribe the cores).

use candle_core::{bail, CpuStorage, Layout, Result, Storage};
use std::mem::MaybeUninit;
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
/// same whatever the number of threads (bit-exact resume with another thread count).
pub const BLOCK_ROWS: usize = 32;

/// Runs `f(rows, outputs)` over consecutive blocks of [`BLOCK_ROWS`] of `n_rows` rows, giving
/// each block its rows of `N` output buffers allocated here (`widths`: each buffer's row
/// length); returns every block's result in block order, and the buffers.
pub fn par_row_blocks<const N: usize, R: Send>(
    n_rows: usize,
    widths: [usize; N],
    f: impl Fn(Range<usize>, [&mut [f32]; N]) -> R + Sync,
) -> (Vec<R>, [Vec<f32>; N]) {
    par_row_chunks(n_rows, BLOCK_ROWS, widths, f)
}

/// [`par_row_blocks`] with blocks of `block_rows` rows.
///
/// The buffers start zeroed, each block's part zero-filled by the thread that then writes it:
/// one serial fill of a whole buffer costs as much as a kernel pass, and leaves it out of cache.
pub fn par_row_chunks<const N: usize, R: Send>(
    n_rows: usize,
    block_rows: usize,
    widths: [usize; N],
    f: impl Fn(Range<usize>, [&mut [f32]; N]) -> R + Sync,
) -> (Vec<R>, [Vec<f32>; N]) {
    let n_blocks = n_rows.div_ceil(block_rows);
    let bounds: Vec<usize> = (0..=n_blocks).map(|b| n_rows.min(b * block_rows)).collect();
    par_uneven_chunks(n_blocks, widths.map(|width| (&bounds[..], width)), |b, buffers| f(bounds[b]..bounds[b + 1], buffers))
}

/// [`par_row_chunks`] with chunks of any sizes, laid out per buffer: buffer `i`, given as
/// `(bounds, width)`, has `bounds[n_chunks]` rows of `width`, of which chunk `c` gets rows
/// `bounds[c]..bounds[c + 1]` (`bounds` ascending from 0). Runs `f(c, its parts)` for every
/// chunk → the results in chunk order, and the buffers, zeroed as in `par_row_chunks`.
pub fn par_uneven_chunks<const N: usize, R: Send>(
    n_chunks: usize,
    layouts: [(&[usize], usize); N],
    f: impl Fn(usize, [&mut [f32]; N]) -> R + Sync,
) -> (Vec<R>, [Vec<f32>; N]) {
    assert!(layouts.iter().all(|(bounds, _)| bounds.len() == n_chunks + 1 && bounds[0] == 0), "one bound per chunk, and 0");
    let lens = layouts.map(|(bounds, width)| bounds[n_chunks] * width);
    let mut buffers = lens.map(Vec::<f32>::with_capacity);
    let mut rests: [&mut [MaybeUninit<f32>]; N] = {
        let mut lens = lens.into_iter();
        buffers.each_mut().map(|buffer| &mut buffer.spare_capacity_mut()[..lens.next().expect("one length per buffer")])
    };
    let chunks: Vec<_> = (0..n_chunks)
        .map(|c| {
            let parts = std::array::from_fn::<_, N, _>(|i| {
                let (bounds, width) = layouts[i];
                let (part, rest) = std::mem::take(&mut rests[i]).split_at_mut((bounds[c + 1] - bounds[c]) * width);
                rests[i] = rest;
                part
            });
            (c, parts)
        })
        .collect();
    let results = par_map(chunks, |(c, parts)| f(c, parts.map(zero_filled)));
    for (buffer, len) in buffers.iter_mut().zip(lens) {
        // SAFETY: the chunks' parts cover the first `len` elements, and `par_map` returned, so
        // every chunk ran and `zero_filled` initialised its part.
        unsafe { buffer.set_len(len) };
    }
    (results, buffers)
}

/// `chunk`, every element set to 0, as initialised floats.
fn zero_filled(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    chunk.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised, and `MaybeUninit<f32>` has f32's layout.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Elementwise work: `f(range, out_chunk)` over chunks of a new buffer of `len` elements (zeroed
/// as in [`par_row_chunks`]), spread over the threads → the buffer.
pub fn par_elementwise(len: usize, f: impl Fn(Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
    const CHUNK: usize = 16 * 1024;
    let (_, [out]) = par_row_chunks(len, CHUNK, [1], |range, [chunk]| f(range, chunk));
    out
}

/// `f(chunk)` over consecutive chunks of `chunk_len` elements of `data`, in place, spread over
/// the threads.
pub fn par_chunks_mut(data: &mut [f32], chunk_len: usize, f: impl Fn(&mut [f32]) + Sync) {
    par_map(data.chunks_mut(chunk_len.max(1)).collect(), f);
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
        let (firsts, [a, b]) = par_row_blocks(n_rows, [2, 1], |rows, [a, b]| {
            assert!(a.iter().chain(b.iter()).all(|&x| x == 0.0), "buffers start zeroed");
            assert_eq!(a.len(), 2 * rows.len());
            for (i, r) in rows.clone().enumerate() {
                a[2 * i] = r as f32;
                a[2 * i + 1] = r as f32;
                b[i] += 1.0;
            }
            rows.start
        });
        assert_eq!((a.len(), b.len()), (2 * n_rows, n_rows));
        assert_eq!(firsts, (0..4).map(|i| i * BLOCK_ROWS).collect::<Vec<_>>());
        assert!(b.iter().all(|&x| x == 1.0));
        assert!(a.chunks(2).enumerate().all(|(r, p)| p == [r as f32, r as f32]));
    }

    #[test]
    fn uneven_chunks_get_their_own_rows_of_each_buffer() {
        // Four chunks; buffer `a` (width 3) gives chunk 1 no rows, buffer `b` (width 1) has its own bounds.
        let (a_bounds, b_bounds) = ([0, 2, 2, 7, 8], [0, 1, 2, 3, 4]);
        let (rows, [a, b]) = par_uneven_chunks(4, [(&a_bounds[..], 3), (&b_bounds[..], 1)], |c, [a, b]| {
            assert!(a.iter().chain(b.iter()).all(|&x| x == 0.0), "buffers start zeroed");
            assert_eq!((a.len(), b.len()), (3 * (a_bounds[c + 1] - a_bounds[c]), 1));
            a.iter_mut().for_each(|x| *x = c as f32);
            b[0] = 10.0 * c as f32;
            a.len() / 3
        });
        assert_eq!(rows, vec![2, 0, 5, 1]);
        let owner: Vec<f32> = [0., 0., 2., 2., 2., 2., 2., 3.].iter().flat_map(|&c| [c; 3]).collect();
        assert_eq!(a, owner);
        assert_eq!(b, vec![0.0, 10.0, 20.0, 30.0]);
    }
}
