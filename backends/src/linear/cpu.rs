//! The few-row product on Flex: the weight read in place from Flex's primitive (a shared
//! parameter is never copied) and its columns spread over the cores ([`crate::cpu::gemv`]).
//! NdArray takes the reference body (its matmul).

use super::reference;
use crate::cpu::gemv::{self, MAX_ROWS, WeightView, unit_stride};
use crate::cpu::{calls, device_tensor};
use burn::backend::{Flex, tensor::FloatTensor};
use burn::tensor::DType;

/// [`crate::SsmOps::rows_matmul`] on Flex: `x` (M, K) times `w` (K, N), or `w`ᵀ with `w` (N, K)
/// when `transposed`, reading both primitives in place. Products of more than [`MAX_ROWS`] rows,
/// other float types and weights with no unit stride are Flex's own matmul (the op's
/// definition; its GEMM is the right kernel for them).
pub(crate) fn rows_matmul(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    transposed: bool,
) -> FloatTensor<Flex> {
    let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
    let ws = w.layout().shape();
    let st = w.layout().strides();
    let (n, sk, sn) = if transposed {
        (ws[0], st[1], st[0])
    } else {
        (ws[1], st[0], st[1])
    };
    let f32s = x.dtype() == DType::F32 && w.dtype() == DType::F32;
    // Negative strides (flipped views) do not convert.
    let strides = usize::try_from(sk).ok().zip(usize::try_from(sn).ok());
    let Some((sk, sn)) =
        strides.filter(|&(sk, sn)| f32s && m <= MAX_ROWS && unit_stride(sk, sn, k, n))
    else {
        return reference::rows_matmul::<Flex>(x, w, transposed);
    };
    let view = WeightView {
        data: w.storage::<f32>(),
        off: w.layout().start_offset(),
        sk,
        sn,
        k,
        n,
    };
    let x = x.to_contiguous();
    let xs = &x.storage::<f32>()[x.layout().start_offset()..][..m * k];
    let out = gemv::rows_matmul(xs, m, &view);
    calls::count(&calls::ROWS_MATMUL);
    device_tensor::<Flex>(out, vec![m, n], &Default::default())
}
