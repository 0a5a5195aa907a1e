//! The fine-tuning model: a pretrained encoder (its MLM head and MAE-LM decoder discarded) and a
//! sentence-classification (or, with one output, regression) head on the first token
//! (`[CLS]` / `<s>`), and the task loss.
//!
//! The head mirrors the official code's `AEClassificationHead` (yumeng5/MAE-LM
//! `fairseq/models/ae/model.py`, the same as fairseq's `RobertaClassificationHead`): dropout →
//! dense(d, d) → tanh → dropout → out_proj(d, n_labels), with repdef's hidden dropout.
//! HF's `BertForSequenceClassification` takes its dense + tanh from BERT's pretrained pooler
//! instead; neither MLM nor MAE-LM pretraining here trains a pooler, so the dense layer is fresh
//! and plays the pooler's role, as in fairseq. Tensor names follow HF RoBERTa's head
//! (`classifier.dense.*`, `classifier.out_proj.*`); the encoder keeps its checkpoint names (`bert.*`).

use super::tasks::Head;
use crate::checkpoint::{assign_varmap, read_model_weights, TensorFile, CONFIG_FILE};
use crate::config::ModelConfig;
use crate::model::{init, Ctx, Encoder, EncoderInput};
use crate::rng::Rng;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::Path;

pub struct Classifier {
    pub config: ModelConfig,
    pub encoder: Encoder,
    dense: Linear,
    out_proj: Linear,
    dropout: f64,
}

impl Classifier {
    /// A trainable classifier: the encoder of the model dir `dir` (a repdef run dir or a HF
    /// BERT/RoBERTa dir) and a head with `n_outputs` outputs (classes, or 1 for a score) drawn
    /// from `rng` (weights N(0, initializer_range), biases 0). Returns the `VarMap` holding
    /// every trainable variable.
    pub fn from_pretrained(dir: &Path, n_outputs: usize, rng: &mut Rng, device: &Device) -> Result<(Classifier, VarMap)> {
        let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
        let (tensors, source) = read_model_weights(dir, device)?;
        let varmap = VarMap::new();
        let encoder = Encoder::load(VarBuilder::from_varmap(&varmap, DType::F32, device).pp("bert"), &config)?;
        // Only the encoder's variables exist yet, so every one of them must be in the checkpoint.
        assign_varmap(&varmap, &TensorFile { tensors, metadata: HashMap::new() }, &source)
            .with_context(|| format!("{}: loading the pretrained encoder", dir.display()))?;
        // The head lives in its own VarMap so that initialising it draws nothing for the encoder;
        // its variables then join the encoder's (a `Var` shares storage with its clones).
        let head_vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&head_vars, DType::F32, device).pp("classifier");
        let d = config.hidden_size;
        let dense = candle_nn::linear(d, d, vb.pp("dense"))?;
        let out_proj = candle_nn::linear(d, n_outputs, vb.pp("out_proj"))?;
        init::initialize(&head_vars, config.initializer_range, rng)?;
        let head = std::mem::take(&mut *head_vars.data().lock().expect("VarMap lock poisoned"));
        varmap.data().lock().expect("VarMap lock poisoned").extend(head);
        let dropout = config.hidden_dropout_prob;
        Ok((Classifier { config, encoder, dense, out_proj, dropout }, varmap))
    }

    /// → logits `[batch, n_outputs]` from the first position's final hidden state.
    pub fn logits(&self, input: &EncoderInput, ctx: &mut Ctx) -> Result<Tensor> {
        let hidden = self.encoder.forward(input, ctx)?; // [batch, pos, d_model]
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?; // [batch, d_model]
        let pooled = self.dense.forward(&ctx.dropout(&first, self.dropout)?)?.tanh()?;
        Ok(self.out_proj.forward(&ctx.dropout(&pooled, self.dropout)?)?)
    }
}

