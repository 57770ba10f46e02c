//! The scan's backward node: the inner backend's reverse scan, with the gradients of `y` and
//! of the final state read from the node's packed output.

use crate::ops::SsmOps;
use crate::portable::ScanGrads;
use burn::backend::autodiff::{
    checkpoint::base::Checkpointer,
    grads::Gradients,
    ops::{Backward, Ops},
};
use burn::backend::{Backend, Slice, tensor::FloatTensor};

/// Saved inputs of one scan, for its backward.
#[derive(Debug, Clone)]
pub(super) struct ScanState<B: Backend> {
    pub(super) inputs: [FloatTensor<B>; 8],
    pub(super) z: Option<FloatTensor<B>>,
    pub(super) reset: Option<FloatTensor<B>>,
    pub(super) delta_softplus: bool,
    pub(super) len: usize,
    pub(super) state: usize,
}

#[derive(Debug)]
pub(super) struct ScanBackward;

/// Slices `[.., .., start..end]`.
pub(super) fn last_axis_slice<B: Backend>(
    t: FloatTensor<B>,
    start: usize,
    end: usize,
) -> FloatTensor<B> {
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
