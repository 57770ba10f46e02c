//! `SsmOps` for the CubeCL backend (wgpu, vulkan, cuda, rocm): each op's `#[cube]` kernel beside
//! its launcher, written once and compiled by CubeCL to WGSL (wgpu), SPIR-V (vulkan), CUDA and
//! HIP.
//!
//! - [`scan`], [`scan_backward`], [`scan_backward_spans`]: the selective scan (forward,
//!   backward, and the backward with the sequence cut into spans walked in parallel);
//! - [`step`], [`mamba2_step`], [`mamba3_step`]: the decode steps (state update, conv window,
//!   whole mixers);
//! - [`ssd`]: the SSD's decay mask and inter-chunk pass; [`norm`]: residual add and RMSNorm;
//! - [`fft`]: real FFTs and the FFT convolution on Burn's FFT kernels;
//! - [`buffers`]: packing, output regions and the device's limits; [`math`]: `#[cube]` helpers;
//! - [`fallback`]: what runs when a kernel cannot take a shape, said once per shape;
//!   [`launches`]: the launch counter.
//!
//! Inputs are made contiguous and flat; small inputs are packed into one buffer, several outputs
//! share one buffer whose regions start on the device's binding alignment, so that they come
//! back as views with no copy. A shape a kernel cannot take (a state size whose staging does not
//! fit the shared memory, a buffer over the device's binding limit, mixed float types) runs the
//! portable body, which is always correct, and says so through `log` and the launch counter.

mod buffers;
mod fallback;
mod fft;
mod launches;
mod mamba2_step;
mod mamba3_step;
mod math;
mod norm;
mod scan;
mod scan_backward;
mod scan_backward_spans;
mod ssd;
mod step;

pub use buffers::MAX_BUFFER_VAR;
pub(crate) use buffers::binding_limit;
#[cfg(feature = "test-utils")]
pub(crate) use buffers::set_test_max_buffer;
use fallback::Unsupported;
pub use launches::LaunchCounter;
#[cfg(feature = "test-utils")]
pub(crate) use scan::{set_test_spans, set_test_staging};

use crate::ops::SsmOps;
use crate::portable::step::{Mamba2StepConfig, MambaStepDims};
use crate::portable::{self, ScanArgs};
use burn::backend::{TensorMetadata, tensor::FloatTensor};
use burn_cubecl::tensor::CubeTensor;

/// Reports that `op` on `inputs` runs `instead` of its kernel, and why.
fn unsupported(op: &'static str, inputs: &[&CubeTensor], why: Unsupported, instead: &str) {
    let shapes = inputs.iter().map(|t| t.shape().to_vec()).collect();
    fallback::report(op, shapes, &why, instead);
}

const PORTABLE: &str = "the portable body";

