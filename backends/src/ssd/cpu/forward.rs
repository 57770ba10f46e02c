//! The SSD recurrence (Mamba2's scan) fused on plain f32 slices, in the op's own time-major
//! layout: one task per (batch row, head) (rayon), the head's (P, N) state in a local buffer.
//!
//! For each step `t` of head `h` (the paper's scalar-times-identity `A`):
//! `H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T` (P x N), `y_t = H_t C_t + D_h x_t`; with log
//! decays given per step (Mamba-3), `exp(a_{t,h})` in place of `exp(dt_t A_h)`.
//! `A` is one scalar per head, so a step takes one `exp` for the whole (P, N) state; the update
//! and the `C` contraction run along N (contiguous), vectorised. Nothing is transposed: `x`, `B`
//! and `C` are read where the op's (B, L, H, P) and (B, L, G, N) layouts hold them.

use crate::cpu::calls;
#[cfg(target_arch = "x86_64")]
use crate::cpu::lanes::has_avx2;
use crate::ssd::reference::SsdDims;
use rayon::prelude::*;

/// The decays: `A` (H), a step decaying by `exp(dt_t A_h)`, or log decays (B, L, H) given per
/// step (Mamba-3's data-dependent `A`), a step decaying by `exp(a_{t,h})`.
#[derive(Clone, Copy)]
pub(crate) enum Decay<'a> {
    PerHead(&'a [f32]),
    PerStep(&'a [f32]),
}

/// The SSD op's inputs as contiguous row-major slices: `x` (B, L·R, H, P), `dt` (B, L, H)
/// (already discretised), the decays `a`, `b`, `c` (B, L·R, G, N), `d` (H), `h0` (B, H, P, N),
/// `reset` (B, L): 1 where a sequence starts (the state before that step is zeroed). R is
/// `dims.rank` (the sub-steps of one time step, Mamba-3's MIMO; 1 otherwise).
pub(crate) struct SsdSlices<'a> {
    pub dims: SsdDims,
    pub x: &'a [f32],
    pub dt: &'a [f32],
    pub a: Decay<'a>,
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub d: &'a [f32],
    pub h0: &'a [f32],
    pub reset: Option<&'a [f32]>,
}

/// Lanes of the N-axis accumulators (one AVX2 register).
const W: usize = 8;

/// `y` (B, L·R, H, P) and the final state (B, H, P, N).
pub(crate) fn ssd_forward(p: &SsdSlices) -> (Vec<f32>, Vec<f32>) {
    calls::count(&calls::SSD_FORWARD);
    let s = p.dims;
    let (bs, h, hp, n) = (s.batch, s.heads, s.head_dim, s.state);
    // Rows of outputs: sub-steps.
    let l = s.len * s.rank;
    let mut state = vec![0.0f32; bs * h * hp * n];
    let mut per_head = vec![Vec::new(); bs * h];
    // State blocks of (B, H, P, N) are exactly the tasks' (batch row, head) pairs.
    state
        .par_chunks_mut(hp * n)
        .zip(per_head.par_iter_mut())
        .enumerate()
        .for_each(|(task, (st, yh))| {
            *yh = vec![0.0f32; l * hp];
            head_task(p, task / h, task % h, st, yh);
        });
    // y (B, L, H, P): each (row, step) gathers its heads' P outputs.
    let mut y = vec![0.0f32; bs * l * h * hp];
    y.par_chunks_mut(h * hp).enumerate().for_each(|(row, out)| {
        let (bi, t) = (row / l.max(1), row % l.max(1));
        for (hi, o) in out.chunks_mut(hp).enumerate() {
            o.copy_from_slice(&per_head[bi * h + hi][t * hp..(t + 1) * hp]);
        }
    });
    (y, state)
}

/// The recurrence of head `hi` of batch row `bi`: `st` its (P, N) state (the final one on
/// return), `yh` its outputs (L·R, P).
fn head_task(p: &SsdSlices, bi: usize, hi: usize, st: &mut [f32], yh: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(p: &SsdSlices, bi: usize, hi: usize, st: &mut [f32], yh: &mut [f32]) {
            if p.dims.rank == 1 {
                head_body(p, bi, hi, st, yh)
            } else {
                head_body_ranked(p, bi, hi, st, yh)
            }
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, bi, hi, st, yh) };
    }
    if p.dims.rank == 1 {
        head_body(p, bi, hi, st, yh)
    } else {
        head_body_ranked(p, bi, hi, st, yh)
    }
}

/// The decay of head `hi` at time row `row` (batch row · L + step).
#[inline(always)]
pub(super) fn step_decay(p: &SsdSlices, row: usize, hi: usize) -> f32 {
    let h = p.dims.heads;
    match p.a {
        Decay::PerHead(a) => (p.dt[row * h + hi] * a[hi]).exp(),
        Decay::PerStep(l) => l[row * h + hi].exp(),
    }
}

