//! Model and training configuration: HF-compatible `config.json`, presets, and `--set` overrides.
//!
//! `ModelConfig` *is* HuggingFace's `BertConfig`/`RobertaConfig` (same field names), plus one
//! nested `repdef` object for what HF has no field for (objective, decoder depth, masking).
//! `TrainConfig` is `train_config.json`: plain data, one concern per group.

use crate::data::tokenizer::SpecialIds;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which pretraining objective produced (or will produce) a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// BERT/RoBERTa masked language modelling: `[MASK]` tokens go through the encoder.
    Mlm,
    /// MAE-LM: picked positions are removed from the encoder; a shallow decoder predicts them.
    MaeLm,
    /// ELECTRA's discriminator (replaced-token detection): its input never holds `[MASK]`. Only
    /// analysed (a checkpoint's), never trained by repdef, and part of no claim.
    #[value(skip)]
    ReplacedTokenDetection,
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Mlm => "MLM",
            Objective::MaeLm => "MAE-LM",
            Objective::ReplacedTokenDetection => "RTD",
        })
    }
}

/// How picked positions are corrupted in the input (DESIGN §1, "Masking in the paper").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MaskPolicy {
    /// The paper's setting: every picked position becomes `[MASK]`.
    AllMask,
    /// BERT's 80/10/10: `[MASK]` / random token / unchanged.
    Bert,
}

/// Masking parameters; shared by training, evaluation and the analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Fraction of (non-special) positions picked per sequence; the count is rounded probabilistically.
    pub prob: f64,
    pub policy: MaskPolicy,
    /// MAE-LM ablation δ: fraction of picked positions kept as `[MASK]` in the encoder (0 = MAE-LM).
    pub keep_mask_frac: f64,
    /// Never pick `[CLS]`/`[SEP]`/`[PAD]` (the official code allows it; repdef protects them).
    pub protect_special: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig { prob: 0.15, policy: MaskPolicy::AllMask, keep_mask_frac: 0.0, protect_special: true }
    }
}

/// repdef's own fields inside `config.json` (HF keeps unknown keys as attributes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepdefFields {
    pub objective: Objective,
    /// MAE-LM decoder depth (0 for MLM).
    pub decoder_layers: usize,
    /// MAE-LM only: the decoder adds its own relative-position bias table (the official code's
    /// `--decoder-rel-pos 1`; same buckets and max distance as the encoder's, contiguous
    /// positions). Off by default, as in the released pretraining script.
    #[serde(default)]
    pub decoder_relative_attention: bool,
    /// Id of `[MASK]`: its embedding row is the MAE-LM decoder's placeholder.
    pub mask_token_id: u32,
    pub mask: MaskConfig,
}

/// HuggingFace `BertConfig` / `RobertaConfig` / `ElectraConfig` fields that repdef reads, with
/// HF's defaults (a `DistilBertConfig` is translated into them on loading).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// 0 for encoders without token-type embeddings (DistilBERT).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// ELECTRA: width of the embeddings, projected to `hidden_size` before the first block
    /// (`embeddings_project`); absent when they have the model's width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Buckets of the T5-style relative-position bias added to the attention logits (the
    /// official MAE-LM encoders'; `model::relative_position`); 0 = absolute positions only, as
    /// in HF BERT/RoBERTa.
    #[serde(default)]
    pub relative_attention_num_buckets: usize,
    /// Distance at which the relative bias's logarithmic buckets reach the last one.
    #[serde(default = "default_relative_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repdef: Option<RepdefFields>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_relative_max_distance() -> usize {
    128
}

/// A `DistilBertConfig` (`dim`, `n_layers`, …) as the BERT config of the same encoder: DistilBERT
/// is a post-LN BERT without token types or pooler, with LayerNorm ε fixed at 1e-12. Other configs
/// pass through unchanged.
fn distilbert_as_bert(value: serde_json::Value) -> serde_json::Value {
    if value["model_type"] != "distilbert" {
        return value;
    }
    let mut bert = serde_json::Map::new();
    let renames = [
        ("dim", "hidden_size"),
        ("n_layers", "num_hidden_layers"),
        ("n_heads", "num_attention_heads"),
        ("hidden_dim", "intermediate_size"),
        ("activation", "hidden_act"),
        ("dropout", "hidden_dropout_prob"),
        ("attention_dropout", "attention_probs_dropout_prob"),
    ];
    for (key, field) in value.as_object().into_iter().flatten() {
        let name = renames.iter().find(|(from, _)| from == key).map_or(key.as_str(), |(_, to)| to);
        bert.insert(name.to_string(), field.clone());
    }
    bert.insert("type_vocab_size".into(), 0.into());
    bert.insert("layer_norm_eps".into(), 1e-12.into());
    serde_json::Value::Object(bert)
}

