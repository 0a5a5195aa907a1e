//! Keeps freed memory in the process heap while training.
//!
//! A training step allocates and frees a few hundred tensors of several MB (candle allocates every
//! op's output and every gradient). glibc serves blocks above its mmap threshold with fresh
//! mappings and trims the heap top on free, so each step page-faults on and zeroes its memory
//! again: ~20% of a `mini` step's CPU time, measured. Raising the mmap threshold to its maximum
//! (32 MiB) and disabling trimming keeps the memory mapped for reuse; the process then holds its
//! peak heap, which training reaches every step anyway. A no-op outside Linux/glibc.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    use std::os::raw::c_int;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // <malloc.h>
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: mallopt only changes allocator parameters; glibc serialises it with allocation.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
