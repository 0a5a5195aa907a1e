//! Small summary statistics shared by the report, the verdicts and fine-tuning.

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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_empty_and_nan() {
        assert_eq!(median(&[0.9, 0.5, 0.7]), Some(0.7));
        assert_eq!(median(&[0.9, 0.5, 0.75, 0.6]), Some(0.675));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }
}
