//! # ssm-backends
//!
//! The ops that state space models need and Burn lacks, as one backend extension
//! ([`SsmOps`]): the selective scan (forward and backward), Mamba2's SSD scan, the fused decode
//! steps and their projections ([`rows_matmul`]), residual add + RMSNorm, real FFTs with the
//! FFT long convolution, the Vandermonde kernel of the diagonal SSMs ([`vandermonde()`]) and the
//! Cauchy sums of S4's DPLR kernel ([`cauchy()`]).
//!
//! Call them on `Tensor`s of any device through the functions re-exported here
//! ([`SelectiveScan`], [`ssd()`], [`mamba_decode_step`], [`mamba2_decode_step`], [`rfft`],
//! [`irfft`], [`causal_conv`], [`add_rms_norm`], ...); each checks its shapes and dispatches to
//! the backend's implementation.
//!
//! Each op's code lives in its own folder (`scan/`, `ssd/`, `step/`, `mamba3_step/`, `fft/`,
//! `norm/`, `linear/`, `vandermonde/`, `cauchy/`), the same files in each (see `docs/adding-an-op.md`):
//! - `api.rs`: the tensor-level functions;
//! - `reference.rs`: the portable body written with Burn's tensor ops: the trait's default
//!   method, the oracle of the tests, and what any backend without a kernel runs (the
//!   `*_reference` functions run it on purpose);
//! - `cpu`: the fused CPU kernel for Flex and NdArray, on plain slices;
//! - `cube`: the CubeCL kernel beside its launcher, for wgpu, vulkan, cuda and rocm (with the
//!   `wgpu` or `cuda` feature);
//! - `autodiff.rs`: the op under `Autodiff` (its graph node and hand-written backward);
//! - `mod.rs`: the op's statement, and its output shapes under Fusion.
//!
//! The trait ([`SsmOps`], `ops.rs`) holds every op's signature and default body; its impls for
//! the CPU backends (`cpu/mod.rs`), CubeCL (`cube/mod.rs`) and `Autodiff` (`autodiff.rs`) are
//! tables of one-call dispatches into the op folders. What the ops share stays shared: the
//! primitive wrapper (`prim.rs`), the half-precision rule (`precision.rs`), the CPU kernels'
//! lanes and few-row product (`cpu/`), the GPU buffers, fallback reports and launch counter
//! (`cube/`).
//!
//! A GPU op that cannot run its kernel on some input (shared memory, a buffer over the device's
//! binding limit, mixed float types) runs the reference body and says so: a `log` warning once
//! per shape, and [`LaunchCounter::fallbacks`].
#![warn(missing_docs)]

mod adapter;
mod autodiff;
mod cauchy;
mod compare;
mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
mod device;
mod error;
mod fft;
mod linear;
mod mamba3_step;
mod norm;
mod ops;
mod pool;
mod precision;
mod prim;
mod rng;
mod scan;
pub mod selftest;
mod ssd;
mod step;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod tuning;
mod vandermonde;

pub use adapter::{DeviceInfo, DeviceKind, describe};
pub use cauchy::{ComplexParts, cauchy, cauchy_reference};
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use cube::{LaunchCounter, MAX_BUFFER_VAR};
pub use device::{default_device, devices, is_host, max_binding_bytes, parse_device};
pub use error::Error;
pub use fft::{
    DIRECT_MAX_LEN, bidirectional_conv, causal_conv, causal_conv_fft, causal_conv_reference, fft,
    ifft, irfft, irfftn, rfft, rfftn,
};
pub use linear::{
    Q8_BLOCK, embedding_rows, is_quantized, q8_scheme, quantize_q8, rows_matmul,
    rows_matmul_transposed,
};
pub use mamba3_step::{
    Mamba3StepConfig, Mamba3StepDims, mamba3_decode_step, pack_mamba3_step_weights,
};
pub use norm::add_rms_norm;
pub use ops::SsmOps;
pub use pool::on_pool_worker;
pub use scan::{ScanOutput, SelectiveScan, seq_idx_from_lengths, ungrouped};
pub use ssd::{Ssd, ssd, ssd_reference};
pub use step::{
    Mamba2StepConfig, MambaStepDims, causal_conv1d_step, mamba_decode_step, mamba2_decode_step,
    pack_mamba_step_weights, pack_mamba2_step_weights, selective_state_step,
};
pub use vandermonde::{vandermonde, vandermonde_reference};

use burn::tensor::{Tensor, TensorData};

/// Copies a tensor to host f32 values (test and tooling helper).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let data: TensorData = t.into_data();
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}
