//! # ssm-backends
//!
//! The ops that state space models need and Burn lacks, as one backend extension
//! ([`SsmOps`]): the selective scan (forward and backward), Mamba2's SSD scan, the fused decode
//! steps and their projections ([`rows_matmul`]), residual add + RMSNorm, and real FFTs with the FFT long convolution.
//!
//! Call them on `Tensor`s of any device through the functions re-exported here
//! ([`SelectiveScan`], [`ssd()`], [`mamba_decode_step`], [`mamba2_decode_step`], [`rfft`],
//! [`irfft`], [`causal_conv`], [`add_rms_norm`], ...); each checks its shapes and dispatches to
//! the backend's implementation:
//! - a portable body written with Burn's tensor ops (`portable/`): the oracle, and what any
//!   backend without a kernel runs (the `*_reference` functions run it on purpose);
//! - fused CPU kernels on plain slices for Flex and NdArray (`cpu/`);
//! - CubeCL kernels for wgpu, vulkan, cuda and rocm (`cube/`, with the `wgpu` or `cuda`
//!   feature), one file per op with its launcher;
//! - hand-written backward nodes under `Autodiff` (`autodiff/`).
//!
//! A GPU op that cannot run its kernel on some input (shared memory, a buffer over the device's
//! binding limit, mixed float types) runs the portable body and says so: a `log` warning once
//! per shape, and [`LaunchCounter::fallbacks`].

mod api;
mod autodiff;
mod compose;
mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
mod device;
mod error;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod fusion_meta;
mod ops;
mod pool;
mod portable;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use api::{
    DIRECT_MAX_LEN, ScanOutput, SelectiveScan, Ssd, add_rms_norm, bidirectional_conv, causal_conv,
    causal_conv_fft, causal_conv_reference, causal_conv1d_step, fft, ifft, irfft, irfftn,
    mamba_decode_step, mamba2_decode_step, mamba3_decode_step, pack_mamba_step_weights,
    pack_mamba2_step_weights, pack_mamba3_step_weights, rfft, rfftn, rows_matmul,
    rows_matmul_transposed, selective_state_step, seq_idx_from_lengths, ssd, ssd_reference, to_vec,
    ungrouped,
};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use cube::{LaunchCounter, MAX_BUFFER_VAR};
pub use device::{default_device, max_binding_bytes, parse_device};
pub use error::Error;
pub use ops::SsmOps;
pub use pool::on_pool_worker;
pub use portable::mamba3_step::{Mamba3StepConfig, Mamba3StepDims};
pub use portable::step::{Mamba2StepConfig, MambaStepDims};
