//! `repdef reproduce` end to end on the tiny budget, re-running it (everything is reused), and
//! `repdef check` guarding its ranks: passes against itself, fails against a raised baseline;
//! then `--seeds 2` adds a second pretraining seed to the same work dir; finally the report dir
//! alone re-renders the same report. It runs outside the repository: the bundled corpus and
//! tasks are found from any working directory.

use std::path::Path;
use std::process::{Command, Output};

fn repdef(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repdef")).current_dir(std::env::temp_dir()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tiny_reproduction_runs_resumes_and_is_guarded_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let (out, work) = (dir.path().join("report"), dir.path().join("work"));
    let args = ["reproduce", "--budget", "tiny", "--out", out.to_str().unwrap(), "--work-dir", work.to_str().unwrap()];
    interrupt_at_fine_tuning(&args);
    let first = repdef(&args);
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{log}");
    let timing = log.lines().find(|line| line.starts_with("[5/5] done in")).unwrap_or_else(|| panic!("no closing time: {log}"));
    for stage in ["(prepare ", ", train ", ", analyse ", ", fine-tune ", ", report "] {
        assert!(timing.contains(stage), "{stage} missing from {timing}");
    }
    for file in ["manifest.json", "ranks.csv", "spectra.csv", "subspace.csv", "downstream.json", "report.md", "report.html"] {
        assert!(out.join(file).exists(), "missing {file}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for figure in ["fig_rank_by_layer", "fig_mlm_vs_maelm", "fig_spectrum", "fig_mask_subspace", "fig_training"] {
        for ext in ["png", "svg"] {
            assert!(out.join(format!("{figure}.{ext}")).exists(), "missing {figure}.{ext}");
        }
        assert!(report.contains(&format!("{figure}.png")), "report does not show {figure}");
    }
    // Both encoders on the four bundled tasks, over the budget's two-point grid, with the real
    // ranks before and after fine-tuning at every layer (embeddings + 2 blocks).
    let downstream: repdef::report::verdicts::Downstream = serde_json::from_str(&std::fs::read_to_string(out.join("downstream.json")).unwrap()).unwrap();
    assert_eq!(downstream.tasks.iter().map(|t| t.task()).collect::<Vec<_>>(), ["sst2", "cola", "rte", "stsb"]);
    for grid in downstream.tasks.iter().flat_map(|t| [&t.mlm, &t.mae_lm]) {
        assert_eq!(grid.points.iter().map(|p| p.lr).collect::<Vec<_>>(), [3e-4, 1e-3], "{grid:?}");
        assert!(grid.points.iter().any(|p| p.lr == grid.chosen_lr && p.median == grid.score), "{grid:?}");
        assert_eq!((grid.rank_before.len(), grid.rank_after.len()), (3, 3), "{grid:?}");
    }
    for section in ["## Downstream fine-tuning", "| **average** |", "### Rank after fine-tuning", "### `rte`: dev accuracy per seed", "| MAE-LM | 1e-3 |"] {
        assert!(report.contains(section), "no {section} in {report}");
    }
    assert!(report.contains("1. MLM allocates dimensions to [MASK]") && report.contains("**inconclusive**"), "{report}");
    assert!(report.contains("| MLM | MLM | 2 × 64 |") && report.contains("| MAE-LM | MAE-LM | 2 × 64, decoder 1 layer(s) |"), "set-up: {report}");
    let ranks = std::fs::read_to_string(out.join("ranks.csv")).unwrap();

    let second = repdef(&args);
    assert!(second.status.success());
    let resumed = String::from_utf8_lossy(&second.stderr);
    assert!(resumed.contains("already trained") && resumed.contains("already fine-tuned"), "{resumed}");
    assert_eq!(std::fs::read_to_string(out.join("ranks.csv")).unwrap(), ranks, "same runs, same seed: same ranks");

    let baseline = out.join("ranks.csv");
    let itself = repdef(&["check", out.to_str().unwrap(), "--baseline", baseline.to_str().unwrap()]);
    assert!(itself.status.success(), "{}", stdout(&itself));
    assert!(stdout(&itself).contains("none regressed"));

    let raised = dir.path().join("raised.csv");
    write_raised_baseline(&baseline, &raised, 5.0);
    let regressed = repdef(&["check", out.to_str().unwrap(), "--baseline", raised.to_str().unwrap(), "--max-drop", "2"]);
    assert_eq!(regressed.status.code(), Some(1), "a regression exits 1");
    assert!(stdout(&regressed).contains("rows regressed"), "{}", stdout(&regressed));
    let tolerated = repdef(&["check", out.to_str().unwrap(), "--baseline", raised.to_str().unwrap(), "--max-drop", "6"]);
    assert!(tolerated.status.success());

    let two_seeds_out = dir.path().join("two-seeds");
    let two_seeds = repdef(&["reproduce", "--budget", "tiny", "--seeds", "2", "--out", two_seeds_out.to_str().unwrap(), "--work-dir", work.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&two_seeds.stderr);
    assert!(two_seeds.status.success(), "{log}");
    assert!(log.contains("mlm-seed0 is already trained") && log.contains("training MLM seed 1"), "{log}");
    let ranks = std::fs::read_to_string(two_seeds_out.join("ranks.csv")).unwrap();
    for label in ["MLM#seed0", "MLM#seed1", "MAE-LM#seed0", "MAE-LM#seed1"] {
        assert!(ranks.contains(label), "no {label} rows in {ranks}");
    }

    // The report dir is all a report needs: without the run dirs it re-renders the same report,
    // training facts and curves included (as a committed report does on a fresh clone).
    std::fs::remove_dir_all(&work).unwrap();
    let rerendered = repdef(&["report", out.to_str().unwrap()]);
    assert!(rerendered.status.success(), "{}", String::from_utf8_lossy(&rerendered.stderr));
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), report, "re-rendered without run dirs");
    assert!(report.contains("pretraining tokens") && report.contains("Corpus:"), "{report}");
}

/// Runs `args` and presses Ctrl-C once the fine-tuning stage has begun (after the trainings,
/// whose own Ctrl-C handling checkpoints them): the process must end at once with 130.
fn interrupt_at_fine_tuning(args: &[&str]) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_repdef"))
        .current_dir(std::env::temp_dir())
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|line| line.starts_with("[4/5]")), "no fine-tuning stage");
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C during fine-tuning: {status:?}, then {rest:?}");
    assert!(!rest.iter().any(|line| line.starts_with("[5/5]")), "it went on to the report: {rest:?}");
}

/// The baseline with every value raised by `delta` (as if ranks had been higher before).
fn write_raised_baseline(from: &Path, to: &Path, delta: f64) {
    let rows: Vec<repdef::analysis::tables::RankRow> = repdef::analysis::tables::read_csv(from).unwrap();
    let raised: Vec<_> = rows.into_iter().map(|r| repdef::analysis::tables::RankRow { value: r.value + delta, ..r }).collect();
    repdef::analysis::tables::write_csv(to, &raised).unwrap();
}
