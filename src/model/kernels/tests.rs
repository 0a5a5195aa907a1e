//! Each kernel against the composed candle ops it replaces: the same module run with
//! `Ctx::train` (kernels) and `Ctx::train_composed` (reference), from the same dropout seed, must
//! give the same output and the same gradient for its input and every parameter; and so must a
//! whole MLM and MAE-LM training step. Likewise a block run only at the rows the loss reads
//! (`Layer::forward_at`) against the full block read at those rows.

use crate::config::{MaskConfig, ModelConfig, Objective, Preset};
use crate::data::masking::Masker;
use crate::data::tokenizer::SpecialIds;
use crate::model::embeddings::sum_of_lookups;
use crate::model::head::MlmHead;
use crate::model::kernels::projection::{self, Operand};
use crate::model::layer::Layer;
use crate::model::ops::{Activation, AttentionMask, Ctx, LayerNorm, Linear};
use crate::model::relative_position::RelativePositionBias;
use crate::model::PretrainingModel;
use crate::rng::Rng;
use crate::train::loss::masked_token_loss;
use anyhow::Result;
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

fn random(shape: impl Into<Shape>, rng: &mut Rng) -> Tensor {
    let shape = shape.into();
    let values: Vec<f32> = (0..shape.elem_count()).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// A small BERT config (d_head 32, so the attention scale is not a power of two).
fn config(hidden_act: &str, dropout: f64) -> ModelConfig {
    let special = SpecialIds::REPDEF;
    let mut cfg = Preset::Tiny.model_config(50, &special, Objective::Mlm, MaskConfig::default());
    cfg.hidden_act = hidden_act.into();
    cfg.hidden_dropout_prob = dropout;
    cfg.attention_probs_dropout_prob = dropout;
    cfg.layer_norm_eps = 1e-5;
    cfg
}

/// Builds a module with `load` and gives every parameter random values (LayerNorm weights of 1
/// and biases of 0 would hide mistakes in their gradients).
fn module<M>(load: impl FnOnce(VarBuilder) -> Result<M>) -> (VarMap, M) {
    let varmap = VarMap::new();
    let m = load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let mut rng = Rng::new(11);
    let vars = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort(); // a fixed order, so the values are the same in every run
    for name in names {
        vars[name].set(&(random(vars[name].shape(), &mut rng) * 0.5).unwrap()).unwrap();
    }
    drop(vars);
    (varmap, m)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// `|got - want| ≤ tol · max(|want|, 0.1)`: the floor covers gradients that vanish in exact
/// arithmetic, such as the key bias's (softmax ignores a constant added to a row), where both
/// paths give round-off.
fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
    let diff = max_abs(&(got - want).unwrap());
    let scale = max_abs(want).max(0.1);
    assert!(diff <= tol * scale, "{what}: max |kernel - composed| = {diff:e} (scale {scale:e})");
}

/// Runs `forward(x, ctx)` both ways and compares outputs and the gradients of `x` and of every
/// variable of `varmap` for the loss `Σ out ⊙ probe` (a fixed random probe).
fn assert_matches_composed(varmap: &VarMap, x: &Var, forward: impl Fn(&Tensor, &mut Ctx) -> Result<Tensor>) {
    assert_part_same_as_composed(varmap, &[], x, forward);
}

/// [`assert_matches_composed`] for a pass that reaches only part of `varmap`'s module: the
/// variables under the `untouched` name prefixes must get no gradient from either path.
fn assert_part_same_as_composed(varmap: &VarMap, untouched: &[&str], x: &Var, forward: impl Fn(&Tensor, &mut Ctx) -> Result<Tensor>) {
    compare_with_composed(varmap, untouched, Some(x), |ctx| {
        let out = forward(x.as_tensor(), ctx)?;
        let probe = random(out.shape(), &mut Rng::new(3));
        let loss = (&out * probe)?.sum_all()?;
        Ok((out, loss))
    });
}

/// Runs `run(ctx)` → (value, loss) both ways from the same dropout seed and compares the values
/// and the gradients of the loss for every variable of `varmap` (and `x`).
fn assert_same_as_composed(varmap: &VarMap, x: Option<&Var>, run: impl Fn(&mut Ctx) -> Result<(Tensor, Tensor)>) {
    compare_with_composed(varmap, &[], x, run);
}

/// [`assert_same_as_composed`], except that the variables under the `untouched` name prefixes
/// must get no gradient from either path.
fn compare_with_composed(varmap: &VarMap, untouched: &[&str], x: Option<&Var>, run: impl Fn(&mut Ctx) -> Result<(Tensor, Tensor)>) {
    let both = |fused: bool| {
        let mut rng = Rng::new(7);
        let mut ctx = if fused { Ctx::train(&mut rng) } else { Ctx::train_composed(&mut rng) };
        let (value, loss) = run(&mut ctx).unwrap();
        (value, loss.backward().unwrap())
    };
    let (fused_value, fused_grads) = both(true);
    let (composed_value, composed_grads) = both(false);
    assert_close(&fused_value, &composed_value, 1e-5, "output");
    let vars = varmap.data().lock().unwrap();
    let named = vars.iter().map(|(name, var)| (name.as_str(), var)).chain(x.map(|x| ("input", x)));
    for (name, var) in named {
        if untouched.iter().any(|prefix| name.starts_with(prefix)) {
            assert!(fused_grads.get(var).is_none() && composed_grads.get(var).is_none(), "{name}: a gradient where the pass should not reach");
            continue;
        }
        let (Some(got), Some(want)) = (fused_grads.get(var), composed_grads.get(var)) else {
            panic!("{name}: no gradient from one of the paths");
        };
        assert_close(got, want, 1e-4, &format!("gradient of {name}"));
    }
}

/// Compares `a(x, ctx)` with `b(x, ctx)`, both run with the fused kernels, dropout 0: outputs
/// and the gradients of `x` and of every variable of `varmap` for the loss `Σ out ⊙ probe`.
fn assert_same_training_pass(varmap: &VarMap, x: &Var, a: impl Fn(&Tensor, &mut Ctx) -> Result<Tensor>, b: impl Fn(&Tensor, &mut Ctx) -> Result<Tensor>) {
    let run = |forward: &dyn Fn(&Tensor, &mut Ctx) -> Result<Tensor>| {
        let mut rng = Rng::new(7);
        let out = forward(x.as_tensor(), &mut Ctx::train(&mut rng)).unwrap();
        let probe = random(out.shape(), &mut Rng::new(3));
        let grads = (&out * probe).unwrap().sum_all().unwrap().backward().unwrap();
        (out, grads)
    };
    let ((out_a, grads_a), (out_b, grads_b)) = (run(&a), run(&b));
    assert_close(&out_a, &out_b, 1e-5, "output");
    let vars = varmap.data().lock().unwrap();
    for (name, var) in vars.iter().map(|(name, var)| (name.as_str(), var)).chain([("input", x)]) {
        let (Some(got), Some(want)) = (grads_a.get(var), grads_b.get(var)) else { panic!("{name}: no gradient from one of the passes") };
        assert_close(got, want, 1e-5, &format!("gradient of {name}"));
    }
}

/// 37 rows: a partial block of rows at the end.
const ROWS: usize = 37;

#[test]
fn products_match_candle_matmul_in_value_and_gradients() {
    let (x, w, g) = (random((ROWS, 48), &mut Rng::new(1)), random((64, 48), &mut Rng::new(2)), random((ROWS, 64), &mut Rng::new(3)));
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (xs, ws, gs) = (values(&x), values(&w), values(&g));
    let product = projection::product(ROWS, 48, 64, Operand::rows(&xs, 48), Operand::transposed(&ws, 48));
    let (dx, dw) = projection::product_grads(&gs, &xs, &ws, (ROWS, 48, 64));
    let want = [x.matmul(&w.t().unwrap()), g.matmul(&w), g.t().unwrap().matmul(&x)].map(Result::unwrap);
    for ((got, want), what) in [product, dx, dw].iter().zip(&want).zip(["x Wᵀ", "∂/∂x", "∂/∂W"]) {
        assert_close(&Tensor::from_slice(got, want.shape(), &Device::Cpu).unwrap(), want, 1e-5, what);
    }
    assert!(projection::product(0, 48, 64, Operand::rows(&[], 48), Operand::transposed(&ws, 48)).is_empty());
}

#[test]
fn layer_norm_matches_composed() {
    let (varmap, norm) = module(|vb| LayerNorm::load(vb.pp("ln"), 64, 1e-5));
    let x = Var::from_tensor(&random((ROWS, 64), &mut Rng::new(1))).unwrap();
    assert_matches_composed(&varmap, &x, |x, ctx| norm.forward(x, ctx));
}

#[test]
fn feed_forward_half_matches_composed_for_every_activation_with_and_without_dropout() {
    for (activation, dropout) in [("gelu", 0.0), ("gelu", 0.3), ("gelu_new", 0.1), ("relu", 0.2)] {
        let cfg = config(activation, dropout);
        let (varmap, layer) = module(|vb| Layer::load(vb, &cfg, 1.0));
        let x = Var::from_tensor(&random((ROWS, cfg.hidden_size), &mut Rng::new(1))).unwrap();
        assert_part_same_as_composed(&varmap, &["attention."], &x, |x, ctx| layer.feed_forward_half(x, ctx));
    }
}

#[test]
fn linear_activation_matches_composed_for_every_activation() {
    for activation in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
        let (varmap, linear) = module(|vb| Linear::load(vb.pp("dense"), 48, 64));
        let x = Var::from_tensor(&random((ROWS, 48), &mut Rng::new(1))).unwrap();
        assert_matches_composed(&varmap, &x, |x, ctx| linear.forward_activated(x, activation, ctx));
    }
}

