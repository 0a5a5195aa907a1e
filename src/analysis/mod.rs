//! `repdef analyze` and `repdef merge`: from a plan (or shards' accumulators) to the output dir:
//! `manifest.json`, `ranks.csv`, `spectra.csv`, `subspace.csv`, `accumulators.safetensors`.
//! The dir is assembled under a temporary name and renamed into place, so an interrupted or
//! failed analysis never leaves a valid-looking partial result; it replaces only an earlier
//! analysis dir (one with a `manifest.json` and nothing but an analysis's and its report's
//! files), checked before the work (`crate::outdir`).

pub mod manifest;
pub mod parquet;
pub mod store;
pub mod summary;
pub mod tables;
pub mod training_record;

use crate::extract::{extract, Accumulators};
use crate::fsutil::{read_json, write_json_atomic};
use crate::outdir::{claim_replaceable, write_staged, Replaceable};
use crate::spec::Plan;
use anyhow::{bail, ensure, Context, Result};
use manifest::{Manifest, MANIFEST_FILE};
use std::path::{Path, PathBuf};
use store::{read_accumulators, write_accumulators, ACCUMULATORS_FILE};
use tables::{compute, write_csv, Results};

pub const RANKS_FILE: &str = "ranks.csv";
pub const SPECTRA_FILE: &str = "spectra.csv";
pub const SUBSPACE_FILE: &str = "subspace.csv";
pub const RANKS_PARQUET_FILE: &str = "ranks.parquet";
pub const SPECTRA_PARQUET_FILE: &str = "spectra.parquet";

/// The files an analysis writes.
const ANALYSIS_FILES: [&str; 7] = [MANIFEST_FILE, RANKS_FILE, SPECTRA_FILE, SUBSPACE_FILE, RANKS_PARQUET_FILE, SPECTRA_PARQUET_FILE, ACCUMULATORS_FILE];

/// An analysis dir: the analysis's files and the report and figures drawn from them in place.
pub const ANALYSIS_DIR: Replaceable = Replaceable {
    marker: MANIFEST_FILE,
    what: "an analysis and its report",
    holds: |name| ANALYSIS_FILES.contains(&name) || crate::report::is_report_file(name),
};

/// Runs the plan and writes its output dir; returns the computed tables.
pub fn analyze(plan: &Plan, out: &Path) -> Result<Results> {
    analyze_into(plan, out, &ANALYSIS_DIR)
}

/// [`analyze`] into a dir that may hold more than an analysis dir does (`dir.holds`).
pub fn analyze_into(plan: &Plan, out: &Path, dir: &Replaceable) -> Result<Results> {
    claim_replaceable(out, dir)?;
    let extraction = extract(plan)?;
    let manifest = Manifest::new(plan, &extraction)?;
    let results = compute(&extraction.accumulators, &plan.estimators, &plan.spec.measure.centring)?;
    let results = in_model_order(results, &manifest);
    write_output_dir(out, dir, &manifest, &extraction.accumulators, &results)?;
    Ok(results)
}

/// Tables list models in the spec's order (accumulators are keyed, hence sorted, by label).
fn in_model_order(mut results: Results, manifest: &Manifest) -> Results {
    let position = |label: &str| manifest.models.iter().position(|m| m.label == label);
    results.ranks.sort_by_key(|r| position(&r.model));
    results.spectra.sort_by_key(|r| position(&r.model));
    results.subspace.sort_by_key(|r| position(&r.model));
    results
}

/// Adds the accumulators of analysis dirs made from the same spec on different shards.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Results> {
    ensure!(!dirs.is_empty(), "nothing to merge");
    claim_replaceable(out, &ANALYSIS_DIR)?;
    for dir in dirs {
        ensure!(!same_dir(dir, out), "{}: merged into itself; choose another --out", dir.display());
    }
    let mut merged: Option<(Manifest, Accumulators)> = None;
    for dir in dirs {
        let manifest: Manifest = read_json(&dir.join(MANIFEST_FILE))?;
        let accumulators = read_accumulators(&dir.join(ACCUMULATORS_FILE))?;
        merged = Some(match merged {
            None => (manifest, accumulators),
            Some((mut total, mut sums)) => {
                check_compatible(&total, &manifest, dir)?;
                for (key, acc) in accumulators {
                    match sums.get_mut(&key) {
                        Some(existing) => existing.merge(&acc).with_context(|| format!("{}: {key:?}", dir.display()))?,
                        None => {
                            sums.insert(key, acc);
                        }
                    }
                }
                for (model, other) in total.models.iter_mut().zip(&manifest.models) {
                    model.tokens += other.tokens;
                }
                total.shards.extend(manifest.shards);
                (total, sums)
            }
        });
    }
    let (mut manifest, accumulators) = merged.expect("at least one dir");
    check_complete(&manifest.shards)?;
    // The merge is the unsharded analysis: its spec (and hash) names no shard.
    manifest.spec.data.shard = None;
    manifest.spec_hash = manifest.spec.hash();
    // Only the accumulators and the spec's measures: the models and data need not be here.
    let spec = &manifest.spec;
    let results = in_model_order(compute(&accumulators, &spec.estimators()?, &spec.measure.centring)?, &manifest);
    write_output_dir(out, &ANALYSIS_DIR, &manifest, &accumulators, &results)?;
    Ok(results)
}

