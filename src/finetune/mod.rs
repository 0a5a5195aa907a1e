//! Downstream fine-tuning (DESIGN §1, claim 4): a pretrained encoder plus a classification head,
//! trained on a labelled TSV task (SST-2 is bundled) over several seeds, with dev accuracy per
//! epoch, the median over seeds, and the effective rank of the encoder before and after.

mod batching;
mod classifier;
mod ranks;
mod results;
mod run;
mod tasks;

pub use batching::{encode, Encoded};
pub use classifier::{classification_loss, Classifier};
pub use results::{render, EpochRow, FinetuneOutcome, FinetuneSummary, SeedResult, RESULTS_FILE, SUMMARY_FILE};
pub use run::{finetune, FinetuneConfig, FinetuneRequest, DEFAULT_TRAIN_EXAMPLES};
pub use tasks::{read_tsv, Example, Splits, Task};