/// [`head_body`] with R > 1 sub-steps per time step (Mamba-3's MIMO): the state takes the R
/// rank-one updates `dt x_{t,r} B_{t,r}ᵀ` after its decay, then each sub-step reads it,
/// `y_{t,r} = H_t C_{t,r} + D x_{t,r}`: two passes over the state per step instead of one.
#[inline(always)]
fn head_body_ranked(p: &SsdSlices, bi: usize, hi: usize, st: &mut [f32], yh: &mut [f32]) {
    let s = p.dims;
    let (l, r, h, hp, g, n) = (s.len, s.rank, s.heads, s.head_dim, s.groups, s.state);
    let gi = hi / (h / g);
    let dskip = p.d[hi];
    let block = (bi * h + hi) * hp * n;
    st.copy_from_slice(&p.h0[block..block + hp * n]);
    let full = n - n % W;
    for t in 0..l {
        let row = bi * l + t;
        if p.reset.is_some_and(|v| v[row] != 0.0) {
            st.fill(0.0);
        }
        let dt = p.dt[row * h + hi];
        let decay = step_decay(p, row, hi);
        // Sub-step j = (row, ri) of x (.., H, P) and B, C (.., G, N).
        let x_of = |ri: usize| {
            let j = row * r + ri;
            &p.x[(j * h + hi) * hp..(j * h + hi + 1) * hp]
        };
        for (pi, srow) in st.chunks_exact_mut(n).enumerate() {
            for v in srow.iter_mut() {
                *v *= decay;
            }
            for ri in 0..r {
                let j = row * r + ri;
                let xs = dt * x_of(ri)[pi];
                let bt = &p.b[(j * g + gi) * n..(j * g + gi + 1) * n];
                for (sv, bv) in srow[..full]
                    .chunks_exact_mut(W)
                    .zip(bt[..full].chunks_exact(W))
                {
                    for k in 0..W {
                        sv[k] += xs * bv[k];
                    }
                }
                for k in full..n {
                    srow[k] += xs * bt[k];
                }
            }
        }
        for ri in 0..r {
            let j = row * r + ri;
            let ct = &p.c[(j * g + gi) * n..(j * g + gi + 1) * n];
            let x = x_of(ri);
            let out = &mut yh[(t * r + ri) * hp..(t * r + ri + 1) * hp];
            for (pi, srow) in st.chunks_exact(n).enumerate() {
                let mut acc = [0.0f32; W];
                for (sv, cv) in srow[..full].chunks_exact(W).zip(ct[..full].chunks_exact(W)) {
                    for k in 0..W {
                        acc[k] += cv[k] * sv[k];
                    }
                }
                let mut sum = 0.0f32;
                for k in full..n {
                    sum += ct[k] * srow[k];
                }
                out[pi] = acc.iter().sum::<f32>() + sum + dskip * x[pi];
            }
        }
    }
}

#[inline(always)]
fn head_body(p: &SsdSlices, bi: usize, hi: usize, st: &mut [f32], yh: &mut [f32]) {
    let s = p.dims;
    let (l, h, hp, g, n) = (s.len, s.heads, s.head_dim, s.groups, s.state);
    let gi = hi / (h / g);
    let dskip = p.d[hi];
    let block = (bi * h + hi) * hp * n;
    st.copy_from_slice(&p.h0[block..block + hp * n]);
    let full = n - n % W;
    for t in 0..l {
        let row = bi * l + t;
        if p.reset.is_some_and(|r| r[row] != 0.0) {
            st.fill(0.0);
        }
        let dt = p.dt[row * h + hi];
        let decay = step_decay(p, row, hi);
        let x = &p.x[(row * h + hi) * hp..(row * h + hi + 1) * hp];
        let bt = &p.b[(row * g + gi) * n..(row * g + gi + 1) * n];
        let ct = &p.c[(row * g + gi) * n..(row * g + gi + 1) * n];
        let out = &mut yh[t * hp..(t + 1) * hp];
        for (pi, srow) in st.chunks_exact_mut(n).enumerate() {
            let xs = dt * x[pi];
            let mut acc = [0.0f32; W];
            for ((sv, bv), cv) in srow[..full]
                .chunks_exact_mut(W)
                .zip(bt[..full].chunks_exact(W))
                .zip(ct[..full].chunks_exact(W))
            {
                for k in 0..W {
                    let v = decay * sv[k] + xs * bv[k];
                    sv[k] = v;
                    acc[k] += cv[k] * v;
                }
            }
            let mut sum = 0.0f32;
            for k in full..n {
                let v = decay * srow[k] + xs * bt[k];
                srow[k] = v;
                sum += ct[k] * v;
            }
            out[pi] = acc.iter().sum::<f32>() + sum + dskip * x[pi];
        }
    }
}
