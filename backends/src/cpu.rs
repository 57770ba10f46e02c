//! Fused CPU kernels on plain slices: one body serves every CPU backend (Flex, NdArray).
//!
//! The selective scan runs one task per (batch, channel) row with the state in a small local
//! buffer; no (B, D, L, N) tensor exists at any time. The exponentials of the inner loop over the
//! state dimension use a branch-free polynomial (`exp_approx`) that the compiler vectorises.

use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

static SCAN_FORWARD_CALLS: AtomicUsize = AtomicUsize::new(0);
static SCAN_BACKWARD_CALLS: AtomicUsize = AtomicUsize::new(0);
static STEP_CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many times the fused CPU kernels ran in this process: (scan forward, scan backward,
/// decode steps). Tests use it to prove that the kernel, not the portable body, ran.
pub fn kernel_calls() -> (usize, usize, usize) {
    (
        SCAN_FORWARD_CALLS.load(Ordering::Relaxed),
        SCAN_BACKWARD_CALLS.load(Ordering::Relaxed),
        STEP_CALLS.load(Ordering::Relaxed),
    )
}

/// The sizes of a scan problem (see [`crate::portable::ScanDims`]).
pub use crate::portable::ScanDims;

/// Steps per chunk in the backward's recompute: the memory per row is `N * L / CHUNK` floats of
/// checkpoints plus `2 * N * CHUNK` of recomputed states.
pub const BACKWARD_CHUNK: usize = 64;

/// Inputs of the scan as contiguous row-major slices (shapes as in
/// [`crate::portable::ScanArgs`]).
pub struct ScanSlices<'a> {
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
    pub delta_softplus: bool,
}

/// `exp(x)` for f32 to about 1 ulp: Cody-Waite range reduction and a degree-6 polynomial, with
/// no branch so that loops over it vectorise. Inputs are clamped to the finite range of f32.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    // max/min rather than clamp: no NaN special case, so the loops stay branch-free.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.336_55).min(88.376_26);
    // Adding ROUND leaves round(x / ln 2) in the low mantissa bits: read it there as an
    // integer, with no float-to-int conversion (Rust's saturating `as` would not vectorise).
    let kr = x * LOG2E + ROUND;
    let ki = (kr.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let k = kr - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    e * scale
}

/// `ln(1 + y)` for `y` in [0, 1], as `2 atanh(y / (2 + y))` by its odd series (error below
/// 1e-8 relative); branch-free so that loops over it vectorise.
#[inline(always)]
fn ln1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y);
    let s2 = s * s;
    let mut p = 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    2.0 * s * (p * s2 + 1.0)
}

/// Softplus with the vectorisable `exp_approx` and `ln1p_unit`.
#[inline(always)]
fn softplus_fast(x: f32) -> f32 {
    x.max(0.0) + ln1p_unit(exp_approx(-x.abs()))
}

