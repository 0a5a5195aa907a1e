//! Building blocks shared by every module of the network: linear layers, LayerNorm, softmax,
//! dropout, activations, and the forward context that says whether we are training.
//!
//! candle's fused `layer_norm`/`softmax_last_dim` kernels have no backward pass (DESIGN §6):
//! gradients through them are silently cut. So they serve inference only; training on the CPU
//! runs repdef's own kernels with hand-written backward (`kernels`), and elsewhere (or as the
//! tests' reference) compositions of differentiable candle primitives.

use super::kernels::{self, DropoutMask};
use super::taps::{Recorder, Tap};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;
use std::sync::Arc;

/// Whether a forward pass may be differentiated (and applies dropout) or is inference only.
pub enum Mode<'a> {
    /// Differentiable ops; dropout masks drawn from this generator.
    Train(&'a mut Rng),
    /// Fused kernels, no dropout.
    Infer,
}

/// Everything a forward pass needs besides inputs and weights.
pub struct Ctx<'a> {
    pub mode: Mode<'a>,
    pub recorder: Option<&'a mut dyn Recorder>,
    /// Whether passes on the CPU run the fused kernels (off only for the tests' composed
    /// reference).
    kernels: bool,
}

impl<'a> Ctx<'a> {
    pub fn infer() -> Self {
        Ctx { mode: Mode::Infer, recorder: None, kernels: true }
    }

    /// Inference through compositions of candle primitives: the reference for the kernels.
    #[cfg(test)]
    pub fn infer_composed() -> Self {
        Ctx { mode: Mode::Infer, recorder: None, kernels: false }
    }

    pub fn train(rng: &'a mut Rng) -> Self {
        super::heap::keep_freed_memory();
        Ctx { mode: Mode::Train(rng), recorder: None, kernels: true }
    }

    /// Training through compositions of candle primitives: the reference for the kernels.
    #[cfg(test)]
    pub fn train_composed(rng: &'a mut Rng) -> Self {
        Ctx { mode: Mode::Train(rng), recorder: None, kernels: false }
    }

