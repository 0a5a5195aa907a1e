//! The T5-style relative-position bias of the official MAE-LM / COCO-LM encoders (DESIGN §1,
//! "Position information"): one learned table `[buckets, n_heads]` shared by every layer, whose
//! entry for the bucket of (key position − query position) is added to the attention logits.
//!
//! Buckets are sign-symmetric (COCO-LM's `relative_position_bucket`, yumeng5/MAE-LM
//! `fairseq/modules/transformer_sentence_encoder.py`): a distance n gets its own bucket while
//! n < buckets/4 (`max_exact`), beyond that
//! `max_exact + ceil(ln(n/max_exact) / ln((max_distance−1)/max_exact) · (buckets/2 − 1 − max_exact))`,
//! clamped to buckets/2 − 1; the result times the sign of the distance, shifted by buckets/2 − 1 so
//! that it indexes the table (COCO-LM shifts by the minimum over its position grid, which is the
//! same value whenever the grid reaches `max_distance`). Distances come from the position ids the
//! encoder is given, so MAE-LM's compacted kept tokens use their *original* positions.

use crate::config::ModelConfig;
use anyhow::{ensure, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// The table's name under its owner: the encoder (`bert.encoder.relative_attention_bias.weight`)
/// or, when it has its own, the MAE-LM decoder (`decoder.relative_attention_bias.weight`).
pub const TABLE_NAME: &str = "relative_attention_bias.weight";

/// Table index for a key `distance` (key position − query position) away from the query.
pub fn bucket(distance: i64, buckets: usize, max_distance: usize) -> u32 {
    let half = (buckets / 2) as i64;
    let max_exact = half / 2;
    let n = distance.abs();
    let magnitude = if n < max_exact {
        n
    } else {
        let scale = ((max_distance - 1) as f64 / max_exact as f64).ln();
        let large = max_exact + ((n as f64 / max_exact as f64).ln() / scale * (half - 1 - max_exact) as f64).ceil() as i64;
        large.min(half - 1)
    };
    (magnitude * distance.signum() + half - 1) as u32
}

/// Checks that `buckets`/`max_distance` describe a usable bucketing (0 buckets: no bias).
pub fn validate(buckets: usize, max_distance: usize) -> Result<()> {
    if buckets == 0 {
        return Ok(());
    }
    ensure!(buckets % 4 == 0, "relative_attention_num_buckets {buckets} must be a multiple of 4 (half per direction, a quarter exact)");
    ensure!(
        max_distance > buckets / 4 + 1,
        "relative_attention_max_distance {max_distance} must exceed relative_attention_num_buckets / 4 + 1 = {}",
        buckets / 4 + 1
    );
    Ok(())
}

/// The learned table and its bucketing.
pub struct RelativePositionBias {
    /// `[buckets, n_heads]`.
    table: Tensor,
    buckets: usize,
    max_distance: usize,
}

impl RelativePositionBias {
    /// `vb` at the table's owner (`bert.encoder` or `decoder`); `None` when the config has no
    /// relative bias.
    pub fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Option<Self>> {
        let buckets = cfg.relative_attention_num_buckets;
        if buckets == 0 {
            return Ok(None);
        }
        let table = vb.get((buckets, cfg.num_attention_heads), TABLE_NAME)?;
        Ok(Some(RelativePositionBias { table, buckets, max_distance: cfg.relative_attention_max_distance }))
    }

    /// The additive attention bias for `position_ids` (`[batch, pos]`): `[1, n_heads, pos, pos]`
    /// when every row has the same positions (one table lookup serves the batch), otherwise
    /// `[batch, n_heads, pos, pos]`; element `[b, h, i, j]` is the bias of query i for key j.
    pub fn forward(&self, position_ids: &Tensor) -> Result<Tensor> {
        let rows = position_ids.to_vec2::<u32>()?;
        let pos = rows.first().map_or(0, Vec::len);
        let distinct: &[Vec<u32>] = if rows.iter().all(|r| r == &rows[0]) { &rows[..1] } else { &rows };
        // Each distance's bucket once: `by_distance[span + d]` for d in −span..=span.
        let span = i64::from(distinct.iter().flatten().copied().max().unwrap_or(0));
        let by_distance: Vec<u32> = (-span..=span).map(|d| bucket(d, self.buckets, self.max_distance)).collect();
        let of = |query: u32, key: u32| by_distance[(span + i64::from(key) - i64::from(query)) as usize];
        let index: Vec<u32> = distinct.iter().flat_map(|row| row.iter().flat_map(move |&query| row.iter().map(move |&key| of(query, key)))).collect();
        let n_heads = self.table.dim(1)?;
        let index = Tensor::from_vec(index, distinct.len() * pos * pos, self.table.device())?;
        // [seqs·pos·pos, n_heads] → [seqs, n_heads, pos, pos]
        Ok(self.table.index_select(&index, 0)?.reshape((distinct.len(), pos, pos, n_heads))?.permute((0, 3, 1, 2))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_sign_symmetric_exact_near_and_logarithmic_far() {
        // 32 buckets, max distance 128: half 16, max_exact 8.
        let b = |d| bucket(d, 32, 128) as i64 - 15;
        assert_eq!((-7..=7).map(b).collect::<Vec<_>>(), (-7..=7).collect::<Vec<_>>());
        assert_eq!(b(8), 8);
        // ln(9/8) / ln(127/8) · 7 = 0.2986… → ceil 1
        assert_eq!(b(9), 9);
        // ln(16/8) / ln(127/8) · 7 = 1.751… → ceil 2
        assert_eq!(b(16), 10);
        assert_eq!(b(127), 15);
        assert_eq!(b(1000), 15);
        for d in 1..300 {
            assert_eq!(b(-d), -b(d), "distance {d}");
        }
        let all: std::collections::BTreeSet<u32> = (-500..500).map(|d| bucket(d, 32, 128)).collect();
        assert_eq!(all, (0..31).collect(), "buckets 0..=30 used, the last one never");
    }

    #[test]
    fn bias_entries_are_the_table_rows_of_each_distance_bucket() {
        use candle_core::Device;
        let (buckets, heads, max_distance) = (8, 2, 6);
        let values: Vec<f32> = (0..buckets * heads).map(|i| i as f32).collect();
        let table = Tensor::from_vec(values.clone(), (buckets, heads), &Device::Cpu).unwrap();
        let bias = RelativePositionBias { table, buckets, max_distance };
        let rows = [[0u32, 1, 2, 9], [0, 3, 4, 7]];
        let position_ids = Tensor::new(&rows, &Device::Cpu).unwrap();
        let got: Vec<Vec<Vec<Vec<f32>>>> = (0..2).map(|b| bias.forward(&position_ids).unwrap().get(b).unwrap().to_vec3().unwrap()).collect();
        for (b, row) in rows.iter().enumerate() {
            for h in 0..heads {
                for (i, &query) in row.iter().enumerate() {
                    for (j, &key) in row.iter().enumerate() {
                        let k = bucket(i64::from(key) - i64::from(query), buckets, max_distance) as usize;
                        assert_eq!(got[b][h][i][j], values[k * heads + h], "sequence {b}, head {h}, query {i}, key {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_bucketings_are_rejected() {
        assert!(validate(0, 0).is_ok());
        assert!(validate(32, 128).is_ok());
        assert!(validate(30, 128).is_err());
        assert!(validate(32, 9).is_err());
    }
}
