//! Downstream fine-tuning (DESIGN §1, claim 4): a pretrained encoder plus a classification or
//! regression head, trained on a labelled TSV task (SST-2, CoLA, RTE and STS-B are bundled) over
//! several seeds and a learning-rate grid, with the task's dev score per epoch, the median over
//! seeds, the chance level, and the effective rank of the encoder before and after.

mod batching;
mod classifier;
mod grid;
pub mod metrics;
mod ranks;
mod results;
mod run;
mod tasks;

pub use batching::{encode, Encoded};
pub use classifier::{task_loss, Classifier};
pub use grid::{finetune_grid, render_grid, GridPoint, GridSummary, DEFAULT_LR_GRID, GRID_FILE};
pub use results::{render, EpochRow, FinetuneOutcome, FinetuneSummary, SeedResult, RESULTS_FILE, SUMMARY_FILE};
pub use run::{finetune, FinetuneConfig, FinetuneRequest, DEFAULT_TRAIN_EXAMPLES};
pub use tasks::{read_tsv, Example, Format, Head, Labels, Splits, Task, BUNDLED_TASKS};
