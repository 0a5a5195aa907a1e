//! The real binary on bad input: a clear one-line error naming the file, exit code 2, and no
//! output file left behind; `check` exits 1 only on a regression, and `report` never turns
//! missing numbers into "does not hold". Plus the happy path of `hidden-states` and `inspect`.

mod common;

use common::{assert_fails_naming, copy_of_bert, fixture, repdef_in};
use repdef::checkpoint::{read_safetensors, write_safetensors};
use std::path::Path;
use std::process::Output;

fn repdef(args: &[&str]) -> Output {
    repdef_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn bert_fixture() -> std::path::PathBuf {
    fixture("hf-bert-tiny")
}

fn hidden_states(model: &Path, out: &Path) -> Output {
    repdef(&["hidden-states", "--model", model.to_str().unwrap(), "--text", "the lobster is blue .", "--out", out.to_str().unwrap()])
}

#[test]
fn empty_and_non_utf8_corpora_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let binary = dir.path().join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait\n").unwrap();
    let out = dir.path().join("out");
    let (model, out_str) = (bert_fixture(), out.to_str().unwrap());
    // Every command that reads text files: prepare, analyze (--data) and hidden-states (--input-file).
    let commands = |file: &Path| {
        let (file, label) = (file.to_str().unwrap(), format!("bert={}", model.display()));
        [
            vec!["prepare".to_string(), "--input".into(), file.into(), "--out".into(), out_str.into()],
            vec![
                "analyze".into(),
                "--model".into(),
                label,
                "--data".into(),
                file.into(),
                "--tokens".into(),
                "1000".into(),
                "--seq-len".into(),
                "32".into(),
                "--out".into(),
                out_str.into(),
            ],
            vec!["hidden-states".into(), "--model".into(), model.to_str().unwrap().into(), "--input-file".into(), file.into(), "--out".into(), out_str.into()],
        ]
    };
    for (file, needles) in [(&empty, &["empty.txt", "no text"][..]), (&binary, &["latin1.txt", "UTF-8"][..])] {
        for args in commands(file) {
            assert_fails_naming(&repdef(&args.iter().map(String::as_str).collect::<Vec<_>>()), needles);
            assert!(!out.exists(), "{args:?} left {} behind", out.display());
        }
    }
}

#[test]
fn finetune_on_bad_task_files_names_them_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_string()
    };
    let dev = write("dev.tsv", "label\tsentence\n1\tgood\n0\tbad\n");
    let one_based = write("one_based.tsv", "label\tsentence\n2\tgood\n1\tbad\n");
    let empty = write("empty.tsv", "label\tsentence\n");
    let out = dir.path().join("ft");
    let model = bert_fixture();
    for (train, needles) in [(&one_based, &["one_based.tsv", "no example has label 0"][..]), (&empty, &["empty.tsv", "no examples"][..])] {
        // The default learning-rate grid, and one learning rate.
        for lr in [None, Some("1e-4")] {
            let mut args = vec!["finetune", "--model", model.to_str().unwrap(), "--task", "t", "--train", train, "--dev", &dev, "--out", out.to_str().unwrap()];
            args.extend(lr.map(|lr| ["--lr", lr]).into_iter().flatten());
            assert_fails_naming(&repdef(&args), needles);
            assert!(!out.exists(), "{args:?} left {} behind", out.display());
        }
    }
}

#[test]
fn corrupt_checkpoint_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_of_bert(dir.path());
    std::fs::write(model.join("model.safetensors"), b"definitely not safetensors").unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "not a valid safetensors"]);
    assert!(!out.exists());
    // Layouts repdef does not read are named as such, not as corrupt files: a state dict in
    // torch's legacy format (a bare pickle stream: 0x80, protocol 2), a sharded checkpoint.
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    std::fs::write(model.join("pytorch_model.bin"), b"\x80\x02\x8a\x0a legacy").unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["pytorch_model.bin", "torch's legacy format", "re-save"]);
    std::fs::remove_file(model.join("pytorch_model.bin")).unwrap();
    std::fs::write(model.join("model.safetensors.index.json"), r#"{"weight_map": {"a": "model-00001-of-00002.safetensors"}}"#).unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors.index.json", "sharded", "max_shard_size"]);
    assert!(!out.exists());
}

