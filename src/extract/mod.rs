//! Running encoders over data and feeding Gram accumulators, one per
//! (model, condition, group, layer); hidden states are never stored.

pub mod conditions;
mod runner;
pub mod sequences;

pub use conditions::{Condition, Group};
pub use runner::{accumulate, accumulate_condition, extract, AccumulatorKey, Accumulators, ModelRun};
