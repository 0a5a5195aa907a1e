//! Labelled text-classification tasks read from TSV files: `label<TAB>text` rows, or GLUE-style
//! sentence pairs `label<TAB>a<TAB>b`, after one header row; labels are integers 0..n_labels-1.
//! A malformed row is an error naming the file and line, never silently skipped, because a
//! dropped row changes the task.

use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub label: u32,
    pub text: String,
    /// The second sentence of a sentence-pair task.
    pub pair: Option<String>,
}

/// A task: a name and where its train and dev splits live.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: String,
    pub train: PathBuf,
    pub dev: PathBuf,
}

/// A task's examples.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    /// One more than the largest training label.
    pub n_labels: usize,
}

impl Task {
    /// The bundled tasks by name; paths are relative to the repository root, like the bundled corpus.
    pub fn named(name: &str) -> Result<Task> {
        match name {
            "sst2" => Ok(Task::from_files("sst2", "fixtures/sst2/train.tsv".into(), "fixtures/sst2/dev.tsv".into())),
            other => bail!("unknown task {other:?}: the bundled one is sst2; give --train FILE --dev FILE for others"),
        }
    }

    pub fn from_files(name: &str, train: PathBuf, dev: PathBuf) -> Task {
        Task { name: name.to_string(), train, dev }
    }

    /// Reads both splits; dev labels must occur in the label range of train.
    pub fn load(&self) -> Result<Splits> {
        let train = read_tsv(&self.train)?;
        let dev = read_tsv(&self.dev)?;
        let n_labels = train.iter().map(|e| e.label as usize + 1).max().unwrap_or(0);
        ensure!(n_labels >= 2, "{}: every label is 0; a classification task needs at least two labels", self.train.display());
        if let Some(i) = dev.iter().position(|e| e.label as usize >= n_labels) {
            bail!(
                "{} line {}: label {} is outside the training labels 0..{} of {}",
                self.dev.display(),
                i + 2,
                dev[i].label,
                n_labels - 1,
                self.train.display()
            );
        }
        let pairs = |examples: &[Example]| examples[0].pair.is_some();
        ensure!(pairs(&train) == pairs(&dev), "{} and {} disagree on single sentences vs sentence pairs", self.train.display(), self.dev.display());
        Ok(Splits { train, dev, n_labels })
    }
}

impl Splits {
    /// Keeps `n` training examples chosen uniformly by `rng` (in file order), or all if `n` is larger.
    pub fn subsample_train(&mut self, n: usize, rng: &mut Rng) {
        if n >= self.train.len() {
            return;
        }
        let mut indices: Vec<usize> = (0..self.train.len()).collect();
        let mut chosen = rng.choose_distinct(&mut indices, n).to_vec();
        chosen.sort_unstable();
        self.train = chosen.into_iter().map(|i| self.train[i].clone()).collect();
    }
}

/// Reads a TSV file: a header row naming 2 (label, text) or 3 (label, a, b) columns, then
/// one example per line. Tolerates CRLF line endings and a final newline.
pub fn read_tsv(path: &Path) -> Result<Vec<Example>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let at = |n: usize| format!("{} line {n}", path.display());
    let text = |n: usize, raw: &'_ [u8]| -> Result<String> {
        String::from_utf8(raw.to_vec()).map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 (bad byte at column {})", at(n), e.utf8_error().valid_up_to() + 1))
    };
    let header = text(1, lines.first().with_context(|| format!("{}: empty file (expected a header row, then label<TAB>text rows)", path.display()))?)?;
    let n_columns = header_columns(&header).with_context(|| at(1))?;
    let examples =
        lines[1..].iter().enumerate().map(|(i, raw)| parse_row(&text(i + 2, raw)?, n_columns).with_context(|| at(i + 2))).collect::<Result<Vec<_>>>()?;
    ensure!(!examples.is_empty(), "{}: no examples after the header row", path.display());
    Ok(examples)
}

