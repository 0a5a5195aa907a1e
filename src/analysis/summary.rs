//! The per-layer rank table of each model: var@0.9 (uncentred, the paper's measure) of each
//! group; "n/a" where a group does not exist. Printed after an analysis and shown in the report.

use super::tables::{paper_rank, RankRow};
use crate::extract::{Condition, Group};
use std::fmt::Write;

const COLUMNS: [(Condition, Group); 5] = [
    (Condition::Masked, Group::All),
    (Condition::Masked, Group::Real),
    (Condition::Masked, Group::Mask),
    (Condition::Clean, Group::All),
    (Condition::Clean, Group::Real),
];

/// Models in order of first appearance.
pub fn models(ranks: &[RankRow]) -> Vec<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for row in ranks {
        if !seen.contains(&row.model.as_str()) {
            seen.push(&row.model);
        }
    }
    seen
}

/// Header and rows (one per layer) of `model`'s table.
pub fn rank_table(ranks: &[RankRow], model: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut layers: Vec<usize> = ranks.iter().filter(|r| r.model == model).map(|r| r.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    let header = std::iter::once("layer".to_string()).chain(COLUMNS.iter().map(|(c, g)| format!("{c}/{g}"))).collect();
    let rows = layers
        .into_iter()
        .map(|layer| {
            std::iter::once(layer.to_string())
                .chain(COLUMNS.iter().map(|&(c, g)| paper_rank(ranks, model, c, g, layer).map_or("n/a".into(), |v| format!("{v:.0}"))))
                .collect()
        })
        .collect();
    (header, rows)
}

/// All models' tables as aligned text for the terminal.
pub fn render(ranks: &[RankRow]) -> String {
    let mut text = String::new();
    for model in models(ranks) {
        let (header, rows) = rank_table(ranks, model);
        let _ = writeln!(text, "{model}: var@0.9 effective rank (uncentred) by layer");
        for row in std::iter::once(&header).chain(&rows) {
            let _ = writeln!(text, "  {:>5}{}", row[0], row[1..].iter().map(|c| format!("{c:>13}")).collect::<String>());
        }
    }
    text
}
