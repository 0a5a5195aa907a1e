//! Draws every figure an analysis dir's tables support (`repdef plot`, and the first step of
//! `repdef report`): rank by layer, MLM vs MAE-LM, spectra, `[MASK]` subspace, and — for models
//! trained by repdef — the training curves the manifest recorded.
//!
//! A figure with nothing to draw (say, a single HF checkpoint has no MAE-LM to compare with) is
//! skipped with a note; any other failure is an error.

use super::figures::{self, NothingToPlot};
use crate::analysis::manifest::{Manifest, MANIFEST_FILE};
use crate::analysis::tables::{read_table, SpectrumRow, SubspaceRow};
use crate::analysis::{SPECTRA_FILE, SUBSPACE_FILE};
use crate::fsutil::read_json;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// What `draw_all` did with each figure.
#[derive(Debug, Default)]
pub struct PlotOutcome {
    /// Stems of the figures written (`fig_rank_by_layer`, ...), each as `.png` and `.svg`.
    pub written: Vec<&'static str>,
    /// Figures with nothing to draw, and why.
    pub skipped: Vec<String>,
}

/// Writes `fig_*.png` / `fig_*.svg` into the analysis dir `dir`.
pub fn draw_all(dir: &Path) -> Result<PlotOutcome> {
    let manifest: Manifest = read_json(&dir.join(MANIFEST_FILE))?;
    let ranks = super::read_ranks(dir)?;
    let spectra: Vec<SpectrumRow> = read_table(&dir.join(SPECTRA_FILE))?;
    let subspace: Vec<SubspaceRow> = read_table(&dir.join(SUBSPACE_FILE))?;
    let d_model: BTreeMap<String, usize> = manifest.models.iter().map(|m| (m.label.clone(), m.d_model)).collect();
    let trained = manifest.models.iter().filter_map(|m| Some((m.label.clone(), m.training.as_ref()?)));
    let runs: Vec<_> = trained.clone().filter(|(_, t)| !t.curve.is_empty()).map(|(label, t)| (label, t.curve.clone())).collect();
    let plateaus: Vec<f64> = trained.map(|(_, t)| t.plateau_loss).collect();
    // One plateau line only when every run trained on the same data (as in `reproduce`).
    let plateau = plateaus.first().copied().filter(|p| plateaus.iter().all(|q| (q - p).abs() < 1e-9));

    let mut outcome = PlotOutcome::default();
    let attempts: [(&'static str, Result<figures::FigureSet>); 5] = [
        ("fig_rank_by_layer", figures::rank_by_layer(dir, &ranks, &d_model)),
        ("fig_mlm_vs_maelm", figures::mlm_vs_maelm(dir, &ranks)),
        ("fig_spectrum", figures::spectrum(dir, &spectra, &[])),
        ("fig_mask_subspace", figures::mask_subspace(dir, &subspace)),
        ("fig_training", figures::training(dir, &runs, plateau)),
    ];
    for (stem, attempt) in attempts {
        match attempt {
            Ok(_) => outcome.written.push(stem),
            Err(e) => match e.downcast_ref::<NothingToPlot>() {
                Some(nothing) => outcome.skipped.push(nothing.to_string()),
                None => return Err(e),
            },
        }
    }
    Ok(outcome)
}
