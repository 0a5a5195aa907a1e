//! Analysis specs: the declarative TOML in `analyses/` (raw, as the user wrote it), and the
//! resolved `Plan` built from it before any work starts (models' configs read, taps and
//! estimators parsed, data source checked), so mistakes fail in seconds, not after extraction.

use crate::checkpoint::CONFIG_FILE;
use crate::config::{apply_overrides, ModelConfig, Objective};
use crate::model::Tap;
use crate::rank::Estimator;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// An analysis as written in `analyses/*.toml`. Relative paths are relative to the working directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    pub name: String,
    /// Seed of the masking pattern.
    #[serde(default)]
    pub seed: u64,
    pub models: Vec<ModelSpec>,
    pub data: DataSpec,
    #[serde(default)]
    pub measure: MeasureSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name in tables and figures, e.g. "MLM".
    pub label: String,
    /// A repdef run dir, a HuggingFace BERT/RoBERTa directory, or `hf:ORG/NAME[@REVISION]` in
    /// the local HuggingFace cache.
    pub path: PathBuf,
    /// The tokenizer, when the model directory (and its parent) has none that repdef finds:
    /// a `tokenizer.json`, a `vocab.txt`, a `vocab.json` (with `merges.txt` beside it), or a
    /// directory holding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// A dir made by `repdef prepare` (its holdout split is used) or text files (UTF-8, or gzip
    /// if named `*.gz`, read as `prepare` reads them); each model tokenizes text files with its
    /// own tokenizer.
    pub paths: Vec<PathBuf>,
    /// Tokens to analyse per model (sequences are taken in order until this many).
    pub tokens: u64,
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Process only sequences `i, i+n, i+2n, …` (`"i/n"`); shards' accumulators `merge` exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

fn default_seq_len() -> usize {
    128
}
fn default_batch_size() -> usize {
    32
}

/// A `[measure]` section may set any of its keys; the others keep their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureSpec {
    /// Fraction of non-special positions replaced by `[MASK]` in the masked condition.
    pub mask_prob: f64,
    /// Tap names; empty means every encoder tap (`hook_full_embed` and each block output).
    pub taps: Vec<String>,
    /// Estimator names: `var@τ`, `entropy`, `stable`, `participation`, `numerical`.
    pub estimators: Vec<String>,
    /// Spectra to compute: uncentred (the paper's figure) and/or centred (PCA).
    pub centring: Vec<Centring>,
}

impl Default for MeasureSpec {
    fn default() -> Self {
        MeasureSpec {
            mask_prob: 0.15,
            taps: vec![],
            estimators: ["var@0.9", "var@0.99", "entropy", "stable", "participation", "numerical"].map(String::from).to_vec(),
            centring: vec![Centring::Uncentred, Centring::Centred],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Centring {
    Uncentred,
    Centred,
}

impl Centring {
    pub fn is_centred(self) -> bool {
        self == Centring::Centred
    }
}

impl std::fmt::Display for Centring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_centred() { "centred" } else { "uncentred" })
    }
}

/// Where the analysed tokens come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// The holdout split of a prepared dir (models must share its tokenizer).
    Prepared(PathBuf),
    TextFiles(Vec<PathBuf>),
}

/// One model, resolved.
#[derive(Clone, Debug)]
pub struct PlannedModel {
    pub label: String,
    /// The model directory (an `hf:` id resolved to its cached snapshot).
    pub path: PathBuf,
    pub tokenizer: Option<PathBuf>,
    pub config: ModelConfig,
    pub taps: Vec<Tap>,
}

impl PlannedModel {
    pub fn is_mae_lm(&self) -> bool {
        self.config.objective() == Objective::MaeLm
    }
}

/// A validated analysis, ready to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub spec: AnalysisSpec,
    pub models: Vec<PlannedModel>,
    pub data: DataSource,
    pub estimators: Vec<Estimator>,
    /// (index, count) of this shard.
    pub shard: (usize, usize),
}

