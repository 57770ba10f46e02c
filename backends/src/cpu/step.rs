//! The fused decode steps on plain f32 slices: the selective state update and the causal conv
//! window step.

use super::calls;
use super::lanes::{silu, step_size, update};
use crate::portable::ScanDims;
use rayon::prelude::*;

/// One fused decode step of the selective SSM for every (batch, channel): see
/// [`crate::portable::selective_state_step`]. `state` is updated in place; returns `y` (B, D).
#[allow(clippy::too_many_arguments)]
pub(crate) fn state_step(
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
pub(crate) fn conv_step(
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
