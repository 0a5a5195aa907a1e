//! Streamed Gram accumulator for one (model, condition, group, layer): G = HᵀH, Σh and N,
//! summed exactly in fixed point, so a spectrum over millions of tokens needs O(d²) memory and
//! the sums of any split of the rows, added in any order, are the same bits as one pass over them
//! (hidden states themselves round by the CPU that computed them: README, "What the budgets find").
//!
//! How the sums stay exact: each row is rounded once (to nearest, ties to even) to [`ROW_BITS`]
//! significant bits relative to its largest entry (an f32 hidden state is kept exactly unless it
//! is 2¹⁶ times smaller than the largest entry of its row). A batch's rows are grouped by that
//! scale and each entry split into two [`SLICE_BITS`]-bit integer slices, n = hi·2^SLICE_BITS +
//! lo. Three symmetric f64 products — hiᵀhi, loᵀlo and (hi+lo)ᵀ(hi+lo), whose difference from
//! the first two is the cross term hiᵀlo + loᵀhi — only ever add integers below 2⁵³: exact,
//! whatever order the product kernel sums in. Each computes only its lower triangle. The results
//! are combined and added in `i128`, whose addition is associative. Only the lower triangle of
//! the Gram is kept.

use anyhow::{bail, ensure, Context, Result};
use ndarray::{Array1, Array2, ArrayView2};
use std::cell::RefCell;
use std::collections::BTreeMap;

use super::linalg;
use crate::vectorize::{self, Vectorized};

/// Significant bits a row keeps: its entries become multiples of 2^(s − ROW_BITS), where s ≥ 0
/// is the smallest with |largest entry| < 2^s.
const ROW_BITS: i32 = 40;
/// Each rounded entry n = hi·2^SLICE_BITS + lo with |lo| ≤ 2^(SLICE_BITS−1) and |hi| ≤
/// 2^SLICE_BITS, so |hi + lo| ≤ 1.5·2^SLICE_BITS and no slice product exceeds 2.25·2^40.
const SLICE_BITS: i32 = ROW_BITS / 2;
/// 2^SLICE_BITS, the weight of the high slice.
const SLICE_UNIT: f64 = (1u64 << SLICE_BITS) as f64;
/// Rows per slice product: sums of MAX_BLOCK_ROWS products of at most 2.25·2^40 stay below 2^53,
/// where f64 holds every integer.
const MAX_BLOCK_ROWS: usize = 2048;

