//! The short per-layer table printed after an analysis: var@0.9 (uncentred, the paper's
//! measure) of each group, per model; "n/a" where a group does not exist.

use super::tables::{paper_rank, RankRow};
use crate::extract::{Condition, Group};
use std::collections::BTreeSet;
use std::fmt::Write;

const COLUMNS: [(Condition, Group); 5] = [
    (Condition::Masked, Group::All),
    (Condition::Masked, Group::Real),
    (Condition::Masked, Group::Mask),
    (Condition::Clean, Group::All),
    (Condition::Clean, Group::Real),
];

pub fn render(ranks: &[RankRow]) -> String {
    let models: BTreeSet<&str> = ranks.iter().map(|r| r.model.as_str()).collect();
    let mut text = String::new();
    for model in models {
        let layers: BTreeSet<usize> = ranks.iter().filter(|r| r.model == model).map(|r| r.layer).collect();
        let _ = writeln!(text, "{model}: var@0.9 effective rank (uncentred) by layer");
        let header: Vec<String> = COLUMNS.iter().map(|(c, g)| format!("{c}/{g}")).collect();
        let _ = writeln!(text, "  {:>5} {}", "layer", header.iter().map(|h| format!("{h:>12}")).collect::<String>());
        for layer in layers {
            let cells: String = COLUMNS
                .iter()
                .map(|&(c, g)| match paper_rank(ranks, model, c, g, layer) {
                    Some(v) => format!("{v:>12.0}"),
                    None => format!("{:>12}", "n/a"),
                })
                .collect();
            let _ = writeln!(text, "  {layer:>5} {cells}");
        }
    }
    text
}
