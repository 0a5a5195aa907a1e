//! Effective-rank estimators, each a function of a [`Spectrum`], and the
//! [`Estimator`] enum that names them in specs, tables and figures.
//!
//! Convention for an all-zero spectrum (a group whose rows are all zero, or
//! numerically zero after centring): every estimator returns 0.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};

use super::spectrum::Spectrum;

/// Slack on the var@τ threshold. A cumulative fraction that equals τ in real
/// arithmetic can land a few ulps below it in floats (eigenvalues 0.9, 0.1,
/// 0.1, 0.1 at τ = 0.75: the float total is 1.2000000000000002), which would
/// add a spurious dimension; 1e-12 is far above that round-off and far below
/// any difference a rank table can show.
pub const VAR_RANK_TOLERANCE: f64 = 1e-12;

/// var@τ (the paper's estimator, τ = 0.9): the smallest k with
/// Σ_{i≤k} σᵢ² / Σ σᵢ² ≥ τ − [`VAR_RANK_TOLERANCE`], for τ in (0, 1]
/// ([`Estimator::var_rank`] checks the range; a τ above 1 gives d).
pub fn var_rank(spectrum: &Spectrum, tau: f64) -> usize {
    let eigenvalues = spectrum.eigenvalues();
    let target = (tau - VAR_RANK_TOLERANCE) * spectrum.total_energy();
    if target <= 0.0 {
        return usize::from(spectrum.total_energy() > 0.0);
    }
    let mut cumulative = 0.0;
    for (i, &x) in eigenvalues.iter().enumerate() {
        cumulative += x;
        if cumulative >= target {
            return i + 1;
        }
    }
    eigenvalues.len()
}

/// Entropy effective rank (Roy & Vetterli 2007; RankMe): exp(−Σ pᵢ ln pᵢ)
/// with pᵢ = σᵢ / Σσ (singular values, not their squares).
pub fn entropy_rank(spectrum: &Spectrum) -> f64 {
    let sigma = spectrum.singular_values();
    let total: f64 = sigma.iter().sum();
    if total == 0.0 {
        return 0.0;
    }
    let entropy: f64 = sigma.iter().map(|s| s / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
    entropy.exp()
}

/// Stable rank Σσᵢ² / σ₁².
pub fn stable_rank(spectrum: &Spectrum) -> f64 {
    match spectrum.eigenvalues().first() {
        Some(&top) if top > 0.0 => spectrum.total_energy() / top,
        _ => 0.0,
    }
}

/// Participation ratio (Σσᵢ²)² / Σσᵢ⁴.
pub fn participation_ratio(spectrum: &Spectrum) -> f64 {
    let Some(&top) = spectrum.eigenvalues().first().filter(|&&t| t > 0.0) else {
        return 0.0;
    };
    // Divide by σ₁² first so σ⁴ cannot overflow for large-norm activations.
    let (sum, sum_sq) = spectrum.eigenvalues().iter().map(|x| x / top).fold((0.0, 0.0), |(s, q), r| (s + r, q + r * r));
    sum * sum / sum_sq
}

/// Numerical rank: how many σᵢ² exceed the spectrum's noise floor. For an
/// exact (SVD) spectrum that is numpy's `matrix_rank`, σᵢ > σ₁·max(N,d)·ε;
/// a Gram spectrum uses the coarser floor its precision allows (see
/// [`Spectrum::noise_floor`]).
pub fn numerical_rank(spectrum: &Spectrum) -> usize {
    let floor = spectrum.noise_floor();
    spectrum.eigenvalues().iter().filter(|&&x| x > 0.0 && x > floor).count()
}

/// One effective-rank estimator, named by a canonical string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// `var@τ`, e.g. `var@0.9`.
    VarRank { tau: f64 },
    /// `entropy`
    Entropy,
    /// `stable`
    Stable,
    /// `participation`
    Participation,
    /// `numerical`
    Numerical,
}

impl Estimator {
    /// The paper's estimator, var@0.9.
    pub const PAPER: Estimator = Estimator::VarRank { tau: 0.9 };

