//! A small deterministic random number generator whose whole state can be saved.
//!
//! Every random choice in repdef (initialisation, batch order, masking, dropout) draws from
//! this generator instead of candle's device RNG, which cannot be seeded on the CPU backend.
//! That is what makes "same seed, same result" and bit-exact resume possible: the state is
//! four `u64`s written into `train_state.json`.

use serde::{Deserialize, Serialize};

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { state: [next(), next(), next(), next()] }
    }

    /// An independent stream for one purpose (e.g. `derive(seed, "eval-masking")`).
    pub fn derive(seed: u64, purpose: &str) -> Self {
        let tag = purpose.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
        Rng::new(seed ^ tag)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift; the bias is < n / 2^64, far below anything measurable here.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Sets every element of `out` to an independent draw that is `true` with probability `p`
    /// (dropout masks: millions per step). Each 64-bit output gives two draws by comparing 32
    /// random bits with p·2³², so `p` is quantised to a multiple of 2⁻³², far below any
    /// measurable effect.
    pub fn fill_bernoulli(&mut self, out: &mut [bool], p: f64) {
        let threshold = (p.clamp(0.0, 1.0) * (1u64 << 32) as f64).round() as u64;
        for pair in out.chunks_mut(2) {
            let bits = self.next_u64();
            pair[0] = (bits & 0xFFFF_FFFF) < threshold;
            if let Some(second) = pair.get_mut(1) {
                *second = (bits >> 32) < threshold;
            }
        }
    }

    /// Standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1], so ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `floor(x + U[0,1))`: rounds a fractional count up with probability equal to its fraction.
    pub fn round_probabilistically(&mut self, x: f64) -> usize {
        (x + self.uniform()).floor() as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// `k` distinct elements of `items` chosen uniformly (partial Fisher–Yates, in place).
    pub fn choose_distinct<'a, T>(&mut self, items: &'a mut [T], k: usize) -> &'a [T] {
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        &items[..k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trips() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let saved = serde_json::to_string(&a).unwrap();
        let mut restored: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(a.next_u64(), restored.next_u64());
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let (mut su, mut sn, mut sn2) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            su += rng.uniform();
            let z = rng.normal();
            sn += z;
            sn2 += z * z;
        }
        assert!((su / n as f64 - 0.5).abs() < 0.005);
        assert!((sn / n as f64).abs() < 0.01);
        assert!((sn2 / n as f64 - 1.0).abs() < 0.02);
    }

    #[test]
    fn bernoulli_has_the_right_rate_and_extremes() {
        let mut rng = Rng::new(5);
        let n = 200_001; // odd: the last draw uses half of an output
        let mut draws = |n: usize, p: f64| {
            let mut out = vec![false; n];
            rng.fill_bernoulli(&mut out, p);
            out
        };
        let rate = draws(n, 0.1).iter().filter(|&&b| b).count() as f64 / n as f64;
        assert!((rate - 0.1).abs() < 0.003, "{rate}");
        assert!(draws(1000, 0.0).iter().all(|&b| !b));
        assert!(draws(1000, 1.0).iter().all(|&b| b));
    }

    #[test]
    fn choose_distinct_picks_without_replacement() {
        let mut rng = Rng::new(3);
        let mut items: Vec<usize> = (0..50).collect();
        let mut picked = rng.choose_distinct(&mut items, 20).to_vec();
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked.len(), 20);
    }
}
