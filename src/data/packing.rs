//! Fixed-length sequences for training and analysis, cut from a prepared token stream in the
//! RoBERTa FULL-SENTENCES style: consecutive chunks of `seq_len - 2` ids, crossing document
//! boundaries (the stream's document separators stay in), each wrapped as `[CLS] chunk [SEP]`.
//! Every sequence has exactly `seq_len` ids, so batches need no padding.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::corpus::{read_ids, read_meta, CorpusMeta, HOLDOUT_FILE, TRAIN_FILE};

/// Below this there is hardly a token left to mask once `[CLS]` and `[SEP]` are in.
pub const MIN_SEQ_LEN: usize = 8;

/// Which half of a prepared corpus to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Holdout,
}

impl Split {
    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => TRAIN_FILE,
            Split::Holdout => HOLDOUT_FILE,
        }
    }

    fn n_tokens(self, meta: &CorpusMeta) -> u64 {
        match self {
            Split::Train => meta.n_tokens_train,
            Split::Holdout => meta.n_tokens_holdout,
        }
    }
}

/// `n_seqs × seq_len` token ids, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSequences {
    pub seq_len: usize,
    data: Vec<u32>, // [n_seqs * seq_len]
}

impl PackedSequences {
    /// Packs one split of the corpus directory `dir` written by `repdef prepare`.
    pub fn load(dir: &Path, split: Split, seq_len: usize) -> Result<Self> {
        let meta = read_meta(dir)?;
        let path = dir.join(split.file_name());
        let ids = read_ids(&path)?;
        check_against_meta(&path, &ids, split.n_tokens(&meta), meta.vocab_size)?;
        let special = meta.special_ids;
        Self::from_stream(&ids, seq_len, special.cls, special.sep).with_context(|| format!("packing {}", path.display()))
    }

    /// Cuts `ids` into `[cls] chunk [sep]` rows of `seq_len`; the final partial chunk is dropped.
    pub fn from_stream(ids: &[u32], seq_len: usize, cls: u32, sep: u32) -> Result<Self> {
        ensure!(seq_len >= MIN_SEQ_LEN, "sequence length {seq_len} is below the minimum {MIN_SEQ_LEN}");
        let body = seq_len - 2;
        let n_seqs = ids.len() / body;
        ensure!(n_seqs > 0, "corpus too small for sequence length {seq_len}: {} token ids, one sequence needs {body}", ids.len());
        let mut data = Vec::with_capacity(n_seqs * seq_len);
        for chunk in ids.chunks_exact(body) {
            data.push(cls);
            data.extend_from_slice(chunk);
            data.push(sep);
        }
        Ok(Self { seq_len, data })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.data.len() / self.seq_len
    }

    /// Always false for a value built by `load`/`from_stream`, which refuse zero sequences.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sequence `i` (`seq_len` ids). Panics if `i >= len()`, like slice indexing.
    pub fn seq(&self, i: usize) -> &[u32] {
        &self.data[i * self.seq_len..(i + 1) * self.seq_len]
    }
}

/// A `.bin` that disagrees with `meta.json` belongs to another `prepare` run (or was cut short);
/// an id beyond the vocabulary would otherwise surface as an out-of-range embedding lookup.
fn check_against_meta(path: &Path, ids: &[u32], expected: u64, vocab_size: usize) -> Result<()> {
    if ids.len() as u64 != expected {
        bail!("{}: {} token ids, but meta.json says {expected}; the directory mixes two `repdef prepare` runs, re-run it", path.display(), ids.len());
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
        bail!("{}: token id {bad} is outside the vocabulary (size {vocab_size})", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::corpus::{CorpusMeta, FORMAT_VERSION, META_FILE};
    use crate::data::tokenizer::SpecialIds;
    use std::fs;

    const CLS: u32 = 2;
    const SEP: u32 = 3;

    #[test]
    fn packs_full_rows_and_drops_the_partial_one() {
        let ids: Vec<u32> = (10..35).collect(); // 25 ids
        let packed = PackedSequences::from_stream(&ids, 8, CLS, SEP).unwrap();
        assert_eq!(packed.len(), 4); // 4 × 6 ids used, 1 dropped
        for i in 0..packed.len() {
            let s = packed.seq(i);
            assert_eq!(s.len(), 8);
            assert_eq!((s[0], s[7]), (CLS, SEP));
            assert_eq!(&s[1..7], &ids[i * 6..(i + 1) * 6]);
        }
        assert!(!packed.is_empty());
    }

    #[test]
    fn rejects_short_seq_len_and_tiny_streams() {
        let ids: Vec<u32> = (10..20).collect();
        let err = PackedSequences::from_stream(&ids, 7, CLS, SEP).unwrap_err().to_string();
        assert!(err.contains("below the minimum 8"), "{err}");
        let err = PackedSequences::from_stream(&ids, 16, CLS, SEP).unwrap_err().to_string();
        assert!(err.contains("corpus too small for sequence length 16"), "{err}");
    }

    /// A prepared directory with a hand-written meta.json and the given train.bin bytes.
    fn fake_corpus(train_bytes: &[u8], n_tokens_train: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let meta = CorpusMeta {
            format_version: FORMAT_VERSION,
            vocab_size: 100,
            lowercase: false,
            holdout_frac: Some(0.1),
            holdout_piece_tokens: None,
            inputs: vec![],
            tokenizer_source: None,
            n_documents_train: 1,
            n_documents_holdout: 0,
            n_tokens_train,
            n_tokens_holdout: 0,
            special_ids: SpecialIds { pad: 0, unk: 1, cls: CLS, sep: SEP, mask: 4 },
        };
        fs::write(dir.path().join(META_FILE), serde_json::to_string(&meta).unwrap()).unwrap();
        fs::write(dir.path().join(TRAIN_FILE), train_bytes).unwrap();
        dir
    }

    fn le_bytes(ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|i| i.to_le_bytes()).collect()
    }

    #[test]
    fn load_reads_little_endian_ids() {
        let ids: Vec<u32> = (10..30).collect();
        let dir = fake_corpus(&le_bytes(&ids), 20);
        let packed = PackedSequences::load(dir.path(), Split::Train, 10).unwrap();
        assert_eq!(packed.len(), 2);
        assert_eq!(packed.seq(1), &[CLS, 18, 19, 20, 21, 22, 23, 24, 25, SEP]);
    }

    #[test]
    fn load_rejects_bad_length_mismatch_and_foreign_ids() {
        let dir = fake_corpus(&[1, 2, 3, 4, 5, 6, 7], 2);
        let err = format!("{:#}", PackedSequences::load(dir.path(), Split::Train, 8).unwrap_err());
        assert!(err.contains("train.bin") && err.contains("7 bytes"), "{err}");

        let dir = fake_corpus(&le_bytes(&[10; 12]), 20);
        let err = format!("{:#}", PackedSequences::load(dir.path(), Split::Train, 8).unwrap_err());
        assert!(err.contains("train.bin") && err.contains("meta.json says 20"), "{err}");

        let dir = fake_corpus(&le_bytes(&[10, 500, 11]), 3);
        let err = format!("{:#}", PackedSequences::load(dir.path(), Split::Train, 8).unwrap_err());
        assert!(err.contains("token id 500"), "{err}");

        let err = format!("{:#}", PackedSequences::load(dir.path(), Split::Holdout, 8).unwrap_err());
        assert!(err.contains("holdout.bin"), "{err}");
    }
}
