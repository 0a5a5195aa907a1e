//! numpy parity: spectra and estimators of the matrices in
//! `fixtures/rank/spectra_golden.json` (written by `make_spectra.py`), through
//! both the exact (SVD) path and the streamed Gram path.

use anyhow::{Context, Result};
use ndarray::Array2;
use serde::Deserialize;

use super::estimators::{entropy_rank, numerical_rank, participation_ratio, stable_rank, var_rank};
use super::testutil::max_abs_diff;
use super::{GramAccumulator, Spectrum};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/rank/spectra_golden.json");
const HINT: &str = "HINT: regenerate with `python3 fixtures/rank/make_spectra.py`";

#[derive(Deserialize)]
struct Golden {
    numpy_version: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    rows: Vec<Vec<f64>>,
    uncentred: Reference,
    centred: Reference,
}

#[derive(Deserialize)]
struct Reference {
    eigenvalues: Vec<f64>,
    var_0_9: usize,
    var_0_99: usize,
    entropy: f64,
    stable: f64,
    participation: f64,
    numerical: usize,
}

/// Relative tolerances one path can meet against numpy's SVD.
struct Tolerance {
    eigenvalues: f64,
    /// The Gram path returns the null directions of a rank-deficient matrix as
    /// σ ≈ √ε·σ₁ instead of ~ε·σ₁, which moves the entropy rank by ~1e-6.
    entropy: f64,
    ratios: f64,
}

const EXACT: Tolerance = Tolerance { eigenvalues: 1e-12, entropy: 1e-10, ratios: 1e-10 };
const GRAM: Tolerance = Tolerance { eigenvalues: 1e-8, entropy: 1e-5, ratios: 1e-8 };

fn load() -> Result<Golden> {
    let text = std::fs::read_to_string(GOLDEN).with_context(|| format!("reading {GOLDEN}; {HINT}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {GOLDEN}; {HINT}"))
}

fn matrix(rows: &[Vec<f64>]) -> Array2<f64> {
    let d = rows[0].len();
    Array2::from_shape_vec((rows.len(), d), rows.concat()).expect("golden rows are rectangular")
}

fn check_close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs().max(1.0), "{what}: got {got}, numpy {want} (difference {:e}); {HINT}", (got - want).abs());
}

fn check(label: &str, spectrum: &Spectrum, want: &Reference, tol: &Tolerance) {
    let got = spectrum.eigenvalues();
    let diff = max_abs_diff(got, &want.eigenvalues);
    assert!(
        diff <= tol.eigenvalues * want.eigenvalues[0],
        "{label} eigenvalues: max difference {diff:e}\n  got   {:?}\n  numpy {:?}\n{HINT}",
        &got[..4],
        &want.eigenvalues[..4]
    );
    assert_eq!(var_rank(spectrum, 0.9), want.var_0_9, "{label} var@0.9");
    assert_eq!(var_rank(spectrum, 0.99), want.var_0_99, "{label} var@0.99");
    assert_eq!(numerical_rank(spectrum), want.numerical, "{label} numerical rank");
    check_close(&format!("{label} entropy"), entropy_rank(spectrum), want.entropy, tol.entropy);
    check_close(&format!("{label} stable"), stable_rank(spectrum), want.stable, tol.ratios);
    check_close(&format!("{label} participation"), participation_ratio(spectrum), want.participation, tol.ratios);
}

#[test]
fn spectra_and_ranks_match_numpy() {
    let golden = load().unwrap();
    assert!(!golden.cases.is_empty(), "{GOLDEN} has no cases");
    for case in &golden.cases {
        let h = matrix(&case.rows);
        let mut acc = GramAccumulator::new(h.ncols());
        acc.update_f64(h.view()).unwrap();
        for (centred, want) in [(false, &case.uncentred), (true, &case.centred)] {
            let label = format!("{} (centred: {centred}, numpy {})", case.name, golden.numpy_version);
            let exact = Spectrum::exact(h.view(), centred).unwrap();
            check(&format!("{label}, exact path"), &exact, want, &EXACT);
            let via_gram = Spectrum::from_gram(&acc, centred).unwrap();
            check(&format!("{label}, Gram path"), &via_gram, want, &GRAM);
        }
    }
}
