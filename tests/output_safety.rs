//! No command deletes or overwrites what it did not create (issue 10): `--out` naming `.`, a
//! parent of the working dir, a dir of the user's files, a model dir or a file is refused before
//! any work, with everything left in place; an earlier output of the same command is replaced,
//! unless it holds something the command would not write (a user's file, a reproduction's
//! fine-tuning results); a spec's name cannot steer its default output out of `reports/`.

mod common;

use common::{assert_fails_naming, copy_dir, copy_of_bert, fixture, repdef_in};
use std::path::{Path, PathBuf};
use std::process::Output;

/// `analyze` of the tiny HF BERT on a few hundred tokens, run in `cwd`.
fn analyze(cwd: &Path, out: &str) -> Output {
    let model = format!("bert={}", fixture("hf-bert-tiny").display());
    let text = fixture("corpus/wikitext2_test.txt");
    repdef_in(cwd, &["analyze", "--model", &model, "--data", text.to_str().unwrap(), "--tokens", "256", "--seq-len", "32", "--out", out])
}

/// A dir holding one file of the user's; returns the dir and the file.
fn users_dir(path: PathBuf) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(&path).unwrap();
    let file = path.join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    (path, file)
}

#[test]
fn out_dot_or_a_parent_of_the_working_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, outer_file) = users_dir(dir.path().to_path_buf());
    let (work, inner_file) = users_dir(dir.path().join("work"));
    for out in [".", "..", work.to_str().unwrap()] {
        assert_fails_naming(&analyze(&work, out), &[out, "working directory"]);
    }
    assert!(outer_file.exists() && inner_file.exists());
}

#[test]
fn out_a_dir_of_user_files_or_a_model_dir_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let (users, file) = users_dir(dir.path().join("users"));
    let out = users.to_str().unwrap();
    let cwd = dir.path();
    assert_fails_naming(&analyze(cwd, out), &[out, "no manifest.json"]);
    assert_fails_naming(&repdef_in(cwd, &["merge", "elsewhere", "--out", out]), &[out, "no manifest.json"]);
    let corpus = fixture("corpus/wikitext2_test.txt");
    assert_fails_naming(&repdef_in(cwd, &["prepare", "--input", corpus.to_str().unwrap(), "--out", out]), &[out, "no meta.json"]);
    assert_fails_naming(&repdef_in(cwd, &["train", "--objective", "mlm", "--data", "nowhere", "--out", out]), &[out, "no train_config.json"]);
    let bert = fixture("hf-bert-tiny");
    assert_fails_naming(&repdef_in(cwd, &["finetune", "--model", bert.to_str().unwrap(), "--task", "sst2", "--out", out]), &[out, "no grid.json"]);
    let work = dir.path().join("work");
    assert_fails_naming(&repdef_in(cwd, &["reproduce", "--out", out, "--work-dir", work.to_str().unwrap()]), &[out, "no manifest.json"]);
    assert!(!work.exists(), "reproduce started before refusing its report dir");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&users).unwrap().count(), 1);

    let model = copy_of_bert(dir.path());
    let model_out = model.to_str().unwrap();
    assert_fails_naming(&analyze(cwd, model_out), &[model_out, "holds a model"]);
    assert_fails_naming(&repdef_in(cwd, &["prepare", "--input", corpus.to_str().unwrap(), "--out", model_out]), &[model_out, "holds a model"]);
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let bytes = std::fs::read(model.join(name)).unwrap();
        assert_eq!(bytes, std::fs::read(bert.join(name)).unwrap(), "{name} changed");
    }
}

#[test]
fn out_a_file_fails_before_the_work_and_leaves_no_staging_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result");
    std::fs::write(&file, "mine").unwrap();
    let out = file.to_str().unwrap();
    let output = analyze(dir.path(), out);
    assert_fails_naming(&output, &[out, "not a directory"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "refused after doing the work (a progress line came first): {stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written beside the file");
}

