//! How many times the fused CPU kernels ran in this process: the tests and `zoo selftest` use the
//! counts to prove that a kernel, not the portable body, ran.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) static SCAN_FORWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SCAN_BACKWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static STEP: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SSD_FORWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SSD_BACKWARD: AtomicUsize = AtomicUsize::new(0);
pub(crate) static ROWS_MATMUL: AtomicUsize = AtomicUsize::new(0);
pub(crate) static ROWS_MATMUL_Q8: AtomicUsize = AtomicUsize::new(0);
pub(crate) static FFT: AtomicUsize = AtomicUsize::new(0);
pub(crate) static VANDERMONDE: AtomicUsize = AtomicUsize::new(0);
pub(crate) static CAUCHY: AtomicUsize = AtomicUsize::new(0);

/// Counts one run of a kernel.
pub(crate) fn count(kernel: &AtomicUsize) {
    kernel.fetch_add(1, Ordering::Relaxed);
}

/// How many times each fused CPU kernel has run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCalls {
    /// The selective scan's forward.
    pub scan_forward: usize,
    /// The selective scan's backward.
    pub scan_backward: usize,
    /// The decode steps.
    pub step: usize,
    /// The SSD's forward (Mamba2's and the log-decay form).
    pub ssd_forward: usize,
    /// The log-decay SSD's backward.
    pub ssd_backward: usize,
    /// The few-row products of a decode step (Flex).
    pub rows_matmul: usize,
    /// The products from 8-bit weights on Flex (the few-row kernel, or the many-row path's
    /// dequantization before the GEMM).
    pub rows_matmul_q8: usize,
    /// The real FFTs and the FFT convolution (`rustfft`).
    pub fft: usize,
    /// The Vandermonde kernel of the diagonal SSMs and its backward.
    pub vandermonde: usize,
    /// The Cauchy sums of S4's DPLR kernel and their backward.
    pub cauchy: usize,
}

/// The counts so far.
pub(crate) fn kernel_calls() -> KernelCalls {
    KernelCalls {
        scan_forward: SCAN_FORWARD.load(Ordering::Relaxed),
        scan_backward: SCAN_BACKWARD.load(Ordering::Relaxed),
        step: STEP.load(Ordering::Relaxed),
        ssd_forward: SSD_FORWARD.load(Ordering::Relaxed),
        ssd_backward: SSD_BACKWARD.load(Ordering::Relaxed),
        rows_matmul: ROWS_MATMUL.load(Ordering::Relaxed),
        rows_matmul_q8: ROWS_MATMUL_Q8.load(Ordering::Relaxed),
        fft: FFT.load(Ordering::Relaxed),
        vandermonde: VANDERMONDE.load(Ordering::Relaxed),
        cauchy: CAUCHY.load(Ordering::Relaxed),
    }
}