#[test]
fn missing_tensor_and_wrong_shape_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_of_bert(dir.path());
    let weights = model.join("model.safetensors");
    let mut file = read_safetensors(&weights, &candle_core::Device::Cpu).unwrap();
    file.tensors.remove("bert.encoder.layer.1.output.dense.weight");
    write_safetensors(&weights, &file.tensors, &[]).unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "bert.encoder.layer.1.output.dense.weight"]);

    let model = copy_of_bert(&dir.path().join("second"));
    let config_path = model.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&config_path, config).unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["model.safetensors", "shape"]);
    assert!(!out.exists());
}

/// A copy of the tiny HF BERT dir in `dir/NAME` whose weights `edit` changed.
fn edited_bert(dir: &Path, name: &str, edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>)) -> std::path::PathBuf {
    let model = copy_of_bert(&dir.join(name));
    let weights = model.join("model.safetensors");
    let mut file = read_safetensors(&weights, &candle_core::Device::Cpu).unwrap();
    edit(&mut file.tensors);
    write_safetensors(&weights, &file.tensors, &[]).unwrap();
    model
}

#[test]
fn loading_is_strict_about_unused_tensors_dtypes_non_finite_weights_and_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hs.safetensors");
    const BIAS: &str = "bert.encoder.layer.0.output.dense.bias";

    let one_layer = copy_of_bert(&dir.path().join("one-layer"));
    let config = std::fs::read_to_string(one_layer.join("config.json")).unwrap().replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    std::fs::write(one_layer.join("config.json"), config).unwrap();
    assert_fails_naming(&hidden_states(&one_layer, &out), &["model.safetensors", "bert.encoder.layer.1.", "config.json", "1 layers"]);

    let relpos = dir.path().join("relpos");
    std::fs::create_dir(&relpos).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("repdef-tiny-relpos").join(name), relpos.join(name)).unwrap();
    }
    let config = std::fs::read_to_string(relpos.join("config.json")).unwrap();
    std::fs::write(relpos.join("config.json"), config.replace("\"relative_attention_num_buckets\": 32", "\"relative_attention_num_buckets\": 0")).unwrap();
    assert_fails_naming(&hidden_states(&relpos, &out), &["bert.encoder.relative_attention_bias.weight", "config.json"]);

    let integer = edited_bert(dir.path(), "integer", |t| {
        let bias = t[BIAS].to_dtype(candle_core::DType::I64).unwrap();
        t.insert(BIAS.into(), bias);
    });
    assert_fails_naming(&hidden_states(&integer, &out), &[BIAS, "I64", "floating point"]);
    let nan = edited_bert(dir.path(), "nan", |t| {
        let bias = (&t[BIAS] * f64::NAN).unwrap();
        t.insert(BIAS.into(), bias);
    });
    assert_fails_naming(&hidden_states(&nan, &out), &[BIAS, "NaN"]);
    assert_fails_naming(&repdef(&["inspect", nan.to_str().unwrap()]), &[BIAS, "NaN"]);
    assert!(!out.exists());

    let with_pooler = edited_bert(dir.path(), "pooler", |t| {
        t.insert("bert.pooler.dense.weight".into(), candle_core::Tensor::zeros((32, 32), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap());
    });
    assert!(hidden_states(&with_pooler, &out).status.success(), "a pooler is a known extra");

    // A 400-row repdef model with the 1000-token tokenizer of the HF fixture.
    let foreign_tokenizer = copy_of_bert(&dir.path().join("vocab"));
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("repdef-tiny-mlm").join(name), foreign_tokenizer.join(name)).unwrap();
    }
    assert_fails_naming(&hidden_states(&foreign_tokenizer, &out), &["tokenizer.json", "400 embedding rows"]);
}

#[test]
fn missing_model_dir_and_tokenizer_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hs.safetensors");
    assert_fails_naming(&hidden_states(&dir.path().join("nowhere"), &out), &["nowhere", "config.json"]);
    let model = copy_of_bert(dir.path());
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    assert_fails_naming(&hidden_states(&model, &out), &["tokenizer.json"]);
}