/// The CubeCL backend: the kernels of this module, with the portable bodies for the shapes a
/// kernel does not take.
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
        let args = ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            reset: has_reset.then_some(reset),
            delta_softplus,
        };
        let launched = scan::selective_scan(args.clone());
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("selective_scan", &[&args.u, &args.b], why, PORTABLE);
                portable::selective_scan::<Self>(args)
            }
        }
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
        let args = ScanArgs {
            u,
            delta,
            a,
            b,
            c,
            d,
            z: gate.then_some(z),
            delta_bias,
            h0: initial_state,
            reset: has_reset.then_some(reset),
            delta_softplus,
        };
        let launched =
            scan_backward::selective_scan_backward(args.clone(), dy.clone(), dstate.clone());
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported(
                    "selective_scan_backward",
                    &[&args.u, &args.b],
                    why,
                    PORTABLE,
                );
                portable::selective_scan_backward::<Self>(
                    args,
                    dy,
                    dstate,
                    portable::scan::BACKWARD_CHUNK,
                )
            }
        }
        .into_tuple()
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
        let z = gate.then_some(z);
        let launched = step::selective_state_step(
            state.clone(),
            x.clone(),
            dt.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            z.clone(),
            dt_bias.clone(),
            dt_softplus,
        );
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("selective_state_step", &[&state, &b], why, PORTABLE);
                portable::selective_state_step::<Self>(
                    state,
                    x,
                    dt,
                    a,
                    b,
                    c,
                    d,
                    z,
                    dt_bias,
                    dt_softplus,
                )
            }
        }
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let launched =
            step::causal_conv1d_step(x.clone(), state.clone(), weight.clone(), bias.clone(), silu);
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("causal_conv1d_step", &[&state], why, PORTABLE);
                portable::causal_conv1d_step::<Self>(x, state, weight, bias, silu)
            }
        }
    }

    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        let launched = ssd::ssd_decay_mask(cum.clone());
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("ssd_decay_mask", &[&cum], why, PORTABLE);
                portable::ssd::decay_mask::<Self>(cum)
            }
        }
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let launched = ssd::ssd_state_pass(chunk_states.clone(), chunk_decay.clone(), h0.clone());
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("ssd_state_pass", &[&chunk_states], why, PORTABLE);
                portable::ssd::state_pass::<Self>(chunk_states, chunk_decay, h0)
            }
        }
    }

    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let dims = MambaStepDims::infer(
            &xz.shape(),
            &conv_state.shape(),
            &ssm_state.shape(),
            weights.shape().num_elements(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let launched = step::mamba_step(
            xz.clone(),
            conv_state.clone(),
            ssm_state.clone(),
            weights.clone(),
            dims,
        );
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported(
                    "mamba_decode_step",
                    &[&xz, &ssm_state],
                    why,
                    "the step composed of the conv and state steps",
                );
                portable::step::mamba_step_composed::<Self>(xz, conv_state, ssm_state, weights)
            }
        }
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
        let cfg = Mamba2StepConfig {
            heads,
            groups,
            dt_min,
            dt_max,
            eps,
        };
        let launched = mamba2_step::mamba2_step(
            zxbcdt.clone(),
            conv_state.clone(),
            ssm_state.clone(),
            weights.clone(),
            cfg,
        );
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported(
                    "mamba2_decode_step",
                    &[&zxbcdt, &ssm_state],
                    why,
                    "the step composed of the conv and state steps",
                );
                portable::step::mamba2_step_composed::<Self>(
                    zxbcdt, conv_state, ssm_state, weights, cfg,
                )
            }
        }
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
        let cfg = portable::mamba3_step::Mamba3StepConfig {
            heads,
            groups,
            rank,
            angles,
            mimo,
            outproj_norm,
            a_floor,
            eps,
        };
        let launched = mamba3_step::mamba3_step(
            proj.clone(),
            conv_state.clone(),
            ssm_state.clone(),
            weights.clone(),
            cfg,
        );
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("mamba3_decode_step", &[&proj, &ssm_state], why, PORTABLE);
                portable::mamba3_step::mamba3_step_composed::<Self>(
                    proj, conv_state, ssm_state, weights, cfg,
                )
            }
        }
    }

    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let launched = fft::rfft(x.clone(), n);
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("rfft", &[&x], why, "the O(n²) DFT-matrix body");
                portable::rfft_dft::<Self>(x, n)
            }
        }
    }

    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        let launched = fft::irfft(re.clone(), im.clone(), n);
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("irfft", &[&re], why, "the O(n²) DFT-matrix body");
                portable::irfft_dft::<Self>(re, im, n)
            }
        }
    }

    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        fft::causal_conv_fft(u, k)
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let residual = has_residual.then_some(residual);
        let launched = norm::add_rms_norm(x.clone(), residual.clone(), weight.clone(), eps);
        match launched {
            Ok(out) => out,
            Err(why) => {
                unsupported("add_rms_norm", &[&x], why, PORTABLE);
                portable::add_rms_norm::<Self>(x, residual, weight, eps)
            }
        }
    }
}
