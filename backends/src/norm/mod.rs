//! mamba_ssm's fused residual add and RMSNorm over the last axis: `s = x + residual`,
//! `y = s / sqrt(mean(s²) + eps) · weight` (Zhang & Sennrich, 2019), both returned.
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`add_rms_norm`];
//! - [`mod@reference`]: the portable body (the default; what the CPU backends run);
//! - `cube`: one kernel launch, a row per cube (with `wgpu` or `cuda`);
//! - [`autodiff`]: the reference body when tracked, the fused op otherwise;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;

pub use api::add_rms_norm;

/// The op's output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;

    /// `s` and `y` as `x`.
    pub(crate) fn add_rms_norm(x: &S, _r: &S, _has: &bool, _w: &S, _eps: &f32) -> (S, S) {
        (x.clone(), x.clone())
    }
}
