//! The extraction loop: for each model, batches of sequences are masked once (seeded per
//! sequence, so every model with the same tokenizer sees the same masks), run through the encoder under every
//! condition, and each tap's rows are added to the Gram accumulator of their group.

use super::conditions::{condition_inputs, Condition, ConditionInput, Group};
use super::head_eval::{evaluate_head, HeadEvaluation};
use super::sequences::{load_sequences, shard_selection};
use crate::analysis::training_record::TrainingRecord;
use crate::checkpoint::load_encoder;
use crate::config::{MaskConfig, ModelConfig, Objective};
use crate::data::masking::Masker;
use crate::data::packing::PackedSequences;
use crate::data::tokenizer::SpecialIds;
use crate::model::{Ctx, Encoder, Tap, TapCache};
use crate::progress::Progress;
use crate::rank::GramAccumulator;
use crate::rng::Rng;
use crate::spec::{Plan, PlannedModel};
use anyhow::{ensure, Context, Result};
use candle_core::Device;
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::Instant;

/// Identifies one accumulator; `layer` is the HF `hidden_states` index (0 = embeddings).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccumulatorKey {
    pub model: String,
    pub condition: Condition,
    pub group: Group,
    pub layer: usize,
}

pub type Accumulators = BTreeMap<AccumulatorKey, GramAccumulator>;

/// What running a plan produced.
pub struct Extraction {
    pub accumulators: Accumulators,
    /// Tokens analysed, by model label.
    pub tokens: BTreeMap<String, u64>,
    /// The MLM-head evaluation of each model without a repdef training record that has a head.
    pub head_evaluations: BTreeMap<String, HeadEvaluation>,
}

/// Runs every model of the plan over its data.
pub fn extract(plan: &Plan) -> Result<Extraction> {
    let device = Device::Cpu;
    let mut accumulators = Accumulators::new();
    let mut tokens_per_model = BTreeMap::new();
    let mut head_evaluations = BTreeMap::new();
    let total = plan.spec.data.tokens * plan.models.len() as u64;
    let progress = Progress::new(total, 0, "tokens");
    let start = Instant::now();
    for (i, model) in plan.models.iter().enumerate() {
        let done_before = plan.spec.data.tokens * i as u64;
        let (tokens, head_evaluation) = extract_model(plan, model, &device, &mut accumulators, |done| {
            let rate = (done_before + done) as f64 / start.elapsed().as_secs_f64();
            progress.advance(done_before + done, format!("{} {rate:.0} tok/s", model.label));
        })
        .with_context(|| format!("model {:?} ({})", model.label, model.path.display()))?;
        progress.log(&format!("{}: {tokens} tokens, {:.1} s", model.label, start.elapsed().as_secs_f64()));
        tokens_per_model.insert(model.label.clone(), tokens);
        if let Some(evaluation) = head_evaluation {
            progress.log(&format!(
                "{}: its MLM head scores {:.3} nats ({:.3} accuracy) against a unigram plateau of {:.3}",
                model.label, evaluation.loss, evaluation.accuracy, evaluation.plateau_loss
            ));
            head_evaluations.insert(model.label.clone(), evaluation);
        }
    }
    progress.finish();
    Ok(Extraction { accumulators, tokens: tokens_per_model, head_evaluations })
}

/// Accumulates one model; returns its tokens and, for a model without a repdef training record,
/// its MLM head's evaluation.
fn extract_model(
    plan: &Plan,
    model: &PlannedModel,
    device: &Device,
    accumulators: &mut Accumulators,
    report: impl Fn(u64),
) -> Result<(u64, Option<HeadEvaluation>)> {
    let data = &plan.spec.data;
    let loaded = load_encoder(&model.path, model.tokenizer.as_deref(), device)?;
    let sequences = load_sequences(&plan.data, &loaded.tokenizer, data.seq_len)?;
    let selected = shard_selection(sequences.len(), data.seq_len, data.tokens, plan.shard);
    ensure!(!selected.is_empty(), "no sequences to analyse (the data has {} sequences of {} tokens)", sequences.len(), data.seq_len);
    let special = SpecialIds::from_tokenizer(&loaded.tokenizer)?;
    let (mask_prob, seed) = (plan.spec.measure.mask_prob, plan.spec.seed);
    let run = ModelRun { label: &model.label, config: &model.config, encoder: &loaded.encoder, taps: &model.taps, special, mask_prob, seed };
    let tokens = accumulate(&run, &sequences, &selected, data.batch_size, device, accumulators, report)?;
    let head_evaluation = if TrainingRecord::exists(&model.path) {
        None
    } else {
        // Every shard scores the same first sequences of the unsharded selection.
        let n_selected = shard_selection(sequences.len(), data.seq_len, data.tokens, (0, 1)).len();
        evaluate_head(&loaded, &sequences, n_selected, special, mask_prob, seed)?
    };
    Ok((tokens, head_evaluation))
}

