//! The decode steps under `Autodiff`: when any input is tracked, the reference body (the
//! whole-mixer steps composed of this backend's conv and state steps), recorded op by op and so
//! differentiable; otherwise the inner backend's fused step, its outputs untracked.

use super::reference::{self, Mamba2StepConfig};
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;

/// [`SsmOps::selective_state_step`] under `Autodiff`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_state_step<B: SsmOps, C: CheckpointStrategy>(
    state: AdTensor<B, C>,
    x: AdTensor<B, C>,
    dt: AdTensor<B, C>,
    a: AdTensor<B, C>,
    b: AdTensor<B, C>,
    c: AdTensor<B, C>,
    d: AdTensor<B, C>,
    z: AdTensor<B, C>,
    gate: bool,
    dt_bias: AdTensor<B, C>,
    dt_softplus: bool,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    let tracked = [&state, &x, &dt, &a, &b, &c, &d, &dt_bias]
        .iter()
        .any(|t| t.is_tracked())
        || (gate && z.is_tracked());
    if tracked {
        // Differentiable: the reference body, recorded op by op.
        return reference::selective_state_step::<Ad<B, C>>(
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
        );
    }
    let (y, h) = B::selective_state_step(
        state.into_primitive(),
        x.into_primitive(),
        dt.into_primitive(),
        a.into_primitive(),
        b.into_primitive(),
        c.into_primitive(),
        d.into_primitive(),
        z.into_primitive(),
        gate,
        dt_bias.into_primitive(),
        dt_softplus,
    );
    (Ad::<B, C>::from_inner(y), Ad::<B, C>::from_inner(h))
}

/// [`SsmOps::causal_conv1d_step`] under `Autodiff`.
pub(crate) fn causal_conv1d_step<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    state: AdTensor<B, C>,
    weight: AdTensor<B, C>,
    bias: AdTensor<B, C>,
    silu: bool,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    if [&x, &state, &weight, &bias].iter().any(|t| t.is_tracked()) {
        return reference::causal_conv1d_step::<Ad<B, C>>(x, state, weight, bias, silu);
    }
    let (y, s) = B::causal_conv1d_step(
        x.into_primitive(),
        state.into_primitive(),
        weight.into_primitive(),
        bias.into_primitive(),
        silu,
    );
    (Ad::<B, C>::from_inner(y), Ad::<B, C>::from_inner(s))
}

/// [`SsmOps::mamba_decode_step`] under `Autodiff`.
pub(crate) fn mamba_decode_step<B: SsmOps, C: CheckpointStrategy>(
    xz: AdTensor<B, C>,
    conv_state: AdTensor<B, C>,
    ssm_state: AdTensor<B, C>,
    weights: AdTensor<B, C>,
) -> (AdTensor<B, C>, AdTensor<B, C>, AdTensor<B, C>) {
    if [&xz, &conv_state, &ssm_state, &weights]
        .iter()
        .any(|t| t.is_tracked())
    {
        // Differentiable: composed from this backend's ops, recorded one by one.
        return reference::mamba_step_composed::<Ad<B, C>>(xz, conv_state, ssm_state, weights);
    }
    let (y, cs, ss) = B::mamba_decode_step(
        xz.into_primitive(),
        conv_state.into_primitive(),
        ssm_state.into_primitive(),
        weights.into_primitive(),
    );
    (
        Ad::<B, C>::from_inner(y),
        Ad::<B, C>::from_inner(cs),
        Ad::<B, C>::from_inner(ss),
    )
}

/// [`SsmOps::mamba2_decode_step`] under `Autodiff`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mamba2_decode_step<B: SsmOps, C: CheckpointStrategy>(
    zxbcdt: AdTensor<B, C>,
    conv_state: AdTensor<B, C>,
    ssm_state: AdTensor<B, C>,
    weights: AdTensor<B, C>,
    heads: usize,
    groups: usize,
    dt_min: f32,
    dt_max: f32,
    eps: f32,
) -> (AdTensor<B, C>, AdTensor<B, C>, AdTensor<B, C>) {
    let cfg = Mamba2StepConfig {
        heads,
        groups,
        dt_min,
        dt_max,
        eps,
    };
    if [&zxbcdt, &conv_state, &ssm_state, &weights]
        .iter()
        .any(|t| t.is_tracked())
    {
        return reference::mamba2_step_composed::<Ad<B, C>>(
            zxbcdt, conv_state, ssm_state, weights, cfg,
        );
    }
    let (y, cs, ss) = B::mamba2_decode_step(
        zxbcdt.into_primitive(),
        conv_state.into_primitive(),
        ssm_state.into_primitive(),
        weights.into_primitive(),
        heads,
        groups,
        dt_min,
        dt_max,
        eps,
    );
    (
        Ad::<B, C>::from_inner(y),
        Ad::<B, C>::from_inner(cs),
        Ad::<B, C>::from_inner(ss),
    )
}
