//! The one error type of the crate's public API.

/// What went wrong in a call of this crate: a device that cannot be had, or inputs whose shapes
/// do not fit an op.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A device string that names no known device.
    #[error("unknown device '{0}': expected cpu, ndarray, wgpu, wgpu:N, cuda or cuda:N")]
    UnknownDevice(String),
    /// A device whose backend this build was compiled without.
    #[error("device '{0}' needs the cargo feature '{1}', which this build does not have")]
    NotBuilt(String, &'static str),
    /// wgpu found no adapter at all.
    #[error("no wgpu adapter found (is a Vulkan, Metal or DX12 driver installed?)")]
    NoWgpuAdapter,
    /// A wgpu adapter index past the last adapter.
    #[error("wgpu adapter {index} does not exist: this machine has {count}")]
    NoSuchAdapter {
        /// The index asked for.
        index: usize,
        /// How many adapters there are.
        count: usize,
    },
    /// Inputs of an op whose shapes do not fit together; the message names the input and both
    /// shapes.
    #[error("{0}")]
    Shape(String),
    /// An argument an op cannot take (the message names it and says why).
    #[error("{0}")]
    Invalid(String),
}
