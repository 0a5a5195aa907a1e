//! A run's training curve: `metrics.csv` (written by `train::metrics`: step, kind, loss,
//! accuracy, lr, grad_norm, tokens_per_s, elapsed_s) read back, as an analysis records it and the
//! training figure draws it. Columns are found by name, so extra or reordered columns are fine;
//! only the four plotted ones are required.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsKind {
    /// A logged training step (loss on the training batch).
    Train,
    /// An evaluation on the holdout split.
    Eval,
}

/// One row of `metrics.csv`, the part the figures use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsPoint {
    pub step: u64,
    pub kind: MetricsKind,
    /// Mean cross-entropy over the masked (picked) positions, in nats.
    pub loss: f64,
    /// Top-1 accuracy at the masked positions, as a fraction.
    pub accuracy: f64,
}

const REQUIRED: [&str; 4] = ["step", "kind", "loss", "accuracy"];

/// Reads every row of a `metrics.csv`. Errors name the file, the line and what to do.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsPoint>> {
    let mut reader = csv::ReaderBuilder::new().from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = reader.headers().with_context(|| format!("{}: cannot read the header line", path.display()))?.clone();
    if header.is_empty() {
        bail!("{}: empty file, expected a header `step,kind,loss,accuracy,...` (is this a run's metrics.csv?)", path.display());
    }
    let mut columns = [0usize; 4];
    for (slot, name) in columns.iter_mut().zip(REQUIRED) {
        *slot = header.iter().position(|h| h.trim() == name).with_context(|| {
            format!("{}: no `{name}` column (header is `{}`); expected a repdef metrics.csv", path.display(), header.iter().collect::<Vec<_>>().join(","))
        })?;
    }
    let [step_col, kind_col, loss_col, accuracy_col] = columns;
    let mut points = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{}: malformed row", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |col: usize, name: &str| record.get(col).map(str::trim).with_context(|| format!("{}: line {line} has no `{name}` field", path.display()));
        let number = |col: usize, name: &str| -> Result<f64> {
            let text = field(col, name)?;
            text.parse().with_context(|| format!("{}: line {line}: `{name}` is not a number: {text:?}", path.display()))
        };
        let step_text = field(step_col, "step")?;
        let step = step_text.parse().with_context(|| format!("{}: line {line}: `step` is not a whole number: {step_text:?}", path.display()))?;
        let kind = match field(kind_col, "kind")? {
            "train" => MetricsKind::Train,
            "eval" => MetricsKind::Eval,
            other => bail!("{}: line {line}: unknown kind {other:?} (expected \"train\" or \"eval\")", path.display()),
        };
        points.push(MetricsPoint { step, kind, loss: number(loss_col, "loss")?, accuracy: number(accuracy_col, "accuracy")? });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<MetricsPoint>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(&path, text).unwrap();
        read_metrics(&path)
    }

    #[test]
    fn reads_the_trainer_format() {
        let points =
            read("step,kind,loss,accuracy,lr,grad_norm,tokens_per_s,elapsed_s\n10,train,7.1,0.05,0.0001,1.2,5000,1.0\n10,eval,7.0,0.06,,,,1.5\n").unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1], MetricsPoint { step: 10, kind: MetricsKind::Eval, loss: 7.0, accuracy: 0.06 });
    }

    #[test]
    fn reads_what_the_trainer_writes() {
        use crate::train::metrics::{MetricsLog, MetricsRow};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut log = MetricsLog::open(&path, None).unwrap();
        let row = |step, kind, loss, lr| MetricsRow { step, kind, loss, accuracy: 0.25, lr, grad_norm: lr, tokens_per_s: None, elapsed_s: 1.0 };
        log.write(&row(5, "train", 8.5, Some(1e-4))).unwrap();
        log.write(&row(5, "eval", 8.0, None)).unwrap();
        drop(log);
        let points = read_metrics(&path).unwrap();
        assert_eq!(points.iter().map(|p| (p.step, p.kind, p.loss)).collect::<Vec<_>>(), [(5, MetricsKind::Train, 8.5), (5, MetricsKind::Eval, 8.0)]);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |text: &str| format!("{:#}", read(text).unwrap_err());
        assert!(err("").contains("empty file"), "{}", err(""));
        assert!(err("step,kind,accuracy\n").contains("no `loss` column"));
        assert!(err("step,kind,loss,accuracy\n5,test,1,0\n").contains("line 2: unknown kind \"test\""));
        assert!(err("step,kind,loss,accuracy\n5,eval,abc,0\n").contains("line 2: `loss` is not a number"));
        assert!(err("step,kind,loss,accuracy\n-1,eval,1,0\n").contains("`step` is not a whole number"));
        let missing = tempfile::tempdir().unwrap().path().join("nope.csv");
        assert!(format!("{:#}", read_metrics(&missing).unwrap_err()).contains("nope.csv"));
    }

    #[test]
    fn nan_is_read_not_rejected() {
        let points = read("step,kind,loss,accuracy\n1,eval,NaN,0.1\n").unwrap();
        assert!(points[0].loss.is_nan());
    }
}
