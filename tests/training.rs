//! Training behaviour end to end: learning, gradients reaching every parameter, checkpoints that
//! reload to the same model, exact resume, and clear failures.

mod common;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::{copy_dir, small_corpus, tiny_request};
use repdef::checkpoint::{load_pretraining_model, read_safetensors, WEIGHTS_FILE};
use repdef::config::{MaskConfig, Objective, Preset};
use repdef::data::corpus::read_meta;
use repdef::data::masking::Masker;
use repdef::data::packing::{PackedSequences, Split};
use repdef::model::{init, Ctx, PretrainingModel};
use repdef::rng::Rng;
use repdef::train::eval::evaluate;
use repdef::train::loss::masked_token_loss;
use repdef::train::optimizer::{AdamW, AdamWConfig};
use repdef::train::train;
use std::path::Path;

/// The model variants every training-path test covers: each objective with absolute positions
/// only, and MAE-LM with relative-position bias tables in the encoder and in the decoder.
const VARIANTS: [(Objective, bool); 3] = [(Objective::Mlm, false), (Objective::MaeLm, false), (Objective::MaeLm, true)];

/// A fresh tiny model, its optimiser, masker and one fixed batch of 8 × 32 corpus tokens;
/// `relative`: bias tables in the encoder and (MAE-LM) the decoder.
fn fixed_batch_setup((objective, relative): (Objective, bool), dir: &std::path::Path) -> (VarMap, PretrainingModel, AdamW, repdef::data::masking::MaskedBatch) {
    let data = small_corpus(dir);
    let meta = read_meta(&data).unwrap();
    let seqs = PackedSequences::load(&data, Split::Train, 32).unwrap();
    let mut config = Preset::Tiny.model_config(meta.vocab_size, &meta.special_ids, objective, MaskConfig::default());
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    if relative {
        config.relative_attention_num_buckets = 16;
        config.relative_attention_max_distance = 20;
        config.repdef.as_mut().unwrap().decoder_relative_attention = objective == Objective::MaeLm;
        config.validate().unwrap();
    }
    let varmap = VarMap::new();
    let model = PretrainingModel::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &config).unwrap();
    init::initialize(&varmap, 0.02, &mut Rng::new(0)).unwrap();
    let optimizer = AdamW::new(&varmap, AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.01 }).unwrap();
    let masker = Masker { config: MaskConfig::default(), special: meta.special_ids, vocab_size: meta.vocab_size, drop_picked: objective == Objective::MaeLm };
    let rows: Vec<&[u32]> = (0..8).map(|i| seqs.seq(i)).collect();
    let batch = masker.mask(&rows, &mut Rng::new(1));
    (varmap, model, optimizer, batch)
}

#[test]
fn loss_falls_on_a_fixed_batch_and_every_parameter_gets_a_gradient() {
    for variant in VARIANTS {
        let dir = tempfile::tempdir().unwrap();
        let (varmap, model, mut optimizer, batch) = fixed_batch_setup(variant, dir.path());
        let objective = variant;
        if variant.1 {
            let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
            assert!(names.iter().any(|n| n == "decoder.relative_attention_bias.weight"), "no decoder table among {names:?}");
        }
        let mut rng = Rng::new(2);
        let mut losses = vec![];
        for step in 0..40 {
            let loss = masked_token_loss(&model, &batch, &mut Ctx::train(&mut rng)).unwrap();
            losses.push(loss.value().unwrap());
            let grads = loss.loss.backward().unwrap();
            if step == 0 {
                let missing = optimizer.params_without_gradient(&grads).unwrap();
                assert!(missing.is_empty(), "{objective:?}: no gradient reaches {missing:?}");
            }
            optimizer.step(&grads, 3e-3, 1.0).unwrap();
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.5 * first, "{objective:?}: loss {first:.3} → {last:.3} did not fall by half");
    }
}

#[test]
fn checkpoint_reloads_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    for objective in [Objective::Mlm, Objective::MaeLm] {
        let out = dir.path().join(format!("run-{objective:?}"));
        let outcome = train(&tiny_request(&data, &out, objective, 4)).unwrap();
        let recorded = outcome.last_eval.unwrap();
        let model = load_pretraining_model(&out, &Device::Cpu).unwrap();
        let meta = read_meta(&data).unwrap();
        let config = model.config.repdef.clone().unwrap();
        let masker = Masker { config: config.mask, special: meta.special_ids, vocab_size: meta.vocab_size, drop_picked: objective == Objective::MaeLm };
        let holdout = PackedSequences::load(&data, Split::Holdout, 32).unwrap();
        let reloaded = evaluate(&model, &holdout, &masker, 8, 4, 0).unwrap();
        assert!((reloaded.loss - recorded.loss).abs() < 1e-6, "{objective:?}: {reloaded:?} vs {recorded:?}");
        assert_eq!(reloaded.n_predictions, recorded.n_predictions);
    }
}

