//! The paper's claims (DESIGN §1, "Claims a reproduction checks"), each decided by a stated rule
//! from the numbers: holds, does not hold, or inconclusive (a model that never left the unigram
//! plateau cannot show the effect, so a verdict on it would be meaningless). Never written in.
//! A claim whose numbers are not all in the tables (a spec without uncentred var@0.9, a
//! truncated `ranks.csv`) is "not measured", never "does not hold".

use crate::analysis::tables::{RankRow, SubspaceRow};
use crate::config::Objective;
use crate::extract::{Condition, Group};
use crate::finetune::GridSummary;
use crate::rank::Estimator;
use crate::stats::median;
use std::collections::BTreeMap;
use std::fmt;

/// A model left the plateau when its holdout masked-token loss is this many nats below the
/// unigram plateau loss (the holdout loss of predicting token frequencies, ignoring context).
pub const PLATEAU_MARGIN_NATS: f64 = 0.5;

/// Real tokens keep ≤ 10% of their energy outside their own var@0.9 subspace by definition;
/// `[MASK]` is "outside the span of real tokens" when more than that share of its energy is.
pub const MASK_OUTSIDE_THRESHOLD: f64 = 0.1;

/// What is known about one analysed model besides its ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFacts {
    pub label: String,
    pub objective: Objective,
    pub n_layers: usize,
    pub holdout_loss: Option<f64>,
    pub holdout_accuracy: Option<f64>,
    /// Unigram entropy of the training targets (nats).
    pub plateau_loss: Option<f64>,
}

impl ModelFacts {
    /// `None` when the training state is unknown (e.g. a HuggingFace checkpoint).
    pub fn left_plateau(&self) -> Option<bool> {
        Some(self.holdout_loss? <= self.plateau_loss? - PLATEAU_MARGIN_NATS)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Holds,
    DoesNotHold,
    Inconclusive,
    NotMeasured,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Holds => "holds",
            Outcome::DoesNotHold => "does not hold",
            Outcome::Inconclusive => "inconclusive",
            Outcome::NotMeasured => "not measured",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub claim: &'static str,
    pub outcome: Outcome,
    /// The decision rule, in words.
    pub rule: String,
    /// The numbers that decided it.
    pub evidence: String,
}

/// The fine-tuning of both encoders on every task (`downstream.json` in a report dir).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Downstream {
    /// The protocol, in words: grid, seeds, training examples, epochs.
    pub protocol: String,
    pub tasks: Vec<TaskDownstream>,
}

/// One task: each encoder's learning-rate grid over the same seeds, data and settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskDownstream {
    pub mlm: GridSummary,
    pub mae_lm: GridSummary,
}

impl TaskDownstream {
    pub fn task(&self) -> &str {
        &self.mlm.task
    }
}

impl Downstream {
    /// The GLUE-style average over the tasks of (MLM, MAE-LM) scores; `None` without tasks.
    pub fn average(&self) -> Option<(f64, f64)> {
        let n = self.tasks.len() as f64;
        (!self.tasks.is_empty()).then(|| {
            let sum = |score: fn(&TaskDownstream) -> f64| self.tasks.iter().map(score).sum::<f64>() / n;
            (sum(|t| t.mlm.score), sum(|t| t.mae_lm.score))
        })
    }
}

/// Per-layer medians (across seeds) of one objective's var@0.9 ranks and subspace measures.
struct ObjectiveView {
    n_layers: usize,
    trained: Option<bool>,
    rank: BTreeMap<(Condition, Group, usize), f64>,
    mask_outside: BTreeMap<usize, f64>,
}

