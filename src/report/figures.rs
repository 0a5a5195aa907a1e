//! The report's figures, from the tidy tables: each function picks its rows, builds a
//! [`Chart`](super::chart::Chart) and writes `fig_NAME.png` + `fig_NAME.svg` into `dir`.
//!
//! Conventions shared by all figures:
//! - Rank figures use the paper's estimator, var@0.9 on the *uncentred* matrix; subspace and
//!   spectrum figures use uncentred rows too. Centred (PCA) numbers stay in the tables.
//! - Models appear in the order they first appear in the input, never alphabetised.
//! - Seeds: a label `NAME#REST` (e.g. `MLM#seed0`, as `reproduce` writes them) belongs to the
//!   model group `NAME`. Where a figure compares models (`fig_mlm_vs_maelm`,
//!   `fig_mask_subspace`), a group with several members is drawn as its median with a min–max
//!   band; a group with one member is drawn as that member.
//! - Missing data is left out, never drawn as 0: a group with no rows gets no line (an MAE-LM
//!   encoder has no `masked/mask` rows; its panel title says "n/a"), and non-finite values
//!   break a line instead of being joined across.
//! - Nothing at all to draw is an error of type [`NothingToPlot`] and no file is written;
//!   callers that treat a missing figure as fine can `downcast_ref::<NothingToPlot>()`.

use super::chart::{Axis, Band, Chart, Panel, Rule, Scale, Series};
use super::palette;
use super::render::render;
use super::verdicts::PLATEAU_MARGIN_NATS;
use crate::analysis::tables::{RankRow, SpectrumRow, SubspaceRow};
use crate::rank::Estimator;
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use super::render::FigureSet;
pub use crate::train::curve::{MetricsKind, MetricsPoint};

/// Separates a model group from the rest of a label: `MLM#seed1` is in group `MLM`.
pub const SEED_SEPARATOR: char = '#';

/// The model group of a label (the part before [`SEED_SEPARATOR`]).
pub fn model_group(label: &str) -> &str {
    label.split(SEED_SEPARATOR).next().unwrap_or(label)
}

/// A figure had no rows it could draw; no file was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingToPlot {
    pub figure: &'static str,
    pub reason: String,
}

impl fmt::Display for NothingToPlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: nothing to plot ({})", self.figure, self.reason)
    }
}

impl std::error::Error for NothingToPlot {}

fn nothing(figure: &'static str, reason: impl Into<String>) -> anyhow::Error {
    NothingToPlot { figure, reason: reason.into() }.into()
}

/// The `condition/group` lines of the paper's Figure 1, in legend order.
const RANK_GROUPS: [(&str, &str); 5] = [("masked", "all"), ("masked", "real"), ("masked", "mask"), ("clean", "all"), ("clean", "real")];
/// Spectra drawn: real and `[MASK]` tokens in the pretraining view, real tokens on clean input,
/// and `[MASK]` fed to an MAE-LM encoder (only present for MAE-LM).
const SPECTRUM_GROUPS: [(&str, &str); 4] = [("masked", "real"), ("masked", "mask"), ("clean", "real"), ("mask-fed", "mask")];

const LAYER_AXIS: &str = "layer (0 = embedding output)";
const RANK_AXIS: &str = "effective rank var@0.9 (dimensions)";

/// Distinct values in order of first appearance.
fn first_appearance<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// Rows of the paper's estimator, uncentred.
fn paper_rows(ranks: &[RankRow]) -> Vec<&RankRow> {
    let paper = Estimator::PAPER.to_string();
    ranks.iter().filter(|r| r.estimator == paper && !r.centred).collect()
}

fn layer_axis<'a>(layers: impl IntoIterator<Item = &'a usize>) -> Option<Axis> {
    let (lo, hi) = layers.into_iter().fold(None, |acc: Option<(usize, usize)>, &l| Some(acc.map_or((l, l), |(lo, hi)| (lo.min(l), hi.max(l)))))?;
    Some(Axis::integers(LAYER_AXIS, lo as f64, hi as f64))
}

