//! Tests of the figures: every figure renders plausible PNG + SVG files from a realistic small
//! table, edge cases do not panic, and one SVG is compared with a committed snapshot.
//!
//! To look at the figures: `REPDEF_FIGURES_DIR=/tmp/figs cargo test --release --lib report::figures`
//! keeps them there instead of in a temporary dir.

use super::*;
use std::path::PathBuf;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/figures/snapshot_mask_subspace.svg");
const HINT: &str = "HINT: if the change is intended, regenerate with \
`REPDEF_UPDATE_SNAPSHOTS=1 cargo test --release --lib report::figures::tests::mask_subspace_svg_matches_snapshot` \
and look at the new fixtures/figures/snapshot_mask_subspace.svg before committing it";

fn rank_row(model: &str, condition: &str, group: &str, layer: usize, estimator: &str, centred: bool, value: f64) -> RankRow {
    RankRow { model: model.into(), condition: condition.into(), group: group.into(), layer, estimator: estimator.into(), centred, value, n_tokens: 5000 }
}

/// Shapes like a real 6-layer, d_model 256 pair: MLM spends dimensions on `[MASK]`, MAE-LM's
/// real tokens use more dimensions. Centred rows and other estimators are there to be ignored.
fn sample_ranks() -> Vec<RankRow> {
    let tables: [(&str, &str, &str, [f64; 7]); 9] = [
        ("MLM", "masked", "all", [150.0, 176.0, 190.0, 200.0, 205.0, 208.0, 200.0]),
        ("MLM", "masked", "real", [140.0, 160.0, 170.0, 172.0, 170.0, 165.0, 150.0]),
        ("MLM", "masked", "mask", [1.0, 20.0, 41.0, 55.0, 60.0, 62.0, 58.0]),
        ("MLM", "clean", "all", [141.0, 158.0, 165.0, 166.0, 163.0, 158.0, 146.0]),
        ("MLM", "clean", "real", [138.0, 155.0, 162.0, 163.0, 160.0, 155.0, 142.0]),
        ("MAE-LM", "masked", "all", [145.0, 170.0, 185.0, 192.0, 195.0, 196.0, 194.0]),
        ("MAE-LM", "masked", "real", [143.0, 168.0, 182.0, 190.0, 193.0, 194.0, 192.0]),
        ("MAE-LM", "clean", "all", [146.0, 171.0, 186.0, 193.0, 196.0, 197.0, 195.0]),
        ("MAE-LM", "clean", "real", [144.0, 169.0, 183.0, 191.0, 194.0, 195.0, 193.0]),
    ];
    let mut rows = Vec::new();
    for (model, condition, group, values) in tables {
        for (layer, value) in values.into_iter().enumerate() {
            rows.push(rank_row(model, condition, group, layer, "var@0.9", false, value));
            rows.push(rank_row(model, condition, group, layer, "var@0.9", true, value * 0.8));
            rows.push(rank_row(model, condition, group, layer, "entropy", false, value * 1.3));
        }
    }
    rows
}

fn d_models() -> BTreeMap<String, usize> {
    [("MLM".to_string(), 256), ("MAE-LM".to_string(), 256)].into_iter().collect()
}

fn spectrum_rows(model: &str, condition: &str, group: &str, layer: usize, alpha: f64, d: usize) -> Vec<SpectrumRow> {
    (0..d)
        .map(|index| SpectrumRow {
            model: model.into(),
            condition: condition.into(),
            group: group.into(),
            layer,
            centred: false,
            index,
            eigenvalue: 1.0 / ((index + 1) as f64).powf(alpha),
        })
        .collect()
}

fn sample_spectra() -> Vec<SpectrumRow> {
    let mut rows = Vec::new();
    for layer in [0, 3, 6] {
        let depth = layer as f64 / 6.0;
        rows.extend(spectrum_rows("MLM", "masked", "real", layer, 0.9 + 0.1 * depth, 256));
        rows.extend(spectrum_rows("MLM", "masked", "mask", layer, 3.0 - 1.2 * depth, 256));
        rows.extend(spectrum_rows("MLM", "clean", "real", layer, 0.95 + 0.2 * depth, 256));
        rows.extend(spectrum_rows("MAE-LM", "masked", "real", layer, 0.85, 256));
        rows.extend(spectrum_rows("MAE-LM", "clean", "real", layer, 0.86, 256));
        rows.extend(spectrum_rows("MAE-LM", "mask-fed", "mask", layer, 2.0, 256));
    }
    rows
}

fn subspace_row(model: &str, condition: &str, layer: usize, outside: f64) -> SubspaceRow {
    SubspaceRow {
        model: model.into(),
        condition: condition.into(),
        layer,
        centred: false,
        k_real: 150,
        k_mask: 40,
        mask_energy_outside_real: outside,
        angle_min_deg: 10.0,
        angle_median_deg: 45.0,
        angle_max_deg: 89.0,
    }
}

