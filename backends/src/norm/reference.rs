//! The residual add and RMSNorm's reference (portable) body (mamba_ssm's fused add-norm): the
//! default body of [`crate::SsmOps::add_rms_norm`], and what the CPU backends run.

use crate::prim::P;
use burn::backend::{Backend, tensor::FloatTensor};
use std::ops::{Add, Mul};

/// Residual add then RMSNorm over the last axis: `s = x + residual` (or `x`), and
/// `s / sqrt(mean(s²) + eps) * weight`. Returns both.
pub fn add_rms_norm<B: Backend>(
    x: FloatTensor<B>,
    residual: Option<FloatTensor<B>>,
    weight: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = match residual {
        Some(r) => P::<B>::new(x).add(P::new(r)),
        None => P::<B>::new(x),
    };
    let dims = s.dims();
    let last = dims.len() - 1;
    let ms = B::float_mean_dim(s.clone().mul(s.clone()).into_inner(), last);
    let rms = P::<B>::new(B::float_sqrt(P::<B>::new(ms).add_scalar(eps).into_inner()));
    let mut wdims = vec![1; dims.len()];
    wdims[last] = dims[last];
    let normed = P::<B>::new(B::float_div(
        s.clone().into_inner(),
        rms.expand(&dims).into_inner(),
    ))
    .mul(P::<B>::new(weight).reshape(&wdims));
    (s.into_inner(), normed.into_inner())
}
