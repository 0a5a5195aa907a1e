//! Running encoders over data and feeding Gram accumulators, one per
//! (model, condition, group, layer); hidden states are never stored.

pub mod conditions;
pub mod head_eval;
mod runner;
pub mod sequences;

pub use conditions::{Condition, Group};
pub use head_eval::HeadEvaluation;
pub use runner::{accumulate, accumulate_condition, extract, AccumulatorKey, Accumulators, Extraction, ModelRun};
