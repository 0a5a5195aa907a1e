//! `repdef check`: did dimension utilisation regress? Compares a ranks table with a baseline
//! row by row (model, condition, group, layer, estimator, centring); a row regresses when its
//! value dropped by more than the tolerance, or disappeared. Increases never fail. A baseline
//! with no rows, or none in common with the current table, is refused: it would pass anything.

use crate::analysis::tables::{read_table, RankRow};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// How much a value may drop: absolute (`max_drop`) or relative (`rel_tol`, a fraction of the
/// baseline); both may be given per estimator (`"var@0.9=2"`) or for all (`"2"`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tolerances {
    absolute: BTreeMap<Option<String>, f64>,
    relative: BTreeMap<Option<String>, f64>,
}

fn parse_entries(entries: &[String], flag: &str) -> Result<BTreeMap<Option<String>, f64>> {
    let mut parsed = BTreeMap::new();
    for entry in entries {
        let (estimator, number) = match entry.split_once('=') {
            Some((e, n)) => {
                // Named as the tables name it, so that the rule applies to their rows.
                let estimator: crate::rank::Estimator = e.parse().with_context(|| format!("{flag} {entry:?}: unknown estimator {e:?}"))?;
                (Some(estimator.to_string()), n)
            }
            None => (None, entry.as_str()),
        };
        let value: f64 = number.parse().with_context(|| format!("{flag} {entry:?}: expected NUMBER or ESTIMATOR=NUMBER"))?;
        if !(value >= 0.0 && value.is_finite()) {
            bail!("{flag} {entry:?}: the tolerance must be a non-negative number");
        }
        if parsed.insert(estimator.clone(), value).is_some() {
            bail!("{flag} {entry:?}: a second tolerance for {}", estimator.as_deref().unwrap_or("every estimator"));
        }
    }
    Ok(parsed)
}

impl Tolerances {
    pub fn parse(max_drop: &[String], rel_tol: &[String]) -> Result<Self> {
        let tolerances = Tolerances { absolute: parse_entries(max_drop, "--max-drop")?, relative: parse_entries(rel_tol, "--rel-tol")? };
        if tolerances.absolute.is_empty() && tolerances.relative.is_empty() {
            return Ok(Tolerances { absolute: [(None, 0.0)].into(), relative: BTreeMap::new() });
        }
        Ok(tolerances)
    }

    /// The largest drop allowed from `baseline` for `estimator` (the most lenient rule that applies).
    fn allowed_drop(&self, estimator: &str, baseline: f64) -> f64 {
        let lookup = |map: &BTreeMap<Option<String>, f64>| map.get(&Some(estimator.to_string())).or_else(|| map.get(&None)).copied();
        let absolute = lookup(&self.absolute).unwrap_or(0.0);
        let relative = lookup(&self.relative).map_or(0.0, |r| r * baseline.abs());
        absolute.max(relative)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    pub row: RankRow,
    /// `None` when the row is missing from the current table.
    pub current: Option<f64>,
    pub allowed_drop: f64,
}

type RowKey = (String, String, String, usize, String, bool);

fn key(r: &RankRow) -> RowKey {
    (r.model.clone(), r.condition.clone(), r.group.clone(), r.layer, r.estimator.clone(), r.centred)
}

pub fn find_regressions(current: &[RankRow], baseline: &[RankRow], tolerances: &Tolerances) -> Vec<Regression> {
    let now: BTreeMap<RowKey, f64> = current.iter().map(|r| (key(r), r.value)).collect();
    baseline
        .iter()
        .filter_map(|base| {
            let allowed_drop = tolerances.allowed_drop(&base.estimator, base.value);
            let current = now.get(&key(base)).copied();
            let regressed = match current {
                None => true,
                // A NaN on either side is incomparable and counts as a regression.
                Some(value) => value.partial_cmp(&(base.value - allowed_drop)).is_none_or(|order| order.is_lt()),
            };
            regressed.then(|| Regression { row: base.clone(), current, allowed_drop })
        })
        .collect()
}

/// A ranks table: the file, or the `ranks.csv` of an analysis dir; each row's key once.
fn read_ranks(path: &Path) -> Result<(PathBuf, Vec<RankRow>)> {
    let path = if path.is_dir() { path.join(crate::analysis::RANKS_FILE) } else { path.to_path_buf() };
    let rows: Vec<RankRow> = read_table(&path)?;
    let mut seen = std::collections::BTreeSet::new();
    if let Some((i, _)) = rows.iter().enumerate().find(|(_, r)| !seen.insert(key(r))) {
        bail!("{}: row {} repeats an earlier row's model, condition, group, layer, estimator and centring", path.display(), i + 2);
    }
    Ok((path, rows))
}

/// Reads both tables (files, or analysis dirs) and compares them; returns the regressions and
/// the number of rows compared. Rows of one key must come from as many tokens on both sides:
/// ranks grow with the token count, so another count would hide or invent a regression.
pub fn check_files(current: &Path, baseline: &Path, tolerances: &Tolerances) -> Result<(Vec<Regression>, usize)> {
    let (baseline, baseline_rows) = read_ranks(baseline)?;
    let (current, current_rows) = read_ranks(current)?;
    ensure!(!baseline_rows.is_empty(), "{}: the baseline has no rows, so it would pass any table", baseline.display());
    let tokens: BTreeMap<RowKey, u64> = current_rows.iter().map(|r| (key(r), r.n_tokens)).collect();
    if let Some((base, now)) = baseline_rows.iter().find_map(|b| tokens.get(&key(b)).filter(|&&n| n != b.n_tokens).map(|&n| (b, n))) {
        bail!(
            "{}: {} {}/{} at layer {} was measured on {now} tokens, the baseline's ({}) on {}: rerun the analysis with the baseline's data.tokens",
            current.display(),
            base.model,
            base.condition,
            base.group,
            base.layer,
            baseline.display(),
            base.n_tokens
        );
    }
    let now: std::collections::BTreeSet<RowKey> = current_rows.iter().map(key).collect();
    ensure!(
        baseline_rows.iter().any(|r| now.contains(&key(r))),
        "{}: no row matches {} (other models, groups or estimators): wrong baseline?",
        baseline.display(),
        current.display()
    );
    Ok((find_regressions(&current_rows, &baseline_rows, tolerances), baseline_rows.len()))
}

/// The error `check` fails with when rows regressed: the only failure that exits with 1.
#[derive(Debug)]
pub struct Regressed {
    pub rows: usize,
    pub compared: usize,
    pub baseline: PathBuf,
}

impl std::fmt::Display for Regressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dimension utilisation regressed in {} of {} rows against {}", self.rows, self.compared, self.baseline.display())
    }
}