#[test]
fn linear_activation_serves_inference_as_the_composed_ops_would() {
    for activation in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
        let (_varmap, linear) = module(|vb| Linear::load(vb.pp("dense"), 48, 64));
        let x = random((ROWS, 48), &mut Rng::new(1));
        let fused = linear.forward_activated(&x, activation, &Ctx::infer()).unwrap();
        assert_close(&fused, &activation.forward(&linear.forward(&x).unwrap()).unwrap(), 1e-5, "inference output");
    }
}

/// Three sequences of 11 positions, the second ending in two padding tokens, the third in five
/// → (mask, batch, pos).
fn ragged_mask() -> (AttentionMask, usize, usize) {
    let (batch, pos) = (3, 11);
    let keep: Vec<u8> = (0..batch * pos).map(|i| u8::from(i % pos < [pos, pos - 2, pos - 5][i / pos])).collect();
    (AttentionMask::new(&Tensor::from_vec(keep, (batch, pos), &Device::Cpu).unwrap()).unwrap(), batch, pos)
}

#[test]
fn attention_block_serves_inference_as_the_composed_ops_would() {
    let cfg = config("gelu", 0.1);
    let (_varmap, layer) = module(|vb| Layer::load(vb.pp("layer"), &cfg, 1.0));
    let (mask, batch, pos) = ragged_mask();
    let x = random((batch * pos, cfg.hidden_size), &mut Rng::new(1));
    let fused = layer.forward(&x, &mask, &mut Ctx::infer()).unwrap();
    let composed = layer.forward(&x, &mask, &mut Ctx::infer_composed()).unwrap();
    assert_close(&fused, &composed, 1e-5, "inference output (no dropout)");
}

