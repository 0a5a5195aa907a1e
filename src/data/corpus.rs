//! `repdef prepare`: text files → documents → train/holdout split → tokenizer → token-id files,
//! and the on-disk format of a prepared corpus directory:
//!
//! - `tokenizer.json`: the HF tokenizer that produced the ids (always shipped: training is not
//!   deterministic, see `tokenizer.rs`);
//! - `train.bin`, `holdout.bin`: little-endian `u32` ids, each document's ids (no special tokens)
//!   followed by one `[SEP]` id as document separator;
//! - `meta.json` ([`CorpusMeta`]): provenance and counts, written last, so a directory without it
//!   is an unfinished `prepare`.
//!
//! The directory is built under a temporary name and renamed into place; it replaces only an
//! earlier prepared directory (one with a `meta.json`), checked before any work (`crate::outdir`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::tokenizer::{load_tokenizer, train_wordpiece, SpecialIds, SPECIAL_TOKENS};
use crate::fsutil::write_atomic;

/// Bumped whenever the files of a prepared directory change meaning.
pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_VOCAB_SIZE: usize = 8192;
pub const DEFAULT_HOLDOUT_FRAC: f64 = 0.1;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const META_FILE: &str = "meta.json";
pub const TRAIN_FILE: &str = "train.bin";
pub const HOLDOUT_FILE: &str = "holdout.bin";

/// What `repdef prepare` was asked to do.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Requested vocabulary size, special tokens included (ignored with `tokenizer`).
    pub vocab_size: usize,
    /// Lowercase and strip accents before training (ignored with `tokenizer`).
    pub lowercase: bool,
    /// Fraction of documents, taken from the end, held out from training.
    pub holdout_frac: f64,
    /// Reuse this HF `tokenizer.json` instead of training one.
    pub tokenizer: Option<PathBuf>,
}

impl PrepareOptions {
    pub fn new(inputs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self {
            inputs,
            out,
            vocab_size: DEFAULT_VOCAB_SIZE,
            lowercase: false,
            holdout_frac: DEFAULT_HOLDOUT_FRAC,
            tokenizer: None,
        }
    }
}

/// One file that went into the corpus, identified well enough to notice it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    /// [`fnv1a64`] of the file's bytes, 16 hex digits.
    pub fnv1a64: String,
    pub bytes: u64,
}

/// `meta.json` of a prepared corpus directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusMeta {
    pub format_version: u32,
    /// The tokenizer's actual vocabulary size (added tokens included): the embedding table
    /// size. Training on a small corpus can give fewer than requested.
    pub vocab_size: usize,
    /// Whether the trained tokenizer lowercases; false when `tokenizer_source` is set (the
    /// reused tokenizer's own normaliser decides).
    pub lowercase: bool,
    pub holdout_frac: f64,
    pub inputs: Vec<InputFile>,
    /// The `tokenizer.json` that was reused, if the tokenizer was not trained here.
    pub tokenizer_source: Option<InputFile>,
    pub n_documents_train: usize,
    pub n_documents_holdout: usize,
    /// Ids in `train.bin`, document separators included.
    pub n_tokens_train: u64,
    /// Ids in `holdout.bin`, document separators included.
    pub n_tokens_holdout: u64,
    pub special_ids: SpecialIds,
}

/// Builds a prepared corpus directory from `opts` and returns what it wrote to `meta.json`.
pub fn prepare(opts: &PrepareOptions) -> Result<CorpusMeta> {
    ensure!(!opts.inputs.is_empty(), "no input text files given");
    crate::outdir::claim(&opts.out, META_FILE)?;
    let (inputs, docs) = read_inputs(&opts.inputs)?;
    let reused = match &opts.tokenizer {
        Some(path) => Some((load_tokenizer(path)?, describe_file(path)?)),
        None => None,
    };
    let unk_token = match &reused {
        Some((tok, _)) => {
            let unk = SpecialIds::from_tokenizer(tok)?.unk;
            tok.id_to_token(unk).unwrap_or_else(|| SPECIAL_TOKENS[1].to_string())
        }
        None => SPECIAL_TOKENS[1].to_string(),
    };
    let docs = replace_unknown_marker(docs, &unk_token);
    let (train, holdout) = split_holdout(&docs, opts.holdout_frac)?;
    let (tok, tokenizer_source) = match reused {
        Some((tok, source)) => (tok, Some(source)),
        None => (train_wordpiece(train, opts.vocab_size, opts.lowercase)?, None),
    };
    let special_ids = SpecialIds::from_tokenizer(&tok)?;
    let train_ids = encode_documents(&tok, train, special_ids.sep)?;
    let holdout_ids = encode_documents(&tok, holdout, special_ids.sep)?;
    let meta = CorpusMeta {
        format_version: FORMAT_VERSION,
        vocab_size: tok.get_vocab_size(true),
        lowercase: opts.lowercase && tokenizer_source.is_none(),
        holdout_frac: opts.holdout_frac,
        inputs,
        tokenizer_source,
        n_documents_train: train.len(),
        n_documents_holdout: holdout.len(),
        n_tokens_train: train_ids.len() as u64,
        n_tokens_holdout: holdout_ids.len() as u64,
        special_ids,
    };
    write_outputs(&opts.out, &tok, &train_ids, &holdout_ids, &meta)?;
    Ok(meta)
}