fn view(objective: Objective, ranks: &[RankRow], subspace: &[SubspaceRow], models: &[ModelFacts]) -> Option<ObjectiveView> {
    let members: Vec<&ModelFacts> = models.iter().filter(|m| m.objective == objective).collect();
    let first = members.first()?;
    let is_member = |label: &str| members.iter().any(|m| m.label == label);
    let paper = Estimator::PAPER.to_string();
    let mut rank_values: BTreeMap<(Condition, Group, usize), Vec<f64>> = BTreeMap::new();
    for row in ranks.iter().filter(|r| is_member(&r.model) && r.estimator == paper && !r.centred) {
        let condition = Condition::ALL.into_iter().find(|c| c.name() == row.condition);
        let group = [Group::All, Group::Real, Group::Mask].into_iter().find(|g| g.name() == row.group);
        if let (Some(c), Some(g)) = (condition, group) {
            rank_values.entry((c, g, row.layer)).or_default().push(row.value);
        }
    }
    let mut outside: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for row in subspace.iter().filter(|r| is_member(&r.model) && !r.centred && r.condition == Condition::Masked.name()) {
        outside.entry(row.layer).or_default().push(row.mask_energy_outside_real);
    }
    let trained = members.iter().map(|m| m.left_plateau()).collect::<Option<Vec<bool>>>().map(|all| all.iter().all(|&b| b));
    // A cell is known only when every seed has it: a median over the seeds that happen to be
    // left in a truncated table would pass for a result.
    let complete = |values: Vec<f64>| if values.len() == members.len() { median(&values) } else { None };
    Some(ObjectiveView {
        n_layers: first.n_layers,
        trained,
        rank: rank_values.into_iter().filter_map(|(k, v)| Some((k, complete(v)?))).collect(),
        mask_outside: outside.into_iter().filter_map(|(k, v)| Some((k, complete(v)?))).collect(),
    })
}

impl ObjectiveView {
    fn get(&self, condition: Condition, group: Group, layer: usize) -> Option<f64> {
        self.rank.get(&(condition, group, layer)).copied()
    }

    /// Block outputs of the upper half of the encoder (HF hidden-state indices).
    fn upper_layers(&self) -> Vec<usize> {
        ((self.n_layers / 2 + 1)..=self.n_layers).collect()
    }

    /// Every block output (HF hidden-state indices 1..=n_layers).
    fn block_outputs(&self) -> Vec<usize> {
        (1..=self.n_layers).collect()
    }

    /// The var@0.9 rank of `condition/group` at each of `layers`, or a note naming the first
    /// missing one (`model` names this view in it).
    fn ranks_at(&self, model: &str, condition: Condition, group: Group, layers: &[usize]) -> Result<Vec<f64>, String> {
        layers
            .iter()
            .map(|&l| self.get(condition, group, l).ok_or_else(|| missing(model, &format!("{}/{} uncentred var@0.9", condition.name(), group.name()), l)))
            .collect()
    }

    /// The share of `[MASK]` energy outside the real subspace at each of `layers`, or a note.
    fn mask_outside_at(&self, model: &str, layers: &[usize]) -> Result<Vec<f64>, String> {
        layers.iter().map(|l| self.mask_outside.get(l).copied().ok_or_else(|| missing(model, "[MASK] energy outside the real subspace", *l))).collect()
    }

    /// Mean over block outputs of rank(masked/all) − rank(clean/all).
    fn mask_gap(&self, model: &str) -> Result<f64, String> {
        let layers = self.block_outputs();
        let masked = self.ranks_at(model, Condition::Masked, Group::All, &layers)?;
        let clean = self.ranks_at(model, Condition::Clean, Group::All, &layers)?;
        Ok(masked.iter().zip(&clean).map(|(m, c)| m - c).sum::<f64>() / layers.len() as f64)
    }
}

fn missing(model: &str, what: &str, layer: usize) -> String {
    format!("not in the tables: {model} {what} at layer {layer}")
}

fn untrained_note(models: &[(&str, &ObjectiveView)]) -> Option<String> {
    let stuck: Vec<&str> = models.iter().filter(|(_, v)| v.trained == Some(false)).map(|(name, _)| *name).collect();
    (!stuck.is_empty())
        .then(|| format!("{} did not leave the unigram plateau (holdout loss not {PLATEAU_MARGIN_NATS} nats below the plateau loss)", stuck.join(" and ")))
}

fn verdict(claim: &'static str, rule: String, outcome: Outcome, evidence: String) -> Verdict {
    Verdict { claim, outcome, rule, evidence }
}

