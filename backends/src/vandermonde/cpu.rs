//! The Vandermonde kernel and its backward on the CPU backends (Flex, NdArray), with no
//! (H, N, L) tensor: each channel's row on one thread, each mode walked from its largest term
//! (`l = 0` when `Re z ≤ 0`, else from `l = L − 1` backwards) by repeated multiplication in
//! f64, [`LANES`] consecutive positions per SIMD step, and left as soon as its terms fall below
//! [`NEGLIGIBLE`] (a fast-decaying mode costs a few steps, and no subnormal is ever computed).
//! After `m` multiplications a power carries a relative error of about `2m` f64 ulps
//! (`4·10⁻¹³` at L = 16,384), far below the f32 result's.

use crate::cpu::{calls, device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

/// Positions advanced per step (one SIMD register of f64 on AVX-512, two on AVX2).
const LANES: usize = 8;

/// A term below this magnitude cannot move an f32 result: its mode's walk stops there.
const NEGLIGIBLE: f64 = 1e-60;

/// One mode of one channel, in f64.
#[derive(Debug, Clone, Copy)]
struct Mode {
    c: (f64, f64),
    z: (f64, f64),
    shift: f64,
}

impl Mode {
    /// Whether the mode decays with `l` (walked forwards) rather than grows (walked from the
    /// end).
    fn forwards(&self) -> bool {
        self.z.0 <= 0.0
    }

    /// The walk from `start` in direction `dir` (±1): `exp(z (start − s))`, the step
    /// `exp(dir z)` and the step of a whole block `exp(dir z LANES)`, each computed directly.
    fn walk(&self, start: usize) -> Walk {
        let dir = if self.forwards() { 1.0 } else { -1.0 };
        let t0 = start as f64 - self.shift;
        Walk {
            first: cexp(self.z.0 * t0, self.z.1 * t0),
            step: cexp(dir * self.z.0, dir * self.z.1),
            block: cexp(dir * self.z.0 * LANES as f64, dir * self.z.1 * LANES as f64),
            t0,
            dir,
        }
    }
}

/// Where a mode's walk starts and how it steps.
struct Walk {
    first: (f64, f64),
    step: (f64, f64),
    block: (f64, f64),
    t0: f64,
    dir: f64,
}

impl Walk {
    /// The lanes of the first block, `v[j] = scale · first · step^j`.
    fn lanes(&self, scale: (f64, f64)) -> ([f64; LANES], [f64; LANES]) {
        let (mut vr, mut vi) = ([0.0; LANES], [0.0; LANES]);
        let mut p = cmul(scale, self.first);
        for j in 0..LANES {
            vr[j] = p.0;
            vi[j] = p.1;
            p = cmul(p, self.step);
        }
        (vr, vi)
    }
}

fn cexp(re: f64, im: f64) -> (f64, f64) {
    let m = re.exp();
    let (s, c) = im.sin_cos();
    (m * c, m * s)
}

fn cmul(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}

/// `v *= w` lane by lane.
#[inline(always)]
fn advance(vr: &mut [f64; LANES], vi: &mut [f64; LANES], w: (f64, f64)) {
    for j in 0..LANES {
        let (r, i) = (vr[j], vi[j]);
        vr[j] = r * w.0 - i * w.1;
        vi[j] = r * w.1 + i * w.0;
    }
}

/// Whether a block whose first (largest) lane is `(r, i)` is negligible.
#[inline(always)]
fn negligible(r: f64, i: f64) -> bool {
    r * r + i * i < NEGLIGIBLE * NEGLIGIBLE
}

/// The modes of `h` channels × `n`, from the (H, N) parts.
fn modes<B: Backend>(parts: [FloatTensor<B>; 5]) -> Vec<Mode> {
    let [cr, ci, zr, zi, s] = parts.map(host::<B>);
    (0..cr.len())
        .map(|i| Mode {
            c: (cr[i].into(), ci[i].into()),
            z: (zr[i].into(), zi[i].into()),
            shift: s[i].into(),
        })
        .collect()
}

/// [`crate::SsmOps::vandermonde`] on the CPU.
pub(crate) fn vandermonde<B: Backend>(
    c_re: FloatTensor<B>,
    c_im: FloatTensor<B>,
    z_re: FloatTensor<B>,
    z_im: FloatTensor<B>,
    shift: FloatTensor<B>,
    len: usize,
) -> FloatTensor<B> {
    let device = c_re.device();
    let dims = c_re.shape().to_vec();
    let (h, n) = (dims[0], dims[1]);
    calls::count(&calls::VANDERMONDE);
    let modes = modes::<B>([c_re, c_im, z_re, z_im, shift]);
    let mut out = vec![0f32; h * len];
    if len > 0 && n > 0 {
        out.par_chunks_mut(len)
            .zip(modes.par_chunks(n))
            .for_each(|(out, modes)| forward_row(modes, out));
    }
    device_tensor::<B>(out, vec![h, len], &device)
}

/// One channel's kernel row, compiled for AVX2 + FMA where present.
fn forward_row(modes: &[Mode], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::lanes::has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(modes: &[Mode], out: &mut [f32]) {
            forward_row_body(modes, out)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(modes, out) };
    }
    forward_row_body(modes, out)
}

