//! Products of a few rows by a weight matrix: the projections and the LM head of a decode step.

use crate::ops::SsmOps;
use burn::backend::Dispatch;
use burn::tensor::{DType, Tensor};

/// `x w` for `x` (M, K) and `w` (K, N) (Burn's `Linear` layout): the product of a decode step,
/// with the weight read in place and its columns spread over the cores on Flex (see
/// [`SsmOps::rows_matmul`]); any M is accepted. A weight quantized by [`crate::quantize_q8`]
/// is multiplied from its 8-bit values ([`SsmOps::q_rows_matmul`]).
///
/// # Panics
/// When the inner dimensions differ.
pub fn rows_matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    product(x, w, false)
}

/// `x wᵀ` for `x` (M, K) and `w` (N, K) (a tied LM head in the embedding's layout, which is
/// never transposed in memory).
///
/// # Panics
/// When the inner dimensions differ.
pub fn rows_matmul_transposed(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    product(x, w, true)
}

/// Both products: checks K, then the op.
fn product(x: Tensor<2>, w: Tensor<2>, transposed: bool) -> Tensor<2> {
    let ([_, k], [w0, w1]) = (x.dims(), w.dims());
    let (kw, w_shape) = if transposed {
        (w1, format!("(N, {w1})"))
    } else {
        (w0, format!("({w0}, N)"))
    };
    assert_eq!(
        k, kw,
        "rows_matmul: x (M, {k}) and w {w_shape} disagree on K"
    );
    if matches!(w.dtype(), DType::QFloat(_)) {
        return Tensor::from_dispatch(<Dispatch as SsmOps>::q_rows_matmul(
            x.into_dispatch(),
            w.into_dispatch(),
            transposed,
        ));
    }
    Tensor::from_dispatch(<Dispatch as SsmOps>::rows_matmul(
        x.into_dispatch(),
        w.into_dispatch(),
        transposed,
    ))
}