fn claim_mask_dimensions(mlm: Option<&ObjectiveView>) -> Verdict {
    let claim = "1. MLM allocates dimensions to [MASK]";
    let rule = format!(
        "in the MLM model's upper half of layers, rank(masked/all) > rank(clean/all) at more than half of the layers, and the median share of [MASK] energy outside the real tokens' var@0.9 subspace exceeds {MASK_OUTSIDE_THRESHOLD}"
    );
    let Some(mlm) = mlm else { return verdict(claim, rule, Outcome::NotMeasured, "no MLM model in this analysis".into()) };
    let upper = mlm.upper_layers();
    let inputs = mlm
        .ranks_at("MLM", Condition::Masked, Group::All, &upper)
        .and_then(|masked| Ok((masked, mlm.ranks_at("MLM", Condition::Clean, Group::All, &upper)?, mlm.mask_outside_at("MLM", &upper)?)));
    let (masked, clean, outside) = match inputs {
        Ok(inputs) => inputs,
        Err(note) => return verdict(claim, rule, Outcome::NotMeasured, note),
    };
    let higher: Vec<String> = upper.iter().zip(masked.iter().zip(&clean)).map(|(l, (m, c))| format!("layer {l}: {m:.0} vs {c:.0}")).collect();
    let n_higher = masked.iter().zip(&clean).filter(|(m, c)| m > c).count();
    let outside = median(&outside).expect("every upper layer has a finite share");
    let mut evidence = format!(
        "masked/all vs clean/all: {}; {n_higher} of {} upper layers higher; median [MASK] energy outside: {outside:.3}",
        higher.join(", "),
        upper.len()
    );
    let holds = n_higher * 2 > upper.len() && outside > MASK_OUTSIDE_THRESHOLD;
    decide(claim, rule, holds, &mut evidence, &[("MLM", mlm)])
}

fn claim_real_dimensions(mlm: Option<&ObjectiveView>, mae: Option<&ObjectiveView>) -> Verdict {
    let claim = "2. MAE-LM uses more dimensions for real tokens";
    let rule = "rank(clean/real) of MAE-LM > that of MLM at more than half of the block outputs (medians over seeds)".to_string();
    let (Some(mlm), Some(mae)) = (mlm, mae) else {
        return verdict(claim, rule, Outcome::NotMeasured, "needs both an MLM and an MAE-LM model".into());
    };
    let layers: Vec<usize> = (1..=mlm.n_layers.min(mae.n_layers)).collect();
    let inputs =
        mae.ranks_at("MAE-LM", Condition::Clean, Group::Real, &layers).and_then(|a| Ok((a, mlm.ranks_at("MLM", Condition::Clean, Group::Real, &layers)?)));
    let (mae_real, mlm_real) = match inputs {
        Ok(inputs) => inputs,
        Err(note) => return verdict(claim, rule, Outcome::NotMeasured, note),
    };
    let n_higher = mae_real.iter().zip(&mlm_real).filter(|(a, b)| a > b).count();
    let mut evidence = format!(
        "MAE-LM vs MLM clean/real: {}; higher at {n_higher} of {}",
        layers.iter().zip(mae_real.iter().zip(&mlm_real)).map(|(l, (a, b))| format!("layer {l}: {a:.0} vs {b:.0}")).collect::<Vec<_>>().join(", "),
        layers.len()
    );
    let holds = n_higher * 2 > layers.len();
    decide(claim, rule, holds, &mut evidence, &[("MLM", mlm), ("MAE-LM", mae)])
}

fn claim_gap_closed(mlm: Option<&ObjectiveView>, mae: Option<&ObjectiveView>) -> Verdict {
    let claim = "3. MAE-LM closes the with/without-[MASK] gap";
    let rule = "|mean over block outputs of rank(masked/all) − rank(clean/all)| is smaller for MAE-LM (whose pretraining view drops the picked positions) than for MLM".to_string();
    let (Some(mlm), Some(mae)) = (mlm, mae) else {
        return verdict(claim, rule, Outcome::NotMeasured, "needs both an MLM and an MAE-LM model".into());
    };
    let (gap_mlm, gap_mae) = match mlm.mask_gap("MLM").and_then(|a| Ok((a, mae.mask_gap("MAE-LM")?))) {
        Ok(gaps) => gaps,
        Err(note) => return verdict(claim, rule, Outcome::NotMeasured, note),
    };
    let mut evidence = format!("mean gap: MLM {gap_mlm:+.1}, MAE-LM {gap_mae:+.1}");
    let holds = gap_mae.abs() < gap_mlm.abs();
    decide(claim, rule, holds, &mut evidence, &[("MLM", mlm), ("MAE-LM", mae)])
}

/// Holds / does not hold, unless a model stuck on the plateau makes any verdict meaningless.
fn decide(claim: &'static str, rule: String, holds: bool, evidence: &mut String, models: &[(&str, &ObjectiveView)]) -> Verdict {
    let outcome = match untrained_note(models) {
        Some(note) => {
            evidence.push_str(&format!("; {note}"));
            Outcome::Inconclusive
        }
        None if holds => Outcome::Holds,
        None => Outcome::DoesNotHold,
    };
    verdict(claim, rule, outcome, evidence.clone())
}