#[test]
fn hidden_states_and_inspect_work_on_a_hf_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hs.safetensors");
    let output = hidden_states(&bert_fixture(), &out);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = read_safetensors(&out, &candle_core::Device::Cpu).unwrap();
    for name in ["hook_full_embed", "blocks.0.hook_normalized_resid_post", "blocks.1.hook_normalized_resid_post", "input_ids"] {
        assert!(saved.tensors.contains_key(name), "missing {name}");
    }
    // "[CLS] the lo ##b ##st ##er is bl ##ue . [SEP]": 11 tokens of width 32.
    assert_eq!(saved.tensors["hook_full_embed"].dims(), &[1, 11, 32]);
    // A text past the 64 positions is cut as transformers cuts it: [CLS] … [SEP] (ids 2 … 3).
    let long = vec!["the lobster is blue ."; 40].join(" ");
    let long_out = dir.path().join("long.safetensors");
    let output = repdef(&["hidden-states", "--model", bert_fixture().to_str().unwrap(), "--text", &long, "--out", long_out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("closing special token included"));
    let ids: Vec<i64> = read_safetensors(&long_out, &candle_core::Device::Cpu).unwrap().tensors["input_ids"]
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!((ids.len(), ids[0], ids[63]), (64, 2, 3));
    assert_ne!(ids[62], 3, "only the closing [SEP] is special");

    let inspect = repdef(&["inspect", bert_fixture().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success());
    assert!(stdout.contains("2 layers × d_model 32") && stdout.contains("bert.encoder.layer.0.attention.self.query.weight"), "{stdout}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_repdef"))
        .args(["inspect", bert_fixture().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line, as `| head -0`
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(13), "ended by SIGPIPE, not {:?}", output.status);
}

#[test]
fn plot_and_report_name_a_dir_that_is_not_an_analysis() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["plot", "report"] {
        assert_fails_naming(&repdef(&[command, dir.path().to_str().unwrap()]), &["manifest.json"]);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
}

/// A ranks table with the value of its first row replaced by `value`.
fn with_first_value(table: &str, value: &str) -> String {
    let mut lines: Vec<String> = table.lines().map(String::from).collect();
    let mut fields: Vec<&str> = lines[1].split(',').collect();
    fields[6] = value;
    lines[1] = fields.join(",");
    lines.join("\n") + "\n"
}

#[test]
fn check_refuses_empty_or_foreign_baselines_and_exits_1_only_on_a_regression() {
    let dir = tempfile::tempdir().unwrap();
    let current = fixture("baselines/ci_guard_ranks.csv");
    let table = std::fs::read_to_string(&current).unwrap();
    let header = table.lines().next().unwrap();
    let check = |name: &str, baseline: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, baseline).unwrap();
        repdef(&["check", current.to_str().unwrap(), "--baseline", path.to_str().unwrap()])
    };
    assert_fails_naming(&check("empty.csv", ""), &["empty.csv", "no rows"]);
    assert_fails_naming(&check("header.csv", &format!("{header}\n")), &["header.csv", "no rows"]);
    assert_fails_naming(&check("foreign.csv", &table.replace("MAE-LM", "X").replace("MLM", "Y")), &["foreign.csv", "no row matches"]);
    assert_fails_naming(&check("garbage.csv", "\u{1}\u{2}junk\nmore,junk\n"), &["garbage.csv"]);
    assert_fails_naming(&check("nan.csv", &with_first_value(&table, "NaN")), &["nan.csv: row 2: value is NaN"]);
    // A row given twice (a higher copy first would hide a regression of the other).
    let first_row = table.lines().nth(1).unwrap();
    assert_fails_naming(&check("twice.csv", &format!("{table}{first_row}\n")), &["twice.csv: row", "repeats an earlier row"]);
    // Ranks from another token count are not comparable.
    let fields: Vec<&str> = first_row.split(',').collect();
    let other_count = format!("{},{}", fields[..7].join(","), fields[7].parse::<u64>().unwrap() * 2);
    assert_fails_naming(
        &check("tokens.csv", &table.replacen(first_row, &other_count, 1)),
        &["measured on", "rerun the analysis with the baseline's data.tokens"],
    );
    // An analysis dir serves as baseline as it does as the current table.
    let analysis = dir.path().join("analysis");
    std::fs::create_dir(&analysis).unwrap();
    std::fs::write(analysis.join("ranks.csv"), &table).unwrap();
    let against_dir = repdef(&["check", current.to_str().unwrap(), "--baseline", analysis.to_str().unwrap()]);
    assert_eq!(against_dir.status.code(), Some(0), "{}", String::from_utf8_lossy(&against_dir.stderr));
    let raised: String =
        table.lines().map(|l| if l == header { format!("{l}\n") } else { l.replace(",false,", ",false,1").replace(",true,", ",true,1") + "\n" }).collect();
    let regressed = check("raised.csv", &raised);
    assert_eq!(regressed.status.code(), Some(1), "{}", String::from_utf8_lossy(&regressed.stderr));
    assert!(String::from_utf8_lossy(&regressed.stdout).contains("rows regressed"));
    let itself = check("itself.csv", &table);
    assert_eq!(itself.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&itself.stdout).contains("none regressed"));
}

