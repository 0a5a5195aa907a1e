//! Labelled sentence and sentence-pair tasks read from TSV files, each through one task
//! description: which columns hold the label and the sentence(s), whether there is a header
//! row, what the labels are (class names, integer ids, or a real-valued score) and the metric.
//! The bundled GLUE tasks are described by `fixtures/glue/*.toml` (SST-2 by
//! `fixtures/sst2/sst2.toml`); `--train/--dev` files without a description are repdef's simple
//! format: a header row, then `label<TAB>text` or `label<TAB>a<TAB>b` with integer labels.
//! A malformed row is an error naming the file and line, never silently skipped, because a
//! dropped row changes the task.

use super::metrics::Metric;
use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The class id (classification) or the score (regression).
    pub target: f64,
    pub text: String,
    /// The second sentence of a sentence-pair task.
    pub pair: Option<String>,
}

/// What a label column holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    /// Class names, in id order (`["entailment", "not_entailment"]`).
    Names(Vec<String>),
    /// `"integers"`: class ids 0, 1, … written as numbers; `"score"`: a real number (regression).
    Kind(LabelKind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelKind {
    Integers,
    Score,
}

/// How a task's TSV files are laid out and scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Format {
    /// Whether the first row is a header.
    pub header: bool,
    /// 0-based column of the label.
    pub label_column: usize,
    /// 0-based columns of the sentence, or of the two sentences of a pair.
    pub text_columns: Vec<usize>,
    pub labels: Labels,
    pub metric: Metric,
}

/// What the model predicts for a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// One of this many classes (cross-entropy).
    Classes(usize),
    /// A real-valued score (mean squared error).
    Score,
}

impl Head {
    /// Outputs of the classifier's last layer.
    pub fn outputs(self) -> usize {
        match self {
            Head::Classes(n) => n,
            Head::Score => 1,
        }
    }
}

/// A task: a name, where its train and dev splits live, and their format (`None`: repdef's
/// simple format, columns taken from the header).
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub name: String,
    pub train: PathBuf,
    pub dev: PathBuf,
    pub format: Option<Format>,
}

/// A task description file (`fixtures/glue/*.toml`); paths are relative to the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    name: String,
    train: PathBuf,
    dev: PathBuf,
    #[serde(flatten)]
    format: Format,
}

/// A task's examples.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub head: Head,
    pub metric: Metric,
}

/// The bundled tasks: name, description file (relative to the repository root, like the bundled
/// corpus: [`crate::bundled`]; its data paths are relative to it) and the description, built
/// into the binary.
pub const BUNDLED_TASKS: [(&str, &str, &str); 4] = [
    ("sst2", "fixtures/sst2/sst2.toml", include_str!("../../fixtures/sst2/sst2.toml")),
    ("cola", "fixtures/glue/cola.toml", include_str!("../../fixtures/glue/cola.toml")),
    ("rte", "fixtures/glue/rte.toml", include_str!("../../fixtures/glue/rte.toml")),
    ("stsb", "fixtures/glue/stsb.toml", include_str!("../../fixtures/glue/stsb.toml")),
];

impl Task {
    /// A bundled task by name, or the task described by a `.toml` file.
    pub fn named(name: &str) -> Result<Task> {
        if name.ends_with(".toml") {
            let path = Path::new(name);
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            return Task::from_description(&text, path);
        }
        match BUNDLED_TASKS.iter().find(|(bundled, _, _)| *bundled == name) {
            Some((_, path, text)) => Task::from_description(text, &crate::bundled::bundled(path)?),
            None => {
                let names: Vec<&str> = BUNDLED_TASKS.iter().map(|(n, _, _)| *n).collect();
                bail!("unknown task {name:?}: the bundled ones are {}; give a task description FILE.toml, or --train FILE --dev FILE", names.join(", "))
            }
        }
    }

