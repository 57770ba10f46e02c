//! The process's allocator settings for tensor workloads.
//!
//! The CPU backends allocate a fresh output buffer for most tensor ops, many of them megabytes
//! (a (512, 1536) f32 activation is 3 MiB). glibc's malloc serves every block over its mmap
//! threshold (128 KiB, rising slowly with use) with a new `mmap` and returns it on `free`, so
//! each op pays page faults and the kernel's zeroing of every page it touches, all on the thread
//! that runs the op while the other cores wait (measured on `zoo bench lm`: 6-8% of all CPU
//! samples in the kernel's page-fault path, and prefill 20-30% faster without it). Raising the
//! mmap threshold to glibc's maximum (32 MiB) and keeping freed memory in the heap instead of
//! trimming it makes such buffers reuse pages already mapped. Peak memory is unchanged: what is
//! kept is what the process already used.

/// Applies the settings (glibc on Linux; elsewhere nothing). A library user gets the same from
/// the environment: `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`.
pub fn tune_for_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc caps the threshold at 32 MiB on 64-bit targets (HEAP_MAX_SIZE / 2).
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes malloc's tuning parameters; called before any thread
        // of ours starts. A rejected value leaves the default (the return value says so, and
        // nothing depends on it).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
