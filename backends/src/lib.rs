//! # ssm-backends
//!
//! The ops that state space models need and Burn lacks, as one backend extension
//! ([`SsmOps`]): the selective scan (forward and backward) and the fused decode steps.
//!
//! - a portable body written with Burn's tensor ops ([`portable`]): the oracle, and what any
//!   backend without a kernel runs;
//! - fused CPU kernels on plain slices ([`cpu`]) for Flex and NdArray;
//! - CubeCL kernels for wgpu, vulkan, cuda and rocm (`cube`, with the `wgpu` or `cuda` feature);
//! - a hand-written reverse-scan backward under `Autodiff` ([`autodiff`]).
//!
//! Models call the user-level API of [`scan`] on `Tensor`s of any device.

pub mod autodiff;
pub mod conv;
pub mod cpu;
mod cpu_backend;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod cube;
pub mod device;
pub mod fft;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod launches;
pub mod ops;
pub mod portable;
pub mod prim;
pub mod scan;
pub mod ssd;
pub mod step;
#[doc(hidden)]
pub mod testing;

pub use device::{DeviceError, parse_device};
pub use ops::SsmOps;
pub use scan::{
    ScanOutput, SelectiveScan, add_rms_norm, causal_conv1d_step, selective_state_step, to_vec,
    ungrouped,
};