/// Asserts that two run dirs' `model.safetensors` hold exactly the same tensors.
fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let a = read_safetensors(&a.join(WEIGHTS_FILE), &Device::Cpu).unwrap().tensors;
    let b = read_safetensors(&b.join(WEIGHTS_FILE), &Device::Cpu).unwrap().tensors;
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let diff = (ta - &b[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{what}: {name} differs after resume");
    }
}

#[test]
fn interrupted_and_resumed_run_equals_a_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    for objective in [Objective::Mlm, Objective::MaeLm] {
        let straight = dir.path().join(format!("straight-{objective:?}"));
        train(&tiny_request(&data, &straight, objective, 6)).unwrap();

        let resumed = dir.path().join(format!("resumed-{objective:?}"));
        let mut first_half = tiny_request(&data, &resumed, objective, 6);
        first_half.stop_at = Some(3);
        assert_eq!(train(&first_half).unwrap().steps, 3);
        let mut second_half = tiny_request(&data, &resumed, objective, 6);
        second_half.resume = true;
        assert_eq!(train(&second_half).unwrap().steps, 6);

        assert_same_weights(&straight, &resumed, &format!("{objective:?}"));
        let bytes = |dir: &Path| std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        assert!(bytes(&straight) == bytes(&resumed), "{objective:?}: the same weights were written as different bytes");
        let metrics = |dir: &std::path::Path| -> Vec<String> {
            // Drop the timing columns, which legitimately differ.
            std::fs::read_to_string(dir.join("metrics.csv")).unwrap().lines().map(|l| l.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
        };
        assert_eq!(metrics(&straight), metrics(&resumed), "{objective:?}: metrics.csv differs");
    }
}

/// Every state a kill can leave while a checkpoint is written, built from snapshots of a real
/// run stopped at steps 2 and 4, resumes to the weights of the uninterrupted run.
#[test]
fn a_checkpoint_killed_at_any_instant_leaves_a_run_that_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let straight = dir.path().join("straight");
    train(&tiny_request(&data, &straight, Objective::Mlm, 6)).unwrap();
    let run = dir.path().join("run");
    let (snap2, snap4) = (dir.path().join("snap2"), dir.path().join("snap4"));
    for (stop, snapshot) in [(2, &snap2), (4, &snap4)] {
        let mut request = tiny_request(&data, &run, Objective::Mlm, 6);
        request.stop_at = Some(stop);
        request.resume = stop > 2;
        train(&request).unwrap();
        copy_dir(&run, snapshot);
    }
    let step4 = snap4.join("checkpoints/step-4");
    // (what the kill left, builds it, whether the root weights may be loaded before a resume)
    type Build<'a> = Box<dyn Fn(&Path) + 'a>;
    let partial_states: Vec<(&str, Build, bool)> = vec![
        (
            "step 4's weights written, nothing else",
            Box::new(|d| {
                copy_dir(&snap2, d);
                std::fs::create_dir_all(d.join("checkpoints/step-4")).unwrap();
                std::fs::copy(step4.join(WEIGHTS_FILE), d.join("checkpoints/step-4").join(WEIGHTS_FILE)).unwrap();
                std::fs::write(d.join("checkpoints/step-4/optimizer.safetensors.tmp"), b"half").unwrap();
            }),
            true,
        ),
        (
            "step 4 written, not committed",
            Box::new(|d| {
                copy_dir(&snap2, d);
                copy_dir(&step4, &d.join("checkpoints/step-4"));
            }),
            true,
        ),
        (
            "step 4 committed, root weights and step 2 not yet replaced",
            Box::new(|d| {
                copy_dir(&snap4, d);
                copy_dir(&snap2.join("checkpoints/step-2"), &d.join("checkpoints/step-2"));
                std::fs::copy(snap2.join(WEIGHTS_FILE), d.join(WEIGHTS_FILE)).unwrap();
                std::fs::write(d.join("model.safetensors.tmp"), b"half").unwrap();
            }),
            false,
        ),
        (
            "made before step directories (one set in the run dir)",
            Box::new(|d| {
                copy_dir(&snap4, d);
                std::fs::rename(d.join("checkpoints/step-4/optimizer.safetensors"), d.join("optimizer.safetensors")).unwrap();
                std::fs::remove_dir_all(d.join("checkpoints")).unwrap();
            }),
            true,
        ),
    ];
    for (i, (what, make, loadable)) in partial_states.iter().enumerate() {
        let killed = dir.path().join(format!("killed-{i}"));
        make(&killed);
        let loaded = load_pretraining_model(&killed, &Device::Cpu);
        assert_eq!(loaded.is_ok(), *loadable, "{what}: {:?}", loaded.err());
        let mut resume = tiny_request(&data, &killed, Objective::Mlm, 6);
        resume.resume = true;
        assert_eq!(train(&resume).unwrap_or_else(|e| panic!("{what}: {e:#}")).steps, 6, "{what}");
        assert_same_weights(&straight, &killed, what);
        let left: Vec<_> = std::fs::read_dir(killed.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["step-6"], "{what}: superseded checkpoints remain");
        assert!(!killed.join("optimizer.safetensors").exists(), "{what}");
    }
}