/// The mean loss of `logits` (`[batch, outputs]`) against `targets` — cross-entropy for classes,
/// squared error for a score — and the predictions (argmax class ids, or the scores).
pub fn task_loss(logits: &Tensor, targets: &[f64], head: Head) -> Result<(Tensor, Vec<f64>)> {
    match head {
        Head::Classes(_) => {
            let classes: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
            let loss = candle_nn::loss::cross_entropy(logits, &Tensor::from_slice(&classes, classes.len(), logits.device())?)?;
            let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
            Ok((loss, predicted.into_iter().map(f64::from).collect()))
        }
        Head::Score => {
            let predicted = logits.squeeze(1)?;
            let wanted: Vec<f32> = targets.iter().map(|&t| t as f32).collect();
            let loss = (&predicted - Tensor::from_slice(&wanted, wanted.len(), logits.device())?)?.sqr()?.mean_all()?;
            Ok((loss, predicted.to_vec1::<f32>()?.into_iter().map(f64::from).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::batching::{collate, encode};
    use crate::finetune::tasks::Example;
    use crate::train::optimizer::{AdamW, AdamWConfig};

    fn tiny_mlm() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repdef-tiny-mlm")
    }

    #[test]
    fn head_and_loss_have_the_right_shapes_and_the_encoder_is_the_pretrained_one() {
        let device = Device::Cpu;
        let (model, varmap) = Classifier::from_pretrained(&tiny_mlm(), 3, &mut Rng::new(0), &device).unwrap();
        let loaded = crate::checkpoint::load_encoder(&tiny_mlm(), None, &device).unwrap();
        let examples = [Example { target: 2.0, text: "a fine film".into(), pair: None }, Example { target: 0.0, text: "dull".into(), pair: None }];
        let encoded = encode(&loaded.tokenizer, &examples, 64).unwrap();
        let batch = collate(&model.config, &encoded.iter().collect::<Vec<_>>(), &device).unwrap();
        let logits = model.logits(&batch.input, &mut Ctx::infer()).unwrap();
        assert_eq!(logits.dims(), &[2, 3]);
        let (loss, predicted) = task_loss(&logits, &batch.targets, Head::Classes(3)).unwrap();
        assert_eq!(loss.dims(), &[] as &[usize]);
        assert!(predicted.len() == 2 && predicted.iter().all(|p| [0.0, 1.0, 2.0].contains(p)));
        // Near-zero head weights give near-uniform predictions: loss ≈ ln 3.
        assert!((loss.to_scalar::<f32>().unwrap() - 3f32.ln()).abs() < 0.1);
        let pretrained = loaded.encoder.forward(&batch.input, &mut Ctx::infer()).unwrap();
        let ours = model.encoder.forward(&batch.input, &mut Ctx::infer()).unwrap();
        assert_eq!(pretrained.to_vec3::<f32>().unwrap(), ours.to_vec3::<f32>().unwrap());
        let names = varmap.data().lock().unwrap().keys().cloned().collect::<Vec<_>>();
        assert!(names.contains(&"classifier.out_proj.weight".to_string()) && names.contains(&"bert.embeddings.word_embeddings.weight".to_string()));
    }

    #[test]
    fn every_variable_gets_a_gradient() {
        let device = Device::Cpu;
        let (model, varmap) = Classifier::from_pretrained(&tiny_mlm(), 2, &mut Rng::new(0), &device).unwrap();
        let loaded = crate::checkpoint::load_encoder(&tiny_mlm(), None, &device).unwrap();
        let examples = [Example { target: 1.0, text: "a fine film".into(), pair: Some("yes".into()) }];
        let encoded = encode(&loaded.tokenizer, &examples, 64).unwrap();
        let batch = collate(&model.config, &[&encoded[0]], &device).unwrap();
        let logits = model.logits(&batch.input, &mut Ctx::train(&mut Rng::new(1))).unwrap();
        let grads = task_loss(&logits, &batch.targets, Head::Classes(2)).unwrap().0.backward().unwrap();
        let optimizer = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1 }).unwrap();
        let missing = optimizer.params_without_gradient(&grads).unwrap();
        assert!(missing.is_empty(), "no gradient reaches {missing:?}");
    }

    #[test]
    fn a_score_head_predicts_one_number_and_its_loss_is_the_squared_error() {
        let device = Device::Cpu;
        let (model, _) = Classifier::from_pretrained(&tiny_mlm(), 1, &mut Rng::new(0), &device).unwrap();
        let loaded = crate::checkpoint::load_encoder(&tiny_mlm(), None, &device).unwrap();
        let examples =
            [Example { target: 4.5, text: "a cat".into(), pair: Some("a cat".into()) }, Example { target: 0.5, text: "a".into(), pair: Some("b".into()) }];
        let encoded = encode(&loaded.tokenizer, &examples, 64).unwrap();
        let batch = collate(&model.config, &encoded.iter().collect::<Vec<_>>(), &device).unwrap();
        let logits = model.logits(&batch.input, &mut Ctx::infer()).unwrap();
        let (loss, predicted) = task_loss(&logits, &batch.targets, Head::Score).unwrap();
        let expected = predicted.iter().zip(&batch.targets).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / 2.0;
        assert!((loss.to_scalar::<f32>().unwrap() as f64 - expected).abs() < 1e-4 * expected.max(1.0));
    }
}
