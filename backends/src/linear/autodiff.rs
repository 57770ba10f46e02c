//! The few-row product under `Autodiff`: when an input is tracked, the reference body (this
//! backend's matmul, recorded); otherwise the inner backend's op.

use super::reference;
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use burn::backend::AutodiffBackend;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{IntTensor, QuantizedTensor};

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

/// [`SsmOps::q_rows_matmul`] under `Autodiff`: the 8-bit weight is never tracked (a quantized
/// model is not trained); a tracked `x` takes the reference body (the dequantized weight's
/// matmul, recorded), an untracked one the inner backend's op.
pub(crate) fn q_rows_matmul<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    w: QuantizedTensor<B>,
    transposed: bool,
) -> AdTensor<B, C> {
    if x.is_tracked() {
        return reference::q_rows_matmul::<Ad<B, C>>(x, w, transposed);
    }
    Ad::<B, C>::from_inner(B::q_rows_matmul(x.into_primitive(), w, transposed))
}

/// [`SsmOps::q_embedding`] under `Autodiff`: the inner backend's lookup (never tracked).
pub(crate) fn q_embedding<B: SsmOps, C: CheckpointStrategy>(
    w: QuantizedTensor<B>,
    ids: IntTensor<B>,
) -> AdTensor<B, C> {
    Ad::<B, C>::from_inner(B::q_embedding(w, ids))
}
