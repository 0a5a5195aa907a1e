//! Pretraining: the loop and its pieces (schedule, optimiser, loss, evaluation, metrics, state).

pub mod curve;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod optimizer;
mod resume;
mod run;
pub mod schedule;
pub mod state;

pub use resume::saved_config;
pub use run::{train, TrainOutcome, TrainRequest};
