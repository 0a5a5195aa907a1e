//! Text → token ids → packed sequences → batches → masked batches.

pub mod batches;
pub mod corpus;
pub mod documents;
pub mod interleave;
pub mod masking;
pub mod model_tokenizer;
pub mod packing;
pub mod sources;
pub mod textfile;
pub mod tokenizer;
