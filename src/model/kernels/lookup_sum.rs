//! Sums of table rows looked up by id, as one op: the input embeddings' `word[ids] +
//! position[ids] (+ token_type[ids])`, and MAE-LM's decoder input (the encoder's rows scattered
//! back, plus the decoder's position embeddings).
//!
//! As candle ops, each lookup and each add is a serial pass over `[rows, d]`; in backward every
//! term of the sum gets a zero-filled gradient and an add, and every table a serial `index_add`.
//! Here forward is one pass spread over the threads, and backward sums each table row's
//! gradient on the threads, over the output rows that read it in ascending order (the order of
//! `index_add`), so values and gradients have the bits of the composed ops.

use super::par::{cpu_f32, par_row_blocks, storage_f32};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// `Σ_t tables[t][ids[t][r]]` for every output row `r`, added in the order of `tables`: each
/// table `[n_t, d]` with one id per output row → `[rows, d]`. Two or three tables.
pub fn lookup_sum(tables: &[&Tensor], ids: Vec<Vec<u32>>) -> Result<Tensor> {
    if ids.len() != tables.len() {
        bail!("lookup_sum: {} tables with {} id lists", tables.len(), ids.len());
    }
    let op = LookupSum { ids };
    match tables {
        [a, b] => a.contiguous()?.apply_op2(&b.contiguous()?, op),
        [a, b, c] => a.contiguous()?.apply_op3(&b.contiguous()?, &c.contiguous()?, op),
        _ => bail!("lookup_sum takes two or three tables, not {}", tables.len()),
    }
}

struct LookupSum {
    /// Per table, the row of it that each output row reads.
    ids: Vec<Vec<u32>>,
}

impl LookupSum {
    fn forward(&self, tables: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let rows = self.ids[0].len();
        let d = tables[0].1.shape().dims2()?.1;
        let mut slices = Vec::with_capacity(tables.len());
        for ((storage, layout), ids) in tables.iter().zip(&self.ids) {
            let (n, width) = layout.shape().dims2()?;
            if width != d || ids.len() != rows {
                bail!("lookup: a [{n}, {width}] table with {} ids, beside width {d} and {rows} ids", ids.len());
            }
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= n) {
                bail!("lookup: id {bad} in a table of {n} rows");
            }
            slices.push(cpu_f32(storage, layout)?);
        }
        let (_, [out]) = par_row_blocks(rows, [d], |range, [out]| {
            for (r, o) in range.zip(out.chunks_exact_mut(d)) {
                for (table, ids) in slices.iter().zip(&self.ids) {
                    let row = &table[ids[r] as usize * d..][..d];
                    o.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    /// The gradient of each table for the output gradient `grad`.
    fn backward(&self, tables: &[&Tensor], grad: &Tensor) -> Result<Vec<Tensor>> {
        let grad = grad.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let g = storage_f32(&storage, layout)?;
        let d = layout.shape().dims2()?.1;
        tables
            .iter()
            .zip(&self.ids)
            .map(|(table, ids)| {
                let n = table.dim(0)?;
                let (starts, readers) = readers_by_id(ids, n);
                let (_, [out]) = par_row_blocks(n, [d], |range, [out]| {
                    for (id, o) in range.zip(out.chunks_exact_mut(d)) {
                        for &r in &readers[starts[id]..starts[id + 1]] {
                            o.iter_mut().zip(&g[r as usize * d..][..d]).for_each(|(o, &g)| *o += g);
                        }
                    }
                });
                Tensor::from_vec(out, (n, d), table.device())
            })
            .collect()
    }
}

/// The output rows grouped by the table row they read (a counting sort): those of id `i` are
/// `readers[starts[i]..starts[i + 1]]`, ascending.
fn readers_by_id(ids: &[u32], n: usize) -> (Vec<usize>, Vec<u32>) {
    let mut starts = vec![0; n + 1];
    for &id in ids {
        starts[id as usize + 1] += 1;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut readers = vec![0; ids.len()];
    for (r, &id) in ids.iter().enumerate() {
        readers[next[id as usize]] = r as u32;
        next[id as usize] += 1;
    }
    (starts, readers)
}

impl CustomOp2 for LookupSum {
    fn name(&self) -> &'static str {
        "repdef-lookup-sum"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(&[(a, al), (b, bl)])
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.backward(&[a, b], grad)?.into_iter().map(Some);
        Ok((grads.next().flatten(), grads.next().flatten()))
    }
}

impl CustomOp3 for LookupSum {
    fn name(&self) -> &'static str {
        "repdef-lookup-sum"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout, c: &CpuStorage, cl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(&[(a, al), (b, bl), (c, cl)])
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.backward(&[a, b, c], grad)?.into_iter().map(Some);
        Ok((grads.next().flatten(), grads.next().flatten(), grads.next().flatten()))
    }
}
