//! What users came for: verdicts on the paper's claims, the regression check, figures and the
//! report. Works on the tidy tables only; never sees a tensor library type.

pub mod check;
pub mod verdicts;
