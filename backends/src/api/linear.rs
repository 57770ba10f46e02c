//! Products of a few rows by a weight matrix: the projections and the LM head of a decode step.

use crate::ops::SsmOps;
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// `x w` for `x` (M, K) and `w` (K, N) (Burn's `Linear` layout): the product of a decode step,
/// with the weight read in place and its columns spread over the cores on Flex (see
/// [`SsmOps::rows_matmul`]); any M is accepted.
///
/// # Panics
/// When the inner dimensions differ.
pub fn rows_matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let ([_, k], [kw, _]) = (x.dims(), w.dims());
    assert_eq!(
        k, kw,
        "rows_matmul: x (M, {k}) and w ({kw}, N) disagree on K"
    );
    Tensor::from_dispatch(<Dispatch as SsmOps>::rows_matmul(
        x.into_dispatch(),
        w.into_dispatch(),
        false,
    ))
}

/// `x wᵀ` for `x` (M, K) and `w` (N, K) (a tied LM head in the embedding's layout, which is
/// never transposed in memory).
///
/// # Panics
/// When the inner dimensions differ.
pub fn rows_matmul_transposed(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let ([_, k], [_, kw]) = (x.dims(), w.dims());
    assert_eq!(
        k, kw,
        "rows_matmul_transposed: x (M, {k}) and w (N, {kw}) disagree on K"
    );
    Tensor::from_dispatch(<Dispatch as SsmOps>::rows_matmul(
        x.into_dispatch(),
        w.into_dispatch(),
        true,
    ))
}