/// Three tables (the last of one row, like BERT's token types), ids with repeats and rows no id
/// reads; the output rows a partial block.
fn lookup_terms() -> (Vec<Var>, Vec<Tensor>) {
    let mut rng = Rng::new(5);
    let tables: Vec<Var> = [(50, 16), (40, 16), (1, 16)].into_iter().map(|shape| Var::from_tensor(&random(shape, &mut rng)).unwrap()).collect();
    let ids: Vec<Tensor> = [50u32, 7, 1]
        .into_iter()
        .map(|n| {
            let ids: Vec<u32> = (0..ROWS).map(|_| rng.below(n as usize) as u32).collect();
            Tensor::from_vec(ids, ROWS, &Device::Cpu).unwrap()
        })
        .collect();
    (tables, ids)
}

#[test]
fn lookup_sum_gives_the_bits_of_composed_lookups_in_value_and_gradients() {
    let (tables, ids) = lookup_terms();
    for n_terms in [2, 3] {
        let terms: Vec<(&Tensor, &Tensor)> = tables.iter().map(Var::as_tensor).zip(&ids).take(n_terms).collect();
        let run = |fused: bool| {
            let mut rng = Rng::new(7);
            let ctx = if fused { Ctx::train(&mut rng) } else { Ctx::train_composed(&mut rng) };
            let out = sum_of_lookups(&terms, &ctx).unwrap();
            let probe = random(out.shape(), &mut Rng::new(3));
            let grads = (&out * probe).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Vec<f32>> = tables[..n_terms].iter().map(|t| grads.get(t).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
            (out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), grads)
        };
        assert_eq!(run(true), run(false), "{n_terms} tables");
    }
}