#[inline(always)]
fn forward_row_body(modes: &[Mode], out: &mut [f32]) {
    let len = out.len();
    // Forward walks accumulate at `l`, backward walks at `L − 1 − l`.
    let mut fwd = vec![0f64; len];
    let mut rev = Vec::new();
    for m in modes {
        let acc = if m.forwards() {
            &mut fwd
        } else {
            if rev.is_empty() {
                rev = vec![0f64; len];
            }
            &mut rev
        };
        let start = if m.forwards() { 0 } else { len - 1 };
        let walk = m.walk(start);
        let (mut vr, mut vi) = walk.lanes(m.c);
        let mut k = 0;
        while k < len {
            if negligible(vr[0], vi[0]) {
                break;
            }
            let take = LANES.min(len - k);
            for (a, v) in acc[k..k + take].iter_mut().zip(&vr) {
                *a += v;
            }
            advance(&mut vr, &mut vi, walk.block);
            k += LANES;
        }
    }
    for (l, o) in out.iter_mut().enumerate() {
        let back = if rev.is_empty() {
            0.0
        } else {
            rev[len - 1 - l]
        };
        *o = (fwd[l] + back) as f32;
    }
}

/// [`crate::SsmOps::vandermonde_backward`] on the CPU.
pub(crate) fn vandermonde_backward<B: Backend>(
    grad: FloatTensor<B>,
    c_re: FloatTensor<B>,
    c_im: FloatTensor<B>,
    z_re: FloatTensor<B>,
    z_im: FloatTensor<B>,
    shift: FloatTensor<B>,
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let device = c_re.device();
    let dims = c_re.shape().to_vec();
    let (h, n) = (dims[0], dims[1]);
    let len = grad.shape().to_vec()[1];
    calls::count(&calls::VANDERMONDE);
    let g = host::<B>(grad);
    let modes = modes::<B>([c_re, c_im, z_re, z_im, shift]);
    // Per mode: (dc_re, dc_im, dz_re, dz_im).
    let mut d = vec![[0f32; 4]; h * n];
    if len > 0 && n > 0 {
        d.par_chunks_mut(n)
            .zip(modes.par_chunks(n))
            .zip(g.par_chunks(len))
            .for_each(|((d, modes), g)| backward_row(modes, g, d));
    }
    let part = |i: usize| {
        let v = d.iter().map(|x| x[i]).collect();
        device_tensor::<B>(v, vec![h, n], &device)
    };
    (part(0), part(1), part(2), part(3))
}

/// One channel's gradients, compiled for AVX2 + FMA where present.
fn backward_row(modes: &[Mode], g: &[f32], d: &mut [[f32; 4]]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::lanes::has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(modes: &[Mode], g: &[f32], d: &mut [[f32; 4]]) {
            backward_row_body(modes, g, d)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(modes, g, d) };
    }
    backward_row_body(modes, g, d)
}

#[inline(always)]
fn backward_row_body(modes: &[Mode], g: &[f32], d: &mut [[f32; 4]]) {
    let len = g.len();
    let fwd: Vec<f64> = g.iter().map(|&v| v.into()).collect();
    let mut rev: Vec<f64> = Vec::new();
    for (m, d) in modes.iter().zip(d.iter_mut()) {
        let gs = if m.forwards() {
            &fwd
        } else {
            if rev.is_empty() {
                rev = fwd.iter().rev().copied().collect();
            }
            &rev
        };
        let start = if m.forwards() { 0 } else { len - 1 };
        let walk = m.walk(start);
        let (mut vr, mut vi) = walk.lanes((1.0, 0.0));
        // l − s per lane, advanced by dir · LANES per block.
        let mut t: [f64; LANES] = std::array::from_fn(|j| walk.t0 + walk.dir * j as f64);
        let dt = walk.dir * LANES as f64;
        let (mut s1r, mut s1i, mut s2r, mut s2i) =
            ([0f64; LANES], [0f64; LANES], [0f64; LANES], [0f64; LANES]);
        let mut k = 0;
        while k + LANES <= len {
            if negligible(vr[0], vi[0]) {
                break;
            }
            let gk: &[f64; LANES] = gs[k..k + LANES].try_into().expect("a whole block");
            for j in 0..LANES {
                let (a, b) = (gk[j] * vr[j], gk[j] * vi[j]);
                s1r[j] += a;
                s1i[j] += b;
                s2r[j] += a * t[j];
                s2i[j] += b * t[j];
                t[j] += dt;
            }
            advance(&mut vr, &mut vi, walk.block);
            k += LANES;
        }
        if k < len && !negligible(vr[0], vi[0]) {
            for j in 0..len - k {
                let (a, b) = (gs[k + j] * vr[j], gs[k + j] * vi[j]);
                s1r[j] += a;
                s1i[j] += b;
                s2r[j] += a * t[j];
                s2i[j] += b * t[j];
            }
        }
        let total = |x: [f64; LANES]| x.iter().sum::<f64>();
        let (s1r, s1i, s2r, s2i) = (total(s1r), total(s1i), total(s2r), total(s2i));
        let (cr, ci) = m.c;
        *d = [
            s1r as f32,
            -s1i as f32,
            (cr * s2r - ci * s2i) as f32,
            -(cr * s2i + ci * s2r) as f32,
        ];
    }
}