/// A config as transformers reads it where its family's defaults differ from BERT's: RoBERTa's
/// configs (`RobertaConfig`, `XLMRobertaConfig`, `CamembertConfig`) pad with id 1, not 0, when
/// `pad_token_id` is left out, and the padding index also offsets their position ids.
fn with_family_defaults(mut value: serde_json::Value) -> serde_json::Value {
    let roberta = matches!(value["model_type"].as_str(), Some("roberta" | "xlm-roberta" | "camembert"));
    if let (true, Some(fields)) = (roberta, value.as_object_mut()) {
        fields.entry("pad_token_id").or_insert(1.into());
    }
    value
}

/// The encoder families repdef implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Bert,
    /// RoBERTa: position ids start after `pad_token_id` and skip padding.
    Roberta,
}

impl ModelConfig {
    pub fn family(&self) -> Family {
        match self.model_type.as_str() {
            "roberta" | "xlm-roberta" | "camembert" => Family::Roberta,
            _ => Family::Bert,
        }
    }

    /// The longest token sequence the position embeddings allow: RoBERTa's positions start
    /// after the padding index, so it fits `pad_token_id + 1` fewer tokens than BERT.
    pub fn max_tokens(&self) -> usize {
        match self.family() {
            Family::Bert => self.max_position_embeddings,
            Family::Roberta => self.max_position_embeddings.saturating_sub(self.pad_token_id as usize + 1),
        }
    }