#[test]
fn lookup_sum_names_an_id_past_its_table() {
    let (tables, _) = lookup_terms();
    let error = crate::model::kernels::lookup_sum(&[tables[0].as_tensor(), tables[1].as_tensor()], vec![vec![0], vec![40]]).unwrap_err();
    assert!(error.to_string().contains("id 40 in a table of 40 rows"), "{error}");
}

#[test]
fn dropout_matches_composed() {
    let x = Var::from_tensor(&random((ROWS, 64), &mut Rng::new(1))).unwrap();
    assert_matches_composed(&VarMap::new(), &x, |x, ctx| ctx.dropout(x, 0.25));
}

#[test]
fn attention_block_matches_composed_with_padding_and_dropout() {
    for (act, dropout) in [("gelu", 0.0), ("gelu", 0.2), ("gelu_new", 0.1)] {
        let cfg = config(act, dropout);
        let (varmap, layer) = module(|vb| Layer::load(vb.pp("layer"), &cfg, 1.0));
        let (mask, batch, pos) = ragged_mask();
        let x = Var::from_tensor(&random((batch * pos, cfg.hidden_size), &mut Rng::new(1))).unwrap();
        assert_matches_composed(&varmap, &x, |x, ctx| layer.forward(x, &mask, ctx));
    }
}

#[test]
fn block_at_picked_rows_matches_full_block_read_there() {
    let cfg = config("gelu", 0.0);
    let (varmap, layer) = module(|vb| Layer::load(vb.pp("layer"), &cfg, 1.0));
    let (mask, batch, pos) = ragged_mask();
    let x = Var::from_tensor(&random((batch * pos, cfg.hidden_size), &mut Rng::new(1))).unwrap();
    // Unsorted, across all three sequences, as `picked_indices` of a masked batch never are; then
    // sorted, with the middle sequence (11 rows each) asking for no row at all.
    for rows in [&[12u32, 0, 5, 20, 32, 13][..], &[0, 5, 23, 30]] {
        let rows = Tensor::new(rows, &Device::Cpu).unwrap();
        assert_same_training_pass(
            &varmap,
            &x,
            |x, ctx| layer.forward_at(x, &mask, Some(&rows), ctx),
            |x, ctx| Ok(layer.forward(x, &mask, ctx)?.index_select(&rows, 0)?),
        );
    }
}

#[test]
fn block_at_picked_rows_matches_composed_with_dropout() {
    let cfg = config("gelu", 0.2);
    let (varmap, layer) = module(|vb| Layer::load(vb.pp("layer"), &cfg, 1.0));
    let (mask, batch, pos) = ragged_mask();
    let x = Var::from_tensor(&random((batch * pos, cfg.hidden_size), &mut Rng::new(1))).unwrap();
    let rows = Tensor::new(&[12u32, 0, 5, 20, 32, 13, 5], &Device::Cpu).unwrap();
    assert_matches_composed(&varmap, &x, |x, ctx| layer.forward_at(x, &mask, Some(&rows), ctx));
}

#[test]
fn attention_with_relative_position_bias_matches_composed_shared_and_per_sequence() {
    let mut cfg = config("gelu", 0.1);
    cfg.relative_attention_num_buckets = 8;
    cfg.relative_attention_max_distance = 6;
    let (batch, pos) = (3, 11);
    let contiguous: Vec<u32> = (0..batch * pos).map(|i| (i % pos) as u32).collect();
    // MAE-LM-like compacted rows: original positions with gaps, differing per sequence.
    let gapped: Vec<u32> = (0..batch * pos).map(|i| ((i % pos) * (1 + i / pos) + i / pos) as u32).collect();
    for (positions, padded) in [(contiguous.clone(), false), (contiguous, true), (gapped, true)] {
        let (varmap, (layer, bias)) = module(|vb| Ok((Layer::load(vb.pp("layer"), &cfg, 1.0)?, RelativePositionBias::load(&vb.pp("encoder"), &cfg)?.unwrap())));
        let keep: Vec<u8> = (0..batch * pos).map(|i| u8::from(!padded || i % pos < pos - 2 * (i / pos))).collect();
        let x = Var::from_tensor(&random((batch * pos, cfg.hidden_size), &mut Rng::new(1))).unwrap();
        let position_ids = Tensor::from_vec(positions.clone(), (batch, pos), &Device::Cpu).unwrap();
        assert_matches_composed(&varmap, &x, |x, ctx| {
            let mask = AttentionMask::new(&Tensor::from_vec(keep.clone(), (batch, pos), &Device::Cpu)?)?;
            layer.forward(x, &mask.with_position_bias(bias.forward(&position_ids)?)?, ctx)
        });
    }
}

