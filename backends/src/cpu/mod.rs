//! `SsmOps` for the CPU backends (Flex, NdArray), and what their kernels share.
//!
//! The impl is a table: each method dispatches to its op's CPU file (`crate::<op>::cpu`), where
//! the primitives are read as f32 slices ([`host`]) and handed to the op's fused kernel; the
//! ops with no CPU kernel take the trait's default body. The shared machinery:
//! - [`lanes`]: the scalar and SIMD-lane primitives of the kernels (a vectorisable `exp`, the
//!   softplus and SiLU, the lane-wise state update);
//! - [`gemv`]: a few rows times a weight matrix on every core (Flex's decode projections);
//! - [`gemv_q8`]: the same from 8-bit weights, their rows looked up and dequantized;
//! - [`calls`]: how many times each kernel ran (for the tests).
//!
//! The kernels compute in f32 and take f32 tensors only: any other float type is an error
//! (there is no silent conversion).

pub(crate) mod calls;
pub(crate) mod gemv;
pub(crate) mod gemv_q8;
pub(crate) mod lanes;

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{DType, TensorData, read_sync};

/// Reads a float primitive into a host vector of f32.
///
/// # Panics
/// When the tensor is not f32: the CPU kernels compute in f32, and converting another float
/// type behind the caller's back would change its precision silently.
pub(crate) fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let dtype = t.dtype();
    assert!(
        dtype == DType::F32,
        "ssm-backends: the CPU kernels take f32 tensors, got {dtype:?}; cast the inputs to f32 \
         first (e.g. `tensor.cast(FloatDType::F32)`)"
    );
    read_sync(B::float_into_data(t))
        .expect("reading a CPU tensor cannot fail")
        .try_into_vec::<f32>()
        .expect("an f32 tensor reads as f32")
}

/// Wraps a host vector of f32 back into a primitive on `device`.
pub(crate) fn device_tensor<B: Backend>(
    values: Vec<f32>,
    dims: Vec<usize>,
    device: &B::Device,
) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, dims), device)
}

/// Implements `SsmOps` for a CPU backend: one dispatch per op into its CPU file, plus the
/// backend's own methods given after it (ops that read its primitives in place).
macro_rules! cpu_ssm_ops {
    ($backend:ty $(, $own:item)*) => {
        impl $crate::ops::SsmOps for $backend {
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
                $crate::scan::cpu::selective_scan::<Self>(
                    u, delta, a, b, c, d, z, gate, delta_bias, initial_state, reset, has_reset,
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
            ) -> $crate::scan::reference::ScanGradTuple<Self> {
                $crate::scan::cpu::selective_scan_backward::<Self>(
                    u, delta, a, b, c, d, z, gate, delta_bias, initial_state, reset, has_reset,
                    dy, dstate, delta_softplus,
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
                $crate::step::cpu::selective_state_step::<Self>(
                    state, x, dt, a, b, c, d, z, gate, dt_bias, dt_softplus,
                )
            }

            fn causal_conv1d_step(
                x: FloatTensor<Self>,
                state: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                silu: bool,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::step::cpu::causal_conv1d_step::<Self>(x, state, weight, bias, silu)
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
                $crate::step::cpu_fused::mamba2_decode_step::<Self>(
                    zxbcdt,
                    conv_state,
                    ssm_state,
                    weights,
                    $crate::step::reference::Mamba2StepConfig {
                        heads,
                        groups,
                        dt_min,
                        dt_max,
                        eps,
                    },
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
                $crate::mamba3_step::cpu::mamba3_decode_step::<Self>(
                    proj, conv_state, ssm_state, weights, heads, groups, rank, angles, mimo,
                    outproj_norm, a_floor, eps,
                )
            }

            fn ssd(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                a: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::ssd::cpu::ssd::<Self>(
                    x, dt, a, b, c, d, initial_state, reset, has_reset, chunk,
                )
            }

            fn ssd_log_decay(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                log_decay: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                chunk: usize,
                rank: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::ssd::cpu::ssd_log_decay::<Self>(
                    x, dt, log_decay, b, c, d, initial_state, reset, has_reset, chunk, rank,
                )
            }

            fn ssd_log_decay_backward(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                log_decay: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                chunk: usize,
                rank: usize,
                dy: FloatTensor<Self>,
                dstate: FloatTensor<Self>,
            ) -> $crate::ssd::reference_backward::SsdGradTuple<Self> {
                $crate::ssd::cpu::ssd_log_decay_backward::<Self>(
                    x, dt, log_decay, b, c, d, initial_state, reset, has_reset, chunk, rank, dy,
                    dstate,
                )
            }

            fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::fft::cpu::rfft::<Self>(x, n)
            }

            fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
                $crate::fft::cpu::irfft::<Self>(re, im, n)
            }

            fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
                $crate::fft::cpu::causal_conv_fft::<Self>(u, k)
            }

            fn vandermonde(
                c_re: FloatTensor<Self>,
                c_im: FloatTensor<Self>,
                z_re: FloatTensor<Self>,
                z_im: FloatTensor<Self>,
                shift: FloatTensor<Self>,
                len: usize,
            ) -> FloatTensor<Self> {
                $crate::vandermonde::cpu::vandermonde::<Self>(c_re, c_im, z_re, z_im, shift, len)
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
                $crate::vandermonde::cpu::vandermonde_backward::<Self>(
                    grad, c_re, c_im, z_re, z_im, shift,
                )
            }

            fn cauchy(
                v_re: FloatTensor<Self>,
                v_im: FloatTensor<Self>,
                w_re: FloatTensor<Self>,
                w_im: FloatTensor<Self>,
                l_re: FloatTensor<Self>,
                l_im: FloatTensor<Self>,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cauchy::cpu::cauchy::<Self>(v_re, v_im, w_re, w_im, l_re, l_im)
            }

            fn cauchy_backward(
                g_re: FloatTensor<Self>,
                g_im: FloatTensor<Self>,
                v_re: FloatTensor<Self>,
                v_im: FloatTensor<Self>,
                w_re: FloatTensor<Self>,
                w_im: FloatTensor<Self>,
                l_re: FloatTensor<Self>,
                l_im: FloatTensor<Self>,
            ) -> (
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
            ) {
                $crate::cauchy::cpu::cauchy_backward::<Self>(
                    g_re, g_im, v_re, v_im, w_re, w_im, l_re, l_im,
                )
            }

            $($own)*
        }
    };
}

#[cfg(feature = "flex")]
cpu_ssm_ops!(
    burn::backend::Flex,
    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        crate::step::cpu_fused::mamba_decode_step_flex(xz, conv_state, ssm_state, weights)
    },
    fn rows_matmul(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        crate::linear::cpu::rows_matmul(x, w, transposed)
    },
    fn q_rows_matmul(
        x: FloatTensor<Self>,
        w: burn::backend::tensor::QuantizedTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        crate::linear::cpu::q_rows_matmul(x, w, transposed)
    },
    fn q_embedding(
        w: burn::backend::tensor::QuantizedTensor<Self>,
        ids: burn::backend::tensor::IntTensor<Self>,
    ) -> FloatTensor<Self> {
        crate::linear::cpu::q_embedding(w, ids)
    }
);
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
mod ndarray_impl {
    use super::*;
    cpu_ssm_ops!(
        burn::backend::NdArray,
        fn mamba_decode_step(
            xz: FloatTensor<Self>,
            conv_state: FloatTensor<Self>,
            ssm_state: FloatTensor<Self>,
            weights: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            crate::step::cpu_fused::mamba_decode_step::<Self>(xz, conv_state, ssm_state, weights)
        }
    );
}
