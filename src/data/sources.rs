//! The inputs of a corpus: each file with what a document is in it and what of it is held out
//! ([`CorpusFile`]), and the bundle manifest (`fixtures/corpus/bundle.toml`) that lists them for
//! the bundled corpus, so its train/holdout split is written down in one place.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::documents::DocumentRule;

/// The bundled corpus's manifest, relative to the repository root.
pub const BUNDLE_MANIFEST: &str = "fixtures/corpus/bundle.toml";

/// What of one file is held out from tokenizer and model training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldoutRule {
    /// Everything trains.
    None,
    /// The whole file is held out.
    Whole,
    /// The last fraction of the file's documents (rounded, at least one, leaving at least one);
    /// of its lines when the file is a single document.
    Tail(f64),
}

/// One input file of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusFile {
    pub path: PathBuf,
    /// A label for counts in `meta.json` (`novels`, `sotu`, or the file's name).
    pub source: String,
    pub documents: DocumentRule,
    pub holdout: HoldoutRule,
}

impl CorpusFile {
    /// A file given on the command line: documents by [`DocumentRule::Auto`], labelled by name.
    pub fn plain(path: PathBuf, holdout: HoldoutRule) -> Self {
        let source = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Self { path, source, documents: DocumentRule::Auto, holdout }
    }
}

/// Splits one file's documents into (train, holdout) by `rule`.
pub fn apply_holdout(path: &Path, mut docs: Vec<String>, rule: HoldoutRule) -> Result<(Vec<String>, Vec<String>)> {
    match rule {
        HoldoutRule::None => Ok((docs, vec![])),
        HoldoutRule::Whole => Ok((vec![], docs)),
        HoldoutRule::Tail(frac) => {
            let named = || format!("{}: holdout tail", path.display());
            if docs.len() == 1 {
                let lines: Vec<&str> = docs[0].lines().collect();
                let n = tail_count(lines.len(), frac, "line").with_context(named)?;
                let (train, holdout) = lines.split_at(lines.len() - n);
                return Ok((vec![train.join("\n")], vec![holdout.join("\n")]));
            }
            let n = tail_count(docs.len(), frac, "document").with_context(named)?;
            let holdout = docs.split_off(docs.len() - n);
            Ok((docs, holdout))
        }
    }
}

/// How many of `n` documents (or lines) a tail holdout of `frac` takes: rounded, at least one,
/// and leaving at least one. A contiguous tail rather than a random sample: no RNG, and the
/// held-out text is a stretch that neither the tokenizer nor the model ever trains on.
pub fn tail_count(n: usize, frac: f64, unit: &str) -> Result<usize> {
    ensure!(frac > 0.0 && frac < 1.0, "holdout fraction must be strictly between 0 and 1, got {frac}");
    let k = ((n as f64 * frac).round() as usize).max(1);
    if k >= n {
        bail!(
            "{n} {unit}(s) cannot be split into training and holdout text with holdout fraction {frac}: \
             give more text or a smaller holdout fraction"
        );
    }
    Ok(k)
}

/// `bundle.toml`: sources, each a list of files (or every file of a folder) sharing one
/// document rule and holdout policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    source: Vec<Source>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    name: String,
    /// Files, relative to the manifest's folder.
    #[serde(default)]
    files: Vec<String>,
    /// A folder (relative to the manifest's folder) whose every file belongs to the source, in name order.
    dir: Option<String>,
    #[serde(default)]
    documents: DocumentRule,
    /// Files of this source (names as listed, or as found in `dir`) held out whole.
    #[serde(default)]
    holdout_files: Vec<String>,
    /// The last fraction of every other file's documents is held out.
    holdout_tail: Option<f64>,
}

/// Reads a bundle manifest into its files, in manifest order (sources, then files).
pub fn read_bundle(manifest: &Path) -> Result<Vec<CorpusFile>> {
    let text = fs::read_to_string(manifest).with_context(|| format!("reading corpus manifest {}", manifest.display()))?;
    let bundle: Bundle = toml::from_str(&text).with_context(|| format!("parsing corpus manifest {}", manifest.display()))?;
    let root = manifest.parent().unwrap_or(Path::new("."));
    let mut files = Vec::new();
    for source in bundle.source {
        files.extend(source_files(root, &source).with_context(|| format!("{}: source `{}`", manifest.display(), source.name))?);
    }
    ensure!(!files.is_empty(), "{}: lists no files", manifest.display());
    Ok(files)
}

fn source_files(root: &Path, source: &Source) -> Result<Vec<CorpusFile>> {
    let mut names = source.files.clone();
    if let Some(dir) = &source.dir {
        let folder = root.join(dir);
        let mut found: Vec<String> = fs::read_dir(&folder)
            .with_context(|| format!("listing {}", folder.display()))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", folder.display()))?;
        found.sort();
        names.extend(found.into_iter().map(|n| format!("{dir}/{n}")));
    }
    ensure!(!names.is_empty(), "no files (give `files` or `dir`)");
    for held in &source.holdout_files {
        ensure!(names.iter().any(|n| n == held || n.rsplit('/').next() == Some(held.as_str())), "holdout file `{held}` is not one of the source's files");
    }
    let tail = source.holdout_tail.map_or(HoldoutRule::None, HoldoutRule::Tail);
    Ok(names
        .iter()
        .map(|name| {
            let whole = source.holdout_files.iter().any(|h| h == name || name.rsplit('/').next() == Some(h.as_str()));
            CorpusFile {
                path: root.join(name),
                source: source.name.clone(),
                documents: source.documents,
                holdout: if whole { HoldoutRule::Whole } else { tail },
            }
        })
        .collect())
}

