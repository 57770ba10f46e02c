//! The Mamba-3 decode step on the CPU backends (Flex, NdArray), fused on plain f32 slices: one
//! task per (batch row, head), each reading its row of `proj`, its carried `[Θ | keys | x]` and
//! (P, N) state once and writing them once (the math: [`super::reference`]).

use super::reference::{Mamba3StepConfig, Mamba3StepDims};
use crate::cpu::lanes::{sigmoid, silu, softplus};
use crate::cpu::{calls, device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;
use std::f32::consts::PI;

/// [`crate::SsmOps::mamba3_decode_step`] on the fused pass ([`mamba3_step`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn mamba3_decode_step<B: Backend>(
    proj: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
    heads: usize,
    groups: usize,
    rank: usize,
    angles: usize,
    mimo: bool,
    outproj_norm: bool,
    a_floor: f32,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let cfg = Mamba3StepConfig {
        heads,
        groups,
        rank,
        angles,
        mimo,
        outproj_norm,
        a_floor,
        eps,
    };
    let device = proj.device();
    let cs = conv_state.shape().to_vec();
    let ss = ssm_state.shape().to_vec();
    let dims = Mamba3StepDims::infer(
        &proj.shape().to_vec(),
        &cs,
        &ss,
        weights.shape().num_elements(),
        &cfg,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (proj, conv, ssm, weights) = (
        host::<B>(proj),
        host::<B>(conv_state),
        host::<B>(ssm_state),
        host::<B>(weights),
    );
    let (y, conv, ssm) = mamba3_step(&Mamba3StepSlices {
        dims,
        cfg,
        proj: &proj,
        conv: &conv,
        ssm: &ssm,
        weights: &weights,
    });
    (
        device_tensor::<B>(y, vec![ss[0], ss[1]], &device),
        device_tensor::<B>(conv, cs, &device),
        device_tensor::<B>(ssm, ss, &device),
    )
}

/// The step's inputs: `proj` (B, W), `conv` (B, H, S + RN + P), `ssm` (B, HP, N), `weights`.
struct Mamba3StepSlices<'a> {
    pub dims: Mamba3StepDims,
    pub cfg: Mamba3StepConfig,
    pub proj: &'a [f32],
    pub conv: &'a [f32],
    pub ssm: &'a [f32],
    pub weights: &'a [f32],
}

/// One head's output, new carried `[Θ | keys | x]` and new state.
type HeadOut<'a> = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]);

/// `y` (B, HP), the new conv state and the new SSM state.
fn mamba3_step(p: &Mamba3StepSlices) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    calls::count(&calls::STEP);
    let s = p.dims;
    let (bs, h, hp, n, r, sa) = (s.batch, s.heads, s.head_dim, s.state, s.rank, s.angles);
    let cw = sa + r * n + hp;
    let mut y = vec![0.0f32; bs * h * hp];
    let mut conv = vec![0.0f32; bs * h * cw];
    let mut ssm = vec![0.0f32; bs * h * hp * n];
    let work = |(task, ((yh, ch), sh)): (usize, HeadOut)| {
        head(p, task / h, task % h, yh, ch, sh);
    };
    let tasks = y
        .chunks_mut(hp)
        .zip(conv.chunks_mut(cw))
        .zip(ssm.chunks_mut(hp * n));
    // Small steps run on the calling thread: the decode step is latency-bound.
    if bs * h * hp * n * r < 1 << 16 {
        tasks.enumerate().for_each(work);
    } else {
        y.par_chunks_mut(hp)
            .zip(conv.par_chunks_mut(cw))
            .zip(ssm.par_chunks_mut(hp * n))
            .enumerate()
            .for_each(work);
    }
    (y, conv, ssm)
}

/// Lanes of the dot products' accumulators.
const W: usize = 8;

