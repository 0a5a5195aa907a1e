//! Picks and corrupts positions for MLM / MAE-LM (DESIGN §1, "Masking in the paper") and
//! records each position's token class, so nothing downstream re-derives classes from ids.
//!
//! Per sequence: `floor(prob · n_candidates + U[0,1))` positions (at least one) are picked
//! uniformly without replacement among the candidates (every non-pad position, minus
//! `[CLS]`/`[SEP]`/`[PAD]` when `protect_special`). The official fairseq masker rounds the same
//! way. Picked positions become `[MASK]` (paper) or follow BERT's 80/10/10; for MAE-LM, a fraction
//! `keep_mask_frac` of them stays visible to the encoder as `[MASK]`, the rest are dropped.

use super::tokenizer::SpecialIds;
use crate::config::{MaskConfig, MaskPolicy};
use crate::rng::Rng;

/// What a position holds in the corrupted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenClass {
    /// Not picked, ordinary token.
    Real,
    /// Picked and replaced by `[MASK]` (or dropped from an MAE-LM encoder).
    Mask,
    /// Picked and replaced by a random token (BERT policy).
    Random,
    /// Picked but left unchanged (BERT policy).
    Kept,
    /// `[CLS]`, `[SEP]` and other special tokens.
    Special,
    Pad,
}

impl TokenClass {
    pub fn name(self) -> &'static str {
        match self {
            TokenClass::Real => "real",
            TokenClass::Mask => "mask",
            TokenClass::Random => "random",
            TokenClass::Kept => "kept",
            TokenClass::Special => "special",
            TokenClass::Pad => "pad",
        }
    }
}

/// A batch after masking; every vector is row-major `[batch, pos]`.
#[derive(Clone, Debug)]
pub struct MaskedBatch {
    pub batch: usize,
    pub pos: usize,
    /// Ids after corruption (what an MLM encoder sees).
    pub input_ids: Vec<u32>,
    /// Ids before corruption (targets at picked positions).
    pub original_ids: Vec<u32>,
    pub classes: Vec<TokenClass>,
    pub picked: Vec<bool>,
    /// Whether the position is fed to the encoder: everything for MLM; for MAE-LM the unpicked
    /// positions plus the `keep_mask_frac` share of picked ones.
    pub encoder_visible: Vec<bool>,
}

impl MaskedBatch {
    /// Flat indices (`b·pos + t`) of picked positions, in order.
    pub fn picked_indices(&self) -> Vec<u32> {
        (0..self.picked.len()).filter(|&i| self.picked[i]).map(|i| i as u32).collect()
    }

    /// Original ids at picked positions, aligned with `picked_indices`.
    pub fn targets(&self) -> Vec<u32> {
        (0..self.picked.len()).filter(|&i| self.picked[i]).map(|i| self.original_ids[i]).collect()
    }
}

pub struct Masker {
    pub config: MaskConfig,
    pub special: SpecialIds,
    pub vocab_size: usize,
    /// True for MAE-LM: picked positions leave the encoder input.
    pub drop_picked: bool,
}

impl Masker {
    /// Masks `rows` (each one sequence of equal length) drawing from one generator.
    pub fn mask(&self, rows: &[&[u32]], rng: &mut Rng) -> MaskedBatch {
        let mut out = Self::empty_batch(rows);
        for row in rows {
            self.mask_row(row, rng, &mut out);
        }
        out
    }

    /// Masks each row with its own generator `row_rng(i)`, so a row's mask does not depend on
    /// which rows share its batch (analysis shards then merge exactly into one pass).
    pub fn mask_independently(&self, rows: &[&[u32]], row_rng: impl Fn(usize) -> Rng) -> MaskedBatch {
        let mut out = Self::empty_batch(rows);
        for (i, row) in rows.iter().enumerate() {
            self.mask_row(row, &mut row_rng(i), &mut out);
        }
        out
    }

    fn empty_batch(rows: &[&[u32]]) -> MaskedBatch {
        let pos = rows.first().map_or(0, |r| r.len());
        MaskedBatch {
            batch: rows.len(),
            pos,
            input_ids: Vec::with_capacity(rows.len() * pos),
            original_ids: Vec::with_capacity(rows.len() * pos),
            classes: Vec::with_capacity(rows.len() * pos),
            picked: Vec::with_capacity(rows.len() * pos),
            encoder_visible: Vec::with_capacity(rows.len() * pos),
        }
    }

    fn mask_row(&self, row: &[u32], rng: &mut Rng, out: &mut MaskedBatch) {
        assert_eq!(row.len(), out.pos, "all rows of a batch have the same length");
        let classes: Vec<TokenClass> = row.iter().map(|&id| self.base_class(id)).collect();
        let mut candidates: Vec<usize> = (0..row.len()).filter(|&t| self.may_pick(row[t])).collect();
        let n_pick = rng.round_probabilistically(self.config.prob * candidates.len() as f64).max(1);
        let picked = rng.choose_distinct(&mut candidates, n_pick).to_vec();

        let mut ids = row.to_vec();
        let mut classes = classes;
        let mut is_picked = vec![false; row.len()];
        let mut visible = vec![true; row.len()];
        for &t in &picked {
            is_picked[t] = true;
            let (id, class) = self.corrupt(row[t], rng);
            ids[t] = id;
            classes[t] = class;
        }
        if self.drop_picked {
            let n_keep = rng.round_probabilistically(self.config.keep_mask_frac * picked.len() as f64);
            // `picked` is already in random order, so its head is a uniform subset.
            for &t in &picked[n_keep.min(picked.len())..] {
                visible[t] = false;
            }
        }
        out.input_ids.extend(ids);
        out.original_ids.extend_from_slice(row);
        out.classes.extend(classes);
        out.picked.extend(is_picked);
        out.encoder_visible.extend(visible);
    }

