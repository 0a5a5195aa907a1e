//! Model references `hf:ORG/NAME[@REVISION]`, resolved offline in the local HuggingFace hub
//! cache (`models--ORG--NAME/snapshots/<commit>/`, with branches and tags in `refs/`). Nothing is
//! downloaded: a model that is not in the cache is an error saying where repdef looked.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

/// The prefix that marks a model reference as a hub id rather than a path.
pub const HUB_PREFIX: &str = "hf:";

/// The directory a model reference names: a path as given, or the cached snapshot of an `hf:` id.
pub fn resolve_model_dir(reference: &Path) -> Result<PathBuf> {
    resolve_with_env(reference, |name| std::env::var_os(name))
}

/// `resolve_model_dir` with the environment read through `env` (for tests).
fn resolve_with_env(reference: &Path, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let Some(id) = reference.to_str().and_then(|text| text.strip_prefix(HUB_PREFIX)) else {
        return Ok(reference.to_path_buf());
    };
    let (cache, decided_by) = hub_cache(&env)?;
    snapshot_dir(&cache, id)
        .with_context(|| format!("{HUB_PREFIX}{id}: not in the HuggingFace cache {} ({decided_by}; repdef never downloads)", cache.display()))
}

/// The hub cache `huggingface_hub` uses, and what chose it: `HF_HUB_CACHE`, else `HF_HOME/hub`,
/// else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
fn hub_cache(env: &impl Fn(&str) -> Option<OsString>) -> Result<(PathBuf, &'static str)> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(cache) = set("HF_HUB_CACHE") {
        return Ok((cache, "from HF_HUB_CACHE"));
    }
    if let Some(home) = set("HF_HOME") {
        return Ok((home.join("hub"), "from HF_HOME"));
    }
    if let Some(xdg) = set("XDG_CACHE_HOME") {
        return Ok((xdg.join("huggingface").join("hub"), "from XDG_CACHE_HOME"));
    }
    let home = set("HOME").context("cannot locate the HuggingFace cache: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set")?;
    Ok((home.join(".cache").join("huggingface").join("hub"), "the default; set HF_HUB_CACHE or HF_HOME to look elsewhere"))
}

/// The snapshot of `id` (`ORG/NAME[@REVISION]`, revision a branch, tag or 40-digit commit;
/// `main` when absent) in `cache`.
fn snapshot_dir(cache: &Path, id: &str) -> Result<PathBuf> {
    let (repo, revision) = id.split_once('@').unwrap_or((id, "main"));
    let parts: Vec<&str> = repo.split('/').collect();
    ensure!(
        (1..=2).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."),
        "{repo:?} is not a hub model id (expected ORG/NAME or NAME)"
    );
    ensure!(!revision.is_empty() && !revision.contains(".."), "{revision:?} is not a revision");
    let repo_dir = cache.join(format!("models--{}", parts.join("--")));
    if !repo_dir.is_dir() {
        bail!("no {}", repo_dir.display());
    }
    let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        let reference = repo_dir.join("refs").join(revision);
        let text = std::fs::read_to_string(&reference).with_context(|| format!("no revision {revision:?}: cannot read {}", reference.display()))?;
        text.trim().to_string()
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        bail!("revision {revision:?} is commit {commit}, but {} does not exist", snapshot.display());
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A hub cache under `root` holding `models--org--tiny` at `COMMIT`, which `main` points at.
    fn cache_with_model(root: &Path) -> PathBuf {
        let repo = root.join("models--org--tiny");
        std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), format!("{COMMIT}\n")).unwrap();
        repo.join("snapshots").join(COMMIT)
    }

    fn env_of<'a>(vars: &'a [(&'a str, &'a Path)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_os_str().to_owned())
    }

    #[test]
    fn paths_pass_through_and_hub_ids_resolve_to_their_snapshot() {
        let root = tempfile::tempdir().unwrap();
        let snapshot = cache_with_model(root.path());
        let vars = [("HF_HUB_CACHE", root.path())];
        let env = env_of(&vars);
        assert_eq!(resolve_with_env(Path::new("runs/mlm"), &env).unwrap(), PathBuf::from("runs/mlm"));
        assert_eq!(resolve_with_env(Path::new("hf:org/tiny"), &env).unwrap(), snapshot);
        assert_eq!(resolve_with_env(Path::new("hf:org/tiny@main"), &env).unwrap(), snapshot);
        assert_eq!(resolve_with_env(Path::new(&format!("hf:org/tiny@{COMMIT}")), &env).unwrap(), snapshot);
    }

    #[test]
    fn the_cache_follows_hf_home_xdg_and_home() {
        let root = tempfile::tempdir().unwrap();
        let hub = root.path().join("hub");
        let snapshot = cache_with_model(&hub);
        assert_eq!(resolve_with_env(Path::new("hf:org/tiny"), env_of(&[("HF_HOME", root.path())])).unwrap(), snapshot);
        let xdg = root.path().join("xdg");
        let snapshot = cache_with_model(&xdg.join("huggingface/hub"));
        assert_eq!(resolve_with_env(Path::new("hf:org/tiny"), env_of(&[("XDG_CACHE_HOME", &xdg)])).unwrap(), snapshot);
        let home = root.path().join("home");
        let snapshot = cache_with_model(&home.join(".cache/huggingface/hub"));
        assert_eq!(resolve_with_env(Path::new("hf:org/tiny"), env_of(&[("HOME", &home)])).unwrap(), snapshot);
    }

    #[test]
    fn absent_models_and_revisions_say_where_repdef_looked() {
        let root = tempfile::tempdir().unwrap();
        cache_with_model(root.path());
        let vars = [("HF_HUB_CACHE", root.path())];
        let env = env_of(&vars);
        let error = |id: &str| format!("{:#}", resolve_with_env(Path::new(id), &env).unwrap_err());
        let missing = error("hf:org/other");
        assert!(missing.contains("models--org--other") && missing.contains("HF_HUB_CACHE") && missing.contains("never downloads"), "{missing}");
        assert!(error("hf:org/tiny@v2").contains("no revision \"v2\""));
        assert!(error(&format!("hf:org/tiny@{}", "f".repeat(40))).contains("does not exist"));
        assert!(error("hf:org/../tiny").contains("not a hub model id"));
        assert!(error("hf:a/b/c").contains("not a hub model id"));
    }
}
