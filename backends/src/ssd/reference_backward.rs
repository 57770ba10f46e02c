//! Gradients of the log-decay SSD ([`crate::SsmOps::ssd_log_decay`]) as Burn's autodiff takes
//! them through the chunked form ([`super::reference::ssd_chunked_log_decay`]): the portable body of
//! [`crate::SsmOps::ssd_log_decay_backward`], the oracle of the fused CPU backward, and what the
//! GPU backends run (matmuls, with the inter-chunk pass's backward on the state-pass kernel run
//! in reverse, see [`super::autodiff`]).
//!
//! The forward is recomputed under a private `Autodiff` graph of the backend and the seed
//! `Σ y ∘ dy + Σ h_L ∘ dstate` is differentiated, so only one chunk's Q x Q masks live at a time
//! per (row, head, chunk) and nothing of the caller's graph is touched.
#![allow(clippy::too_many_arguments)]

use super::reference::ssd_chunked_log_decay;
use crate::ops::SsmOps;
use crate::prim::P;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, AutodiffBackend, Backend, TensorMetadata, tensor::FloatTensor};
use std::ops::{Add, Mul};

/// The gradients of the log-decay SSD, each shaped as its input.
pub struct SsdGrads<B: Backend> {
    /// The gradient of `x` (B, L·R, H, P).
    pub dx: FloatTensor<B>,
    /// The gradient of `dt` (B, L, H).
    pub ddt: FloatTensor<B>,
    /// The gradient of the log decays (B, L, H).
    pub dlog_decay: FloatTensor<B>,
    /// The gradient of `B` (B, L·R, G, N).
    pub db: FloatTensor<B>,
    /// The gradient of `C` (B, L·R, G, N).
    pub dc: FloatTensor<B>,
    /// The gradient of `D` (H).
    pub dd: FloatTensor<B>,
    /// The gradient of the initial state (B, H, P, N).
    pub dh0: FloatTensor<B>,
}

/// The tuple order of [`crate::SsmOps::ssd_log_decay_backward`]'s results.
pub type SsdGradTuple<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

impl<B: Backend> SsdGrads<B> {
    pub fn into_tuple(self) -> SsdGradTuple<B> {
        (
            self.dx,
            self.ddt,
            self.dlog_decay,
            self.db,
            self.dc,
            self.dd,
            self.dh0,
        )
    }
}

/// The gradients of `ssd_chunked_log_decay(x, dt, log_decay, b, c, d, h0, reset, chunk, rank)`
/// given `dy` (B, L·R, H, P) and `dstate` (B, H, P, N), the gradients reaching its two
/// outputs. `reset` is a constant (no gradient).
pub fn ssd_log_decay_grads<B: Backend>(
    inputs: [FloatTensor<B>; 7],
    reset: Option<FloatTensor<B>>,
    chunk: usize,
    rank: usize,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
) -> SsdGrads<B>
where
    Autodiff<B>: SsmOps,
{
    type A<B> = Autodiff<B>;
    let leaves = inputs.map(|t| A::<B>::float_set_require_grad(A::<B>::from_inner(t), true));
    let [x, dt, log_decay, b, c, d, h0] = leaves.clone();
    let (y, h) = ssd_chunked_log_decay::<A<B>>(
        x,
        dt,
        log_decay,
        b,
        c,
        d,
        h0,
        reset.map(A::<B>::from_inner),
        chunk,
        rank,
    );
    let total = |t: FloatTensor<A<B>>, seed: FloatTensor<B>| {
        let n = t.shape().num_elements();
        P::<A<B>>::new(t)
            .mul(P::new(A::<B>::from_inner(seed)))
            .reshape(&[n])
            .sum_dim(0)
    };
    let seed = total(y, dy).add(total(h, dstate));
    let grads = A::<B>::backward(seed.into_inner());
    let [dx, ddt, dlog_decay, db, dc, dd, dh0] = leaves.map(|leaf| {
        A::<B>::grad(&leaf, &grads).unwrap_or_else(|| {
            // An input the seed does not depend on (all of `dy` and `dstate` zero is not such a
            // case: the graph still reaches every input).
            let inner = A::<B>::inner(leaf);
            B::float_zeros(inner.shape(), &inner.device(), inner.dtype().into())
        })
    });
    SsdGrads {
        dx,
        ddt,
        dlog_decay,
        db,
        dc,
        dd,
        dh0,
    }
}
