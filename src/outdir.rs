//! Output directories: a command writes into (or replaces) a directory only when it is new,
//! empty, or marked as that command's own earlier output by its marker file (`manifest.json`
//! of an analysis, `meta.json` of a prepared corpus, …). It decides before doing any work and
//! never touches `.`, a parent of the working directory, a model directory or a directory of
//! files it does not recognise. A command that replaces its output as a whole also refuses an
//! earlier output that holds anything it would not write itself (a user's notes, the
//! fine-tuning results `reproduce` adds to its analysis). See STYLE.md, "Never delete what you
//! did not create".

use crate::checkpoint::{PYTORCH_WEIGHTS_FILE, WEIGHTS_FILE};
use crate::train::state::TRAIN_STATE_FILE;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Files that make a directory a model (a training run or a HuggingFace checkpoint).
const MODEL_FILES: [&str; 3] = [TRAIN_STATE_FILE, WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE];

/// Checks that `out` may receive the output of a command whose marker file is `marker`.
pub fn claim(out: &Path, marker: &str) -> Result<()> {
    let shown = out.display();
    if out.as_os_str().is_empty() {
        bail!("the output path is empty: name a new or empty directory");
    }
    let metadata = match std::fs::metadata(out) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
    };
    if !metadata.is_dir() {
        bail!("{shown} exists and is not a directory: choose another output path");
    }
    let here = std::env::current_dir().and_then(|d| d.canonicalize()).context("reading the working directory")?;
    if here.starts_with(out.canonicalize().with_context(|| format!("resolving {shown}"))?) {
        bail!("{shown} is the working directory or one of its parents: choose a new or empty output directory");
    }
    if let Some(file) = MODEL_FILES.iter().find(|f| out.join(f).exists()) {
        bail!("{shown} holds a model ({file}): choose another output directory");
    }
    if out.join(marker).is_file() {
        return Ok(());
    }
    if std::fs::read_dir(out).with_context(|| format!("reading {shown}"))?.next().is_some() {
        bail!("{shown} is not empty and holds no {marker} of an earlier output: refusing to overwrite it; choose a new or empty directory");
    }
    Ok(())
}

/// An output directory that its command replaces as a whole.
pub struct Replaceable {
    /// The file that marks the command's earlier output.
    pub marker: &'static str,
    /// What such a directory is, for messages ("an analysis").
    pub what: &'static str,
    /// Whether an entry (by name) belongs to such a directory: the command's own files and
    /// those other repdef commands derive from them in place. A leftover `NAME.tmp` of an
    /// interrupted atomic write of an entry belongs too.
    pub holds: fn(&str) -> bool,
}

/// [`claim`], and an earlier output must hold nothing but `dir`'s entries, since replacing it
/// deletes them all.
pub fn claim_replaceable(out: &Path, dir: &Replaceable) -> Result<()> {
    claim(out, dir.marker)?;
    if !out.join(dir.marker).is_file() {
        return Ok(());
    }
    for entry in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let name = entry.with_context(|| format!("reading {}", out.display()))?.file_name();
        let name = name.to_string_lossy();
        let belongs = |n: &str| (dir.holds)(n) || n.strip_suffix(".tmp").is_some_and(|n| (dir.holds)(n));
        if !belongs(&name) {
            bail!(
                "{} holds {name}, which is not part of {}: replacing the directory would delete it; move it away or choose another output directory",
                out.display(),
                dir.what
            );
        }
    }
    Ok(())
}

/// Builds an output directory as a whole: `write` fills a fresh staging directory beside `out`
/// (removed again if anything fails), which then replaces `out`. `out` is claimed before the
/// work and again before the replacement, since the work may take hours.
pub fn write_staged(out: &Path, dir: &Replaceable, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    claim_replaceable(out, dir)?;
    let name = out.file_name().with_context(|| format!("{}: the output path must end in a directory name", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    write(staging.path())?;
    claim_replaceable(out, dir)?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out).with_context(|| format!("moving {} to {}", staged.display(), out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "manifest.json";
    const OUTPUT: Replaceable = Replaceable { marker: MARKER, what: "a test output", holds: |name| [MARKER, "ranks.csv"].contains(&name) };

    fn refusal(out: &Path) -> String {
        claim(out, MARKER).unwrap_err().to_string()
    }

    #[test]
    fn new_empty_and_own_dirs_are_claimed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(claim(&dir.path().join("new"), MARKER).is_ok());
        assert!(claim(dir.path(), MARKER).is_ok());
        std::fs::write(dir.path().join(MARKER), "{}").unwrap();
        std::fs::write(dir.path().join("ranks.csv"), "").unwrap();
        assert!(claim(dir.path(), MARKER).is_ok());
    }

    #[test]
    fn foreign_model_file_and_ancestor_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(refusal(dir.path()).contains("holds no manifest.json"));
        assert!(refusal(&dir.path().join("notes.txt")).contains("not a directory"));
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join(MARKER), "{}").unwrap();
        std::fs::write(run.join(TRAIN_STATE_FILE), "{}").unwrap();
        assert!(refusal(&run).contains("holds a model"));
        assert!(refusal(Path::new(".")).contains("working directory"));
        assert!(refusal(Path::new("..")).contains("working directory"));
        assert!(refusal(Path::new("")).contains("empty"));
    }

    #[test]
    fn a_failed_write_leaves_the_old_output_and_no_staging_dir() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_staged(&out, &OUTPUT, |d| std::fs::write(d.join(MARKER), "old").map_err(Into::into)).unwrap();
        assert!(write_staged(&out, &OUTPUT, |_| bail!("boom")).is_err());
        assert_eq!(std::fs::read_to_string(out.join(MARKER)).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no staging dir left");
        write_staged(&out, &OUTPUT, |d| std::fs::write(d.join(MARKER), "new").map_err(Into::into)).unwrap();
        assert_eq!(std::fs::read_to_string(out.join(MARKER)).unwrap(), "new");
    }

    #[test]
    fn an_earlier_output_holding_anything_else_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_staged(&out, &OUTPUT, |d| std::fs::write(d.join(MARKER), "old").map_err(Into::into)).unwrap();
        // Its own files and a leftover of an interrupted atomic write of one are replaced.
        std::fs::write(out.join("ranks.csv"), "").unwrap();
        std::fs::write(out.join("ranks.csv.tmp"), "").unwrap();
        assert!(claim_replaceable(&out, &OUTPUT).is_ok());
        // Anything else stops the replacement, before the work and after it.
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let refusal = claim_replaceable(&out, &OUTPUT).unwrap_err().to_string();
        assert!(refusal.contains("holds notes.txt, which is not part of a test output"), "{refusal}");
        assert!(write_staged(&out, &OUTPUT, |_| panic!("worked on a dir it cannot replace")).is_err());
        std::fs::remove_file(out.join("notes.txt")).unwrap();
        let late = out.clone();
        let outcome = write_staged(&out, &OUTPUT, |d| {
            std::fs::create_dir(late.join("mine"))?;
            std::fs::write(d.join(MARKER), "new").map_err(Into::into)
        });
        assert!(outcome.unwrap_err().to_string().contains("holds mine"));
        assert_eq!(std::fs::read_to_string(out.join(MARKER)).unwrap(), "old");
        assert!(out.join("mine").is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no staging dir left");
    }
}
