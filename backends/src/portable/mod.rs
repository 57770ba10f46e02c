//! Portable bodies of the SSM ops, written once with a backend's own tensor operations.
//!
//! They are the default methods of [`crate::SsmOps`], the oracle the kernels are tested against
//! (`SelectiveScan::run_reference`, `ssd_reference`, `causal_conv_reference`) and what any
//! backend without a kernel runs. The scan bodies walk the sequence one step at a time (as
//! mamba_ssm's `selective_scan_ref` does) and never build a (B, D, L, N) tensor: slow on long
//! sequences, by design simple.

pub(crate) mod fft;
pub(crate) mod linear;
pub(crate) mod mamba3_step;
pub(crate) mod norm;
pub(crate) mod prim;
pub(crate) mod scan;
pub(crate) mod ssd;
pub(crate) mod ssd_backward;
pub(crate) mod stages;
pub(crate) mod step;

pub(crate) use fft::{causal_conv_direct, irfft_dft, rfft_dft};
pub(crate) use linear::rows_matmul;
pub(crate) use norm::add_rms_norm;
pub(crate) use scan::{ScanArgs, ScanDims, ScanGrads, selective_scan, selective_scan_backward};
pub(crate) use step::{causal_conv1d_step, selective_state_step};