#[test]
fn an_earlier_output_is_replaced_and_merge_never_writes_into_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("analysis");
    for _ in 0..2 {
        let output = analyze(dir.path(), out.to_str().unwrap());
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(out.join("manifest.json").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no staging dir left");
    let merged = repdef_in(dir.path(), &["merge", out.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_fails_naming(&merged, &["merged into itself"]);
    assert!(out.join("accumulators.safetensors").exists());

    let corpus = fixture("corpus/wikitext2_test.txt");
    let tokenizer = fixture("hf-bert-tiny/tokenizer.json");
    let data = dir.path().join("data");
    for _ in 0..2 {
        let args = ["prepare", "--input", corpus.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap(), "--out", data.to_str().unwrap()];
        let output = repdef_in(dir.path(), &args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(data.join("meta.json").exists());

    // The analysis replaces its report dir: a work dir inside it would lose its runs.
    let inside = out.join("work");
    assert_fails_naming(
        &repdef_in(dir.path(), &["reproduce", "--out", out.to_str().unwrap(), "--work-dir", inside.to_str().unwrap()]),
        &["inside the report dir"],
    );
    assert!(!inside.exists());
}

/// Every file below `dir` with its contents, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .flat_map(|path| if path.is_dir() { snapshot(&path) } else { vec![(path.clone(), std::fs::read(&path).unwrap())] })
        .collect();
    files.sort();
    files
}

#[test]
fn an_earlier_output_holding_more_than_the_command_writes_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // A reproduction's report: an analysis or a merge into it would delete its fine-tuning
    // results; reproduce itself would not, but a user's file in it stops reproduce too.
    let report = cwd.join("report");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/quick"), &report);
    let before = snapshot(&report);
    let out = report.to_str().unwrap();
    assert_fails_naming(&analyze(cwd, out), &[out, "holds downstream.json", "not part of an analysis"]);
    assert_fails_naming(&repdef_in(cwd, &["merge", "elsewhere", "--out", out]), &[out, "holds downstream.json"]);
    std::fs::write(report.join("notes.txt"), "mine").unwrap();
    let work = cwd.join("work");
    let reproduced = repdef_in(cwd, &["reproduce", "--out", out, "--work-dir", work.to_str().unwrap()]);
    assert_fails_naming(&reproduced, &[out, "holds notes.txt", "not part of a reproduction's report"]);
    assert!(!work.exists(), "reproduce started before refusing its report dir");
    std::fs::remove_file(report.join("notes.txt")).unwrap();
    assert!(snapshot(&report) == before, "the report dir changed");

    // An analysis with its report is replaced; with a user's file or dir in it, it is not.
    let analysis = cwd.join("analysis");
    let out = analysis.to_str().unwrap();
    for output in [analyze(cwd, out), repdef_in(cwd, &["report", out])] {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert!(analysis.join("report.md").exists() && analysis.join("fig_rank_by_layer.png").exists());
    let output = analyze(cwd, out);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!analysis.join("report.md").exists(), "a report of the earlier analysis was left beside the new one");
    std::fs::create_dir(analysis.join("mine")).unwrap();
    assert_fails_naming(&analyze(cwd, out), &[out, "holds mine"]);
    assert!(analysis.join("mine").is_dir() && analysis.join("manifest.json").exists());
}

#[test]
fn hidden_states_overwrites_only_its_own_earlier_output() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let model = copy_of_bert(cwd);
    let (_, notes) = users_dir(cwd.join("users"));
    let weights = model.join("model.safetensors");
    let weights_before = std::fs::read(&weights).unwrap();
    let hidden_states = |input: &Path, out: &Path| {
        let args = ["hidden-states", "--model", model.to_str().unwrap(), "--input-file", input.to_str().unwrap(), "--out", out.to_str().unwrap()];
        repdef_in(cwd, &args)
    };
    for out in [&notes, &weights] {
        assert_fails_naming(&hidden_states(&notes, out), &[out.to_str().unwrap(), "not an earlier hidden-states output"]);
    }
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
    assert!(std::fs::read(&weights).unwrap() == weights_before, "the model's weights changed");
    let out = cwd.join("states.safetensors");
    for _ in 0..2 {
        let output = hidden_states(&notes, &out);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn spec_names_cannot_point_the_default_output_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report_file) = users_dir(dir.path().join("reports/other"));
    let (_, victim_file) = users_dir(dir.path().join("victim"));
    for name in ["", "../victim", ".", "a/b"] {
        let spec = format!(
            "name = {name:?}\n[[models]]\nlabel = \"bert\"\npath = {:?}\n[data]\npaths = [{:?}]\ntokens = 256\nseq_len = 32\n",
            fixture("hf-bert-tiny"),
            fixture("corpus/wikitext2_test.txt")
        );
        let spec_path = dir.path().join("spec.toml");
        std::fs::write(&spec_path, spec).unwrap();
        assert_fails_naming(&repdef_in(dir.path(), &["analyze", spec_path.to_str().unwrap()]), &["plain name"]);
    }
    assert!(report_file.exists() && victim_file.exists());
}
