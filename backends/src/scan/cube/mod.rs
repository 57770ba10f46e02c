//! The selective scan on the CubeCL backend (wgpu, vulkan, cuda, rocm): the forward and
//! backward kernels, their launchers and the policy that sizes them, with the reference body
//! for the inputs a kernel cannot take (said once per shape, see [`crate::cube::fallback`]).
//!
//! - [`kernel`] and [`launch`]: the forward;
//! - [`backward_kernel`] and [`backward_launch`]: the backward, a reverse scan recomputing the
//!   states chunk by chunk; [`backward_spans`]: the backward with the sequence cut into spans
//!   walked in parallel;
//! - [`plan`]: tiling, spans and segments for both, and the tests' overrides.

mod backward_kernel;
mod backward_launch;
mod backward_spans;
mod kernel;
mod launch;
pub(crate) mod plan;

use super::reference::{self, BACKWARD_CHUNK, ScanArgs, ScanGradTuple};
use crate::cube::buffers::Cb;
use crate::cube::fallback::{PORTABLE, unsupported};
use burn::backend::tensor::FloatTensor;

/// [`crate::SsmOps::selective_scan`] on the forward kernel, or the reference body.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan(
    u: FloatTensor<Cb>,
    delta: FloatTensor<Cb>,
    a: FloatTensor<Cb>,
    b: FloatTensor<Cb>,
    c: FloatTensor<Cb>,
    d: FloatTensor<Cb>,
    z: FloatTensor<Cb>,
    gate: bool,
    delta_bias: FloatTensor<Cb>,
    initial_state: FloatTensor<Cb>,
    reset: FloatTensor<Cb>,
    has_reset: bool,
    delta_softplus: bool,
) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    let args = ScanArgs::<Cb>::from_op(
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
    );
    match launch::selective_scan(args.clone()) {
        Ok(out) => out,
        Err(why) => {
            unsupported("selective_scan", &[&args.u, &args.b], why, PORTABLE);
            reference::selective_scan::<Cb>(args)
        }
    }
}

/// [`crate::SsmOps::selective_scan_backward`] on the backward kernels, or the reference body.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan_backward(
    u: FloatTensor<Cb>,
    delta: FloatTensor<Cb>,
    a: FloatTensor<Cb>,
    b: FloatTensor<Cb>,
    c: FloatTensor<Cb>,
    d: FloatTensor<Cb>,
    z: FloatTensor<Cb>,
    gate: bool,
    delta_bias: FloatTensor<Cb>,
    initial_state: FloatTensor<Cb>,
    reset: FloatTensor<Cb>,
    has_reset: bool,
    dy: FloatTensor<Cb>,
    dstate: FloatTensor<Cb>,
    delta_softplus: bool,
) -> ScanGradTuple<Cb> {
    let args = ScanArgs::<Cb>::from_op(
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
    );
    let launched =
        backward_launch::selective_scan_backward(args.clone(), dy.clone(), dstate.clone());
    match launched {
        Ok(out) => out,
        Err(why) => {
            unsupported(
                "selective_scan_backward",
                &[&args.u, &args.b],
                why,
                PORTABLE,
            );
            reference::selective_scan_backward::<Cb>(args, dy, dstate, BACKWARD_CHUNK)
        }
    }
    .into_tuple()
}
