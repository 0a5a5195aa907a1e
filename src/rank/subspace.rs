//! Theorem 2.2 made measurable: does the `[MASK]` group (M) leave the
//! principal subspace of the real-token group (R)? Both measures come from
//! the two groups' Gram accumulators alone, so they work on merged shards.

use anyhow::{ensure, Context, Result};
use ndarray::{s, Array2, ArrayView2};

use super::estimators::var_rank;
use super::gram::GramAccumulator;
use super::linalg;
use super::spectrum::Spectrum;

/// How the principal subspaces are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubspaceOptions {
    /// k = var@τ rank of each group (the paper's τ = 0.9).
    pub tau: f64,
    /// Use each group's mean-centred Gram (PCA directions about its own mean)
    /// instead of the uncentred one. Uncentred is the default: the theorem is
    /// about the span, and an offset of M's mean away from R's span is part of
    /// the effect; centring measures only the directions of variation.
    pub centred: bool,
}

impl Default for SubspaceOptions {
    fn default() -> Self {
        Self { tau: 0.9, centred: false }
    }
}

/// Where M sits relative to R.
#[derive(Debug, Clone, PartialEq)]
pub struct SubspaceReport {
    /// Dimension of R's principal subspace (var@τ of R).
    pub k_real: usize,
    /// Dimension of M's principal subspace (var@τ of M).
    pub k_mask: usize,
    /// 1 − tr(U_Rᵀ G_M U_R) / tr(G_M): the share of M's energy outside R's
    /// top-k_real subspace, in [0, 1].
    pub energy_outside: f64,
    /// Principal angles between the two subspaces in degrees, ascending
    /// (min(k_real, k_mask) of them; 0° shared direction, 90° orthogonal).
    pub angles_deg: Vec<f64>,
}

/// Compares the `[MASK]` group with the real-token group of the same layer.
pub fn compare_subspaces(real: &GramAccumulator, mask: &GramAccumulator, options: SubspaceOptions) -> Result<SubspaceReport> {
    ensure!(real.d() == mask.d(), "real and [MASK] accumulators have different hidden sizes ({} and {})", real.d(), mask.d());
    ensure!(options.tau > 0.0 && options.tau <= 1.0, "subspace dimension var@τ needs 0 < τ ≤ 1, got {}", options.tau);
    let real_basis = principal_basis(real, options).context("principal subspace of the real tokens")?;
    let mask_basis = principal_basis(mask, options).context("principal subspace of the [MASK] tokens")?;
    let gram_mask = gram(mask, options.centred);
    Ok(SubspaceReport {
        k_real: real_basis.ncols(),
        k_mask: mask_basis.ncols(),
        energy_outside: energy_outside(gram_mask.view(), real_basis.view())?,
        angles_deg: principal_angles_deg(real_basis.view(), mask_basis.view())?,
    })
}

/// The Gram the options ask for.
fn gram(acc: &GramAccumulator, centred: bool) -> Array2<f64> {
    if centred {
        acc.centred_gram()
    } else {
        acc.gram()
    }
}

/// Orthonormal basis (d × k) of the top-k eigenvectors of the group's Gram,
/// k = var@τ of the same spectrum the rank tables report.
fn principal_basis(acc: &GramAccumulator, options: SubspaceOptions) -> Result<Array2<f64>> {
    ensure!(acc.n_tokens() > 0, "no tokens in this group");
    let eigen = linalg::sym_eigen(gram(acc, options.centred).view())?;
    let spectrum = Spectrum::from_gram_eigenvalues(acc, eigen.values);
    let k = var_rank(&spectrum, options.tau);
    Ok(eigen.vectors.slice(s![.., ..k]).to_owned())
}

/// 1 − tr(Uᵀ G U) / tr(G), for U with orthonormal columns.
fn energy_outside(gram: ArrayView2<f64>, basis: ArrayView2<f64>) -> Result<f64> {
    let total = gram.diag().sum();
    ensure!(total > 0.0, "the [MASK] group has zero energy: the share outside a subspace is undefined");
    let inside = (&basis * &gram.dot(&basis)).sum();
    // Round-off can push the ratio a hair past [0, 1].
    Ok((1.0 - inside / total).clamp(0.0, 1.0))
}

