//! `repdef hidden-states`: per-layer hidden states of an encoder on clean text, saved as
//! safetensors (one tensor per tap, `[n_texts, pos, d_model]`, plus `input_ids` and
//! `attention_mask`), e.g. for comparison with `transformers`' `output_hidden_states`. It
//! overwrites only its own earlier output, never another file (a model's weights, its input).

use crate::checkpoint::{load_encoder, read_safetensors_metadata, write_safetensors};
use crate::data::textfile::read_text_file;
use crate::model::{Ctx, EncoderInput, Tap, TapCache};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The safetensors metadata that marks a file as this command's output: its taps, its model.
const TAPS_KEY: &str = "taps";
const MODEL_KEY: &str = "model";

/// Reads one text per non-empty line (a file as `prepare` reads it: UTF-8, or gzip if `*.gz`).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let (_, text) = read_text_file(path)?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Runs the model at `model_dir` (with the tokenizer at `tokenizer`, or its own) on `texts` and
/// writes every encoder tap to `out`.
pub fn write_hidden_states(model_dir: &Path, tokenizer: Option<&Path>, texts: &[String], out: &Path) -> Result<()> {
    claim_output_file(out)?;
    let device = Device::Cpu;
    let loaded = load_encoder(model_dir, tokenizer, &device)?;
    let cfg = &loaded.config;
    let max_len = cfg.max_tokens();
    let mut rows = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let encoding = loaded.tokenizer.encode(text.as_str(), true).map_err(|e| anyhow::anyhow!("tokenizing text {}: {e}", i + 1))?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > max_len {
            // As transformers truncates: the closing special token (`[SEP]`, `</s>`) stays.
            let closing = encoding.get_special_tokens_mask().last() == Some(&1);
            eprintln!(
                "note: text {} has {} tokens; keeping the first {max_len} (the model's limit{})",
                i + 1,
                ids.len(),
                if closing { ", its closing special token included" } else { "" }
            );
            if closing {
                let last = ids[ids.len() - 1];
                ids.truncate(max_len - 1);
                ids.push(last);
            } else {
                ids.truncate(max_len);
            }
        }
        rows.push(ids);
    }
    let pos = rows.iter().map(Vec::len).max().unwrap_or(0);
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(cfg.pad_token_id, pos - r.len()))).collect();
    let input = EncoderInput::from_ids(cfg, &flat, None, rows.len(), &device)?;
    let mut cache = TapCache::default();
    loaded.encoder.forward(&input, &mut Ctx::infer().with_recorder(&mut cache))?;

    let mut tensors: HashMap<String, Tensor> = cache.tensors.into_iter().map(|(tap, t)| (tap.to_string(), t)).collect();
    tensors.insert("input_ids".into(), input.ids);
    tensors.insert("attention_mask".into(), input.attention_mask);
    let taps: Vec<String> = Tap::encoder_taps(loaded.encoder.n_layers()).iter().map(Tap::to_string).collect();
    write_safetensors(out, &tensors, &[(TAPS_KEY, taps.join(",")), (MODEL_KEY, model_dir.display().to_string())])?;
    eprintln!("wrote {} taps × [{} texts, {pos} positions, {}] to {}", taps.len(), rows.len(), cfg.hidden_size, out.display());
    Ok(())
}

/// Checks, before any work, that `out` is new or an earlier output of this command.
fn claim_output_file(out: &Path) -> Result<()> {
    let shown = out.display();
    match std::fs::metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
        Ok(m) if m.is_dir() => bail!("{shown} is a directory: name a new .safetensors file"),
        Ok(_) => {}
    }
    let metadata = read_safetensors_metadata(out).unwrap_or_default();
    if !(metadata.contains_key(TAPS_KEY) && metadata.contains_key(MODEL_KEY)) {
        bail!("{shown} exists and is not an earlier hidden-states output: refusing to overwrite it; choose another path");
    }
    Ok(())
}