#[test]
fn mlm_head_loss_matches_composed_in_value_gradients_and_predictions() {
    let cfg = config("gelu", 0.1);
    let (varmap, (head, embeddings)) = module(|vb| {
        let word = vb.get((cfg.vocab_size, cfg.hidden_size), "word")?;
        Ok((MlmHead::load(vb.pp("head"), &cfg, &word)?, word))
    });
    let x = Var::from_tensor(&random((ROWS, cfg.hidden_size), &mut Rng::new(1))).unwrap();
    let targets: Vec<u32> = (0..ROWS as u32).map(|i| (i * 7) % cfg.vocab_size as u32).collect();
    // Twice the loss: the incoming gradient must scale every gradient.
    assert_same_as_composed(&varmap, Some(&x), |ctx| {
        let (loss, _) = head.loss(&x, &embeddings, &targets, ctx)?;
        Ok((loss.clone(), (loss * 2.0)?))
    });
    let predictions = |ctx: Ctx| head.loss(&x, &embeddings, &targets, &ctx).unwrap().1;
    assert_eq!(predictions(Ctx::infer()), predictions(Ctx::infer_composed()));
    let beyond = [cfg.vocab_size as u32; ROWS];
    let error = head.loss(&x, &embeddings, &beyond, &Ctx::infer()).unwrap_err().to_string();
    assert!(error.contains("beyond"), "{error}");
}

#[test]
fn pretraining_steps_match_composed_for_both_objectives() {
    for (objective, buckets) in [(Objective::Mlm, 0), (Objective::MaeLm, 0), (Objective::Mlm, 16), (Objective::MaeLm, 16)] {
        let special = SpecialIds::REPDEF;
        let mut cfg = Preset::Tiny.model_config(60, &special, objective, MaskConfig::default());
        cfg.relative_attention_num_buckets = buckets;
        cfg.relative_attention_max_distance = 12;
        let (varmap, model) = module(|vb| PretrainingModel::load(vb, &cfg));
        let masker = Masker { config: MaskConfig::default(), special, vocab_size: 60, drop_picked: objective == Objective::MaeLm };
        let mut rng = Rng::new(5);
        // Four sequences of 24 tokens, the last two ending in padding.
        let rows: Vec<Vec<u32>> = (0..4).map(|r| (0..24).map(|t| if t >= 24 - 3 * r { 0 } else { 5 + rng.below(55) as u32 }).collect()).collect();
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let batch = masker.mask(&rows, &mut rng);
        assert_same_as_composed(&varmap, None, |ctx| {
            let loss = masked_token_loss(&model, &batch, ctx)?.loss;
            Ok((loss.clone(), loss))
        });
    }
}

/// exp and erf over spread-out values, and the reductions (sum, max, dot) over rows of them, as
/// the dispatched kernel loops (GELU, softmax and its gradient) use them.
struct KernelArithmetic<'a>(&'a [f32]);

impl crate::vectorize::Vectorized for KernelArithmetic<'_> {
    type Output = Vec<f32>;
    #[inline(always)]
    fn run(self) -> Vec<f32> {
        use super::simd::{dot, erf, exp, max, sum};
        let mapped: Vec<f32> = self.0.iter().map(|&x| exp(x) + erf(x) * x + x * x * 0.5 + 1.0).collect();
        let reductions = mapped.chunks(131).flat_map(|row| [sum(row), max(row), dot(row, &self.0[..row.len()])]);
        mapped.iter().copied().chain(reductions).collect()
    }
}

#[test]
fn the_dispatched_loop_gives_the_same_bits_as_the_baseline_one() {
    use crate::vectorize::Vectorized;
    let xs: Vec<f32> = (0..4099).map(|i| (i as f32 * 0.618_034).sin() * 30.0).collect();
    let dispatched = crate::vectorize::dispatch(KernelArithmetic(&xs));
    let baseline = KernelArithmetic(&xs).run();
    let same = dispatched.iter().zip(&baseline).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "a vectorised path changed the arithmetic");
}
