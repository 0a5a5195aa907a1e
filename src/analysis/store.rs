//! `accumulators.safetensors`: every Gram accumulator of an analysis, so that shards computed
//! anywhere can be merged exactly. Tensors `acc{i}.gram` (the lower triangle of the fixed-point
//! Gram, d(d+1)/2 little-endian i128 as u8 `[d(d+1)/2, 16]`), `acc{i}.sum` (Σh, d i128 as u8
//! `[d, 16]`), `acc{i}.n_tokens` (i64 `[1]`); the keys are listed in order in the `keys` metadata
//! entry.

use crate::checkpoint::{read_safetensors, write_safetensors};
use crate::extract::{AccumulatorKey, Accumulators, Condition, Group};
use crate::rank::{GramAccumulator, GramParts};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
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
        tensors.insert(format!("acc{i}.gram"), to_bytes(&parts.gram_lower, &device)?);
        tensors.insert(format!("acc{i}.sum"), to_bytes(&parts.sum, &device)?);
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
        let sum = from_bytes(tensor("sum")?).with_context(|| format!("{}: acc{i}.sum", path.display()))?;
        let parts = GramParts {
            d: sum.len(),
            n_tokens: tensor("n_tokens")?.to_vec1::<i64>()?[0] as u64,
            sum,
            gram_lower: from_bytes(tensor("gram")?).with_context(|| format!("{}: acc{i}.gram", path.display()))?,
        };
        let acc = GramAccumulator::from_parts(parts).with_context(|| format!("{}: accumulator {i}", path.display()))?;
        accumulators.insert(AccumulatorKey { model: key.model, condition: key.condition, group: key.group, layer: key.layer }, acc);
    }
    Ok(accumulators)
}

/// i128 values as a u8 tensor `[n, 16]`, each little-endian.
fn to_bytes(values: &[i128], device: &Device) -> Result<Tensor> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(Tensor::from_vec(bytes, (values.len(), 16), device)?)
}

fn from_bytes(tensor: &Tensor) -> Result<Vec<i128>> {
    ensure!(
        tensor.dtype() == DType::U8 && tensor.rank() == 2 && tensor.dim(1)? == 16,
        "expected u8 [n, 16] (i128 values), got {:?} {:?}",
        tensor.dtype(),
        tensor.dims()
    );
    let bytes = tensor.flatten_all()?.to_vec1::<u8>()?;
    Ok(bytes.chunks_exact(16).map(|b| i128::from_le_bytes(b.try_into().expect("chunks of 16"))).collect())
}
