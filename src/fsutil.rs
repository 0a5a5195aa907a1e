//! Crash-safe file output: write to a temporary sibling, then rename over the target, so a
//! reader never sees a half-written file that looks valid; and reading JSON and TOML files with
//! errors that name the file (and, for TOML, the line).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes).map_err(Into::into))
}

/// Lets `write` produce the file at a temporary path, then renames it to `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(Into::into));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Serialises `value` as pretty JSON to `path`, atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Parses the TOML `text` of the file at `path`; an error names the file, and the line where the
/// parser points at one (not where it points at a whole table or nowhere, as it does for keys
/// of a flattened section).
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let line = match e.span() {
            Some(span) if !span.is_empty() && line_of(span.start) == line_of(span.end - 1) => format!("line {}: ", line_of(span.start)),
            _ => String::new(),
        };
        anyhow::anyhow!("{}: {line}{}", path.display(), e.message())
    })
}

/// Reads and parses a JSON file, naming it in every error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid contents", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A number written and read back is the same number: fine-tuning grids and reports re-read
    /// the scores their points wrote (serde_json's default parser was off by one unit in the
    /// last place for this CoLA score, so a re-rendered report changed its last digit).
    #[test]
    fn json_floats_survive_a_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.json");
        let scores = vec![-0.023156201795729782_f64, 0.09503710798947955, 1.0 / 3.0, 6.669243236256963, f64::MIN_POSITIVE];
        write_json_atomic(&path, &scores).unwrap();
        let read: Vec<f64> = read_json(&path).unwrap();
        assert_eq!(read.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), scores.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
}
