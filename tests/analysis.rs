//! `analyze` and `merge` end to end on the tiny fixture models: shards merge to exactly one
//! pass, the groups behave as DESIGN §1 says, and bad input fails cleanly with nothing written.

use repdef::analysis::store::{read_accumulators, ACCUMULATORS_FILE};
use repdef::analysis::{analyze, merge};
use repdef::checkpoint::{read_safetensors, write_safetensors};
use repdef::spec::{AnalysisSpec, DataSpec, MeasureSpec, ModelSpec};
use std::path::{Path, PathBuf};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)
}

fn spec(tokens: u64, shard: Option<&str>) -> AnalysisSpec {
    AnalysisSpec {
        name: "test".into(),
        seed: 1,
        models: vec![
            ModelSpec { label: "MLM".into(), path: fixture("repdef-tiny-mlm"), tokenizer: None },
            ModelSpec { label: "MAE-LM".into(), path: fixture("repdef-tiny-maelm"), tokenizer: None },
        ],
        data: DataSpec { paths: vec![fixture("corpus/wikitext2_test.txt")], tokens, seq_len: 32, batch_size: 8, shard: shard.map(String::from) },
        measure: MeasureSpec::default(),
    }
}

#[test]
fn merged_shards_equal_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let one_pass = dir.path().join("one");
    analyze(&spec(2048, None).resolve().unwrap(), &one_pass).unwrap();
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("shard{i}"));
            // Shards may run with other batch sizes: every sequence runs on its own.
            let mut shard_spec = spec(2048, Some(&format!("{i}/2")));
            shard_spec.data.batch_size = [8, 3][i];
            analyze(&shard_spec.resolve().unwrap(), &out).unwrap();
            // Shards merge anywhere: point both manifests at models and data that are not here.
            let manifest_path = out.join("manifest.json");
            let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
            for model in manifest["spec"]["models"].as_array_mut().unwrap() {
                model["path"] = serde_json::json!("/nowhere/model");
            }
            manifest["spec"]["data"]["paths"] = serde_json::json!(["/nowhere/data.txt"]);
            std::fs::write(&manifest_path, manifest.to_string()).unwrap();
            out
        })
        .collect();
    let merged = dir.path().join("merged");
    merge(&shards, &merged).unwrap();

    let a = read_accumulators(&one_pass.join(ACCUMULATORS_FILE)).unwrap();
    let b = read_accumulators(&merged.join(ACCUMULATORS_FILE)).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, acc) in &a {
        // The same rows in other batches and another order: exactly the same sums.
        assert_eq!(acc, &b[key], "{key:?}");
        assert!(acc.n_tokens() > 0, "{key:?}");
    }
    for table in ["ranks.csv", "spectra.csv", "subspace.csv"] {
        let read = |dir: &Path| std::fs::read_to_string(dir.join(table)).unwrap();
        assert_eq!(read(&one_pass), read(&merged), "{table}");
    }
    let merged_manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(merged.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(merged_manifest["spec"]["data"]["shard"], serde_json::Value::Null, "a merge is the unsharded analysis");

    let refusal = |dirs: &[PathBuf], name: &str| format!("{:#}", merge(dirs, &dir.path().join(name)).unwrap_err());
    assert!(refusal(&[shards[0].clone(), shards[0].clone()], "twice").contains("already merged"));
    assert!(refusal(&shards[..1], "incomplete").contains("1/2 missing"));
    // Shard 1 altered: of a split into 3, of another spec, read from other data.
    let altered = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let copy = dir.path().join(name);
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(&shards[1]).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(copy.join("manifest.json")).unwrap()).unwrap();
        edit(&mut manifest);
        std::fs::write(copy.join("manifest.json"), manifest.to_string()).unwrap();
        refusal(&[shards[0].clone(), copy], &format!("{name}-merged"))
    };
    let mixed = altered("split-into-3", &|m| m["shards"][0] = "1/3".into());
    assert!(mixed.contains("mix a split into 2 with one into 3"), "{mixed}");
    let other_spec = altered("other-spec", &|m| m["spec"]["data"]["tokens"] = 4096.into());
    assert!(other_spec.contains("different spec than the first dir (data.tokens differs"), "{other_spec}");
    let other_data = altered("other-data", &|m| m["data_files"][0]["fnv1a64"] = "0123456789abcdef".into());
    assert!(other_data.contains("read other data than the first dir") && other_data.contains("wikitext2_test.txt differs"), "{other_data}");
}

#[test]
fn groups_follow_the_paper_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let results = analyze(&spec(512, None).resolve().unwrap(), &dir.path().join("out")).unwrap();
    let tokens = |model: &str, condition: &str, group: &str| {
        results.ranks.iter().find(|r| r.model == model && r.condition == condition && r.group == group && r.layer == 0).map(|r| r.n_tokens)
    };
    // Same positions: masked/real and clean/real count the same tokens.
    assert_eq!(tokens("MLM", "masked", "real"), tokens("MLM", "clean", "real"));
    // 15% of ~30 ordinary tokens per 32-token sequence are [MASK].
    let share = tokens("MLM", "masked", "mask").unwrap() as f64 / tokens("MLM", "clean", "all").unwrap() as f64;
    assert!((0.1..0.2).contains(&share), "[MASK] share {share}");
    // MAE-LM's pretraining view has no [MASK] rows; the labelled mask-fed condition has them.
    assert_eq!(tokens("MAE-LM", "masked", "mask"), None);
    assert!(tokens("MAE-LM", "mask-fed", "mask").is_some());
    assert_eq!(tokens("MAE-LM", "masked", "all"), tokens("MAE-LM", "masked", "real").map(|n| n + 2 * 16));
    for row in &results.ranks {
        assert!(row.value.is_finite() && row.value <= 64.0, "{row:?}");
    }
}

#[test]
fn nan_weights_fail_with_a_clear_error_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("repdef-tiny-mlm").join(name), model.join(name)).unwrap();
    }
    let mut weights = read_safetensors(&fixture("repdef-tiny-mlm/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let bias = weights.tensors["bert.encoder.layer.0.output.dense.bias"].clone();
    weights.tensors.insert("bert.encoder.layer.0.output.dense.bias".into(), (bias * f64::NAN).unwrap());
    write_safetensors(&model.join("model.safetensors"), &weights.tensors, &[]).unwrap();

    let mut nan_spec = spec(256, None);
    nan_spec.models = vec![ModelSpec { label: "broken".into(), path: model, tokenizer: None }];
    let out = dir.path().join("out");
    let error = format!("{:#}", analyze(&nan_spec.resolve().unwrap(), &out).unwrap_err());
    assert!(error.contains("broken") && error.contains("NaN"), "{error}");
    assert!(!out.exists());
}

#[test]
fn empty_data_and_empty_groups_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let mut empty_spec = spec(256, None);
    empty_spec.data.paths = vec![empty];
    let out = dir.path().join("out");
    assert!(analyze(&empty_spec.resolve().unwrap(), &out).is_err());

    // Picking (almost) every token leaves the real group empty: an error, not a rank of 0.
    let mut all_masked = spec(64, None);
    all_masked.measure.mask_prob = 0.9999;
    let error = format!("{:#}", analyze(&all_masked.resolve().unwrap(), &out).unwrap_err());
    assert!(error.contains("real") && error.contains("no tokens"), "{error}");
    assert!(!out.exists());
}