    /// Whether a position holding `id` is a candidate target: every ordinary token, plus the
    /// special ones unless `protect_special`.
    pub fn may_pick(&self, id: u32) -> bool {
        match self.base_class(id) {
            TokenClass::Real => true,
            TokenClass::Special => !self.config.protect_special,
            _ => false,
        }
    }

    fn base_class(&self, id: u32) -> TokenClass {
        let s = &self.special;
        if id == s.pad {
            TokenClass::Pad
        } else if id == s.cls || id == s.sep || id == s.mask {
            TokenClass::Special
        } else {
            TokenClass::Real
        }
    }

    fn corrupt(&self, original: u32, rng: &mut Rng) -> (u32, TokenClass) {
        match self.config.policy {
            MaskPolicy::AllMask => (self.special.mask, TokenClass::Mask),
            MaskPolicy::Bert => {
                let u = rng.uniform();
                if u < 0.8 {
                    (self.special.mask, TokenClass::Mask)
                } else if u < 0.9 {
                    (self.random_ordinary_token(rng), TokenClass::Random)
                } else {
                    (original, TokenClass::Kept)
                }
            }
        }
    }

    fn random_ordinary_token(&self, rng: &mut Rng) -> u32 {
        loop {
            let id = rng.below(self.vocab_size) as u32;
            if !self.special.contains(id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> SpecialIds {
        SpecialIds::REPDEF
    }

    fn masker(policy: MaskPolicy, drop_picked: bool, keep_mask_frac: f64) -> Masker {
        let config = MaskConfig { prob: 0.15, policy, keep_mask_frac, protect_special: true };
        Masker { config, special: specials(), vocab_size: 1000, drop_picked }
    }

    fn row(len: usize) -> Vec<u32> {
        let mut r: Vec<u32> = (0..len as u32).map(|i| 10 + i % 900).collect();
        r[0] = 2;
        r[len - 1] = 3;
        r
    }

    #[test]
    fn all_mask_picks_fifteen_percent_of_ordinary_tokens_and_never_specials() {
        let m = masker(MaskPolicy::AllMask, false, 0.0);
        let rows: Vec<Vec<u32>> = (0..400).map(|_| row(128)).collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let batch = m.mask(&refs, &mut Rng::new(0));
        let n_picked = batch.picked.iter().filter(|&&p| p).count() as f64;
        let expected = 0.15 * 126.0 * 400.0;
        assert!((n_picked - expected).abs() < 0.01 * expected, "{n_picked} vs {expected}");
        for i in 0..batch.picked.len() {
            let t = i % 128;
            if t == 0 || t == 127 {
                assert!(!batch.picked[i]);
                assert_eq!(batch.classes[i], TokenClass::Special);
            }
            if batch.picked[i] {
                assert_eq!(batch.input_ids[i], 4);
                assert_eq!(batch.classes[i], TokenClass::Mask);
            } else {
                assert_eq!(batch.input_ids[i], batch.original_ids[i]);
            }
        }
        assert!(batch.encoder_visible.iter().all(|&v| v));
    }

    #[test]
    fn bert_policy_splits_eighty_ten_ten() {
        let m = masker(MaskPolicy::Bert, false, 0.0);
        let rows: Vec<Vec<u32>> = (0..1000).map(|_| row(128)).collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let batch = m.mask(&refs, &mut Rng::new(1));
        let count = |c| batch.classes.iter().filter(|&&x| x == c).count() as f64;
        let picked = count(TokenClass::Mask) + count(TokenClass::Random) + count(TokenClass::Kept);
        assert!((count(TokenClass::Mask) / picked - 0.8).abs() < 0.01);
        assert!((count(TokenClass::Random) / picked - 0.1).abs() < 0.01);
        assert!((count(TokenClass::Kept) / picked - 0.1).abs() < 0.01);
        for i in 0..batch.classes.len() {
            if batch.classes[i] == TokenClass::Random {
                assert!(!specials().contains(batch.input_ids[i]));
            }
        }
    }

    #[test]
    fn mae_lm_drops_picked_positions_except_the_kept_fraction() {
        let rows: Vec<Vec<u32>> = (0..500).map(|_| row(128)).collect();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let dropped = masker(MaskPolicy::AllMask, true, 0.0).mask(&refs, &mut Rng::new(2));
        for i in 0..dropped.picked.len() {
            assert_eq!(dropped.encoder_visible[i], !dropped.picked[i]);
        }
        let half = masker(MaskPolicy::AllMask, true, 0.5).mask(&refs, &mut Rng::new(2));
        let picked = half.picked.iter().filter(|&&p| p).count() as f64;
        let visible_picked = (0..half.picked.len()).filter(|&i| half.picked[i] && half.encoder_visible[i]).count() as f64;
        assert!((visible_picked / picked - 0.5).abs() < 0.02);
    }

    #[test]
    fn same_seed_same_masks() {
        let m = masker(MaskPolicy::Bert, false, 0.0);
        let r = row(64);
        let a = m.mask(&[&r], &mut Rng::new(9));
        let b = m.mask(&[&r], &mut Rng::new(9));
        assert_eq!(a.input_ids, b.input_ids);
        assert_eq!(a.picked, b.picked);
    }
}