thread_local! {
    /// Each thread's buffer for a block's three products (d × d each, of which only the lower
    /// triangles are written and read), kept across updates: it needs no clearing.
    static PRODUCTS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Running sums over the rows (tokens) of a hidden-state matrix H (N × d), in fixed point: Σh in
/// units of 2^−ROW_BITS, HᵀH in units of 2^−2·ROW_BITS.
#[derive(Debug, Clone, PartialEq)]
pub struct GramAccumulator {
    d: usize,
    n_tokens: u64,
    sum: Vec<i128>,
    /// The lower triangle of HᵀH, row by row: entry (i, j ≤ i) at i(i+1)/2 + j.
    gram_lower: Vec<i128>,
}

/// The accumulator's exact state, for writers such as the safetensors shard files.
#[derive(Debug, Clone, PartialEq)]
pub struct GramParts {
    pub d: usize,
    pub n_tokens: u64,
    /// d values, in units of 2^−40.
    pub sum: Vec<i128>,
    /// d(d+1)/2 values, the lower triangle row by row, in units of 2^−80.
    pub gram_lower: Vec<i128>,
}

fn triangle_len(d: usize) -> usize {
    d * (d + 1) / 2
}

/// Where entry (i, j ≤ i) of the lower triangle is kept.
fn lower_index(i: usize, j: usize) -> usize {
    i * (i + 1) / 2 + j
}

impl GramAccumulator {
    /// An empty accumulator for hidden size `d`.
    pub fn new(d: usize) -> Self {
        Self { d, n_tokens: 0, sum: vec![0; d], gram_lower: vec![0; triangle_len(d)] }
    }

    pub fn d(&self) -> usize {
        self.d
    }

    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Σh over all tokens seen.
    pub fn sum(&self) -> Array1<f64> {
        let unit = (-ROW_BITS as f64).exp2();
        self.sum.iter().map(|&s| s as f64 * unit).collect()
    }

    /// Entry (i, j) of HᵀH.
    fn gram_entry(&self, i: usize, j: usize) -> f64 {
        let (i, j) = if j <= i { (i, j) } else { (j, i) };
        self.gram_lower[lower_index(i, j)] as f64 * (-2.0 * ROW_BITS as f64).exp2()
    }

    /// The uncentred Gram HᵀH.
    pub fn gram(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.d, self.d), |(i, j)| self.gram_entry(i, j))
    }

    /// tr(HᵀH): the total energy.
    pub fn trace(&self) -> f64 {
        (0..self.d).map(|i| self.gram_entry(i, i)).sum()
    }

    /// Adds a batch of f32 hidden states (tokens × d). On error nothing is added.
    ///
    /// The values are widened to f64 *before* any product: an f32 Gram loses the small singular
    /// values (DESIGN §5 measured the entropy rank of a low-rank group moving by 0.56).
    ///
    /// Runs on the calling thread. To use several, update one accumulator per slice of rows in
    /// parallel and [`merge`](Self::merge) them (the sums are exact, so the result is the same
    /// in any order), as the extraction does.
    pub fn update(&mut self, rows: ArrayView2<f32>) -> Result<()> {
        self.add_rows(rows)
    }

    /// Adds a batch of f64 hidden states (tokens × d). On error nothing is added.
    pub fn update_f64(&mut self, rows: ArrayView2<f64>) -> Result<()> {
        self.add_rows(rows)
    }

    fn add_rows<T: Copy + Into<f64>>(&mut self, rows: ArrayView2<T>) -> Result<()> {
        ensure!(rows.ncols() == self.d, "batch has {} columns but the accumulator was created for d = {}", rows.ncols(), self.d);
        check_finite(rows)?;
        let scales: Vec<i32> = rows.rows().into_iter().map(|row| row_scale(row.iter().map(|&x| x.into()))).collect::<Result<_>>()?;
        let mut rows_of_scale: BTreeMap<i32, usize> = BTreeMap::new();
        for &scale in &scales {
            *rows_of_scale.entry(scale).or_default() += 1;
        }
        // The slices of the rounded rows of each scale, one row after another.
        let mut by_scale: BTreeMap<i32, Slices> = rows_of_scale.into_iter().map(|(scale, n)| (scale, Slices::with_rows(n, self.d))).collect();
        for (row, scale) in rows.rows().into_iter().zip(scales) {
            let slices = by_scale.get_mut(&scale).expect("every scale was counted");
            let row = row.as_slice().map_or_else(|| std::borrow::Cow::Owned(row.to_vec()), std::borrow::Cow::Borrowed);
            slices.push_row(&row, ((ROW_BITS - scale) as f64).exp2());
        }
        if self.n_tokens > 0 {
            let mut delta = Self::new(self.d);
            delta.add_slices(&by_scale, rows.nrows())?;
            return self.merge(&delta);
        }
        // An accumulator without tokens is all zero (`from_parts` checks): add in place, and
        // clear it again on an error.
        self.add_slices(&by_scale, rows.nrows()).inspect_err(|_| *self = Self::new(self.d))
    }

    /// Adds the sums of `n_rows` rows, given as their slices by scale.
    fn add_slices(&mut self, by_scale: &BTreeMap<i32, Slices>, n_rows: usize) -> Result<()> {
        PRODUCTS.with_borrow_mut(|products| {
            let len = 3 * self.d * self.d;
            products.resize(products.len().max(len), 0.0);
            for (&scale, slices) in by_scale {
                for block in slices.blocks(MAX_BLOCK_ROWS * self.d) {
                    self.add_block(scale, block, &mut products[..len])?;
                }
            }
            Ok::<_, anyhow::Error>(())
        })?;
        self.n_tokens += n_rows as u64;
        Ok(())
    }

    /// Adds Σ n and Σ nᵀn of rounded rows that share `scale`, computed from their slices
    /// exactly.
    fn add_block(&mut self, scale: i32, block: SliceBlock, products: &mut [f64]) -> Result<()> {
        let (rows, d) = (block.hi.len() / self.d, self.d);
        // Column sums of the slices: below MAX_BLOCK_ROWS · 2^SLICE_BITS, exact in f64.
        let (mut hi_sums, mut lo_sums) = (vec![0.0; d], vec![0.0; d]);
        for (sums, slice) in [(&mut hi_sums, block.hi), (&mut lo_sums, block.lo)] {
            for row in slice.chunks(d) {
                sums.iter_mut().zip(row).for_each(|(sum, x)| *sum += x);
            }
        }
        for ((sum, hi), lo) in self.sum.iter_mut().zip(hi_sums).zip(lo_sums) {
            *sum += (((hi as i128) << SLICE_BITS) + lo as i128) << scale;
        }
        let (high, rest) = products.split_at_mut(d * d);
        let (low, both) = rest.split_at_mut(d * d);
        linalg::lower_self_product(block.hi, rows, d, high);
        linalg::lower_self_product(block.lo, rows, d, low);
        linalg::lower_self_product(block.both, rows, d, both);
        let exact = |x: f64| x as i64 as i128;
        // Entries are in units of 2^(2·scale) of the Gram's; a value above `largest` would not
        // survive the shift.
        let shift = 2 * scale as u32;
        let largest = (i128::MAX >> shift) as u128;
        for i in 0..d {
            for j in 0..=i {
                let ij = i * d + j;
                let (high, low) = (exact(high[ij]), exact(low[ij]));
                let cross = exact(both[ij]) - high - low;
                let value = (high << (2 * SLICE_BITS)) + (cross << SLICE_BITS) + low;
                ensure!(value.unsigned_abs() <= largest, TOO_LARGE);
                let entry = &mut self.gram_lower[lower_index(i, j)];
                *entry = entry.checked_add(value << shift).context(TOO_LARGE)?;
            }
        }
        Ok(())
    }

    /// Adds another shard's sums: the result equals one pass over both shards' rows, exactly.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        ensure!(
            other.d == self.d,
            "cannot merge accumulators of different hidden sizes ({} and {}); \
             were the shards extracted from different models or layers?",
            self.d,
            other.d
        );
        // An overflow leaves the sums as they were.
        ensure!(add_all_or_nothing(&mut self.sum, &other.sum), TOO_LARGE);
        if !add_all_or_nothing(&mut self.gram_lower, &other.gram_lower) {
            subtract(&mut self.sum, &other.sum);
            bail!(TOO_LARGE);
        }
        self.n_tokens += other.n_tokens;
        Ok(())
    }

    /// The Gram of the mean-centred rows: G − N·μμᵀ = G − (Σh)(Σh)ᵀ/N.
    ///
    /// With no tokens everything is zero, and so is the result. Centring
    /// after the fact cancels ~N·|μ|² of energy, so the result carries
    /// rounding noise of order ε·tr(G); the spectrum's noise floor accounts
    /// for it.
    pub fn centred_gram(&self) -> Array2<f64> {
        let gram = self.gram();
        if self.n_tokens == 0 {
            return gram;
        }
        let s = self.sum().insert_axis(ndarray::Axis(1));
        let outer = s.dot(&s.t());
        gram - outer / self.n_tokens as f64
    }

    /// The exact state, for serialisation.
    pub fn to_parts(&self) -> GramParts {
        GramParts { d: self.d, n_tokens: self.n_tokens, sum: self.sum.clone(), gram_lower: self.gram_lower.clone() }
    }

    /// Rebuilds an accumulator from [`GramParts`], checking that the pieces fit together.
    pub fn from_parts(parts: GramParts) -> Result<Self> {
        let GramParts { d, n_tokens, sum, gram_lower } = parts;
        ensure!(sum.len() == d, "stored Σh has {} values, expected d = {d}", sum.len());
        ensure!(gram_lower.len() == triangle_len(d), "stored Gram has {} values, expected d(d+1)/2 = {}", gram_lower.len(), triangle_len(d));
        let acc = Self { d, n_tokens, sum, gram_lower };
        ensure!(
            n_tokens > 0 || acc.sum.iter().chain(&acc.gram_lower).all(|&x| x == 0),
            "stored accumulator has no tokens but a non-zero Σh or Gram: the file is inconsistent"
        );
        ensure!((0..d).all(|i| acc.gram_lower[lower_index(i, i)] >= 0), "stored Gram has a negative diagonal entry: the file is corrupt");
        Ok(acc)
    }
}