/// (layer, value) points sorted by layer.
fn by_layer<'a>(rows: impl IntoIterator<Item = &'a RankRow>) -> Vec<(f64, f64)> {
    let mut points: Vec<(usize, f64)> = rows.into_iter().map(|r| (r.layer, r.value)).collect();
    points.sort_by_key(|p| p.0);
    points.into_iter().map(|(l, v)| (l as f64, v)).collect()
}

/// `fig_rank_by_layer`, the paper's Figure 1: one panel per model (side by side), var@0.9 rank
/// of each token group per layer, and a dashed line at the model's `d_model` (looked up by label,
/// then by model group; no line if neither is in the map).
pub fn rank_by_layer(dir: &Path, ranks: &[RankRow], d_model: &BTreeMap<String, usize>) -> Result<FigureSet> {
    const NAME: &str = "fig_rank_by_layer";
    let rows: Vec<&RankRow> = paper_rows(ranks).into_iter().filter(|r| RANK_GROUPS.contains(&(r.condition.as_str(), r.group.as_str()))).collect();
    let x = layer_axis(rows.iter().map(|r| &r.layer)).ok_or_else(|| nothing(NAME, "no var@0.9 uncentred rows for the masked/clean token groups"))?;
    let models = first_appearance(rows.iter().map(|r| r.model.as_str()));
    let width_of = |model: &str| d_model.get(model).or_else(|| d_model.get(model_group(model))).copied();
    let y_values = rows.iter().map(|r| r.value).chain(models.iter().filter_map(|m| width_of(m)).map(|d| d as f64));
    let Some(y) = Axis::fit(RANK_AXIS, y_values, true) else {
        return Err(nothing(NAME, "every var@0.9 value is NaN"));
    };
    let present: Vec<(&str, &str)> = RANK_GROUPS.into_iter().filter(|g| rows.iter().any(|r| (r.condition.as_str(), r.group.as_str()) == *g)).collect();
    let panels = models
        .iter()
        .map(|&model| {
            let mut series = Vec::new();
            let mut absent = Vec::new();
            for &(condition, group) in &present {
                let points = by_layer(rows.iter().copied().filter(|r| r.model == model && r.condition == condition && r.group == group));
                if points.is_empty() {
                    absent.push(format!("{condition}/{group}"));
                } else {
                    series.push(Series { label: format!("{condition}/{group}"), style: palette::token_group(condition, group), points });
                }
            }
            let title = if absent.is_empty() { model.to_string() } else { format!("{model} ({}: n/a)", absent.join(", ")) };
            let rules = width_of(model).map(|d| Rule { y: d as f64, label: format!("d_model = {d}"), in_legend: false }).into_iter().collect();
            Panel { title, x: x.clone(), y: y.clone(), bands: vec![], series, rules }
        })
        .collect::<Vec<_>>();
    let chart = Chart {
        title: "Effective rank of token representations by layer".into(),
        subtitle: Some("var@0.9 of the uncentred token matrix · solid: masked input (pretraining view) · dashed: clean input".into()),
        columns: panels.len().min(3),
        panel_size: if panels.len() == 1 { (640, 460) } else { (470, 440) },
        panels,
    };
    render(&chart, dir, NAME)
}

/// One model's curve, before seeds are aggregated.
struct Member {
    /// The model group (label before [`SEED_SEPARATOR`], plus any qualifier).
    group: String,
    /// The full label, used when the group has this member only.
    label: String,
    /// (layer, value) in layer order.
    points: Vec<(f64, f64)>,
}

/// Median, min and max of the finite values at one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

/// One line per model group: the member itself, or the median of several members with a
/// min–max band.
fn aggregate_members(members: Vec<Member>) -> (Vec<Series>, Vec<Band>) {
    let groups = first_appearance(members.iter().map(|m| m.group.as_str())).into_iter().map(String::from).collect::<Vec<_>>();
    let mut series = Vec::new();
    let mut bands = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let style = palette::nth(i);
        let in_group: Vec<&Member> = members.iter().filter(|m| &m.group == group).collect();
        if let [only] = in_group.as_slice() {
            series.push(Series { label: only.label.clone(), style, points: only.points.clone() });
            continue;
        }
        // x values here are layers, so they key exactly once rounded.
        let mut at: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for &(x, y) in in_group.iter().flat_map(|m| &m.points) {
            let values = at.entry(x.round() as i64).or_default();
            if y.is_finite() {
                values.push(y);
            }
        }
        let spreads: Vec<(f64, Option<Spread>)> = at.into_iter().map(|(x, values)| (x as f64, spread(values))).collect();
        series.push(Series {
            label: format!("{group} (median of {})", in_group.len()),
            style,
            points: spreads.iter().map(|(x, s)| (*x, s.map_or(f64::NAN, |s| s.median))).collect(),
        });
        bands.push(Band { colour: style.colour, points: spreads.iter().filter_map(|(x, s)| s.map(|s| (*x, s.min, s.max))).collect() });
    }
    (series, bands)
}

