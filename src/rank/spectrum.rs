//! The spectrum σ₁² ≥ … ≥ σ_d² of one group's token matrix H, from a streamed
//! Gram matrix (any N) or from an exact SVD of the rows (small N), together
//! with the noise floor below which that path cannot tell an eigenvalue from 0.

use anyhow::{bail, ensure, Context, Result};
use ndarray::{ArrayView2, Axis};

use super::gram::GramAccumulator;
use super::linalg::{self, EigenSolver};

/// Squared singular values of H (N × d), descending, one per hidden dimension.
///
/// The values are what the solver returned (negatives clamped to 0); they are
/// not cut at the noise floor, because the continuous estimators barely move
/// with values that small and cutting would make them depend on a worst-case
/// bound. The floor is used by the numerical rank, and to zero a spectrum
/// that lies entirely below it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    eigenvalues: Vec<f64>,
    n_tokens: u64,
    d: usize,
    noise_floor: f64,
}

impl Spectrum {
    /// The spectrum of the accumulated rows, from the eigenvalues of their Gram
    /// (`centred`: of the mean-centred rows), using faer.
    pub fn from_gram(acc: &GramAccumulator, centred: bool) -> Result<Self> {
        Self::from_gram_with(acc, centred, EigenSolver::Faer)
    }

    /// As [`Spectrum::from_gram`], with a chosen eigenvalue solver.
    pub fn from_gram_with(acc: &GramAccumulator, centred: bool, solver: EigenSolver) -> Result<Self> {
        ensure_tokens(acc.n_tokens())?;
        let values = if centred { linalg::sym_eigenvalues(acc.centred_gram().view(), solver) } else { linalg::sym_eigenvalues(acc.gram().view(), solver) }
            .with_context(|| format!("eigenvalues of a {0}×{0} Gram matrix", acc.d()))?;
        Ok(Self::from_gram_eigenvalues(acc, values))
    }

    /// Wraps eigenvalues already computed from `acc`'s (centred or not) Gram.
    ///
    /// Noise floor: forming G by summing N products per entry carries a
    /// rounding error up to ~N·ε·tr(G) (Higham's γ_N bound), and centring
    /// afterwards cancels energy of the same order, so eigenvalues below
    /// max(N, d)·ε·tr(G_uncentred) are indistinguishable from 0. In σ terms
    /// the Gram path resolves σ down to ~√(max(N,d)·ε)·‖H‖_F, not the
    /// max(N,d)·ε·σ₁ of an SVD: use [`Spectrum::exact`] for finer numerical ranks.
    pub(super) fn from_gram_eigenvalues(acc: &GramAccumulator, values: Vec<f64>) -> Self {
        let trace = acc.trace();
        let floor = size_factor(acc.n_tokens(), acc.d()) * trace;
        Self::new(values, acc.n_tokens(), acc.d(), floor)
    }

    /// The exact path: squared singular values of the rows (tokens × d) by SVD.
    ///
    /// Noise floor: numpy's `matrix_rank` tolerance σ₁·max(N,d)·ε, squared.
    /// When `centred`, the scale is the uncentred ‖H‖_F instead of σ₁, since
    /// subtracting the mean leaves rounding noise of that order (otherwise
    /// N identical rows would, once centred, show a spectrum of pure noise).
    pub fn exact(rows: ArrayView2<f64>, centred: bool) -> Result<Self> {
        let (n, d) = rows.dim();
        ensure_tokens(n as u64)?;
        ensure!(rows.iter().all(|x| x.is_finite()), "rows contain NaN or Inf");
        let (sigma, scale) = if centred {
            let mean = rows.mean_axis(Axis(0)).context("mean of the rows")?;
            let sigma = linalg::singular_values((&rows - &mean).view())?;
            (sigma, rows.iter().map(|x| x * x).sum::<f64>().sqrt())
        } else {
            let sigma = linalg::singular_values(rows)?;
            let sigma_1 = sigma.first().copied().unwrap_or(0.0);
            (sigma, sigma_1)
        };
        let floor = (size_factor(n as u64, d) * scale).powi(2);
        Ok(Self::new(sigma.iter().map(|s| s * s).collect(), n as u64, d, floor))
    }

    /// A spectrum from known eigenvalues σᵢ² (any order), treated as exact:
    /// the noise floor is numpy's `matrix_rank` tolerance, squared.
    pub fn from_eigenvalues(eigenvalues: Vec<f64>, n_tokens: u64, d: usize) -> Result<Self> {
        ensure_tokens(n_tokens)?;
        ensure!(eigenvalues.len() <= d, "{} eigenvalues for d = {d}", eigenvalues.len());
        ensure!(eigenvalues.iter().all(|x| x.is_finite()), "eigenvalues contain NaN or Inf");
        let max = eigenvalues.iter().copied().fold(0.0, f64::max);
        let floor = size_factor(n_tokens, d).powi(2) * max;
        Ok(Self::new(eigenvalues, n_tokens, d, floor))
    }

    /// Sorts descending, clamps round-off negatives to 0, pads with zeros to d
    /// values, and zeroes the whole spectrum when even the largest eigenvalue
    /// is below the noise floor: such a group (e.g. identical rows, centred)
    /// is numerically zero and gets rank 0 from every estimator.
    fn new(mut eigenvalues: Vec<f64>, n_tokens: u64, d: usize, noise_floor: f64) -> Self {
        for x in &mut eigenvalues {
            *x = x.max(0.0);
        }
        eigenvalues.sort_by(|a, b| b.total_cmp(a));
        eigenvalues.resize(d, 0.0);
        if eigenvalues.first().is_some_and(|&top| top <= noise_floor) {
            eigenvalues.fill(0.0);
        }
        Self { eigenvalues, n_tokens, d, noise_floor }
    }