/// The number of columns a header announces (2 or 3); a header that looks like data is an error,
/// since treating it as one would silently drop the first example.
fn header_columns(header: &str) -> Result<usize> {
    let fields: Vec<&str> = header.split('\t').collect();
    ensure!(fields.len() == 2 || fields.len() == 3, "the header has {} tab-separated columns; expected label<TAB>text or label<TAB>a<TAB>b", fields.len());
    ensure!(fields[0].trim().parse::<u32>().is_err(), "expected a header row (e.g. label<TAB>sentence) but found a data row");
    Ok(fields.len())
}

fn parse_row(line: &str, n_columns: usize) -> Result<Example> {
    let fields: Vec<&str> = line.split('\t').collect();
    ensure!(fields.len() == n_columns, "expected {n_columns} tab-separated columns like the header, found {}", fields.len());
    let label = fields[0].trim();
    let label: u32 = label.parse().with_context(|| format!("label {label:?} is not an integer 0, 1, …"))?;
    let sentence = |i: usize| -> Result<String> {
        let s = fields[i].trim();
        ensure!(!s.is_empty(), "column {} (text) is empty", i + 1);
        Ok(s.to_string())
    };
    Ok(Example { label, text: sentence(1)?, pair: if n_columns == 3 { Some(sentence(2)?) } else { None } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8]) -> Result<Vec<Example>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task.tsv");
        std::fs::write(&path, content).unwrap();
        read_tsv(&path)
    }

    fn error(content: &[u8]) -> String {
        format!("{:#}", read(content).unwrap_err())
    }

    #[test]
    fn reads_single_sentences_and_pairs_with_crlf() {
        let single = read(b"label\tsentence\r\n1\tgood film\r\n0\t bad one \r\n").unwrap();
        assert_eq!(single, vec![Example { label: 1, text: "good film".into(), pair: None }, Example { label: 0, text: "bad one".into(), pair: None },]);
        let pairs = read(b"label\ta\tb\n2\tit rains\tthe street is wet").unwrap();
        assert_eq!(pairs[0].pair.as_deref(), Some("the street is wet"));
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let cases: [(&[u8], &str); 6] = [
            (b"label\ttext\n1\tok\n1\ta\tb\n", "line 3: expected 2 tab-separated columns"),
            (b"label\ttext\n1\tok\nx\tno\n", "line 3: label \"x\" is not an integer"),
            (b"label\ttext\n-1\tno\n", "line 2: label \"-1\""),
            (b"label\ttext\n1\t  \n", "line 2: column 2 (text) is empty"),
            (b"label\ttext\n1\tok\n0\tcaf\xe9\n", "line 3: not valid UTF-8 (bad byte at column 6)"),
            (b"1\tgood\n0\tbad\n", "line 1: expected a header row"),
        ];
        for (content, needle) in cases {
            let message = error(content);
            assert!(message.contains("task.tsv") && message.contains(needle), "{message:?} lacks {needle:?}");
        }
        assert!(error(b"").contains("empty file"));
        assert!(error(b"label\ttext\n").contains("no examples"));
    }

    #[test]
    fn dev_labels_must_be_known_from_train() {
        let dir = tempfile::tempdir().unwrap();
        let (train, dev) = (dir.path().join("train.tsv"), dir.path().join("dev.tsv"));
        std::fs::write(&train, "label\ttext\n0\ta\n1\tb\n").unwrap();
        std::fs::write(&dev, "label\ttext\n1\ta\n2\tb\n").unwrap();
        let message = format!("{:#}", Task::from_files("t", train, dev).load().unwrap_err());
        assert!(message.contains("dev.tsv line 3: label 2 is outside the training labels 0..1"), "{message}");
    }

    #[test]
    fn bundled_sst2_loads_and_subsamples_reproducibly() {
        let mut splits = Task::named("sst2").unwrap().load().unwrap();
        assert_eq!((splits.train.len(), splits.dev.len(), splits.n_labels), (67_349, 872, 2));
        let mut again = splits.clone();
        splits.subsample_train(100, &mut Rng::new(3));
        again.subsample_train(100, &mut Rng::new(3));
        assert_eq!(splits.train.len(), 100);
        assert_eq!(splits.train, again.train);
    }
}
