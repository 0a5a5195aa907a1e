//! The tokenizer of a model directory, as checkpoints ship it: a `tokenizer.json`, a BERT
//! `vocab.txt` (WordPiece) or a RoBERTa `vocab.json` + `merges.txt` (byte-level BPE), with the
//! settings of the `tokenizer_config.json` beside the vocabulary; looked for in the model's
//! directory, then in its parent, unless the user names one (`--tokenizer`).
//!
//! Vocab-only tokenizers are assembled from the `tokenizers` crate's own models, normalisers and
//! pre-tokenizers, configured as `transformers` configures them for the same files; the ids
//! are checked against `transformers` in `fixtures/golden/vocab_layout_ids.json`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::corpus::TOKENIZER_FILE;
use super::tokenizer::{bert_template, load_tokenizer, tk_err};

const WORDPIECE_VOCAB: &str = "vocab.txt";
const BPE_VOCAB: &str = "vocab.json";
const BPE_MERGES: &str = "merges.txt";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// The files a tokenizer is made from.
#[derive(Debug, Clone, PartialEq)]
enum TokenizerFiles {
    Json(PathBuf),
    WordPiece { vocab: PathBuf },
    ByteLevelBpe { vocab: PathBuf, merges: PathBuf },
}

impl TokenizerFiles {
    /// The tokenizer files in `dir`, by preference: `tokenizer.json`, `vocab.txt`, `vocab.json` + `merges.txt`.
    fn in_dir(dir: &Path) -> Option<Self> {
        let json = dir.join(TOKENIZER_FILE);
        let wordpiece = dir.join(WORDPIECE_VOCAB);
        let (vocab, merges) = (dir.join(BPE_VOCAB), dir.join(BPE_MERGES));
        if json.is_file() {
            Some(Self::Json(json))
        } else if wordpiece.is_file() {
            Some(Self::WordPiece { vocab: wordpiece })
        } else if vocab.is_file() && merges.is_file() {
            Some(Self::ByteLevelBpe { vocab, merges })
        } else {
            None
        }
    }

    /// The tokenizer a user names: a directory holding one, or one of its files.
    fn at(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::in_dir(path).ok_or_else(|| anyhow!("{}: no {TOKENIZER_FILE}, {WORDPIECE_VOCAB} or {BPE_VOCAB} + {BPE_MERGES} in it", path.display()));
        }
        if !path.is_file() {
            bail!("{}: no such tokenizer file or directory", path.display());
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let beside = |file: &str| path.with_file_name(file);
        Ok(match name {
            BPE_VOCAB | BPE_MERGES => {
                let (vocab, merges) = (beside(BPE_VOCAB), beside(BPE_MERGES));
                if !(vocab.is_file() && merges.is_file()) {
                    bail!("{}: a byte-level BPE tokenizer needs both {BPE_VOCAB} and {BPE_MERGES} in one directory", path.display());
                }
                Self::ByteLevelBpe { vocab, merges }
            }
            _ if name.ends_with(".txt") => Self::WordPiece { vocab: path.to_path_buf() },
            _ => Self::Json(path.to_path_buf()),
        })
    }

    /// The file that names this tokenizer in messages.
    fn main_file(&self) -> &Path {
        match self {
            Self::Json(path) | Self::WordPiece { vocab: path } | Self::ByteLevelBpe { vocab: path, .. } => path,
        }
    }

    fn load(&self) -> Result<Tokenizer> {
        match self {
            Self::Json(path) => load_tokenizer(path),
            Self::WordPiece { vocab } => {
                let settings = TokenizerSettings::beside(vocab)?;
                wordpiece_tokenizer(vocab, &settings).with_context(|| format!("building a WordPiece tokenizer from {}", vocab.display()))
            }
            Self::ByteLevelBpe { vocab, merges } => {
                let settings = TokenizerSettings::beside(vocab)?;
                byte_level_bpe_tokenizer(vocab, merges, &settings)
                    .with_context(|| format!("building a byte-level BPE tokenizer from {} and {}", vocab.display(), merges.display()))
            }
        }
    }
}

