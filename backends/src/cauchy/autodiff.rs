//! The Cauchy kernel under `Autodiff`: one graph node, whose backward is the inner backend's
//! [`SsmOps::cauchy_backward`] (the CPU kernel on Flex and NdArray). The node's output packs
//! `[re | im]` along the last axis, and the two results are slices of it.

use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use crate::prim::P;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, TensorMetadata, tensor::FloatTensor};

/// [`SsmOps::cauchy`] under `Autodiff`: one [`CauchyBackward`] node.
pub(crate) fn cauchy<B: SsmOps, C: CheckpointStrategy>(
    v_re: AdTensor<B, C>,
    v_im: AdTensor<B, C>,
    w_re: AdTensor<B, C>,
    w_im: AdTensor<B, C>,
    l_re: AdTensor<B, C>,
    l_im: AdTensor<B, C>,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    let nodes = [&v_re, &v_im, &w_re, &w_im, &l_re, &l_im].map(|t| t.node());
    let k = w_re.shape().to_vec()[1];
    let parts = [v_re, v_im, w_re, w_im, l_re, l_im].map(|t| t.into_primitive());
    let run = |p: [FloatTensor<B>; 6]| {
        let [vr, vi, wr, wi, lr, li] = p;
        B::cauchy(vr, vi, wr, wi, lr, li)
    };
    match CauchyBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (re, im) = run(parts.clone());
            let out = prep.finish(parts, B::float_cat(vec![re, im], 2));
            (
                last_slice::<Ad<B, C>>(out.clone(), 0, k),
                last_slice::<Ad<B, C>>(out, k, 2 * k),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (re, im) = run(parts);
            (prep.finish(re), Ad::<B, C>::from_inner(im))
        }
    }
}

/// Slices `[.., start..end]` of the last axis of a rank-3 tensor.
fn last_slice<B: Backend>(t: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    P::<B>::new(t).narrow(2, start, end).into_inner()
}

/// The Cauchy kernel's graph node.
#[derive(Debug)]
struct CauchyBackward;

impl<B: SsmOps> Backward<B, 6> for CauchyBackward {
    /// `v`, `w`, `λ` as (re, im) parts.
    type State = [FloatTensor<B>; 6];

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [vr, vi, wr, wi, lr, li] = ops.state;
        let k = wr.shape().to_vec()[1];
        let grad = grads.consume::<B>(&ops.node);
        let (gr, gi) = (
            last_slice::<B>(grad.clone(), 0, k),
            last_slice::<B>(grad, k, 2 * k),
        );
        let (a, b, c, d, e, f) = B::cauchy_backward(gr, gi, vr, vi, wr, wi, lr, li);
        for (parent, g) in ops.parents.into_iter().zip([a, b, c, d, e, f]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}
