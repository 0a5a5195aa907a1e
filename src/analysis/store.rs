//! `accumulators.safetensors`: every Gram accumulator of an analysis, so that shards computed
//! anywhere can be merged. Tensors `acc{i}.gram` (f64 `[d, d]`), `acc{i}.sum` (f64 `[d]`),
//! `acc{i}.n_tokens` (i64 `[1]`); the keys are listed in order in the `keys` metadata entry.

use crate::checkpoint::{read_safetensors, write_safetensors};
use crate::extract::{AccumulatorKey, Accumulators, Condition, Group};
use crate::rank::{GramAccumulator, GramParts};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const ACCUMULATORS_FILE: &str = "accumulators.safetensors";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    model: String,
    condition: Condition,
    group: Group,
    layer: usize,
}

pub fn write_accumulators(path: &Path, accumulators: &Accumulators) -> Result<()> {
    let device = Device::Cpu;
    let mut tensors = HashMap::new();
    let mut keys = Vec::new();
    for (i, (key, acc)) in accumulators.iter().enumerate() {
        let parts = acc.to_parts();
        tensors.insert(format!("acc{i}.gram"), Tensor::from_vec(parts.gram, (parts.d, parts.d), &device)?);
        tensors.insert(format!("acc{i}.sum"), Tensor::from_vec(parts.sum, parts.d, &device)?);
        tensors.insert(format!("acc{i}.n_tokens"), Tensor::new(&[parts.n_tokens as i64], &device)?);
        keys.push(StoredKey { model: key.model.clone(), condition: key.condition, group: key.group, layer: key.layer });
    }
    write_safetensors(path, &tensors, &[("keys", serde_json::to_string(&keys)?)])
}

pub fn read_accumulators(path: &Path) -> Result<Accumulators> {
    let file = read_safetensors(path, &Device::Cpu)?;
    let keys: Vec<StoredKey> = serde_json::from_str(file.metadata.get("keys").map_or("", String::as_str))
        .with_context(|| format!("{}: no valid `keys` metadata (not a repdef accumulator file?)", path.display()))?;
    let mut accumulators = Accumulators::new();
    for (i, key) in keys.into_iter().enumerate() {
        let tensor =
            |suffix: &str| file.tensors.get(&format!("acc{i}.{suffix}")).with_context(|| format!("{}: missing tensor acc{i}.{suffix}", path.display()));
        let gram = tensor("gram")?;
        let parts = GramParts {
            d: gram.dim(0)?,
            n_tokens: tensor("n_tokens")?.to_vec1::<i64>()?[0] as u64,
            sum: tensor("sum")?.to_vec1::<f64>()?,
            gram: gram.flatten_all()?.to_vec1::<f64>()?,
        };
        let acc = GramAccumulator::from_parts(parts).with_context(|| format!("{}: accumulator {i}", path.display()))?;
        accumulators.insert(AccumulatorKey { model: key.model, condition: key.condition, group: key.group, layer: key.layer }, acc);
    }
    Ok(accumulators)
}
