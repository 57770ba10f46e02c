//! The SSD recurrence (Mamba2's scan) fused on plain f32 slices, in the op's own time-major
//! layout: one task per (batch row, head) (rayon), the head's (P, N) state in a local buffer.
//!
//! For each step `t` of head `h` (the paper's scalar-times-identity `A`):
//! `H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T` (P x N), `y_t = H_t C_t + D_h x_t`; with log
//! decays given per step (Mamba-3), `exp(a_{t,h})` in place of `exp(dt_t A_h)`.
//! `A` is one scalar per head, so a step takes one `exp` for the whole (P, N) state.
//!
//! The P rows of a head's state evolve independently (`h_p ← decay h_p + dt x_p B`, each read
//! by `C`), so the loops run row by row through time rather than step by step through the
//! state: time is cut into blocks of [`TB`] steps, whose decays, `dt x` and B, C rows are
//! gathered once per head; each state row then walks the block from registers (AVX2: up to 64
//! values of a row in eight registers), instead of the whole (P, N) state (32 KiB at P 64,
//! N 128) passing through the cache once per step.

use crate::cpu::calls;
use crate::cpu::lanes::dot;
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

/// Steps per time block: the block's B and C rows (2 · TB · R · N values) stay in the L2 cache.
const TB: usize = 64;

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
            head_body::<true>(p, bi, hi, st, yh)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, bi, hi, st, yh) };
    }
    head_body::<false>(p, bi, hi, st, yh)
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

