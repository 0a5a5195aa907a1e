//! `metrics.csv`: one row per logged training step and per evaluation. On resume, rows written
//! after the checkpoint being resumed are dropped so the file matches an uninterrupted run.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "step,kind,loss,accuracy,lr,grad_norm,tokens_per_s,elapsed_s";

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

/// One row; `None` fields are left empty.
pub struct MetricsRow {
    pub step: u64,
    pub kind: &'static str,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub elapsed_s: f64,
}

impl MetricsLog {
    /// Creates the file, or (resuming) keeps only rows up to `resume_step`.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let mut kept = vec![HEADER.to_string()];
        if let Some(step) = resume_step {
            if let Ok(text) = std::fs::read_to_string(path) {
                kept.extend(text.lines().skip(1).filter(|line| row_step(line).is_some_and(|s| s <= step)).map(String::from));
            }
        }
        crate::fsutil::write_atomic(path, (kept.join("\n") + "\n").as_bytes())?;
        let file = File::options().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, row: &MetricsRow) -> Result<()> {
        let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
        writeln!(
            self.file,
            "{},{},{:.6},{:.6},{},{},{},{:.3}",
            row.step,
            row.kind,
            row.loss,
            row.accuracy,
            opt(row.lr),
            opt(row.grad_norm),
            opt(row.tokens_per_s),
            row.elapsed_s
        )
        .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn row_step(line: &str) -> Option<u64> {
    line.split(',').next()?.parse().ok()
}
