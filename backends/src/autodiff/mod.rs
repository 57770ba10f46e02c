//! `SsmOps` under `Autodiff`: the scan records one graph node whose backward is the inner
//! backend's reverse scan ([`SsmOps::selective_scan_backward`]), so training never differentiates
//! a per-timestep loop; the log-decay SSD records one node whose backward is the inner backend's
//! [`SsmOps::ssd_log_decay_backward`], and the chunked form's inter-chunk pass one whose backward
//! is the same pass run over the reversed chunks ([`ssd`]); the FFT ops have hand-written
//! backward nodes made of the same ops ([`fft`]); the decode steps and the norm run their
//! differentiable composed bodies, Mamba2's SSD the scan node.
//!
//! The scan node's output packs `[y | final state]` along the last axis, (B, D, L + N), and the
//! two results are slices of it, so gradients may flow into `y`, the final state, or both.

mod fft;
mod scan;
mod ssd;

use crate::api::precision::is_half;
use crate::ops::SsmOps;
use crate::portable::scan::{narrowed, widened};
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::strategy::CheckpointStrategy,
    ops::{Backward, OpsKind},
};
use burn::backend::{AutodiffBackend, TensorMetadata, tensor::FloatTensor};
use fft::{ConvBackward, IrfftBackward, RfftBackward, last_slice};
use scan::{ScanBackward, ScanState, last_axis_slice};
use ssd::{SsdBackward, SsdState, StatePassBackward, StatePassState};

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
        reset: FloatTensor<Self>,
        has_reset: bool,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Half-precision activations: the recorded graph widens them (the casts carry the
        // gradients back in their type), the reverse scan runs in f32.
        let dtype = u.dtype();
        if is_half(dtype) {
            let w = widened::<Self>;
            let (y, h) = Self::selective_scan(
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
            return (narrowed::<Self>(y, dtype), h);
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
        let run = |inputs: [FloatTensor<B>; 8],
                   z: Option<FloatTensor<B>>,
                   reset: Option<FloatTensor<B>>| {
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
                    last_axis_slice::<Self>(out.clone(), 0, len),
                    last_axis_slice::<Self>(out, len, len + state),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, h) = run(inputs, z, reset);
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
            return crate::portable::step::mamba_step_composed::<Self>(
                xz, conv_state, ssm_state, weights,
            );
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

    fn rows_matmul(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        if x.is_tracked() || w.is_tracked() {
            // Differentiable: this backend's matmul, recorded.
            return crate::portable::rows_matmul::<Self>(x, w, transposed);
        }
        Self::from_inner(B::rows_matmul(
            x.into_primitive(),
            w.into_primitive(),
            transposed,
        ))
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
        reset: FloatTensor<Self>,
        has_reset: bool,
        _chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Through this backend's scan node: the backward is the scan kernel's reverse pass
        // (states recomputed per chunk), so no SSD mask outlives its step.
        let reset = has_reset.then_some(reset);
        crate::portable::ssd::ssd_via_scan::<Self>(x, dt, a, b, c, d, initial_state, reset)
    }

    fn ssd_log_decay(
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        log_decay: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        chunk: usize,
        rank: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
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
                let out = prep.finish(saved, ssd::pack::<B>(y, h));
                ssd::unpack::<Self>(out, y_dims, h_dims)
            }
            OpsKind::UnTracked(prep) => {
                let (y, h) = run(inputs, reset);
                (prep.finish(y), Self::from_inner(h))
            }
        }
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
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
                let out = crate::portable::prim::P::<Self>::new(out);
                (
                    out.clone().narrow(2, 0, k).into_inner(),
                    out.narrow(2, k, k + 1).reshape(&[bs, h, n, p]).into_inner(),
                )
            }
            OpsKind::UnTracked(prep) => (prep.finish(starts), Self::from_inner(last)),
        }
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
        let cfg = crate::portable::step::Mamba2StepConfig {
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
            return crate::portable::step::mamba2_step_composed::<Self>(
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
    fn mamba3_decode_step(
        proj: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        heads: usize,
        groups: usize,
        rank: usize,
        angles: usize,
        mimo: bool,
        outproj_norm: bool,
        a_floor: f32,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let cfg = crate::portable::mamba3_step::Mamba3StepConfig {
            heads,
            groups,
            rank,
            angles,
            mimo,
            outproj_norm,
            a_floor,
            eps,
        };
        if [&proj, &conv_state, &ssm_state, &weights]
            .iter()
            .any(|t| t.is_tracked())
        {
            // Differentiable: composed from this backend's ops, recorded one by one.
            return crate::portable::mamba3_step::mamba3_step_composed::<Self>(
                proj, conv_state, ssm_state, weights, cfg,
            );
        }
        let (y, cs, ss) = B::mamba3_decode_step(
            proj.into_primitive(),
            conv_state.into_primitive(),
            ssm_state.into_primitive(),
            weights.into_primitive(),
            heads,
            groups,
            rank,
            angles,
            mimo,
            outproj_norm,
            a_floor,
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
