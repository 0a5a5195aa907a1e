//! Building blocks shared by every module of the network: linear layers, LayerNorm, softmax,
//! dropout, activations, and the forward context that says whether we are training.
//!
//! candle's fused `layer_norm`/`softmax_last_dim` kernels have no backward pass (DESIGN §6):
//! gradients through them are silently cut. So in `Mode::Train` these blocks use compositions of
//! differentiable primitives, and the fused kernels only where no gradient is needed.

use super::taps::{Recorder, Tap};
use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

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
}

impl<'a> Ctx<'a> {
    pub fn infer() -> Self {
        Ctx { mode: Mode::Infer, recorder: None }
    }

    pub fn train(rng: &'a mut Rng) -> Self {
        Ctx { mode: Mode::Train(rng), recorder: None }
    }

    pub fn with_recorder(mut self, recorder: &'a mut dyn Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Hands `hidden` (`[batch, pos, d_model]`) to the recorder if it wants this tap.
    pub fn record(&mut self, tap: Tap, hidden: &Tensor) -> Result<()> {
        match self.recorder.as_deref_mut() {
            Some(recorder) if recorder.wants(tap) => recorder.record(tap, hidden),
            _ => Ok(()),
        }
    }

    fn training(&self) -> bool {
        matches!(self.mode, Mode::Train(_))
    }

    /// Inverted dropout with a mask from repdef's seeded generator (candle's CPU RNG cannot be seeded).
    pub fn dropout(&mut self, xs: &Tensor, p: f64) -> Result<Tensor> {
        let Mode::Train(rng) = &mut self.mode else { return Ok(xs.clone()) };
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        let scale = (1.0 / (1.0 - p)) as f32;
        let mask: Vec<f32> = (0..xs.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { scale }).collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?;
        Ok(xs.mul(&mask)?)
    }

    pub fn softmax_last_dim(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(if self.training() {
            candle_nn::ops::softmax(xs, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(xs)?
        })
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
        if !ctx.training() {
            return Ok(candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps as f32)?);
        }
        let mean = xs.mean_keepdim(D::Minus1)?;
        let centred = xs.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
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

/// `[batch, pos]` 1/0 mask → additive `[batch, 1, 1, pos]` mask (0 or a large negative).
pub fn additive_attention_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let (batch, pos) = attention_mask.dims2()?;
    let blocked = (attention_mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * -1e9)?;
    Ok(blocked.reshape((batch, 1, 1, pos))?)
}
