//! The `repdef` binary: parse arguments, run, print the error chain once, exit 1 on a
//! regression found by `check` and 2 on any other failure.

use clap::Parser;

fn main() {
    repdef::panic_guard::install_quiet_hook();
    pin_thread_count();
    let cli = repdef::cli::Cli::parse();
    if let Err(error) = repdef::cli::run(cli) {
        // One line: candle errors may carry a multi-line backtrace after their message.
        let chain: Vec<String> = error.chain().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(repdef::cli::exit_code(&error));
    }
}

/// Fixes the worker-thread count once. candle looks it up at every matmul and every kernel
/// launch, and without `RAYON_NUM_THREADS` that lookup parses `/proc/cpuinfo` (hundreds of times
/// per training step). The value is candle's own default (the physical cores), now also the
/// size of rayon's pool, which both share.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
}
