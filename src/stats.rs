//! Small summary statistics shared by the report, the verdicts, fine-tuning and the benchmarks.

/// The median of the finite values (the mean of the two middle ones for an even count); `None`
/// when there is none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    finite.sort_by(f64::total_cmp);
    let mid = finite.len() / 2;
    Some(if finite.len() % 2 == 1 { finite[mid] } else { (finite[mid - 1] + finite[mid]) / 2.0 })
}

/// The smallest and the largest value; `(f64::MAX, f64::MIN)` when there is none.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(low, high), &v| (low.min(v), high.max(v)))
}

#[cfg(test)]
mod tests {
    use super::{median, min_max};

    #[test]
    fn min_max_of_a_few_values() {
        assert_eq!(min_max(&[1.5, -2.0, 0.25]), (-2.0, 1.5));
    }

    #[test]
    fn median_of_odd_even_empty_and_nan() {
        assert_eq!(median(&[0.9, 0.5, 0.7]), Some(0.7));
        assert_eq!(median(&[0.9, 0.5, 0.75, 0.6]), Some(0.675));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }
}
