//! The few-row product on Flex: the weight read in place from Flex's primitive (a shared
//! parameter is never copied) and its columns spread over the cores ([`crate::cpu::gemv`]).
//! NdArray takes the reference body (its matmul). The 8-bit product and lookup read Flex's
//! quantized tensors (int8 values and block scales) in place ([`crate::cpu::gemv_q8`]).

use super::reference;
use crate::cpu::gemv::{self, MAX_ROWS, WeightView, Widen, unit_stride};
use crate::cpu::gemv_q8::{self, Q8View};
use crate::cpu::{calls, device_tensor};
use burn::backend::{
    Flex, TensorMetadata,
    ops::{FloatTensorOps, IntTensorOps},
    tensor::{FloatTensor, IntTensor, QuantizedTensor},
};
use burn::tensor::{DType, TensorData, bf16, read_sync};

/// [`crate::SsmOps::rows_matmul`] on Flex: `x` (M, K) times `w` (K, N), or `w`ᵀ with `w` (N, K)
/// when `transposed`, reading both primitives in place: f32, or bf16 (`x` and `w` both bf16;
/// the weight widened in the register, the sums in f32, the result rounded to bf16 once: a
/// bf16 model's decode measured 7x faster than through Flex's bf16 matmul). Products of more
/// than [`MAX_ROWS`] rows, f16 (Flex's f16 matmul measured faster than this kernel widening
/// f16 in software), mixed or other float types and weights with no unit stride are Flex's own
/// matmul (the op's definition; its GEMM is the right kernel for them).
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
    let dtype = w.dtype();
    let kernel_type = x.dtype() == dtype && matches!(dtype, DType::F32 | DType::BF16);
    // Negative strides (flipped views) do not convert.
    let strides = usize::try_from(sk).ok().zip(usize::try_from(sn).ok());
    let Some((sk, sn)) =
        strides.filter(|&(sk, sn)| kernel_type && m <= MAX_ROWS && unit_stride(sk, sn, k, n))
    else {
        return reference::rows_matmul::<Flex>(x, w, transposed);
    };
    let x = x.to_contiguous();
    let x_at = x.layout().start_offset();
    // The weight read in place as its own type; bf16 rows of x widened to f32 once.
    macro_rules! view {
        ($t:ty) => {
            WeightView {
                data: w.storage::<$t>(),
                off: w.layout().start_offset(),
                sk,
                sn,
                k,
                n,
            }
        };
    }
    let out = if dtype == DType::BF16 {
        let xs: Vec<f32> = x.storage::<bf16>()[x_at..][..m * k]
            .iter()
            .map(|v| v.widen())
            .collect();
        gemv::rows_matmul(&xs, m, &view!(bf16))
    } else {
        gemv::rows_matmul(&x.storage::<f32>()[x_at..][..m * k], m, &view!(f32))
    };
    calls::count(&calls::ROWS_MATMUL);
    if dtype == DType::F32 {
        return device_tensor::<Flex>(out, vec![m, n], &Default::default());
    }
    let data = TensorData::new(out, [m, n]).convert::<bf16>();
    Flex::float_from_data(data, &Default::default())
}

/// The int8 values and block scales of a Flex quantized (N, K) matrix as a [`Q8View`]: exactly
/// [`crate::q8_scheme`] (values in [-127, 127]: the SIMD dot products negate them, which -128
/// would overflow), a contiguous tensor. `None` for any other scheme or layout (the caller
/// takes the reference body, which says so).
fn q8_view(w: &QuantizedTensor<Flex>) -> Option<Q8View<'_>> {
    let DType::QFloat(scheme) = w.dtype() else {
        return None;
    };
    let [1, bk]: [u8; 2] = scheme.block_size()?.as_dim() else {
        return None;
    };
    let t = w.tensor();
    let shape = t.layout().shape();
    if scheme != crate::q8_scheme(bk) || shape.num_dims() != 2 || !t.layout().is_contiguous() {
        return None;
    }
    let view = Q8View {
        q: &t.storage::<i8>()[t.layout().start_offset()..],
        scales: w.scales(),
        k: shape[1],
        n: shape[0],
        bk: bk as usize,
    };
    view.consistent().then_some(view)
}

/// [`crate::SsmOps::q_rows_matmul`] on Flex, for `x wᵀ` with `w` an 8-bit (N, K) matrix:
/// [`gemv_q8::rows_matmul_q8`] for at most [`MAX_ROWS`] f32 rows, the weight dequantized once
/// ([`gemv_q8::dequantize`]) and Flex's GEMM for more; other schemes and `x w` the reference
/// body.
pub(crate) fn q_rows_matmul(
    x: FloatTensor<Flex>,
    w: QuantizedTensor<Flex>,
    transposed: bool,
) -> FloatTensor<Flex> {
    let Some(view) = q8_view(&w).filter(|_| transposed && x.dtype() == DType::F32) else {
        return reference::q_rows_matmul::<Flex>(x, w, transposed);
    };
    let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
    if m > MAX_ROWS {
        let wf = device_tensor::<Flex>(
            gemv_q8::dequantize(&view),
            vec![view.n, view.k],
            &Default::default(),
        );
        calls::count(&calls::ROWS_MATMUL_Q8);
        return reference::rows_matmul::<Flex>(x, wf, true);
    }
    let x = x.to_contiguous();
    let xs = &x.storage::<f32>()[x.layout().start_offset()..][..m * k];
    let out = gemv_q8::rows_matmul_q8(xs, m, &view);
    calls::count(&calls::ROWS_MATMUL_Q8);
    device_tensor::<Flex>(out, vec![m, view.n], &Default::default())
}

/// [`crate::SsmOps::q_embedding`] on Flex: only the rows asked for are read and dequantized.
///
/// # Panics
/// When an id is outside the matrix (the tensor-level function checks first).
pub(crate) fn q_embedding(w: QuantizedTensor<Flex>, ids: IntTensor<Flex>) -> FloatTensor<Flex> {
    let Some(view) = q8_view(&w) else {
        return reference::q_embedding::<Flex>(w, ids);
    };
    let ids: Vec<usize> = read_sync(Flex::int_into_data(ids))
        .expect("reading a CPU tensor cannot fail")
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("ids read as i64")
        .into_iter()
        .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
        .collect();
    let out = gemv_q8::gather_rows(&view, &ids);
    device_tensor::<Flex>(out, vec![ids.len(), view.k], &Default::default())
}
