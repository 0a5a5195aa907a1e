//! A figure as plain data: panels, axes, series, bands and reference lines. The figure
//! functions build a [`Chart`] from the tidy tables; `render` draws any chart. Keeping the two
//! apart lets the data selection be tested without pixels, and every figure share one look.

use super::palette::{Rgb, Style};

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    /// One smaller line under the title (what is measured, how).
    pub subtitle: Option<String>,
    pub panels: Vec<Panel>,
    /// Panels per row; rows follow.
    pub columns: usize,
    /// Pixel size of one panel.
    pub panel_size: (u32, u32),
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub bands: Vec<Band>,
    pub series: Vec<Series>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; the range must be positive.
    Log,
}

#[derive(Clone, Debug)]
pub struct Axis {
    pub label: String,
    /// Data range shown (in data units, before any log transform); lo < hi.
    pub range: (f64, f64),
    pub scale: Scale,
    /// Ticks only at whole numbers (layers, steps).
    pub integer: bool,
}

/// A line through points in x order. Non-finite y values break the line (no point is drawn
/// and the neighbours are not joined across the gap).
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// A shaded region between a lower and an upper curve (e.g. the min–max over seeds).
#[derive(Clone, Debug)]
pub struct Band {
    pub colour: Rgb,
    /// (x, lower, upper), in x order.
    pub points: Vec<(f64, f64, f64)>,
}

/// A dashed grey horizontal reference line.
#[derive(Clone, Debug)]
pub struct Rule {
    pub y: f64,
    pub label: String,
    /// Where the label goes: in the legend (when the line means the same in every panel and an
    /// in-plot label could hide data), or written at the line's right end.
    pub in_legend: bool,
}

impl Axis {
    /// A linear axis spanning `values` (non-finite ones ignored), optionally from zero, with a
    /// little headroom above so the top point is not on the frame. `None` if nothing is finite.
    pub fn fit(label: &str, values: impl IntoIterator<Item = f64>, from_zero: bool) -> Option<Axis> {
        let (lo, hi) = finite_extent(values)?;
        let lo = if from_zero { lo.min(0.0) } else { lo };
        let pad = if hi > lo { 0.05 * (hi - lo) } else { hi.abs().max(1.0) * 0.05 };
        let lo = if from_zero && lo >= 0.0 { lo } else { lo - pad };
        Some(Axis { label: label.to_string(), range: (lo, hi + pad), scale: Scale::Linear, integer: false })
    }

    /// A whole-number axis over `lo..=hi`, half a unit wider on each side so end points are not
    /// drawn on the frame (and a single value still gets a non-empty range).
    pub fn integers(label: &str, lo: f64, hi: f64) -> Axis {
        Axis { label: label.to_string(), range: (lo - 0.5, hi + 0.5), scale: Scale::Linear, integer: true }
    }

    /// The axis in drawing units: log10 of the range for a log axis, and never empty.
    pub fn drawn_range(&self) -> (f64, f64) {
        let (lo, hi) = match self.scale {
            Scale::Linear => self.range,
            Scale::Log => (self.range.0.max(f64::MIN_POSITIVE).log10(), self.range.1.max(f64::MIN_POSITIVE).log10()),
        };
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        }
    }

    /// A data value in drawing units (NaN where a log axis cannot show it).
    pub fn to_drawn(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => v,
            Scale::Log if v > 0.0 => v.log10(),
            Scale::Log => f64::NAN,
        }
    }

    /// Tick positions in drawing units, about `target` of them.
    pub fn ticks(&self, target: usize) -> Vec<f64> {
        let (lo, hi) = self.drawn_range();
        match self.scale {
            Scale::Linear => nice_ticks(lo, hi, target, self.integer),
            Scale::Log => log_ticks(lo, hi, target),
        }
    }

    /// A tick label for a position in drawing units.
    pub fn tick_label(&self, drawn: f64) -> String {
        let v = match self.scale {
            Scale::Linear => drawn,
            Scale::Log => 10f64.powf(drawn),
        };
        format_number(v)
    }
}

fn finite_extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Ticks at multiples of 1, 2 or 5 × 10ⁿ covering [lo, hi], about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return vec![];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    if integer {
        step = step.max(1.0).round();
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Round to the step's decimals so ticks are the numbers they look like (0.6, not 0.6000000000000001).
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    (first..=last).map(|i| clean_zero(format!("{:.*}", decimals, i as f64 * step).parse().unwrap_or(i as f64 * step))).collect()
}

/// Log-axis ticks (in log10 units) at 1, 2, 5 × 10ⁿ, thinned to decades when there are many.
fn log_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let all: Vec<f64> = ((lo.floor() as i64)..=(hi.ceil() as i64))
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| (m * 10f64.powi(e as i32)).log10()))
        .filter(|t| *t >= lo - 1e-9 && *t <= hi + 1e-9)
        .collect();
    if all.len() <= target.max(2) {
        return all;
    }
    ((lo.ceil() as i64)..=(hi.floor() as i64)).map(|e| e as f64).collect()
}

fn clean_zero(v: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// Short, exact-looking tick text: "0.25", "300", "1.2k", "2M".
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.2}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside() {
        assert_eq!(nice_ticks(0.0, 1.0, 5, false), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(-0.5, 12.5, 8, true), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(nice_ticks(-0.5, 0.5, 8, true), vec![0.0]);
        assert!(nice_ticks(1.0, 1.0, 5, false).is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5, false).is_empty());
    }

    #[test]
    fn log_ticks_cover_the_range() {
        let axis = Axis { label: String::new(), range: (1.0, 768.0), scale: Scale::Log, integer: false };
        let labels: Vec<String> = axis.ticks(12).iter().map(|t| axis.tick_label(*t)).collect();
        assert_eq!(labels, ["1", "2", "5", "10", "20", "50", "100", "200", "500"]);
    }

    #[test]
    fn fit_ignores_nan_and_handles_a_single_value() {
        assert!(Axis::fit("y", [f64::NAN], true).is_none());
        let axis = Axis::fit("y", [3.0, f64::NAN], true).unwrap();
        assert_eq!(axis.range.0, 0.0);
        assert!(axis.range.1 > 3.0);
        let flat = Axis::fit("y", [3.0], false).unwrap();
        assert!(flat.range.0 < 3.0 && flat.range.1 > 3.0);
    }

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(300.0), "300");
        assert_eq!(format_number(12000.0), "12k");
        assert_eq!(format_number(2_500_000.0), "2.5M");
        assert_eq!(format_number(0.0), "0");
    }
}