impl AnalysisSpec {
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let spec: AnalysisSpec = crate::fsutil::parse_toml(&text, path)?;
        apply_overrides(&spec, overrides).with_context(|| format!("{}: applying --set", path.display()))
    }

    /// A stable hash of the spec's contents (for the manifest).
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_string(self).expect("specs serialise");
        format!("{:016x}", crate::fingerprint::fnv1a64(canonical.as_bytes()))
    }

    pub fn resolve(self) -> Result<Plan> {
        check_name(&self.name)?;
        ensure!(!self.models.is_empty(), "the spec names no models");
        ensure!(self.data.tokens > 0, "data.tokens must be positive");
        ensure!(self.data.batch_size > 0, "data.batch_size must be positive");
        ensure!(self.data.seq_len >= 8, "data.seq_len must be at least 8");
        let m = &self.measure;
        ensure!(0.0 < m.mask_prob && m.mask_prob < 1.0, "measure.mask_prob must be in (0, 1), got {}", m.mask_prob);
        ensure!(!m.centring.is_empty(), "measure.centring must name uncentred and/or centred");
        ensure_distinct("measure.centring", &m.centring)?;
        let mut labels: Vec<&str> = self.models.iter().map(|m| m.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        ensure!(labels.len() == self.models.len(), "model labels must be distinct");
        ensure!(!labels.contains(&""), "a model label is empty: name each model (LABEL=PATH)");
        let shard = parse_shard(self.data.shard.as_deref())?;
        let sequences = self.data.tokens.div_ceil(self.data.seq_len as u64);
        ensure!(
            shard.1 as u64 <= sequences,
            "data.tokens {} make {sequences} sequence(s) of {} tokens, fewer than the {} shards: split into at most {sequences}",
            self.data.tokens,
            self.data.seq_len,
            shard.1
        );
        let estimators = self.estimators()?;
        let models = self.models.iter().map(|model| self.resolve_model(model)).collect::<Result<_>>()?;
        let data = resolve_data(&self.data.paths)?;
        Ok(Plan { spec: self, models, data, estimators, shard })
    }

    /// The spec's estimators, parsed (all `merge` needs besides the accumulators).
    pub fn estimators(&self) -> Result<Vec<Estimator>> {
        let estimators =
            self.measure.estimators.iter().map(|e| e.parse::<Estimator>().with_context(|| format!("measure.estimators: {e:?}"))).collect::<Result<Vec<_>>>()?;
        ensure!(!estimators.is_empty(), "measure.estimators is empty");
        ensure_distinct("measure.estimators", &estimators)?;
        Ok(estimators)
    }

    fn resolve_model(&self, model: &ModelSpec) -> Result<PlannedModel> {
        let path = crate::hf_cache::resolve_model_dir(&model.path).with_context(|| format!("model {:?}", model.label))?;
        let config = ModelConfig::load(&path.join(CONFIG_FILE)).with_context(|| format!("model {:?}", model.label))?;
        let all_taps = Tap::encoder_taps(config.num_hidden_layers);
        let taps = if self.measure.taps.is_empty() {
            all_taps
        } else {
            let mut taps = Vec::new();
            for name in &self.measure.taps {
                let tap: Tap = name.parse()?;
                ensure!(all_taps.contains(&tap), "model {:?} has no tap {name} ({} layers)", model.label, config.num_hidden_layers);
                taps.push(tap);
            }
            ensure_distinct("measure.taps", &taps)?;
            taps
        };
        ensure!(
            self.data.seq_len <= config.max_tokens(),
            "data.seq_len {} exceeds the {} tokens model {:?}'s position embeddings allow",
            self.data.seq_len,
            config.max_tokens(),
            model.label
        );
        Ok(PlannedModel { label: model.label.clone(), path, tokenizer: model.tokenizer.clone(), config, taps })
    }
}

/// The spec's name becomes the default output dir `reports/<name>`: it must be a plain name,
/// so that the output never lands outside `reports/` or on `reports/` itself.
fn check_name(name: &str) -> Result<()> {
    let plain = matches!(Path::new(name).components().collect::<Vec<_>>()[..], [std::path::Component::Normal(_)]);
    ensure!(plain && !name.contains(['/', '\\']), "name {name:?}: expected a plain name (no path separators, not empty, `.` or `..`)");
    Ok(())
}

/// Rejects a list that names an item twice (every row would be written twice).
fn ensure_distinct<T: PartialEq + std::fmt::Display>(key: &str, items: &[T]) -> Result<()> {
    for (i, item) in items.iter().enumerate() {
        ensure!(!items[..i].contains(item), "{key} lists {item} twice");
    }
    Ok(())
}

fn resolve_data(paths: &[PathBuf]) -> Result<DataSource> {
    ensure!(!paths.is_empty(), "data.paths is empty");
    if paths.len() == 1 && paths[0].is_dir() {
        crate::data::corpus::read_meta(&paths[0])?;
        return Ok(DataSource::Prepared(paths[0].clone()));
    }
    for path in paths {
        if path.is_dir() {
            bail!("{}: a prepared data dir must be the only data path", path.display());
        }
        ensure!(path.is_file(), "{}: no such file", path.display());
    }
    Ok(DataSource::TextFiles(paths.to_vec()))
}

