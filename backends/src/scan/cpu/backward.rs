//! The fused backward of the selective scan on plain f32 slices: per row, a forward pass keeps
//! the state at chunk starts, then the chunks are walked last first, their states recomputed,
//! with the adjoint carried back.

use super::forward::{ScanSlices, starts_sequence};
use crate::cpu::calls;
#[cfg(target_arch = "x86_64")]
use crate::cpu::lanes::has_avx2;
use crate::cpu::lanes::{LANES, advance, advance_keep, exp_approx, softplus_fast, to_time_major};
use rayon::prelude::*;

/// Steps per chunk in the backward's recompute: the memory per row is `N * L / CHUNK` floats of
/// checkpoints plus `2 * N * CHUNK` of recomputed states.
const CHUNK: usize = 64;

/// Gradients from the fused backward, as contiguous buffers in the inputs' shapes.
pub(crate) struct ScanGradVecs {
    pub du: Vec<f32>,
    pub ddelta: Vec<f32>,
    pub da: Vec<f32>,
    pub db: Vec<f32>,
    pub dc: Vec<f32>,
    pub dd: Vec<f32>,
    pub dz: Option<Vec<f32>>,
    pub ddelta_bias: Vec<f32>,
    pub dh0: Vec<f32>,
}

/// What one backward task (a batch row, a range of channels of one group) produces.
struct TaskGrads {
    b: usize,
    g: usize,
    ch: std::ops::Range<usize>,
    du: Vec<f32>,
    ddelta: Vec<f32>,
    dz: Vec<f32>,
    da: Vec<f32>,
    dd: Vec<f32>,
    dbias: Vec<f32>,
    dh0: Vec<f32>,
    /// Partial dB and dC of this task's group, time-major (L, N).
    db: Vec<f32>,
    dc: Vec<f32>,
}

