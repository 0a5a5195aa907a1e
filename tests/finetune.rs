//! Fine-tuning end to end on the tiny fixture encoder: it can overfit a handful of sentences,
//! seeds reproduce exactly and differ from each other, a learning-rate grid reports its best
//! point, and the CLI prints and writes its results.

use repdef::analysis::tables::{read_csv, RankRow};
use repdef::finetune::{finetune, finetune_grid, EpochRow, FinetuneConfig, FinetuneRequest, GridSummary, Task, GRID_FILE, RESULTS_FILE, SUMMARY_FILE};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn tiny_mlm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repdef-tiny-mlm")
}

/// The header and the first `n` rows of a bundled SST-2 split, copied into `dir`.
fn sst2_head(dir: &Path, split: &str, n: usize) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/sst2/{split}.tsv"));
    let text: String = std::fs::read_to_string(source).unwrap().lines().take(n + 1).map(|l| format!("{l}\n")).collect();
    let path = dir.join(format!("{split}.tsv"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `repdef finetune` on the tiny encoder for one epoch in batches of 8 from the repository
/// root, with `args`; requires success and returns stdout.
fn finetune_cli(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_repdef"))
        .args(["finetune", "--model", tiny_mlm().to_str().unwrap(), "--epochs", "1", "--batch-size", "8"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn request(dir: &Path, task: Task, seeds: Vec<u64>, config: FinetuneConfig) -> FinetuneRequest {
    FinetuneRequest { model: tiny_mlm(), tokenizer: None, task, seeds, config, out: dir.join("out") }
}

#[test]
fn overfits_a_handful_of_sentences_and_writes_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let train = sst2_head(dir.path(), "train", 8);
    let task = Task::from_files("eight", train.clone(), train);
    // 50 epochs of one batch: 50 optimiser steps.
    let config = FinetuneConfig { epochs: 50, lr: 3e-3, batch_size: 8, train_examples: None, ..FinetuneConfig::default() };
    let outcome = finetune(&request(dir.path(), task, vec![0], config)).unwrap();
    let last = outcome.epochs.last().unwrap();
    assert_eq!(last.dev_score, 1.0, "{last:?}");
    assert!(last.dev_loss < 0.05, "{last:?}");

    let out = dir.path().join("out");
    let rows: Vec<EpochRow> = read_csv(&out.join(RESULTS_FILE)).unwrap();
    assert_eq!(rows, outcome.epochs);
    let ranks: Vec<RankRow> = read_csv(&out.join("ranks.csv")).unwrap();
    // 2 encoders × 2 groups × 3 layers (embeddings + 2 blocks) × uncentred/centred.
    assert_eq!(ranks.len(), 24);
    assert!(ranks.iter().all(|r| r.condition == "clean" && r.estimator == "var@0.9" && r.value >= 1.0));
    for model in ["pretrained", "finetuned-seed0"] {
        assert!(ranks.iter().any(|r| r.model == model && r.group == "real"), "{model}");
    }
    assert!(out.join(SUMMARY_FILE).exists());
}

#[test]
fn same_seed_reproduces_and_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::from_files("small", sst2_head(dir.path(), "train", 48), sst2_head(dir.path(), "dev", 32));
    let config = FinetuneConfig { epochs: 2, lr: 1e-3, batch_size: 8, train_examples: None, ..FinetuneConfig::default() };
    let run = || finetune(&request(dir.path(), task.clone(), vec![0, 1], config.clone())).unwrap().epochs;
    let (first, second) = (run(), run());
    assert_eq!(first, second, "same seeds, same results");
    let loss = |rows: &[EpochRow], seed: u64| rows.iter().filter(|r| r.seed == seed).map(|r| r.dev_loss).collect::<Vec<_>>();
    assert_ne!(loss(&first, 0), loss(&first, 1), "different seeds, different runs");
}

#[test]
fn cli_prints_per_seed_accuracy_and_the_median() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ft");
    let stdout = finetune_cli(&["--task", "sst2", "--seeds", "2", "--lr", "3e-4", "--train-examples", "40", "--out", out.to_str().unwrap()]);
    for needle in ["seed 0 ", "seed 1 ", "median dev accuracy over 2 seeds", "sst2 on 40 train / 872 dev examples", "chance (best constant predictor): 0.5092"]
    {
        assert!(stdout.contains(needle), "stdout lacks {needle:?}:\n{stdout}");
    }
    let rows: Vec<EpochRow> = read_csv(&out.join(RESULTS_FILE)).unwrap();
    assert_eq!(rows.len(), 2);
}

#[test]
fn cli_names_the_file_and_line_of_a_malformed_row() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.tsv");
    std::fs::write(&train, "label\ttext\n1\tgood\nyes\tbad\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_repdef"))
        .args(["finetune", "--model", tiny_mlm().to_str().unwrap(), "--train", train.to_str().unwrap()])
        .args(["--dev", train.to_str().unwrap(), "--out", dir.path().join("ft").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("train.tsv line 3: label \"yes\" is not an integer"), "{stderr}");
}

#[test]
fn a_grid_reports_the_point_with_the_best_median_and_reuses_finished_points() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::from_files("small", sst2_head(dir.path(), "train", 48), sst2_head(dir.path(), "dev", 32));
    let config = FinetuneConfig { epochs: 2, batch_size: 8, train_examples: None, ..FinetuneConfig::default() };
    let req = request(dir.path(), task, vec![0, 1], config);
    let grid = finetune_grid(&req, &[1e-5, 3e-3]).unwrap();
    assert_eq!(grid.points.len(), 2);
    let best = grid.points.iter().map(|p| p.median).fold(f64::MIN, f64::max);
    assert_eq!(grid.score, best);
    assert_eq!(grid.points.iter().find(|p| p.median == best).unwrap().lr, grid.chosen_lr);
    assert!(grid.points.iter().all(|p| p.scores.len() == 2));
    assert_eq!(grid.beats_chance, grid.score > grid.chance);
    let out = dir.path().join("out");
    let written: GridSummary = serde_json::from_str(&std::fs::read_to_string(out.join(GRID_FILE)).unwrap()).unwrap();
    assert_eq!(written, grid);
    // The real-token ranks before and after, read back from the chosen point's ranks.csv.
    let ranks: Vec<RankRow> = read_csv(&out.join(format!("lr-{:e}", grid.chosen_lr)).join("ranks.csv")).unwrap();
    let real = |model: &str, layer: usize| {
        ranks
            .iter()
            .find(|r| r.model == model && r.group == "real" && r.condition == "clean" && r.estimator == "var@0.9" && !r.centred && r.layer == layer)
            .unwrap()
            .value
    };
    let layers = grid.rank_before.len();
    assert_eq!((layers, grid.rank_after.len()), (3, 3), "embeddings and the tiny encoder's 2 blocks");
    for layer in 0..layers {
        assert_eq!(grid.rank_before[layer], real("pretrained", layer));
        let (a, b) = (real("finetuned-seed0", layer), real("finetuned-seed1", layer));
        assert_eq!(grid.rank_after[layer], (a + b) / 2.0, "median of two seeds");
    }
    // Each point is a fine-tuning run of its own; a rerun finds them done and changes nothing.
    let point = out.join("lr-1e-5").join(SUMMARY_FILE);
    let before = std::fs::metadata(&point).unwrap().modified().unwrap();
    assert_eq!(finetune_grid(&req, &[1e-5, 3e-3]).unwrap(), grid);
    assert_eq!(std::fs::metadata(&point).unwrap().modified().unwrap(), before, "the point was reused");
}