    /// σᵢ², descending, d of them, all ≥ 0.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigenvalues
    }

    /// σᵢ, descending.
    pub fn singular_values(&self) -> Vec<f64> {
        self.eigenvalues.iter().map(|x| x.sqrt()).collect()
    }

    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    pub fn d(&self) -> usize {
        self.d
    }

    /// Eigenvalue level at or below which this spectrum's path cannot
    /// distinguish σᵢ² from 0 (used by the numerical rank).
    pub fn noise_floor(&self) -> f64 {
        self.noise_floor
    }

    /// Σσᵢ² = ‖H‖_F² (of the centred H for a centred spectrum).
    pub fn total_energy(&self) -> f64 {
        self.eigenvalues.iter().sum()
    }
}

fn ensure_tokens(n_tokens: u64) -> Result<()> {
    if n_tokens == 0 {
        bail!("no tokens in this group: nothing to compute a spectrum from");
    }
    Ok(())
}

/// max(N, d)·ε, the relative tolerance numpy's `matrix_rank` uses.
fn size_factor(n_tokens: u64, d: usize) -> f64 {
    (n_tokens as f64).max(d as f64) * f64::EPSILON
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{gaussian, max_abs_diff, with_singular_values};
    use super::*;
    use ndarray::{concatenate, Array2};

    fn gram_of(h: &Array2<f64>) -> GramAccumulator {
        let mut acc = GramAccumulator::new(h.ncols());
        acc.update_f64(h.view()).unwrap();
        acc
    }

    fn assert_rel_close(a: &[f64], b: &[f64], rel: f64) {
        let scale = a.iter().chain(b).copied().fold(0.0, f64::max);
        let diff = max_abs_diff(a, b);
        assert!(
            diff <= rel * scale,
            "max difference {diff:e} > {rel:e}·{scale:e}\n  first a: {:?}\n  first b: {:?}",
            &a[..a.len().min(5)],
            &b[..b.len().min(5)]
        );
    }

    #[test]
    fn zero_tokens_is_an_error() {
        let err = Spectrum::from_gram(&GramAccumulator::new(4), false).unwrap_err();
        assert!(err.to_string().contains("no tokens in this group"), "{err}");
        assert!(Spectrum::exact(Array2::zeros((0, 4)).view(), false).is_err());
    }

    #[test]
    fn gram_path_matches_exact_path() {
        let s = [10.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.01, 1e-3];
        let h = with_singular_values(200, 8, &s, 11) + 0.7;
        for centred in [false, true] {
            let via_gram = Spectrum::from_gram(&gram_of(&h), centred).unwrap();
            let exact = Spectrum::exact(h.view(), centred).unwrap();
            assert_rel_close(via_gram.eigenvalues(), exact.eigenvalues(), 1e-8);
        }
    }

    #[test]
    fn exact_matches_known_singular_values_and_pads_to_d() {
        let s = [3.0, 2.0, 1.0];
        let h = with_singular_values(3, 6, &s, 12);
        let spectrum = Spectrum::exact(h.view(), false).unwrap();
        assert_eq!(spectrum.eigenvalues().len(), 6);
        assert_rel_close(spectrum.eigenvalues(), &[9.0, 4.0, 1.0, 0.0, 0.0, 0.0], 1e-12);
    }

    #[test]
    fn rank_deficient_gram_has_five_eigenvalues_above_floor() {
        let h = with_singular_values(64, 16, &[5.0, 4.0, 3.0, 2.0, 1.0], 13);
        let spectrum = Spectrum::from_gram(&gram_of(&h), false).unwrap();
        let above_floor = spectrum.eigenvalues().iter().filter(|&&x| x > spectrum.noise_floor()).count();
        assert_eq!(above_floor, 5);
    }

    #[test]
    fn identical_rows_centred_are_numerically_zero() {
        let row = gaussian(1, 5, 14);
        let h = concatenate(Axis(0), &[row.view(); 30]).unwrap();
        for spectrum in [Spectrum::from_gram(&gram_of(&h), true).unwrap(), Spectrum::exact(h.view(), true).unwrap()] {
            assert!(spectrum.eigenvalues().iter().all(|&x| x == 0.0), "{spectrum:?}");
        }
    }

    #[test]
    fn from_eigenvalues_sorts_and_clamps() {
        let spectrum = Spectrum::from_eigenvalues(vec![1.0, -1e-18, 4.0], 10, 4).unwrap();
        assert_eq!(spectrum.eigenvalues(), &[4.0, 1.0, 0.0, 0.0]);
        assert!(Spectrum::from_eigenvalues(vec![1.0; 5], 10, 4).is_err());
    }

    #[cfg(feature = "lapack")]
    #[test]
    fn faer_and_lapack_agree() {
        let h = with_singular_values(300, 32, &(1..=32).map(|i| 1.0 / i as f64).collect::<Vec<_>>(), 15);
        let acc = gram_of(&h);
        for centred in [false, true] {
            let faer = Spectrum::from_gram_with(&acc, centred, EigenSolver::Faer).unwrap();
            let lapack = Spectrum::from_gram_with(&acc, centred, EigenSolver::Lapack).unwrap();
            assert_rel_close(faer.eigenvalues(), lapack.eigenvalues(), 1e-12);
        }
    }
}