/// The fused backward: for each row a forward pass stores the state at chunk starts, then the
/// chunks are walked in reverse, recomputing their states, with the adjoint `gh` carried back.
/// dB and dC, shared by the channels of a group, are summed from per-task partial buffers.
pub(crate) fn scan_backward(p: &ScanSlices, dy: &[f32], dstate: &[f32]) -> ScanGradVecs {
    calls::count(&calls::SCAN_BACKWARD);
    let s = p.dims;
    let (l, n) = (s.len, s.state);
    let per = s.dim / s.groups;
    let bt = to_time_major(p.b, s.batch * s.groups, n, l);
    let ct = to_time_major(p.c, s.batch * s.groups, n, l);
    let target = rayon::current_num_threads() * 4;
    let parts = (target / (s.batch * s.groups)).clamp(1, per.max(1));
    let width = if per.is_multiple_of(LANES) {
        per.div_ceil(parts).next_multiple_of(LANES)
    } else {
        per.div_ceil(parts)
    };
    let mut tasks = Vec::new();
    for b in 0..s.batch {
        for g in 0..s.groups {
            let mut c0 = g * per;
            while c0 < (g + 1) * per {
                let c1 = (c0 + width).min((g + 1) * per);
                tasks.push((b, g, c0..c1));
                c0 = c1;
            }
        }
    }
    let results: Vec<TaskGrads> = tasks
        .into_par_iter()
        .map(|(b, g, ch)| backward_task(p, &bt, &ct, dy, dstate, b, g, ch))
        .collect();

    let mut out = ScanGradVecs {
        du: vec![0.0; s.batch * s.dim * l],
        ddelta: vec![0.0; s.batch * s.dim * l],
        da: vec![0.0; s.dim * n],
        db: vec![0.0; s.batch * s.groups * n * l],
        dc: vec![0.0; s.batch * s.groups * n * l],
        dd: vec![0.0; s.dim],
        dz: p.z.map(|_| vec![0.0; s.batch * s.dim * l]),
        ddelta_bias: vec![0.0; s.dim],
        dh0: vec![0.0; s.batch * s.dim * n],
    };
    for r in results {
        let rows = (r.b * s.dim + r.ch.start) * l..(r.b * s.dim + r.ch.end) * l;
        out.du[rows.clone()].copy_from_slice(&r.du);
        out.ddelta[rows.clone()].copy_from_slice(&r.ddelta);
        if let Some(dz) = out.dz.as_mut() {
            dz[rows].copy_from_slice(&r.dz);
        }
        let hrows = (r.b * s.dim + r.ch.start) * n..(r.b * s.dim + r.ch.end) * n;
        out.dh0[hrows].copy_from_slice(&r.dh0);
        for (i, d) in r.ch.clone().enumerate() {
            out.dd[d] += r.dd[i];
            out.ddelta_bias[d] += r.dbias[i];
            for k in 0..n {
                out.da[d * n + k] += r.da[i * n + k];
            }
        }
        let gb = (r.b * s.groups + r.g) * n * l;
        for t in 0..l {
            for k in 0..n {
                out.db[gb + k * l + t] += r.db[t * n + k];
                out.dc[gb + k * l + t] += r.dc[t * n + k];
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn backward_task(
    p: &ScanSlices,
    bt: &[f32],
    ct: &[f32],
    dy: &[f32],
    dstate: &[f32],
    b: usize,
    g: usize,
    ch: std::ops::Range<usize>,
) -> TaskGrads {
    let s = p.dims;
    let (l, n) = (s.len, s.state);
    let nch = ch.len();
    let bg = (b * s.groups + g) * l * n;
    let mut r = TaskGrads {
        b,
        g,
        ch: ch.clone(),
        du: vec![0.0; nch * l],
        ddelta: vec![0.0; nch * l],
        dz: if p.z.is_some() {
            vec![0.0; nch * l]
        } else {
            Vec::new()
        },
        da: vec![0.0; nch * n],
        dd: vec![0.0; nch],
        dbias: vec![0.0; nch],
        dh0: vec![0.0; nch * n],
        db: vec![0.0; l * n],
        dc: vec![0.0; l * n],
    };
    let (bt, ct) = (&bt[bg..bg + l * n], &ct[bg..bg + l * n]);
    let mut i = 0;
    while i < nch {
        if nch - i >= LANES {
            backward_block(p, bt, ct, dy, dstate, b * s.dim + ch.start + i, i, &mut r);
            i += LANES;
        } else {
            backward_lanes::<1>(p, bt, ct, dy, dstate, b * s.dim + ch.start + i, i, &mut r);
            i += 1;
        }
    }
    r
}

/// [`backward_lanes`] over [`LANES`] channels, compiled for AVX2 + FMA where present.
#[allow(clippy::too_many_arguments)]
fn backward_block(
    p: &ScanSlices,
    bt: &[f32],
    ct: &[f32],
    dy: &[f32],
    dstate: &[f32],
    row0: usize,
    i0: usize,
    r: &mut TaskGrads,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        fn avx2(
            p: &ScanSlices,
            bt: &[f32],
            ct: &[f32],
            dy: &[f32],
            dstate: &[f32],
            row0: usize,
            i0: usize,
            r: &mut TaskGrads,
        ) {
            backward_lanes::<LANES>(p, bt, ct, dy, dstate, row0, i0, r)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, bt, ct, dy, dstate, row0, i0, r) };
    }
    backward_lanes::<LANES>(p, bt, ct, dy, dstate, row0, i0, r)
}

/// The adjoint update of one time step for `W` lanes (see [`backward_lanes`]).
#[allow(
    clippy::too_many_arguments,
    clippy::needless_range_loop,
    clippy::type_complexity
)]
#[inline(always)]
fn reverse_step<const W: usize>(
    gh: &mut [[f32; W]],
    da: &mut [[f32; W]],
    dc_t: &mut [f32],
    db_t: &mut [f32],
    (h_t, h_prev, dec): (&[[f32; W]], &[[f32; W]], &[[f32; W]]),
    a: &[[f32; W]],
    (c_t, b_t): (&[f32], &[f32]),
    (gy, dtv, dtu): ([f32; W], [f32; W], [f32; W]),
    (ddt, ghb): (&mut [f32; W], &mut [f32; W]),
) {
    for k in 0..gh.len() {
        let (ck, bk) = (c_t[k], b_t[k]);
        let (hk, hp, e, ak) = (&h_t[k], &h_prev[k], &dec[k], &a[k]);
        let (ghk_row, dak) = (&mut gh[k], &mut da[k]);
        let mut dcl = [0.0f32; W];
        let mut dbl = [0.0f32; W];
        for c in 0..W {
            dcl[c] = gy[c] * hk[c];
            let ghk = ghk_row[c] + gy[c] * ck;
            let g_da = ghk * hp[c] * e[c];
            dak[c] += g_da * dtv[c];
            ddt[c] += g_da * ak[c];
            ghb[c] += ghk * bk;
            dbl[c] = ghk * dtu[c];
            ghk_row[c] = ghk * e[c];
        }
        dc_t[k] += dcl.iter().sum::<f32>();
        db_t[k] += dbl.iter().sum::<f32>();
    }
}

