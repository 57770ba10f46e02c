//! The selective scan under `Autodiff`: one graph node whose backward is the inner backend's
//! reverse scan ([`SsmOps::selective_scan_backward`]), so training never differentiates a
//! per-timestep loop.
//!
//! The node's output packs `[y | final state]` along the last axis, (B, D, L + N), and the two
//! results are slices of it, so gradients may flow into `y`, the final state, or both.

use super::reference::{ScanGrads, narrowed, widened};
use crate::autodiff::{Ad, AdTensor};
use crate::ops::SsmOps;
use crate::precision::is_half;
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, Slice, TensorMetadata, tensor::FloatTensor};

/// [`SsmOps::selective_scan`] under `Autodiff`: records one [`ScanBackward`] node.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan<B: SsmOps, C: CheckpointStrategy>(
    u: AdTensor<B, C>,
    delta: AdTensor<B, C>,
    a: AdTensor<B, C>,
    b: AdTensor<B, C>,
    c: AdTensor<B, C>,
    d: AdTensor<B, C>,
    z: AdTensor<B, C>,
    gate: bool,
    delta_bias: AdTensor<B, C>,
    initial_state: AdTensor<B, C>,
    reset: AdTensor<B, C>,
    has_reset: bool,
    delta_softplus: bool,
) -> (AdTensor<B, C>, AdTensor<B, C>) {
    // Half-precision activations: the recorded graph widens them (the casts carry the
    // gradients back in their type), the reverse scan runs in f32.
    let dtype = u.dtype();
    if is_half(dtype) {
        let w = widened::<Ad<B, C>>;
        let (y, h) = selective_scan::<B, C>(
            w(u),
            w(delta),
            w(a),
            w(b),
            w(c),
            w(d),
            w(z),
            gate,
            w(delta_bias),
            w(initial_state),
            w(reset),
            has_reset,
            delta_softplus,
        );
        return (narrowed::<Ad<B, C>>(y, dtype), h);
    }
    // The reset mask is a constant of the graph (no gradient).
    let reset = has_reset.then(|| reset.into_primitive());
    // Without a gate, `z` is a stand-in whose gradient is never registered.
    let (has_z, z_node) = (gate, z);
    let len = u.shape().to_vec()[2];
    let state = initial_state.shape().to_vec()[2];
    let prep = ScanBackward
        .prepare::<C>([
            u.node(),
            delta.node(),
            a.node(),
            b.node(),
            c.node(),
            d.node(),
            z_node.node(),
            delta_bias.node(),
            initial_state.node(),
        ])
        .compute_bound()
        .stateful();
    let inputs = [
        u.into_primitive(),
        delta.into_primitive(),
        a.into_primitive(),
        b.into_primitive(),
        c.into_primitive(),
        d.into_primitive(),
        delta_bias.into_primitive(),
        initial_state.into_primitive(),
    ];
    let z = has_z.then(|| z_node.into_primitive());
    let run =
        |inputs: [FloatTensor<B>; 8], z: Option<FloatTensor<B>>, reset: Option<FloatTensor<B>>| {
            let [u, delta, a, b, c, d, bias, h0] = inputs;
            let gate = z.is_some();
            let z = z.unwrap_or_else(|| u.clone());
            let has_reset = reset.is_some();
            let reset = reset.unwrap_or_else(|| u.clone());
            B::selective_scan(
                u,
                delta,
                a,
                b,
                c,
                d,
                z,
                gate,
                bias,
                h0,
                reset,
                has_reset,
                delta_softplus,
            )
        };
    match prep {
        OpsKind::Tracked(prep) => {
            let (y, h) = run(inputs.clone(), z.clone(), reset.clone());
            let packed = B::float_cat(vec![y, h], 2);
            let saved = ScanState {
                inputs,
                z,
                reset,
                delta_softplus,
                len,
                state,
            };
            let out = prep.finish(saved, packed);
            (
                last_axis_slice::<Ad<B, C>>(out.clone(), 0, len),
                last_axis_slice::<Ad<B, C>>(out, len, len + state),
            )
        }
        OpsKind::UnTracked(prep) => {
            let (y, h) = run(inputs, z, reset);
            (prep.finish(y), Ad::<B, C>::from_inner(h))
        }
    }
}

/// Saved inputs of one scan, for its backward.
#[derive(Debug, Clone)]
struct ScanState<B: Backend> {
    inputs: [FloatTensor<B>; 8],
    z: Option<FloatTensor<B>>,
    reset: Option<FloatTensor<B>>,
    delta_softplus: bool,
    len: usize,
    state: usize,
}

/// The scan's graph node: its backward runs the inner backend's
/// [`SsmOps::selective_scan_backward`].
#[derive(Debug)]
struct ScanBackward;

/// Slices `[.., .., start..end]`.
fn last_axis_slice<B: Backend>(t: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    B::float_slice(
        t,
        &[
            Slice::new(0, None, 1),
            Slice::new(0, None, 1),
            Slice::new(start as isize, Some(end as isize), 1),
        ],
    )
}

impl<B: SsmOps> Backward<B, 9> for ScanBackward {
    type State = ScanState<B>;

    fn backward(self, ops: Ops<Self::State, 9>, grads: &mut Gradients, _: &mut Checkpointer) {
        let st = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let dy = last_axis_slice::<B>(grad.clone(), 0, st.len);
        let dstate = last_axis_slice::<B>(grad, st.len, st.len + st.state);
        let [u, delta, a, b, c, d, bias, h0] = st.inputs;
        let gate = st.z.is_some();
        let z = st.z.unwrap_or_else(|| u.clone());
        let has_reset = st.reset.is_some();
        let reset = st.reset.unwrap_or_else(|| u.clone());
        let g = ScanGrads::<B>::from_tuple(
            B::selective_scan_backward(
                u,
                delta,
                a,
                b,
                c,
                d,
                z,
                gate,
                bias,
                h0,
                reset,
                has_reset,
                dy,
                dstate,
                st.delta_softplus,
            ),
            gate,
        );
        let all = [
            Some(g.du),
            Some(g.ddelta),
            Some(g.da),
            Some(g.db),
            Some(g.dc),
            Some(g.dd),
            g.dz,
            Some(g.ddelta_bias),
            Some(g.dh0),
        ];
        for (parent, g) in ops.parents.into_iter().zip(all) {
            if let (Some(node), Some(g)) = (parent, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}
