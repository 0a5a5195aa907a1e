//! The `repdef` binary: parse arguments, run, print the error chain once, exit 1 on a
//! regression found by `check` and 2 on any other failure.

use clap::Parser;

fn main() {
    end_quietly_on_a_closed_pipe();
    repdef::panic_guard::install_quiet_hook();
    pin_thread_count();
    repdef::model::heap::keep_freed_memory();
    let cli = repdef::cli::Cli::parse();
    if let Err(error) = repdef::cli::run(cli) {
        // One line: candle errors may carry a multi-line backtrace after their message.
        let chain: Vec<String> = error.chain().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(repdef::cli::exit_code(&error));
    }
}

/// `repdef inspect DIR | head -1`: ends the process when its reader goes away, as `cat` does,
/// instead of panicking on the failed write (Rust ignores SIGPIPE, so every `println!` after
/// the reader closed would panic with exit code 101).
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Fixes the worker-thread count once, and leaves the work to one pool. candle looks the count up
/// at every matmul and every kernel launch, and without `RAYON_NUM_THREADS` that lookup parses
/// `/proc/cpuinfo` (hundreds of times per training step). The value is candle's own default (the
/// physical cores), now also the size of rayon's pool, which runs repdef's kernels and the
/// matrix products. candle's elementwise ops have a second pool of their own (cores − 1 threads
/// that spin between ops), which competed with rayon's for the same cores: with
/// `CANDLE_NUM_THREADS=1` those ops run on the calling thread, and a training step is ~5% faster
/// (bench/README.md).
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
