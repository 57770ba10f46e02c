//! The log-decay SSD's backward fused on plain f32 slices (the reverse of [`super::forward`]): one
//! task per (batch row, head) (rayon), its (P, N) state and state gradient in local buffers.
//!
//! A forward pass stores the state at the start of every segment of [`SEGMENT`] steps; the
//! segments are then taken from the last, their states recomputed from the checkpoint and
//! walked backwards with `g`, the gradient reaching the state after step `t`:
//! `g ← g + Σ_r dy_{t,r} C_{t,r}ᵀ` (P x N), then `dC_{t,r} = h_tᵀ dy_{t,r}`,
//! `dB_{t,r} = dt_t gᵀ x_{t,r}`, `dx_{t,r} = dt_t g B_{t,r} + D dy_{t,r}`,
//! `d dt_t = Σ_r x_{t,r} · g B_{t,r}`, `d a_t = exp(a_t) ⟨g, h_{t−1}⟩`, and `g ← exp(a_t) g`
//! (zero across a reset). Memory per task: (L / SEGMENT + SEGMENT) states, never (L, P, N).
//! dB and dC are summed over the heads of a group after the tasks.

use super::forward::{SsdSlices, step_decay};
use crate::cpu::calls;
use crate::cpu::lanes::dot;
#[cfg(target_arch = "x86_64")]
use crate::cpu::lanes::has_avx2;
use rayon::prelude::*;

/// Steps per recomputed segment: its states (SEGMENT + 1 of (P, N)) stay in the L2 cache at
/// Mamba's sizes (P 64, N 128: 32 KiB each).
const SEGMENT: usize = 16;

/// The gradients, in the layouts of the op's inputs: `dx` (B, L·R, H, P), `ddt` and
/// `dlog_decay` (B, L, H), `db`, `dc` (B, L·R, G, N), `dd` (H), `dh0` (B, H, P, N).
pub(crate) struct SsdGradVecs {
    pub dx: Vec<f32>,
    pub ddt: Vec<f32>,
    pub dlog_decay: Vec<f32>,
    pub db: Vec<f32>,
    pub dc: Vec<f32>,
    pub dd: Vec<f32>,
    pub dh0: Vec<f32>,
}

/// One task's results: its head's rows of every gradient.
#[derive(Default, Clone)]
struct HeadGrads {
    /// (L·R, P)
    dx: Vec<f32>,
    /// (L)
    ddt: Vec<f32>,
    /// (L)
    dlog: Vec<f32>,
    /// (L·R, N): this head's share of its group's dB.
    db: Vec<f32>,
    /// (L·R, N)
    dc: Vec<f32>,
    dd: f32,
    /// (P, N)
    dh0: Vec<f32>,
}

/// The backward of the log-decay SSD (`p.a` must be per-step log decays) given `dy`
/// (B, L·R, H, P) and `dstate` (B, H, P, N).
pub(crate) fn ssd_backward(p: &SsdSlices, dy: &[f32], dstate: &[f32]) -> SsdGradVecs {
    calls::count(&calls::SSD_BACKWARD);
    let s = p.dims;
    let (bs, l, r, h, hp, g, n) = (
        s.batch, s.len, s.rank, s.heads, s.head_dim, s.groups, s.state,
    );
    let lr = l * r;
    let mut per_head = vec![HeadGrads::default(); bs * h];
    per_head.par_iter_mut().enumerate().for_each(|(task, out)| {
        *out = head_task(p, dy, dstate, task / h, task % h);
    });
    let mut grads = SsdGradVecs {
        dx: vec![0.0; bs * lr * h * hp],
        ddt: vec![0.0; bs * l * h],
        dlog_decay: vec![0.0; bs * l * h],
        db: vec![0.0; bs * lr * g * n],
        dc: vec![0.0; bs * lr * g * n],
        dd: vec![0.0; h],
        dh0: vec![0.0; bs * h * hp * n],
    };
    let per_group = h / g;
    for (task, hg) in per_head.iter().enumerate() {
        let (bi, hi) = (task / h, task % h);
        let gi = hi / per_group;
        for j in 0..lr {
            let row = bi * lr + j;
            grads.dx[(row * h + hi) * hp..(row * h + hi + 1) * hp]
                .copy_from_slice(&hg.dx[j * hp..(j + 1) * hp]);
            let at = (row * g + gi) * n;
            for (o, v) in grads.db[at..at + n].iter_mut().zip(&hg.db[j * n..]) {
                *o += v;
            }
            for (o, v) in grads.dc[at..at + n].iter_mut().zip(&hg.dc[j * n..]) {
                *o += v;
            }
        }
        for t in 0..l {
            let at = (bi * l + t) * h + hi;
            grads.ddt[at] = hg.ddt[t];
            grads.dlog_decay[at] = hg.dlog[t];
        }
        grads.dd[hi] += hg.dd;
        grads.dh0[task * hp * n..(task + 1) * hp * n].copy_from_slice(&hg.dh0);
    }
    grads
}