fn claim_downstream(downstream: Option<&Downstream>, mlm: Option<&ObjectiveView>, mae: Option<&ObjectiveView>) -> Verdict {
    let claim = "4. Fine-tuned MAE-LM ≥ MLM downstream";
    let rule = "GLUE-style average over the tasks of each encoder's score (median over seeds at its best learning rate): MAE-LM ≥ MLM; inconclusive if either encoder is not above chance (the best constant predictor) on more than half of the tasks, or either pretrained encoder did not leave the unigram plateau".to_string();
    let Some((d, (mlm_average, mae_average))) = downstream.and_then(|d| Some((d, d.average()?))) else {
        return verdict(claim, rule, Outcome::NotMeasured, "no fine-tuning results".into());
    };
    let per_task: Vec<String> = d.tasks.iter().map(|t| format!("{} {:.3} vs {:.3}", t.task(), t.mae_lm.score, t.mlm.score)).collect();
    let mut evidence = format!("average over {} tasks: MAE-LM {mae_average:.3}, MLM {mlm_average:.3} ({})", d.tasks.len(), per_task.join(", "));
    let at_chance = |name: &str, grid: fn(&TaskDownstream) -> &GridSummary| {
        let tasks: Vec<&str> = d.tasks.iter().filter(|t| !grid(t).beats_chance).map(|t| t.task()).collect();
        (tasks.len() * 2 > d.tasks.len()).then(|| format!("{name} not above chance on {}", tasks.join(", ")))
    };
    let chance_notes: Vec<String> = [at_chance("MLM", |t| &t.mlm), at_chance("MAE-LM", |t| &t.mae_lm)].into_iter().flatten().collect();
    if !chance_notes.is_empty() {
        evidence.push_str(&format!("; {}: too close to chance to compare", chance_notes.join(" and ")));
        return verdict(claim, rule, Outcome::Inconclusive, evidence);
    }
    let pretrained: Vec<(&str, &ObjectiveView)> = [("MLM", mlm), ("MAE-LM", mae)].into_iter().filter_map(|(name, view)| Some((name, view?))).collect();
    decide(claim, rule, mae_average >= mlm_average, &mut evidence, &pretrained)
}

