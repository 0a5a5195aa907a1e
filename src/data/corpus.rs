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

use anyhow::{anyhow, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::documents::{split_by_rule, DocumentRule};
use super::interleave::{interleave_holdout, HOLDOUT_PIECE_TOKENS};
use super::sources::{apply_holdout, tail_count, CorpusFile, HoldoutRule};
use super::textfile::{describe_file, read_text_file};
use super::tokenizer::{load_tokenizer, train_wordpiece, SpecialIds, SPECIAL_TOKENS};
use crate::fsutil::write_atomic;

pub use super::documents::split_documents;
pub use super::textfile::InputFile;

/// Bumped whenever the files of a prepared directory change meaning. 2: per-file holdout rules,
/// the holdout stream interleaved in pieces (see `interleave.rs`), per-file counts in `inputs`.
pub const FORMAT_VERSION: u32 = 2;
pub const DEFAULT_VOCAB_SIZE: usize = 8192;
pub const DEFAULT_HOLDOUT_FRAC: f64 = 0.1;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const META_FILE: &str = "meta.json";
pub const TRAIN_FILE: &str = "train.bin";
pub const HOLDOUT_FILE: &str = "holdout.bin";

/// A prepared corpus dir, which `prepare` replaces as a whole.
const PREPARED_DIR: crate::outdir::Replaceable = crate::outdir::Replaceable {
    marker: META_FILE,
    what: "a prepared corpus",
    holds: |name| [META_FILE, TOKENIZER_FILE, TRAIN_FILE, HOLDOUT_FILE].contains(&name),
};

/// What `repdef prepare` was asked to do.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub files: Vec<CorpusFile>,
    pub out: PathBuf,
    /// Requested vocabulary size, special tokens included (ignored with `tokenizer`).
    pub vocab_size: usize,
    /// Lowercase and strip accents before training (ignored with `tokenizer`).
    pub lowercase: bool,
    /// When no file has a holdout rule of its own: the fraction of all documents, taken from
    /// the end, held out from training (a contiguous tail, not interleaved). Ignored otherwise.
    pub holdout_frac: f64,
    /// Reuse this HF `tokenizer.json` instead of training one.
    pub tokenizer: Option<PathBuf>,
}

impl PrepareOptions {
    /// Plain text files (documents by [`DocumentRule::Auto`]) with the tail holdout.
    pub fn new(inputs: Vec<PathBuf>, out: PathBuf) -> Self {
        Self::of_files(inputs.into_iter().map(|p| CorpusFile::plain(p, HoldoutRule::None)).collect(), out)
    }

    pub fn of_files(files: Vec<CorpusFile>, out: PathBuf) -> Self {
        Self { files, out, vocab_size: DEFAULT_VOCAB_SIZE, lowercase: false, holdout_frac: DEFAULT_HOLDOUT_FRAC, tokenizer: None }
    }

    /// Whether the holdout comes from per-file rules (interleaved) rather than the global tail.
    fn per_file_holdout(&self) -> bool {
        self.files.iter().any(|f| f.holdout != HoldoutRule::None)
    }
}

/// One input of a prepared corpus: the file as stored, how it was split, and what it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusInput {
    #[serde(flatten)]
    pub file: InputFile,
    pub source: String,
    pub documents: DocumentRule,
    pub holdout: HoldoutRule,
    pub n_documents_train: usize,
    pub n_documents_holdout: usize,
    /// The file's ids in `train.bin`, its document separators included.
    pub n_tokens_train: u64,
    /// The file's ids in `holdout.bin`, separators not included (they depend on interleaving).
    pub n_tokens_holdout: u64,
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
    /// The global tail fraction, when no file had its own holdout rule.
    pub holdout_frac: Option<f64>,
    /// Ids per interleaved holdout piece, when the holdout was interleaved (per-file rules).
    pub holdout_piece_tokens: Option<usize>,
    pub inputs: Vec<CorpusInput>,
    /// The `tokenizer.json` that was reused, if the tokenizer was not trained here.
    pub tokenizer_source: Option<InputFile>,
    pub n_documents_train: usize,
    pub n_documents_holdout: usize,
    /// Ids in `train.bin`, document separators included.
    pub n_tokens_train: u64,
    /// Ids in `holdout.bin`, separators included.
    pub n_tokens_holdout: u64,
    pub special_ids: SpecialIds,
}

