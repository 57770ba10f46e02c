//! # ssm-backends
//!
//! The ops that state space models need and Burn lacks, as one backend extension
//! ([`SsmOps`]): the selective scan (forward and backward) and the fused decode steps.
//!
//! - a portable body written with Burn's tensor ops ([`portable`]): the oracle, and what any
//!   backend without a kernel runs;
//! - fused CPU kernels on plain slices ([`cpu`]) for Flex and NdArray;
//! - a hand-written reverse-scan backward under `Autodiff` ([`autodiff`]).
//!
//! Models call the user-level API of [`scan`] on `Tensor`s of any device.

pub mod autodiff;
pub mod cpu;
mod cpu_backend;
pub mod device;
pub mod ops;
pub mod portable;
pub mod prim;
pub mod scan;
#[doc(hidden)]
pub mod testing;

pub use device::{DeviceError, parse_device};
pub use ops::SsmOps;
pub use scan::{
    ScanOutput, SelectiveScan, causal_conv1d_step, selective_state_step, to_vec, ungrouped,
};
