//! `SsmOps` for the CubeCL backend (wgpu, vulkan, cuda, rocm), and what its kernels share.
//!
//! The impl is a table: each method dispatches to its op's GPU file (`crate::<op>::cube`), where
//! the `#[cube]` kernel sits beside its launcher, written once and compiled by CubeCL to WGSL
//! (wgpu), SPIR-V (vulkan), CUDA and HIP; the ops with no kernel take the trait's default body.
//! The shared machinery:
//! - [`buffers`]: flat inputs, small inputs packed into one buffer, several outputs sharing one
//!   buffer whose regions start on the device's binding alignment (so they come back as views
//!   with no copy), and the device's limits;
//! - [`fallback`]: what runs when a kernel cannot take a shape (a state size whose staging does
//!   not fit the shared memory, a buffer over the device's binding limit, mixed float types):
//!   the reference body, which is always correct, said once per shape through `log` and
//!   counted;
//! - [`launches`]: the launch counter; [`math`]: `#[cube]` helpers.

pub(crate) mod buffers;
pub(crate) mod fallback;
mod launches;
pub(crate) mod math;

pub use buffers::MAX_BUFFER_VAR;
pub use launches::LaunchCounter;

use crate::ops::SsmOps;
use crate::{fft, mamba3_step, norm, scan, ssd, step, vandermonde};
use burn::backend::tensor::FloatTensor;

/// Units per cube of the kernels that give one cube to each batch row (the whole-mixer decode
/// steps, the add + norm).
pub(crate) const STEP_UNITS: usize = 256;

/// The CubeCL backend: each op's kernel, with the reference body for the shapes a kernel does
/// not take.
impl SsmOps for burn_cubecl::CubeBackend {
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
        reset: FloatTensor<Self>,
        has_reset: bool,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        scan::cube::selective_scan(
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            gate,
            delta_bias,
            initial_state,
            reset,
            has_reset,
            delta_softplus,
        )
    }

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
        reset: FloatTensor<Self>,
        has_reset: bool,
        dy: FloatTensor<Self>,
        dstate: FloatTensor<Self>,
        delta_softplus: bool,
    ) -> scan::reference::ScanGradTuple<Self> {
        scan::cube::selective_scan_backward(
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            gate,
            delta_bias,
            initial_state,
            reset,
            has_reset,
            dy,
            dstate,
            delta_softplus,
        )
    }

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
        step::cube::selective_state_step(state, x, dt, a, b, c, d, z, gate, dt_bias, dt_softplus)
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        step::cube::causal_conv1d_step(x, state, weight, bias, silu)
    }

    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        ssd::cube::ssd_decay_mask(cum)
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        ssd::cube::ssd_state_pass(chunk_states, chunk_decay, h0)
    }

    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        step::cube::mamba_decode_step(xz, conv_state, ssm_state, weights)
    }

    fn mamba2_decode_step(
        zxbcdt: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        dt_min: f32,
        dt_max: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        step::cube::mamba2_decode_step(
            zxbcdt, conv_state, ssm_state, weights, heads, groups, dt_min, dt_max, eps,
        )
    }

    fn mamba3_decode_step(
        proj: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        rank: usize,
        angles: usize,
        mimo: bool,
        outproj_norm: bool,
        a_floor: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        mamba3_step::cube::mamba3_decode_step(
            proj,
            conv_state,
            ssm_state,
            weights,
            heads,
            groups,
            rank,
            angles,
            mimo,
            outproj_norm,
            a_floor,
            eps,
        )
    }

    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        fft::cube::rfft(x, n)
    }

    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        fft::cube::irfft(re, im, n)
    }

    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        fft::cube::causal_conv_fft(u, k)
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        norm::cube::add_rms_norm(x, residual, has_residual, weight, eps)
    }

    fn vandermonde(
        c_re: FloatTensor<Self>,
        c_im: FloatTensor<Self>,
        z_re: FloatTensor<Self>,
        z_im: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        len: usize,
    ) -> FloatTensor<Self> {
        vandermonde::cube::vandermonde(c_re, c_im, z_re, z_im, shift, len)
    }

    fn vandermonde_backward(
        grad: FloatTensor<Self>,
        c_re: FloatTensor<Self>,
        c_im: FloatTensor<Self>,
        z_re: FloatTensor<Self>,
        z_im: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        vandermonde::cube::vandermonde_backward(grad, c_re, c_im, z_re, z_im, shift)
    }
}
