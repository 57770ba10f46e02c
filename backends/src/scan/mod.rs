//! The selective scan of Mamba (Gu & Dao, 2023, Algorithm 2; mamba_ssm's `selective_scan_fn`),
//! forward and backward: with `dt = softplus(delta + delta_bias)`, for each batch row, channel
//! `d` (of group `g`) and step `t`,
//! `h_t = exp(dt_t A_d) h_{t-1} + dt_t B_{g,t} u_t`, `y_t = (C_{g,t} · h_t + D_d u_t) silu(z_t)`.
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`SelectiveScan`] (and [`seq_idx_from_lengths`], [`ungrouped`]);
//! - [`mod@reference`]: the portable body (the trait's default, the oracle) and the argument,
//!   size and gradient sets the backends share;
//! - [`cpu`]: the fused kernels of Flex and NdArray;
//! - `cube`: the GPU kernels, launchers and their plan (with `wgpu` or `cuda`);
//! - [`autodiff`]: the graph node whose backward is the reverse scan;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;

pub use api::{ScanOutput, SelectiveScan, seq_idx_from_lengths, ungrouped};

/// The scan's output shapes for Fusion, which records each op as one custom operation running
/// the inner backend's implementation.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `y` as `u`, the state as `h0`.
    pub(crate) fn selective_scan(
        u: &S,
        _delta: &S,
        _a: &S,
        _b: &S,
        _c: &S,
        _d: &S,
        _z: &S,
        _gate: &bool,
        _delta_bias: &S,
        h0: &S,
        _reset: &S,
        _has_reset: &bool,
        _softplus: &bool,
    ) -> (S, S) {
        (u.clone(), h0.clone())
    }

    /// Each gradient as its input (`z`'s a `[1]` stand-in without a gate).
    pub(crate) fn selective_scan_backward(
        u: &S,
        delta: &S,
        a: &S,
        b: &S,
        c: &S,
        d: &S,
        z: &S,
        gate: &bool,
        delta_bias: &S,
        h0: &S,
        _reset: &S,
        _has_reset: &bool,
        _dy: &S,
        _dstate: &S,
        _softplus: &bool,
    ) -> (S, S, S, S, S, S, S, S, S) {
        let dz = if *gate {
            z.clone()
        } else {
            S::new(Shape::new([1]), z.dtype)
        };
        (
            u.clone(),
            delta.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            dz,
            delta_bias.clone(),
            h0.clone(),
        )
    }
}