fn spread(mut values: Vec<f64>) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) };
    Some(Spread { median, min: values[0], max: values[n - 1] })
}

/// `fig_mlm_vs_maelm`: var@0.9 rank of real tokens on clean input (`clean/real`) by layer, one
/// line per model group (median and min–max band over seeds, see the module doc).
pub fn mlm_vs_maelm(dir: &Path, ranks: &[RankRow]) -> Result<FigureSet> {
    const NAME: &str = "fig_mlm_vs_maelm";
    let rows: Vec<&RankRow> = paper_rows(ranks).into_iter().filter(|r| r.condition == "clean" && r.group == "real").collect();
    let x = layer_axis(rows.iter().map(|r| &r.layer)).ok_or_else(|| nothing(NAME, "no var@0.9 uncentred clean/real rows"))?;
    let y = Axis::fit(RANK_AXIS, rows.iter().map(|r| r.value), true).ok_or_else(|| nothing(NAME, "every clean/real value is NaN"))?;
    let curves = first_appearance(rows.iter().map(|r| r.model.as_str()))
        .into_iter()
        .map(|m| Member { group: model_group(m).to_string(), label: m.to_string(), points: by_layer(rows.iter().copied().filter(|r| r.model == m)) })
        .collect();
    let (series, bands) = aggregate_members(curves);
    let subtitle = if bands.is_empty() {
        "var@0.9, uncentred · real tokens of clean input (same positions for every model)"
    } else {
        "var@0.9, uncentred · real tokens of clean input · line: median over seeds, band: min–max"
    };
    let chart = Chart {
        title: "Dimensions used by real tokens: MLM vs MAE-LM".into(),
        subtitle: Some(subtitle.into()),
        columns: 1,
        panel_size: (680, 480),
        panels: vec![Panel { title: "clean/real".into(), x, y, bands, series, rules: vec![] }],
    };
    render(&chart, dir, NAME)
}

/// Cumulative energy Σ_{i≤k} σᵢ² / Σ σᵢ² as (k, share) for k = 1.., from eigenvalues in index
/// order. Non-finite eigenvalues are skipped and tiny negative ones (round-off in the Gram
/// matrix) count as 0. `None` if there is no energy.
fn cumulative_energy(mut rows: Vec<&SpectrumRow>) -> Option<Vec<(f64, f64)>> {
    rows.sort_by_key(|r| r.index);
    let values: Vec<f64> = rows.iter().map(|r| r.eigenvalue).filter(|v| v.is_finite()).map(|v| v.max(0.0)).collect();
    let total: f64 = values.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let mut acc = 0.0;
    Some(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                acc += v;
                ((i + 1) as f64, (acc / total).min(1.0))
            })
            .collect(),
    )
}