#[test]
fn resuming_a_finished_run_refreshes_a_stale_plateau_reference_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let out = dir.path().join("run");
    train(&tiny_request(&data, &out, Objective::Mlm, 2)).unwrap();
    let state_path = out.join("train_state.json");
    let read_state = || serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let fresh = read_state();
    let weights = std::fs::read(out.join(WEIGHTS_FILE)).unwrap();

    let mut stale = fresh.clone();
    stale["plateau_loss"] = serde_json::json!(123.0);
    std::fs::write(&state_path, stale.to_string()).unwrap();
    let mut resume = tiny_request(&data, &out, Objective::Mlm, 2);
    resume.resume = true;
    assert_eq!(train(&resume).unwrap().steps, 2);
    assert_eq!(read_state(), fresh, "the state is back to what the run wrote, plateau included");
    assert_eq!(std::fs::read(out.join(WEIGHTS_FILE)).unwrap(), weights);
}

#[test]
fn a_diverging_run_stops_with_a_message_and_keeps_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let diverge = |out: &Path, checkpoint_every: u64| {
        let mut request = tiny_request(&data, out, Objective::Mlm, 20);
        request.config.checkpoint_every = checkpoint_every;
        request.config.warmup_steps = 0;
        request.config.lr = 1e30;
        request.config.grad_clip = 0.0;
        train(&request).unwrap_err().to_string()
    };
    let out = dir.path().join("run");
    let error = diverge(&out, 1);
    assert!(error.contains("loss became") && error.contains("the last good checkpoint"), "{error}");
    load_pretraining_model(&out, &Device::Cpu).expect("the last good checkpoint still loads");

    // Diverging before the first checkpoint: the message does not promise one.
    let early = dir.path().join("early");
    let error = diverge(&early, 1000);
    assert!(error.contains("no checkpoint was written yet") && !early.join("train_state.json").exists(), "{error}");
}

#[test]
fn starting_over_an_existing_run_or_resuming_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let out = dir.path().join("run");
    let mut resume_nothing = tiny_request(&data, &out, Objective::Mlm, 2);
    resume_nothing.resume = true;
    assert!(train(&resume_nothing).unwrap_err().to_string().contains("no train_state.json"));
    train(&tiny_request(&data, &out, Objective::Mlm, 2)).unwrap();
    assert!(train(&tiny_request(&data, &out, Objective::Mlm, 2)).unwrap_err().to_string().contains("--resume"));
}

#[test]
fn training_forward_without_dropout_equals_the_inference_forward() {
    // The training path uses differentiable compositions instead of candle's fused kernels;
    // with dropout off both must compute the same function.
    for objective in VARIANTS {
        let dir = tempfile::tempdir().unwrap();
        let (_varmap, model, _optimizer, batch) = fixed_batch_setup(objective, dir.path());
        let targets = batch.targets();
        let (trained, trained_top) = model.picked_loss(&batch, &targets, &mut Ctx::train(&mut Rng::new(0))).unwrap();
        let (inferred, inferred_top) = model.picked_loss(&batch, &targets, &mut Ctx::infer()).unwrap();
        let diff = (trained - inferred).unwrap().abs().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{objective:?}: train and inference losses differ by {diff}");
        assert_eq!(trained_top, inferred_top, "{objective:?}: train and inference predictions differ");
    }
}

#[test]
fn masking_is_set_in_one_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_corpus(dir.path());
    let mut request = tiny_request(&data, &dir.path().join("run"), Objective::MaeLm, 1);
    request.model_overrides = vec!["repdef.mask.policy=bert".into()];
    let error = format!("{:#}", train(&request).unwrap_err());
    assert!(error.contains("masking is a training setting") && error.contains("--mask-policy"), "{error}");
    assert!(!dir.path().join("run/config.json").exists(), "nothing is written");
    // The training setting is what config.json records, and what the analysis reads.
    request.model_overrides.clear();
    request.config.mask.keep_mask_frac = 0.25;
    train(&request).unwrap();
    let config = repdef::config::ModelConfig::load(&dir.path().join("run/config.json")).unwrap();
    assert_eq!(config.repdef.unwrap().mask, request.config.mask);
}
