//! The analysis maths: streamed Gram accumulators, spectra, effective-rank
//! estimators and the `[MASK]`-vs-real subspace measures (DESIGN §1).
//!
//! Knows nothing about candle or any tensor library: inputs are ndarray
//! views of f32/f64 hidden states, so everything here is testable with
//! plain arrays. Dense linear algebra goes through `linalg` (faer, or LAPACK
//! with the `lapack` feature).

mod estimators;
#[cfg(test)]
mod golden_tests;
mod gram;
mod linalg;
mod spectrum;
mod subspace;
#[cfg(test)]
pub(crate) mod testutil;

pub use estimators::{entropy_rank, numerical_rank, participation_ratio, stable_rank, var_rank, Estimator, VAR_RANK_TOLERANCE};
pub use gram::{GramAccumulator, GramParts};
#[cfg(feature = "lapack")]
pub use linalg::eigenvalues_lapack;
pub use linalg::{sym_eigenvalues, EigenSolver};
pub use spectrum::Spectrum;
pub use subspace::{compare_subspaces, SubspaceOptions, SubspaceReport};
