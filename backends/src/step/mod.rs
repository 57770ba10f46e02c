//! The decode (recurrent) steps of Mamba and Mamba2: the building blocks, the selective state
//! update `h = exp(dt A) h + dt B x`, `y = (C · h + D x) silu(z)` and the causal conv window
//! step, and each mixer's whole step after `in_proj`, composed of them (Mamba-3's step is
//! [`crate::mamba3_step`]).
//!
//! Everything the ops are, in one place:
//! - [`api`]: the tensor-level functions ([`selective_state_step`], [`causal_conv1d_step`],
//!   [`mamba_decode_step`], [`mamba2_decode_step`] and their weight packers);
//! - [`mod@reference`]: the portable bodies, the composed mixer steps and their sizes;
//! - [`cpu`]: the fused building blocks of Flex and NdArray (the mixer steps are composed of
//!   them there);
//! - `cube`: one kernel per step (with `wgpu` or `cuda`);
//! - [`autodiff`]: the composed bodies when tracked, the fused steps otherwise;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
pub(crate) mod cpu_fused;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;

pub use api::{
    causal_conv1d_step, mamba_decode_step, mamba2_decode_step, pack_mamba_step_weights,
    pack_mamba2_step_weights, selective_state_step,
};
pub use reference::{Mamba2StepConfig, MambaStepDims};

/// The decode steps' output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
#[allow(clippy::too_many_arguments)]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `y` as `x`, the new state as `state`.
    pub(crate) fn selective_state_step(
        state: &S,
        x: &S,
        _dt: &S,
        _a: &S,
        _b: &S,
        _c: &S,
        _d: &S,
        _z: &S,
        _gate: &bool,
        _dt_bias: &S,
        _softplus: &bool,
    ) -> (S, S) {
        (x.clone(), state.clone())
    }

    /// The output as `x`, the new window as `state`.
    pub(crate) fn causal_conv1d_step(x: &S, state: &S, _w: &S, _b: &S, _silu: &bool) -> (S, S) {
        (x.clone(), state.clone())
    }

    /// `y` (B, D) from the SSM state (B, D, N); the states as they are.
    pub(crate) fn mamba_decode_step(_xz: &S, conv: &S, ssm: &S, _w: &S) -> (S, S, S) {
        let y = S::new(Shape::new([ssm.shape[0], ssm.shape[1]]), ssm.dtype);
        (y, conv.clone(), ssm.clone())
    }

    /// `y` (B, d_inner) from the SSM state (B, d_inner, N); the states as they are.
    pub(crate) fn mamba2_decode_step(
        _zxbcdt: &S,
        conv: &S,
        ssm: &S,
        _w: &S,
        _heads: &usize,
        _groups: &usize,
        _dt_min: &f32,
        _dt_max: &f32,
        _eps: &f32,
    ) -> (S, S, S) {
        let y = S::new(Shape::new([ssm.shape[0], ssm.shape[1]]), ssm.dtype);
        (y, conv.clone(), ssm.clone())
    }
}
