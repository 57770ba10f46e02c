//! mamba_ssm's fused residual add and RMSNorm on `Tensor`s.

use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// Residual add then RMSNorm over the last axis, fused (one kernel launch on the GPU backends):
/// returns `s = x + residual` (or `x`) and `s / sqrt(mean(s²) + eps) * weight`, computed in f32
/// and returned in `x`'s dtype (`residual` and `weight` may be of any float dtype).
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    residual: Option<Tensor<D>>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    let dtype = activation_dtype(&x);
    note_widened("add + RMSNorm", dtype);
    let has_residual = residual.is_some();
    let x = wide(x);
    let residual = residual.map(wide).unwrap_or_else(|| x.clone());
    let (s, y) = <Dispatch as SsmOps>::add_rms_norm(
        x.into_dispatch(),
        residual.into_dispatch(),
        has_residual,
        wide(weight).into_dispatch(),
        eps as f32,
    );
    (
        back(Tensor::from_dispatch(s), dtype),
        back(Tensor::from_dispatch(y), dtype),
    )
}