    pub fn d_head(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Width of the input embeddings (and of the MLM head's transform): `embedding_size` for
    /// ELECTRA, else `hidden_size`.
    pub fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// repdef's own objective, else what the checkpoint's architecture says: an ELECTRA model not
    /// exported for masked LM is a discriminator; every other foreign encoder is MLM-pretrained.
    pub fn objective(&self) -> Objective {
        if let Some(repdef) = &self.repdef {
            return repdef.objective;
        }
        let masked_lm = self.architectures.iter().any(|a| a.ends_with("ForMaskedLM"));
        if self.model_type == "electra" && !masked_lm {
            return Objective::ReplacedTokenDetection;
        }
        Objective::Mlm
    }

    pub fn decoder_layers(&self) -> usize {
        self.repdef.as_ref().map_or(0, |r| r.decoder_layers)
    }

    /// Reads `config.json`, checking that repdef implements what it describes.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not a valid model config", path.display()))?;
        let config: ModelConfig =
            serde_json::from_value(distilbert_as_bert(with_family_defaults(value))).with_context(|| format!("{}: not a valid model config", path.display()))?;
        config.validate().with_context(|| format!("{}: unsupported model config", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let known = ["bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra"];
        if !known.contains(&self.model_type.as_str()) {
            bail!("model_type {:?} is not an encoder repdef implements (known: {})", self.model_type, known.join(", "));
        }
        if self.embedding_size == Some(0) {
            bail!("embedding_size must be positive");
        }
        if self.position_embedding_type != "absolute" {
            bail!("position_embedding_type {:?}: only \"absolute\" is implemented", self.position_embedding_type);
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            bail!("hidden_size {} is not divisible by num_attention_heads {}", self.hidden_size, self.num_attention_heads);
        }
        crate::model::Activation::parse(&self.hidden_act)?;
        if let Some(repdef) = self.repdef.as_ref().filter(|r| r.decoder_relative_attention) {
            if repdef.objective != Objective::MaeLm {
                bail!("repdef.decoder_relative_attention applies only to MAE-LM (an MLM model has no decoder)");
            }
            if self.relative_attention_num_buckets == 0 {
                bail!("repdef.decoder_relative_attention needs relative_attention_num_buckets > 0 (the decoder's table uses the encoder's bucketing)");
            }
        }
        crate::model::relative_position::validate(self.relative_attention_num_buckets, self.relative_attention_max_distance)
    }

    /// Whether HF `transformers` can load the encoder as a plain `BertModel`/`RobertaModel`
    /// (it has no relative-position bias).
    pub fn is_plain_hf(&self) -> bool {
        self.relative_attention_num_buckets == 0
    }
}

/// Named model sizes (DESIGN: `tiny` for tests, `mini`/`small`/`base` for experiments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    Tiny,
    Mini,
    Small,
    Base,
}

impl Preset {
    /// A BERT config for this size; `vocab_size` comes from the prepared data.
    pub fn model_config(self, vocab_size: usize, special: &SpecialIds, objective: Objective, mask: MaskConfig) -> ModelConfig {
        // (layers, d_model, heads, d_mlp, max positions, decoder layers)
        let (layers, d_model, heads, d_mlp, max_pos, decoder) = match self {
            Preset::Tiny => (2, 64, 2, 256, 128, 1),
            Preset::Mini => (4, 256, 4, 1024, 512, 2),
            Preset::Small => (6, 512, 8, 2048, 512, 2),
            Preset::Base => (12, 768, 12, 3072, 512, 4),
        };
        let architectures = match objective {
            Objective::Mlm => vec!["BertForMaskedLM".to_string()],
            Objective::MaeLm => vec!["BertModel".to_string()],
            Objective::ReplacedTokenDetection => unreachable!("repdef trains MLM and MAE-LM models only"),
        };
        ModelConfig {
            model_type: "bert".into(),
            architectures,
            vocab_size,
            hidden_size: d_model,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: d_mlp,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: max_pos,
            type_vocab_size: 2,
            embedding_size: None,
            layer_norm_eps: 1e-12,
            initializer_range: crate::model::init::width_scaled_std(d_model),
            pad_token_id: special.pad,
            position_embedding_type: "absolute".into(),
            relative_attention_num_buckets: 0,
            relative_attention_max_distance: default_relative_max_distance(),
            repdef: Some(RepdefFields {
                objective,
                decoder_layers: if objective == Objective::MaeLm { decoder } else { 0 },
                decoder_relative_attention: false,
                mask_token_id: special.mask,
                mask,
            }),
        }
    }
}

/// `train_config.json`: everything that determines a training run besides the model shape and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub objective: Objective,
    pub preset: Preset,
    pub seed: u64,
    /// Optimiser steps.
    pub steps: u64,
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    pub seq_len: usize,
    /// Peak learning rate, reached after `warmup_steps` and decayed linearly to 0 at `steps`.
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global gradient-norm clipping threshold (0 disables clipping).
    pub grad_clip: f64,
    pub mask: MaskConfig,
    /// Print/record a training line every this many steps.
    pub log_every: u64,
    /// Evaluate masked-token loss/accuracy on the holdout every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Holdout sequences used per evaluation.
    pub eval_sequences: usize,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
}

impl TrainConfig {
    /// Defaults per preset. The learning rates are the largest that trained stably at each size:
    /// small models need a high rate to leave the unigram plateau (DESIGN §1, "Scale matters").
    /// `steps` overrides the preset's default length; warmup and cadences scale with it.
    pub fn defaults(objective: Objective, preset: Preset, steps: Option<u64>) -> Self {
        let (default_steps, lr) = match preset {
            Preset::Tiny => (200, 2e-3),
            Preset::Mini => (3000, 1e-3),
            Preset::Small => (10_000, 5e-4),
            Preset::Base => (50_000, 2e-4),
        };
        let steps = steps.unwrap_or(default_steps);
        TrainConfig {
            objective,
            preset,
            seed: 0,
            steps,
            batch_size: 32,
            seq_len: 128,
            lr,
            warmup_steps: steps / 16,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            grad_clip: 1.0,
            mask: MaskConfig::default(),
            log_every: 10,
            eval_every: (steps / 10).max(1),
            eval_sequences: 128,
            checkpoint_every: (steps / 10).max(1),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            bail!("steps and batch_size must be positive");
        }
        if self.seq_len < 8 {
            bail!("seq_len {} is too short (at least 8)", self.seq_len);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("lr must be a positive number, got {}", self.lr);
        }
        if !(0.0 < self.mask.prob && self.mask.prob < 1.0) {
            bail!("mask.prob must be in (0, 1), got {}", self.mask.prob);
        }
        if !(0.0..=1.0).contains(&self.mask.keep_mask_frac) {
            bail!("mask.keep_mask_frac must be in [0, 1], got {}", self.mask.keep_mask_frac);
        }
        if self.objective == Objective::Mlm && self.mask.keep_mask_frac != 0.0 {
            bail!("mask.keep_mask_frac (--keep-mask-frac) only applies to --objective mae-lm");
        }
        Ok(())
    }
}

/// The dotted keys (as `--set` names them) whose values differ between two configurations.
pub fn changed_settings<T: Serialize>(before: &T, after: &T) -> Result<Vec<String>> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                let null = serde_json::Value::Null;
                for key in keys {
                    let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&name, a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null), out);
                }
            }
            _ if a != b => {
                let values = format!("{a} → {b}");
                out.push(if values.len() <= 40 { format!("{prefix} ({values})") } else { prefix.to_string() });
            }
            _ => {}
        }
    }
    let mut changed = Vec::new();
    walk("", &serde_json::to_value(before)?, &serde_json::to_value(after)?, &mut changed);
    Ok(changed)
}

