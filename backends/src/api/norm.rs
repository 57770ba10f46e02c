//! mamba_ssm's fused residual add and RMSNorm on `Tensor`s.

use crate::ops::SsmOps;
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// Residual add then RMSNorm over the last axis, fused (one kernel launch on the GPU backends):
/// returns `s = x + residual` (or `x`) and `s / sqrt(mean(s²) + eps) * weight`.
pub fn add_rms_norm<const D: usize>(
    x: Tensor<D>,
    residual: Option<Tensor<D>>,
    weight: Tensor<1>,
    eps: f64,
) -> (Tensor<D>, Tensor<D>) {
    let has_residual = residual.is_some();
    let residual = residual.unwrap_or_else(|| x.clone());
    let (s, y) = <Dispatch as SsmOps>::add_rms_norm(
        x.into_dispatch(),
        residual.into_dispatch(),
        has_residual,
        weight.into_dispatch(),
        eps as f32,
    );
    (Tensor::from_dispatch(s), Tensor::from_dispatch(y))
}