/// Reads `meta.json` of a prepared directory and checks it is a format this build reads.
pub fn read_meta(dir: &Path) -> Result<CorpusMeta> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is this a directory made by `repdef prepare`?)",
            path.display()
        )
    })?;
    let meta: CorpusMeta =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        meta.format_version == FORMAT_VERSION,
        "{}: corpus format version {}, this repdef reads version {FORMAT_VERSION}; re-run `repdef prepare`",
        path.display(),
        meta.format_version
    );
    Ok(meta)
}

/// Reads a `.bin` token-id file (little-endian `u32`s).
pub fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() % 4 == 0,
        "{}: {} bytes is not a whole number of u32 token ids (truncated or not a repdef .bin file)",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// 64-bit FNV-1a of `bytes`. A fingerprint to notice that an input file changed, NOT a
/// cryptographic hash (no sha crate is a dependency, and provenance needs no more).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// WikiText marks out-of-vocabulary words as `<unk>`. A subword tokenizer would split that marker
/// into `<`, `unk`, `>`: 14% of WikiText-2's ids, the three most frequent and trivially
/// predictable, which would inflate masked-token accuracy. It becomes the tokenizer's own unknown token.
fn replace_unknown_marker(docs: Vec<String>, unk_token: &str) -> Vec<String> {
    docs.into_iter().map(|d| if d.contains("<unk>") { d.replace("<unk>", unk_token) } else { d }).collect()
}

/// Reads every input, in order, into documents; documents never cross file boundaries.
fn read_inputs(paths: &[PathBuf]) -> Result<(Vec<InputFile>, Vec<String>)> {
    let mut inputs = Vec::with_capacity(paths.len());
    let mut docs = Vec::new();
    for path in paths {
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = as_text(path, &bytes)?;
        docs.extend(split_documents(text));
        inputs.push(input_file(path, &bytes));
    }
    Ok((inputs, docs))
}

fn describe_file(path: &Path) -> Result<InputFile> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(input_file(path, &bytes))
}

fn input_file(path: &Path, bytes: &[u8]) -> InputFile {
    InputFile {
        path: path.to_path_buf(),
        fnv1a64: format!("{:016x}", fnv1a64(bytes)),
        bytes: bytes.len() as u64,
    }
}

/// The file's text, or an error that says which file and where it stops being UTF-8.
fn as_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.valid_up_to()
        )
    })?;
    ensure!(
        !text.trim().is_empty(),
        "{}: no text (the file is empty or only whitespace)",
        path.display()
    );
    Ok(text)
}