#[test]
fn report_on_a_damaged_ranks_table_is_an_error_or_not_measured_never_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let analysis = dir.path().join("analysis");
    let (mlm, maelm, text) = (fixture("repdef-tiny-mlm"), fixture("repdef-tiny-maelm"), fixture("corpus/wikitext2_test.txt"));
    let (mlm, maelm) = (format!("MLM={}", mlm.display()), format!("MAE-LM={}", maelm.display()));
    let made = repdef(&[
        "analyze",
        "--model",
        &mlm,
        "--model",
        &maelm,
        "--data",
        text.to_str().unwrap(),
        "--tokens",
        "512",
        "--seq-len",
        "32",
        "--out",
        analysis.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let ranks = analysis.join("ranks.csv");
    let table = std::fs::read_to_string(&ranks).unwrap();
    let report = || repdef(&["report", analysis.to_str().unwrap()]);

    std::fs::write(&ranks, format!("{}\n", table.lines().next().unwrap())).unwrap();
    assert_fails_naming(&report(), &["ranks.csv", "no rows"]);
    let figures = || std::fs::read_dir(&analysis).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("fig_")).count();
    assert_eq!(figures(), 0, "figures drawn from a table that is then refused");
    for value in ["NaN", "inf", "-5"] {
        std::fs::write(&ranks, with_first_value(&table, value)).unwrap();
        assert_fails_naming(&report(), &[&format!("ranks.csv: row 2: value is {value}")]);
    }
    assert_eq!(figures(), 0);
    std::fs::write(&ranks, b"\x00\xffnot,a\ntable\n").unwrap();
    assert_fails_naming(&report(), &["ranks.csv"]);
    // Cut at a row boundary: the first rows only, no claim has all its numbers.
    let cut: String = table.lines().take(20).map(|l| format!("{l}\n")).collect();
    std::fs::write(&ranks, cut).unwrap();
    let output = report();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("does not hold") && stdout.matches("not measured").count() == 4, "{stdout}");
}

#[test]
fn non_finite_numbers_are_refused_by_flag() {
    for (args, flag) in [
        (&["train", "--objective", "mlm", "--data", "d", "--out", "o", "--lr", "NaN"][..], "--lr <LR>"),
        (&["finetune", "--model", "m", "--task", "sst2", "--out", "o", "--lr", "1e-3,inf"][..], "--lr <LR[,LR…]>"),
    ] {
        let output = repdef(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag) && stderr.contains("is not a finite number"), "{stderr}");
    }
}

#[test]
fn bench_counts_that_cannot_be_measured_are_refused_by_name() {
    for (args, flag) in [
        (&["bench", "train", "--steps", "0"][..], "--steps"),
        (&["bench", "train", "--batch-size", "0"], "--batch-size"),
        (&["bench", "train", "--seq-len", "2"], "--seq-len"),
        (&["bench", "train", "--vocab-size", "5"], "--vocab-size"),
        (&["bench", "train", "--pairs", "0"], "--pairs"),
        (&["bench", "analyze", "--tokens", "10000,0"], "--tokens"),
        (&["bench", "analyze", "--batch-size", "0"], "--batch-size"),
        (&["bench", "analyze", "--pairs", "0"], "--pairs"),
    ] {
        assert_fails_naming(&repdef(args), &[flag]);
    }
}
