//! Text → token ids → packed sequences → batches → masked batches.

pub mod batches;
pub mod corpus;
pub mod masking;
pub mod packing;
pub mod tokenizer;
