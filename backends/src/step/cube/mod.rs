//! The decode steps on the CubeCL backend: one kernel launch per step (the building blocks in
//! [`state`] and [`conv`], the whole mixers' steps in [`mamba`] and [`mamba2`]), with the
//! reference or composed body for the inputs a kernel cannot take (said once per shape, see
//! [`crate::cube::fallback`]).

pub(crate) mod conv;
pub(crate) mod mamba;
pub(crate) mod mamba2;
pub(crate) mod state;

use super::reference::{self, Mamba2StepConfig, MambaStepDims};
use crate::cube::buffers::Cb;
use crate::cube::fallback::{PORTABLE, unsupported};
use burn::backend::{TensorMetadata, tensor::FloatTensor};

/// What the whole-mixer steps run when their kernel cannot take the inputs.
const COMPOSED: &str = "the step composed of the conv and state steps";

/// [`crate::SsmOps::selective_state_step`] on its kernel, or the reference body.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_state_step(
    state: FloatTensor<Cb>,
    x: FloatTensor<Cb>,
    dt: FloatTensor<Cb>,
    a: FloatTensor<Cb>,
    b: FloatTensor<Cb>,
    c: FloatTensor<Cb>,
    d: FloatTensor<Cb>,
    z: FloatTensor<Cb>,
    gate: bool,
    dt_bias: FloatTensor<Cb>,
    dt_softplus: bool,
) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    let z = gate.then_some(z);
    let launched = state::launch(
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
            reference::selective_state_step::<Cb>(state, x, dt, a, b, c, d, z, dt_bias, dt_softplus)
        }
    }
}

/// [`crate::SsmOps::causal_conv1d_step`] on its kernel, or the reference body.
pub(crate) fn causal_conv1d_step(
    x: FloatTensor<Cb>,
    state: FloatTensor<Cb>,
    weight: FloatTensor<Cb>,
    bias: FloatTensor<Cb>,
    silu: bool,
) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    let launched = conv::launch(x.clone(), state.clone(), weight.clone(), bias.clone(), silu);
    match launched {
        Ok(out) => out,
        Err(why) => {
            unsupported("causal_conv1d_step", &[&state], why, PORTABLE);
            reference::causal_conv1d_step::<Cb>(x, state, weight, bias, silu)
        }
    }
}

/// [`crate::SsmOps::mamba_decode_step`] in one kernel launch, or composed of the conv and state
/// steps.
pub(crate) fn mamba_decode_step(
    xz: FloatTensor<Cb>,
    conv_state: FloatTensor<Cb>,
    ssm_state: FloatTensor<Cb>,
    weights: FloatTensor<Cb>,
) -> (FloatTensor<Cb>, FloatTensor<Cb>, FloatTensor<Cb>) {
    let dims = MambaStepDims::infer(
        &xz.shape(),
        &conv_state.shape(),
        &ssm_state.shape(),
        weights.shape().num_elements(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let launched = mamba::launch(
        xz.clone(),
        conv_state.clone(),
        ssm_state.clone(),
        weights.clone(),
        dims,
    );
    match launched {
        Ok(out) => out,
        Err(why) => {
            unsupported("mamba_decode_step", &[&xz, &ssm_state], why, COMPOSED);
            reference::mamba_step_composed::<Cb>(xz, conv_state, ssm_state, weights)
        }
    }
}

/// [`crate::SsmOps::mamba2_decode_step`] in one kernel launch, or composed of the conv and
/// state steps.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mamba2_decode_step(
    zxbcdt: FloatTensor<Cb>,
    conv_state: FloatTensor<Cb>,
    ssm_state: FloatTensor<Cb>,
    weights: FloatTensor<Cb>,
    heads: usize,
    groups: usize,
    dt_min: f32,
    dt_max: f32,
    eps: f32,
) -> (FloatTensor<Cb>, FloatTensor<Cb>, FloatTensor<Cb>) {
    let cfg = Mamba2StepConfig {
        heads,
        groups,
        dt_min,
        dt_max,
        eps,
    };
    let launched = mamba2::launch(
        zxbcdt.clone(),
        conv_state.clone(),
        ssm_state.clone(),
        weights.clone(),
        cfg,
    );
    match launched {
        Ok(out) => out,
        Err(why) => {
            unsupported("mamba2_decode_step", &[&zxbcdt, &ssm_state], why, COMPOSED);
            reference::mamba2_step_composed::<Cb>(zxbcdt, conv_state, ssm_state, weights, cfg)
        }
    }
}
