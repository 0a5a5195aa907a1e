//! The WordPiece tokenizer: training a BERT-style one on our corpus, loading any HF
//! `tokenizer.json`, and finding the special-token ids the rest of repdef relies on.
//!
//! Training is not deterministic in tokenizers 0.23.2 (a few percent of ids permute between
//! runs), so a trained tokenizer is always saved next to the data it produced and reloaded
//! from there; never re-train to reproduce ids.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerImpl};

/// Special tokens of a trained tokenizer; the trainer assigns them ids 0..4 in this order.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Ids of the special tokens, whatever their spelling in the tokenizer (BERT or RoBERTa).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

impl SpecialIds {
    /// The ids repdef's own tokenizers give the special tokens: their order in [`SPECIAL_TOKENS`].
    pub const REPDEF: SpecialIds = SpecialIds { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 };

    /// Whether `id` is one of the special tokens.
    pub fn contains(&self, id: u32) -> bool {
        [self.pad, self.unk, self.cls, self.sep, self.mask].contains(&id)
    }

    /// Looks up each special token under its BERT name, then its RoBERTa name.
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self> {
        let find = |role: &str, bert: &str, roberta: &str| {
            special_id(tok, bert, roberta).ok_or_else(|| anyhow!("tokenizer has no {role} token (looked for `{bert}` and `{roberta}`)"))
        };
        Ok(Self {
            pad: find("padding", "[PAD]", "<pad>")?,
            unk: find("unknown", "[UNK]", "<unk>")?,
            cls: find("start (CLS)", "[CLS]", "<s>")?,
            sep: find("separator (SEP)", "[SEP]", "</s>")?,
            mask: find("mask", "[MASK]", "<mask>")?,
        })
    }
}

/// The id of a special token under its BERT name, else its RoBERTa name.
pub fn special_id(tok: &Tokenizer, bert: &str, roberta: &str) -> Option<u32> {
    tok.token_to_id(bert).or_else(|| tok.token_to_id(roberta))
}

/// The pipeline a trained tokenizer is built from, before it is erased into a `Tokenizer`.
type BertPipeline = TokenizerImpl<WordPiece, BertNormalizer, BertPreTokenizer, TemplateProcessing, WordPieceDecoder>;

/// The tokenizers crate returns boxed errors that `?` cannot convert; keep their message.
pub(super) fn tk_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!(e)
}