/// Loads the tokenizer of the model in `model_dir`, or the one at `explicit`; returns it with
/// the file it came from.
pub fn model_tokenizer(model_dir: &Path, explicit: Option<&Path>) -> Result<(Tokenizer, PathBuf)> {
    let files = match explicit {
        Some(path) => {
            let given = TokenizerFiles::at(path)?;
            let tokenizer = given.load()?;
            // A model that ships a tokenizer must be run with its vocabulary: another one of the
            // same size would load, and every id would mean another word.
            if let Some(own) = TokenizerFiles::in_dir(model_dir) {
                if own.load()?.get_vocab(true) != tokenizer.get_vocab(true) {
                    bail!(
                        "{}: another vocabulary than the model's own {}: the tokenizer does not belong to this model (--tokenizer is for a model without one)",
                        path.display(),
                        own.main_file().display()
                    );
                }
            }
            return Ok((tokenizer, given.main_file().to_path_buf()));
        }
        None => {
            let parent = model_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            TokenizerFiles::in_dir(model_dir).or_else(|| TokenizerFiles::in_dir(parent)).ok_or_else(|| {
                anyhow!(
                    "{}: no tokenizer ({TOKENIZER_FILE}, {WORDPIECE_VOCAB}, or {BPE_VOCAB} + {BPE_MERGES}) in it or in {}; name one with --tokenizer PATH",
                    model_dir.display(),
                    parent.display()
                )
            })?
        }
    };
    Ok((files.load()?, files.main_file().to_path_buf()))
}

/// A special token in `tokenizer_config.json`: a plain string or an added-token object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Name(String),
    Added {
        content: String,
        #[serde(default)]
        lstrip: bool,
        #[serde(default)]
        rstrip: bool,
    },
}

impl SpecialToken {
    fn named(name: &str) -> Self {
        Self::Name(name.to_string())
    }

    fn content(&self) -> &str {
        match self {
            Self::Name(content) | Self::Added { content, .. } => content,
        }
    }

    fn added_token(&self) -> AddedToken {
        match self {
            Self::Name(content) => AddedToken::from(content.clone(), true),
            Self::Added { content, lstrip, rstrip } => AddedToken::from(content.clone(), true).lstrip(*lstrip).rstrip(*rstrip),
        }
    }
}

/// The settings of `tokenizer_config.json` that change ids (other keys are ignored); absent keys
/// take `transformers`' defaults for the tokenizer family.
#[derive(Debug, Default, Deserialize)]
struct TokenizerSettings {
    do_lower_case: Option<bool>,
    tokenize_chinese_chars: Option<bool>,
    strip_accents: Option<bool>,
    add_prefix_space: Option<bool>,
    unk_token: Option<SpecialToken>,
    sep_token: Option<SpecialToken>,
    pad_token: Option<SpecialToken>,
    cls_token: Option<SpecialToken>,
    mask_token: Option<SpecialToken>,
}

impl TokenizerSettings {
    /// The settings in the `tokenizer_config.json` beside `vocab`, or the defaults without one.
    fn beside(vocab: &Path) -> Result<Self> {
        let path = vocab.with_file_name(TOKENIZER_CONFIG);
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a valid tokenizer config ({e})", path.display()))
    }

    /// Unknown, separator, padding, start and mask tokens, with `defaults` for those not set.
    fn specials(&self, defaults: [&str; 5]) -> [SpecialToken; 5] {
        let [unk, sep, pad, cls, mask] = defaults;
        let pick = |set: &Option<SpecialToken>, default: &str| set.clone().unwrap_or_else(|| SpecialToken::named(default));
        [pick(&self.unk_token, unk), pick(&self.sep_token, sep), pick(&self.pad_token, pad), pick(&self.cls_token, cls), pick(&self.mask_token, mask)]
    }
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| anyhow!("{}: path is not valid UTF-8", path.display()))
}

/// Registers the special tokens, each of which must be in the vocabulary already (adding one
/// would give it an id past the model's embedding table).
fn add_specials(tok: &mut Tokenizer, specials: &[SpecialToken; 5], vocab: &Path) -> Result<()> {
    if let Some(missing) = specials.iter().find(|t| tok.token_to_id(t.content()).is_none()) {
        bail!("{}: special token {:?} is not in the vocabulary (set it in {TOKENIZER_CONFIG})", vocab.display(), missing.content());
    }
    tok.add_special_tokens(specials.iter().map(SpecialToken::added_token).collect::<Vec<_>>()).map_err(tk_err)?;
    Ok(())
}