/// One loaded model and how to mask its input.
pub struct ModelRun<'a> {
    pub label: &'a str,
    pub config: &'a ModelConfig,
    pub encoder: &'a Encoder,
    pub taps: &'a [Tap],
    pub special: SpecialIds,
    pub mask_prob: f64,
    pub seed: u64,
}

/// Feeds the `selected` sequences through every condition into `accumulators`; returns tokens seen.
pub fn accumulate(
    run: &ModelRun,
    sequences: &PackedSequences,
    selected: &[usize],
    batch_size: usize,
    device: &Device,
    accumulators: &mut Accumulators,
    report: impl Fn(u64),
) -> Result<u64> {
    // The spec's masking rate, with the policy, δ and special-token rule the model was trained
    // with (a foreign checkpoint: the paper's all-`[MASK]`).
    let trained_with = run.config.repdef.as_ref().map(|r| r.mask.clone()).unwrap_or_default();
    let mae_lm = run.config.objective() == Objective::MaeLm;
    let masker =
        Masker { config: MaskConfig { prob: run.mask_prob, ..trained_with }, special: run.special, vocab_size: run.config.vocab_size, drop_picked: mae_lm };
    let mut tokens = 0u64;
    for chunk in selected.chunks(batch_size) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| sequences.seq(i)).collect();
        // Each sequence's mask depends only on (seed, its index): shards merge into one pass.
        let batch = masker.mask_independently(&rows, |r| Rng::derive(run.seed.wrapping_add(chunk[r] as u64), "analysis-masking"));
        for condition in condition_inputs(run.config, &batch, mae_lm, device)? {
            accumulate_condition(run.label, run.encoder, run.taps, &condition, accumulators)?;
        }
        tokens += (batch.batch * batch.pos) as u64;
        report(tokens);
    }
    Ok(tokens)
}

/// Runs one condition's input through `encoder` and adds each tap's group rows to the
/// accumulators of model `label`.
pub fn accumulate_condition(label: &str, encoder: &Encoder, taps: &[Tap], condition: &ConditionInput, accumulators: &mut Accumulators) -> Result<()> {
    let mut cache = TapCache::only(taps.to_vec());
    encoder.forward(&condition.input, &mut Ctx::infer().with_recorder(&mut cache))?;
    let matrices: Vec<(Tap, Array2<f32>)> = cache
        .tensors
        .into_par_iter()
        .map(|(tap, hidden)| {
            let (batch, pos, d) = hidden.dims3()?;
            Ok((tap, Array2::from_shape_vec((batch * pos, d), hidden.flatten_all()?.to_vec1::<f32>()?)?))
        })
        .collect::<Result<_>>()?;
    let by_tap = accumulate_groups(&matrices, &condition.groups).with_context(|| format!("{} input", condition.condition))?;
    for ((tap, _), by_group) in matrices.iter().zip(by_tap) {
        let layer = tap.hf_index().expect("encoder taps have an HF index");
        for ((group, _), update) in condition.groups.iter().zip(by_group) {
            let key = AccumulatorKey { model: label.to_string(), condition: condition.condition, group: *group, layer };
            accumulators.entry(key).or_insert_with(|| GramAccumulator::new(update.d())).merge(&update)?;
        }
    }
    Ok(())
}

/// Rows per parallel Gram update: small enough that a batch's taps spread evenly over the
/// threads, large enough that each update's products stay efficient.
const ROWS_PER_TASK: usize = 1024;

/// For each tap's matrix (tokens × d) one accumulator per group. The groups overlap (`all` holds
/// `real`, `mask` and the special tokens), so the rows are split into atoms, the rows that
/// belong to exactly the same groups, and each row's terms are computed once. The atoms' rows
/// are updated in parallel tasks of [`ROWS_PER_TASK`]; the sums are exact, so the result does not
/// depend on how they are split or in which order they are added.
fn accumulate_groups(matrices: &[(Tap, Array2<f32>)], groups: &[(Group, Vec<u32>)]) -> Result<Vec<Vec<GramAccumulator>>> {
    let atoms = atoms(groups);
    let tasks: Vec<(usize, usize, &[usize])> = (0..matrices.len())
        .flat_map(|m| atoms.iter().enumerate().flat_map(move |(a, atom)| atom.rows.chunks(ROWS_PER_TASK).map(move |rows| (m, a, rows))))
        .collect();
    let updates: Vec<GramAccumulator> = tasks
        .par_iter()
        .map(|&(m, a, rows)| {
            let (tap, matrix) = &matrices[m];
            let mut update = GramAccumulator::new(matrix.ncols());
            update.update(matrix.select(Axis(0), rows).view()).with_context(|| {
                let names: Vec<&str> = atoms[a].groups.iter().map(|&g| groups[g].0.name()).collect();
                format!("{tap}, rows of {}", names.join(" and "))
            })?;
            Ok(update)
        })
        .collect::<Result<_>>()?;
    let mut by_matrix: Vec<Vec<GramAccumulator>> = matrices.iter().map(|(_, m)| vec![GramAccumulator::new(m.ncols()); groups.len()]).collect();
    for (&(m, a, _), update) in tasks.iter().zip(&updates) {
        for &g in &atoms[a].groups {
            by_matrix[m][g].merge(update)?;
        }
    }
    Ok(by_matrix)
}