/// Every claim's verdict, in the order of DESIGN §1.
pub fn decide_claims(ranks: &[RankRow], subspace: &[SubspaceRow], models: &[ModelFacts], downstream: Option<&Downstream>) -> Vec<Verdict> {
    let mlm = view(Objective::Mlm, ranks, subspace, models);
    let mae = view(Objective::MaeLm, ranks, subspace, models);
    vec![
        claim_mask_dimensions(mlm.as_ref()),
        claim_real_dimensions(mlm.as_ref(), mae.as_ref()),
        claim_gap_closed(mlm.as_ref(), mae.as_ref()),
        claim_downstream(downstream, mlm.as_ref(), mae.as_ref()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, condition: Condition, group: Group, layer: usize, value: f64) -> RankRow {
        RankRow {
            model: model.into(),
            condition: condition.name().into(),
            group: group.name().into(),
            layer,
            estimator: "var@0.9".into(),
            centred: false,
            value,
            n_tokens: 1000,
        }
    }

    fn facts(label: &str, objective: Objective, loss: f64) -> ModelFacts {
        ModelFacts { label: label.into(), objective, n_layers: 4, holdout_loss: Some(loss), holdout_accuracy: Some(0.3), plateau_loss: Some(6.5) }
    }

    fn outside(model: &str, layer: usize, share: f64) -> SubspaceRow {
        SubspaceRow {
            model: model.into(),
            condition: "masked".into(),
            layer,
            centred: false,
            k_real: 10,
            k_mask: 5,
            mask_energy_outside_real: share,
            angle_min_deg: 0.0,
            angle_median_deg: 40.0,
            angle_max_deg: 80.0,
        }
    }

    /// MLM: masked/all exceeds clean/all by `mlm_gap`; MAE-LM clean/real = MLM's + `mae_gain`.
    fn table(mlm_gap: f64, mae_gain: f64) -> Vec<RankRow> {
        let mut rows = vec![];
        for layer in 0..=4 {
            rows.push(row("MLM", Condition::Masked, Group::All, layer, 100.0 + mlm_gap));
            rows.push(row("MLM", Condition::Clean, Group::All, layer, 100.0));
            rows.push(row("MLM", Condition::Clean, Group::Real, layer, 90.0));
            rows.push(row("MAE-LM", Condition::Masked, Group::All, layer, 110.0));
            rows.push(row("MAE-LM", Condition::Clean, Group::All, layer, 110.0));
            rows.push(row("MAE-LM", Condition::Clean, Group::Real, layer, 90.0 + mae_gain));
        }
        rows
    }

    fn outcomes(ranks: &[RankRow], share: f64, mlm_loss: f64) -> Vec<Outcome> {
        let subspace: Vec<SubspaceRow> = (1..=4).map(|l| outside("MLM", l, share)).collect();
        let models = [facts("MLM", Objective::Mlm, mlm_loss), facts("MAE-LM", Objective::MaeLm, 4.0)];
        decide_claims(ranks, &subspace, &models, None).iter().map(|v| v.outcome).collect()
    }

    #[test]
    fn paper_like_numbers_make_every_rank_claim_hold() {
        let got = outcomes(&table(20.0, 15.0), 0.4, 4.0);
        assert_eq!(got, vec![Outcome::Holds, Outcome::Holds, Outcome::Holds, Outcome::NotMeasured]);
    }

    #[test]
    fn opposite_numbers_do_not_hold() {
        let got = outcomes(&table(0.0, -10.0), 0.02, 4.0);
        assert_eq!(got[..3], [Outcome::DoesNotHold, Outcome::DoesNotHold, Outcome::DoesNotHold]);
    }

    #[test]
    fn a_model_on_the_plateau_makes_negative_results_inconclusive() {
        // Loss 6.4 is not 0.5 nats below the unigram plateau 6.5.
        let got = outcomes(&table(0.0, 0.0), 0.02, 6.4);
        assert_eq!(got[..3], [Outcome::Inconclusive, Outcome::Inconclusive, Outcome::Inconclusive]);
    }

    #[test]
    fn missing_numbers_are_not_measured_never_does_not_hold() {
        let not_measured = [Outcome::NotMeasured; 3];
        assert_eq!(outcomes(&[], 0.4, 4.0)[..3], not_measured, "an empty table");
        let other_estimator: Vec<RankRow> = table(20.0, 15.0).into_iter().map(|r| RankRow { estimator: "entropy".into(), ..r }).collect();
        assert_eq!(outcomes(&other_estimator, 0.4, 4.0)[..3], not_measured, "no var@0.9");
        let centred: Vec<RankRow> = table(20.0, 15.0).into_iter().map(|r| RankRow { centred: true, ..r }).collect();
        assert_eq!(outcomes(&centred, 0.4, 4.0)[..3], not_measured, "only centred spectra");
        // A table cut after layer 3: the last layer is missing for MAE-LM's rows.
        let mut cut = table(0.0, -10.0);
        cut.truncate(cut.len() - 3);
        let verdicts = decide_claims(
            &cut,
            &(1..=4).map(|l| outside("MLM", l, 0.02)).collect::<Vec<_>>(),
            &[facts("MLM", Objective::Mlm, 4.0), facts("MAE-LM", Objective::MaeLm, 4.0)],
            None,
        );
        assert_eq!(verdicts[0].outcome, Outcome::DoesNotHold, "MLM's rows are complete");
        assert_eq!(verdicts[1].outcome, Outcome::NotMeasured);
        assert!(verdicts[1].evidence.contains("MAE-LM clean/real uncentred var@0.9 at layer 4"), "{}", verdicts[1].evidence);
        assert_eq!(verdicts[2].outcome, Outcome::NotMeasured);
    }

    #[test]
    fn a_seed_missing_from_the_table_leaves_the_claim_not_measured() {
        let ranks = table(20.0, 15.0);
        let models = [facts("MLM", Objective::Mlm, 4.0), facts("MAE-LM", Objective::MaeLm, 4.0), facts("MAE-LM#seed1", Objective::MaeLm, 4.0)];
        let subspace: Vec<SubspaceRow> = (1..=4).map(|l| outside("MLM", l, 0.4)).collect();
        assert_eq!(decide_claims(&ranks, &subspace, &models, None)[1].outcome, Outcome::NotMeasured);
    }

    #[test]
    fn seeds_are_combined_by_their_median() {
        let mut ranks = table(20.0, 15.0);
        // A second MAE-LM seed with lower clean/real ranks and a third with higher: median = first.
        for (label, shift) in [("MAE-LM#seed1", -30.0), ("MAE-LM#seed2", 30.0)] {
            ranks.extend(table(20.0, 15.0 + shift).into_iter().filter(|r| r.model == "MAE-LM").map(|r| RankRow { model: label.into(), ..r }));
        }
        let subspace: Vec<SubspaceRow> = (1..=4).map(|l| outside("MLM", l, 0.4)).collect();
        let models = [
            facts("MLM", Objective::Mlm, 4.0),
            facts("MAE-LM", Objective::MaeLm, 4.0),
            facts("MAE-LM#seed1", Objective::MaeLm, 4.0),
            facts("MAE-LM#seed2", Objective::MaeLm, 4.0),
        ];
        let verdicts = decide_claims(&ranks, &subspace, &models, None);
        assert_eq!(verdicts[1].outcome, Outcome::Holds, "{}", verdicts[1].evidence);
    }

    /// A grid result with the given score and chance level.
    fn grid(task: &str, score: f64, chance: f64) -> GridSummary {
        GridSummary {
            model: "enc".into(),
            task: task.into(),
            metric: crate::finetune::metrics::Metric::Accuracy,
            chance,
            points: vec![],
            chosen_lr: 1e-3,
            score,
            beats_chance: score > chance,
            rank_before: vec![],
            rank_after: vec![],
        }
    }

    /// Tasks given as (MLM score, MAE-LM score), every one with chance level 0.5.
    fn downstream(scores: &[(f64, f64)]) -> Downstream {
        let tasks = scores
            .iter()
            .enumerate()
            .map(|(i, &(mlm, mae))| TaskDownstream { mlm: grid(&format!("t{i}"), mlm, 0.5), mae_lm: grid(&format!("t{i}"), mae, 0.5) });
        Downstream { protocol: String::new(), tasks: tasks.collect() }
    }

    #[test]
    fn downstream_compares_the_average_over_tasks() {
        // MAE-LM loses one task but wins on average: the average decides.
        let d = downstream(&[(0.80, 0.78), (0.60, 0.70)]);
        assert_eq!(d.average(), Some((0.70, 0.74)));
        let verdict = claim_downstream(Some(&d), None, None);
        assert_eq!(verdict.outcome, Outcome::Holds, "{}", verdict.evidence);
        assert!(verdict.evidence.contains("t0 0.780 vs 0.800"), "{}", verdict.evidence);
        assert_eq!(claim_downstream(Some(&downstream(&[(0.85, 0.80)])), None, None).outcome, Outcome::DoesNotHold);
        assert_eq!(claim_downstream(None, None, None).outcome, Outcome::NotMeasured);
        assert_eq!(claim_downstream(Some(&downstream(&[])), None, None).outcome, Outcome::NotMeasured);
    }

    #[test]
    fn downstream_at_chance_on_most_tasks_is_inconclusive() {
        // MLM at chance (0.5) on two of three tasks.
        let verdict = claim_downstream(Some(&downstream(&[(0.5, 0.7), (0.45, 0.7), (0.8, 0.7)])), None, None);
        assert_eq!(verdict.outcome, Outcome::Inconclusive);
        assert!(verdict.evidence.contains("MLM not above chance on t0, t1"), "{}", verdict.evidence);
        // At chance on one of three: still compared.
        assert_eq!(claim_downstream(Some(&downstream(&[(0.5, 0.7), (0.6, 0.7), (0.8, 0.7)])), None, None).outcome, Outcome::Holds);
    }

    #[test]
    fn downstream_on_encoders_stuck_on_the_plateau_is_inconclusive() {
        let d = downstream(&[(0.85, 0.80)]);
        let subspace: Vec<SubspaceRow> = (1..=4).map(|l| outside("MLM", l, 0.4)).collect();
        let verdict = |mlm_loss: f64| {
            let models = [facts("MLM", Objective::Mlm, mlm_loss), facts("MAE-LM", Objective::MaeLm, 4.0)];
            decide_claims(&table(20.0, 15.0), &subspace, &models, Some(&d))[3].outcome
        };
        assert_eq!(verdict(4.0), Outcome::DoesNotHold);
        assert_eq!(verdict(6.4), Outcome::Inconclusive);
    }
}
