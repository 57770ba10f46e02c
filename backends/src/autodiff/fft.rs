//! Backward nodes of the FFT ops, made of the same ops: the rfft and irfft are each other's
//! adjoints up to the per-bin weights, and the causal convolution's gradients are
//! convolutions of the flipped output gradient (`du = flip(flip(dy) ∗ k)`, `dk = flip(flip(dy) ∗ u)`).

use crate::ops::SsmOps;
use crate::portable::prim::P;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};

/// Slices `[.., start..end]` of the last axis, at any rank.
pub(super) fn last_slice<B: Backend>(
    t: FloatTensor<B>,
    start: usize,
    end: usize,
) -> FloatTensor<B> {
    let rank = t.shape().num_dims();
    P::<B>::new(t).narrow(rank - 1, start, end).into_inner()
}

/// `t * w[k]` along the last axis, `w` given per bin.
fn scale_bins<B: Backend>(t: FloatTensor<B>, w: impl Fn(usize) -> f32) -> FloatTensor<B> {
    let t = P::<B>::new(t);
    let dims = t.dims();
    let bins = dims[dims.len() - 1];
    let mut wd = vec![1; dims.len()];
    wd[dims.len() - 1] = bins;
    let w = P::from_vec((0..bins).map(w).collect(), &wd, &t.device());
    (t * w).into_inner()
}

/// Whether bin `k` of an `n`-point one-sided spectrum is the DC or the Nyquist bin.
fn edge_bin(k: usize, n: usize) -> bool {
    k == 0 || 2 * k == n
}

#[derive(Debug)]
pub(super) struct RfftBackward;

impl<B: SsmOps> Backward<B, 1> for RfftBackward {
    /// (input width m, transform length n).
    type State = (usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (m, n) = ops.state;
        let bins = n / 2 + 1;
        let grad = grads.consume::<B>(&ops.node);
        // dx = n · irfft(w ∘ dRe, w ∘ dIm), w = 1 on the edge bins and 1/2 inside, cut to m.
        let w = move |k: usize| if edge_bin(k, n) { 1.0 } else { 0.5 };
        let dre = scale_bins::<B>(last_slice::<B>(grad.clone(), 0, bins), w);
        let dim = scale_bins::<B>(last_slice::<B>(grad, bins, 2 * bins), w);
        let dx = B::float_mul_scalar(B::irfft(dre, dim, n), (n as f32).into());
        if let Some(node) = &ops.parents[0] {
            grads.register::<B>(node.id, crate::portable::fft::fit_last::<B>(dx, m));
        }
    }
}

#[derive(Debug)]
pub(super) struct IrfftBackward;

impl<B: SsmOps> Backward<B, 2> for IrfftBackward {
    /// The transform length n.
    type State = usize;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let n = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        // dRe_k = (c_k / n) Re rfft(dy)_k, dIm_k = (c_k / n) Im rfft(dy)_k.
        let (re, im) = B::rfft(grad, n);
        let w = move |k: usize| {
            if edge_bin(k, n) {
                1.0 / n as f32
            } else {
                2.0 / n as f32
            }
        };
        let all = [scale_bins::<B>(re, w), scale_bins::<B>(im, w)];
        for (parent, g) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct ConvBackward;

impl<B: SsmOps> Backward<B, 2> for ConvBackward {
    /// The inputs u (B, H, L) and k (1 or B, H, L).
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (u, k) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        // Both gradients are correlations with dy: du = flip(flip(dy) ∗ k),
        // dk = flip(flip(dy) ∗ u), summed over the batch when the kernel is shared.
        let flipped = B::float_flip(grad, &[2]);
        let [pu, pk] = ops.parents;
        if let Some(node) = pu {
            let du = B::float_flip(B::causal_conv_fft(flipped.clone(), k.clone()), &[2]);
            grads.register::<B>(node.id, du);
        }
        if let Some(node) = pk {
            let (b, bk) = (u.shape().to_vec()[0], k.shape().to_vec()[0]);
            let mut dk = B::float_flip(B::causal_conv_fft(flipped, u), &[2]);
            if bk == 1 && b > 1 {
                dk = B::float_sum_dim(dk, 0);
            }
            grads.register::<B>(node.id, dk);
        }
    }
}
