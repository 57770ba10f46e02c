//! The bridge from the op trait to the composed bodies: every [`SsmOps`] backend provides the
//! [`Stages`] those bodies call, by its own ops (its kernels where it has them).
#![allow(clippy::too_many_arguments)]

use crate::ops::SsmOps;
use crate::portable::stages::Stages;
use burn::backend::tensor::FloatTensor;

impl<B: SsmOps> Stages for B {
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
        <B as SsmOps>::selective_scan(
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            gate,
            delta_bias,
            initial_state,
            reset,
            has_reset,
            delta_softplus,
        )
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
        <B as SsmOps>::selective_state_step(state, x, dt, a, b, c, d, z, gate, dt_bias, dt_softplus)
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        <B as SsmOps>::causal_conv1d_step(x, state, weight, bias, silu)
    }

    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self> {
        <B as SsmOps>::ssd_decay_mask(cum)
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        <B as SsmOps>::ssd_state_pass(chunk_states, chunk_decay, h0)
    }
}
