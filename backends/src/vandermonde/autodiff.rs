//! The Vandermonde kernel under `Autodiff`: one graph node, whose backward is the inner
//! backend's [`SsmOps::vandermonde_backward`] (a kernel on the CPU and the GPUs, so training
//! never materialises the (H, N, L) powers either). `shift` is a constant.

use crate::autodiff::AdTensor;
use crate::ops::SsmOps;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;

/// [`SsmOps::vandermonde`] under `Autodiff`: one [`VandermondeBackward`] node.
pub(crate) fn vandermonde<B: SsmOps, C: CheckpointStrategy>(
    c_re: AdTensor<B, C>,
    c_im: AdTensor<B, C>,
    z_re: AdTensor<B, C>,
    z_im: AdTensor<B, C>,
    shift: AdTensor<B, C>,
    len: usize,
) -> AdTensor<B, C> {
    let shift = shift.into_primitive();
    match VandermondeBackward
        .prepare::<C>([c_re.node(), c_im.node(), z_re.node(), z_im.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let parts = [c_re, c_im, z_re, z_im].map(|t| t.into_primitive());
            let [cr, ci, zr, zi] = parts.clone();
            let k = B::vandermonde(cr, ci, zr, zi, shift.clone(), len);
            prep.finish((parts, shift), k)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::vandermonde(
            c_re.into_primitive(),
            c_im.into_primitive(),
            z_re.into_primitive(),
            z_im.into_primitive(),
            shift,
            len,
        )),
    }
}

/// The Vandermonde kernel's graph node.
#[derive(Debug)]
struct VandermondeBackward;

impl<B: SsmOps> Backward<B, 4> for VandermondeBackward {
    /// `c_re`, `c_im`, `z_re`, `z_im` and `shift`.
    type State = ([FloatTensor<B>; 4], FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ([cr, ci, zr, zi], shift) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (dcr, dci, dzr, dzi) = B::vandermonde_backward(grad, cr, ci, zr, zi, shift);
        for (parent, g) in ops.parents.into_iter().zip([dcr, dci, dzr, dzi]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}
