//! How many times the fused CPU kernels ran in this process: tests use the counts to prove that
//! a kernel, not the portable body, ran.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) static SCAN_FORWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SCAN_BACKWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static STEP: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SSD_FORWARD: AtomicUsize = AtomicUsize::new(0);

/// Counts one run of a kernel.
pub(crate) fn count(kernel: &AtomicUsize) {
    kernel.fetch_add(1, Ordering::Relaxed);
}

/// (scan forward, scan backward, decode steps, SSD forward) so far.
#[cfg(feature = "test-utils")]
pub(crate) fn kernel_calls() -> (usize, usize, usize, usize) {
    (
        SCAN_FORWARD.load(Ordering::Relaxed),
        SCAN_BACKWARD.load(Ordering::Relaxed),
        STEP.load(Ordering::Relaxed),
        SSD_FORWARD.load(Ordering::Relaxed),
    )
}