/// Rows that belong to exactly the same groups of a condition.
struct Atom {
    /// Indices into the condition's groups.
    groups: Vec<usize>,
    rows: Vec<usize>,
}

/// Splits the condition's rows into [`Atom`]s.
fn atoms(groups: &[(Group, Vec<u32>)]) -> Vec<Atom> {
    let mut membership: BTreeMap<u32, u32> = BTreeMap::new();
    for (g, (_, rows)) in groups.iter().enumerate() {
        for &row in rows {
            *membership.entry(row).or_default() |= 1 << g;
        }
    }
    let mut atoms: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (row, member_of) in membership {
        atoms.entry(member_of).or_default().push(row as usize);
    }
    atoms.into_iter().map(|(member_of, rows)| Atom { groups: (0..groups.len()).filter(|g| member_of >> g & 1 == 1).collect(), rows }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MaskPolicy;
    use crate::data::tokenizer::encode_plain;

    /// Accumulates the tiny MAE-LM fixture, its config's masking replaced by `mask`, over a few
    /// WikiText sequences; returns the (condition, group) pairs that got rows.
    fn groups_measured(mask: MaskConfig) -> Vec<(Condition, Group)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repdef-tiny-maelm");
        let loaded = load_encoder(&dir, None, &Device::Cpu).unwrap();
        let mut config = loaded.config.clone();
        config.repdef.as_mut().unwrap().mask = mask;
        let special = SpecialIds::from_tokenizer(&loaded.tokenizer).unwrap();
        let text = std::fs::read_to_string(dir.join("../corpus/wikitext2_valid.txt")).unwrap();
        let ids: Vec<u32> = text.lines().take(200).flat_map(|line| encode_plain(&loaded.tokenizer, line).unwrap()).collect();
        let sequences = PackedSequences::from_stream(&ids, 32, special.cls, special.sep).unwrap();
        let taps = [Tap::FullEmbed];
        let run = ModelRun { label: "m", config: &config, encoder: &loaded.encoder, taps: &taps, special, mask_prob: 0.15, seed: 0 };
        let mut accumulators = Accumulators::new();
        accumulate(&run, &sequences, &[0, 1, 2, 3], 4, &Device::Cpu, &mut accumulators, |_| {}).unwrap();
        accumulators.keys().map(|k| (k.condition, k.group)).collect()
    }

    #[test]
    fn groups_accumulated_by_atoms_equal_each_group_on_its_own() {
        // Overlapping groups as a condition has them (all ⊃ real, mask), rows in none (padding),
        // an empty group, and more rows than one task takes.
        let n = 2 * ROWS_PER_TASK + 100;
        let matrices: Vec<(Tap, Array2<f32>)> =
            (0..2).map(|i| (Tap::BlockOutput(i), crate::rank::testutil::gaussian(n, 6, i as u64).mapv(|x| x as f32))).collect();
        let all: Vec<u32> = (0..n as u32 - 4).collect();
        let groups = vec![
            (Group::All, all.clone()),
            (Group::Real, all.iter().copied().filter(|r| r % 5 != 0 && *r > 1).collect()),
            (Group::Mask, all.iter().copied().filter(|r| r % 5 == 0 && *r > 1).collect()),
            (Group::Real, vec![]),
        ];
        assert_eq!(atoms(&groups).len(), 3, "real, mask, and the first two rows (all only)");
        let by_matrix = accumulate_groups(&matrices, &groups).unwrap();
        for ((_, matrix), by_group) in matrices.iter().zip(&by_matrix) {
            for ((group, rows), got) in groups.iter().zip(by_group) {
                let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                let mut alone = GramAccumulator::new(6);
                alone.update(matrix.select(Axis(0), &rows).view()).unwrap();
                assert_eq!(got, &alone, "{group}");
            }
        }
    }

    #[test]
    fn extraction_masks_as_the_model_was_pretrained() {
        let paper = MaskConfig::default();
        let measured = groups_measured(paper.clone());
        assert!(!measured.contains(&(Condition::Masked, Group::Mask)), "an MAE-LM encoder never saw [MASK]: n/a");
        assert!(measured.contains(&(Condition::MaskFed, Group::Mask)));
        // The δ ablation keeps half of the picked positions as [MASK] in the encoder: they are
        // the pretraining view's [MASK] group.
        let delta = groups_measured(MaskConfig { keep_mask_frac: 0.5, policy: MaskPolicy::AllMask, ..paper });
        assert!(delta.contains(&(Condition::Masked, Group::Mask)), "{delta:?}");
    }
}