/// One file's documents, split into training and held-out ones.
#[derive(Debug)]
struct FileDocs {
    train: Vec<String>,
    holdout: Vec<String>,
}

/// Builds a prepared corpus directory from `opts` and returns what it wrote to `meta.json`.
///
/// Memory: the decompressed text of all files once (as documents), plus the id streams; files
/// are decompressed while read and tokenized in bounded batches of lines.
pub fn prepare(opts: &PrepareOptions) -> Result<CorpusMeta> {
    ensure!(!opts.files.is_empty(), "no input text files given");
    crate::outdir::claim_replaceable(&opts.out, &PREPARED_DIR)?;
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
    let (stored, mut files) = read_files(&opts.files, &unk_token)?;
    if !opts.per_file_holdout() {
        tail_holdout(&mut files, opts.holdout_frac)?;
    }
    let n_train_docs: usize = files.iter().map(|f| f.train.len()).sum();
    ensure!(n_train_docs > 0, "every document is held out: nothing is left to train on");
    ensure!(files.iter().any(|f| !f.holdout.is_empty()), "no document is held out: nothing to evaluate on");
    let (tok, tokenizer_source) = match reused {
        Some((tok, source)) => (tok, Some(source)),
        None => {
            let lines = files.iter().flat_map(|f| &f.train).flat_map(|d| d.lines());
            (train_wordpiece(lines, opts.vocab_size, opts.lowercase)?, None)
        }
    };
    let special_ids = SpecialIds::from_tokenizer(&tok)?;
    let sep = special_ids.sep;

    let mut train_ids = Vec::new();
    // Held-out documents' ids grouped by source, sources in order of first appearance.
    let mut holdout_docs: Vec<(String, Vec<Vec<u32>>)> = Vec::new();
    let mut inputs = Vec::with_capacity(files.len());
    for ((spec, file), docs) in opts.files.iter().zip(stored).zip(&files) {
        let before = train_ids.len();
        for doc in &docs.train {
            encode_into(&tok, doc, &mut train_ids)?;
            train_ids.push(sep);
        }
        let mut n_holdout = 0;
        for doc in &docs.holdout {
            let mut ids = Vec::new();
            encode_into(&tok, doc, &mut ids)?;
            n_holdout += ids.len() as u64;
            match holdout_docs.iter_mut().find(|(s, _)| *s == spec.source) {
                Some((_, docs)) => docs.push(ids),
                None => holdout_docs.push((spec.source.clone(), vec![ids])),
            }
        }
        inputs.push(CorpusInput {
            file,
            source: spec.source.clone(),
            documents: spec.documents,
            holdout: spec.holdout,
            n_documents_train: docs.train.len(),
            n_documents_holdout: docs.holdout.len(),
            n_tokens_train: (train_ids.len() - before) as u64,
            n_tokens_holdout: n_holdout,
        });
    }
    drop(files);
    let holdout_docs: Vec<Vec<Vec<u32>>> = holdout_docs.into_iter().map(|(_, docs)| docs).collect();
    let n_holdout_docs = holdout_docs.iter().map(Vec::len).sum();
    let holdout_ids = if opts.per_file_holdout() {
        interleave_holdout(&holdout_docs, HOLDOUT_PIECE_TOKENS, sep)
    } else {
        holdout_docs.iter().flatten().flat_map(|d| d.iter().copied().chain([sep])).collect()
    };
    let meta = CorpusMeta {
        format_version: FORMAT_VERSION,
        vocab_size: tok.get_vocab_size(true),
        lowercase: opts.lowercase && tokenizer_source.is_none(),
        holdout_frac: (!opts.per_file_holdout()).then_some(opts.holdout_frac),
        holdout_piece_tokens: opts.per_file_holdout().then_some(HOLDOUT_PIECE_TOKENS),
        n_documents_train: n_train_docs,
        n_documents_holdout: n_holdout_docs,
        inputs,
        tokenizer_source,
        n_tokens_train: train_ids.len() as u64,
        n_tokens_holdout: holdout_ids.len() as u64,
        special_ids,
    };
    write_outputs(&opts.out, &tok, &train_ids, &holdout_ids, &meta)?;
    Ok(meta)
}