fn head_task(p: &SsdSlices, dy: &[f32], dstate: &[f32], bi: usize, hi: usize) -> HeadGrads {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(p: &SsdSlices, dy: &[f32], dstate: &[f32], bi: usize, hi: usize) -> HeadGrads {
            head_body(p, dy, dstate, bi, hi)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, dy, dstate, bi, hi) };
    }
    head_body(p, dy, dstate, bi, hi)
}

/// The views of one (row, head) task into the op's inputs.
struct Head<'a> {
    p: &'a SsdSlices<'a>,
    bi: usize,
    hi: usize,
    gi: usize,
}

impl Head<'_> {
    /// Time row (batch row · L + step).
    #[inline(always)]
    fn row(&self, t: usize) -> usize {
        self.bi * self.p.dims.len + t
    }
    /// Sub-step `ri` of step `t` as a row of the (B, L·R, ..) inputs.
    #[inline(always)]
    fn sub(&self, t: usize, ri: usize) -> usize {
        self.row(t) * self.p.dims.rank + ri
    }
    #[inline(always)]
    fn x(&self, t: usize, ri: usize) -> &[f32] {
        let (h, hp) = (self.p.dims.heads, self.p.dims.head_dim);
        let at = (self.sub(t, ri) * h + self.hi) * hp;
        &self.p.x[at..at + hp]
    }
    #[inline(always)]
    fn group_row<'s>(&self, v: &'s [f32], t: usize, ri: usize) -> &'s [f32] {
        let (g, n) = (self.p.dims.groups, self.p.dims.state);
        let at = (self.sub(t, ri) * g + self.gi) * n;
        &v[at..at + n]
    }
    #[inline(always)]
    fn dt(&self, t: usize) -> f32 {
        self.p.dt[self.row(t) * self.p.dims.heads + self.hi]
    }
    #[inline(always)]
    fn decay(&self, t: usize) -> f32 {
        step_decay(self.p, self.row(t), self.hi)
    }
    #[inline(always)]
    fn resets(&self, t: usize) -> bool {
        self.p.reset.is_some_and(|v| v[self.row(t)] != 0.0)
    }
    /// One forward step on the (P, N) state.
    #[inline(always)]
    fn step(&self, st: &mut [f32], t: usize) {
        let n = self.p.dims.state;
        if self.resets(t) {
            st.fill(0.0);
        }
        let (dt, decay) = (self.dt(t), self.decay(t));
        // The decay rides on the first sub-step's update: one pass over the state for R = 1.
        for ri in 0..self.p.dims.rank {
            let keep = if ri == 0 { decay } else { 1.0 };
            let (x, bt) = (self.x(t, ri), self.group_row(self.p.b, t, ri));
            for (srow, xv) in st.chunks_exact_mut(n).zip(x) {
                let xs = dt * xv;
                for (sv, bv) in srow.iter_mut().zip(bt) {
                    *sv = keep * *sv + xs * bv;
                }
            }
        }
    }
}

