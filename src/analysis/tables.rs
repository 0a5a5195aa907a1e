//! The tidy result tables computed from accumulators: ranks (one row per model, condition,
//! group, layer, estimator, centring), spectra (eigenvalues), and the `[MASK]`-vs-real subspace
//! measures. Written as CSV that pandas/polars read directly.

use crate::extract::{AccumulatorKey, Accumulators, Condition, Group};
use crate::rank::{compare_subspaces, Estimator, GramAccumulator, Spectrum, SubspaceOptions};
use crate::spec::Centring;
use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankRow {
    pub model: String,
    pub condition: String,
    pub group: String,
    pub layer: usize,
    pub estimator: String,
    pub centred: bool,
    pub value: f64,
    pub n_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectrumRow {
    pub model: String,
    pub condition: String,
    pub group: String,
    pub layer: usize,
    pub centred: bool,
    /// 0-based position in the descending spectrum.
    pub index: usize,
    /// σ² of the token matrix.
    pub eigenvalue: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubspaceRow {
    pub model: String,
    pub condition: String,
    pub layer: usize,
    pub centred: bool,
    /// var@0.9 rank of the real-token group (dimension of its principal subspace).
    pub k_real: usize,
    pub k_mask: usize,
    /// Share of `[MASK]` energy outside the real tokens' top-k_real subspace.
    pub mask_energy_outside_real: f64,
    pub angle_min_deg: f64,
    pub angle_median_deg: f64,
    pub angle_max_deg: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub ranks: Vec<RankRow>,
    pub spectra: Vec<SpectrumRow>,
    pub subspace: Vec<SubspaceRow>,
}

/// Every estimator on every accumulator, under each centring, plus the subspace measures. The
/// accumulators are decomposed in parallel and their rows concatenated in key order, so the
/// tables do not depend on the thread count.
pub fn compute(accumulators: &Accumulators, estimators: &[Estimator], centrings: &[Centring]) -> Result<Results> {
    let per_key: Vec<Results> = accumulators.par_iter().map(|(key, acc)| key_results(accumulators, key, acc, estimators, centrings)).collect::<Result<_>>()?;
    Ok(per_key.into_iter().fold(Results::default(), |mut all, part| {
        all.ranks.extend(part.ranks);
        all.spectra.extend(part.spectra);
        all.subspace.extend(part.subspace);
        all
    }))
}

/// [`compute`]'s rows for one accumulator.
fn key_results(accumulators: &Accumulators, key: &AccumulatorKey, acc: &GramAccumulator, estimators: &[Estimator], centrings: &[Centring]) -> Result<Results> {
    let mut results = Results::default();
    for &centring in centrings {
        let centred = centring.is_centred();
        let spectrum = Spectrum::from_gram(acc, centred).with_context(|| describe(key))?;
        for estimator in estimators {
            results.ranks.push(RankRow {
                model: key.model.clone(),
                condition: key.condition.to_string(),
                group: key.group.to_string(),
                layer: key.layer,
                estimator: estimator.to_string(),
                centred,
                value: estimator.evaluate(&spectrum),
                n_tokens: acc.n_tokens(),
            });
        }
        results.spectra.extend(spectrum.eigenvalues().iter().enumerate().map(|(index, &eigenvalue)| SpectrumRow {
            model: key.model.clone(),
            condition: key.condition.to_string(),
            group: key.group.to_string(),
            layer: key.layer,
            centred,
            index,
            eigenvalue,
        }));
        if key.group == Group::Mask {
            let real_key = AccumulatorKey { group: Group::Real, ..key.clone() };
            if let Some(real) = accumulators.get(&real_key) {
                results.subspace.push(subspace_row(key, real, acc, centred)?);
            }
        }
    }
    Ok(results)
}

fn subspace_row(key: &AccumulatorKey, real: &GramAccumulator, mask: &GramAccumulator, centred: bool) -> Result<SubspaceRow> {
    let report = compare_subspaces(real, mask, SubspaceOptions { tau: 0.9, centred }).with_context(|| describe(key))?;
    let angles = &report.angles_deg;
    let pick = |q: f64| angles.get(((angles.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN);
    Ok(SubspaceRow {
        model: key.model.clone(),
        condition: key.condition.to_string(),
        layer: key.layer,
        centred,
        k_real: report.k_real,
        k_mask: report.k_mask,
        mask_energy_outside_real: report.energy_outside,
        angle_min_deg: pick(0.0),
        angle_median_deg: pick(0.5),
        angle_max_deg: pick(1.0),
    })
}

fn describe(key: &AccumulatorKey) -> String {
    format!("model {:?}, {}/{}, layer {}", key.model, key.condition, key.group, key.layer)
}

/// Writes rows as CSV with a header, atomically.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |tmp| {
        let mut writer = csv::Writer::from_path(tmp)?;
        for row in rows {
            writer.serialize(row)?;
        }
        writer.flush()?;
        Ok(())
    })
}

/// Reads a CSV written by `write_csv`, naming the file on error.
pub fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    read_rows(path, |_: &T| None)
}

