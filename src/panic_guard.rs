//! Turning a dependency's panic on malformed input into an error: the `tokenizers` crate panics
//! on some damaged `tokenizer.json` files instead of returning an error. The binary installs a
//! hook that keeps such caught panics off stderr, so the user sees one clean error line.

use anyhow::{anyhow, Result};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Whether this thread is inside [`catch_panics`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Makes the panic hook silent for panics that [`catch_panics`] turns into errors.
pub fn install_quiet_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CATCHING.with(Cell::get) {
            default(info)
        }
    }));
}

/// Runs `f`; a panic inside it becomes an error carrying the panic's message.
pub fn catch_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outer = CATCHING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    outcome.unwrap_or_else(|payload| {
        let message = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
        Err(anyhow!("malformed input ({})", message.unwrap_or_else(|| "a dependency panicked".into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_results_pass_through() {
        let error = catch_panics::<()>(|| panic!("Helper")).unwrap_err().to_string();
        assert_eq!(error, "malformed input (Helper)");
        assert_eq!(catch_panics(|| Ok(3)).unwrap(), 3);
        assert!(catch_panics::<()>(|| Err(anyhow!("plain"))).unwrap_err().to_string() == "plain");
        assert!(!CATCHING.with(Cell::get), "the flag is reset");
    }
}
