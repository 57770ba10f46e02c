//! The FFT ops under `Autodiff`: one graph node each, whose backward is made of the same ops:
//! the rfft and irfft are each other's adjoints up to the per-bin weights, and the causal
//! convolution's gradients are convolutions of the flipped output gradient
//! (`du = flip(flip(dy) ∗ k)`, `dk = flip(flip(dy) ∗ u)`).

use super::reference::fit_last;
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use crate::prim::P;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, TensorMetadata, tensor::FloatTensor};

/// [`SsmOps::rfft`] under `Autodiff`: one [`RfftBackward`] node; the node's output packs
/// `[re | im]` along the last axis, and the two results are slices of it.
pub(crate) fn rfft<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    n: usize,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    let m = *x
        .shape()
        .to_vec()
        .last()
        .expect("rfft: a tensor of rank >= 1");
    let bins = n / 2 + 1;
    match RfftBackward
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (re, im) = B::rfft(x.into_primitive(), n);
            let rank = re.shape().num_dims();
            let out = prep.finish((m, n), B::float_cat(vec![re, im], rank - 1));
            (
                last_slice::<Ad<B, C>>(out.clone(), 0, bins),
                last_slice::<Ad<B, C>>(out, bins, 2 * bins),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (re, im) = B::rfft(x.into_primitive(), n);
            (prep.finish(re), Ad::<B, C>::from_inner(im))
        }
    }
}

/// [`SsmOps::irfft`] under `Autodiff`: one [`IrfftBackward`] node.
pub(crate) fn irfft<B: SsmOps, C: CheckpointStrategy>(
    re: AdTensor<B, C>,
    im: AdTensor<B, C>,
    n: usize,
) -> AdTensor<B, C> {
    match IrfftBackward
        .prepare::<C>([re.node(), im.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            prep.finish(n, B::irfft(re.into_primitive(), im.into_primitive(), n))
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::irfft(re.into_primitive(), im.into_primitive(), n))
        }
    }
}

/// [`SsmOps::causal_conv_fft`] under `Autodiff`: one [`ConvBackward`] node.
pub(crate) fn causal_conv_fft<B: SsmOps, C: CheckpointStrategy>(
    u: AdTensor<B, C>,
    k: AdTensor<B, C>,
) -> AdTensor<B, C> {
    match ConvBackward
        .prepare::<C>([u.node(), k.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (u, k) = (u.into_primitive(), k.into_primitive());
            let y = B::causal_conv_fft(u.clone(), k.clone());
            prep.finish((u, k), y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::causal_conv_fft(u.into_primitive(), k.into_primitive()))
        }
    }
}

/// Slices `[.., start..end]` of the last axis, at any rank.
fn last_slice<B: Backend>(t: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
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

/// The rfft's graph node.
#[derive(Debug)]
struct RfftBackward;

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
            grads.register::<B>(node.id, fit_last::<B>(dx, m));
        }
    }
}

/// The irfft's graph node.
#[derive(Debug)]
struct IrfftBackward;

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

/// The FFT convolution's graph node.
#[derive(Debug)]
struct ConvBackward;

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