/// Principal angles: arccos of the singular values of U_aᵀ U_b, ascending.
/// arccos is flat near 1, so angles below ~1e-6° read as 0; that is far
/// finer than any difference between subspaces the report discusses.
fn principal_angles_deg(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<Vec<f64>> {
    if a.ncols() == 0 || b.ncols() == 0 {
        return Ok(Vec::new());
    }
    let cosines = linalg::singular_values(a.t().dot(&b).view())?;
    // Cosines come descending, so the angles come ascending; clamp round-off
    // (a cosine of 1 + 1e-16 would be NaN).
    Ok(cosines.iter().map(|c| c.clamp(0.0, 1.0).acos().to_degrees()).collect())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{gaussian, orthonormal};
    use super::*;
    use ndarray::{concatenate, Axis};

    fn acc_of(h: &Array2<f64>) -> GramAccumulator {
        let mut acc = GramAccumulator::new(h.ncols());
        acc.update_f64(h.view()).unwrap();
        acc
    }

    /// Rows that live in the column span of `basis` (d × r), with equal energy
    /// in each basis direction so every direction is in the var@0.9 subspace.
    fn rows_in_span(basis: &Array2<f64>, n: usize, seed: u64) -> Array2<f64> {
        gaussian(n, basis.ncols(), seed).dot(&basis.t())
    }

    #[test]
    fn mask_inside_real_span_is_not_outside() {
        let basis = orthonormal(16, 4, 31);
        let real = rows_in_span(&basis, 400, 32);
        let mask = rows_in_span(&basis.slice(s![.., ..2]).to_owned(), 100, 33);
        let report = compare_subspaces(&acc_of(&real), &acc_of(&mask), SubspaceOptions::default()).unwrap();
        assert_eq!(report.k_real, 4);
        assert_eq!(report.k_mask, 2);
        assert!(report.energy_outside < 1e-10, "{report:?}");
        assert!(report.angles_deg.iter().all(|&a| a < 1e-5), "{report:?}");
    }

    #[test]
    fn mask_orthogonal_to_real_is_all_outside() {
        let basis = orthonormal(16, 6, 34);
        let real = rows_in_span(&basis.slice(s![.., ..3]).to_owned(), 400, 35);
        let mask = rows_in_span(&basis.slice(s![.., 3..]).to_owned(), 400, 36);
        for centred in [false, true] {
            let options = SubspaceOptions { centred, ..SubspaceOptions::default() };
            let report = compare_subspaces(&acc_of(&real), &acc_of(&mask), options).unwrap();
            assert!((report.energy_outside - 1.0).abs() < 1e-10, "{report:?}");
            assert_eq!(report.angles_deg.len(), report.k_real.min(report.k_mask));
            assert!(report.angles_deg.iter().all(|&a| (a - 90.0).abs() < 1e-5), "{report:?}");
        }
    }

    #[test]
    fn mask_offset_is_seen_only_uncentred() {
        // M varies inside R's span but sits at a mean offset orthogonal to it.
        let basis = orthonormal(8, 3, 37);
        let real = rows_in_span(&basis.slice(s![.., ..2]).to_owned(), 300, 38);
        let offset = basis.column(2).to_owned() * 10.0;
        let mask = rows_in_span(&basis.slice(s![.., ..2]).to_owned(), 300, 39) + &offset;
        let uncentred = compare_subspaces(&acc_of(&real), &acc_of(&mask), SubspaceOptions::default()).unwrap();
        let options = SubspaceOptions { centred: true, ..SubspaceOptions::default() };
        let centred = compare_subspaces(&acc_of(&real), &acc_of(&mask), options).unwrap();
        assert!(uncentred.energy_outside > 0.9, "{uncentred:?}");
        assert!(centred.energy_outside < 1e-8, "{centred:?}");
    }

    #[test]
    fn rejects_mismatched_or_empty_groups() {
        let real = acc_of(&gaussian(10, 4, 40));
        assert!(compare_subspaces(&real, &acc_of(&gaussian(10, 5, 41)), SubspaceOptions::default()).is_err());
        let err = compare_subspaces(&real, &GramAccumulator::new(4), SubspaceOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("no tokens"), "{err:#}");
        let zero = acc_of(&Array2::zeros((3, 4)));
        assert!(compare_subspaces(&real, &zero, SubspaceOptions::default()).is_err());
        let bad_tau = SubspaceOptions { tau: 1.5, centred: false };
        assert!(compare_subspaces(&real, &real, bad_tau).is_err());
    }

    #[test]
    fn partial_overlap_gives_known_angle() {
        // R spans e₁; M spans (e₁ + e₂)/√2: one principal angle of 45°.
        let e = Array2::eye(4);
        let real = concatenate(Axis(0), &[e.slice(s![0..1, ..]); 5]).unwrap();
        let mask_row = (&e.row(0) + &e.row(1)).insert_axis(Axis(0));
        let mask = concatenate(Axis(0), &[mask_row.view(); 5]).unwrap();
        let report = compare_subspaces(&acc_of(&real), &acc_of(&mask), SubspaceOptions::default()).unwrap();
        assert_eq!((report.k_real, report.k_mask), (1, 1));
        assert!((report.angles_deg[0] - 45.0).abs() < 1e-9, "{report:?}");
        assert!((report.energy_outside - 0.5).abs() < 1e-12, "{report:?}");
    }
}
