//! The learning-rate schedule: linear warmup to the peak, then linear decay to 0 (BERT/RoBERTa).

/// Learning rate for optimiser step `step` (0-based) of `total`.
pub fn lr_at(step: u64, peak: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        peak
    } else {
        peak * (total - step) as f64 / (total - warmup) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_zero() {
        assert_eq!(lr_at(0, 1.0, 4, 10), 0.25);
        assert_eq!(lr_at(3, 1.0, 4, 10), 1.0);
        assert_eq!(lr_at(4, 1.0, 4, 10), 1.0);
        assert!((lr_at(7, 1.0, 4, 10) - 0.5).abs() < 1e-12);
        assert!((lr_at(9, 1.0, 4, 10) - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(lr_at(0, 1.0, 0, 10), 1.0);
        let peak = (0..10).map(|s| lr_at(s, 1.0, 4, 10)).fold(0.0, f64::max);
        assert_eq!(peak, 1.0);
    }
}