fn sample_subspace() -> Vec<SubspaceRow> {
    let mlm = [0.02, 0.31, 0.45, 0.55, 0.6, 0.62, 0.58];
    let maelm = [0.01, 0.12, 0.2, 0.25, 0.3, 0.28, 0.27];
    let mut rows: Vec<SubspaceRow> = mlm.iter().enumerate().map(|(l, &v)| subspace_row("MLM", "masked", l, v)).collect();
    rows.extend(maelm.iter().enumerate().map(|(l, &v)| subspace_row("MAE-LM", "mask-fed", l, v)));
    rows.extend(mlm.iter().enumerate().map(|(l, &v)| SubspaceRow { centred: true, ..subspace_row("MLM", "masked", l, v / 2.0) }));
    rows
}

fn sample_runs() -> Vec<(String, Vec<MetricsPoint>)> {
    let run = |speed: f64, floor: f64| {
        let mut points = Vec::new();
        for step in (0..=3000u64).step_by(100) {
            let t = step as f64;
            let loss = floor + (9.0 - floor) * (-t / speed).exp();
            points.push(MetricsPoint { step, kind: MetricsKind::Train, loss: loss + 0.2, accuracy: 0.0 });
            points.push(MetricsPoint { step, kind: MetricsKind::Eval, loss, accuracy: 0.55 * (1.0 - (-t / speed).exp()) });
        }
        points
    };
    vec![("MLM".to_string(), run(600.0, 3.1)), ("MAE-LM".to_string(), run(700.0, 3.0))]
}

/// Where figures go: `REPDEF_FIGURES_DIR` if set (to look at them), else a temporary dir.
fn output_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("REPDEF_FIGURES_DIR") {
        Some(dir) => (None, PathBuf::from(dir)),
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().to_path_buf();
            (Some(tmp), path)
        }
    }
}

fn assert_plausible(files: &FigureSet, name: &str) {
    assert_eq!(files.png.file_name().unwrap(), format!("{name}.png").as_str());
    assert_eq!(files.svg.file_name().unwrap(), format!("{name}.svg").as_str());
    let png = std::fs::read(&files.png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", files.png.display());
    assert!(png.len() > 8_000, "{} is only {} bytes", files.png.display(), png.len());
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{} is not a whole SVG", files.svg.display());
    assert!(svg.len() > 4_000 && svg.contains("<text"), "{} looks empty ({} bytes)", files.svg.display(), svg.len());
    let dir = files.png.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temporary files left in {}", dir.display());
}

#[test]
fn every_figure_renders_png_and_svg() {
    let (_keep, dir) = output_dir();
    assert_plausible(&rank_by_layer(&dir, &sample_ranks(), &d_models()).unwrap(), "fig_rank_by_layer");
    assert_plausible(&mlm_vs_maelm(&dir, &sample_ranks()).unwrap(), "fig_mlm_vs_maelm");
    assert_plausible(&spectrum(&dir, &sample_spectra(), &[0, 3, 6]).unwrap(), "fig_spectrum");
    assert_plausible(&mask_subspace(&dir, &sample_subspace()).unwrap(), "fig_mask_subspace");
    assert_plausible(&training(&dir, &sample_runs(), Some(7.2)).unwrap(), "fig_training");
}

/// Three seeds per objective: a median line and a min–max band per group.
fn seeded_ranks() -> Vec<RankRow> {
    let mut rows = Vec::new();
    for (seed, shift) in [(0, 0.0), (1, 6.0), (2, -5.0)] {
        for row in sample_ranks() {
            rows.push(RankRow { model: format!("{}#seed{seed}", row.model), value: row.value + shift * (1.0 + row.layer as f64 / 3.0), ..row });
        }
    }
    rows
}

#[test]
fn seeds_render_as_median_and_band() {
    let (_keep, dir) = output_dir();
    let seeded = dir.join("seeds");
    assert_plausible(&mlm_vs_maelm(&seeded, &seeded_ranks()).unwrap(), "fig_mlm_vs_maelm");
    let mut subspace = Vec::new();
    for seed in 0..3 {
        subspace.extend(sample_subspace().into_iter().map(|r| SubspaceRow {
            model: format!("{}#seed{seed}", r.model),
            mask_energy_outside_real: r.mask_energy_outside_real * (1.0 + 0.1 * seed as f64),
            ..r
        }));
    }
    assert_plausible(&mask_subspace(&seeded, &subspace).unwrap(), "fig_mask_subspace");
}

#[test]
fn members_aggregate_to_median_and_range() {
    let member = |group: &str, label: &str, points: Vec<(f64, f64)>| Member { group: group.into(), label: label.into(), points };
    let members = vec![
        member("A", "A#0", vec![(0.0, 1.0), (1.0, 10.0)]),
        member("B", "B", vec![(0.0, 5.0)]),
        member("A", "A#1", vec![(0.0, 3.0), (1.0, f64::NAN)]),
        member("A", "A#2", vec![(0.0, 2.0), (1.0, 20.0)]),
    ];
    let (series, bands) = aggregate_members(members);
    assert_eq!(series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["A (median of 3)", "B"]);
    assert_eq!(series[0].points, vec![(0.0, 2.0), (1.0, 15.0)]);
    assert_eq!(bands.len(), 1);
    assert_eq!(bands[0].points, vec![(0.0, 1.0, 3.0), (1.0, 10.0, 20.0)]);
    assert_ne!(series[0].style, series[1].style);
}

#[test]
fn model_groups_split_at_the_seed_separator() {
    assert_eq!(model_group("MLM#seed2"), "MLM");
    assert_eq!(model_group("MAE-LM"), "MAE-LM");
    assert_eq!(model_group("#x"), "");
}

fn is_nothing_to_plot(result: Result<FigureSet>) -> bool {
    result.unwrap_err().downcast_ref::<NothingToPlot>().is_some()
}

#[test]
fn empty_inputs_say_there_is_nothing_to_plot_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(is_nothing_to_plot(rank_by_layer(d, &[], &BTreeMap::new())));
    assert!(is_nothing_to_plot(mlm_vs_maelm(d, &[])));
    assert!(is_nothing_to_plot(spectrum(d, &[], &[])));
    assert!(is_nothing_to_plot(mask_subspace(d, &[])));
    assert!(is_nothing_to_plot(training(d, &[], None)));
    // Rows exist but none of the kind a figure draws.
    let centred_only: Vec<RankRow> = sample_ranks().into_iter().filter(|r| r.centred).collect();
    assert!(is_nothing_to_plot(rank_by_layer(d, &centred_only, &d_models())));
    let train_only = vec![("run".to_string(), vec![MetricsPoint { step: 1, kind: MetricsKind::Train, loss: 1.0, accuracy: 0.1 }])];
    assert!(is_nothing_to_plot(training(d, &train_only, Some(7.0))));
    let err = spectrum(d, &sample_spectra(), &[5]).unwrap_err().to_string();
    assert!(err.contains("[0, 3, 6]"), "the error should list the layers that exist: {err}");
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0, "no file may be written when there is nothing to plot");
}