    /// A var@τ estimator, checking τ ∈ (0, 1].
    pub fn var_rank(tau: f64) -> Result<Self> {
        ensure!(tau > 0.0 && tau <= 1.0, "var@τ needs 0 < τ ≤ 1, got {tau}");
        Ok(Estimator::VarRank { tau })
    }

    /// This estimator's value on `spectrum` (integer ranks as f64).
    pub fn evaluate(&self, spectrum: &Spectrum) -> f64 {
        match *self {
            Estimator::VarRank { tau } => var_rank(spectrum, tau) as f64,
            Estimator::Entropy => entropy_rank(spectrum),
            Estimator::Stable => stable_rank(spectrum),
            Estimator::Participation => participation_ratio(spectrum),
            Estimator::Numerical => numerical_rank(spectrum) as f64,
        }
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `{}` on f64 prints the shortest string that parses back exactly.
            Estimator::VarRank { tau } => write!(f, "var@{tau}"),
            Estimator::Entropy => f.write_str("entropy"),
            Estimator::Stable => f.write_str("stable"),
            Estimator::Participation => f.write_str("participation"),
            Estimator::Numerical => f.write_str("numerical"),
        }
    }
}

impl FromStr for Estimator {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(tau) = s.strip_prefix("var@") {
            let tau: f64 = tau.parse().with_context(|| format!("estimator `{s}`: τ is not a number"))?;
            return Estimator::var_rank(tau).with_context(|| format!("estimator `{s}`"));
        }
        Ok(match s {
            "entropy" => Estimator::Entropy,
            "stable" => Estimator::Stable,
            "participation" => Estimator::Participation,
            "numerical" => Estimator::Numerical,
            _ => bail!(
                "unknown estimator `{s}`; expected one of var@<τ> (e.g. var@0.9), \
                 entropy, stable, participation, numerical"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::gram::GramAccumulator;
    use super::super::testutil::{gaussian, orthonormal, with_singular_values};
    use super::*;
    use ndarray::{concatenate, Array2, Axis};

    const ALL: [Estimator; 6] = [
        Estimator::VarRank { tau: 0.9 },
        Estimator::VarRank { tau: 0.99 },
        Estimator::Entropy,
        Estimator::Stable,
        Estimator::Participation,
        Estimator::Numerical,
    ];

    fn spectrum(h: &Array2<f64>) -> Spectrum {
        let mut acc = GramAccumulator::new(h.ncols());
        acc.update_f64(h.view()).unwrap();
        Spectrum::from_gram(&acc, false).unwrap()
    }

    /// The Gram path and the exact path, each with the tolerance it can meet:
    /// the Gram resolves σ only to ~√ε·σ₁, so the null directions of an
    /// exactly rank-deficient H come back as σ ≈ 1e-8·σ₁ and move the entropy
    /// rank by ~1e-6; the SVD resolves them to ~ε·σ₁.
    fn both_paths(h: &Array2<f64>) -> [(Spectrum, f64); 2] {
        [(spectrum(h), 1e-5), (Spectrum::exact(h.view(), false).unwrap(), 1e-9)]
    }

    fn close(a: f64, b: f64) -> bool {
        close_within(a, b, 1e-9)
    }

    fn close_within(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn identity_has_full_rank_under_every_estimator() {
        for (s, _) in both_paths(&Array2::eye(8)) {
            assert_eq!(var_rank(&s, 0.9), 8); // 7/8 = 0.875 < 0.9 ≤ 8/8
            assert_eq!(var_rank(&s, 0.875), 7); // exactly τ: the tolerance keeps 7
            for e in [Estimator::Entropy, Estimator::Stable, Estimator::Participation, Estimator::Numerical] {
                assert!(close(e.evaluate(&s), 8.0), "{e} = {}", e.evaluate(&s));
            }
        }
    }

    #[test]
    fn rank_k_with_equal_singular_values_has_rank_k() {
        let h = with_singular_values(50, 12, &[2.0; 4], 21);
        for (s, tol) in both_paths(&h) {
            for e in ALL {
                assert!(close_within(e.evaluate(&s), 4.0, tol), "{e} = {}", e.evaluate(&s));
            }
        }
    }

    #[test]
    fn duplicated_rows_have_rank_one() {
        let row = gaussian(1, 6, 22);
        let h = concatenate(Axis(0), &[row.view(); 20]).unwrap();
        for (s, tol) in both_paths(&h) {
            for e in ALL {
                assert!(close_within(e.evaluate(&s), 1.0, tol), "{e} = {}", e.evaluate(&s));
            }
        }
    }

    #[test]
    fn var_rank_worked_by_hand() {
        // Singular values 4, 3, 2, 1, 1 → σ² = 16, 9, 4, 1, 1, total 31.
        // Cumulative fractions: 16/31 = 0.516, 25/31 = 0.806, 29/31 = 0.935,
        // 30/31 = 0.968, 31/31 = 1. So var@0.9 = 3, var@0.95 = 4, var@0.8 = 2,
        // var@0.5 = 1, var@1.0 = 5.
        let h = with_singular_values(7, 5, &[4.0, 3.0, 2.0, 1.0, 1.0], 23);
        let s = spectrum(&h);
        let got: Vec<usize> = [0.9, 0.95, 0.8, 0.5, 1.0].iter().map(|&t| var_rank(&s, t)).collect();
        assert_eq!(got, [3, 4, 2, 1, 5]);
        // Stable rank 31/16; participation 31² / (256 + 81 + 16 + 1 + 1) = 961/355.
        assert!(close(stable_rank(&s), 31.0 / 16.0));
        assert!(close(participation_ratio(&s), 961.0 / 355.0));
    }

    #[test]
    fn var_rank_tolerates_round_off_at_exact_threshold() {
        // 0.9 / (0.9 + 0.1 + 0.1 + 0.1) is exactly 0.75 in real arithmetic,
        // but the float total is 1.2000000000000002 and 0.75 of it is
        // 0.9000000000000001 > 0.9: without the tolerance var@0.75 would be 2.
        let s = Spectrum::from_eigenvalues(vec![0.9, 0.1, 0.1, 0.1], 100, 4).unwrap();
        assert_eq!(var_rank(&s, 0.75), 1);
    }

    #[test]
    fn all_zero_spectrum_has_rank_zero() {
        let s = spectrum(&Array2::zeros((5, 4)));
        for e in ALL {
            assert_eq!(e.evaluate(&s), 0.0, "{e}");
        }
    }

    #[test]
    fn ranks_are_at_most_min_n_d() {
        for (n, d) in [(3, 10), (10, 3), (7, 7)] {
            let s = spectrum(&gaussian(n, d, 24));
            for e in ALL {
                let value = e.evaluate(&s);
                assert!(value <= n.min(d) as f64 + 1e-9, "{e} = {value} for {n}×{d}");
                assert!(value >= 1.0 - 1e-9, "{e} = {value} for {n}×{d}");
            }
        }
    }

    #[test]
    fn invariant_to_column_rotation_and_scaling() {
        let h = with_singular_values(40, 10, &[5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05], 25);
        let rotated = h.dot(&orthonormal(10, 10, 26));
        let scaled = &h * 123.0;
        for (i, (base, tol)) in both_paths(&h).into_iter().enumerate() {
            for other in [both_paths(&rotated), both_paths(&scaled)] {
                let other = &other[i].0;
                for e in ALL {
                    let (a, b) = (e.evaluate(&base), e.evaluate(other));
                    assert!(close_within(a, b, tol), "{e}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for e in ALL {
            assert_eq!(e.to_string().parse::<Estimator>().unwrap(), e);
        }
        assert_eq!(Estimator::PAPER.to_string(), "var@0.9");
        assert_eq!("var@0.9".parse::<Estimator>().unwrap(), Estimator::PAPER);
        for bad in ["var@0", "var@1.5", "var@x", "rank", "var@nan"] {
            assert!(bad.parse::<Estimator>().is_err(), "{bad} should not parse");
        }
    }
}
