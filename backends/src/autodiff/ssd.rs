//! Backward nodes of the log-decay SSD ([`SsmOps::ssd_log_decay`]) and of the chunked form's
//! inter-chunk pass ([`SsmOps::ssd_state_pass`]).
//!
//! The SSD node's output packs `[y | final state]`, each flattened per batch row, (B, L·R·H·P +
//! H·P·N); its backward is the inner backend's [`SsmOps::ssd_log_decay_backward`] (the fused
//! reverse recurrence on the CPU). The state pass `s_{k+1} = a_k s_k + c_k` is its own adjoint
//! run backwards: with `G_k` the gradient reaching `s_k`, `G_k = dstarts_k + a_k G_{k+1}` from
//! `G_K = dfinal`, which is the pass over the reversed chunks started from `dfinal` (one kernel
//! launch on CubeCL); then `dc_k = G_{k+1}`, `da_k = ⟨G_{k+1}, s_k⟩`, `dh_0 = G_0`.

use crate::ops::SsmOps;
use crate::portable::prim::P;
use crate::portable::ssd_backward::SsdGradTuple;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::{Backend, tensor::FloatTensor};
use std::ops::Mul;

/// Saved inputs of one log-decay SSD, for its backward.
#[derive(Debug, Clone)]
pub(super) struct SsdState<B: Backend> {
    /// x, dt, log_decay, B, C, D, initial_state.
    pub(super) inputs: [FloatTensor<B>; 7],
    pub(super) reset: Option<FloatTensor<B>>,
    pub(super) chunk: usize,
    pub(super) rank: usize,
    /// The shapes of `y` and of the final state.
    pub(super) y_dims: [usize; 4],
    pub(super) h_dims: [usize; 4],
}

/// `[y | h]` flattened per batch row, (B, |y| / B + |h| / B).
pub(super) fn pack<B: Backend>(y: FloatTensor<B>, h: FloatTensor<B>) -> FloatTensor<B> {
    let (y, h) = (P::<B>::new(y), P::<B>::new(h));
    let (yd, hd) = (y.dims(), h.dims());
    let per = |d: &[usize]| d[1..].iter().product::<usize>();
    P::cat(
        vec![y.reshape(&[yd[0], per(&yd)]), h.reshape(&[hd[0], per(&hd)])],
        1,
    )
    .into_inner()
}

/// The inverse of [`pack`]: `y` and `h` from the packed rows.
pub(super) fn unpack<B: Backend>(
    packed: FloatTensor<B>,
    y_dims: [usize; 4],
    h_dims: [usize; 4],
) -> (FloatTensor<B>, FloatTensor<B>) {
    let packed = P::<B>::new(packed);
    let ny = y_dims[1..].iter().product::<usize>();
    let nh = h_dims[1..].iter().product::<usize>();
    (
        packed
            .clone()
            .narrow(1, 0, ny)
            .reshape(&y_dims)
            .into_inner(),
        packed.narrow(1, ny, ny + nh).reshape(&h_dims).into_inner(),
    )
}

#[derive(Debug)]
pub(super) struct SsdBackward;

impl<B: SsmOps> Backward<B, 7> for SsdBackward {
    type State = SsdState<B>;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let (dy, dstate) = unpack::<B>(grad, st.y_dims, st.h_dims);
        let [x, dt, log_decay, b, c, d, h0] = st.inputs;
        let has_reset = st.reset.is_some();
        let reset = st.reset.unwrap_or_else(|| dt.clone());
        let g: SsdGradTuple<B> = B::ssd_log_decay_backward(
            x, dt, log_decay, b, c, d, h0, reset, has_reset, st.chunk, st.rank, dy, dstate,
        );
        let all = [g.0, g.1, g.2, g.3, g.4, g.5, g.6];
        for (parent, g) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// Saved for the state pass's backward: the chunk decays (B, H, K) and the states at the chunk
/// starts (B, H, K, N, P) (the forward's first output).
#[derive(Debug, Clone)]
pub(super) struct StatePassState<B: Backend> {
    pub(super) decay: FloatTensor<B>,
    pub(super) starts: FloatTensor<B>,
}

#[derive(Debug)]
pub(super) struct StatePassBackward;

impl<B: SsmOps> Backward<B, 3> for StatePassBackward {
    type State = StatePassState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let StatePassState { decay, starts } = ops.state;
        // The packed output is (B, H, K + 1, N, P): the starts, then the final state.
        let grad = P::<B>::new(grads.consume::<B>(&ops.node));
        let dims = grad.dims();
        let (bs, h, k, n, p) = (dims[0], dims[1], dims[2] - 1, dims[3], dims[4]);
        let dstarts = grad.clone().narrow(2, 0, k);
        let dfinal = grad.narrow(2, k, k + 1).reshape(&[bs, h, n, p]);
        // The pass over the reversed chunks: its starts are G_K, ..., G_1, its end G_0.
        let (rev_starts, dh0) = B::ssd_state_pass(
            B::float_flip(dstarts.into_inner(), &[2]),
            B::float_flip(decay, &[2]),
            dfinal.into_inner(),
        );
        let dchunk_states = P::<B>::new(B::float_flip(rev_starts, &[2])); // G_{k+1}
        let ddecay = dchunk_states
            .clone()
            .mul(P::new(starts))
            .reshape(&[bs, h, k, n * p])
            .sum_dim(3)
            .reshape(&[bs, h, k]);
        let all = [dchunk_states, ddecay, P::new(dh0)];
        for (parent, g) in ops.parents.into_iter().zip(all) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g.into_inner());
            }
        }
    }
}
