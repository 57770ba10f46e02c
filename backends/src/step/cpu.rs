//! The decode steps' building blocks on the CPU backends (Flex, NdArray): the selective state
//! update and the causal conv window step, fused on plain f32 slices (the primitives read to the
//! host as f32). Mamba's and Mamba2's whole steps are fused in `cpu_fused.rs`.

use crate::cpu::lanes::{silu, step_size, update};
use crate::cpu::{calls, device_tensor, host};
use crate::scan::reference::ScanDims;
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

/// [`crate::SsmOps::selective_state_step`] on the fused kernel ([`state_step`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_state_step<B: Backend>(
    state: FloatTensor<B>,
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    z: FloatTensor<B>,
    gate: bool,
    dt_bias: FloatTensor<B>,
    dt_softplus: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let z = gate.then_some(z);
    let device = state.device();
    let sd = state.shape().to_vec();
    let groups = b.shape().to_vec()[1];
    let dims = ScanDims {
        batch: sd[0],
        dim: sd[1],
        len: 1,
        state: sd[2],
        groups,
    };
    let mut st = host::<B>(state);
    let y = state_step(
        dims,
        &mut st,
        &host::<B>(x),
        &host::<B>(dt),
        &host::<B>(a),
        &host::<B>(b),
        &host::<B>(c),
        &host::<B>(d),
        z.map(host::<B>).as_deref(),
        &host::<B>(dt_bias),
        dt_softplus,
    );
    (
        device_tensor::<B>(y, vec![dims.batch, dims.dim], &device),
        device_tensor::<B>(st, sd, &device),
    )
}

/// [`crate::SsmOps::causal_conv1d_step`] on the fused kernel ([`conv_step`]).
pub(crate) fn causal_conv1d_step<B: Backend>(
    x: FloatTensor<B>,
    state: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = state.device();
    let sd = state.shape().to_vec();
    let mut st = host::<B>(state);
    calls::count(&calls::STEP);
    let out = conv_step(
        &host::<B>(x),
        &mut st,
        &host::<B>(weight),
        &host::<B>(bias),
        sd[1],
        sd[2],
        silu,
    );
    (
        device_tensor::<B>(out, vec![sd[0], sd[1]], &device),
        device_tensor::<B>(st, sd, &device),
    )
}

/// One fused decode step of the selective SSM for every (batch, channel): see
/// [`super::reference::selective_state_step`]. `state` is updated in place; returns `y` (B, D).
#[allow(clippy::too_many_arguments)]
fn state_step(
    dims: ScanDims,
    state: &mut [f32],
    x: &[f32],
    dt: &[f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    d: &[f32],
    z: Option<&[f32]>,
    dt_bias: &[f32],
    dt_softplus: bool,
) -> Vec<f32> {
    calls::count(&calls::STEP);
    let n = dims.state;
    let per = dims.dim / dims.groups;
    let mut y = vec![0.0f32; dims.batch * dims.dim];
    let work = |(row, (yv, h)): (usize, (&mut f32, &mut [f32]))| {
        let (bi, di) = (row / dims.dim, row % dims.dim);
        let off = (bi * dims.groups + di / per) * n;
        let dtv = step_size(dt[row] + dt_bias[di], dt_softplus);
        let acc = update(
            h,
            &a[di * n..(di + 1) * n],
            &b[off..off + n],
            &c[off..off + n],
            dtv,
            dtv * x[row],
        );
        let mut out = acc + d[di] * x[row];
        if let Some(z) = z {
            out *= silu(z[row]);
        }
        *yv = out;
    };
    // Small problems run on the calling thread: the decode step is latency-bound.
    if dims.batch * dims.dim * n < 1 << 16 {
        y.iter_mut()
            .zip(state.chunks_mut(n))
            .enumerate()
            .for_each(work);
    } else {
        y.par_iter_mut()
            .zip(state.par_chunks_mut(n))
            .enumerate()
            .for_each(work);
    }
    y
}

/// One fused step of the causal depthwise conv1d: shifts `x` (B, C) into `state` (B, C, K) in
/// place and returns the conv output (B, C), through SiLU when `silu_on`.
pub(super) fn conv_step(
    x: &[f32],
    state: &mut [f32],
    weight: &[f32],
    bias: &[f32],
    channels: usize,
    k: usize,
    silu_on: bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for (row, (o, st)) in out.iter_mut().zip(state.chunks_mut(k)).enumerate() {
        let ci = row % channels;
        st.copy_within(1.., 0);
        st[k - 1] = x[row];
        let w = &weight[ci * k..(ci + 1) * k];
        let v = st.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + bias[ci];
        *o = if silu_on { silu(v) } else { v };
    }
    out
}
