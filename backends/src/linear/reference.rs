//! The few-row product's reference (portable) body: the backend's own matmul, the default body
//! of [`crate::SsmOps::rows_matmul`].

use burn::backend::{Backend, tensor::FloatTensor};

/// `x w` with `w` (K, N), or `x wᵀ` with `w` (N, K) when `transposed`; `x` (M, K). The
/// transposed product is computed as `(w xᵀ)ᵀ`, so a large (N, K) weight (a tied LM head) is
/// never transposed in memory.
pub fn rows_matmul<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    if transposed {
        B::float_transpose(B::float_matmul(w, B::float_transpose(x)))
    } else {
        B::float_matmul(x, w)
    }
}
