//! The token sequences an analysis feeds a model: the holdout split of a prepared dir, or text
//! files tokenized with the model's own tokenizer; then this shard's share, up to the token budget.

use crate::data::corpus::read_meta;
use crate::data::packing::{PackedSequences, Split};
use crate::data::tokenizer::{encode_plain, load_tokenizer, SpecialIds};
use crate::spec::DataSource;
use crate::checkpoint::TOKENIZER_FILE;
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
                let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let text = String::from_utf8(bytes).map_err(|e| {
                    anyhow::anyhow!("{}: not valid UTF-8 (first bad byte at offset {})", path.display(), e.utf8_error().valid_up_to())
                })?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    stream.extend(encode_plain(tokenizer, line)?);
                }
                stream.push(special.sep);
            }
            PackedSequences::from_stream(&stream, seq_len, special.cls, special.sep)
                .with_context(|| format!("packing {} text file(s)", paths.len()))
        }
    }
}

/// Indices of the sequences this shard analyses: every `count`-th from `index`, until `tokens`.
pub fn shard_selection(n_sequences: usize, seq_len: usize, tokens: u64, (index, count): (usize, usize)) -> Vec<usize> {
    let wanted = tokens.div_ceil(seq_len as u64) as usize;
    (index..n_sequences).step_by(count).take(wanted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_sequences() {
        let all = shard_selection(10, 4, 40, (0, 1));
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let mut union: Vec<usize> = (0..3).flat_map(|i| shard_selection(10, 4, 40, (i, 3))).collect();
        union.sort_unstable();
        assert_eq!(union, all);
        assert_eq!(shard_selection(10, 4, 9, (0, 1)).len(), 3);
    }
}