/// The backward of `W` consecutive channels of one group (rows `row0..row0 + W` of the
/// (B·D) rows, task-local index `i0..`), one channel per lane: a forward pass stores the state
/// at chunk starts; then each chunk, last first, recomputes its states and decays and walks back
/// with the adjoint `gh`. dB and dC are summed over the lanes into the task's partial buffers.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn backward_lanes<const W: usize>(
    p: &ScanSlices,
    bt: &[f32],
    ct: &[f32],
    dy: &[f32],
    dstate: &[f32],
    row0: usize,
    i0: usize,
    r: &mut TaskGrads,
) {
    let s = p.dims;
    let (l, n) = (s.len, s.state);
    let chunk = CHUNK;
    let n_chunks = l.div_ceil(chunk);
    let d0 = row0 % s.dim;
    let lane = |x: &[f32], t: usize| -> [f32; W] { std::array::from_fn(|c| x[(row0 + c) * l + t]) };
    let a: Vec<[f32; W]> = (0..n)
        .map(|k| std::array::from_fn(|c| p.a[(d0 + c) * n + k]))
        .collect();
    let dskip: [f32; W] = std::array::from_fn(|c| p.d[d0 + c]);
    let bias: [f32; W] = std::array::from_fn(|c| p.delta_bias[d0 + c]);
    // Step sizes of the whole row block, and the raw values for softplus' derivative.
    let mut raw = vec![[0.0f32; W]; l];
    let mut dt = vec![[0.0f32; W]; l];
    for t in 0..l {
        let dl = lane(p.delta, t);
        for c in 0..W {
            raw[t][c] = dl[c] + bias[c];
            dt[t][c] = if p.delta_softplus {
                softplus_fast(raw[t][c])
            } else {
                raw[t][c]
            };
        }
    }
    // Forward pass keeping the chunk starts; states[i] = h after step lo + i - 1.
    let mut starts = vec![[0.0f32; W]; n_chunks * n];
    let mut states = vec![[0.0f32; W]; (chunk + 1) * n];
    let mut decays = vec![[0.0f32; W]; chunk * n];
    for k in 0..n {
        states[k] = std::array::from_fn(|c| p.h0[(row0 + c) * n + k]);
    }
    // The state a step starts from when a sequence starts there.
    let zeros = vec![[0.0f32; W]; n];
    let bi = row0 / s.dim;
    for t in 0..l {
        if t % chunk == 0 {
            let kc = t / chunk;
            starts[kc * n..(kc + 1) * n].copy_from_slice(&states[..n]);
        }
        if starts_sequence(p, bi, t) {
            states[..n].fill([0.0; W]);
        }
        let (dtv, u) = (dt[t], lane(p.u, t));
        let du: [f32; W] = std::array::from_fn(|c| dtv[c] * u[c]);
        advance(&mut states[..n], &a, &bt[t * n..(t + 1) * n], dtv, du);
    }
    let mut gh: Vec<[f32; W]> = (0..n)
        .map(|k| std::array::from_fn(|c| dstate[(row0 + c) * n + k]))
        .collect();
    let mut da = vec![[0.0f32; W]; n];
    let (mut dd, mut dbias) = ([0.0f32; W], [0.0f32; W]);
    for kc in (0..n_chunks).rev() {
        let lo = kc * chunk;
        let hi = (lo + chunk).min(l);
        states[..n].copy_from_slice(&starts[kc * n..(kc + 1) * n]);
        for t in lo..hi {
            let j = t - lo;
            let (dtv, u) = (dt[t], lane(p.u, t));
            let du: [f32; W] = std::array::from_fn(|c| dtv[c] * u[c]);
            let (before, after) = states.split_at_mut((j + 1) * n);
            let prev = if starts_sequence(p, bi, t) {
                &zeros[..]
            } else {
                &before[j * n..]
            };
            advance_keep(
                &mut after[..n],
                prev,
                &mut decays[j * n..(j + 1) * n],
                &a,
                &bt[t * n..(t + 1) * n],
                dtv,
                du,
            );
        }
        for t in (lo..hi).rev() {
            let j = t - lo;
            let u = lane(p.u, t);
            let dyv = lane(dy, t);
            let (c_t, b_t) = (&ct[t * n..(t + 1) * n], &bt[t * n..(t + 1) * n]);
            let h_t = &states[(j + 1) * n..(j + 2) * n];
            let restart = starts_sequence(p, bi, t);
            let h_prev = if restart {
                &zeros[..]
            } else {
                &states[j * n..(j + 1) * n]
            };
            let mut gy = dyv;
            if let Some(z) = p.z {
                let zv = lane(z, t);
                let mut y_pre = [0.0f32; W];
                for k in 0..n {
                    for c in 0..W {
                        y_pre[c] += h_t[k][c] * c_t[k];
                    }
                }
                for c in 0..W {
                    y_pre[c] += dskip[c] * u[c];
                    let sg = 1.0 / (1.0 + exp_approx(-zv[c]));
                    let silu_grad = sg * (1.0 + zv[c] * (1.0 - sg));
                    r.dz[(i0 + c) * l + t] = dyv[c] * y_pre[c] * silu_grad;
                    gy[c] = dyv[c] * zv[c] * sg;
                }
            }
            let (mut ddt, mut ghb) = ([0.0f32; W], [0.0f32; W]);
            let dtv = dt[t];
            let dtu: [f32; W] = std::array::from_fn(|c| dtv[c] * u[c]);
            reverse_step(
                &mut gh,
                &mut da,
                &mut r.dc[t * n..(t + 1) * n],
                &mut r.db[t * n..(t + 1) * n],
                (h_t, h_prev, &decays[j * n..(j + 1) * n]),
                &a,
                (c_t, b_t),
                (gy, dtv, dtu),
                (&mut ddt, &mut ghb),
            );
            if restart {
                // The state before this step belongs to the previous sequence: no gradient
                // flows back through it.
                gh.fill([0.0; W]);
            }
            for c in 0..W {
                dd[c] += gy[c] * u[c];
                let g_dt = ddt[c] + ghb[c] * u[c];
                r.du[(i0 + c) * l + t] = ghb[c] * dt[t][c] + gy[c] * dskip[c];
                let g_raw = if p.delta_softplus {
                    g_dt / (1.0 + exp_approx(-raw[t][c]))
                } else {
                    g_dt
                };
                r.ddelta[(i0 + c) * l + t] = g_raw;
                dbias[c] += g_raw;
            }
        }
    }
    for c in 0..W {
        r.dd[i0 + c] = dd[c];
        r.dbias[i0 + c] = dbias[c];
        for k in 0..n {
            r.da[(i0 + c) * n + k] = da[k][c];
            r.dh0[(i0 + c) * n + k] = gh[k][c];
        }
    }
}