/// `fig_spectrum`: cumulative spectral energy vs number of dimensions k (log axis), one panel
/// per (model, layer) — models as rows, `layers` as columns — for the token groups in
/// `SPECTRUM_GROUPS`, uncentred, with the τ = 0.9 line where var@0.9 reads off. An empty
/// `layers` picks the first, middle and last layer present; requested layers with no rows are
/// skipped.
pub fn spectrum(dir: &Path, spectra: &[SpectrumRow], layers: &[usize]) -> Result<FigureSet> {
    const NAME: &str = "fig_spectrum";
    let rows: Vec<&SpectrumRow> = spectra.iter().filter(|r| !r.centred && SPECTRUM_GROUPS.contains(&(r.condition.as_str(), r.group.as_str()))).collect();
    let mut available: Vec<usize> = rows.iter().map(|r| r.layer).collect();
    available.sort_unstable();
    available.dedup();
    let chosen: Vec<usize> = if layers.is_empty() {
        let mut picks = available.first().into_iter().chain(available.get(available.len() / 2)).chain(available.last()).copied().collect::<Vec<_>>();
        picks.sort_unstable();
        picks.dedup();
        picks
    } else {
        first_appearance_usize(layers).into_iter().filter(|l| available.contains(l)).collect()
    };
    if chosen.is_empty() {
        return Err(nothing(NAME, format!("no uncentred spectra at layers {layers:?} (layers with spectra: {available:?})")));
    }
    let mut panels = Vec::new();
    for model in first_appearance(rows.iter().map(|r| r.model.as_str())) {
        for &layer in &chosen {
            let series: Vec<Series> = SPECTRUM_GROUPS
                .iter()
                .filter_map(|&(condition, group)| {
                    let cell = rows.iter().copied().filter(|r| r.model == model && r.layer == layer && r.condition == condition && r.group == group).collect();
                    cumulative_energy(cell).map(|points| Series {
                        label: format!("{condition}/{group}"),
                        style: palette::token_group(condition, group),
                        points,
                    })
                })
                .collect();
            if !series.is_empty() {
                panels.push((format!("{model} · layer {layer}"), series));
            }
        }
    }
    let k_max = panels.iter().flat_map(|(_, s)| s).map(|s| s.points.len()).max().unwrap_or(0);
    if k_max == 0 {
        return Err(nothing(NAME, "every spectrum at the chosen layers is empty, zero or NaN"));
    }
    let x = Axis { label: "k, number of dimensions (log scale)".into(), range: (1.0, (k_max as f64).max(2.0)), scale: Scale::Log, integer: true };
    let y = Axis { label: "share of Σσ² in the top k dimensions".into(), range: (0.0, 1.04), scale: Scale::Linear, integer: false };
    let columns = if chosen.len() > 1 { chosen.len().min(4) } else { panels.len().min(3) };
    let panels: Vec<Panel> = panels
        .into_iter()
        .map(|(title, series)| Panel {
            title,
            x: x.clone(),
            y: y.clone(),
            bands: vec![],
            series,
            rules: vec![Rule { y: 0.9, label: "τ = 0.9 (var@0.9 cut)".into(), in_legend: true }],
        })
        .collect();
    let chart = Chart {
        title: "Cumulative spectral energy of token representations".into(),
        subtitle: Some("uncentred · var@0.9 = the k where a curve crosses 0.9 · a steep curve = few dimensions used".into()),
        columns,
        panel_size: (420, 360),
        panels,
    };
    render(&chart, dir, NAME)
}

fn first_appearance_usize(values: &[usize]) -> Vec<usize> {
    let mut seen = Vec::new();
    for &v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen
}

/// `fig_mask_subspace`: per layer, the share of `[MASK]` energy outside the real tokens'
/// var@0.9 principal subspace (uncentred), one line per model and condition (MLM: `masked`,
/// MAE-LM: `mask-fed`); seeds aggregate as in the module doc.
pub fn mask_subspace(dir: &Path, subspace: &[SubspaceRow]) -> Result<FigureSet> {
    const NAME: &str = "fig_mask_subspace";
    let rows: Vec<&SubspaceRow> = subspace.iter().filter(|r| !r.centred).collect();
    let x = layer_axis(rows.iter().map(|r| &r.layer)).ok_or_else(|| nothing(NAME, "no uncentred subspace rows"))?;
    if rows.iter().all(|r| !r.mask_energy_outside_real.is_finite()) {
        return Err(nothing(NAME, "every mask_energy_outside_real is NaN"));
    }
    let labels = first_appearance(rows.iter().map(|r| r.model.as_str()));
    let mut curves = Vec::new();
    for model in labels {
        for condition in first_appearance(rows.iter().filter(|r| r.model == model).map(|r| r.condition.as_str())) {
            let mut points: Vec<(f64, f64)> =
                rows.iter().filter(|r| r.model == model && r.condition == condition).map(|r| (r.layer as f64, r.mask_energy_outside_real)).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            curves.push(Member { group: format!("{}, {condition} input", model_group(model)), label: format!("{model}, {condition} input"), points });
        }
    }
    let (series, bands) = aggregate_members(curves);
    let y = Axis { label: "[MASK] energy outside real subspace (fraction)".into(), range: (0.0, 1.04), scale: Scale::Linear, integer: false };
    let chart = Chart {
        title: "[MASK] representations leave the real-token subspace".into(),
        subtitle: Some(format!(
            "share of [MASK] energy outside the top-k principal subspace of real tokens (k = their var@0.9 rank), uncentred{}",
            if bands.is_empty() { "" } else { " · line: median over seeds, band: min–max" }
        )),
        columns: 1,
        panel_size: (680, 460),
        panels: vec![Panel { title: "masked/mask vs masked/real".into(), x, y, bands, series, rules: vec![] }],
    };
    render(&chart, dir, NAME)
}