impl std::error::Error for Regressed {}

pub fn render(regressions: &[Regression], compared: usize) -> String {
    let mut text = String::new();
    if regressions.is_empty() {
        let _ = writeln!(text, "ok: {compared} rows compared, none regressed");
        return text;
    }
    let _ = writeln!(text, "{} of {compared} rows regressed:", regressions.len());
    let _ = writeln!(
        text,
        "  {:<14} {:<16} {:>5} {:<14} {:>8} {:>10} {:>10} {:>9}",
        "model", "condition/group", "layer", "estimator", "centred", "baseline", "current", "allowed"
    );
    for r in regressions {
        let current = r.current.map_or("missing".into(), |v| format!("{v:.3}"));
        let _ = writeln!(
            text,
            "  {:<14} {:<16} {:>5} {:<14} {:>8} {:>10.3} {:>10} {:>9.3}",
            r.row.model,
            format!("{}/{}", r.row.condition, r.row.group),
            r.row.layer,
            r.row.estimator,
            r.row.centred,
            r.row.value,
            current,
            r.allowed_drop
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layer: usize, estimator: &str, value: f64) -> RankRow {
        RankRow {
            model: "MLM".into(),
            condition: "clean".into(),
            group: "real".into(),
            layer,
            estimator: estimator.into(),
            centred: false,
            value,
            n_tokens: 100,
        }
    }

    #[test]
    fn a_table_passes_against_itself_and_fails_against_a_raised_baseline() {
        let table = vec![row(0, "var@0.9", 50.0), row(1, "entropy", 30.5)];
        let exact = Tolerances::parse(&[], &[]).unwrap();
        assert!(find_regressions(&table, &table, &exact).is_empty());
        let raised: Vec<RankRow> = table.iter().map(|r| RankRow { value: r.value + 3.0, ..r.clone() }).collect();
        assert_eq!(find_regressions(&table, &raised, &exact).len(), 2);
        let lenient = Tolerances::parse(&["2".into()], &[]).unwrap();
        assert_eq!(find_regressions(&table, &raised, &lenient).len(), 2);
        let per_estimator = Tolerances::parse(&["var@0.9=3".into()], &["entropy=0.1".into()]).unwrap();
        assert!(find_regressions(&table, &raised, &per_estimator).is_empty());
    }

    #[test]
    fn increases_pass_missing_rows_and_nan_fail() {
        let baseline = vec![row(0, "var@0.9", 50.0), row(1, "var@0.9", 50.0), row(2, "var@0.9", 50.0)];
        let current = vec![row(0, "var@0.9", 60.0), row(2, "var@0.9", f64::NAN)];
        let found = find_regressions(&current, &baseline, &Tolerances::parse(&[], &[]).unwrap());
        assert_eq!(found.iter().map(|r| r.row.layer).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(found[0].current, None);
        assert!(render(&found, 3).contains("missing"));
    }

    #[test]
    fn bad_tolerances_are_rejected() {
        assert!(Tolerances::parse(&["lots".into()], &[]).is_err());
        assert!(Tolerances::parse(&[], &["var@0.9=-1".into()]).is_err());
        let misspelt = Tolerances::parse(&["var@09=3".into()], &[]).unwrap_err().to_string();
        assert!(misspelt.contains("unknown estimator \"var@09\""), "{misspelt}");
        let twice = Tolerances::parse(&["2".into(), "3".into()], &[]).unwrap_err().to_string();
        assert!(twice.contains("a second tolerance for every estimator"), "{twice}");
        assert!(Tolerances::parse(&[], &["var@0.9=0.1".into(), "var@0.90=0.2".into()]).unwrap_err().to_string().contains("for var@0.9"));
    }
}