/// Ids of one source (a label of [`CorpusInput`]) in the two splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCounts {
    pub source: String,
    pub n_tokens_train: u64,
    pub n_tokens_holdout: u64,
}

/// Token counts per source, in the order sources first appear among the inputs.
pub fn source_counts(meta: &CorpusMeta) -> Vec<SourceCounts> {
    let mut counts: Vec<SourceCounts> = Vec::new();
    for input in &meta.inputs {
        let i = match counts.iter().position(|c| c.source == input.source) {
            Some(i) => i,
            None => {
                counts.push(SourceCounts { source: input.source.clone(), n_tokens_train: 0, n_tokens_holdout: 0 });
                counts.len() - 1
            }
        };
        counts[i].n_tokens_train += input.n_tokens_train;
        counts[i].n_tokens_holdout += input.n_tokens_holdout;
    }
    counts
}

/// Reads `meta.json` of a prepared directory and checks it is a format this build reads.
pub fn read_meta(dir: &Path) -> Result<CorpusMeta> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {} (is this a directory made by `repdef prepare`?)", path.display()))?;
    // The version first: an older meta.json lacks newer fields, and "missing field" would not
    // say that re-running `prepare` is the fix.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        version.format_version == FORMAT_VERSION,
        "{}: corpus format version {}, this repdef reads version {FORMAT_VERSION}; re-run `repdef prepare`",
        path.display(),
        version.format_version
    );
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads a `.bin` token-id file (little-endian `u32`s).
pub fn read_ids(path: &Path) -> Result<Vec<u32>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(bytes.len() % 4 == 0, "{}: {} bytes is not a whole number of u32 token ids (truncated or not a repdef .bin file)", path.display(), bytes.len());
    Ok(bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// WikiText marks out-of-vocabulary words as `<unk>`. A subword tokenizer would split that marker
/// into `<`, `unk`, `>`: 14% of WikiText-2's ids, the three most frequent and trivially
/// predictable, which would inflate masked-token accuracy. It becomes the tokenizer's own unknown token.
fn replace_unknown_marker(docs: Vec<String>, unk_token: &str) -> Vec<String> {
    docs.into_iter().map(|d| if d.contains("<unk>") { d.replace("<unk>", unk_token) } else { d }).collect()
}

/// Reads every input, in order, into documents (never crossing file boundaries) and applies
/// each file's own holdout rule; also returns each file as stored.
fn read_files(files: &[CorpusFile], unk_token: &str) -> Result<(Vec<InputFile>, Vec<FileDocs>)> {
    let mut stored = Vec::with_capacity(files.len());
    let mut split = Vec::with_capacity(files.len());
    for f in files {
        let (described, text) = read_text_file(&f.path)?;
        let docs = replace_unknown_marker(split_by_rule(&text, f.documents), unk_token);
        drop(text);
        let (train, holdout) = apply_holdout(&f.path, docs, f.holdout)?;
        stored.push(described);
        split.push(FileDocs { train, holdout });
    }
    Ok((stored, split))
}

/// The global tail holdout over all files' documents in order, when no file has a rule of its
/// own: the last `holdout_frac` of them ([`tail_count`]).
fn tail_holdout(files: &mut [FileDocs], holdout_frac: f64) -> Result<()> {
    let n: usize = files.iter().map(|f| f.train.len()).sum();
    let mut keep = n - tail_count(n, holdout_frac, "document")?;
    for f in files {
        let kept = keep.min(f.train.len());
        f.holdout = f.train.split_off(kept);
        keep -= kept;
    }
    Ok(())
}

/// Text per tokenizer batch call: large enough for the batch call to spread over cores, small
/// enough that the tokenizer's per-token intermediate values (strings, offsets) stay tens of MB.
const ENCODE_BATCH_BYTES: usize = 1 << 20;

/// Appends `doc`'s ids to `ids`, tokenizing it line by line in bounded batches. Encoding lines
/// separately gives the ids of the whole text: WordPiece's pre-tokenizer splits on whitespace,
/// so no token spans a line break.
fn encode_into(tok: &Tokenizer, doc: &str, ids: &mut Vec<u32>) -> Result<()> {
    let mut batch: Vec<&str> = Vec::new();
    let mut bytes = 0;
    let lines = doc.lines().filter(|l| !l.trim().is_empty());
    for line in lines.map(Some).chain([None]) {
        if let Some(line) = line {
            batch.push(line);
            bytes += line.len();
        }
        if bytes >= ENCODE_BATCH_BYTES || (line.is_none() && !batch.is_empty()) {
            // The batch call encodes lines in parallel; padding is off, so lengths are untouched.
            let encodings = tok.encode_batch_fast(std::mem::take(&mut batch), false).map_err(|e| anyhow!(e)).context("tokenizing the corpus")?;
            for enc in &encodings {
                ids.extend_from_slice(enc.get_ids());
            }
            bytes = 0;
        }
    }
    Ok(())
}

fn write_outputs(out: &Path, tok: &Tokenizer, train_ids: &[u32], holdout_ids: &[u32], meta: &CorpusMeta) -> Result<()> {
    let tok_json = tok.to_string(true).map_err(|e| anyhow!(e)).context("serialising the tokenizer")?;
    let meta_json = serde_json::to_string_pretty(meta).context("serialising meta.json")?;
    crate::outdir::write_staged(out, &PREPARED_DIR, |staging| {
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
    use crate::data::sources::command_line_files;
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
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/corpus/wikitext2_valid.txt");
        let text = fs::read_to_string(path).unwrap();
        let head: Vec<&str> = text.lines().take(700).collect();
        write(dir, "small.txt", head.join("\n").as_bytes())
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "x.txt", b"hello \xff world");
        let err = err_text(read_files(&[CorpusFile::plain(bad, HoldoutRule::None)], "[UNK]"));
        assert!(err.contains("x.txt: not valid UTF-8 (first bad byte at offset 6)"), "{err}");

        let empty = write(dir.path(), "empty.txt", b" \n\t\n");
        let err = err_text(read_files(&[CorpusFile::plain(empty, HoldoutRule::None)], "[UNK]"));
        assert!(err.contains("empty.txt") && err.contains("only whitespace"), "{err}");

        let missing = dir.path().join("missing.txt");
        let err = err_text(read_files(&[CorpusFile::plain(missing, HoldoutRule::None)], "[UNK]"));
        assert!(err.contains("missing.txt"), "{err}");

        let opts = PrepareOptions::new(vec![], dir.path().join("out"));
        assert!(err_text(prepare(&opts)).contains("no input"));
    }

    fn docs(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("doc {i}")).collect()
    }

    #[test]
    fn holdout_is_the_deterministic_tail_across_files() {
        let mut files = vec![FileDocs { train: docs(0..20), holdout: vec![] }, FileDocs { train: docs(20..25), holdout: vec![] }];
        tail_holdout(&mut files, 0.1).unwrap(); // round(2.5) = 3, all from the second file
        assert_eq!((files[0].train.clone(), files[0].holdout.clone()), (docs(0..20), vec![]));
        assert_eq!((files[1].train.clone(), files[1].holdout.clone()), (docs(20..22), docs(22..25)));

        let mut files = vec![FileDocs { train: docs(0..8), holdout: vec![] }, FileDocs { train: docs(8..10), holdout: vec![] }];
        tail_holdout(&mut files, 0.3).unwrap(); // 3 of 10 reach back into the first file
        assert_eq!((files[0].train.clone(), files[0].holdout.clone()), (docs(0..7), docs(7..8)));
        assert_eq!((files[1].train.clone(), files[1].holdout.clone()), (vec![], docs(8..10)));
    }

    #[test]
    fn holdout_needs_two_documents_and_a_sane_fraction() {
        let one = || vec![FileDocs { train: docs(0..1), holdout: vec![] }];
        assert!(err_text(tail_holdout(&mut one(), 0.1)).contains("1 document(s)"));
        let mut two = vec![FileDocs { train: docs(0..2), holdout: vec![] }];
        tail_holdout(&mut two, 0.01).unwrap();
        assert_eq!(two[0].holdout, docs(1..2));
        let two = || vec![FileDocs { train: docs(0..2), holdout: vec![] }];
        assert!(err_text(tail_holdout(&mut two(), 1.0)).contains("between 0 and 1"));
        assert!(err_text(tail_holdout(&mut two(), 0.0)).contains("between 0 and 1"));
    }

    #[test]
    fn prepare_writes_all_files_and_read_meta_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let input = small_corpus(dir.path());
        let out = dir.path().join("prepared");
        let opts = PrepareOptions { vocab_size: 500, lowercase: true, holdout_frac: 0.2, ..PrepareOptions::new(vec![input.clone()], out.clone()) };
        let meta = prepare(&opts).unwrap();

        assert_eq!(read_meta(&out).unwrap(), meta);
        assert_eq!((meta.n_documents_train, meta.n_documents_holdout), (10, 3));
        assert_eq!(meta.special_ids, SpecialIds::REPDEF);
        assert_eq!(meta.inputs[0].file.bytes, fs::metadata(&input).unwrap().len());
        assert_eq!((meta.holdout_frac, meta.holdout_piece_tokens), (Some(0.2), None));
        let mut names: Vec<String> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["holdout.bin", "meta.json", "tokenizer.json", "train.bin"]);

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
        assert!(text.contains("high five interchange") && !text.contains("homarus"), "{text}");
    }

    #[test]
    fn prepare_can_reuse_a_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let tok_path = dir.path().join("given.json");
        small_tokenizer().save(&tok_path, false).unwrap();
        let opts = PrepareOptions { tokenizer: Some(tok_path.clone()), ..PrepareOptions::new(vec![small_corpus(dir.path())], dir.path().join("out")) };
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
            holdout_frac: Some(0.1),
            holdout_piece_tokens: None,
            inputs: vec![],
            tokenizer_source: None,
            n_documents_train: 1,
            n_documents_holdout: 1,
            n_tokens_train: 0,
            n_tokens_holdout: 0,
            special_ids: SpecialIds::REPDEF,
        };
        fs::write(dir.path().join(META_FILE), serde_json::to_string(&meta).unwrap()).unwrap();
        assert!(err_text(read_meta(dir.path())).contains("re-run `repdef prepare`"));
    }

    fn wikitext_lines(file: &str, lines: std::ops::Range<usize>) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus").join(file);
        let text = fs::read_to_string(path).unwrap();
        text.lines().skip(lines.start).take(lines.len()).map(|l| format!("{l}\n")).collect()
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    }

    fn reusing_small_tokenizer(dir: &Path, files: Vec<CorpusFile>, out: &str) -> PrepareOptions {
        let tok_path = dir.join("given.json");
        small_tokenizer().save(&tok_path, false).unwrap();
        PrepareOptions { tokenizer: Some(tok_path), ..PrepareOptions::of_files(files, dir.join(out)) }
    }

    #[test]
    fn gzip_input_prepares_exactly_like_the_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let text = wikitext_lines("wikitext2_valid.txt", 0..700);
        let plain = write(dir.path(), "a.txt", text.as_bytes());
        let gz = write(dir.path(), "a.txt.gz", &gzip(&text));
        let a = prepare(&reusing_small_tokenizer(dir.path(), vec![CorpusFile::plain(plain, HoldoutRule::None)], "plain")).unwrap();
        let b = prepare(&reusing_small_tokenizer(dir.path(), vec![CorpusFile::plain(gz, HoldoutRule::None)], "gz")).unwrap();
        assert_eq!((a.n_documents_train, a.n_documents_holdout), (b.n_documents_train, b.n_documents_holdout));
        for file in [TRAIN_FILE, HOLDOUT_FILE] {
            let (x, y) = (read_ids(&dir.path().join("plain").join(file)).unwrap(), read_ids(&dir.path().join("gz").join(file)).unwrap());
            assert!(!x.is_empty() && x == y, "{file} differs");
        }
    }

    /// Whether `needle` occurs in `haystack` as a contiguous run.
    fn occurs(haystack: &[u32], needle: &[u32]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn holdout_files_never_train_and_every_holdout_file_is_in_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(dir.path(), "train.txt", wikitext_lines("wikitext2_valid.txt", 0..700).as_bytes());
        let held_a = write(dir.path(), "held_a.txt.gz", &gzip(&wikitext_lines("wikitext2_valid.txt", 1400..2600)));
        let held_b = write(dir.path(), "held_b.txt", wikitext_lines("wikitext2_test.txt", 0..300).as_bytes());
        let files = command_line_files(None, vec![train], vec![held_a.clone(), held_b.clone()]).unwrap();
        let opts = reusing_small_tokenizer(dir.path(), files, "out");
        let meta = prepare(&opts).unwrap();
        assert_eq!(meta.holdout_frac, None);
        assert_eq!(meta.holdout_piece_tokens, Some(HOLDOUT_PIECE_TOKENS));
        let counts: Vec<(usize, usize)> = meta.inputs.iter().map(|i| (i.n_documents_train, i.n_documents_holdout)).collect();
        assert_eq!(counts[0].1, 0);
        assert!(counts[1..].iter().all(|&(t, h)| t == 0 && h > 0), "{counts:?}");
        assert_eq!(meta.inputs[1].holdout, HoldoutRule::Whole);

        let train_ids = read_ids(&opts.out.join(TRAIN_FILE)).unwrap();
        let holdout_ids = read_ids(&opts.out.join(HOLDOUT_FILE)).unwrap();
        assert_eq!(train_ids.len() as u64, meta.inputs[0].n_tokens_train);
        let held_total: u64 = meta.inputs.iter().map(|i| i.n_tokens_holdout).sum();
        let seps = holdout_ids.iter().filter(|&&t| t == meta.special_ids.sep).count() as u64;
        assert_eq!(holdout_ids.len() as u64, held_total + seps);

        let tok = small_tokenizer();
        let held: Vec<Vec<Vec<u32>>> = [held_a, held_b]
            .iter()
            .map(|p| {
                let text = read_text_file(p).unwrap().1;
                split_documents(&text)
                    .iter()
                    .map(|d| {
                        let mut ids = vec![];
                        encode_into(tok, d, &mut ids).unwrap();
                        ids
                    })
                    .collect()
            })
            .collect();
        // No 32-id stretch (shorter ones recur by chance: "economy, defense, and") of any held-out document is in the training stream.
        for docs in &held {
            for doc in docs {
                for start in (0..doc.len().saturating_sub(32)).step_by(97) {
                    assert!(
                        !occurs(&train_ids, &doc[start..start + 32]),
                        "held-out ids at {start} found in train.bin: {:?}",
                        tok.decode(&doc[start..start + 32], false)
                    );
                }
            }
        }
        // The first quarter of the holdout stream already has pieces of both held-out files.
        let prefix = &holdout_ids[..holdout_ids.len() / 4];
        let pieces: Vec<&[u32]> = prefix.split(|&t| t == meta.special_ids.sep).filter(|p| p.len() >= 12).collect();
        for (k, docs) in held.iter().enumerate() {
            assert!(pieces.iter().any(|p| docs.iter().any(|d| occurs(d, &p[..12]))), "held-out file {k} missing from the prefix");
        }
    }
}
