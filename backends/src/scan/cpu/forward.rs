//! The fused forward of the selective scan on plain f32 slices: one task per block of channels
//! (rayon), the state in a small local buffer; no (B, D, L, N) tensor exists at any time.

use crate::cpu::calls;
#[cfg(target_arch = "x86_64")]
use crate::cpu::lanes::has_avx2;
use crate::cpu::lanes::{LANES, advance_dot, silu_fast, softplus_fast, to_time_major};
use crate::scan::reference::ScanDims;
use rayon::prelude::*;

/// Inputs of the scan as contiguous row-major slices (shapes as in
/// [`crate::scan::reference::ScanArgs`]).
pub(crate) struct ScanSlices<'a> {
    pub dims: ScanDims,
    pub u: &'a [f32],
    pub delta: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: &'a [f32],
    pub z: Option<&'a [f32]>,
    pub delta_bias: &'a [f32],
    pub h0: &'a [f32],
    /// (B, L): 1 where a sequence starts (the state before that step is zeroed).
    pub reset: Option<&'a [f32]>,
    pub delta_softplus: bool,
}

/// The forward of `W` consecutive channels of one group (rows `row0..row0 + W` of the (B·D)
/// rows), one channel per lane: every (t, n) updates `W` independent states, so the recurrence
/// has ample independent work and `C . h` needs no horizontal sum. `y` is the `W` output rows
/// (W·L), `hl` the `W` final states (W·N).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn forward_lanes<const W: usize>(
    p: &ScanSlices,
    bt: &[f32],
    ct: &[f32],
    row0: usize,
    y: &mut [f32],
    hl: &mut [f32],
) {
    let s = p.dims;
    let (l, n) = (s.len, s.state);
    let d0 = row0 % s.dim;
    let lane = |x: &[f32], t: usize| -> [f32; W] { std::array::from_fn(|c| x[(row0 + c) * l + t]) };
    let a: Vec<[f32; W]> = (0..n)
        .map(|k| std::array::from_fn(|c| p.a[(d0 + c) * n + k]))
        .collect();
    let mut h: Vec<[f32; W]> = (0..n)
        .map(|k| std::array::from_fn(|c| p.h0[(row0 + c) * n + k]))
        .collect();
    let dskip: [f32; W] = std::array::from_fn(|c| p.d[d0 + c]);
    let bias: [f32; W] = std::array::from_fn(|c| p.delta_bias[d0 + c]);
    let bi = row0 / s.dim;
    for t in 0..l {
        if starts_sequence(p, bi, t) {
            h.fill([0.0; W]);
        }
        let (dl, u) = (lane(p.delta, t), lane(p.u, t));
        let mut dtv: [f32; W] = std::array::from_fn(|c| dl[c] + bias[c]);
        if p.delta_softplus {
            for v in dtv.iter_mut() {
                *v = softplus_fast(*v);
            }
        }
        let du: [f32; W] = std::array::from_fn(|c| dtv[c] * u[c]);
        let acc = advance_dot(
            &mut h,
            &a,
            &bt[t * n..(t + 1) * n],
            &ct[t * n..(t + 1) * n],
            dtv,
            du,
        );
        for c in 0..W {
            y[c * l + t] = acc[c] + dskip[c] * u[c];
        }
    }
    if let Some(z) = p.z {
        for c in 0..W {
            let zr = &z[(row0 + c) * l..(row0 + c + 1) * l];
            for (o, &zt) in y[c * l..(c + 1) * l].iter_mut().zip(zr) {
                *o *= silu_fast(zt);
            }
        }
    }
    for c in 0..W {
        for k in 0..n {
            hl[c * n + k] = h[k][c];
        }
    }
}

/// Whether a new sequence starts at step `t` of batch row `bi` (its state before is zeroed).
#[inline(always)]
pub(crate) fn starts_sequence(p: &ScanSlices, bi: usize, t: usize) -> bool {
    p.reset.is_some_and(|r| r[bi * p.dims.len + t] != 0.0)
}

/// [`forward_lanes`] over [`LANES`] channels, compiled for AVX2 + FMA where present.
fn forward_block(
    p: &ScanSlices,
    bt: &[f32],
    ct: &[f32],
    row0: usize,
    y: &mut [f32],
    hl: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(
            p: &ScanSlices,
            bt: &[f32],
            ct: &[f32],
            row0: usize,
            y: &mut [f32],
            hl: &mut [f32],
        ) {
            forward_lanes::<LANES>(p, bt, ct, row0, y, hl)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, bt, ct, row0, y, hl) };
    }
    forward_lanes::<LANES>(p, bt, ct, row0, y, hl)
}

/// The fused forward. Returns `y` (B, D, L) and the final state (B, D, N).
///
/// Channels run in blocks of [`LANES`] (one per SIMD lane) where a group holds a multiple of
/// them, else one at a time; blocks are spread over threads with rayon.
pub(crate) fn scan_forward(p: &ScanSlices) -> (Vec<f32>, Vec<f32>) {
    calls::count(&calls::SCAN_FORWARD);
    let s = p.dims;
    let (l, n) = (s.len, s.state);
    let per = s.dim / s.groups;
    let bt = to_time_major(p.b, s.batch * s.groups, n, l);
    let ct = to_time_major(p.c, s.batch * s.groups, n, l);
    let mut y = vec![0.0f32; s.batch * s.dim * l];
    let mut hl = vec![0.0f32; s.batch * s.dim * n];
    // Channel blocks never straddle a group: `per` divisible by LANES.
    let width = if per.is_multiple_of(LANES) && l > 0 {
        LANES
    } else {
        1
    };
    y.par_chunks_mut((l * width).max(1))
        .zip(hl.par_chunks_mut(n * width))
        .enumerate()
        .for_each(|(blk, (y_blk, h_blk))| {
            let row0 = blk * width;
            let (bi, d0) = (row0 / s.dim, row0 % s.dim);
            let bg = (bi * s.groups + d0 / per) * l * n;
            let (bt, ct) = (&bt[bg..bg + l * n], &ct[bg..bg + l * n]);
            if width == LANES {
                forward_block(p, bt, ct, row0, y_blk, h_blk);
            } else {
                forward_lanes::<1>(p, bt, ct, row0, y_blk, h_blk);
            }
        });
    (y, hl)
}
