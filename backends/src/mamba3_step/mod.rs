//! Mamba-3's whole decode step after `in_proj`, SISO or MIMO (state-spaces/mamba
//! `Mamba3.step`): per head, `h = α h + (1 − λ) Δ α Σ_r k'_r v'_rᵀ + λ Δ Σ_r k_r v_rᵀ` (the
//! trapezoidal update with the carried keys and inputs of the previous token),
//! `y = Σ_r W^o_r ∘ gate(h q_r + D v_r)`; the full statement is in [`mod@reference`].
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`mamba3_decode_step`] and [`pack_mamba3_step_weights`];
//! - [`mod@reference`]: its config, sizes and portable body (the default, the oracle);
//! - [`cpu`]: one fused pass per (row, head) on Flex and NdArray;
//! - `cube`: one kernel launch (with `wgpu` or `cuda`);
//! - [`autodiff`]: the reference body when tracked, the fused step otherwise;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;

pub use api::{mamba3_decode_step, pack_mamba3_step_weights};
pub use reference::{Mamba3StepConfig, Mamba3StepDims};

/// The step's output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `y` (B, H P) from the SSM state (B, H P, N); the states as they are.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mamba3_decode_step(
        _proj: &S,
        conv: &S,
        ssm: &S,
        _w: &S,
        _heads: &usize,
        _groups: &usize,
        _rank: &usize,
        _angles: &usize,
        _mimo: &bool,
        _norm: &bool,
        _a_floor: &f32,
        _eps: &f32,
    ) -> (S, S, S) {
        let y = S::new(Shape::new([ssm.shape[0], ssm.shape[1]]), ssm.dtype);
        (y, conv.clone(), ssm.clone())
    }
}