    /// The task the description `text` of the file at `path` names.
    fn from_description(text: &str, path: &Path) -> Result<Task> {
        let file: TaskFile = crate::fsutil::parse_toml(text, path)?;
        let format = file.format;
        ensure!((1..=2).contains(&format.text_columns.len()), "{}: text_columns must name one or two columns", path.display());
        ensure!(
            !format.text_columns.contains(&format.label_column),
            "{}: label_column {} is also a text column: the label would be part of the input",
            path.display(),
            format.label_column
        );
        if let Labels::Names(names) = &format.labels {
            ensure!(names.len() >= 2, "{}: a classification task needs at least two label names", path.display());
        }
        let classes = !matches!(format.labels, Labels::Kind(LabelKind::Score));
        ensure!(
            classes == (format.metric != Metric::PearsonSpearman),
            "{}: metric {} does not fit labels {:?}",
            path.display(),
            format.metric.name(),
            format.labels
        );
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Task { name: file.name, train: base.join(file.train), dev: base.join(file.dev), format: Some(format) })
    }

    /// A task in repdef's simple format.
    pub fn from_files(name: &str, train: PathBuf, dev: PathBuf) -> Task {
        Task { name: name.to_string(), train, dev, format: None }
    }

    /// Reads both splits; classification labels of dev must be among those of train.
    pub fn load(&self) -> Result<Splits> {
        let (train, format) = read_examples(&self.train, self.format.as_ref())?;
        let (dev, dev_format) = read_examples(&self.dev, self.format.as_ref())?;
        ensure!(
            format.text_columns.len() == dev_format.text_columns.len(),
            "{} and {} disagree on single sentences vs sentence pairs",
            self.train.display(),
            self.dev.display()
        );
        let head = match &format.labels {
            Labels::Kind(LabelKind::Score) => Head::Score,
            Labels::Names(names) => Head::Classes(names.len()),
            Labels::Kind(LabelKind::Integers) => {
                let n = train.iter().map(|e| e.target as usize + 1).max().unwrap_or(0);
                ensure!(n >= 2, "{}: every label is 0; a classification task needs at least two labels", self.train.display());
                let mut seen = vec![false; n];
                train.iter().for_each(|e| seen[e.target as usize] = true);
                let unseen: Vec<String> = (0..n).filter(|&label| !seen[label]).map(|label| label.to_string()).collect();
                ensure!(
                    unseen.is_empty(),
                    "{}: the labels run up to {} but no example has label {}: integer labels are the classes 0, 1, …, n−1, each with examples",
                    self.train.display(),
                    n - 1,
                    unseen.join(", ")
                );
                Head::Classes(n)
            }
        };
        if let Head::Classes(n) = head {
            if let Some(i) = dev.iter().position(|e| e.target as usize >= n) {
                let line = i + 1 + usize::from(format.header);
                bail!("{} line {line}: label {} is outside the training labels 0..{} of {}", self.dev.display(), dev[i].target, n - 1, self.train.display());
            }
        }
        Ok(Splits { train, dev, head, metric: format.metric })
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

    /// The targets of `examples`, for scoring.
    pub fn targets(examples: &[Example]) -> Vec<f64> {
        examples.iter().map(|e| e.target).collect()
    }
}

/// Reads a file in repdef's simple format (a header row naming 2 or 3 columns, then
/// `label<TAB>text` or `label<TAB>a<TAB>b` rows with integer labels).
pub fn read_tsv(path: &Path) -> Result<Vec<Example>> {
    Ok(read_examples(path, None)?.0)
}

/// Reads `path` in `format`, or in the simple format its header announces; returns the examples
/// and the format used. Tolerates CRLF line endings and a missing final newline.
fn read_examples(path: &Path, format: Option<&Format>) -> Result<(Vec<Example>, Format)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let at = |n: usize| format!("{} line {n}", path.display());
    let text = |n: usize, raw: &'_ [u8]| -> Result<String> {
        String::from_utf8(raw.to_vec()).map_err(|e| anyhow::anyhow!("{}: not valid UTF-8 (bad byte at column {})", at(n), e.utf8_error().valid_up_to() + 1))
    };
    ensure!(!lines.is_empty(), "{}: empty file (expected a header row, then label<TAB>text rows)", path.display());
    // With a header, every row must have its number of columns.
    let (format, columns) = match format {
        Some(format) if format.header => (format.clone(), Some(text(1, lines[0])?.split('\t').count())),
        Some(format) => (format.clone(), None),
        None => {
            let n = header_columns(&text(1, lines[0])?).with_context(|| at(1))?;
            let simple =
                Format { header: true, label_column: 0, text_columns: (1..n).collect(), labels: Labels::Kind(LabelKind::Integers), metric: Metric::Accuracy };
            (simple, Some(n))
        }
    };
    let first = usize::from(format.header);
    let examples = lines[first..]
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_row(&text(i + 1 + first, raw)?, &format, columns).with_context(|| at(i + 1 + first)))
        .collect::<Result<Vec<_>>>()?;
    ensure!(!examples.is_empty(), "{}: no examples{}", path.display(), if format.header { " after the header row" } else { "" });
    Ok((examples, format))
}

