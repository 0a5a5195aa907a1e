//! Task scores as GLUE computes them — accuracy, Matthews correlation (CoLA), and the mean of
//! Pearson and Spearman correlation (STS-B) — and the score of the best constant predictor, the
//! chance level an encoder has to beat. Checked against scikit-learn and SciPy
//! (`fixtures/golden/make_metric_golden.py`).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    #[default]
    Accuracy,
    /// Matthews correlation coefficient of the predicted and true classes.
    Matthews,
    /// The mean of Pearson's and Spearman's correlation of predicted and true scores.
    PearsonSpearman,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Matthews => "Matthews correlation",
            Metric::PearsonSpearman => "Pearson/Spearman mean",
        }
    }

    /// The score of `predictions` (class ids, or scores) against `targets`.
    pub fn score(self, predictions: &[f64], targets: &[f64]) -> f64 {
        match self {
            Metric::Accuracy => accuracy(predictions, targets),
            Metric::Matthews => matthews(predictions, targets),
            Metric::PearsonSpearman => (pearson(predictions, targets) + spearman(predictions, targets)) / 2.0,
        }
    }

    /// The dev score of the best constant predictor: the share of dev's most frequent class for
    /// accuracy (whichever class a constant guess picks, it scores no more); 0 for the
    /// correlations, which a constant does not have.
    pub fn chance(self, dev_targets: &[f64]) -> f64 {
        match self {
            Metric::Accuracy => {
                let mut counts: HashMap<u64, usize> = HashMap::new();
                for class in dev_targets {
                    *counts.entry(class.to_bits()).or_default() += 1;
                }
                counts.values().max().copied().unwrap_or(0) as f64 / dev_targets.len().max(1) as f64
            }
            Metric::Matthews | Metric::PearsonSpearman => 0.0,
        }
    }
}

pub fn accuracy(predictions: &[f64], targets: &[f64]) -> f64 {
    let correct = predictions.iter().zip(targets).filter(|(p, t)| p == t).count();
    correct as f64 / targets.len().max(1) as f64
}

/// The multi-class Matthews correlation (Gorodkin's R_K; for two classes the usual
/// (TP·TN − FP·FN)/√(…)); 0 when either side is constant.
pub fn matthews(predictions: &[f64], targets: &[f64]) -> f64 {
    let classes: Vec<f64> = {
        let mut all: Vec<f64> = predictions.iter().chain(targets).copied().collect();
        all.sort_by(f64::total_cmp);
        all.dedup();
        all
    };
    let count = |values: &[f64], class: f64| values.iter().filter(|&&v| v == class).count() as f64;
    let n = targets.len() as f64;
    let correct = predictions.iter().zip(targets).filter(|(p, t)| p == t).count() as f64;
    let (mut predicted_true, mut predicted_sq, mut true_sq) = (0.0, 0.0, 0.0);
    for &class in &classes {
        let (p, t) = (count(predictions, class), count(targets, class));
        predicted_true += p * t;
        predicted_sq += p * p;
        true_sq += t * t;
    }
    let denominator = ((n * n - predicted_sq) * (n * n - true_sq)).sqrt();
    if denominator == 0.0 {
        return 0.0;
    }
    (correct * n - predicted_true) / denominator
}

/// Pearson's correlation; 0 when either side has no variance.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mean_x, mean_y) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mean_x, b - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's correlation: Pearson's of the ranks, ties given their average rank.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// 1-based ranks, ties sharing the mean of the ranks they span.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean_rank;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_f64(value: &serde_json::Value) -> Vec<f64> {
        value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    }

    #[test]
    fn scores_match_scikit_learn_and_scipy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/metric_golden.json");
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        assert!(cases.len() >= 6);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let (predictions, targets) = (as_f64(&case["predictions"]), as_f64(&case["targets"]));
            let close = |got: f64, key: &str| {
                let want = case[key].as_f64().unwrap();
                assert!((got - want).abs() < 1e-12, "{name} {key}: {got} vs {want}");
            };
            close(accuracy(&predictions, &targets), "accuracy");
            close(matthews(&predictions, &targets), "matthews");
            close(pearson(&predictions, &targets), "pearson");
            close(spearman(&predictions, &targets), "spearman");
        }
    }

    #[test]
    fn chance_is_the_most_frequent_class_or_zero_correlation() {
        let dev = [1.0, 0.0, 0.0, 1.0, 1.0];
        assert_eq!(Metric::Accuracy.chance(&dev), 0.6);
        assert_eq!(Metric::Matthews.chance(&dev), 0.0);
        assert_eq!(Metric::Matthews.score(&[1.0; 5], &dev), 0.0, "a constant predictor has no correlation");
        assert_eq!(Metric::PearsonSpearman.score(&[2.0, 2.0], &[1.0, 3.0]), 0.0);
        // Monotone but not linear: Spearman 1, Pearson below it.
        let (x, y) = ([1.0, 2.0, 3.0], [0.5, 0.9, 4.0]);
        assert_eq!(Metric::PearsonSpearman.score(&x, &y), (pearson(&x, &y) + 1.0) / 2.0);
    }
}