const TOO_LARGE: &str = "hidden-state values too large to sum exactly: an entry of HᵀH would exceed 2⁴⁷ (about 1.4e14); analyse fewer tokens per shard";

/// The slices of rounded entries, row-major: hi, lo and hi + lo, as f64 product operands.
struct Slices {
    hi: Vec<f64>,
    lo: Vec<f64>,
    both: Vec<f64>,
}

/// A run of whole rows of [`Slices`].
struct SliceBlock<'a> {
    hi: &'a [f64],
    lo: &'a [f64],
    both: &'a [f64],
}

impl Slices {
    fn with_rows(rows: usize, d: usize) -> Self {
        let capacity = || Vec::with_capacity(rows * d);
        Self { hi: capacity(), lo: capacity(), both: capacity() }
    }

    /// Appends the slices of `row · unit` rounded to integers n (|n| ≤ 2^ROW_BITS): hi =
    /// n / 2^SLICE_BITS rounded, lo = n − hi·2^SLICE_BITS, so |lo| ≤ 2^(SLICE_BITS−1). All in f64,
    /// which holds these integers exactly.
    fn push_row<T: Copy + Into<f64>>(&mut self, row: &[T], unit: f64) {
        struct SplitRow<'a, T> {
            row: &'a [T],
            unit: f64,
            hi: &'a mut [f64],
            lo: &'a mut [f64],
            both: &'a mut [f64],
        }
        impl<T: Copy + Into<f64>> Vectorized for SplitRow<'_, T> {
            type Output = ();
            #[inline(always)]
            fn run(self) {
                for (((&x, hi), lo), both) in self.row.iter().zip(self.hi).zip(self.lo).zip(self.both) {
                    let n = round_to_integer(x.into() * self.unit);
                    *hi = round_to_integer(n / SLICE_UNIT);
                    *lo = n - *hi * SLICE_UNIT;
                    *both = *hi + *lo;
                }
            }
        }
        let start = self.hi.len();
        for slice in [&mut self.hi, &mut self.lo, &mut self.both] {
            slice.resize(start + row.len(), 0.0);
        }
        vectorize::dispatch(SplitRow { row, unit, hi: &mut self.hi[start..], lo: &mut self.lo[start..], both: &mut self.both[start..] });
    }

    /// Consecutive blocks of at most `len` entries.
    fn blocks(&self, len: usize) -> impl Iterator<Item = SliceBlock<'_>> {
        self.hi.chunks(len).zip(self.lo.chunks(len)).zip(self.both.chunks(len)).map(|((hi, lo), both)| SliceBlock { hi, lo, both })
    }
}

