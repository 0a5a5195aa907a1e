//! Tap points: named places in the forward pass whose hidden states can be recorded.
//!
//! Names follow TransformerLens (DESIGN §4): `hook_full_embed` is the embedding output after its
//! LayerNorm (HF `hidden_states[0]`), `blocks.{i}.hook_normalized_resid_post` is block `i`'s output
//! (HF `hidden_states[i+1]`); the MAE-LM decoder's taps carry a `decoder.` prefix.

use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tap {
    FullEmbed,
    BlockOutput(usize),
    DecoderFullEmbed,
    DecoderBlockOutput(usize),
}

impl Tap {
    /// The encoder taps of an `n_layers` model, in forward order (embedding output first).
    pub fn encoder_taps(n_layers: usize) -> Vec<Tap> {
        std::iter::once(Tap::FullEmbed).chain((0..n_layers).map(Tap::BlockOutput)).collect()
    }

    /// Position in HF's `hidden_states` tuple, for encoder taps.
    pub fn hf_index(self) -> Option<usize> {
        match self {
            Tap::FullEmbed => Some(0),
            Tap::BlockOutput(i) => Some(i + 1),
            _ => None,
        }
    }
}

impl fmt::Display for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tap::FullEmbed => write!(f, "hook_full_embed"),
            Tap::BlockOutput(i) => write!(f, "blocks.{i}.hook_normalized_resid_post"),
            Tap::DecoderFullEmbed => write!(f, "decoder.hook_full_embed"),
            Tap::DecoderBlockOutput(i) => write!(f, "decoder.blocks.{i}.hook_normalized_resid_post"),
        }
    }
}

impl FromStr for Tap {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (decoder, rest) = match s.strip_prefix("decoder.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if rest == "hook_full_embed" {
            return Ok(if decoder { Tap::DecoderFullEmbed } else { Tap::FullEmbed });
        }
        let block = rest.strip_prefix("blocks.").and_then(|r| r.strip_suffix(".hook_normalized_resid_post")).and_then(|i| i.parse::<usize>().ok());
        match block {
            Some(i) if decoder => Ok(Tap::DecoderBlockOutput(i)),
            Some(i) => Ok(Tap::BlockOutput(i)),
            None => bail!("unknown tap {s:?} (expected hook_full_embed, blocks.N.hook_normalized_resid_post, or the same under decoder.)"),
        }
    }
}

/// Receives hidden states at tap points during a forward pass.
pub trait Recorder {
    /// Whether this tap is wanted (lets the model skip work for unwanted taps).
    fn wants(&self, tap: Tap) -> bool;
    /// `hidden`: `[batch, pos, d_model]`.
    fn record(&mut self, tap: Tap, hidden: &Tensor) -> Result<()>;
}

/// A recorder that keeps the tensors, optionally only for a set of taps.
#[derive(Default)]
pub struct TapCache {
    filter: Option<Vec<Tap>>,
    pub tensors: BTreeMap<Tap, Tensor>,
}

impl TapCache {
    pub fn only(taps: Vec<Tap>) -> Self {
        TapCache { filter: Some(taps), tensors: BTreeMap::new() }
    }
}

impl Recorder for TapCache {
    fn wants(&self, tap: Tap) -> bool {
        self.filter.as_ref().is_none_or(|f| f.contains(&tap))
    }

    fn record(&mut self, tap: Tap, hidden: &Tensor) -> Result<()> {
        self.tensors.insert(tap, hidden.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_round_trip() {
        for tap in [Tap::FullEmbed, Tap::BlockOutput(3), Tap::DecoderFullEmbed, Tap::DecoderBlockOutput(1)] {
            assert_eq!(tap.to_string().parse::<Tap>().unwrap(), tap);
        }
        assert_eq!("blocks.0.hook_normalized_resid_post".parse::<Tap>().unwrap(), Tap::BlockOutput(0));
        assert!("blocks.x.hook_normalized_resid_post".parse::<Tap>().is_err());
        assert!("hook_resid_pre".parse::<Tap>().is_err());
    }
}
