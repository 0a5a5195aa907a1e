//! The token sequences an analysis feeds a model: the holdout split of a prepared dir, or text
//! files tokenized with the model's own tokenizer; then this shard's share, up to the token budget.

use crate::checkpoint::TOKENIZER_FILE;
use crate::data::corpus::read_meta;
use crate::data::packing::{PackedSequences, Split};
use crate::data::textfile::read_text_file;
use crate::data::tokenizer::{encode_plain, load_tokenizer, SpecialIds};
use crate::spec::DataSource;
use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

/// Packed sequences of `seq_len` tokens for a model with tokenizer `tokenizer`.
pub fn load_sequences(source: &DataSource, tokenizer: &Tokenizer, seq_len: usize) -> Result<PackedSequences> {
    match source {
        DataSource::Prepared(dir) => {
            read_meta(dir)?;
            let data_tokenizer = load_tokenizer(&dir.join(TOKENIZER_FILE))?;
            if data_tokenizer.get_vocab(true) != tokenizer.get_vocab(true) {
                bail!(
                    "{}: prepared with a different tokenizer than the model's; give the text files instead so each model tokenizes them itself",
                    dir.display()
                );
            }
            PackedSequences::load(dir, Split::Holdout, seq_len)
        }
        DataSource::TextFiles(paths) => {
            let special = SpecialIds::from_tokenizer(tokenizer)?;
            let mut stream = Vec::new();
            for path in paths {
                let (_, text) = read_text_file(path)?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    stream.extend(encode_plain(tokenizer, line)?);
                }
                stream.push(special.sep);
            }
            PackedSequences::from_stream(&stream, seq_len, special.cls, special.sep).with_context(|| format!("packing {} text file(s)", paths.len()))
        }
    }
}

/// Indices of the sequences this shard analyses: the unsharded analysis takes the first
/// ⌈tokens / seq_len⌉ sequences, and shard `index` of `count` every `count`-th of those from
/// `index`, so the shards of one split partition exactly the unsharded selection.
pub fn shard_selection(n_sequences: usize, seq_len: usize, tokens: u64, (index, count): (usize, usize)) -> Vec<usize> {
    let wanted = tokens.div_ceil(seq_len as u64) as usize;
    (index..n_sequences.min(wanted)).step_by(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
    }

    #[test]
    fn text_files_read_as_prepare_reads_them_gzip_included_and_an_empty_one_is_named() {
        let tokenizer = load_tokenizer(&fixture("repdef-tiny-mlm/tokenizer.json")).unwrap();
        let plain = fixture("corpus/wikitext2_valid.txt");
        let dir = tempfile::tempdir().unwrap();
        let gzipped = dir.path().join("valid.txt.gz");
        let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gzipped).unwrap(), flate2::Compression::fast());
        encoder.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        encoder.finish().unwrap();
        let packed = |path: &Path| load_sequences(&DataSource::TextFiles(vec![path.to_path_buf()]), &tokenizer, 64);
        let from_plain = packed(&plain).unwrap();
        assert!(from_plain.len() > 100, "{} sequences", from_plain.len());
        assert_eq!(packed(&gzipped).unwrap(), from_plain);

        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, " \n\n").unwrap();
        let err = format!("{:#}", packed(&empty).unwrap_err());
        assert!(err.contains("empty.txt: no text"), "{err}");
    }

    #[test]
    fn shards_partition_the_unsharded_selection() {
        for n_sequences in 0..12 {
            for tokens in 1..60 {
                let all = shard_selection(n_sequences, 4, tokens, (0, 1));
                assert_eq!(all, (0..n_sequences.min(tokens.div_ceil(4) as usize)).collect::<Vec<_>>());
                for count in 1..5 {
                    let mut union: Vec<usize> = (0..count).flat_map(|i| shard_selection(n_sequences, 4, tokens, (i, count))).collect();
                    union.sort_unstable();
                    assert_eq!(union, all, "{n_sequences} sequences, {tokens} tokens, {count} shards");
                }
            }
        }
    }
}
