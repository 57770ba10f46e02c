//! Mamba-3's decode step under `Autodiff`: when any input is tracked, the reference body on
//! this backend's tensor ops, recorded op by op and so differentiable; otherwise the inner
//! backend's fused step, its outputs untracked.

use super::reference::{Mamba3StepConfig, mamba3_step_composed};
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;

/// [`SsmOps::mamba3_decode_step`] under `Autodiff`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mamba3_decode_step<B: SsmOps, C: CheckpointStrategy>(
    proj: AdTensor<B, C>,
    conv_state: AdTensor<B, C>,
    ssm_state: AdTensor<B, C>,
    weights: AdTensor<B, C>,
    heads: usize,
    groups: usize,
    rank: usize,
    angles: usize,
    mimo: bool,
    outproj_norm: bool,
    a_floor: f32,
    eps: f32,
) -> (AdTensor<B, C>, AdTensor<B, C>, AdTensor<B, C>) {
    let cfg = Mamba3StepConfig {
        heads,
        groups,
        rank,
        angles,
        mimo,
        outproj_norm,
        a_floor,
        eps,
    };
    if [&proj, &conv_state, &ssm_state, &weights]
        .iter()
        .any(|t| t.is_tracked())
    {
        // Differentiable: composed from this backend's ops, recorded one by one.
        return mamba3_step_composed::<Ad<B, C>>(proj, conv_state, ssm_state, weights, cfg);
    }
    let (y, cs, ss) = B::mamba3_decode_step(
        proj.into_primitive(),
        conv_state.into_primitive(),
        ssm_state.into_primitive(),
        weights.into_primitive(),
        heads,
        groups,
        rank,
        angles,
        mimo,
        outproj_norm,
        a_floor,
        eps,
    );
    (
        Ad::<B, C>::from_inner(y),
        Ad::<B, C>::from_inner(cs),
        Ad::<B, C>::from_inner(ss),
    )
}