/// A grid's finished points belong to the weights they were fine-tuned from: a work dir moved
/// elsewhere reuses them, other weights at the same path are fine-tuned afresh.
#[test]
fn a_grid_reuses_points_by_their_weights_not_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::from_files("small", sst2_head(dir.path(), "train", 16), sst2_head(dir.path(), "dev", 16));
    let config = FinetuneConfig { epochs: 1, batch_size: 8, train_examples: None, ..FinetuneConfig::default() };
    let (first, moved) = (dir.path().join("first"), dir.path().join("moved"));
    common::copy_dir(&tiny_mlm(), &first.join("model"));
    let at = |work: &Path| FinetuneRequest {
        model: work.join("model"),
        tokenizer: None,
        task: task.clone(),
        seeds: vec![0],
        config: config.clone(),
        out: work.join("out"),
    };
    let grid = finetune_grid(&at(&first), &[3e-3]).unwrap();

    common::copy_dir(&first, &moved);
    let point = moved.join("out/lr-3e-3").join(SUMMARY_FILE);
    let copied = std::fs::metadata(&point).unwrap().modified().unwrap();
    let reused = finetune_grid(&at(&moved), &[3e-3]).unwrap();
    assert_eq!(std::fs::metadata(&point).unwrap().modified().unwrap(), copied, "the moved point was fine-tuned again");
    assert_eq!((reused.points, reused.rank_after), (grid.points, grid.rank_after));

    std::fs::remove_dir_all(moved.join("model")).unwrap();
    common::copy_dir(&common::fixture("repdef-tiny-maelm"), &moved.join("model"));
    finetune_grid(&at(&moved), &[3e-3]).unwrap();
    assert_ne!(std::fs::metadata(&point).unwrap().modified().unwrap(), copied, "a point of other weights was reused");
    let redone: repdef::finetune::FinetuneSummary = serde_json::from_str(&std::fs::read_to_string(&point).unwrap()).unwrap();
    assert_eq!(redone.model_fnv1a64.as_deref(), Some(repdef::fingerprint::file_fnv1a64(&moved.join("model/model.safetensors")).unwrap().as_str()));

    // The same task file with every label flipped: fine-tuned afresh, not reused by its path.
    let flipped: String = std::fs::read_to_string(&task.train)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| match (i, line.split_once('\t')) {
            (1.., Some((label, text))) => format!("{}\t{text}\n", 1 - label.parse::<u32>().unwrap()),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&task.train, flipped).unwrap();
    let before = std::fs::metadata(&point).unwrap().modified().unwrap();
    finetune_grid(&at(&moved), &[3e-3]).unwrap();
    assert_ne!(std::fs::metadata(&point).unwrap().modified().unwrap(), before, "a point of other training labels was reused");
    let relabelled: repdef::finetune::FinetuneSummary = serde_json::from_str(&std::fs::read_to_string(&point).unwrap()).unwrap();
    assert!(relabelled.data_fnv1a64.is_some() && relabelled.data_fnv1a64 != redone.data_fnv1a64);
}

#[test]
fn cli_fine_tunes_a_bundled_glue_task_over_the_default_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rte");
    let stdout = finetune_cli(&["--task", "rte", "--seeds", "1", "--train-examples", "16", "--out", out.to_str().unwrap()]);
    for needle in [
        "lr 1e-4",
        "lr 3e-4",
        "lr 1e-3",
        "chosen by its median",
        "chance (best constant predictor): 0.5271",
        "real-token var@0.9 rank on dev at the last layer",
    ] {
        assert!(stdout.contains(needle), "stdout lacks {needle:?}:\n{stdout}");
    }
    assert!(out.join(GRID_FILE).exists() && out.join("lr-1e-3").join(SUMMARY_FILE).exists());
}