/// Splits one file's text into documents: WikiText articles when the file has top-level
/// ` = Title = ` headings (each heading starts an article), otherwise blank-line paragraphs.
pub fn split_documents(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let groups: Vec<&[&str]> = if lines.iter().any(|l| is_article_heading(l)) {
        split_before_headings(&lines)
    } else {
        lines.split(|l| l.trim().is_empty()).collect()
    };
    groups
        .into_iter()
        .map(|g| g.join("\n").trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// ` = Title = ` with exactly one `=` on each side; ` = = Section = = ` is not an article start.
fn is_article_heading(line: &str) -> bool {
    let t = line.trim();
    let Some(inner) = t.strip_prefix("= ").and_then(|r| r.strip_suffix(" =")) else {
        return false;
    };
    let inner = inner.trim();
    !inner.is_empty() && !inner.starts_with('=') && !inner.ends_with('=')
}

/// Groups of lines each starting at a heading; text before the first heading is its own group.
fn split_before_headings<'a>(lines: &'a [&'a str]) -> Vec<&'a [&'a str]> {
    let mut starts: Vec<usize> = (0..lines.len())
        .filter(|&i| is_article_heading(lines[i]))
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let ends = starts.iter().skip(1).copied().chain([lines.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&a, b)| &lines[a..b])
        .collect()
}

/// Train = the leading documents, holdout = the last `holdout_frac` of them (rounded, at least
/// one). A contiguous tail rather than a random sample: no RNG, and the held-out text is a
/// stretch that neither the tokenizer nor the model ever trains on.
pub fn split_holdout(docs: &[String], holdout_frac: f64) -> Result<(&[String], &[String])> {
    ensure!(
        holdout_frac > 0.0 && holdout_frac < 1.0,
        "holdout fraction must be strictly between 0 and 1, got {holdout_frac}"
    );
    let n = docs.len();
    let n_holdout = ((n as f64 * holdout_frac).round() as usize).max(1);
    if n_holdout >= n {
        bail!(
            "{n} document(s) cannot be split into training and holdout text with holdout \
             fraction {holdout_frac}: give more text or a smaller holdout fraction"
        );
    }
    Ok(docs.split_at(n - n_holdout))
}

/// One id stream: each document's ids followed by `sep`.
fn encode_documents(tok: &Tokenizer, docs: &[String], sep: u32) -> Result<Vec<u32>> {
    let inputs: Vec<&str> = docs.iter().map(String::as_str).collect();
    // The batch call encodes documents in parallel; padding is off, so lengths are untouched.
    let encodings = tok
        .encode_batch_fast(inputs, false)
        .map_err(|e| anyhow!(e))
        .context("tokenizing the corpus")?;
    let mut ids = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum());
    for enc in &encodings {
        ids.extend_from_slice(enc.get_ids());
        ids.push(sep);
    }
    Ok(ids)
}

fn write_outputs(
    out: &Path,
    tok: &Tokenizer,
    train_ids: &[u32],
    holdout_ids: &[u32],
    meta: &CorpusMeta,
) -> Result<()> {
    let tok_json = tok
        .to_string(true)
        .map_err(|e| anyhow!(e))
        .context("serialising the tokenizer")?;
    let meta_json = serde_json::to_string_pretty(meta).context("serialising meta.json")?;
    crate::outdir::write_staged(out, META_FILE, |staging| {
        write_atomic(&staging.join(TOKENIZER_FILE), tok_json.as_bytes())?;
        write_atomic(&staging.join(TRAIN_FILE), &ids_to_bytes(train_ids))?;
        write_atomic(&staging.join(HOLDOUT_FILE), &ids_to_bytes(holdout_ids))?;
        write_atomic(&staging.join(META_FILE), meta_json.as_bytes())
    })
}

fn ids_to_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn wikitext_unknown_marker_becomes_the_unknown_token() {
        let docs = replace_unknown_marker(vec!["a <unk> lobster".into(), "plain".into()], "[UNK]");
        assert_eq!(docs, vec!["a [UNK] lobster".to_string(), "plain".to_string()]);
    }

    use super::*;
    use crate::data::tokenizer::tests::small_tokenizer;

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    /// The first 700 lines of the bundled validation file: 13 WikiText articles.
    fn small_corpus(dir: &Path) -> PathBuf {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/corpus/wikitext2_valid.txt"
        );
        let text = fs::read_to_string(path).unwrap();
        let head: Vec<&str> = text.lines().take(700).collect();
        write(dir, "small.txt", head.join("\n").as_bytes())
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "x.txt", b"hello \xff world");
        let err = err_text(read_inputs(&[bad]));
        assert!(
            err.contains("x.txt: not valid UTF-8 (first bad byte at offset 6)"),
            "{err}"
        );

        let empty = write(dir.path(), "empty.txt", b" \n\t\n");
        let err = err_text(read_inputs(&[empty]));
        assert!(
            err.contains("empty.txt") && err.contains("only whitespace"),
            "{err}"
        );

        let missing = dir.path().join("missing.txt");
        let err = err_text(read_inputs(&[missing]));
        assert!(err.contains("missing.txt"), "{err}");

        let opts = PrepareOptions::new(vec![], dir.path().join("out"));
        assert!(err_text(prepare(&opts)).contains("no input"));
    }

    #[test]
    fn wikitext_splits_on_top_level_headings_only() {
        let text = " \n = First = \n \n Intro .\n \n = = Section = = \n \n More .\n = Second = \n Body .\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert!(
            docs[0].starts_with("= First =") && docs[0].contains("= = Section = ="),
            "{docs:?}"
        );
        assert_eq!(docs[1], "= Second = \n Body .");
    }

    #[test]
    fn plain_text_splits_on_blank_lines() {
        let docs = split_documents("one\ntwo\n\n\nthree\n   \nfour = five =\n");
        assert_eq!(docs, ["one\ntwo", "three", "four = five ="]);
    }

    #[test]
    fn holdout_is_the_deterministic_tail() {
        let docs: Vec<String> = (0..25).map(|i| format!("doc {i}")).collect();
        let (train, holdout) = split_holdout(&docs, 0.1).unwrap();
        assert_eq!(holdout, &docs[22..]); // round(2.5) = 3
        assert_eq!(train, &docs[..22]);
        assert_eq!(split_holdout(&docs, 0.1).unwrap(), (train, holdout));
        assert!(train.iter().all(|d| !holdout.contains(d)));
    }

    #[test]
    fn holdout_needs_two_documents_and_a_sane_fraction() {
        let one = vec!["only".to_string()];
        assert!(err_text(split_holdout(&one, 0.1)).contains("1 document(s)"));
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(split_holdout(&two, 0.01).unwrap().1, &two[1..]);
        assert!(err_text(split_holdout(&two, 1.0)).contains("between 0 and 1"));
        assert!(err_text(split_holdout(&two, 0.0)).contains("between 0 and 1"));
    }

    #[test]
    fn prepare_writes_all_files_and_read_meta_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let input = small_corpus(dir.path());
        let out = dir.path().join("prepared");
        let opts = PrepareOptions {
            vocab_size: 500,
            lowercase: true,
            holdout_frac: 0.2,
            ..PrepareOptions::new(vec![input.clone()], out.clone())
        };
        let meta = prepare(&opts).unwrap();

        assert_eq!(read_meta(&out).unwrap(), meta);
        assert_eq!((meta.n_documents_train, meta.n_documents_holdout), (10, 3));
        assert_eq!(
            meta.special_ids,
            SpecialIds {
                pad: 0,
                unk: 1,
                cls: 2,
                sep: 3,
                mask: 4
            }
        );
        assert_eq!(meta.inputs[0].bytes, fs::metadata(&input).unwrap().len());
        let mut names: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["holdout.bin", "meta.json", "tokenizer.json", "train.bin"]
        );

        let train = read_ids(&out.join(TRAIN_FILE)).unwrap();
        let holdout = read_ids(&out.join(HOLDOUT_FILE)).unwrap();
        assert_eq!(train.len() as u64, meta.n_tokens_train);
        assert_eq!(holdout.len() as u64, meta.n_tokens_holdout);
        // One separator per document, and each stream ends with one.
        assert_eq!(train.iter().filter(|&&i| i == 3).count(), 10);
        assert_eq!(holdout.iter().filter(|&&i| i == 3).count(), 3);
        assert_eq!(holdout.last(), Some(&3));
        // The holdout is the tail: the last article of the input, not the first.
        let tok = load_tokenizer(&out.join(TOKENIZER_FILE)).unwrap();
        let text = tok.decode(&holdout, true).unwrap();
        assert!(
            text.contains("high five interchange") && !text.contains("homarus"),
            "{text}"
        );
    }

    #[test]
    fn prepare_can_reuse_a_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let tok_path = dir.path().join("given.json");
        small_tokenizer().save(&tok_path, false).unwrap();
        let opts = PrepareOptions {
            tokenizer: Some(tok_path.clone()),
            ..PrepareOptions::new(vec![small_corpus(dir.path())], dir.path().join("out"))
        };
        let meta = prepare(&opts).unwrap();
        let source = meta.tokenizer_source.as_ref().unwrap();
        assert_eq!(source.path, tok_path);
        assert_eq!(meta.vocab_size, small_tokenizer().get_vocab_size(true));
        assert!(!meta.lowercase);
    }

    #[test]
    fn read_meta_rejects_missing_and_foreign_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert!(err_text(read_meta(dir.path())).contains("meta.json"));
        let meta = CorpusMeta {
            format_version: FORMAT_VERSION + 1,
            vocab_size: 10,
            lowercase: false,
            holdout_frac: 0.1,
            inputs: vec![],
            tokenizer_source: None,
            n_documents_train: 1,
            n_documents_holdout: 1,
            n_tokens_train: 0,
            n_tokens_holdout: 0,
            special_ids: SpecialIds {
                pad: 0,
                unk: 1,
                cls: 2,
                sep: 3,
                mask: 4,
            },
        };
        fs::write(
            dir.path().join(META_FILE),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        assert!(err_text(read_meta(dir.path())).contains("re-run `repdef prepare`"));
    }
}