/// The number of columns a simple-format header announces (2 or 3); a header that looks like
/// data is an error, since treating it as one would silently drop the first example.
fn header_columns(header: &str) -> Result<usize> {
    let fields: Vec<&str> = header.split('\t').collect();
    ensure!(fields.len() == 2 || fields.len() == 3, "the header has {} tab-separated columns; expected label<TAB>text or label<TAB>a<TAB>b", fields.len());
    ensure!(fields[0].trim().parse::<u32>().is_err(), "expected a header row (e.g. label<TAB>sentence) but found a data row");
    Ok(fields.len())
}

fn parse_row(line: &str, format: &Format, columns: Option<usize>) -> Result<Example> {
    let fields: Vec<&str> = line.split('\t').collect();
    if let Some(n) = columns {
        ensure!(fields.len() == n, "expected {n} tab-separated columns like the header, found {}", fields.len());
    }
    let needed = format.text_columns.iter().chain([&format.label_column]).max().map_or(0, |c| c + 1);
    ensure!(fields.len() >= needed, "the task's columns reach column {needed} (counting from 1), but the row has {} tab-separated columns", fields.len());
    let label = fields[format.label_column].trim();
    let target = match &format.labels {
        Labels::Kind(LabelKind::Integers) => label.parse::<u32>().with_context(|| format!("label {label:?} is not an integer 0, 1, …"))? as f64,
        Labels::Kind(LabelKind::Score) => {
            let score: f64 = label.parse().with_context(|| format!("score {label:?} is not a number"))?;
            ensure!(score.is_finite(), "score {label:?} is not a finite number");
            score
        }
        Labels::Names(names) => names.iter().position(|n| n == label).with_context(|| format!("label {label:?} is not one of {}", names.join(", ")))? as f64,
    };
    let sentence = |column: usize| -> Result<String> {
        let s = fields[column].trim();
        ensure!(!s.is_empty(), "column {} (text) is empty", column + 1);
        Ok(s.to_string())
    };
    let text = sentence(format.text_columns[0])?;
    let pair = format.text_columns.get(1).map(|&c| sentence(c)).transpose()?;
    Ok(Example { target, text, pair })
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
        assert_eq!(single, vec![Example { target: 1.0, text: "good film".into(), pair: None }, Example { target: 0.0, text: "bad one".into(), pair: None },]);
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
    fn dev_labels_must_be_known_from_train_and_every_class_present() {
        let dir = tempfile::tempdir().unwrap();
        let (train, dev) = (dir.path().join("train.tsv"), dir.path().join("dev.tsv"));
        std::fs::write(&train, "label\ttext\n0\ta\n1\tb\n").unwrap();
        std::fs::write(&dev, "label\ttext\n1\ta\n2\tb\n").unwrap();
        let message = format!("{:#}", Task::from_files("t", train.clone(), dev.clone()).load().unwrap_err());
        assert!(message.contains("dev.tsv line 3: label 2 is outside the training labels 0..1"), "{message}");

        // Labels 1 and 2 (a 1-based file) would silently train a third, empty class 0.
        std::fs::write(&train, "label\ttext\n1\ta\n2\tb\n").unwrap();
        let message = format!("{:#}", Task::from_files("t", train, dev).load().unwrap_err());
        assert!(message.contains("train.tsv: the labels run up to 2 but no example has label 0"), "{message}");
    }

    #[test]
    fn bundled_glue_tasks_load_with_their_official_sizes_heads_and_metrics() {
        let expected = [
            ("cola", 8_551, 1_043, Head::Classes(2), Metric::Matthews, false),
            ("rte", 2_490, 277, Head::Classes(2), Metric::Accuracy, true),
            ("stsb", 5_749, 1_500, Head::Score, Metric::PearsonSpearman, true),
        ];
        for (name, n_train, n_dev, head, metric, pairs) in expected {
            let splits = Task::named(name).unwrap().load().unwrap();
            assert_eq!((splits.train.len(), splits.dev.len(), splits.head, splits.metric), (n_train, n_dev, head, metric), "{name}");
            assert!(splits.train.iter().all(|e| e.pair.is_some() == pairs), "{name}");
        }
        // GLUE's published label counts (fixtures/glue/README.md).
        let count = |examples: &[Example], class: f64| examples.iter().filter(|e| e.target == class).count();
        let cola = Task::named("cola").unwrap().load().unwrap();
        assert_eq!((count(&cola.train, 1.0), count(&cola.train, 0.0)), (6_023, 2_528));
        let rte = Task::named("rte").unwrap().load().unwrap();
        assert_eq!((count(&rte.dev, 0.0), count(&rte.dev, 1.0)), (146, 131), "entailment is class 0");
        let stsb = Task::named("stsb").unwrap().load().unwrap();
        assert_eq!(stsb.train[0], Example { target: 5.0, text: "A plane is taking off.".into(), pair: Some("An air plane is taking off.".into()) });
    }

    #[test]
    fn task_descriptions_are_checked_and_bad_labels_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        write("t.tsv", "id\tsentence\tverdict\n0\tgood\tyes\n1\tbad\tmaybe\n");
        let description = |labels: &str, metric: &str| {
            format!("name = \"t\"\ntrain = \"t.tsv\"\ndev = \"t.tsv\"\nheader = true\nlabel_column = 2\ntext_columns = [1]\nlabels = {labels}\nmetric = \"{metric}\"\n")
        };
        let task = Task::named(write("ok.toml", &description("[\"no\", \"yes\"]", "accuracy")).to_str().unwrap()).unwrap();
        let error = format!("{:#}", task.load().unwrap_err());
        assert!(error.contains("t.tsv line 3: label \"maybe\" is not one of no, yes"), "{error}");
        let mismatch = Task::named(write("bad.toml", &description("\"score\"", "accuracy")).to_str().unwrap()).unwrap_err().to_string();
        assert!(mismatch.contains("bad.toml: metric accuracy does not fit labels"), "{mismatch}");
        let unknown = Task::named("mnli").unwrap_err().to_string();
        assert!(unknown.contains("sst2, cola, rte, stsb"), "{unknown}");
        let beyond =
            Task::named(write("beyond.toml", &description(r#"["no", "yes"]"#, "accuracy").replace("label_column = 2", "label_column = 7")).to_str().unwrap());
        let error = format!("{:#}", beyond.unwrap().load().unwrap_err());
        assert!(error.contains("t.tsv line 2: the task's columns reach column 8 (counting from 1), but the row has 3"), "{error}");
        // The parser points at no line for a key of the flattened format: none rather than line 1.
        let typo = description(r#"["no", "yes"]"#, "accuracy").replace("text_columns", "text_colums");
        let typo = Task::named(write("typo.toml", &typo).to_str().unwrap()).unwrap_err().to_string();
        assert!(typo.contains("typo.toml: ") && typo.contains("text_colum") && !typo.contains("line 1"), "{typo}");
        let leak = description(r#"["no", "yes"]"#, "accuracy").replace("text_columns = [1]", "text_columns = [2]");
        assert!(Task::named(write("leak.toml", &leak).to_str().unwrap()).unwrap_err().to_string().contains("label_column 2 is also a text column"));
    }

    #[test]
    fn bundled_sst2_loads_and_subsamples_reproducibly() {
        let mut splits = Task::named("sst2").unwrap().load().unwrap();
        assert_eq!((splits.train.len(), splits.dev.len(), splits.head), (67_349, 872, Head::Classes(2)));
        let mut again = splits.clone();
        splits.subsample_train(100, &mut Rng::new(3));
        again.subsample_train(100, &mut Rng::new(3));
        assert_eq!(splits.train.len(), 100);
        assert_eq!(splits.train, again.train);
    }
}
