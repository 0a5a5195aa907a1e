//! Reading and writing model directories: repdef run dirs and HuggingFace BERT/RoBERTa dirs.
//! The only module that knows foreign tensor names: everything is renamed here to repdef's
//! canonical HF-BERT names (`bert.*`, `cls.predictions.*`, `decoder.*`).

use crate::config::ModelConfig;
use crate::data::model_tokenizer::model_tokenizer;
use crate::fsutil::write_atomic_with;
use crate::model::{Encoder, PretrainingModel};
use anyhow::{bail, ensure, Context, Result};
use candle_core::Shape;
use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const PYTORCH_WEIGHTS_FILE: &str = "pytorch_model.bin";
pub use crate::data::corpus::TOKENIZER_FILE;
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Safetensors metadata key recording the training step a weights file belongs to.
pub const STEP_METADATA_KEY: &str = "repdef_step";

/// Named tensors plus the file's string metadata.
pub struct TensorFile {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file; errors name the file.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<TensorFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: unreadable safetensors header ({e})", path.display()))?;
    let mut tensors = HashMap::new();
    for (name, view) in parsed.tensors() {
        let tensor = candle_core::safetensors::Load::load(&view, device).with_context(|| format!("{}: tensor {name} is unreadable", path.display()))?;
        tensors.insert(name, tensor);
    }
    Ok(TensorFile { tensors, metadata: header.metadata().clone().unwrap_or_default() })
}

/// The `__metadata__` of a safetensors file, reading only its header.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len).with_context(|| format!("{}: no safetensors header", path.display()))?;
    let len = u64::from_le_bytes(len);
    ensure!(len <= 100 << 20, "{}: a safetensors header of {len} bytes", path.display());
    let mut header = vec![0u8; len as usize];
    std::io::Read::read_exact(&mut file, &mut header).with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let mut header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).with_context(|| format!("{}: unreadable safetensors header", path.display()))?;
    Ok(header.remove("__metadata__").map(serde_json::from_value).transpose()?.unwrap_or_default())
}

