//! The `repdef` binary: parse arguments, run, print the error chain once, exit 1 on a
//! regression found by `check` and 2 on any other failure.

use clap::Parser;

fn main() {
    repdef::panic_guard::install_quiet_hook();
    pin_thread_count();
    keep_freed_buffers();
    let cli = repdef::cli::Cli::parse();
    if let Err(error) = repdef::cli::run(cli) {
        // One line: candle errors may carry a multi-line backtrace after their message.
        let chain: Vec<String> = error.chain().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(repdef::cli::exit_code(&error));
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

/// Keeps freed buffers in the heap for reuse. Every forward pass allocates and frees the same
/// multi-MiB activations; by default glibc serves each from a fresh `mmap` or trims the heap
/// after its `free`, so each batch pays page faults and zero-filling pages again (about a fifth
/// of an analysis, bench/ANALYZE.md). Both limits must be set: setting one turns off glibc's
/// own adaptation of the other. Peak memory is unchanged (what was freed is reused, not added).
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