/// A special token with its id (`add_specials` checked that it has one).
fn with_id(tok: &Tokenizer, token: &SpecialToken) -> (String, u32) {
    (token.content().to_string(), tok.token_to_id(token.content()).expect("special tokens are in the vocabulary"))
}

/// BERT's tokenizer for a `vocab.txt`, as `transformers`' `BertTokenizer` builds it: BERT
/// normalisation (lower-casing and accent stripping by `do_lower_case` / `strip_accents`, CJK
/// characters split), whitespace-and-punctuation pre-tokenisation, `##` WordPiece.
fn wordpiece_tokenizer(vocab: &Path, settings: &TokenizerSettings) -> Result<Tokenizer> {
    let specials = settings.specials(["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]);
    let [unk, sep, _, cls, _] = &specials;
    let model = WordPiece::from_file(path_text(vocab)?)
        .unk_token(unk.content().to_string())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(tk_err)?;
    let lowercase = settings.do_lower_case.unwrap_or(true);
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, settings.tokenize_chinese_chars.unwrap_or(true), settings.strip_accents, lowercase))).map_err(tk_err)?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    add_specials(&mut tok, &specials, vocab)?;
    let post = bert_template(with_id(&tok, cls), with_id(&tok, sep))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// RoBERTa's tokenizer for a `vocab.json` + `merges.txt`, as `transformers`' `RobertaTokenizer`
