//! The backend-extension trait holding the ops that SSMs need and Burn lacks.
//!
//! Each op has a portable default body ([`crate::portable`]); the CPU backends (Flex, NdArray)
//! override it with the fused kernels of [`crate::cpu`]; `Autodiff` wraps the scan with a
//! hand-written reverse-scan backward ([`crate::autodiff`]).

// The generated dispatch names Burn's NdArray backend (deprecated in Burn 0.22) when the
// `ndarray` feature is on.
#![allow(deprecated)]

use crate::portable::{self, ScanArgs};
use burn::backend::{Backend, backend_extension, tensor::FloatTensor};

/// SSM ops as a Burn backend extension.
///
/// Call them through the user-level functions of [`crate::scan`], which take `Tensor`s on any
/// device; the methods here take backend primitives.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff
)]
pub trait SsmOps: Backend {
    /// The selective scan of Mamba (mamba_ssm's `selective_scan_fn`).
    ///
    /// With `dt = softplus(delta + delta_bias)` (or without the softplus), for each batch `b`,
    /// channel `d` (of group `g`) and step `t`:
    /// `h_t = exp(dt_t A_d) * h_{t-1} + dt_t B_{g,t} u_t`, `y_t = (C_{g,t} . h_t + D_d u_t) * silu(z_t)`.
    ///
    /// Shapes: `u`, `delta`, `z` (B, D, L); `a` (D, N); `b`, `c` (B, G, N, L); `d`,
    /// `delta_bias` (D); `initial_state` (B, D, N). Returns `y` (B, D, L) and the final state
    /// (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn selective_scan(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::selective_scan::<Self>(ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            delta_softplus,
        })
    }

    /// Gradients of [`SsmOps::selective_scan`] given `dy` (B, D, L) and `dstate` (B, D, N), in
    /// the order (u, delta, A, B, C, D, z, delta_bias, initial_state); `z`'s only when a gate was
    /// given (a `[1]` zero tensor stands in otherwise). A reverse scan that recomputes the states
    /// chunk by chunk.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[fusion(default)]
    fn selective_scan_backward(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        dstate: FloatTensor<Self>,
        delta_softplus: bool,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        let g = portable::selective_scan_backward::<Self>(
            ScanArgs {
                u,
                delta,
                a,
                b,
                c,
                d,
                z: gate.then_some(z),
                delta_bias,
                h0: initial_state,
                delta_softplus,
            },
            dy,
            dstate,
            crate::cpu::BACKWARD_CHUNK,
        );
        g.into_tuple()
    }

    /// One decode step of the selective SSM: see [`portable::selective_state_step`].
    /// Returns `y` (B, D) and the new state (B, D, N).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn selective_state_step(
        state: FloatTensor<Self>,
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        dt_bias: FloatTensor<Self>,
        dt_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::selective_state_step::<Self>(
            state,
            x,
            dt,
            a,
            b,
            c,
            d,
            gate.then_some(z),
            dt_bias,
            dt_softplus,
        )
    }

    /// One decode step of a causal depthwise conv1d with a rolling (B, C, K) state: see
    /// [`portable::causal_conv1d_step`]. Returns the output (B, C) and the new state.
    #[fusion(default)]
    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        portable::causal_conv1d_step::<Self>(x, state, weight, bias, silu)
    }
}

/// The CubeCL backend (wgpu, vulkan, cuda, rocm) runs the portable bodies until its kernels land.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl SsmOps for burn_cubecl::CubeBackend {}
