//! Bundled data (`fixtures/`: the corpus, its tokenizer, the GLUE tasks) is named by paths
//! relative to the repository root. They are found from the working directory when repdef runs
//! there, else in the repository the binary was built from, so `reproduce` and `finetune --task`
//! work from any directory of the machine that built it.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `relative` (a path under the repository root) in the working directory if it is there, else
/// in the repository repdef was built in; an error naming both places when neither has it.
pub fn bundled(relative: &str) -> Result<PathBuf> {
    let here = PathBuf::from(relative);
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    match (here.exists(), built.exists()) {
        (true, _) => Ok(here),
        (false, true) => Ok(built),
        (false, false) => {
            bail!("{relative}: bundled data not found in the working directory or in {} (run repdef from the repository's root)", env!("CARGO_MANIFEST_DIR"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_files_are_found_from_the_repository_and_missing_ones_named() {
        let sst2 = bundled("fixtures/sst2/sst2.toml").unwrap();
        assert!(sst2.is_file(), "{}", sst2.display());
        let missing = bundled("fixtures/nothing-here.tsv").unwrap_err().to_string();
        assert!(missing.contains("fixtures/nothing-here.tsv: bundled data not found") && missing.contains("repository's root"), "{missing}");
    }
}