/// Writes named tensors atomically, with `format: pt` metadata so `transformers` accepts the file.
/// The bytes depend only on the tensors and metadata: tensors are laid out by descending element
/// size, then name, and the header is written with sorted keys (the `safetensors` crate writes
/// `__metadata__` in hash-map order, so identical trainings hashed differently).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>, extra_metadata: &[(&str, String)]) -> Result<()> {
    let mut metadata: BTreeMap<String, String> = extra_metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    metadata.insert("format".into(), "pt".into());
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, t)| (std::cmp::Reverse(t.dtype().size_in_bytes()), *name));
    let mut header = BTreeMap::from([("__metadata__".to_string(), serde_json::to_value(&metadata)?)]);
    let mut offset = 0;
    for (name, tensor) in &sorted {
        let end = offset + tensor.elem_count() * tensor.dtype().size_in_bytes();
        let dtype = safetensors::View::dtype(*tensor);
        header.insert(name.to_string(), serde_json::json!({ "dtype": dtype, "shape": tensor.dims(), "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut header = serde_json::to_vec(&header)?;
    // The data starts 8-byte aligned, as the safetensors crate writes it.
    header.resize(header.len().next_multiple_of(8), b' ');
    write_atomic_with(path, |tmp| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(&header)?;
        for (_, tensor) in &sorted {
            file.write_all(&safetensors::View::data(*tensor))?;
        }
        Ok(file.flush()?)
    })
}

/// The trainable variables of a `VarMap` as named tensors.
pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let vars = varmap.data().lock().expect("VarMap lock poisoned");
    vars.iter().map(|(name, var)| (name.clone(), var.as_tensor().clone())).collect()
}

/// Overwrites every variable of `varmap` with the same-named tensor of `file` (shapes checked).
pub fn assign_varmap(varmap: &VarMap, file: &TensorFile, source: &Path) -> Result<()> {
    let vars = varmap.data().lock().expect("VarMap lock poisoned");
    for (name, var) in vars.iter() {
        let saved = file.tensors.get(name).with_context(|| format!("{}: missing tensor {name}", source.display()))?;
        if saved.shape() != var.shape() {
            bail!("{}: tensor {name} has shape {:?}, the model expects {:?}", source.display(), saved.dims(), var.dims());
        }
        var.set(&saved.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// HF's names for the same tensors → repdef's canonical names (BERT's): RoBERTa's and ELECTRA's
/// encoders differ only in their prefix; DistilBERT names every layer of the same post-LN block
/// its own way; the MLM heads of RoBERTa (`lm_head`), DistilBERT (`vocab_*`) and the ELECTRA
/// generator (`generator_*`) are BERT's `cls.predictions`.
fn canonical_name(name: &str) -> String {
    let name = name.replace(".gamma", ".weight").replace(".beta", ".bias");
    // Bare encoder exports (`DistilBertModel`, `ElectraModel`) name their own tensors without
    // the model's prefix; their embeddings then take the bare-BERT route below.
    let name = match name {
        bare if bare.starts_with("transformer.layer.") => format!("distilbert.{bare}"),
        bare if bare.starts_with("embeddings_project.") => format!("electra.{bare}"),
        name => name,
    };
    for prefix in ["roberta.", "electra."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("bert.{rest}");
        }
    }
    if let Some(rest) = name.strip_prefix("distilbert.embeddings.") {
        return format!("bert.embeddings.{rest}");
    }
    if let Some(rest) = name.strip_prefix("distilbert.transformer.layer.") {
        let (layer, tensor) = rest.split_once('.').unwrap_or((rest, ""));
        let block_renames = [
            ("attention.q_lin.", "attention.self.query."),
            ("attention.k_lin.", "attention.self.key."),
            ("attention.v_lin.", "attention.self.value."),
            ("attention.out_lin.", "attention.output.dense."),
            ("sa_layer_norm.", "attention.output.LayerNorm."),
            ("ffn.lin1.", "intermediate.dense."),
            ("ffn.lin2.", "output.dense."),
            ("output_layer_norm.", "output.LayerNorm."),
        ];
        if let Some((from, to)) = block_renames.iter().find(|(from, _)| tensor.starts_with(from)) {
            return format!("bert.encoder.layer.{layer}.{to}{}", &tensor[from.len()..]);
        }
        return name;
    }
    if name.starts_with("embeddings.") || name.starts_with("encoder.") || name.starts_with("pooler.") {
        return format!("bert.{name}");
    }
    let head_renames = [
        ("lm_head.dense.", "cls.predictions.transform.dense."),
        ("lm_head.layer_norm.", "cls.predictions.transform.LayerNorm."),
        ("lm_head.decoder.", "cls.predictions.decoder."),
        ("vocab_transform.", "cls.predictions.transform.dense."),
        ("vocab_layer_norm.", "cls.predictions.transform.LayerNorm."),
        ("vocab_projector.weight", "cls.predictions.decoder.weight"),
        ("generator_predictions.dense.", "cls.predictions.transform.dense."),
        ("generator_predictions.LayerNorm.", "cls.predictions.transform.LayerNorm."),
        ("generator_lm_head.weight", "cls.predictions.decoder.weight"),
    ];
    for (from, to) in head_renames {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    if ["lm_head.bias", "vocab_projector.bias", "generator_lm_head.bias"].contains(&name.as_str()) {
        return "cls.predictions.bias".into();
    }
    name
}

/// A model directory's weights, under canonical names, with the file they came from.
pub fn read_model_weights(dir: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, PathBuf)> {
    let safetensors_path = dir.join(WEIGHTS_FILE);
    let pytorch_path = dir.join(PYTORCH_WEIGHTS_FILE);
    let (raw, source) = if safetensors_path.exists() {
        let file = read_safetensors(&safetensors_path, device)?;
        check_committed_step(dir, &file, &safetensors_path)?;
        (file.tensors, safetensors_path)
    } else if pytorch_path.exists() {
        refuse_legacy_torch_format(&pytorch_path)?;
        // candle interprets the pickle itself and never runs code from it; a pickled object that
        // is not a flat name → tensor dict (a whole model, `training_args.bin`) yields no tensors.
        let pairs = candle_core::pickle::read_all(&pytorch_path).with_context(|| format!("{}: not a readable PyTorch state dict", pytorch_path.display()))?;
        if pairs.is_empty() {
            bail!(
                "{}: no tensors in it: not a state dict (a pickled whole model or settings object such as training_args.bin?); save the model with save_pretrained or torch.save(model.state_dict())",
                pytorch_path.display()
            );
        }
        (pairs.into_iter().collect(), pytorch_path)
    } else if let Some(index) = [WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE].map(|f| dir.join(format!("{f}.index.json"))).into_iter().find(|p| p.exists()) {
        bail!(
            "{}: a checkpoint sharded over several files, which repdef does not read; save it as one file (save_pretrained(dir, max_shard_size=\"20GB\"))",
            index.display()
        );
    } else {
        bail!("{}: no {WEIGHTS_FILE} or {PYTORCH_WEIGHTS_FILE} (is this a model directory?)", dir.display());
    };
    let tensors = raw.into_iter().map(|(name, t)| Ok((canonical_name(&name), checked_weight(&name, t, &source)?))).collect::<Result<_>>()?;
    Ok((tensors, source))
}

/// Refuses a `pytorch_model.bin` in torch's legacy format (a bare pickle stream, written by
/// torch < 1.6 or with `_use_new_zipfile_serialization=False`), which candle does not read: its
/// error would otherwise suggest a corrupt file. The current format is a zip archive.
fn refuse_legacy_torch_format(path: &Path) -> Result<()> {
    let mut magic = [0u8; 2];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    // 0x80 opens a pickle of protocol 2 or later.
    if read.is_ok() && magic[0] == 0x80 {
        bail!(
            "{}: saved in torch's legacy format (torch < 1.6), which repdef does not read; re-save it with a current torch: torch.save(torch.load(f), f), or save_pretrained(dir)",
            path.display()
        );
    }
    Ok(())
}

/// A weight as f32, refusing integer or boolean tensors (which a cast would silently turn into
/// numbers) and NaN/Inf values (which would flow into every output).
fn checked_weight(name: &str, tensor: Tensor, source: &Path) -> Result<Tensor> {
    if !tensor.dtype().is_float() {
        bail!("{}: tensor {name} is stored as {:?}; model weights must be floating point", source.display(), tensor.dtype());
    }
    let tensor = tensor.to_dtype(DType::F32)?;
    // 0·x is 0 for every finite x and NaN for NaN and ±Inf; the sum keeps a NaN.
    if !(&tensor * 0.0)?.sum_all()?.to_scalar::<f32>()?.is_finite() {
        bail!("{}: tensor {name} holds NaN or Inf values (a diverged run or a corrupt file)", source.display());
    }
    Ok(tensor)
}

/// A `VarBuilder` backend over a weights file that records which tensors the model took.
struct RecordingBackend {
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl RecordingBackend {
    fn record(&self, name: &str) {
        self.used.lock().expect("lock poisoned").insert(name.to_string());
    }
}

impl SimpleBackend for RecordingBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.record(name);
        SimpleBackend::get(&self.tensors, s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.record(name);
        self.tensors.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_tensor(name)
    }
}

/// Tensors a model never reads and that may be in a checkpoint: HF's pooler and its buffers.
fn is_known_extra(name: &str) -> bool {
    name.starts_with("bert.pooler.") || name.ends_with(".position_ids") || name.ends_with(".token_type_ids")
}

/// Builds `what` from a weights file's tensors with `build`, then refuses the file when tensors
/// under `scopes` went unused: config.json then describes a smaller model than the weights
/// (fewer layers, no relative-position buckets), and the analysis would silently measure it.
fn build_strict<T>(
    tensors: HashMap<String, Tensor>,
    source: &Path,
    config: &ModelConfig,
    scopes: &[&str],
    what: &str,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let hint = load_hint(&tensors, config);
    let names: BTreeSet<String> = tensors.keys().cloned().collect();
    let used = Arc::new(Mutex::new(BTreeSet::new()));
    let backend = RecordingBackend { tensors, used: used.clone() };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
    let model = build(vb).with_context(|| format!("{}: cannot build the {what} ({hint})", source.display()))?;
    let used = used.lock().expect("lock poisoned");
    let unused: Vec<&String> = names.iter().filter(|n| scopes.iter().any(|s| n.starts_with(s)) && !used.contains(*n) && !is_known_extra(n)).collect();
    if let Some(first) = unused.first() {
        bail!(
            "{}: {} tensor(s) not used by the {what} that config.json describes ({} layers), e.g. {first}: config.json does not match the weights",
            source.display(),
            unused.len(),
            config.num_hidden_layers
        );
    }
    Ok(model)
}

/// Refuses a run dir's weights that are not those of its committed checkpoint (a kill between
/// the commit of `train_state.json` and the publication of the weights).
fn check_committed_step(dir: &Path, file: &TensorFile, path: &Path) -> Result<()> {
    let (Some(weights_step), Ok(state)) =
        (file.metadata.get(STEP_METADATA_KEY), crate::fsutil::read_json::<serde_json::Value>(&dir.join(crate::train::state::TRAIN_STATE_FILE)))
    else {
        return Ok(());
    };
    let state_step = state["step"].to_string();
    if *weights_step != state_step {
        bail!(
            "{}: weights of step {weights_step}, but {} is at step {state_step} (a checkpoint was interrupted; `repdef train --resume --out {}` repairs the run)",
            path.display(),
            crate::train::state::TRAIN_STATE_FILE,
            dir.display()
        );
    }
    Ok(())
}

/// A hint for a failed load: which top-level names the file actually has.
fn load_hint(tensors: &HashMap<String, Tensor>, config: &ModelConfig) -> String {
    let prefixes: BTreeSet<&str> = tensors.keys().map(|k| k.split('.').next().unwrap_or("")).collect();
    format!("config.json says {}; the file's tensors start with {prefixes:?}", config.model_type)
}

/// An encoder loaded for inference (analysis, hidden states).
pub struct LoadedEncoder {
    pub config: ModelConfig,
    pub encoder: Encoder,
    pub tokenizer: Tokenizer,
    pub weights_path: PathBuf,
    /// Every tensor of the checkpoint as read (sharing storage with the encoder's), so that its
    /// MLM head can be built without reading the file again ([`LoadedEncoder::mlm_model`]).
    weights: HashMap<String, Tensor>,
}

impl LoadedEncoder {
    /// The checkpoint as an MLM model with its head, or `None` when it stores no MLM head (an
    /// encoder-only export, an ELECTRA discriminator) or is an MAE-LM run.
    pub fn mlm_model(&self, device: &Device) -> Result<Option<PretrainingModel>> {
        if self.config.objective() != crate::config::Objective::Mlm || !self.weights.keys().any(|name| name.starts_with("cls.predictions.")) {
            return Ok(None);
        }
        build_pretraining_model(self.weights.clone(), &self.weights_path, self.config.clone(), device).map(Some)
    }
}

/// Loads the encoder of a repdef run dir or a HF BERT/RoBERTa directory (heads are ignored),
/// with the tokenizer at `tokenizer`, or else the one the directory (or its parent) ships.
pub fn load_encoder(dir: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<LoadedEncoder> {
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let (tokenizer, tokenizer_path) = model_tokenizer(dir, tokenizer)?;
    let (tensors, weights_path) = read_model_weights(dir, device)?;
    let encoder = build_strict(tensors.clone(), &weights_path, &config, &["bert."], "encoder", device, |vb| Encoder::load(vb.pp("bert"), &config))?;
    check_vocabulary(&tokenizer, &config, &tokenizer_path)?;
    Ok(LoadedEncoder { config, encoder, tokenizer, weights_path, weights: tensors })
}

/// Loads encoder and pretraining head(s) (for evaluation of a run dir or a HF MLM checkpoint).
pub fn load_pretraining_model(dir: &Path, device: &Device) -> Result<PretrainingModel> {
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let (tensors, weights_path) = read_model_weights(dir, device)?;
    build_pretraining_model(tensors, &weights_path, config, device)
}

fn build_pretraining_model(tensors: HashMap<String, Tensor>, weights_path: &Path, config: ModelConfig, device: &Device) -> Result<PretrainingModel> {
    build_strict(tensors, weights_path, &config, &["bert.", "decoder."], "model", device, |vb| PretrainingModel::load(vb, &config))
}

/// Refuses a tokenizer (read from `source`) of another model: one whose ids reach past the
/// embedding table, or that pads with another id than the config says.
fn check_vocabulary(tokenizer: &Tokenizer, config: &ModelConfig, source: &Path) -> Result<()> {
    // A BERT vocabulary beside a RoBERTa model fits its embedding rows, but pads (and opens
    // and closes sequences) with other ids.
    if let Some(pad) = crate::data::tokenizer::special_id(tokenizer, "[PAD]", "<pad>") {
        if pad != config.pad_token_id {
            bail!(
                "{}: the tokenizer pads with id {pad}, but config.json's pad_token_id is {}: the tokenizer does not belong to this model (give its own with --tokenizer)",
                source.display(),
                config.pad_token_id
            );
        }
    }
    if let Some(max_id) = tokenizer.get_vocab(true).into_values().max() {
        if max_id as usize >= config.vocab_size {
            bail!(
                "{}: token ids go up to {max_id}, but the model has {} embedding rows (config.json vocab_size): the tokenizer does not belong to this model",
                source.display(),
                config.vocab_size
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_tensors_give_identical_bytes_with_a_sorted_header() {
        let dir = tempfile::tempdir().unwrap();
        let tensor = |values: &[f32]| Tensor::new(values, &Device::Cpu).unwrap();
        let write = |name: &str, order: &[&str]| {
            let tensors: HashMap<String, Tensor> = order.iter().map(|n| (n.to_string(), tensor(&[1.0, n.len() as f32]))).collect();
            let metadata: Vec<(&str, String)> = order.iter().map(|n| (*n, format!("v{n}"))).collect();
            let path = dir.path().join(name);
            write_safetensors(&path, &tensors, &metadata).unwrap();
            std::fs::read(path).unwrap()
        };
        let names = ["b", "a", "dd", "ccc", "e"];
        let first = write("first", &names);
        let reversed: Vec<&str> = names.iter().rev().copied().collect();
        for i in 0..8 {
            assert_eq!(write(&format!("again-{i}"), &reversed), first, "write {i} differs");
        }
        let header_len = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&first[8..8 + header_len]).unwrap();
        assert!(header.starts_with(r#"{"__metadata__":{"a":"va","b":"vb","ccc":"vccc","dd":"vdd","e":"ve","format":"pt"},"a":{"#), "{header}");
        let file = read_safetensors(&dir.path().join("first"), &Device::Cpu).unwrap();
        assert_eq!(file.tensors["ccc"].to_vec1::<f32>().unwrap(), [1.0, 3.0]);
        assert_eq!(file.metadata["dd"], "vdd");
    }

    #[test]
    fn foreign_names_map_to_canonical_ones() {
        assert_eq!(canonical_name("roberta.encoder.layer.0.output.dense.weight"), "bert.encoder.layer.0.output.dense.weight");
        assert_eq!(canonical_name("embeddings.LayerNorm.gamma"), "bert.embeddings.LayerNorm.weight");
        assert_eq!(canonical_name("lm_head.layer_norm.bias"), "cls.predictions.transform.LayerNorm.bias");
        assert_eq!(canonical_name("lm_head.bias"), "cls.predictions.bias");
        assert_eq!(canonical_name("cls.predictions.bias"), "cls.predictions.bias");
        assert_eq!(canonical_name("decoder.layer.0.output.dense.weight"), "decoder.layer.0.output.dense.weight");
    }
}
