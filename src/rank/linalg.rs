//! The boundary to the dense linear-algebra backends (faer by default, LAPACK
//! through ndarray-linalg behind the `lapack` feature). Everything else in
//! `rank` speaks ndarray; only this file converts to and from faer matrices.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Result};
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use ndarray::{Array2, ArrayView2};

/// Eigenvalues and eigenvectors of a symmetric matrix, largest eigenvalue first.
pub(super) struct SymEigen {
    /// Eigenvalues, descending (not clamped: may be slightly negative).
    pub values: Vec<f64>,
    /// d × d; column i is the unit eigenvector of `values[i]`.
    pub vectors: Array2<f64>,
}

/// Which solver computes the eigenvalues of a Gram matrix; named `faer` or
/// `lapack` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EigenSolver {
    /// faer's self-adjoint eigenvalue routine (pure Rust, fast, the default).
    #[default]
    Faer,
    /// LAPACK `?syev` through ndarray-linalg (needs the system OpenBLAS).
    #[cfg(feature = "lapack")]
    Lapack,
}

impl fmt::Display for EigenSolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EigenSolver::Faer => "faer",
            #[cfg(feature = "lapack")]
            EigenSolver::Lapack => "lapack",
        })
    }
}

impl FromStr for EigenSolver {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "faer" => Ok(EigenSolver::Faer),
            #[cfg(feature = "lapack")]
            "lapack" => Ok(EigenSolver::Lapack),
            #[cfg(not(feature = "lapack"))]
            "lapack" => bail!(
                "eigen-solver `lapack` is not in this build; rebuild with \
                 `cargo build --release --features lapack` (needs `apt-get install libopenblas-dev`)"
            ),
            _ => bail!("unknown eigen-solver `{s}`; expected `faer` or `lapack`"),
        }
    }
}

/// Rows of `a` per faer product in [`lower_self_product`]: faer's kernel reads `aᵀ` in place
/// (unpacked) for every tile of the output, so a run this short stays in cache across the tiles
/// (`bench/ANALYZE.md`, 2026-12-07 08 h UTC: 0.97–0.98× the analysis time of one product over
/// the whole block, of up to 2 048 rows; 64 rows was no faster).
const RUN_ROWS: usize = 128;

