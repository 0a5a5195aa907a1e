//! Streamed Gram accumulator for one (model, condition, group, layer):
//! G = HᵀH, Σh and N in f64, so a spectrum over millions of tokens needs
//! O(d²) memory and shards computed anywhere can be merged.

use anyhow::{bail, ensure, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::linalg;

/// Running sums over the rows (tokens) of a hidden-state matrix H (N × d).
#[derive(Debug, Clone, PartialEq)]
pub struct GramAccumulator {
    d: usize,
    n_tokens: u64,
    /// Σ over tokens of h (d).
    sum: Array1<f64>,
    /// HᵀH (d × d), standard layout.
    gram: Array2<f64>,
}

/// A flat, serialisable copy of an accumulator (row-major Gram), for writers
/// such as the safetensors shard files.
#[derive(Debug, Clone, PartialEq)]
pub struct GramParts {
    pub d: usize,
    pub n_tokens: u64,
    pub sum: Vec<f64>,
    /// d·d values, row-major.
    pub gram: Vec<f64>,
}

impl GramAccumulator {
    /// An empty accumulator for hidden size `d`.
    pub fn new(d: usize) -> Self {
        Self { d, n_tokens: 0, sum: Array1::zeros(d), gram: Array2::zeros((d, d)) }
    }

    pub fn d(&self) -> usize {
        self.d
    }

    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Σh over all tokens seen.
    pub fn sum(&self) -> &Array1<f64> {
        &self.sum
    }

    /// The uncentred Gram HᵀH.
    pub fn gram(&self) -> &Array2<f64> {
        &self.gram
    }

    /// Adds a batch of f32 hidden states (tokens × d).
    ///
    /// The batch is cast to f64 *before* the product: an f32 Gram loses the
    /// small singular values (DESIGN §5 measured the entropy rank of a
    /// low-rank group moving by 0.56).
    pub fn update(&mut self, rows: ArrayView2<f32>) -> Result<()> {
        self.update_f64(rows.mapv(f64::from).view())
    }

    /// Adds a batch of f64 hidden states (tokens × d). On error nothing is added.
    pub fn update_f64(&mut self, rows: ArrayView2<f64>) -> Result<()> {
        ensure!(rows.ncols() == self.d, "batch has {} columns but the accumulator was created for d = {}", rows.ncols(), self.d);
        check_finite(rows)?;
        let rows = rows.as_standard_layout();
        linalg::add_gram(&mut self.gram, rows.view());
        self.sum += &rows.sum_axis(Axis(0));
        self.n_tokens += rows.nrows() as u64;
        Ok(())
    }

    /// Adds another shard's sums: the result equals one pass over both shards' rows.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        ensure!(
            other.d == self.d,
            "cannot merge accumulators of different hidden sizes ({} and {}); \
             were the shards extracted from different models or layers?",
            self.d,
            other.d
        );
        self.gram += &other.gram;
        self.sum += &other.sum;
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
        if self.n_tokens == 0 {
            return self.gram.clone();
        }
        let s = self.sum.view().insert_axis(Axis(1));
        let outer = s.dot(&s.t());
        &self.gram - &(outer / self.n_tokens as f64)
    }

    /// A flat copy for serialisation.
    pub fn to_parts(&self) -> GramParts {
        GramParts { d: self.d, n_tokens: self.n_tokens, sum: self.sum.to_vec(), gram: self.gram.iter().copied().collect() }
    }

    /// Rebuilds an accumulator from [`GramParts`], checking that the pieces fit together.
    pub fn from_parts(parts: GramParts) -> Result<Self> {
        let GramParts { d, n_tokens, sum, gram } = parts;
        ensure!(sum.len() == d, "stored Σh has {} values, expected d = {d}", sum.len());
        ensure!(gram.len() == d * d, "stored Gram has {} values, expected d·d = {}", gram.len(), d * d);
        let acc = Self { d, n_tokens, sum: Array1::from(sum), gram: Array2::from_shape_vec((d, d), gram)? };
        check_finite(acc.gram.view())?;
        ensure!(acc.sum.iter().all(|x| x.is_finite()), "stored Σh contains NaN or Inf");
        ensure!(n_tokens > 0 || acc.gram.iter().all(|&x| x == 0.0), "stored accumulator has no tokens but a non-zero Gram: the file is inconsistent");
        Ok(acc)
    }
}