/// `fig_training`: holdout (`eval`) masked-token loss and top-1 accuracy vs step, one line per
/// run in input order. Runs without eval rows are left out. `plateau` (the unigram plateau
/// loss on the holdout, nats) draws the plateau and the line a run must get below to count as
/// having left it.
pub fn training(dir: &Path, runs: &[(String, Vec<MetricsPoint>)], plateau: Option<f64>) -> Result<FigureSet> {
    const NAME: &str = "fig_training";
    let mut losses = Vec::new();
    let mut accuracies = Vec::new();
    for (i, (label, points)) in runs.iter().enumerate() {
        let mut eval: Vec<&MetricsPoint> = points.iter().filter(|p| p.kind == MetricsKind::Eval).collect();
        if eval.is_empty() {
            continue;
        }
        eval.sort_by_key(|p| p.step);
        let style = palette::nth(i);
        losses.push(Series { label: label.clone(), style, points: eval.iter().map(|p| (p.step as f64, p.loss)).collect() });
        accuracies.push(Series { label: label.clone(), style, points: eval.iter().map(|p| (p.step as f64, 100.0 * p.accuracy)).collect() });
    }
    let all = |series: &[Series], axis: usize| series.iter().flat_map(|s| s.points.iter().map(move |p| if axis == 0 { p.0 } else { p.1 })).collect::<Vec<_>>();
    let Some(mut x) = Axis::fit("training step", all(&losses, 0), true) else {
        return Err(nothing(NAME, "no run has eval rows in its metrics.csv"));
    };
    x.integer = true;
    let plateau_rules: Vec<Rule> = plateau
        .filter(|p| p.is_finite())
        .map(|p| {
            vec![
                Rule { y: p, label: format!("unigram plateau {p:.2}"), in_legend: false },
                Rule { y: p - PLATEAU_MARGIN_NATS, label: format!("left plateau below {:.2}", p - PLATEAU_MARGIN_NATS), in_legend: false },
            ]
        })
        .unwrap_or_default();
    let loss_axis = Axis::fit("cross-entropy (nats per masked token)", all(&losses, 1).into_iter().chain(plateau_rules.iter().map(|r| r.y)), false);
    let accuracy_axis = Axis::fit("top-1 accuracy on masked tokens (%)", all(&accuracies, 1), true);
    let mut panels = Vec::new();
    if let Some(y) = loss_axis {
        panels.push(Panel { title: "holdout loss".into(), x: x.clone(), y, bands: vec![], series: losses, rules: plateau_rules });
    }
    if let Some(y) = accuracy_axis {
        panels.push(Panel { title: "holdout accuracy".into(), x, y, bands: vec![], series: accuracies, rules: vec![] });
    }
    if panels.is_empty() {
        return Err(nothing(NAME, "every eval loss and accuracy is NaN"));
    }
    let chart = Chart {
        title: "Pretraining progress on the holdout split".into(),
        subtitle: Some("eval rows of each run's metrics.csv · masked positions of the holdout split".into()),
        columns: panels.len(),
        panel_size: (480, 420),
        panels,
    };
    render(&chart, dir, NAME)
}

#[cfg(test)]
#[path = "figure_tests.rs"]
mod tests;
