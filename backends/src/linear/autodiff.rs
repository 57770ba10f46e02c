//! The few-row product under `Autodiff`: when an input is tracked, the reference body (this
//! backend's matmul, recorded); otherwise the inner backend's op.

use super::reference;
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;

/// [`SsmOps::rows_matmul`] under `Autodiff`.
pub(crate) fn rows_matmul<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    w: AdTensor<B, C>,
    transposed: bool,
) -> AdTensor<B, C> {
    if x.is_tracked() || w.is_tracked() {
        // Differentiable: this backend's matmul, recorded.
        return reference::rows_matmul::<Ad<B, C>>(x, w, transposed);
    }
    Ad::<B, C>::from_inner(B::rows_matmul(
        x.into_primitive(),
        w.into_primitive(),
        transposed,
    ))
}
