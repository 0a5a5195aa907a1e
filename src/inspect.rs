//! `repdef inspect`: what a model or run directory holds: config, parameter counts, pretraining
//! head, tokenizer, tensors, and (for repdef runs) the training state.

use crate::checkpoint::{read_model_weights, CONFIG_FILE};
use crate::config::ModelConfig;
use crate::data::model_tokenizer::model_tokenizer;
use crate::train::state::{TrainState, TRAIN_STATE_FILE};
use anyhow::Result;
use candle_core::Device;
use std::path::Path;

pub fn inspect(dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
    let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
    let (tensors, weights_path) = read_model_weights(dir, &Device::Cpu)?;
    println!("{}", dir.display());
    println!(
        "  model: {} ({}), {} layers × d_model {}, {} heads, d_mlp {}, vocab {}, max positions {}",
        config.model_type,
        config.objective(),
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        config.vocab_size,
        config.max_position_embeddings
    );
    if config.is_plain_hf() {
        println!("  positions: learned absolute (a plain HF {} encoder)", config.model_type);
    } else {
        println!(
            "  positions: learned absolute + relative-position attention bias ({} buckets, max distance {}); \
             not a plain HF BertModel: transformers cannot load this encoder as one",
            config.relative_attention_num_buckets, config.relative_attention_max_distance
        );
    }
    if let Some(repdef) = &config.repdef {
        println!(
            "  repdef: decoder layers {}{}, mask prob {}, policy {:?}, keep-mask fraction {}",
            repdef.decoder_layers,
            if repdef.decoder_relative_attention { " (own relative-position bias)" } else { "" },
            repdef.mask.prob,
            repdef.mask.policy,
            repdef.mask.keep_mask_frac
        );
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let count = |pred: &dyn Fn(&str) -> bool| -> usize { names.iter().filter(|n| pred(n)).map(|n| tensors[*n].elem_count()).sum() };
    println!(
        "  parameters: {} total, {} encoder, {} decoder ({})",
        count(&|_| true),
        count(&|n| n.starts_with("bert.")),
        count(&|n| n.starts_with("decoder.")),
        weights_path.display()
    );
    let has_mlm_head = names.iter().any(|n| n.starts_with("cls.predictions."));
    let has_decoder = names.iter().any(|n| n.starts_with("decoder."));
    let head = match (has_mlm_head, has_decoder) {
        (true, true) => "MAE-LM decoder and MLM head: masked-token loss can be measured",
        (true, false) => "MLM head (cls.predictions / lm_head): masked-token loss can be measured",
        (false, _) => "none stored: encoder only, masked-token loss cannot be measured",
    };
    println!("  pretraining head: {head}");
    match model_tokenizer(dir, tokenizer) {
        Ok((tok, source)) => println!("  tokenizer: {} ({} tokens)", source.display(), tok.get_vocab_size(true)),
        Err(e) => println!("  tokenizer: {e:#}"),
    }
    println!("  tensors:");
    for name in names {
        println!("    {name:<60} {:?}", tensors[name].dims());
    }
    let state_path = dir.join(TRAIN_STATE_FILE);
    if state_path.exists() {
        let state: TrainState = crate::fsutil::read_json(&state_path)?;
        println!("  training: step {}, {} tokens seen, {:.0} s", state.step, state.tokens_seen, state.elapsed_s);
        if let Some(eval) = state.last_eval {
            println!("  last holdout evaluation: loss {:.4}, masked-token accuracy {:.3}", eval.loss, eval.accuracy);
        }
    }
    Ok(())
}
