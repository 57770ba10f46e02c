//! `SsmOps` under `Autodiff`: each method dispatches to its op's autodiff file
//! (`crate::<op>::autodiff`). The selective scan, the log-decay SSD, the SSD's inter-chunk pass
//! and the FFT ops record one graph node each with a hand-written backward (the scan's is the
//! inner backend's reverse scan, so training never differentiates a per-timestep loop); Mamba2's
//! SSD runs as the recurrence on the scan's node; the decode steps, the norm and the few-row
//! product run their reference bodies op by op when an input is tracked, the inner backend's
//! fused op otherwise. The ops not listed (the scan's and the SSD's backward, the decay mask)
//! take the trait's default body.

use crate::ops::SsmOps;
use crate::{cauchy, fft, linear, mamba3_step, norm, scan, ssd, step, vandermonde};
use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::tensor::{FloatTensor, IntTensor, QuantizedTensor};

/// `Autodiff<B, C>`, as the ops' autodiff files name it.
pub(crate) type Ad<B, C> = Autodiff<B, C>;

/// A float primitive of `Autodiff<B, C>` (a tensor with its graph node).
pub(crate) type AdTensor<B, C> = FloatTensor<Autodiff<B, C>>;

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
        scan::autodiff::selective_scan::<B, C>(
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
        step::autodiff::selective_state_step::<B, C>(
            state,
            x,
            dt,
            a,
            b,
            c,
            d,
            z,
            gate,
            dt_bias,
            dt_softplus,
        )
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        step::autodiff::causal_conv1d_step::<B, C>(x, state, weight, bias, silu)
    }

    fn mamba_decode_step(
        xz: FloatTensor<Self>,
        conv_state: FloatTensor<Self>,
        ssm_state: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        step::autodiff::mamba_decode_step::<B, C>(xz, conv_state, ssm_state, weights)
    }

    fn rows_matmul(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        linear::autodiff::rows_matmul::<B, C>(x, w, transposed)
    }

    fn q_rows_matmul(
        x: FloatTensor<Self>,
        w: QuantizedTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        linear::autodiff::q_rows_matmul::<B, C>(x, w, transposed)
    }

    fn q_embedding(w: QuantizedTensor<Self>, ids: IntTensor<Self>) -> FloatTensor<Self> {
        linear::autodiff::q_embedding::<B, C>(w, ids)
    }

    fn add_rms_norm(
        x: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        has_residual: bool,
        weight: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        norm::autodiff::add_rms_norm::<B, C>(x, residual, has_residual, weight, eps)
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
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        ssd::autodiff::ssd::<B, C>(x, dt, a, b, c, d, initial_state, reset, has_reset, chunk)
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
        ssd::autodiff::ssd_log_decay::<B, C>(
            x,
            dt,
            log_decay,
            b,
            c,
            d,
            initial_state,
            reset,
            has_reset,
            chunk,
            rank,
        )
    }

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        ssd::autodiff::ssd_state_pass::<B, C>(chunk_states, chunk_decay, h0)
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
        step::autodiff::mamba2_decode_step::<B, C>(
            zxbcdt, conv_state, ssm_state, weights, heads, groups, dt_min, dt_max, eps,
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
        mamba3_step::autodiff::mamba3_decode_step::<B, C>(
            proj,
            conv_state,
            ssm_state,
            weights,
            heads,
            groups,
            rank,
            angles,
            mimo,
            outproj_norm,
            a_floor,
            eps,
        )
    }

    fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
        fft::autodiff::rfft::<B, C>(x, n)
    }

    fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
        fft::autodiff::irfft::<B, C>(re, im, n)
    }

    fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
        fft::autodiff::causal_conv_fft::<B, C>(u, k)
    }

    fn vandermonde(
        c_re: FloatTensor<Self>,
        c_im: FloatTensor<Self>,
        z_re: FloatTensor<Self>,
        z_im: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        len: usize,
    ) -> FloatTensor<Self> {
        vandermonde::autodiff::vandermonde::<B, C>(c_re, c_im, z_re, z_im, shift, len)
    }

    fn cauchy(
        v_re: FloatTensor<Self>,
        v_im: FloatTensor<Self>,
        w_re: FloatTensor<Self>,
        w_im: FloatTensor<Self>,
        l_re: FloatTensor<Self>,
        l_im: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cauchy::autodiff::cauchy::<B, C>(v_re, v_im, w_re, w_im, l_re, l_im)
    }
}