/// Rejects NaN/Inf, naming the first offending position.
fn check_finite(rows: ArrayView2<f64>) -> Result<()> {
    if let Some(((i, j), x)) = rows.indexed_iter().find(|(_, x)| !x.is_finite()) {
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
    use ndarray::{array, s};

    #[test]
    fn one_batch_matches_definition() {
        let h = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]];
        let mut acc = GramAccumulator::new(2);
        acc.update_f64(h.view()).unwrap();
        assert_eq!(acc.n_tokens(), 3);
        assert_eq!(acc.sum(), &array![4.5, 1.0]);
        assert_eq!(acc.gram(), &h.t().dot(&h));
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
    fn merge_of_shards_equals_one_pass() {
        let h = gaussian(100, 6, 2);
        let mut whole = GramAccumulator::new(6);
        whole.update_f64(h.view()).unwrap();
        let (mut left, mut right) = (GramAccumulator::new(6), GramAccumulator::new(6));
        left.update_f64(h.slice(s![..37, ..])).unwrap();
        right.update_f64(h.slice(s![37.., ..])).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left.n_tokens(), whole.n_tokens());
        let diff = (&left.gram - &whole.gram).mapv(f64::abs).fold(0.0_f64, |m, &x| m.max(x));
        assert!(diff < 1e-12, "merged Gram differs by {diff}");
        assert!((&left.sum - &whole.sum).iter().all(|x| x.abs() < 1e-12));
    }

    #[test]
    fn merge_of_any_partition_equals_one_pass() {
        // Property over 50 seeded cases: rows dealt to 1..=6 shards in random order and sizes.
        let mut rng = crate::rng::Rng::new(7);
        for case in 0..50 {
            let (n, d) = (1 + rng.below(120), 1 + rng.below(9));
            let h = gaussian(n, d, case);
            let mut whole = GramAccumulator::new(d);
            whole.update_f64(h.view()).unwrap();
            let n_shards = 1 + rng.below(6);
            let mut shards = vec![GramAccumulator::new(d); n_shards];
            let owner: Vec<usize> = (0..n).map(|_| rng.below(n_shards)).collect();
            for (k, shard) in shards.iter_mut().enumerate() {
                let rows: Vec<usize> = (0..n).filter(|&i| owner[i] == k).collect();
                shard.update_f64(h.select(ndarray::Axis(0), &rows).view()).unwrap();
            }
            let mut merged = GramAccumulator::new(d);
            for shard in &shards {
                merged.merge(shard).unwrap();
            }
            assert_eq!(merged.n_tokens(), whole.n_tokens(), "case {case}");
            let scale = whole.gram.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
            let diff = (&merged.gram - &whole.gram).mapv(f64::abs).fold(0.0_f64, |m, &x| m.max(x));
            assert!(diff <= 1e-13 * scale * n as f64, "case {case}: merged Gram differs by {diff}");
        }
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
        let diff = (&acc.centred_gram() - &expected).mapv(f64::abs).fold(0.0_f64, |m, &x| m.max(x));
        assert!(diff < 1e-10, "centred Gram differs by {diff}");
    }

    #[test]
    fn parts_round_trip_and_validation() {
        let mut acc = GramAccumulator::new(3);
        acc.update_f64(gaussian(10, 3, 5).view()).unwrap();
        let back = GramAccumulator::from_parts(acc.to_parts()).unwrap();
        assert_eq!(back, acc);
        let mut short = acc.to_parts();
        short.gram.pop();
        assert!(GramAccumulator::from_parts(short).is_err());
        let mut empty_but_nonzero = GramAccumulator::new(2).to_parts();
        empty_but_nonzero.gram[0] = 1.0;
        assert!(GramAccumulator::from_parts(empty_but_nonzero).is_err());
    }
}