/// builds it: byte-level pre-tokenisation (GPT-2's regex, `add_prefix_space` from the config),
/// BPE, `<s> A </s></s> B </s>` around inputs.
fn byte_level_bpe_tokenizer(vocab: &Path, merges: &Path, settings: &TokenizerSettings) -> Result<Tokenizer> {
    let specials = settings.specials(["<unk>", "</s>", "<pad>", "<s>", "<mask>"]);
    let [_, sep, _, cls, _] = &specials;
    let model = BPE::from_file(path_text(vocab)?, path_text(merges)?).build().map_err(tk_err)?;
    let add_prefix_space = settings.add_prefix_space.unwrap_or(false);
    let byte_level = ByteLevel::new(add_prefix_space, true, true);
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(byte_level));
    tok.with_decoder(Some(byte_level));
    add_specials(&mut tok, &specials, vocab)?;
    let post = RobertaProcessing::new(with_id(&tok, sep), with_id(&tok, cls)).trim_offsets(true).add_prefix_space(add_prefix_space);
    tok.with_post_processor(Some(post));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::encode_plain;

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
    }

    /// `fixtures/golden/vocab_layout_ids.json`, made by `make_vocab_layouts.py` with `transformers`.
    fn golden() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture("golden/vocab_layout_ids.json")).unwrap()).unwrap()
    }

    fn as_ids(value: &serde_json::Value) -> Vec<u32> {
        value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    }

    /// Compares `tok` with the ids `transformers` gave for every golden text and the pair.
    fn assert_matches_transformers(tok: &Tokenizer, golden: &serde_json::Value, expected: &serde_json::Value, what: &str) {
        for (text, want) in golden["texts"].as_array().unwrap().iter().zip(expected["plain"].as_array().unwrap()) {
            let text = text.as_str().unwrap();
            assert_eq!(encode_plain(tok, text).unwrap(), as_ids(want), "{what}: {text:?}");
        }
        let pair = &golden["pair"];
        let encoding = tok.encode((pair[0].as_str().unwrap(), pair[1].as_str().unwrap()), true).unwrap();
        assert_eq!(encoding.get_ids(), as_ids(&expected["pair"]), "{what}: sentence pair");
        if let Some(types) = expected["pair_token_types"].as_array() {
            assert_eq!(encoding.get_type_ids(), as_ids(&serde_json::Value::from(types.clone())), "{what}: pair token types");
        }
    }

    #[test]
    fn bert_vocab_txt_gives_transformers_ids_for_every_config_variant() {
        let golden = golden();
        let variants = golden["bert_vocab_txt"].as_object().unwrap();
        assert_eq!(variants.len(), 4);
        for (name, expected) in variants {
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(fixture("hf-bert-vocab/vocab.txt"), dir.path().join(WORDPIECE_VOCAB)).unwrap();
            std::fs::write(dir.path().join(TOKENIZER_CONFIG), expected["tokenizer_config"].to_string()).unwrap();
            let (tok, source) = model_tokenizer(dir.path(), None).unwrap();
            assert_eq!(source, dir.path().join(WORDPIECE_VOCAB));
            assert_matches_transformers(&tok, &golden, expected, name);
        }
    }

    #[test]
    fn roberta_vocab_json_and_merges_give_transformers_ids() {
        let golden = golden();
        let (tok, source) = model_tokenizer(&fixture("hf-roberta-bpe"), None).unwrap();
        assert_eq!(source, fixture("hf-roberta-bpe/vocab.json"));
        assert_matches_transformers(&tok, &golden, &golden["roberta_vocab_json_merges"]["default"], "roberta");
    }

    #[test]
    fn vocab_only_tokenizers_agree_with_the_tokenizer_json_they_came_from() {
        let text = "Homarus gammarus is a large crustacean, up to 60 cm long.";
        for (json_dir, vocab_dir) in [("hf-bert-tiny", "hf-bert-vocab"), ("hf-roberta-tiny", "hf-roberta-bpe")] {
            let (from_json, _) = model_tokenizer(&fixture(json_dir), None).unwrap();
            let (from_vocab, _) = model_tokenizer(&fixture(vocab_dir), None).unwrap();
            assert_eq!(encode_plain(&from_vocab, text).unwrap(), encode_plain(&from_json, text).unwrap(), "{vocab_dir}");
        }
    }

    #[test]
    fn the_parent_directory_and_an_explicit_path_are_searched() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("checkpoint-500");
        std::fs::create_dir(&model).unwrap();
        std::fs::copy(fixture("hf-bert-vocab/vocab.txt"), root.path().join(WORDPIECE_VOCAB)).unwrap();
        assert_eq!(model_tokenizer(&model, None).unwrap().1, root.path().join(WORDPIECE_VOCAB));
        // An explicit tokenizer wins over the one found by the rules.
        let json = fixture("hf-bert-tiny/tokenizer.json");
        assert_eq!(model_tokenizer(&model, Some(&json)).unwrap().1, json);
        assert_eq!(model_tokenizer(&model, Some(&fixture("hf-roberta-bpe/merges.txt"))).unwrap().1, fixture("hf-roberta-bpe/vocab.json"));
        assert_eq!(model_tokenizer(&model, Some(&fixture("hf-roberta-bpe"))).unwrap().1, fixture("hf-roberta-bpe/vocab.json"));
    }

    #[test]
    fn missing_and_corrupt_tokenizers_are_named() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let err = format!("{:#}", model_tokenizer(&model, None).unwrap_err());
        assert!(err.contains("no tokenizer") && err.contains("--tokenizer"), "{err}");
        let err = format!("{:#}", model_tokenizer(&model, Some(&root.path().join("nope.txt"))).unwrap_err());
        assert!(err.contains("nope.txt"), "{err}");

        std::fs::copy(fixture("hf-bert-vocab/vocab.txt"), model.join(WORDPIECE_VOCAB)).unwrap();
        std::fs::write(model.join(TOKENIZER_CONFIG), "{not json").unwrap();
        let err = format!("{:#}", model_tokenizer(&model, None).unwrap_err());
        assert!(err.contains(TOKENIZER_CONFIG) && err.contains("not a valid tokenizer config"), "{err}");
        std::fs::write(model.join(TOKENIZER_CONFIG), r#"{"mask_token": "<mask>"}"#).unwrap();
        let err = format!("{:#}", model_tokenizer(&model, None).unwrap_err());
        assert!(err.contains("vocab.txt") && err.contains("\"<mask>\" is not in the vocabulary"), "{err}");
    }
}
