//! From examples to encoder batches: tokenisation with the model's own tokenizer (special tokens
//! added, truncated to a maximum length), and length-bucketed batch orders, so a batch pads only
//! to the longest of similar-length examples instead of to the longest in the data set.

use super::tasks::Example;
use crate::config::ModelConfig;
use crate::model::EncoderInput;
use crate::rng::Rng;
use anyhow::{anyhow, ensure, Result};
use candle_core::Device;
use tokenizers::{EncodeInput, Tokenizer, TruncationParams};

/// How many batches' worth of shuffled examples are sorted by length together: large enough
/// that batches are nearly uniform in length, small enough that the epoch order stays random.
const BUCKET_BATCHES: usize = 50;

/// One tokenised example.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// `[CLS] a [SEP] (b [SEP])`, or the model family's equivalent.
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether each position is a special token, as recorded by the tokenizer.
    pub special: Vec<bool>,
    /// The class id or score (see `Example::target`).
    pub target: f64,
}

/// Tokenises `examples` with special tokens, each truncated to `max_len` tokens (the longer
/// sentence of a pair first). The classifier reads the first position, so it must be the
/// tokenizer's start token.
pub fn encode(tokenizer: &Tokenizer, examples: &[Example], max_len: usize) -> Result<Vec<Encoded>> {
    let mut tokenizer = tokenizer.clone();
    tokenizer.with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() })).map_err(|e| anyhow!(e))?;
    let inputs: Vec<EncodeInput> = examples
        .iter()
        .map(|e| match &e.pair {
            Some(b) => (e.text.as_str(), b.as_str()).into(),
            None => e.text.as_str().into(),
        })
        .collect();
    let encodings = tokenizer.encode_batch_fast(inputs, true).map_err(|e| anyhow!(e))?;
    let encoded: Vec<Encoded> = encodings
        .iter()
        .zip(examples)
        .map(|(enc, example)| Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            special: enc.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
            target: example.target,
        })
        .collect();
    ensure!(
        encoded.iter().all(|e| e.special.first() == Some(&true)),
        "the tokenizer adds no start token ([CLS] or <s>) for the classifier to read; its tokenizer.json needs a post-processor"
    );
    Ok(encoded)
}

/// A padded batch: the encoder input and the targets, in batch order.
pub struct Batch {
    pub input: EncoderInput,
    pub targets: Vec<f64>,
}

/// Pads `examples` to the longest of them; the attention mask comes from the padding id.
pub fn collate(config: &ModelConfig, examples: &[&Encoded], device: &Device) -> Result<Batch> {
    let pos = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let padded = |field: fn(&Encoded) -> &[u32], pad: u32| -> Vec<u32> {
        examples.iter().flat_map(|e| field(e).iter().copied().chain(std::iter::repeat_n(pad, pos - field(e).len()))).collect()
    };
    let ids = padded(|e| e.ids.as_slice(), config.pad_token_id);
    let type_ids = padded(|e| e.type_ids.as_slice(), 0);
    Ok(Batch { input: EncoderInput::from_ids(config, &ids, Some(&type_ids), examples.len(), device)?, targets: examples.iter().map(|e| e.target).collect() })
}

/// One epoch's training order: shuffled, then sorted by length within buckets of
/// `BUCKET_BATCHES` batches, cut into batches, and the batches shuffled.
pub fn train_batches(lengths: &[usize], batch_size: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches: Vec<Vec<usize>> = order.chunks_mut(batch_size * BUCKET_BATCHES).flat_map(|bucket| sorted_batches(bucket, lengths, batch_size)).collect();
    rng.shuffle(&mut batches);
    batches
}

/// Evaluation order: all examples sorted by length, cut into batches.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    sorted_batches(&mut (0..lengths.len()).collect::<Vec<_>>(), lengths, batch_size)
}

fn sorted_batches(indices: &mut [usize], lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    indices.sort_by_key(|&i| lengths[i]);
    indices.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{load_encoder, TOKENIZER_FILE};
    use crate::data::tokenizer::load_tokenizer;
    use std::path::Path;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
    }

    fn example(text: &str, pair: Option<&str>) -> Example {
        Example { target: 1.0, text: text.into(), pair: pair.map(String::from) }
    }

    #[test]
    fn encodes_with_special_tokens_truncates_and_marks_pairs() {
        let tokenizer = load_tokenizer(&fixture("repdef-tiny-mlm").join(TOKENIZER_FILE)).unwrap();
        let long = "the film is a long and winding story about the sea and the city";
        let encoded = encode(&tokenizer, &[example("the film", None), example(long, None), example("the sea", Some("the city"))], 8).unwrap();
        assert_eq!(encoded[0].special.first(), Some(&true));
        assert_eq!(encoded[0].special.last(), Some(&true));
        assert_eq!(encoded[1].ids.len(), 8, "truncated to max_len");
        assert_eq!(encoded[1].special.last(), Some(&true), "truncation keeps the final [SEP]");
        assert!(encoded[2].type_ids.contains(&1), "the second sentence has token type 1");
    }

    #[test]
    fn collate_pads_and_masks() {
        let loaded = load_encoder(&fixture("repdef-tiny-mlm"), None, &Device::Cpu).unwrap();
        let encoded = encode(&loaded.tokenizer, &[example("the film", None), example("the film is about the sea", None)], 64).unwrap();
        let batch = collate(&loaded.config, &[&encoded[0], &encoded[1]], &Device::Cpu).unwrap();
        let mask = batch.input.attention_mask.to_vec2::<u8>().unwrap();
        assert_eq!(mask[1].len(), encoded[1].ids.len());
        assert_eq!(mask[0].iter().filter(|&&m| m == 1).count(), encoded[0].ids.len());
        assert_eq!(batch.targets, vec![1.0, 1.0]);
    }

    #[test]
    fn batches_cover_every_example_once_with_similar_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 61 + 3).collect();
        let batches = train_batches(&lengths, 8, &mut Rng::new(1));
        let mut seen: Vec<usize> = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        let spread: usize = batches.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap()).sum();
        assert!(spread < batches.len() * 3, "mean length spread per batch {}", spread as f64 / batches.len() as f64);
        assert_ne!(batches, train_batches(&lengths, 8, &mut Rng::new(2)), "the order depends on the seed");
        assert_eq!(eval_batches(&lengths, 8).len(), 125);
    }
}
