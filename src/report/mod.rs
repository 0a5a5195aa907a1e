//! What users came for: verdicts on the paper's claims, the regression check, figures and the
//! report. Works on the tidy tables only; never sees a tensor library type.

pub mod chart;
pub mod check;
pub mod content;
pub mod document;
pub mod facts;
pub mod figures;
mod glyphs;
pub mod palette;
pub mod plots;
pub mod render;
pub mod verdicts;

use crate::analysis::manifest::{Manifest, MANIFEST_FILE};
use crate::analysis::tables::{read_table, RankRow, SubspaceRow};
use crate::analysis::{RANKS_FILE, SUBSPACE_FILE};
use crate::fsutil::{read_json, write_atomic};
use anyhow::{ensure, Result};
use std::path::Path;
use verdicts::{decide_claims, Downstream, Verdict};

pub const REPORT_MD: &str = "report.md";
pub const REPORT_HTML: &str = "report.html";
/// Fine-tuning results a report shows and judges claim 4 on, if present in the dir.
pub const DOWNSTREAM_FILE: &str = "downstream.json";

/// Figures the report shows, if present in the dir: (file stem, caption).
const FIGURES: [(&str, &str); 5] = [
    ("fig_rank_by_layer", "var@0.9 effective rank by layer for each token group (the paper's Figure 1)"),
    ("fig_mlm_vs_maelm", "Real-token rank on clean input: MLM vs MAE-LM"),
    ("fig_mask_subspace", "Share of [MASK] energy outside the real tokens' principal subspace"),
    ("fig_spectrum", "Cumulative spectral energy vs number of dimensions"),
    ("fig_training", "Holdout masked-token loss during pretraining"),
];

/// Whether `name` is a file `report` or `plot` writes into an analysis dir (drawn from its
/// tables, so a new analysis replaces it).
pub fn is_report_file(name: &str) -> bool {
    let is_figure = |(stem, _): &(&str, &str)| name.strip_prefix(stem).is_some_and(|ext| ext == ".png" || ext == ".svg");
    name == REPORT_MD || name == REPORT_HTML || FIGURES.iter().any(is_figure)
}

/// The ranks table of an analysis dir, which a report and its figures need rows of.
fn read_ranks(dir: &Path) -> Result<Vec<RankRow>> {
    let path = dir.join(RANKS_FILE);
    let ranks: Vec<RankRow> = read_table(&path)?;
    ensure!(!ranks.is_empty(), "{}: no rows; the analysis dir is damaged (rerun `repdef analyze`)", path.display());
    Ok(ranks)
}

/// Draws the figures of an analysis dir (notes on skipped ones go to stderr), then writes its
/// report; returns the verdicts.
pub fn plot_and_report(dir: &Path) -> Result<Vec<Verdict>> {
    let outcome = plots::draw_all(dir)?;
    for note in &outcome.skipped {
        eprintln!("note: {note}");
    }
    write_report(dir)
}

/// Writes `report.md` and `report.html` into an analysis dir (with its `downstream.json`, if
/// any); returns the verdicts.
pub fn write_report(dir: &Path) -> Result<Vec<Verdict>> {
    let manifest: Manifest = read_json(&dir.join(MANIFEST_FILE))?;
    let ranks = read_ranks(dir)?;
    let subspace: Vec<SubspaceRow> = read_table(&dir.join(SUBSPACE_FILE))?;
    let facts = facts::load_facts(&manifest)?;
    let downstream_path = dir.join(DOWNSTREAM_FILE);
    let downstream: Option<Downstream> = if downstream_path.exists() { Some(read_json(&downstream_path)?) } else { None };
    let verdicts = decide_claims(&ranks, &subspace, &facts, downstream.as_ref());
    let figures = FIGURES
        .iter()
        .filter(|(stem, _)| dir.join(format!("{stem}.png")).exists())
        .map(|(stem, caption)| (format!("{stem}.png"), caption.to_string()))
        .collect();
    let inputs = content::ReportInputs {
        manifest: &manifest,
        ranks: &ranks,
        subspace: &subspace,
        facts: &facts,
        verdicts: &verdicts,
        downstream: downstream.as_ref(),
        figures,
    };
    let document = content::build(&inputs);
    write_atomic(&dir.join(REPORT_MD), document.to_markdown().as_bytes())?;
    write_atomic(&dir.join(REPORT_HTML), document.to_html(dir)?.as_bytes())?;
    Ok(verdicts)
}