#[test]
fn all_nan_is_nothing_to_plot() {
    let dir = tempfile::tempdir().unwrap();
    let nan_ranks: Vec<RankRow> = sample_ranks().into_iter().map(|r| RankRow { value: f64::NAN, ..r }).collect();
    assert!(is_nothing_to_plot(rank_by_layer(dir.path(), &nan_ranks, &BTreeMap::new())));
    assert!(is_nothing_to_plot(mlm_vs_maelm(dir.path(), &nan_ranks)));
    let nan_subspace: Vec<SubspaceRow> = sample_subspace().into_iter().map(|r| SubspaceRow { mask_energy_outside_real: f64::NAN, ..r }).collect();
    assert!(is_nothing_to_plot(mask_subspace(dir.path(), &nan_subspace)));
    let nan_spectra: Vec<SpectrumRow> = sample_spectra().into_iter().map(|r| SpectrumRow { eigenvalue: f64::NAN, ..r }).collect();
    assert!(is_nothing_to_plot(spectrum(dir.path(), &nan_spectra, &[])));
}

#[test]
fn edge_cases_render_without_panicking() {
    let (_keep, base) = output_dir();
    let dir = base.join("edge");
    // One layer, one model, and d_model unknown.
    let one_layer: Vec<RankRow> = sample_ranks().into_iter().filter(|r| r.layer == 3 && r.model == "MLM").collect();
    rank_by_layer(&dir.join("one_layer"), &one_layer, &BTreeMap::new()).unwrap();
    mlm_vs_maelm(&dir.join("one_layer"), &one_layer).unwrap();
    // MAE-LM alone: no masked/mask rows at all, so the group is simply absent.
    let maelm: Vec<RankRow> = sample_ranks().into_iter().filter(|r| r.model == "MAE-LM").collect();
    rank_by_layer(&dir.join("maelm_only"), &maelm, &d_models()).unwrap();
    // NaN values in the middle of lines, and a model that is NaN throughout.
    let mut holes = sample_ranks();
    for row in holes.iter_mut().filter(|r| r.layer == 2 || r.model == "MAE-LM" && r.group == "all") {
        row.value = f64::NAN;
    }
    rank_by_layer(&dir.join("nan"), &holes, &d_models()).unwrap();
    mlm_vs_maelm(&dir.join("nan"), &holes).unwrap();
    let mut subspace = sample_subspace();
    subspace[3].mask_energy_outside_real = f64::NAN;
    mask_subspace(&dir.join("nan"), &subspace).unwrap();
    let mut runs = sample_runs();
    runs[0].1[5].loss = f64::NAN;
    runs.push(("no eval rows".to_string(), vec![]));
    training(&dir.join("nan"), &runs, Some(f64::NAN)).unwrap();
    // Spectra: one layer, default layer choice, a zero spectrum, negative round-off, a single eigenvalue.
    let mut spectra = spectrum_rows("MLM", "masked", "real", 4, 1.0, 8);
    spectra.extend(spectrum_rows("MLM", "masked", "mask", 4, 1.0, 8).into_iter().map(|r| SpectrumRow { eigenvalue: 0.0, ..r }));
    spectra.extend(spectrum_rows("MLM", "clean", "real", 4, 1.0, 8).into_iter().map(|r| SpectrumRow { eigenvalue: r.eigenvalue - 0.2, ..r }));
    spectrum(&dir.join("spectrum_small"), &spectra, &[]).unwrap();
    spectrum(&dir.join("spectrum_one"), &spectrum_rows("MLM", "masked", "real", 0, 1.0, 1), &[0]).unwrap();
    spectrum(&dir.join("spectrum_default"), &sample_spectra(), &[]).unwrap();
    // One subspace point.
    mask_subspace(&dir.join("one_point"), &[subspace_row("MLM", "masked", 0, 0.4)]).unwrap();
    // A single eval point.
    let single = vec![("run".to_string(), vec![MetricsPoint { step: 0, kind: MetricsKind::Eval, loss: 9.0, accuracy: 0.0 }])];
    training(&dir.join("one_point"), &single, None).unwrap();
}

