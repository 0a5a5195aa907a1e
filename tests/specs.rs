//! Every spec shipped in `analyses/` parses (unknown keys are rejected, so this catches typos).

use repdef::spec::AnalysisSpec;

#[test]
fn shipped_specs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("analyses");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            AnalysisSpec::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 1);
}