/// Writes the lower triangle (diagonal included) of `aᵀ·a` into `out` (d × d, row-major) for a
/// row-major `a` (rows × d), as faer products that compute only that triangle, one per run of
/// [`RUN_ROWS`] rows, added up; the rest of `out` is left as it was, so a buffer can be reused
/// without clearing. On the calling thread: callers run such products side by side (see
/// [`super::GramAccumulator::update`]).
pub(super) fn lower_self_product(a: &[f64], rows: usize, d: usize, out: &mut [f64]) {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    assert_eq!(a.len(), rows * d, "the product's operand is not {rows} × {d}");
    let mut dst = MatMut::from_row_major_slice_mut(out, d, d);
    // At least one product, so that no rows still write zeros.
    for first in (0..rows.max(1)).step_by(RUN_ROWS) {
        let run_rows = RUN_ROWS.min(rows - first);
        let run = MatRef::from_row_major_slice(&a[first * d..(first + run_rows) * d], run_rows, d);
        let accum = if first == 0 { Accum::Replace } else { Accum::Add };
        matmul(
            dst.as_mut(),
            BlockStructure::TriangularLower,
            accum,
            run.transpose(),
            BlockStructure::Rectangular,
            run,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
    }
}

/// Eigenvalues of the symmetric matrix `a`, descending, with the chosen solver.
///
/// Only the lower triangle is read, so an accumulated Gram that is symmetric
/// only up to round-off is fine.
pub fn sym_eigenvalues(a: ArrayView2<f64>, solver: EigenSolver) -> Result<Vec<f64>> {
    ensure!(a.is_square(), "eigenvalues need a square matrix, got {:?}", a.dim());
    match solver {
        EigenSolver::Faer => {
            let mut values = to_faer(a).self_adjoint_eigenvalues(Side::Lower).map_err(|e| anyhow!("faer eigenvalue solver failed: {e:?}"))?;
            // faer returns ascending order; every consumer wants σ₁ first.
            values.reverse();
            Ok(values)
        }
        #[cfg(feature = "lapack")]
        EigenSolver::Lapack => eigenvalues_lapack(a),
    }
}

/// Eigenvalues of the symmetric matrix `a` through LAPACK `?syev` (lower
/// triangle), descending.
#[cfg(feature = "lapack")]
pub fn eigenvalues_lapack(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    use ndarray_linalg::{EigValsh, UPLO};
    ensure!(a.is_square(), "eigenvalues need a square matrix, got {:?}", a.dim());
    let values = a.eigvalsh(UPLO::Lower).map_err(|e| anyhow!("LAPACK eigenvalue solver (?syev) failed: {e}"))?;
    // LAPACK returns ascending order.
    Ok(values.iter().rev().copied().collect())
}

/// Full eigendecomposition of the symmetric matrix `a`, largest eigenvalue first.
pub(super) fn sym_eigen(a: ArrayView2<f64>) -> Result<SymEigen> {
    ensure!(a.is_square(), "eigendecomposition needs a square matrix, got {:?}", a.dim());
    let evd = to_faer(a).self_adjoint_eigen(Side::Lower).map_err(|e| anyhow!("faer eigendecomposition failed: {e:?}"))?;
    let d = a.nrows();
    let (s, u) = (evd.S().column_vector(), evd.U());
    // faer sorts ascending; reverse both values and vectors.
    let values = (0..d).rev().map(|i| s[i]).collect();
    let vectors = Array2::from_shape_fn((d, d), |(i, j)| u[(i, d - 1 - j)]);
    Ok(SymEigen { values, vectors })
}

/// Singular values of `a`, descending (min(rows, cols) of them).
pub(super) fn singular_values(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    to_faer(a).singular_values().map_err(|e| anyhow!("faer SVD failed: {e:?}"))
}

/// Copies an ndarray view into a faer matrix; O(size), negligible next to the
/// cubic decompositions it feeds, and independent of the view's strides.
fn to_faer(a: ArrayView2<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_names_round_trip() {
        assert_eq!("faer".parse::<EigenSolver>().unwrap(), EigenSolver::Faer);
        assert_eq!(EigenSolver::default().to_string(), "faer");
        let lapack = "lapack".parse::<EigenSolver>();
        assert_eq!(lapack.is_ok(), cfg!(feature = "lapack"));
        assert!("eigen".parse::<EigenSolver>().is_err());
    }

    #[test]
    fn lower_self_product_sums_every_run_and_leaves_the_upper_triangle() {
        let d = 5;
        for rows in [0, 1, RUN_ROWS - 1, RUN_ROWS, RUN_ROWS + 1, 2 * RUN_ROWS + 44] {
            // Small integers: every product and sum is exact, whatever the order.
            let a: Vec<f64> = (0..rows * d).map(|k| ((k * 7 + 3) % 11) as f64 - 5.0).collect();
            let mut out = vec![f64::NAN; d * d];
            lower_self_product(&a, rows, d, &mut out);
            for i in 0..d {
                for j in 0..d {
                    let expected: f64 = (0..rows).map(|r| a[r * d + i] * a[r * d + j]).sum();
                    if j <= i {
                        assert_eq!(out[i * d + j], expected, "rows {rows}, entry ({i}, {j})");
                    } else {
                        assert!(out[i * d + j].is_nan(), "rows {rows}: upper entry ({i}, {j}) written");
                    }
                }
            }
        }
    }

    #[test]
    fn eigen_is_descending_with_matching_vectors() {
        let a = ndarray::array![[2.0, 1.0], [1.0, 2.0]];
        let eigen = sym_eigen(a.view()).unwrap();
        assert!((eigen.values[0] - 3.0).abs() < 1e-12 && (eigen.values[1] - 1.0).abs() < 1e-12);
        let v = eigen.vectors.column(0);
        let av = a.dot(&v);
        assert!((&av - &(&v * 3.0)).iter().all(|x| x.abs() < 1e-12));
    }
}