/// Resolves `auto` and `auto/N` to this job's `"i/n"` from the scheduler running it (`env` looks
/// up environment variables); any other text is returned as is. Slurm array jobs give the index
/// (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN`) and the count (`SLURM_ARRAY_TASK_COUNT`); a
/// Kubernetes Indexed Job gives the index (`JOB_COMPLETION_INDEX`) but not its `completions`,
/// which `auto/N` supplies.
pub fn shard_from_scheduler(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let Some(given_count) = text.strip_prefix("auto") else { return Ok(text.to_string()) };
    let number = |name: &str| -> Result<Option<usize>> {
        env(name).map(|v| v.trim().parse().with_context(|| format!("--shard {text}: {name}={v:?} is not a number"))).transpose()
    };
    let given_count = match given_count.strip_prefix('/') {
        Some(n) => Some(n.parse::<usize>().with_context(|| format!("--shard {text}: expected auto or auto/N"))?),
        None if given_count.is_empty() => None,
        None => bail!("--shard {text}: expected auto or auto/N"),
    };
    let (index, count) = if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        (id - number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0).min(id), given_count.or(number("SLURM_ARRAY_TASK_COUNT")?))
    } else if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        (index, given_count)
    } else {
        bail!("--shard {text}: neither SLURM_ARRAY_TASK_ID (a Slurm array job) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set");
    };
    let count = count.with_context(|| format!("--shard {text}: the scheduler does not say how many shards there are; give --shard auto/N"))?;
    ensure!(index < count, "--shard {text}: this job's index {index} is not below the shard count {count}");
    Ok(format!("{index}/{count}"))
}

