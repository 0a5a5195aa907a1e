//! Arithmetic that the compiler can vectorise: reductions with eight independent accumulators
//! (a single running f32 sum is a serial dependency chain that it may not reorder), and
//! branch-free `exp` and `erf` (libm's are scalar calls with branches on the argument's range,
//! ~15 ns per GELU element on spread-out activations).

const LANES: usize = 8;

/// eˣ, within 2 ulp (Cephes `expf`: e^r on |r| ≤ ln2/2 by a degree-6 polynomial, times 2ⁿ
/// built in the exponent bits); exactly 0 below e⁻⁸⁷ (f32's smallest normal), as for masked
/// scores. Only selects and float ops, no float→int conversion, so that loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer n, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 88.0);
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2ⁿ: the exponent field n + 127; the shift drops ROUND's own bits.
    let two_n = f32::from_bits(shifted.to_bits().wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        e_r * two_n
    }
}

/// erf(x) to within 4.2·10⁻⁷ (a few ulp of 1), as a rational function: the approximation of
/// Eigen and XLA, whose GELU uses it. |x| ≥ 4 gives ±1 as in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ((((((-2.726_142_3e-10 * x2 + 2.770_681_4e-8) * x2 - 2.101_024e-6) * x2 - 5.692_506_4e-5) * x2 - 7.349_906_3e-4) * x2 - 2.954_600_1e-3) * x2
        - 1.609_603_3e-2)
        * x;
    let q = (((-1.456_607_2e-5 * x2 - 2.133_740_6e-4) * x2 - 1.682_827e-3) * x2 - 7.373_329_2e-3) * x2 - 1.426_474e-2;
    p / q
}

#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
pub fn dot(xs: &[f32], ys: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(x, y)| x * y).sum();
    for (cx, cy) in xc.zip(yc) {
        for ((a, &x), &y) in acc.iter_mut().zip(cx).zip(cy) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (x - mean)².
pub fn squared_deviations(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| (x - mean) * (x - mean)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x - mean) * (x - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_the_plain_loops() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let ys: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        assert!((sum(&xs) - xs.iter().sum::<f32>()).abs() < 1e-5);
        assert!((dot(&xs, &ys) - xs.iter().zip(&ys).map(|(x, y)| x * y).sum::<f32>()).abs() < 1e-5);
        let m = 0.1;
        assert!((squared_deviations(&xs, m) - xs.iter().map(|x| (x - m) * (x - m)).sum::<f32>()).abs() < 1e-5);
        assert_eq!(max(&xs), xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }

    #[test]
    fn exp_and_erf_agree_with_libm_to_round_off() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3; // [-20, 20]
            let (e, want) = (exp(x), x.exp());
            assert!((e - want).abs() <= 3e-7 * want, "exp({x}) = {e}, libm {want}");
            let (f, want) = (erf(x), candle_core::cpu::erf::erf_f32(x));
            assert!((f - want).abs() <= 4.5e-7, "erf({x}) = {f}, libm {want}");
        }
        for x in [-88.0, -1e9, f32::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0);
        }
        assert!((exp(-86.9) / (-86.9f32).exp() - 1.0).abs() < 1e-5);
    }
}