#[test]
fn cumulative_energy_ends_at_one() {
    let rows = spectrum_rows("m", "masked", "real", 0, 1.0, 10);
    let refs: Vec<&SpectrumRow> = rows.iter().rev().collect();
    let curve = cumulative_energy(refs).unwrap();
    assert_eq!(curve.len(), 10);
    assert_eq!(curve[0].0, 1.0);
    assert!((curve[9].1 - 1.0).abs() < 1e-12);
    assert!(curve.windows(2).all(|w| w[1].1 >= w[0].1));
}

#[test]
fn models_keep_their_input_order() {
    let mut ranks = sample_ranks();
    ranks.sort_by_key(|r| std::cmp::Reverse(r.model.clone()));
    let rows = paper_rows(&ranks);
    assert_eq!(first_appearance(rows.iter().map(|r| r.model.as_str())), ["MLM", "MAE-LM"]);
}

/// A deliberately small figure, so that the snapshot is short and a diff is readable.
fn snapshot_table() -> Vec<SubspaceRow> {
    vec![
        subspace_row("MLM", "masked", 0, 0.05),
        subspace_row("MLM", "masked", 1, 0.4),
        subspace_row("MLM", "masked", 2, 0.6),
        subspace_row("MAE-LM", "mask-fed", 0, 0.02),
        subspace_row("MAE-LM", "mask-fed", 1, 0.15),
        subspace_row("MAE-LM", "mask-fed", 2, 0.25),
    ]
}

#[test]
fn mask_subspace_svg_matches_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let files = mask_subspace(dir.path(), &snapshot_table()).unwrap();
    let got = std::fs::read_to_string(&files.svg).unwrap();
    // Rendering twice gives the same text: nothing time- or order-dependent is in the file.
    let again = mask_subspace(&dir.path().join("again"), &snapshot_table()).unwrap();
    assert_eq!(got, std::fs::read_to_string(&again.svg).unwrap(), "rendering is not deterministic");
    assert_eq!(std::fs::read(&files.png).unwrap(), std::fs::read(&again.png).unwrap(), "PNG rendering is not deterministic");
    if std::env::var_os("REPDEF_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(SNAPSHOT).parent().unwrap()).unwrap();
        std::fs::write(SNAPSHOT, &got).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(SNAPSHOT).unwrap_or_else(|e| panic!("reading {SNAPSHOT}: {e}\n{HINT}"));
    if got != expected {
        let first = got.lines().zip(expected.lines()).position(|(a, b)| a != b).unwrap_or(got.lines().count().min(expected.lines().count()));
        panic!(
            "fig_mask_subspace.svg differs from {SNAPSHOT} from line {}:\n  expected: {}\n  got:      {}\n(expected {} lines, got {})\n{HINT}",
            first + 1,
            expected.lines().nth(first).unwrap_or("<end of file>"),
            got.lines().nth(first).unwrap_or("<end of file>"),
            expected.lines().count(),
            got.lines().count(),
        );
    }
}