/// One time block of one head, gathered so that a state row walks it with contiguous reads:
/// sub-step `j = t · R + r` of the block's step `t`.
struct Block {
    /// Steps in this block (at most [`TB`]).
    steps: usize,
    /// Sub-steps per step R.
    rank: usize,
    /// Width N of a B or C row.
    n: usize,
    /// `exp(dt A)` (or `exp(a)`) per step.
    decay: Vec<f32>,
    /// Whether the state is zeroed before the step (a sequence starts there).
    reset: Vec<bool>,
    /// `dt x` per state row and sub-step: (P, TB · R).
    xs: Vec<f32>,
    /// B and C rows per sub-step: (TB · R, N).
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Block {
    fn new(r: usize, hp: usize, n: usize) -> Self {
        Self {
            steps: 0,
            rank: r,
            n,
            decay: vec![0.0; TB],
            reset: vec![false; TB],
            xs: vec![0.0; hp * TB * r],
            b: vec![0.0; TB * r * n],
            c: vec![0.0; TB * r * n],
        }
    }

    /// Gathers steps `t0..t0 + steps` of head `hi` (group `gi`) of batch row `bi`.
    fn gather(&mut self, p: &SsdSlices, bi: usize, hi: usize, gi: usize, t0: usize, steps: usize) {
        let s = p.dims;
        let (l, r, h, hp, g, n) = (s.len, s.rank, s.heads, s.head_dim, s.groups, s.state);
        self.steps = steps;
        for t in 0..steps {
            let row = bi * l + t0 + t;
            self.decay[t] = step_decay(p, row, hi);
            self.reset[t] = p.reset.is_some_and(|v| v[row] != 0.0);
            let dt = p.dt[row * h + hi];
            for ri in 0..r {
                let (jt, j) = (row * r + ri, t * r + ri);
                let x = &p.x[(jt * h + hi) * hp..(jt * h + hi + 1) * hp];
                for (pi, xv) in x.iter().enumerate() {
                    self.xs[pi * TB * r + j] = dt * xv;
                }
                let at = (jt * g + gi) * n;
                self.b[j * n..(j + 1) * n].copy_from_slice(&p.b[at..at + n]);
                self.c[j * n..(j + 1) * n].copy_from_slice(&p.c[at..at + n]);
            }
        }
    }

    /// `dt x` of state row `pi` for each sub-step of the block.
    fn xs_row(&self, pi: usize) -> &[f32] {
        let w = TB * self.rank;
        &self.xs[pi * w..pi * w + self.steps * self.rank]
    }
}

/// The recurrence by state rows: each block of [`TB`] steps is gathered, then every row of the
/// state walks it ([`row_scan`]); `y = C · h + D x` per row and sub-step.
#[inline(always)]
fn head_body<const AVX2: bool>(
    p: &SsdSlices,
    bi: usize,
    hi: usize,
    st: &mut [f32],
    yh: &mut [f32],
) {
    let s = p.dims;
    let (l, r, h, hp, g, n) = (s.len, s.rank, s.heads, s.head_dim, s.groups, s.state);
    let gi = hi / (h / g);
    let dskip = p.d[hi];
    let block = (bi * h + hi) * hp * n;
    st.copy_from_slice(&p.h0[block..block + hp * n]);
    let mut blk = Block::new(r, hp, n);
    let mut out = vec![0.0f32; TB * r];
    let mut lanes = vec![0.0f32; 8 * TB * r];
    for t0 in (0..l).step_by(TB) {
        let steps = TB.min(l - t0);
        blk.gather(p, bi, hi, gi, t0, steps);
        for (pi, srow) in st.chunks_exact_mut(n).enumerate() {
            let out = &mut out[..steps * r];
            row_scan::<AVX2>(srow, &blk, pi, &mut lanes, out);
            for (j, y) in out.iter().enumerate() {
                // The skip reads x itself (the block holds dt x).
                let jt = (bi * l + t0) * r + j;
                yh[(t0 * r + j) * hp + pi] = y + dskip * p.x[(jt * h + hi) * hp + pi];
            }
        }
    }
}

/// One state row through a block: per step `t`, `h ← decay_t h` (zeroed first at a reset),
/// then per sub-step `h ← h + xs_j B_j`, then `out_j = C_j · h`. `AVX2`: the caller has checked
/// that the CPU has AVX2 and FMA.
#[inline(always)]
fn row_scan<const AVX2: bool>(
    srow: &mut [f32],
    blk: &Block,
    pi: usize,
    lanes: &mut [f32],
    out: &mut [f32],
) {
    out.fill(0.0);
    let mut lo = 0;
    #[cfg(target_arch = "x86_64")]
    if AVX2 && srow.len() >= 8 {
        lanes[..8 * out.len()].fill(0.0);
        // Chunks of 64 values (eight registers), then one chunk of the remaining multiple of 8.
        while lo + 8 <= srow.len() {
            let width = (srow.len() - lo).min(64) / 8;
            let chunk = &mut srow[lo..lo + width * 8];
            // SAFETY: AVX2 is set only where the CPU was checked for AVX2 and FMA.
            unsafe {
                match width {
                    8 => x86::scan_chunk::<8>(chunk, blk, pi, lo, lanes),
                    7 => x86::scan_chunk::<7>(chunk, blk, pi, lo, lanes),
                    6 => x86::scan_chunk::<6>(chunk, blk, pi, lo, lanes),
                    5 => x86::scan_chunk::<5>(chunk, blk, pi, lo, lanes),
                    4 => x86::scan_chunk::<4>(chunk, blk, pi, lo, lanes),
                    3 => x86::scan_chunk::<3>(chunk, blk, pi, lo, lanes),
                    2 => x86::scan_chunk::<2>(chunk, blk, pi, lo, lanes),
                    _ => x86::scan_chunk::<1>(chunk, blk, pi, lo, lanes),
                }
            }
            lo += width * 8;
        }
        // SAFETY: as above.
        unsafe { x86::sum_lanes(lanes, out) };
    }
    scan_columns(&mut srow[lo..], blk, pi, lo, out);
}

/// [`row_scan`] on the columns `lo..lo + part.len()` of a state row (`part`), adding each
/// sub-step's share of `C · h` to `out`: the portable body (and the AVX2 body's last columns).
fn scan_columns(part: &mut [f32], blk: &Block, pi: usize, lo: usize, out: &mut [f32]) {
    if part.is_empty() {
        return;
    }
    let (r, n, w) = (blk.rank, blk.n, part.len());
    let xs = blk.xs_row(pi);
    for t in 0..blk.steps {
        if blk.reset[t] {
            part.fill(0.0);
        }
        let decay = blk.decay[t];
        for v in part.iter_mut() {
            *v *= decay;
        }
        for ri in 0..r {
            let j = t * r + ri;
            let (x, bt) = (xs[j], &blk.b[j * n + lo..j * n + lo + w]);
            for (v, bv) in part.iter_mut().zip(bt) {
                *v += x * bv;
            }
        }
        for ri in 0..r {
            let j = t * r + ri;
            out[j] += dot(part, &blk.c[j * n + lo..j * n + lo + w]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Block;
    use std::arch::x86_64::*;

    /// [`super::scan_columns`] on `V` groups of 8 columns from `lo`, the chunk held in `V`
    /// registers through the whole block: per step one multiply by the decay and one FMA per
    /// register and sub-step for the update, one FMA per register and sub-step for `C · h`
    /// (two accumulators, even and odd registers, to halve the dependency chain), whose eight
    /// lanes are added to sub-step `j`'s eight in `lanes` (summed after the block).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn scan_chunk<const V: usize>(
        chunk: &mut [f32],
        blk: &Block,
        pi: usize,
        lo: usize,
        lanes: &mut [f32],
    ) {
        assert!(
            chunk.len() == 8 * V && lo + 8 * V <= blk.n && lanes.len() >= 8 * blk.steps * blk.rank
        );
        let (r, n) = (blk.rank, blk.n);
        let xs = blk.xs_row(pi);
        let mut hv = [_mm256_setzero_ps(); V];
        for (v, reg) in hv.iter_mut().enumerate() {
            // SAFETY: 8 (v + 1) <= chunk.len().
            *reg = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(8 * v)) };
        }
        for t in 0..blk.steps {
            if blk.reset[t] {
                hv = [_mm256_setzero_ps(); V];
            }
            let d = _mm256_set1_ps(blk.decay[t]);
            for reg in hv.iter_mut() {
                *reg = _mm256_mul_ps(d, *reg);
            }
            for ri in 0..r {
                let j = t * r + ri;
                let x = _mm256_set1_ps(xs[j]);
                let b = blk.b[j * n + lo..j * n + lo + 8 * V].as_ptr();
                for (v, reg) in hv.iter_mut().enumerate() {
                    // SAFETY: the row slice above holds 8 V values.
                    *reg = _mm256_fmadd_ps(x, unsafe { _mm256_loadu_ps(b.add(8 * v)) }, *reg);
                }
            }
            for ri in 0..r {
                let j = t * r + ri;
                let c = blk.c[j * n + lo..j * n + lo + 8 * V].as_ptr();
                let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for (v, reg) in hv.iter().enumerate() {
                    // SAFETY: the row slice above holds 8 V values.
                    let cv = unsafe { _mm256_loadu_ps(c.add(8 * v)) };
                    if v % 2 == 0 {
                        a0 = _mm256_fmadd_ps(cv, *reg, a0);
                    } else {
                        a1 = _mm256_fmadd_ps(cv, *reg, a1);
                    }
                }
                // The lanes are summed after the block (`sum_lanes`), off this loop's path.
                let at = lanes[8 * j..8 * j + 8].as_mut_ptr();
                // SAFETY: the slice above holds 8 values.
                unsafe {
                    _mm256_storeu_ps(
                        at,
                        _mm256_add_ps(_mm256_loadu_ps(at), _mm256_add_ps(a0, a1)),
                    )
                };
            }
        }
        for (v, reg) in hv.iter().enumerate() {
            // SAFETY: 8 (v + 1) <= chunk.len().
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr().add(8 * v), *reg) };
        }
    }

    /// `out[j] = Σ lanes[8 j .. 8 j + 8]`, eight sub-steps at a time by horizontal adds.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn sum_lanes(lanes: &[f32], out: &mut [f32]) {
        assert!(lanes.len() >= 8 * out.len());
        let full = out.len() - out.len() % 8;
        for j in (0..full).step_by(8) {
            let p = lanes[8 * j..8 * j + 64].as_ptr();
            // SAFETY: the slice above holds 64 values.
            let v = |k: usize| unsafe { _mm256_loadu_ps(p.add(8 * k)) };
            let (t0, t1) = (_mm256_hadd_ps(v(0), v(1)), _mm256_hadd_ps(v(2), v(3)));
            let (t2, t3) = (_mm256_hadd_ps(v(4), v(5)), _mm256_hadd_ps(v(6), v(7)));
            let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
            let sum = _mm256_add_ps(
                _mm256_permute2f128_ps(u0, u1, 0x20),
                _mm256_permute2f128_ps(u0, u1, 0x31),
            );
            // SAFETY: j + 8 <= out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(j), sum) };
        }
        for (o, l) in out[full..]
            .iter_mut()
            .zip(lanes[8 * full..].chunks_exact(8))
        {
            *o = l.iter().sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRng;
    use burn::tensor::Distribution;

    /// The portable body and the AVX2 body on the same inputs: blocks crossed (L 150 > 64),
    /// resets inside and at a block's start, R = 1 and 2, N with a tail (132), a chunk of
    /// three registers (24) and no full register (5).
    #[test]
    fn the_portable_and_avx2_bodies_agree() {
        #[cfg(target_arch = "x86_64")]
        if !has_avx2() {
            return;
        }
        let mut rng = TestRng::new(5);
        for (l, r, n) in [(150, 1, 132), (70, 2, 24), (9, 1, 5)] {
            let (bs, h, hp, g) = (2, 2, 3, 1);
            let dims = SsdDims {
                batch: bs,
                len: l,
                rank: r,
                heads: h,
                head_dim: hp,
                groups: g,
                state: n,
            };
            let mut v = |k: usize, lo: f64, hi: f64| rng.values(k, Distribution::Uniform(lo, hi));
            let x = v(bs * l * r * h * hp, -1.0, 1.0);
            let dt = v(bs * l * h, 0.01, 0.2);
            let a = v(h, -2.0, -0.5);
            let b = v(bs * l * r * g * n, -1.0, 1.0);
            let c = v(bs * l * r * g * n, -1.0, 1.0);
            let d = v(h, -1.0, 1.0);
            let h0 = v(bs * h * hp * n, -1.0, 1.0);
            let mut reset = vec![0.0f32; bs * l];
            for t in [0, 37, 64, l - 1] {
                reset[(l + t.min(l - 1)) % (bs * l)] = 1.0;
            }
            let p = SsdSlices {
                dims,
                x: &x,
                dt: &dt,
                a: Decay::PerHead(&a),
                b: &b,
                c: &c,
                d: &d,
                h0: &h0,
                reset: Some(&reset),
            };
            for task in 0..bs * h {
                let (bi, hi) = (task / h, task % h);
                let mut st = vec![0.0f32; hp * n];
                let mut yh = vec![0.0f32; l * r * hp];
                head_body::<false>(&p, bi, hi, &mut st, &mut yh);
                let (mut st2, mut yh2) = (vec![0.0f32; hp * n], vec![0.0f32; l * r * hp]);
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2(p: &SsdSlices, bi: usize, hi: usize, st: &mut [f32], yh: &mut [f32]) {
                        head_body::<true>(p, bi, hi, st, yh)
                    }
                    // SAFETY: checked above.
                    unsafe { avx2(&p, bi, hi, &mut st2, &mut yh2) };
                }
                #[cfg(not(target_arch = "x86_64"))]
                head_body::<false>(&p, bi, hi, &mut st2, &mut yh2);
                // Only the summation order differs (FMA and eight lanes against scalar sums).
                for (what, u, w) in [("y", &yh, &yh2), ("state", &st, &st2)] {
                    let scale = u.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
                    let err = u
                        .iter()
                        .zip(w.iter())
                        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                    assert!(
                        err / scale < 1e-5,
                        "L {l} R {r} N {n} {what}: {err} of {scale}"
                    );
                }
            }
        }
    }
}
