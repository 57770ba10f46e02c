//! `SsmOps` under `Autodiff`: the scan records one graph node whose backward is the inner
//! backend's reverse scan ([`SsmOps::selective_scan_backward`]), so training never differentiates
//! a per-timestep loop.
//!
//! The node's output packs `[y | final state]` along the last axis, (B, D, L + N), and the two
//! results are slices of it, so gradients may flow into `y`, the final state, or both.

use crate::ops::SsmOps;
use crate::portable::ScanGrads;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, Slice, TensorMetadata, tensor::FloatTensor};

/// Saved inputs of one scan, for its backward.
#[derive(Debug, Clone)]
struct ScanState<B: Backend> {
    inputs: [FloatTensor<B>; 8],
    z: Option<FloatTensor<B>>,
    delta_softplus: bool,
    len: usize,
    state: usize,
}

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

/// Slices `[.., start..end]` of the last axis, at any rank.
fn last_slice<B: Backend>(t: FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    let rank = t.shape().num_dims();
    crate::prim::P::<B>::new(t)
        .narrow(rank - 1, start, end)
        .into_inner()
}

/// `t * w[k]` along the last axis, `w` given per bin.
fn scale_bins<B: Backend>(t: FloatTensor<B>, w: impl Fn(usize) -> f32) -> FloatTensor<B> {
    let t = crate::prim::P::<B>::new(t);
    let dims = t.dims();
    let bins = dims[dims.len() - 1];
    let mut wd = vec![1; dims.len()];
    wd[dims.len() - 1] = bins;
    let w = crate::prim::P::from_vec((0..bins).map(w).collect(), &wd, &t.device());
    (t * w).into_inner()
}

/// Whether bin `k` of an `n`-point one-sided spectrum is the DC or the Nyquist bin.
fn edge_bin(k: usize, n: usize) -> bool {
    k == 0 || 2 * k == n
}

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
            grads.register::<B>(node.id, crate::fft::fit_last::<B>(dx, m));
        }
    }
}

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

impl<B: SsmOps, C: CheckpointStrategy> SsmOps for Autodiff<B, C> {
    fn selective_scan(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
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
        let run = |inputs: [FloatTensor<B>; 8], z: Option<FloatTensor<B>>| {
            let [u, delta, a, b, c, d, bias, h0] = inputs;
            let gate = z.is_some();
            let z = z.unwrap_or_else(|| u.clone());
            B::selective_scan(u, delta, a, b, c, d, z, gate, bias, h0, delta_softplus)
        };
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, h) = run(inputs.clone(), z.clone());
                let packed = B::float_cat(vec![y, h], 2);
                let saved = ScanState {
                    inputs,
                    z,
                    delta_softplus,
                    len,
                    state,
                };
                let out = prep.finish(saved, packed);
                (
                    last_axis_slice::<Self>(out.clone(), 0, len),
                    last_axis_slice::<Self>(out, len, len + state),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, h) = run(inputs, z);
                (prep.finish(y), Self::from_inner(h))
            }
        }
    }

    fn selective_state_step(
        state: FloatTensor<Self>,
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        dt_bias: FloatTensor<Self>,
        dt_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let tracked = [&state, &x, &dt, &a, &b, &c, &d, &dt_bias]
            .iter()
            .any(|t| t.is_tracked())
            || (gate && z.is_tracked());
        if tracked {
            // Differentiable: the portable body, recorded op by op.
            return crate::portable::selective_state_step::<Self>(
                state,
                x,
                dt,
                a,
                b,
                c,
                d,
                gate.then_some(z),
                dt_bias,
                dt_softplus,
            );
        }
        let (y, h) = B::selective_state_step(
            state.into_primitive(),
            x.into_primitive(),
            dt.into_primitive(),
            a.into_primitive(),
            b.into_primitive(),
            c.into_primitive(),
            d.into_primitive(),
            z.into_primitive(),
            gate,
            dt_bias.into_primitive(),
            dt_softplus,
        );
        (Self::from_inner(y), Self::from_inner(h))
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if [&x, &state, &weight, &bias].iter().any(|t| t.is_tracked()) {
            return crate::portable::causal_conv1d_step::<Self>(x, state, weight, bias, silu);
        }
        let (y, s) = B::causal_conv1d_step(
            x.into_primitive(),
            state.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            silu,
        );
        (Self::from_inner(y), Self::from_inner(s))
    }

    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if [&xz, &conv_state, &ssm_state, &weights]
            .iter()
            .any(|t| t.is_tracked())
        {
            // Differentiable: composed from this backend's ops, recorded one by one.
            return crate::step::mamba_step_composed::<Self>(xz, conv_state, ssm_state, weights);
        }
        let (y, cs, ss) = B::mamba_decode_step(
            xz.into_primitive(),
            conv_state.into_primitive(),
            ssm_state.into_primitive(),
            weights.into_primitive(),
        );
        (
            Self::from_inner(y),
            Self::from_inner(cs),
            Self::from_inner(ss),
        )
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if x.is_tracked() || weight.is_tracked() || (has_residual && residual.is_tracked()) {
            return crate::portable::add_rms_norm::<Self>(
                x,
                has_residual.then_some(residual),
                weight,
                eps,
            );
        }
        let (s, y) = B::add_rms_norm(
            x.into_primitive(),
            residual.into_primitive(),
            has_residual,
            weight.into_primitive(),
            eps,
        );
        (Self::from_inner(s), Self::from_inner(y))
    }

    fn ssd(
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        _chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Through this backend's scan node: the backward is the scan kernel's reverse pass
        // (states recomputed per chunk), so no SSD mask outlives its step.
        crate::ssd::ssd_via_scan::<Self>(x, dt, a, b, c, d, initial_state)
    }

    fn mamba2_decode_step(
        zxbcdt: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        dt_min: f32,
        dt_max: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let cfg = crate::step::Mamba2StepConfig {
            heads,
            groups,
            dt_min,
            dt_max,
            eps,
        };
        if [&zxbcdt, &conv_state, &ssm_state, &weights]
            .iter()
            .any(|t| t.is_tracked())
        {
            return crate::step::mamba2_step_composed::<Self>(
                zxbcdt, conv_state, ssm_state, weights, cfg,
            );
        }
        let (y, cs, ss) = B::mamba2_decode_step(
            zxbcdt.into_primitive(),
            conv_state.into_primitive(),
            ssm_state.into_primitive(),
            weights.into_primitive(),
            heads,
            groups,
            dt_min,
            dt_max,
            eps,
        );
        (
            Self::from_inner(y),
            Self::from_inner(cs),
            Self::from_inner(ss),
        )
    }
    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
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
                    last_slice::<Self>(out.clone(), 0, bins),
                    last_slice::<Self>(out, bins, 2 * bins),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (re, im) = B::rfft(x.into_primitive(), n);
                (prep.finish(re), Self::from_inner(im))
            }
        }
    }

    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
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

    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
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
}