/// Shards must come from the same spec (up to the shard and the batch size, which changes no
/// hidden state: every sequence runs on its own), the same weights and the same data files.
fn check_compatible(first: &Manifest, other: &Manifest, dir: &Path) -> Result<()> {
    let comparable = |spec: &crate::spec::AnalysisSpec| {
        let mut spec = spec.clone();
        spec.data.shard = None;
        spec.data.batch_size = first.spec.data.batch_size;
        serde_json::to_value(spec).expect("specs serialise")
    };
    if let Some(key) = first_difference(&comparable(&first.spec), &comparable(&other.spec), "") {
        bail!("{}: made from a different spec than the first dir ({key} differs; only data.shard and data.batch_size may)", dir.display());
    }
    for (x, y) in first.models.iter().zip(&other.models) {
        if x.weights_fnv1a64 != y.weights_fnv1a64 {
            bail!("{}: model {:?} has different weights than in the first dir", dir.display(), y.label);
        }
    }
    // The paths are the spec's, equal by now: the records differ only where the contents do.
    if other.data_files != first.data_files {
        let differing = other.data_files.iter().flatten().zip(first.data_files.iter().flatten()).find(|(x, y)| x != y);
        let file = differing.map_or("its data files are not recorded the same way".to_string(), |(x, _)| format!("{} differs", x.path));
        bail!("{}: read other data than the first dir ({file}): analyse every shard from the same files", dir.display());
    }
    for shard in &other.shards {
        ensure!(!first.shards.contains(shard), "{}: shard {shard} is already merged", dir.display());
    }
    Ok(())
}

/// The dotted path of the first value where `a` and `b` differ (`models[1].path`), if any.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    let within = |key: String| if at.is_empty() { key } else { format!("{at}.{key}") };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| first_difference(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &within(k.clone())))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")))
        }
        _ => (a != b).then(|| at.to_string()),
    }
}

/// The merged shards must be one split `i/n` with every index once: a missing shard would
/// analyse part of the token budget, a mixed split would count sequences twice.
fn check_complete(shards: &[String]) -> Result<()> {
    let parsed = shards.iter().map(|s| crate::spec::parse_shard(Some(s))).collect::<Result<Vec<_>>>()?;
    let count = parsed[0].1;
    if let Some((_, other)) = parsed.iter().find(|(_, n)| *n != count) {
        bail!("shards {} mix a split into {count} with one into {other}: merge the shards of one split", shards.join(", "));
    }
    let missing: Vec<String> = (0..count).filter(|i| !parsed.iter().any(|(j, _)| j == i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        bail!("shards {} are incomplete: {} missing", shards.join(", "), missing.join(", "));
    }
    Ok(())
}

/// Whether both paths name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

fn write_output_dir(out: &Path, dir: &Replaceable, manifest: &Manifest, accumulators: &Accumulators, results: &Results) -> Result<()> {
    write_staged(out, dir, |staging| {
        write_csv(&staging.join(RANKS_FILE), &results.ranks)?;
        write_csv(&staging.join(SPECTRA_FILE), &results.spectra)?;
        write_csv(&staging.join(SUBSPACE_FILE), &results.subspace)?;
        parquet::write_ranks(&staging.join(RANKS_PARQUET_FILE), &results.ranks)?;
        parquet::write_spectra(&staging.join(SPECTRA_PARQUET_FILE), &results.spectra)?;
        write_accumulators(&staging.join(ACCUMULATORS_FILE), accumulators)?;
        write_json_atomic(&staging.join(MANIFEST_FILE), manifest)
    })
}