/// `v` (|v| < 2^51) rounded to the nearest integer, ties to even: adding 1.5·2^52 leaves no bits
/// below the units, subtracting it again is exact. (`f64::round` is a libm call on baseline
/// x86-64, several times slower in this loop.)
#[inline(always)]
fn round_to_integer(v: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
    (v + SHIFT) - SHIFT
}

/// The row's scale s: its entries are rounded to units of 2^(s − ROW_BITS).
fn row_scale(values: impl Iterator<Item = f64>) -> Result<i32> {
    let largest = values.fold(0.0_f64, |m, x| m.max(x.abs()));
    // The binary exponent e of `largest` (2^e ≤ largest < 2^(e+1)); s = e + 1, at least 0.
    let exponent = ((largest.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let scale = (exponent + 1).max(0);
    if scale > 23 {
        bail!("{TOO_LARGE} (a value of {largest:e})");
    }
    Ok(scale)
}

/// Adds `b` to `a` entry by entry, all or nothing: on an overflow `a` is left as it was and the
/// answer is false.
fn add_all_or_nothing(a: &mut [i128], b: &[i128]) -> bool {
    for k in 0..a.len() {
        match a[k].checked_add(b[k]) {
            Some(sum) => a[k] = sum,
            None => {
                subtract(&mut a[..k], b);
                return false;
            }
        }
    }
    true
}

/// `a −= b` entry by entry, for taking back an addition that fitted.
fn subtract(a: &mut [i128], b: &[i128]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x -= y);
}

/// Rejects NaN/Inf, naming the first offending position.
fn check_finite<T: Copy + Into<f64>>(rows: ArrayView2<T>) -> Result<()> {
    if let Some(((i, j), x)) = rows.indexed_iter().map(|(at, &x)| (at, x.into())).find(|(_, x)| !x.is_finite()) {
        bail!(
            "non-finite value {x} at row {i}, column {j}; nothing from this batch was \
             accumulated (a diverged model or a corrupt checkpoint produces NaN/Inf activations)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::gaussian;
    use super::*;
    use ndarray::{array, s, Axis};

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).mapv(f64::abs).fold(0.0_f64, |m, &x| m.max(x))
    }

    #[test]
    fn one_batch_matches_definition() {
        let h = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]];
        let mut acc = GramAccumulator::new(2);
        acc.update_f64(h.view()).unwrap();
        assert_eq!(acc.n_tokens(), 3);
        assert_eq!(acc.sum(), array![4.5, 1.0]);
        assert_eq!(acc.gram(), h.t().dot(&h));
    }

    #[test]
    fn gram_equals_the_f64_product_to_rounding() {
        // Rows spanning six orders of magnitude, so they fall into several scales.
        let mut h = gaussian(300, 9, 11);
        for (i, mut row) in h.rows_mut().into_iter().enumerate() {
            row *= 10f64.powi(i as i32 % 7 - 3);
        }
        let mut acc = GramAccumulator::new(9);
        acc.update_f64(h.view()).unwrap();
        let expected = h.t().dot(&h);
        let scale = expected.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        assert!(max_abs_diff(&acc.gram(), &expected) <= 1e-11 * scale, "differs by {}", max_abs_diff(&acc.gram(), &expected));
        let sum_diff = (&acc.sum() - &h.sum_axis(Axis(0))).iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        // Each entry is off by at most half its row's unit, 2^(s − 41) ≤ 2^−40 of the row's largest.
        assert!(sum_diff <= 1e-12 * h.mapv(f64::abs).sum(), "Σh differs by {sum_diff}");
    }

    #[test]
    fn f32_and_f64_updates_agree() {
        let h = gaussian(50, 7, 1);
        let h32 = h.mapv(|x| x as f32);
        let (mut a, mut b) = (GramAccumulator::new(7), GramAccumulator::new(7));
        a.update(h32.view()).unwrap();
        b.update_f64(h32.mapv(f64::from).view()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn merge_of_shards_equals_one_pass_exactly() {
        let h = gaussian(100, 6, 2);
        let mut whole = GramAccumulator::new(6);
        whole.update_f64(h.view()).unwrap();
        let (mut left, mut right) = (GramAccumulator::new(6), GramAccumulator::new(6));
        left.update_f64(h.slice(s![..37, ..])).unwrap();
        right.update_f64(h.slice(s![37.., ..])).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left, whole);
    }

    #[test]
    fn any_partition_in_any_order_equals_one_pass_exactly() {
        // Property over 50 seeded cases: rows of mixed magnitudes dealt to 1..=6 shards, each
        // shard fed in random batches in a shuffled order, the shards merged in a random order.
        let mut rng = crate::rng::Rng::new(7);
        for case in 0..50 {
            let (n, d) = (1 + rng.below(120), 1 + rng.below(9));
            let mut h = gaussian(n, d, case);
            for mut row in h.rows_mut() {
                row *= 4f64.powi(rng.below(9) as i32 - 4);
            }
            let mut whole = GramAccumulator::new(d);
            whole.update_f64(h.view()).unwrap();
            let n_shards = 1 + rng.below(6);
            let mut shards = vec![GramAccumulator::new(d); n_shards];
            let mut order: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut order);
            let owner: Vec<usize> = (0..n).map(|_| rng.below(n_shards)).collect();
            for (k, shard) in shards.iter_mut().enumerate() {
                let rows: Vec<usize> = order.iter().copied().filter(|&i| owner[i] == k).collect();
                for batch in rows.chunks(1 + rng.below(8)) {
                    shard.update_f64(h.select(Axis(0), batch).view()).unwrap();
                }
            }
            rng.shuffle(&mut shards);
            let mut merged = GramAccumulator::new(d);
            for shard in &shards {
                merged.merge(shard).unwrap();
            }
            assert_eq!(merged, whole, "case {case}");
        }
    }

    #[test]
    fn batches_longer_than_a_block_stay_exact() {
        // n = 2^40 − 2^19 − 2 splits into hi = 2^20 − 1 and lo = 2^19 − 2, within 1 of the
        // largest |hi + lo| there is; the rows step down from it by 2 (units of 2^−40), so the
        // slice products are as large as they can be and not all alike. 10,000 rows span five
        // blocks and must still sum exactly.
        let top: i64 = (1 << 40) - (1 << 19) - 2;
        let n: Vec<i64> = (0..10_000).map(|r| top - 2 * (r % 1000)).collect();
        let h = Array2::from_shape_fn((10_000, 3), |(r, _)| n[r] as f64 * (-ROW_BITS as f64).exp2());
        let mut acc = GramAccumulator::new(3);
        acc.update_f64(h.view()).unwrap();
        let expected: i128 = n.iter().map(|&n| n as i128 * n as i128).sum();
        assert!(acc.gram_lower.iter().all(|&g| g == expected), "{:?} vs {expected}", acc.gram_lower);
        let mut batched = GramAccumulator::new(3);
        for chunk in 0..10 {
            batched.update_f64(h.slice(s![chunk * 1000..(chunk + 1) * 1000, ..])).unwrap();
        }
        assert_eq!(batched, acc);
    }

    #[test]
    fn values_too_large_to_sum_exactly_are_refused_and_change_nothing() {
        let mut acc = GramAccumulator::new(2);
        acc.update_f64(array![[1.0, 2.0]].view()).unwrap();
        let before = acc.clone();
        let err = acc.update_f64(array![[1.0, 3e7]].view()).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        // Large enough to fit one row but not the running sum.
        let big = Array2::from_elem((4000, 2), 4e6);
        let err = acc.update_f64(big.view()).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert_eq!(acc, before);
        // An empty accumulator adds in place: a batch whose first block of MAX_BLOCK_ROWS fits
        // and whose second does not leaves it empty.
        let rows = |n| Array2::from_elem((n, 2), 2.2e5);
        assert!(GramAccumulator::new(2).update_f64(rows(MAX_BLOCK_ROWS).view()).is_ok());
        let mut empty = GramAccumulator::new(2);
        let err = empty.update_f64(rows(2 * MAX_BLOCK_ROWS).view()).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert_eq!(empty, GramAccumulator::new(2));
    }

    #[test]
    fn a_merge_that_overflows_changes_nothing() {
        // Σh and the first two Gram entries fit; entry (1, 1), 2 · 2 · 6.4e13, does not.
        let mut acc = GramAccumulator::new(2);
        acc.update_f64(array![[1.0, 8e6], [1.0, 8e6]].view()).unwrap();
        let before = acc.clone();
        let err = acc.merge(&before).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert_eq!(acc, before);
    }

    #[test]
    fn merge_rejects_dimension_mismatch() {
        let mut a = GramAccumulator::new(3);
        let err = a.merge(&GramAccumulator::new(4)).unwrap_err();
        assert!(err.to_string().contains("different hidden sizes"), "{err}");
    }

    #[test]
    fn update_rejects_nan_and_inf_and_keeps_state() {
        let mut acc = GramAccumulator::new(2);
        let bad = ndarray::array![[1.0_f32, 2.0], [f32::NAN, 0.0]];
        let err = acc.update(bad.view()).unwrap_err();
        assert!(err.to_string().contains("row 1, column 0"), "{err}");
        let inf = ndarray::array![[f64::INFINITY, 0.0]];
        assert!(acc.update_f64(inf.view()).is_err());
        assert_eq!(acc, GramAccumulator::new(2));
    }

    #[test]
    fn empty_batch_changes_nothing() {
        let mut acc = GramAccumulator::new(3);
        acc.update(Array2::<f32>::zeros((0, 3)).view()).unwrap();
        assert_eq!(acc, GramAccumulator::new(3));
    }

    #[test]
    fn update_rejects_wrong_width() {
        let mut acc = GramAccumulator::new(3);
        assert!(acc.update_f64(Array2::zeros((2, 4)).view()).is_err());
    }

    #[test]
    fn transposed_view_is_accepted() {
        let h = gaussian(5, 8, 3);
        let ht = h.t().to_owned();
        let mut acc = GramAccumulator::new(5);
        acc.update_f64(ht.t().t()).unwrap(); // non-standard strides
        let mut direct = GramAccumulator::new(5);
        direct.update_f64(h.t()).unwrap();
        assert_eq!(acc, direct);
    }

    #[test]
    fn centred_gram_matches_centred_rows() {
        let h = gaussian(40, 5, 4) + 3.0;
        let mut acc = GramAccumulator::new(5);
        acc.update_f64(h.view()).unwrap();
        let centred = &h - &h.mean_axis(Axis(0)).unwrap();
        let expected = centred.t().dot(&centred);
        let diff = max_abs_diff(&acc.centred_gram(), &expected);
        assert!(diff < 1e-9, "centred Gram differs by {diff}");
    }

    #[test]
    fn parts_round_trip_and_validation() {
        let mut acc = GramAccumulator::new(3);
        acc.update_f64(gaussian(10, 3, 5).view()).unwrap();
        let back = GramAccumulator::from_parts(acc.to_parts()).unwrap();
        assert_eq!(back, acc);
        let mut short = acc.to_parts();
        short.gram_lower.pop();
        assert!(GramAccumulator::from_parts(short).is_err());
        let mut empty_but_nonzero = GramAccumulator::new(2).to_parts();
        empty_but_nonzero.gram_lower[0] = 1;
        assert!(GramAccumulator::from_parts(empty_but_nonzero).is_err());
        let mut empty_with_sum = GramAccumulator::new(2).to_parts();
        empty_with_sum.sum[1] = -3;
        assert!(GramAccumulator::from_parts(empty_with_sum).is_err());
    }
}
