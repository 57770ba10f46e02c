//! The SSD under `Autodiff`: Mamba2's [`SsmOps::ssd`] through the scan's graph node (its
//! backward is the scan kernel's reverse pass, states recomputed per chunk, so no SSD mask
//! outlives its step); graph nodes for the log-decay SSD ([`SsmOps::ssd_log_decay`]) and for
//! the chunked form's inter-chunk pass ([`SsmOps::ssd_state_pass`]).
//!
//! The SSD node's output packs `[y | final state]`, each flattened per batch row, (B, L·R·H·P +
//! H·P·N); its backward is the inner backend's [`SsmOps::ssd_log_decay_backward`] (the fused
//! reverse recurrence on the CPU). The state pass `s_{k+1} = a_k s_k + c_k` is its own adjoint
//! run backwards: with `G_k` the gradient reaching `s_k`, `G_k = dstarts_k + a_k G_{k+1}` from
//! `G_K = dfinal`, which is the pass over the reversed chunks started from `dfinal` (one kernel
//! launch on CubeCL); then `dc_k = G_{k+1}`, `da_k = ⟨G_{k+1}, s_k⟩`, `dh_0 = G_0`.

use super::reference::ssd_via_scan;
use super::reference_backward::SsdGradTuple;
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use crate::prim::P;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, TensorMetadata, tensor::FloatTensor};
use std::ops::Mul;

/// [`SsmOps::ssd`] under `Autodiff`: the recurrence through this backend's scan node, whose
/// backward is the scan kernel's reverse pass (states recomputed per chunk), so no SSD mask
/// outlives its step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    dt: AdTensor<B, C>,
    a: AdTensor<B, C>,
    b: AdTensor<B, C>,
    c: AdTensor<B, C>,
    d: AdTensor<B, C>,
    initial_state: AdTensor<B, C>,
    reset: AdTensor<B, C>,
    has_reset: bool,
    _chunk: usize,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    let reset = has_reset.then_some(reset);
    ssd_via_scan::<Ad<B, C>>(x, dt, a, b, c, d, initial_state, reset)
}

/// [`SsmOps::ssd_log_decay`] under `Autodiff`: one [`SsdBackward`] node over the inner
/// backend's op, whose backward is the inner backend's [`SsmOps::ssd_log_decay_backward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd_log_decay<B: SsmOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    dt: AdTensor<B, C>,
    log_decay: AdTensor<B, C>,
    b: AdTensor<B, C>,
    c: AdTensor<B, C>,
    d: AdTensor<B, C>,
    initial_state: AdTensor<B, C>,
    reset: AdTensor<B, C>,
    has_reset: bool,
    chunk: usize,
    rank: usize,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    // The reset mask is a constant of the graph (no gradient).
    let reset = has_reset.then(|| reset.into_primitive());
    let prep = SsdBackward
        .prepare::<C>([
            x.node(),
            dt.node(),
            log_decay.node(),
            b.node(),
            c.node(),
            d.node(),
            initial_state.node(),
        ])
        .compute_bound()
        .stateful();
    let inputs = [
        x.into_primitive(),
        dt.into_primitive(),
        log_decay.into_primitive(),
        b.into_primitive(),
        c.into_primitive(),
        d.into_primitive(),
        initial_state.into_primitive(),
    ];
    let run = |inputs: [FloatTensor<B>; 7], reset: Option<FloatTensor<B>>| {
        let [x, dt, log_decay, b, c, d, h0] = inputs;
        let has_reset = reset.is_some();
        let reset = reset.unwrap_or_else(|| dt.clone());
        B::ssd_log_decay(x, dt, log_decay, b, c, d, h0, reset, has_reset, chunk, rank)
    };
    match prep {
        OpsKind::Tracked(prep) => {
            let (y, h) = run(inputs.clone(), reset.clone());
            let dims4 = |t: &FloatTensor<B>| -> [usize; 4] {
                t.shape()
                    .to_vec()
                    .try_into()
                    .expect("the SSD's outputs are rank 4")
            };
            let (y_dims, h_dims) = (dims4(&y), dims4(&h));
            let saved = SsdState {
                inputs,
                reset,
                chunk,
                rank,
                y_dims,
                h_dims,
            };
            let out = prep.finish(saved, pack::<B>(y, h));
            unpack::<Ad<B, C>>(out, y_dims, h_dims)
        }
        OpsKind::UnTracked(prep) => {
            let (y, h) = run(inputs, reset);
            (prep.finish(y), Ad::<B, C>::from_inner(h))
        }
    }
}

/// [`SsmOps::ssd_state_pass`] under `Autodiff`: one [`StatePassBackward`] node over the inner
/// backend's pass (its kernel on CubeCL), whose backward is the same pass over the reversed
/// chunks.
pub(crate) fn ssd_state_pass<B: SsmOps, C: CheckpointStrategy>(
    chunk_states: AdTensor<B, C>,
    chunk_decay: AdTensor<B, C>,
    h0: AdTensor<B, C>,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    let prep = StatePassBackward
        .prepare::<C>([chunk_states.node(), chunk_decay.node(), h0.node()])
        .compute_bound()
        .stateful();
    let decay = chunk_decay.into_primitive();
    let (starts, last) = B::ssd_state_pass(
        chunk_states.into_primitive(),
        decay.clone(),
        h0.into_primitive(),
    );
    match prep {
        OpsKind::Tracked(prep) => {
            let d = starts.shape().to_vec();
            let (bs, h, k, n, p) = (d[0], d[1], d[2], d[3], d[4]);
            let packed = B::float_cat(
                vec![
                    starts.clone(),
                    B::float_reshape(last, [bs, h, 1, n, p].into()),
                ],
                2,
            );
            let out = prep.finish(StatePassState { decay, starts }, packed);
            let out = P::<Ad<B, C>>::new(out);
            (
                out.clone().narrow(2, 0, k).into_inner(),
                out.narrow(2, k, k + 1).reshape(&[bs, h, n, p]).into_inner(),
            )
        }
        OpsKind::UnTracked(prep) => (prep.finish(starts), Ad::<B, C>::from_inner(last)),
    }
}

/// Saved inputs of one log-decay SSD, for its backward.
#[derive(Debug, Clone)]
struct SsdState<B: Backend> {
    /// x, dt, log_decay, B, C, D, initial_state.
    inputs: [FloatTensor<B>; 7],
    reset: Option<FloatTensor<B>>,
    chunk: usize,
    rank: usize,
    /// The shapes of `y` and of the final state.
    y_dims: [usize; 4],
    h_dims: [usize; 4],
}

/// `[y | h]` flattened per batch row, (B, |y| / B + |h| / B).
fn pack<B: Backend>(y: FloatTensor<B>, h: FloatTensor<B>) -> FloatTensor<B> {
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
fn unpack<B: Backend>(
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

/// The log-decay SSD's graph node: its backward runs the inner backend's
/// [`SsmOps::ssd_log_decay_backward`].
#[derive(Debug)]
struct SsdBackward;

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
struct StatePassState<B: Backend> {
    decay: FloatTensor<B>,
    starts: FloatTensor<B>,
}

/// The state pass's graph node: its backward is the pass over the reversed chunks.
#[derive(Debug)]
struct StatePassBackward;

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