/// Applies `key=value` overrides to any serialisable config: the key must exist (dotted paths
/// reach nested groups) and the value must parse as the existing field's type.
pub fn apply_overrides<T: Serialize + serde::de::DeserializeOwned>(config: &T, overrides: &[String]) -> Result<T> {
    let mut doc = serde_json::to_value(config)?;
    for item in overrides {
        let (key, raw) = item.split_once('=').with_context(|| format!("--set {item:?}: expected key=value"))?;
        let slot = key.split('.').try_fold(&mut doc, |node, part| node.get_mut(part)).with_context(|| format!("--set {key}: no such setting"))?;
        let parsed: serde_json::Value = serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        // `null` (an unset optional setting) accepts any value; the final deserialisation checks it.
        let same_kind = slot.is_null()
            || matches!(
                (&*slot, &parsed),
                (serde_json::Value::Number(_), serde_json::Value::Number(_))
                    | (serde_json::Value::Bool(_), serde_json::Value::Bool(_))
                    | (serde_json::Value::String(_), serde_json::Value::String(_))
                    | (serde_json::Value::Array(_), serde_json::Value::Array(_))
            );
        if !same_kind {
            let hint = if slot.is_array() { " (an array, written as JSON: strings in double quotes)" } else { "" };
            bail!("--set {key}={raw}: expected a value like {slot}{hint}");
        }
        *slot = parsed;
        // Checked override by override, so that an error names the one at fault.
        serde_json::from_value::<T>(doc.clone()).with_context(|| format!("--set {item}: not a valid value for {key}"))?;
    }
    serde_json::from_value(doc).context("--set: the overridden configuration is invalid")
}

/// A preset's model config with `--set model.KEY=VALUE` overrides. Unless σ is set itself, it
/// follows an overridden width, so that the init keeps BERT-base's gain
/// ([`crate::model::init::width_scaled_std`]).
pub fn apply_model_overrides(preset: &ModelConfig, overrides: &[String]) -> Result<ModelConfig> {
    let mut model = apply_overrides(preset, overrides)?;
    if !overrides.iter().any(|o| o.starts_with("initializer_range=")) {
        model.initializer_range = crate::model::init::width_scaled_std(model.hidden_size);
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_std_keeps_bert_base_gain_unless_set() {
        let tiny = Preset::Tiny.model_config(100, &SpecialIds::REPDEF, Objective::MaeLm, MaskConfig::default());
        let base = Preset::Base.model_config(100, &SpecialIds::REPDEF, Objective::MaeLm, MaskConfig::default());
        assert!((tiny.initializer_range - 0.02 * 12f64.sqrt()).abs() < 1e-12, "64 = 768 / 12");
        assert_eq!(base.initializer_range, 0.02);
        let widened = apply_model_overrides(&tiny, &["hidden_size=192".into()]).unwrap();
        assert!((widened.initializer_range - 0.04).abs() < 1e-12, "192 = 768 / 4");
        let set = apply_model_overrides(&tiny, &["hidden_size=192".into(), "initializer_range=0.02".into()]).unwrap();
        assert_eq!(set.initializer_range, 0.02);
    }

    #[test]
    fn overrides_change_existing_keys_and_reject_unknown_or_mistyped_ones() {
        let base = TrainConfig::defaults(Objective::Mlm, Preset::Tiny, None);
        let changed = apply_overrides(&base, &["lr=0.01".into(), "mask.policy=bert".into()]).unwrap();
        assert_eq!(changed.lr, 0.01);
        assert_eq!(changed.mask.policy, MaskPolicy::Bert);
        assert!(apply_overrides(&base, &["no_such=1".into()]).unwrap_err().to_string().contains("no such setting"));
        assert!(apply_overrides(&base, &["lr=fast".into()]).is_err());
        let negative = format!("{:#}", apply_overrides(&base, &["steps=-3".into()]).unwrap_err());
        assert!(negative.starts_with("--set steps=-3: not a valid value for steps: invalid value: integer `-3`"), "{negative}");
        assert!(apply_overrides(&base, &["mask.policy=sometimes".into()]).is_err());
    }

    #[test]
    fn hf_config_without_repdef_fields_is_plain_mlm_bert() {
        let json = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 16, "transformers_version": "4"}"#;
        let config: ModelConfig = serde_json::from_str(json).unwrap();
        config.validate().unwrap();
        assert_eq!(config.objective(), Objective::Mlm);
        assert_eq!(config.family(), Family::Bert);
    }

    #[test]
    fn unsupported_configs_are_rejected() {
        let mut config = Preset::Tiny.model_config(100, &SpecialIds::REPDEF, Objective::Mlm, MaskConfig::default());
        config.model_type = "gpt2".into();
        assert!(config.validate().is_err());
        let mut config = Preset::Tiny.model_config(100, &SpecialIds::REPDEF, Objective::Mlm, MaskConfig::default());
        config.num_attention_heads = 3;
        assert!(config.validate().is_err());
    }
}