/// Trains a BERT-style WordPiece tokenizer on `texts` (documents, or their lines: the
/// pre-tokenizer splits on whitespace, so the word counts are the same).
///
/// `vocab_size` includes the five special tokens; a small corpus may yield fewer.
/// `lowercase` also strips accents, as in BERT's uncased models.
pub fn train_wordpiece<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize, lowercase: bool) -> Result<Tokenizer> {
    if vocab_size <= SPECIAL_TOKENS.len() {
        bail!("vocab size {vocab_size} leaves no room beside the 5 special tokens");
    }
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        // min_frequency 2 and limit_alphabet 1000 are the defaults of HF's Python
        // `BertWordPieceTokenizer.train`: rare characters and one-off words should not take
        // vocabulary slots.
        .min_frequency(2)
        .limit_alphabet(1000)
        .show_progress(false)
        .special_tokens(SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect())
        .build();
    let mut tok = BertPipeline::new(WordPiece::default());
    tok.with_normalizer(Some(BertNormalizer::new(true, true, Some(lowercase), lowercase))).map_err(tk_err)?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    tok.train(&mut trainer, texts).map_err(tk_err).context("training the WordPiece tokenizer")?;

    let mut tok: Tokenizer = tok.into();
    let ids = SpecialIds::from_tokenizer(&tok)?;
    let post = bert_template(("[CLS]".into(), ids.cls), ("[SEP]".into(), ids.sep))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` (type id 1 on `B [SEP]`), as HF's BERT tokenizers;
/// `cls` and `sep` are the tokens with their ids. Only used when a caller asks for special
/// tokens (our own packing adds them itself).
pub(super) fn bert_template((cls, cls_id): (String, u32), (sep, sep_id): (String, u32)) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single(format!("{cls} $A {sep}"))
        .map_err(|e| anyhow!(e))?
        .try_pair(format!("{cls} $A {sep} $B:1 {sep}:1"))
        .map_err(|e| anyhow!(e))?
        .special_tokens(vec![(cls, cls_id), (sep, sep_id)])
        .build()
        .map_err(|e| anyhow!(e))
}

/// Loads an HF `tokenizer.json`, with padding and truncation switched off: repdef packs
/// sequences itself and some published files force fixed padding (all-MiniLM pads to 128).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let mut tok =
        crate::panic_guard::catch_panics(|| Tokenizer::from_file(path).map_err(tk_err)).with_context(|| format!("loading tokenizer {}", path.display()))?;
    tok.with_padding(None);
    tok.with_truncation(None).map_err(tk_err).with_context(|| format!("disabling truncation in {}", path.display()))?;
    Ok(tok)
}

/// Token ids of `text` with no special tokens added.
pub fn encode_plain(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    // encode_fast skips the character offsets, which we never use.
    let enc = tok.encode_fast(text, false).map_err(tk_err)?;
    Ok(enc.get_ids().to_vec())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Paragraphs of the first 2000 lines of the bundled WikiText validation file.
    fn sample_texts() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/corpus/wikitext2_valid.txt");
        let text = std::fs::read_to_string(path).expect("bundled corpus is readable");
        let head: Vec<&str> = text.lines().take(2000).collect();
        head.split(|l| l.trim().is_empty()).map(|p| p.join("\n")).filter(|p| !p.is_empty()).collect()
    }

    /// One small tokenizer shared by the tests: training takes a noticeable fraction of a second.
    pub(crate) fn small_tokenizer() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| train_wordpiece(sample_texts().iter().map(String::as_str), 500, true).expect("training succeeds"))
    }

    #[test]
    fn special_tokens_get_ids_0_to_4() {
        let tok = small_tokenizer();
        for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(t), Some(i as u32), "{t}");
        }
        let ids = SpecialIds::from_tokenizer(tok).unwrap();
        assert_eq!(ids, SpecialIds::REPDEF);
        assert!(tok.get_vocab_size(true) <= 500);
    }

    #[test]
    fn encode_round_trips_and_adds_no_specials() {
        let tok = small_tokenizer();
        let text = "The lobster is a species of the eastern Atlantic Ocean.";
        let ids = encode_plain(tok, text).unwrap();
        assert!(ids.iter().all(|&i| i >= SPECIAL_TOKENS.len() as u32), "{ids:?}");
        let back = tok.decode(&ids, true).unwrap();
        assert_eq!(back, text.to_lowercase());
    }

    #[test]
    fn template_wraps_with_cls_and_sep() {
        let tok = small_tokenizer();
        let enc = tok.encode(("the sea", "a lobster"), true).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids[0], 2);
        assert_eq!(ids.iter().filter(|&&i| i == 3).count(), 2);
        assert_eq!(*ids.last().unwrap(), 3);
    }

    #[test]
    fn saved_tokenizer_loads_with_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = small_tokenizer();
        tok.save(&path, false).unwrap();
        let loaded = load_tokenizer(&path).unwrap();
        let text = "Homarus gammarus is a large crustacean";
        assert_eq!(encode_plain(&loaded, text).unwrap(), encode_plain(tok, text).unwrap());
    }

    #[test]
    fn roberta_names_are_understood() {
        let vocab = [("<s>", 0), ("<pad>", 1), ("</s>", 2), ("<unk>", 3), ("<mask>", 4)];
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab(vocab.iter().map(|(t, i)| (t.to_string(), *i)).collect())
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let ids = SpecialIds::from_tokenizer(&Tokenizer::new(model)).unwrap();
        assert_eq!(ids, SpecialIds { pad: 1, unk: 3, cls: 0, sep: 2, mask: 4 });
    }

    #[test]
    fn missing_special_token_is_named() {
        let model = tokenizers::models::wordlevel::WordLevel::builder()
            .vocab([("[UNK]".to_string(), 0u32)].into_iter().collect())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let err = SpecialIds::from_tokenizer(&Tokenizer::new(model)).unwrap_err().to_string();
        assert!(err.contains("`[PAD]`") && err.contains("`<pad>`"), "{err}");
    }

    #[test]
    fn a_file_the_tokenizers_crate_panics_on_is_an_error() {
        // Cut inside the decoder section, this file makes tokenizers 0.23 panic ("Helper").
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let whole = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hf-bert-tiny/tokenizer.json")).unwrap();
        std::fs::write(&path, &whole[..2425]).unwrap();
        let err = format!("{:#}", load_tokenizer(&path).unwrap_err());
        assert!(err.contains("tokenizer.json") && err.contains("malformed input"), "{err}");
    }

    #[test]
    fn load_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        let err = format!("{:#}", load_tokenizer(&path).unwrap_err());
        assert!(err.contains("nope.json"), "{err}");
    }
}
