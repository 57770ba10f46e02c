//! Mamba2's SSD scan (Dao & Gu, 2024, eq. 1 with the scalar-identity `A`) and its log-decay
//! form (Mamba-3's data-dependent `A`), forward and backward: with heads of `P` channels sharing
//! `A_h` and `dt_{t,h}`, `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t ⊗ B_t` (a (P, N) state per
//! head), `y_t = h_t C_t + D_h x_t`; the log-decay form reads `exp(a_{t,h})` in place of
//! `exp(dt_t A_h)`.
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`Ssd`], [`ssd()`] and [`ssd_reference`];
//! - [`mod@reference`]: the chunked matmul form (the default body, the oracle) with its two stages
//!   as ops of their own (the decay mask, the inter-chunk pass), and the recurrence on the scan
//!   op; [`reference_backward`]: the log-decay SSD's gradients through the chunked form;
//! - [`cpu`]: the fused recurrence of Flex and NdArray and its reverse;
//! - `cube`: the decay-mask and state-pass kernels (with `wgpu` or `cuda`);
//! - [`autodiff`]: the graph nodes of the log-decay SSD and of the state pass;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;
pub(crate) mod reference_backward;

pub use api::{Ssd, ssd, ssd_reference};

/// The output shapes of the SSD's kernel stages for Fusion (the SSD ops themselves take their
/// default bodies under Fusion: the stages are recorded one by one).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// The mask (B, H, K, Q, Q) of `cum` (B, H, K, Q).
    pub(crate) fn ssd_decay_mask(cum: &S) -> S {
        let mut dims = cum.shape.to_vec();
        dims.push(dims[3]);
        S::new(Shape::from(dims), cum.dtype)
    }

    /// The chunk starts as `chunk_states`, the final state as `h0`.
    pub(crate) fn ssd_state_pass(chunk_states: &S, _decay: &S, h0: &S) -> (S, S) {
        (chunk_states.clone(), h0.clone())
    }
}
