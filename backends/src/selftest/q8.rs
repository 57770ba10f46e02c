//! The products from 8-bit weights (CPU only: on a GPU the quantized model is refused) against
//! their portable body, the weight dequantized and multiplied by the backend's matmul: a
//! decode's few rows (x's rows rounded per block in the body as the kernel rounds them, so the
//! two agree up to f32 summation order) and a prefill's many rows.

use super::{CpuKernel, Kernels, Suite, host};
use crate::linear::reference::q_rows_matmul;
use burn::backend::Dispatch;
use burn::tensor::Tensor;

const Q8: Kernels = Kernels {
    gpu: &[],
    cpu: Some(CpuKernel::Q8Product),
};

/// `x`'s rows rounded per block of `bk` as the kernel quantizes them (`dx q`, `dx = max |x| /
/// 127`).
fn rounded(x: &Tensor<2>, bk: usize) -> Tensor<2> {
    let dims = x.dims();
    let values: Vec<f32> = host(x.clone())
        .chunks(bk)
        .flat_map(|b| {
            let d = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            b.iter()
                .map(move |&v| if d > 0.0 { d * (v / d).round() } else { 0.0 })
        })
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, dims), &x.device())
}

pub(super) fn checks(s: &mut Suite<'_>) {
    if !crate::is_host(&s.device) {
        return;
    }
    // (rows, N, K, block): a decode's in_proj at mamba-130m's width, blocks of 32 and 128,
    // and a prefill's rows.
    for (m, n, k, bk) in [(1, 3072, 768, 128), (4, 300, 256, 32), (40, 200, 128, 32)] {
        let x = s.normal([m, k]);
        let w = s.normal([n, k]);
        let Ok(wq) = crate::quantize_q8(w, bk) else {
            continue;
        };
        let body_x = if m <= crate::cpu::gemv::MAX_ROWS {
            rounded(&x, bk)
        } else {
            x.clone()
        };
        s.check(
            "q8 product",
            format!("rows {m} N {n} K {k} blocks of {bk}"),
            Q8,
            &[("y", 1e-5)],
            || {
                let y = q_rows_matmul::<Dispatch>(
                    body_x.clone().into_dispatch(),
                    wq.clone().into_dispatch(),
                    true,
                );
                vec![host(Tensor::<2>::from_dispatch(y))]
            },
            || vec![host(crate::rows_matmul_transposed(x.clone(), wq.clone()))],
        );
    }
}
