//! The matrix products of the kernels, calling gemm directly: the linear layers' `x Wᵀ` and its
//! gradients, and the per-head products of attention. candle's `xs.matmul(&w.t())` zero-fills
//! every product before gemm overwrites it (a serial pass over the largest activations of a
//! step), and adds a transpose node whose gradient is accumulated through a strided copy; here
//! each product is written once, straight into a fresh buffer, and ∂/∂W comes out in W's own
//! layout.

use candle_core::{bail, Result, Shape};
use gemm::Parallelism;

/// A row-major matrix operand of gemm: its data and its element strides.
#[derive(Clone, Copy)]
pub(super) struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// A row-major matrix whose rows start `row_len` elements apart (its width, or more when
    /// each row carries extra values that the product skips).
    pub(super) fn rows(data: &'a [f32], row_len: usize) -> Self {
        Operand { data, row_stride: row_len, col_stride: 1 }
    }

    /// Whether every element of a `[rows, cols]` view lies in `data`.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }

    /// The transpose of such a matrix.
    pub(super) fn transposed(data: &'a [f32], row_len: usize) -> Self {
        Operand { data, row_stride: 1, col_stride: row_len }
    }
}

/// `lhs · rhs` (`[m, k]` · `[k, n]`) into a new row-major `[m, n]` buffer, spread over the
/// worker threads.
pub(super) fn product(m: usize, k: usize, n: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: `out` has room for the [m, n] product, which gemm writes (without reading it) at
    // row stride n; `set_len` exposes it once written.
    unsafe {
        gemm_raw(out.as_mut_ptr(), n, (m, k, n), (lhs, rhs), Scale::product(1.0), parallelism());
        out.set_len(m * n);
    }
    out
}

/// `out += lhs · rhs` for a row-major `[m, n]` `out`, spread over the worker threads.
pub(super) fn add_product(out: &mut [f32], (m, k, n): (usize, usize, usize), lhs: Operand, rhs: Operand) {
    assert_eq!(out.len(), m * n, "gemm destination is not {m}×{n}");
    // SAFETY: `out` holds the [m, n] block, rows n apart, and is borrowed mutably.
    unsafe { gemm_raw(out.as_mut_ptr(), n, (m, k, n), (lhs, rhs), Scale { old: 1.0, product: 1.0 }, parallelism()) };
}

/// All the worker threads for one product.
fn parallelism() -> Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// The gradients of `x Wᵀ` for its output gradient `g`: `[rows, d_out]`, with `xs`:
/// `[rows, d_in]` and `weight`: `[d_out, d_in]` → (∂/∂x = g · W: `[rows, d_in]`, ∂/∂W = gᵀ · x:
/// `[d_out, d_in]`).
pub(super) fn product_grads(g: &[f32], xs: &[f32], weight: &[f32], (rows, d_in, d_out): (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let dx = product(rows, d_out, d_in, Operand::rows(g, d_out), Operand::rows(weight, d_in));
    let dw = product(d_out, rows, d_in, Operand::transposed(g, d_out), Operand::rows(xs, d_in));
    (dx, dw)
}

/// For each of `batch` pairs, `factor · lhs(b) · rhs(b)` (`[m, k]` · `[k, n]`) written over the
/// `[m, n]` block of `out` that starts at element `at(b)`, its rows `row_len` apart: the per-head
/// products of attention straight into (or out of) the `[rows, heads · d_head]` layout. One
/// after another on the calling thread, which runs one of several chunks side by side.
pub(super) fn sequential_products_into<'a>(
    out: &mut [f32],
    (at, row_len): (impl Fn(usize) -> usize, usize),
    batch: usize,
    (m, k, n): (usize, usize, usize),
    (lhs, rhs): (impl Fn(usize) -> Operand<'a>, impl Fn(usize) -> Operand<'a>),
    factor: f32,
) {
    for b in 0..batch {
        let start = at(b);
        let fits = m == 0 || n == 0 || (n <= row_len && start + (m - 1) * row_len + n <= out.len());
        assert!(fits, "gemm destination smaller than {m}×{n} at {start}, rows {row_len} apart");
        // SAFETY: the block lies inside `out` (asserted above), which is borrowed mutably.
        unsafe { gemm_raw(out.as_mut_ptr().add(start), row_len, (m, k, n), (lhs(b), rhs(b)), Scale::product(factor), Parallelism::None) };
    }
}

/// `dst ← old · dst + product · lhs · rhs`, gemm's two factors.
#[derive(Clone, Copy)]
struct Scale {
    old: f32,
    product: f32,
}

impl Scale {
    /// Overwrites `dst` (which is then not read) with the product times `factor`.
    fn product(factor: f32) -> Self {
        Scale { old: 0.0, product: factor }
    }
}

/// `dst ← scale.old · dst + scale.product · lhs · rhs` for the `[m, n]` block at `dst`, rows
/// `dst_row_len` apart; `dst` is read only if `scale.old` is not 0.
///
/// # Safety
/// `dst` must be valid for writes of that block (and for reads, if it is read); the operands
/// are checked here.
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_row_len: usize,
    (m, k, n): (usize, usize, usize),
    (lhs, rhs): (Operand, Operand),
    scale: Scale,
    parallelism: Parallelism,
) {
    assert!(lhs.holds(m, k) && rhs.holds(k, n), "gemm operands smaller than {m}×{k} · {k}×{n}");
    // SAFETY: the operands hold their [m, k] and [k, n] elements at their strides (asserted
    // above); the caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_len as isize,
            scale.old != 0.0,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            scale.old,
            scale.product,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `(rows, d_in, d_out)` of `xs`: `[rows, d_in]` times the transpose of `weight`: `[d_out, d_in]`.
pub(super) fn dims(xs: &Shape, weight: &Shape) -> Result<(usize, usize, usize)> {
    let ((rows, d_in), (d_out, w_in)) = (xs.dims2()?, weight.dims2()?);
    if d_in != w_in {
        bail!("projection: input {xs:?} does not match weight {weight:?}");
    }
    Ok((rows, d_in, d_out))
}