#[inline(always)]
fn head_body(p: &SsdSlices, dy: &[f32], dstate: &[f32], bi: usize, hi: usize) -> HeadGrads {
    let s = p.dims;
    let (l, r, h, hp, n) = (s.len, s.rank, s.heads, s.head_dim, s.state);
    let hd = Head {
        p,
        bi,
        hi,
        gi: hi / (h / s.groups),
    };
    let dskip = p.d[hi];
    let block = (bi * h + hi) * hp * n;
    let segments = l.div_ceil(SEGMENT);
    // The state before each segment (before its first step's reset).
    let mut checkpoints = vec![0.0f32; segments * hp * n];
    let mut st = p.h0[block..block + hp * n].to_vec();
    for k in 0..segments {
        checkpoints[k * hp * n..(k + 1) * hp * n].copy_from_slice(&st);
        for t in k * SEGMENT..((k + 1) * SEGMENT).min(l) {
            hd.step(&mut st, t);
        }
    }
    let mut out = HeadGrads {
        dx: vec![0.0; l * r * hp],
        ddt: vec![0.0; l],
        dlog: vec![0.0; l],
        db: vec![0.0; l * r * n],
        dc: vec![0.0; l * r * n],
        dd: 0.0,
        dh0: Vec::new(),
    };
    // g: the gradient reaching the state after the current step.
    let mut gs = dstate[block..block + hp * n].to_vec();
    // states[i]: the state after step lo + i − 1 (states[0] the checkpoint).
    let mut states = vec![0.0f32; (SEGMENT + 1) * hp * n];
    let mut gb = vec![0.0f32; hp];
    for k in (0..segments).rev() {
        let (lo, hi_t) = (k * SEGMENT, ((k + 1) * SEGMENT).min(l));
        states[..hp * n].copy_from_slice(&checkpoints[k * hp * n..(k + 1) * hp * n]);
        for t in lo..hi_t {
            let i = t - lo;
            let (done, next) = states.split_at_mut((i + 1) * hp * n);
            let next = &mut next[..hp * n];
            next.copy_from_slice(&done[i * hp * n..]);
            hd.step(next, t);
        }
        for t in (lo..hi_t).rev() {
            let i = t - lo;
            let h_t = &states[(i + 1) * hp * n..(i + 2) * hp * n];
            let dt = hd.dt(t);
            let mut ddt = 0.0f32;
            for ri in 0..r {
                let j = t * r + ri;
                let sub = hd.sub(t, ri);
                let dyr = &dy[(sub * h + hi) * hp..(sub * h + hi + 1) * hp];
                let (x, ct) = (hd.x(t, ri), hd.group_row(p.c, t, ri));
                // g += dy Cᵀ; dC = hᵀ dy.
                let dc = &mut out.dc[j * n..(j + 1) * n];
                for ((grow, hrow), dyv) in gs.chunks_exact_mut(n).zip(h_t.chunks_exact(n)).zip(dyr)
                {
                    for ((gv, cv), (dcv, hv)) in
                        grow.iter_mut().zip(ct).zip(dc.iter_mut().zip(hrow))
                    {
                        *gv += dyv * cv;
                        *dcv += dyv * hv;
                    }
                }
                out.dd += dot(dyr, x);
            }
            for ri in 0..r {
                let j = t * r + ri;
                let sub = hd.sub(t, ri);
                let dyr = &dy[(sub * h + hi) * hp..(sub * h + hi + 1) * hp];
                let (x, bt) = (hd.x(t, ri), hd.group_row(p.b, t, ri));
                // dB = dt gᵀ x; (g B)_p; dx = dt (g B) + D dy.
                let db = &mut out.db[j * n..(j + 1) * n];
                for ((grow, xv), gbv) in gs.chunks_exact(n).zip(x).zip(gb.iter_mut()) {
                    let xs = dt * xv;
                    for (dbv, gv) in db.iter_mut().zip(grow) {
                        *dbv += xs * gv;
                    }
                    *gbv = dot(grow, bt);
                }
                let dx = &mut out.dx[j * hp..(j + 1) * hp];
                for ((dxv, gbv), dyv) in dx.iter_mut().zip(&gb).zip(dyr) {
                    *dxv = dt * gbv + dskip * dyv;
                }
                ddt += dot(x, &gb);
            }
            out.ddt[t] = ddt;
            let decay = hd.decay(t);
            if hd.resets(t) {
                // The state before this step was zeroed: no gradient reaches it or the decay.
                out.dlog[t] = 0.0;
                gs.fill(0.0);
            } else {
                let h_prev = &states[i * hp * n..(i + 1) * hp * n];
                out.dlog[t] = decay * dot(&gs, h_prev);
                for v in gs.iter_mut() {
                    *v *= decay;
                }
            }
        }
    }
    out.dh0 = gs;
    out
}