/// The files `repdef prepare` was given: a manifest's, then `inputs` (training), then
/// `holdout` (held out whole), the last two with documents by [`DocumentRule::Auto`].
pub fn command_line_files(manifest: Option<&Path>, inputs: Vec<PathBuf>, holdout: Vec<PathBuf>) -> Result<Vec<CorpusFile>> {
    let mut files = match manifest {
        Some(path) => read_bundle(path)?,
        None => vec![],
    };
    files.extend(inputs.into_iter().map(|p| CorpusFile::plain(p, HoldoutRule::None)));
    files.extend(holdout.into_iter().map(|p| CorpusFile::plain(p, HoldoutRule::Whole)));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("doc {i}")).collect()
    }

    #[test]
    fn holdout_rules_split_documents_or_the_lines_of_one() {
        let p = Path::new("f.txt");
        assert_eq!(apply_holdout(p, docs(3), HoldoutRule::None).unwrap(), (docs(3), vec![]));
        assert_eq!(apply_holdout(p, docs(3), HoldoutRule::Whole).unwrap(), (vec![], docs(3)));
        let (train, holdout) = apply_holdout(p, docs(40), HoldoutRule::Tail(0.05)).unwrap();
        assert_eq!((train, holdout), (docs(38), vec!["doc 38".to_string(), "doc 39".to_string()]));
        let one = vec!["a\nb\nc\nd".to_string()];
        assert_eq!(apply_holdout(p, one, HoldoutRule::Tail(0.25)).unwrap(), (vec!["a\nb\nc".to_string()], vec!["d".to_string()]));
        let err = format!("{:#}", apply_holdout(p, vec!["a".into()], HoldoutRule::Tail(0.5)).unwrap_err());
        assert!(err.contains("f.txt") && err.contains("1 line(s)"), "{err}");
        assert!(format!("{:#}", apply_holdout(p, docs(3), HoldoutRule::Tail(1.0)).unwrap_err()).contains("between 0 and 1"));
    }

    #[test]
    fn bundle_lists_files_with_their_rules() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("books")).unwrap();
        for name in ["b.txt.gz", "a.txt.gz", "c.txt.gz"] {
            fs::write(dir.path().join("books").join(name), b"").unwrap();
        }
        let manifest = dir.path().join("bundle.toml");
        fs::write(
            &manifest,
            r#"
[[source]]
name = "books"
dir = "books"
documents = "file"
holdout_files = ["b.txt.gz"]

[[source]]
name = "speeches"
files = ["speeches.txt.gz"]
documents = "lines"
holdout_tail = 0.1
"#,
        )
        .unwrap();
        let files = read_bundle(&manifest).unwrap();
        let summary: Vec<(String, &str, DocumentRule, HoldoutRule)> =
            files.iter().map(|f| (f.path.strip_prefix(dir.path()).unwrap().display().to_string(), f.source.as_str(), f.documents, f.holdout)).collect();
        assert_eq!(
            summary,
            [
                ("books/a.txt.gz".to_string(), "books", DocumentRule::File, HoldoutRule::None),
                ("books/b.txt.gz".to_string(), "books", DocumentRule::File, HoldoutRule::Whole),
                ("books/c.txt.gz".to_string(), "books", DocumentRule::File, HoldoutRule::None),
                ("speeches.txt.gz".to_string(), "speeches", DocumentRule::Lines, HoldoutRule::Tail(0.1)),
            ]
        );

        fs::write(&manifest, "[[source]]\nname = \"x\"\nfiles = [\"a\"]\nholdout_files = [\"zz\"]\n").unwrap();
        let err = format!("{:#}", read_bundle(&manifest).unwrap_err());
        assert!(err.contains("bundle.toml") && err.contains("`zz` is not one of"), "{err}");
        fs::write(&manifest, "[[source]]\nname = \"x\"\nfile = [\"a\"]\n").unwrap();
        assert!(format!("{:#}", read_bundle(&manifest).unwrap_err()).contains("unknown field"));
    }

    #[test]
    fn the_bundled_manifest_reads_and_every_file_exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = read_bundle(&root.join(BUNDLE_MANIFEST)).unwrap();
        for f in &files {
            assert!(f.path.is_file(), "{} is listed but missing", f.path.display());
        }
        let whole = files.iter().filter(|f| f.holdout == HoldoutRule::Whole).count();
        assert!((4..=6).contains(&whole), "{whole} novels held out");
        let novels = files.iter().filter(|f| f.source == "novels").count();
        assert_eq!(novels, 98);
    }
}
