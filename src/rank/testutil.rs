//! Deterministic random matrices for the `rank` tests (no `rand` dependency:
//! a SplitMix64 stream and Box–Muller are enough and never change).

use ndarray::{Array1, Array2, Axis};

/// SplitMix64: a tiny, well-mixed 64-bit generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// An n × d matrix of independent standard normals.
pub fn gaussian(n: usize, d: usize, seed: u64) -> Array2<f64> {
    let mut rng = SplitMix64(seed);
    Array2::from_shape_simple_fn((n, d), || rng.normal())
}

/// An n × k matrix with orthonormal columns (Gram–Schmidt of a Gaussian matrix).
pub fn orthonormal(n: usize, k: usize, seed: u64) -> Array2<f64> {
    let mut q = gaussian(n, k, seed);
    for j in 0..k {
        for i in 0..j {
            // Two passes of projection keep the columns orthogonal to ~1e-16.
            for _ in 0..2 {
                let proj = q.column(i).dot(&q.column(j));
                let qi = q.column(i).to_owned();
                q.column_mut(j).scaled_add(-proj, &qi);
            }
        }
        let norm = q.column(j).dot(&q.column(j)).sqrt();
        q.column_mut(j).mapv_inplace(|x| x / norm);
    }
    q
}

/// An n × d matrix U·diag(s)·Vᵀ whose singular values are exactly `s` (up to round-off).
pub fn with_singular_values(n: usize, d: usize, s: &[f64], seed: u64) -> Array2<f64> {
    let k = s.len();
    let u = orthonormal(n, k, seed);
    let v = orthonormal(d, k, seed.wrapping_add(1));
    let scaled = &u * &Array1::from(s.to_vec()).insert_axis(Axis(0));
    scaled.dot(&v.t())
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}
