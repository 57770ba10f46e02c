//! `#[cube]` helpers the kernels share.

use cubecl::prelude::*;

/// `log(1 + exp(x))`, accurate for negative `x` (through `log1p`) and overflow-free for large `x`.
#[cube]
pub(crate) fn softplus_f<F: Float>(x: F) -> F {
    if x > F::new(20.0) { x } else { x.exp().log1p() }
}

/// `1 / (1 + exp(-x))`.
#[cube]
pub(crate) fn sigmoid_f<F: Float>(x: F) -> F {
    F::new(1.0) / (F::new(1.0) + (-x).exp())
}