/// `"i/n"` → (i, n); no shard is `0/1`.
pub fn parse_shard(shard: Option<&str>) -> Result<(usize, usize)> {
    let Some(text) = shard else { return Ok((0, 1)) };
    let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("data.shard {text:?}: expected \"i/n\" with 0 ≤ i < n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_shards_come_from_slurm_arrays_and_kubernetes_indexed_jobs() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "4"), ("SLURM_ARRAY_TASK_COUNT", "3")]);
        assert_eq!(shard_from_scheduler("auto", slurm).unwrap(), "1/3");
        assert_eq!(shard_from_scheduler("2/7", slurm).unwrap(), "2/7");
        let kubernetes = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(shard_from_scheduler("auto/4", kubernetes).unwrap(), "2/4");
        let error = |text, vars| shard_from_scheduler(text, env(vars)).unwrap_err().to_string();
        assert!(error("auto", &[("JOB_COMPLETION_INDEX", "2")]).contains("auto/N"));
        assert!(error("auto/2", &[("JOB_COMPLETION_INDEX", "2")]).contains("index 2 is not below"));
        assert!(error("auto", &[]).contains("SLURM_ARRAY_TASK_ID"));
        assert!(error("automatic", &[]).contains("expected auto or auto/N"));
    }

    const SPEC: &str = r#"
name = "t"
[[models]]
label = "bert"
path = "fixtures/hf-bert-tiny"
[data]
paths = ["fixtures/corpus/wikitext2_valid.txt"]
tokens = 1000
seq_len = 32
"#;

    fn in_repo<T>(f: impl FnOnce() -> T) -> T {
        // Paths in specs are relative to the working directory; tests run from the crate root.
        assert!(Path::new("fixtures").is_dir(), "tests run from the crate root");
        f()
    }

    #[test]
    fn a_minimal_spec_resolves_with_defaults() {
        in_repo(|| {
            let spec: AnalysisSpec = toml::from_str(SPEC).unwrap();
            let plan = spec.resolve().unwrap();
            assert_eq!(plan.models[0].taps.len(), 3);
            assert_eq!(plan.estimators.len(), 6);
            assert_eq!(plan.shard, (0, 1));
            assert!(matches!(plan.data, DataSource::TextFiles(_)));
            assert_eq!(plan.models[0].tokenizer, None);
        });
    }

    #[test]
    fn a_model_may_name_its_tokenizer() {
        in_repo(|| {
            let with_tokenizer =
                SPEC.replace("path = \"fixtures/hf-bert-tiny\"", "path = \"fixtures/hf-bert-tiny\"\ntokenizer = \"fixtures/hf-bert-vocab/vocab.txt\"");
            let plan = toml::from_str::<AnalysisSpec>(&with_tokenizer).unwrap().resolve().unwrap();
            assert_eq!(plan.models[0].tokenizer.as_deref(), Some(Path::new("fixtures/hf-bert-vocab/vocab.txt")));
        });
    }

    #[test]
    fn names_that_are_not_plain_are_rejected() {
        in_repo(|| {
            for name in ["", ".", "..", "../victim", "a/b", "/abs", "a\\b"] {
                let spec = AnalysisSpec { name: name.into(), ..toml::from_str(SPEC).unwrap() };
                let error = spec.resolve().unwrap_err().to_string();
                assert!(error.contains("plain name"), "{name:?}: {error}");
            }
        });
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_overrides_are_rejected() {
        in_repo(|| {
            let unknown = format!("{SPEC}\nsurprise = 1\n");
            assert!(toml::from_str::<AnalysisSpec>(&unknown).is_err());
            let spec: AnalysisSpec = toml::from_str(SPEC).unwrap();
            assert!(apply_overrides(&spec, &["data.tokenz=5".into()]).is_err());
            let bad_tap = apply_overrides(&spec, &[]).map(|mut s| {
                s.measure.taps = vec!["blocks.7.hook_normalized_resid_post".into()];
                s
            });
            assert!(bad_tap.unwrap().resolve().unwrap_err().to_string().contains("no tap"));
            let mut bad_estimator = spec.clone();
            bad_estimator.measure.estimators = vec!["var@2".into()];
            assert!(bad_estimator.resolve().is_err());
            let mut bad_shard = spec.clone();
            bad_shard.data.shard = Some("3/3".into());
            assert!(bad_shard.resolve().is_err());
            let mut too_many_shards = spec.clone();
            too_many_shards.data.shard = Some("6/40".into());
            let error = too_many_shards.resolve().unwrap_err().to_string();
            assert!(error.contains("data.tokens 1000 make 32 sequence(s) of 32 tokens, fewer than the 40 shards"), "{error}");
            let mut unnamed = spec.clone();
            unnamed.models[0].label = String::new();
            assert!(unnamed.resolve().unwrap_err().to_string().contains("a model label is empty"));
            let mut twice = spec.clone();
            twice.measure.estimators = vec!["var@0.9".into(), "entropy".into(), "var@0.90".into()];
            assert!(twice.resolve().unwrap_err().to_string().contains("measure.estimators lists var@0.9 twice"));
            let mut twice = spec.clone();
            twice.measure.taps = vec!["hook_full_embed".into(), "hook_full_embed".into()];
            assert!(twice.resolve().unwrap_err().to_string().contains("measure.taps lists hook_full_embed twice"));
            let mut twice = spec.clone();
            twice.measure.centring = vec![Centring::Centred, Centring::Centred];
            assert!(twice.resolve().unwrap_err().to_string().contains("measure.centring lists centred twice"));
            let overridden = apply_overrides(&spec, &["data.tokens=77".into()]).unwrap();
            assert_eq!(overridden.data.tokens, 77);
        });
    }

    #[test]
    fn overrides_set_arrays() {
        let spec: AnalysisSpec = toml::from_str(SPEC).unwrap();
        let set = ["measure.taps=[]", r#"measure.centring=["centred"]"#, r#"measure.estimators=["var@0.9","entropy"]"#].map(String::from);
        let overridden = apply_overrides(&spec, &set).unwrap();
        assert_eq!(overridden.measure.taps, Vec::<String>::new());
        assert_eq!(overridden.measure.centring, vec![Centring::Centred]);
        assert_eq!(overridden.measure.estimators, ["var@0.9", "entropy"]);
        let unquoted = apply_overrides(&spec, &["measure.estimators=[var@0.9]".into()]).unwrap_err().to_string();
        assert!(unquoted.contains("an array, written as JSON"), "{unquoted}");
        assert!(apply_overrides(&spec, &["data.tokens=[1]".into()]).is_err());
    }

    #[test]
    fn spec_file_errors_name_the_line_and_a_measure_section_may_set_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            AnalysisSpec::load(&path, &[])
        };
        let mistyped = load(&SPEC.replace("tokens = 1000", "tokens = \"1000\"")).unwrap_err().to_string();
        assert!(mistyped.contains("spec.toml: line 8: invalid type: string \"1000\""), "{mistyped}");
        let unknown = load(&format!("{SPEC}seqlen = 64\n")).unwrap_err().to_string();
        assert!(unknown.contains("spec.toml: line 10: unknown field `seqlen`"), "{unknown}");
        let unknown = load(&SPEC.replace("name = \"t\"", "name = \"t\"\nsurprise = 1")).unwrap_err().to_string();
        assert!(unknown.contains("spec.toml: line 3: unknown field `surprise`"), "{unknown}");
        let partial = load(&format!("{SPEC}[measure]\nmask_prob = 0.2\n")).unwrap();
        assert_eq!(partial.measure, MeasureSpec { mask_prob: 0.2, ..MeasureSpec::default() });
    }
}