/// [`read_csv`] of a table an analysis writes, refusing rows whose numbers it cannot have written.
pub fn read_table<T: TableRow>(path: &Path) -> Result<Vec<T>> {
    read_rows(path, T::problem)
}

fn read_rows<T: serde::de::DeserializeOwned>(path: &Path, problem: impl Fn(&T) -> Option<String>) -> Result<Vec<T>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| {
            let row: T = row.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2))?;
            match problem(&row) {
                Some(problem) => anyhow::bail!("{}: row {}: {problem} (a damaged table: rerun the analysis)", path.display(), i + 2),
                None => Ok(row),
            }
        })
        .collect()
}

/// A row of a table an analysis writes. Its numbers are measures: finite and non-negative (a
/// share at most 1, an angle at most 90°); anything else means the table was damaged.
pub trait TableRow: serde::de::DeserializeOwned {
    /// What is wrong with the row's numbers, if anything.
    fn problem(&self) -> Option<String>;
}

/// `value` named `name` unless it lies in `0..=max`.
fn outside(name: &str, value: f64, max: f64) -> Option<String> {
    (!(0.0..=max).contains(&value)).then(|| format!("{name} is {value}, outside 0..={max}"))
}

impl TableRow for RankRow {
    fn problem(&self) -> Option<String> {
        outside("value", self.value, f64::MAX)
    }
}

impl TableRow for SpectrumRow {
    fn problem(&self) -> Option<String> {
        outside("eigenvalue", self.eigenvalue, f64::MAX)
    }
}

impl TableRow for SubspaceRow {
    /// Angles are NaN where there are none (no `[MASK]` subspace to compare).
    fn problem(&self) -> Option<String> {
        let angles = [("angle_min_deg", self.angle_min_deg), ("angle_median_deg", self.angle_median_deg), ("angle_max_deg", self.angle_max_deg)];
        outside("mask_energy_outside_real", self.mask_energy_outside_real, 1.0)
            .or_else(|| angles.iter().filter(|(_, a)| !a.is_nan()).find_map(|(name, a)| outside(name, *a, 90.0)))
    }
}

/// The var@0.9 (uncentred) value of one cell, if measured.
pub fn paper_rank(ranks: &[RankRow], model: &str, condition: Condition, group: Group, layer: usize) -> Option<f64> {
    let paper = Estimator::PAPER.to_string();
    ranks
        .iter()
        .find(|r| r.model == model && r.condition == condition.name() && r.group == group.name() && r.layer == layer && r.estimator == paper && !r.centred)
        .map(|r| r.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_numbers_no_analysis_writes_are_damaged() {
        let subspace = SubspaceRow {
            model: "m".into(),
            condition: "masked".into(),
            layer: 0,
            centred: false,
            k_real: 3,
            k_mask: 0,
            mask_energy_outside_real: 0.2,
            angle_min_deg: f64::NAN,
            angle_median_deg: f64::NAN,
            angle_max_deg: f64::NAN,
        };
        assert_eq!(subspace.problem(), None, "no [MASK] subspace: no angles");
        let share = SubspaceRow { mask_energy_outside_real: 1.5, ..subspace.clone() };
        assert_eq!(share.problem().unwrap(), "mask_energy_outside_real is 1.5, outside 0..=1");
        let angle = SubspaceRow { angle_max_deg: 95.0, ..subspace };
        assert!(angle.problem().unwrap().starts_with("angle_max_deg is 95"));
        let spectrum = SpectrumRow { model: "m".into(), condition: "clean".into(), group: "all".into(), layer: 0, centred: true, index: 0, eigenvalue: -1.0 };
        assert!(spectrum.problem().unwrap().starts_with("eigenvalue is -1"));
        assert_eq!(SpectrumRow { eigenvalue: 0.0, ..spectrum }.problem(), None);
    }
}
