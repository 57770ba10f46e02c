//! The residual add and RMSNorm under `Autodiff`: when any input is tracked, the reference
//! body, recorded op by op and so differentiable; otherwise the inner backend's fused op.

use super::reference;
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;

/// [`SsmOps::add_rms_norm`] under `Autodiff`.
pub(crate) fn add_rms_norm<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    residual: AdTensor<B, C>,
    has_residual: bool,
    weight: AdTensor<B, C>,
    eps: f32,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    if x.is_tracked() || weight.is_tracked() || (has_residual && residual.is_tracked()) {
        return reference::add_rms_norm::<Ad<B, C>>(
            x,
            has_residual.then_some(residual),
            weight,
            eps,
        );
    }
    let (s, y) = B::add_rms_norm(
        x.into_primitive(),
        residual.into_primitive(),
        has_residual,
        weight.into_primitive(),
        eps,
    );
    (Ad::<B, C>::from_inner(s), Ad::<B, C>::from_inner(y))
}