/// `x * sigmoid(x)` with `exp_approx`.
#[inline(always)]
fn silu_fast(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

#[inline(always)]
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Dot product with eight independent partial sums (vectorisable).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// (B, G, N, L) -> (B, G, L, N), so that each time step reads N contiguous values.
pub fn to_time_major(x: &[f32], outer: usize, n: usize, l: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(n * l)
        .zip(x.par_chunks(n * l))
        .take(outer)
        .for_each(|(o, i)| {
            for ni in 0..n {
                for t in 0..l {
                    o[t * n + ni] = i[ni * l + t];
                }
            }
        });
    out
}

/// Effective step at one time: `delta + bias`, through softplus when asked.
#[inline(always)]
fn step_size(raw: f32, softplus_on: bool) -> f32 {
    if softplus_on { softplus(raw) } else { raw }
}

/// One state update `h = exp(dt A) h + dt u B`, returning `C . h`.
#[inline(always)]
fn update(h: &mut [f32], a: &[f32], b: &[f32], c: &[f32], dt: f32, du: f32) -> f32 {
    for n in 0..h.len() {
        h[n] = exp_approx(dt * a[n]) * h[n] + du * b[n];
    }
    dot(h, c)
}

/// Whether this CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Channels scanned together, one per SIMD lane.
const LANES: usize = 8;

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
    for t in 0..l {
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
pub fn scan_forward(p: &ScanSlices) -> (Vec<f32>, Vec<f32>) {
    SCAN_FORWARD_CALLS.fetch_add(1, Ordering::Relaxed);
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

/// Gradients from the fused backward, as contiguous buffers in the inputs' shapes.
pub struct ScanGradVecs {
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
pub fn scan_backward(p: &ScanSlices, dy: &[f32], dstate: &[f32]) -> ScanGradVecs {
    SCAN_BACKWARD_CALLS.fetch_add(1, Ordering::Relaxed);
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

/// `exp_approx` of each lane, as one array operation (unrolled, then vectorised).
#[inline(always)]
fn lanes_exp<const W: usize>(mut x: [f32; W]) -> [f32; W] {
    for v in x.iter_mut() {
        *v = exp_approx(*v);
    }
    x
}

/// [`advance`] that also returns `C . h` per lane (the forward's output).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn advance_dot<const W: usize>(
    h: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    cm: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) -> [f32; W] {
    let mut acc = [0.0f32; W];
    for (((hk, ak), &bk), &ck) in h.iter_mut().zip(a).zip(b).zip(cm) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        for c in 0..W {
            hk[c] = e[c] * hk[c] + du[c] * bk;
            acc[c] += ck * hk[c];
        }
    }
    acc
}

/// One step of the state for `W` lanes in place: `h = exp(dt A) h + dt u B`. The buffers are
/// separate reference arguments so the compiler knows they do not overlap and vectorises.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn advance<const W: usize>(
    h: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) {
    for ((hk, ak), &bk) in h.iter_mut().zip(a).zip(b) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        for c in 0..W {
            hk[c] = e[c] * hk[c] + du[c] * bk;
        }
    }
}

/// [`advance`] from `prev` into `next`, keeping the decays `exp(dt A)`.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
fn advance_keep<const W: usize>(
    next: &mut [[f32; W]],
    prev: &[[f32; W]],
    decays: &mut [[f32; W]],
    a: &[[f32; W]],
    b: &[f32],
    dtv: [f32; W],
    du: [f32; W],
) {
    for ((((nx, pv), d), ak), &bk) in next.iter_mut().zip(prev).zip(decays).zip(a).zip(b) {
        let e = lanes_exp::<W>(std::array::from_fn(|c| dtv[c] * ak[c]));
        *d = e;
        for c in 0..W {
            nx[c] = e[c] * pv[c] + du[c] * bk;
        }
    }
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
    let chunk = BACKWARD_CHUNK;
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
    for t in 0..l {
        if t % chunk == 0 {
            let kc = t / chunk;
            starts[kc * n..(kc + 1) * n].copy_from_slice(&states[..n]);
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
            advance_keep(
                &mut after[..n],
                &before[j * n..],
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
            let h_prev = &states[j * n..(j + 1) * n];
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

/// One fused decode step of the selective SSM for every (batch, channel): see
/// [`crate::portable::selective_state_step`]. `state` is updated in place; returns `y` (B, D).
#[allow(clippy::too_many_arguments)]
pub fn state_step(
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
    STEP_CALLS.fetch_add(1, Ordering::Relaxed);
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
pub fn conv_step(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_matches_std_to_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert!(exp_approx(-200.0) >= 0.0);
    }

    #[test]
    fn fast_softplus_and_silu_match_std() {
        let mut x = -30.0f32;
        while x < 30.0 {
            let sp = (x as f64).exp().ln_1p();
            let got = softplus_fast(x) as f64;
            assert!(
                (got - sp).abs() <= 3e-7 * sp.max(1e-30) + 1e-12,
                "softplus({x}): {got} vs {sp}"
            );
            let si = x as f64 / (1.0 + (-x as f64).exp());
            let got = silu_fast(x) as f64;
            assert!(
                (got - si).abs() <= 3e-7 * si.abs() + 1e-30,
                "silu({x}): {got} vs {si}"
            );
            x += 0.0137;
        }
        assert!(exp_approx(0.0) == 1.0);
    }
}