/// `a · b` on W independent accumulators (vectorised; the order of the sum is fixed).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let full = a.len() - a.len() % W;
    let mut acc = [0.0f32; W];
    for (x, y) in a[..full].chunks_exact(W).zip(b[..full].chunks_exact(W)) {
        for k in 0..W {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn rsqrt_mean_sq(v: &[f32], eps: f32) -> f32 {
    let ms = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// Head `hi` of batch row `bi`, compiled for AVX2 and FMA where the CPU has them.
fn head(
    p: &Mamba3StepSlices,
    bi: usize,
    hi: usize,
    yh: &mut [f32],
    ch: &mut [f32],
    sh: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::lanes::has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(
            p: &Mamba3StepSlices,
            bi: usize,
            hi: usize,
            yh: &mut [f32],
            ch: &mut [f32],
            sh: &mut [f32],
        ) {
            head_body(p, bi, hi, yh, ch, sh)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(p, bi, hi, yh, ch, sh) };
    }
    head_body(p, bi, hi, yh, ch, sh)
}

/// Head `hi` of batch row `bi`: `yh` (P) its output, `ch` its new `[Θ | keys | x]`, `sh` its new
/// (P, N) state.
#[inline(always)]
fn head_body(
    p: &Mamba3StepSlices,
    bi: usize,
    hi: usize,
    yh: &mut [f32],
    ch: &mut [f32],
    sh: &mut [f32],
) {
    let s = p.dims;
    let cfg = p.cfg;
    let (h, hp, n, g, r, sa) = (s.heads, s.head_dim, s.state, s.groups, s.rank, s.angles);
    let di = h * hp;
    let gi = hi / (h / g);
    let o = s.offsets();
    let w = p.weights;
    let row = &p.proj[bi * s.proj_width()..(bi + 1) * s.proj_width()];
    let cw = sa + r * n + hp;
    let old = &p.conv[(bi * h + hi) * cw..(bi * h + hi + 1) * cw];
    let old_ssm = &p.ssm[(bi * h + hi) * hp * n..(bi * h + hi + 1) * hp * n];
    let rgn = r * g * n;
    let hb = 2 * di + 2 * rgn;

    // Scalars of the head.
    let dt = softplus(row[hb + hi] + w[o[0] + hi]);
    let a = row[hb + h + hi];
    let heavy = (a.max(0.0) + 1.0 / (1.0 - a.min(0.0))).max(cfg.a_floor);
    let alpha = (-heavy * dt).exp();
    let lam = sigmoid(row[hb + 2 * h + hi]);
    let beta = (1.0 - lam) * dt * alpha;
    let gamma = lam * dt;

    // The angles, wrapped to [0, 2π).
    let two_pi = 2.0 * PI;
    for i in 0..sa {
        let t = old[i] + row[hb + 3 * h + i].tanh() * PI * dt;
        ch[i] = t - (t / two_pi).floor() * two_pi;
    }

    let rot: Vec<(f32, f32)> = ch[..sa].iter().map(|t| (t.cos(), t.sin())).collect();

    // Keys into the new state's slot, queries into a buffer: normed, biased, rotated.
    let mut q = vec![0.0f32; r * n];
    for (dst, src, norm, bias) in [
        (&mut ch[sa..sa + r * n], 2 * di, o[3], o[1]),
        (&mut q[..], 2 * di + rgn, o[4], o[2]),
    ] {
        for ri in 0..r {
            let raw = &row[src + (ri * g + gi) * n..src + (ri * g + gi + 1) * n];
            let inv = rsqrt_mean_sq(raw, cfg.eps);
            let out = &mut dst[ri * n..(ri + 1) * n];
            let b = &w[bias + (hi * r + ri) * n..bias + (hi * r + ri + 1) * n];
            for k in 0..n {
                out[k] = raw[k] * inv * w[norm + k] + b[k];
            }
            for (i, &(c, sn)) in rot.iter().enumerate() {
                let (ia, ib) = if cfg.mimo {
                    (i, i + n / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (out[ia], out[ib]);
                out[ia] = x0 * c - x1 * sn;
                out[ib] = x0 * sn + x1 * c;
            }
        }
    }
    let (k_new, x_slot) = ch[sa..].split_at_mut(r * n);
    let k_old = &old[sa..sa + r * n];
    let x_old = &old[sa + r * n..];
    let x = &row[di + hi * hp..di + (hi + 1) * hp];
    let z = &row[hi * hp..(hi + 1) * hp];
    x_slot.copy_from_slice(x);

    // State update and the ranks' read-outs, row p of the state at a time: slices zipped
    // along N (no bounds checks, vectorised), the dot products on W-lane accumulators.
    let wx = &w[o[6] + hi * r * hp..o[6] + (hi + 1) * r * hp];
    let dskip = w[o[5] + hi];
    let mut ys = vec![0.0f32; r * hp];
    for (pi, (srow, orow)) in sh
        .chunks_exact_mut(n)
        .zip(old_ssm.chunks_exact(n))
        .enumerate()
    {
        for (sv, ov) in srow.iter_mut().zip(orow) {
            *sv = alpha * ov;
        }
        for ri in 0..r {
            let wv = wx[ri * hp + pi];
            let (cp, cn) = (beta * x_old[pi] * wv, gamma * x[pi] * wv);
            let ko = &k_old[ri * n..(ri + 1) * n];
            let kn = &k_new[ri * n..(ri + 1) * n];
            for ((sv, a), b) in srow.iter_mut().zip(ko).zip(kn) {
                *sv += cp * a + cn * b;
            }
        }
        for ri in 0..r {
            ys[ri * hp + pi] =
                dot(srow, &q[ri * n..(ri + 1) * n]) + dskip * x[pi] * wx[ri * hp + pi];
        }
    }

    // Gate (after the per-head norm), then the ranks summed back.
    yh.fill(0.0);
    for ri in 0..r {
        let yr = &ys[ri * hp..(ri + 1) * hp];
        let inv = if cfg.outproj_norm {
            rsqrt_mean_sq(yr, cfg.eps)
        } else {
            1.0
        };
        for pi in 0..hp {
            let at = (hi * r + ri) * hp + pi;
            let mut v = yr[pi];
            if cfg.outproj_norm {
                v *= inv * w[o[9] + hi * hp + pi];
            }
            let zr = z[pi] * w[o[7] + at];
            yh[pi] += v * silu(zr) * w[o[8] + at];
        }
    }
}
