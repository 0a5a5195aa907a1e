//! Keeps freed memory in the process heap, for training and analysis alike.
//!
//! A training step or an analysis batch allocates and frees the same multi-MiB buffers every time
//! (candle allocates every op's output and every gradient; the kernels their activations). By
//! default glibc serves blocks above its adaptive mmap threshold with fresh mappings and trims the
//! heap top on free, so each step or batch page-faults on and zero-fills its memory again: ~20% of
//! a `mini` training step's CPU time and ~12% of an analysis, measured (bench/README.md,
//! bench/ANALYZE.md). Both limits are set, because setting one turns off glibc's adaptation of
//! the other: the mmap threshold to its maximum (32 MiB) and trimming off. The process then keeps
//! its peak heap, which every step or batch reaches anyway, so peak memory is unchanged. A no-op
//! outside Linux/glibc; called by `main` before any thread starts and again (once) by the first
//! training context, for library users.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: mallopt only changes allocator parameters; glibc serialises it with allocation.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