    pub fn with_recorder(mut self, recorder: &'a mut dyn Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Hands `hidden` (`[batch·pos, d_model]` rows of the batch of `mask`) to the recorder as
    /// `[batch, pos, d_model]` if it wants this tap.
    pub fn record(&mut self, tap: Tap, hidden: &Tensor, mask: &AttentionMask) -> Result<()> {
        match self.recorder.as_deref_mut() {
            Some(recorder) if recorder.wants(tap) => recorder.record(tap, &hidden.reshape((mask.batch, mask.pos, ()))?),
            _ => Ok(()),
        }
    }

    pub(super) fn training(&self) -> bool {
        matches!(self.mode, Mode::Train(_))
    }

    /// Whether a pass over `xs` runs the fused kernels (CPU only). In inference nothing tracks
    /// the ops, so what a kernel keeps for backward is dropped with it right after the forward.
    pub(super) fn fused(&self, xs: &Tensor) -> bool {
        self.kernels && xs.device().is_cpu()
    }

    /// A dropout mask for `n` elements, drawn from repdef's seeded generator (candle's CPU RNG
    /// cannot be seeded); `None` in inference or when `p` is 0.
    pub(super) fn dropout_mask(&mut self, n: usize, p: f64) -> Option<Arc<DropoutMask>> {
        match &mut self.mode {
            Mode::Train(rng) => DropoutMask::draw(rng, n, p),
            Mode::Infer => None,
        }
    }

    /// Inverted dropout.
    pub fn dropout(&mut self, xs: &Tensor, p: f64) -> Result<Tensor> {
        let Some(mask) = self.dropout_mask(xs.elem_count(), p) else { return Ok(xs.clone()) };
        Ok(if self.fused(xs) { kernels::dropout(xs, mask)? } else { xs.mul(&mask.to_tensor(xs.shape(), xs.device())?)? })
    }

    pub fn softmax_last_dim(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(if self.training() { candle_nn::ops::softmax(xs, D::Minus1)? } else { candle_nn::ops::softmax_last_dim(xs)? })
    }
}

/// `y = x Wᵀ + b` over the last dimension; weights `[out, in]` as in PyTorch.
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(vb: VarBuilder, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Linear { weight: vb.get((d_out, d_in), "weight")?, bias: vb.get(d_out, "bias")? })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (d_out, d_in) = self.weight.dims2()?;
        let mut out_shape = xs.dims().to_vec();
        let rows = xs.elem_count() / d_in;
        *out_shape.last_mut().expect("input has at least one dimension") = d_out;
        let ys = xs.reshape((rows, d_in))?.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        Ok(ys.reshape(out_shape)?)
    }

    /// `activation(x Wᵀ + b)` for `xs`: `[rows, in]`.
    pub fn forward_activated(&self, xs: &Tensor, activation: Activation, ctx: &Ctx) -> Result<Tensor> {
        if ctx.fused(xs) {
            return Ok(kernels::linear_activation(xs, &self.weight, &self.bias, activation)?);
        }
        activation.forward(&self.forward(xs)?)
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

/// LayerNorm over the last dimension (HF names `weight`/`bias`, old checkpoints' `gamma`/`beta`
/// are renamed by `checkpoint`).
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: vb.get(d, "weight")?, bias: vb.get(d, "bias")?, eps })
    }

    pub fn forward(&self, xs: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        if ctx.fused(xs) {
            return Ok(kernels::layer_norm(xs, &self.weight, &self.bias, self.eps)?);
        }
        if !ctx.training() {
            return Ok(candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps as f32)?);
        }
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }

    /// The weight, bias and ε.
    pub fn params(&self) -> (&Tensor, &Tensor, f64) {
        (&self.weight, &self.bias, self.eps)
    }

    /// The post-LN residual step `LayerNorm(dropout(linear(xs)) + residual)`, all `[rows, ·]`, by
    /// composed candle ops (on the CPU, the blocks' fused ops include it).
    pub fn forward_residual(&self, linear: &Linear, xs: &Tensor, residual: &Tensor, dropout: f64, ctx: &mut Ctx) -> Result<Tensor> {
        let projected = ctx.dropout(&linear.forward(xs)?, dropout)?;
        self.forward(&(projected + residual)?, ctx)
    }
}

/// The `hidden_act` values of HF configs that repdef implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (HF `"gelu"`).
    Gelu,
    /// tanh approximation (HF `"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => bail!("hidden_act {other:?} is not implemented (gelu, gelu_new, gelu_pytorch_tanh, relu)"),
        })
    }

    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => xs.gelu_erf()?,
            Activation::GeluTanh => xs.gelu()?,
            Activation::Relu => xs.relu()?,
        })
    }
}

/// What each query of a batch may attend to: the padding mask, plus the relative-position bias
/// when the model has one, as one additive term of the attention logits.
pub struct AttentionMask {
    pub batch: usize,
    pub pos: usize,
    /// Broadcastable to `[batch, n_heads, pos, pos]` (query i, key j): `[batch, 1, 1, pos]` (0 for
    /// real keys, a large negative for padding) without a position bias; with one,
    /// `[1 or batch, n_heads, pos, pos]`.
    pub additive: Tensor,
}

impl AttentionMask {
    /// From a `[batch, pos]` 1/0 mask.
    pub fn new(attention_mask: &Tensor) -> Result<Self> {
        let (batch, pos) = attention_mask.dims2()?;
        let additive = (attention_mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * -1e9)?.reshape((batch, 1, 1, pos))?;
        Ok(AttentionMask { batch, pos, additive })
    }

    /// Adds a position bias `[1 or batch, n_heads, pos, pos]`; without padding the bias alone
    /// is the additive term (no per-sequence copy of it).
    pub fn with_position_bias(self, bias: Tensor) -> Result<Self> {
        let padded = self.additive.min_all()?.to_scalar::<f32>()? < 0.0;
        let additive = if padded { bias.broadcast_add(&self.additive)? } else { bias };
        Ok(AttentionMask { additive, ..self })
    }
}
