//! The Cauchy kernel and its backward on the CPU backends (Flex, NdArray), in f64 with no
//! (H, K, N) tensor: each channel on one thread, its poles in [`LANES`] SIMD lanes (padded
//! with far poles and zero numerators), the reciprocal `1 / (w − λ)` formed once per node and
//! pole and used for all M numerators.

use crate::cpu::{calls, device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

/// Poles per SIMD step.
const LANES: usize = 8;

/// A padding pole: far enough that its reciprocal vanishes, near enough that `|w − λ|²` stays
/// finite in f64.
const FAR: f64 = 1e150;

/// One channel's inputs in f64, the poles padded to a multiple of [`LANES`].
struct Channel {
    /// (M, Np) each.
    v_re: Vec<f64>,
    v_im: Vec<f64>,
    /// (Np) each.
    l_re: Vec<f64>,
    l_im: Vec<f64>,
    /// (K) each.
    w_re: Vec<f64>,
    w_im: Vec<f64>,
}

/// The channels of the (H, M, N), (H, K), (H, N) parts.
fn channels<B: Backend>(
    parts: [FloatTensor<B>; 6],
    h: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<Channel> {
    let [vr, vi, wr, wi, lr, li] = parts.map(host::<B>);
    let np = n.div_ceil(LANES) * LANES;
    (0..h)
        .map(|c| {
            let pad = |x: &[f32], fill: f64| {
                let mut out: Vec<f64> = x.iter().map(|&v| v.into()).collect();
                out.resize(np, fill);
                out
            };
            let rows = |x: &[f32]| {
                (0..m)
                    .flat_map(|i| pad(&x[(c * m + i) * n..(c * m + i + 1) * n], 0.0))
                    .collect()
            };
            let f64s = |x: &[f32]| x.iter().map(|&v| v.into()).collect();
            Channel {
                v_re: rows(&vr),
                v_im: rows(&vi),
                l_re: pad(&lr[c * n..(c + 1) * n], FAR),
                l_im: pad(&li[c * n..(c + 1) * n], 0.0),
                w_re: f64s(&wr[c * k..(c + 1) * k]),
                w_im: f64s(&wi[c * k..(c + 1) * k]),
            }
        })
        .collect()
}

/// The (H, M, N) and K of the inputs.
fn sizes<B: Backend>(v_re: &FloatTensor<B>, w_re: &FloatTensor<B>) -> (usize, usize, usize, usize) {
    let v = v_re.shape().to_vec();
    (v[0], v[1], v[2], w_re.shape().to_vec()[1])
}

/// [`crate::SsmOps::cauchy`] on the CPU.
pub(crate) fn cauchy<B: Backend>(
    v_re: FloatTensor<B>,
    v_im: FloatTensor<B>,
    w_re: FloatTensor<B>,
    w_im: FloatTensor<B>,
    l_re: FloatTensor<B>,
    l_im: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = v_re.device();
    let (h, m, n, k) = sizes::<B>(&v_re, &w_re);
    calls::count(&calls::CAUCHY);
    let chans = channels::<B>([v_re, v_im, w_re, w_im, l_re, l_im], h, m, n, k);
    let (mut re, mut im) = (vec![0f32; h * m * k], vec![0f32; h * m * k]);
    if m * k > 0 {
        re.par_chunks_mut(m * k)
            .zip(im.par_chunks_mut(m * k))
            .zip(&chans)
            .for_each(|((re, im), ch)| forward_channel(ch, m, re, im));
    }
    (
        device_tensor::<B>(re, vec![h, m, k], &device),
        device_tensor::<B>(im, vec![h, m, k], &device),
    )
}

/// One channel's sums, compiled for AVX2 + FMA where present.
fn forward_channel(ch: &Channel, m: usize, re: &mut [f32], im: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::lanes::has_avx2() {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(ch: &Channel, m: usize, re: &mut [f32], im: &mut [f32]) {
            forward_body(ch, m, re, im)
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { avx2(ch, m, re, im) };
    }
    forward_body(ch, m, re, im)
}

#[inline(always)]
fn forward_body(ch: &Channel, m: usize, re: &mut [f32], im: &mut [f32]) {
    let np = ch.l_re.len();
    let k = ch.w_re.len();
    let mut acc = vec![([0f64; LANES], [0f64; LANES]); m];
    for node in 0..k {
        let (wr, wi) = (ch.w_re[node], ch.w_im[node]);
        acc.fill(([0.0; LANES], [0.0; LANES]));
        for base in (0..np).step_by(LANES) {
            let (mut rr, mut ri) = ([0f64; LANES], [0f64; LANES]);
            for j in 0..LANES {
                let dr = wr - ch.l_re[base + j];
                let di = wi - ch.l_im[base + j];
                let inv = 1.0 / (dr * dr + di * di);
                rr[j] = dr * inv;
                ri[j] = -di * inv;
            }
            for (i, (ar, ai)) in acc.iter_mut().enumerate() {
                let vr = &ch.v_re[i * np + base..i * np + base + LANES];
                let vi = &ch.v_im[i * np + base..i * np + base + LANES];
                for j in 0..LANES {
                    ar[j] += vr[j] * rr[j] - vi[j] * ri[j];
                    ai[j] += vr[j] * ri[j] + vi[j] * rr[j];
                }
            }
        }
        for (i, (ar, ai)) in acc.iter().enumerate() {
            re[i * k + node] = ar.iter().sum::<f64>() as f32;
            im[i * k + node] = ai.iter().sum::<f64>() as f32;
        }
    }
}

/// [`crate::SsmOps::cauchy_backward`] on the CPU: per channel, in f64, the reciprocal of each
/// node and pole formed once for `dv`, `dw` and `dλ`.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(crate) fn cauchy_backward<B: Backend>(
    g_re: FloatTensor<B>,
    g_im: FloatTensor<B>,
    v_re: FloatTensor<B>,
    v_im: FloatTensor<B>,
    w_re: FloatTensor<B>,
    w_im: FloatTensor<B>,
    l_re: FloatTensor<B>,
    l_im: FloatTensor<B>,
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let device = v_re.device();
    let (h, m, n, k) = sizes::<B>(&v_re, &w_re);
    calls::count(&calls::CAUCHY);
    let (gr, gi) = (host::<B>(g_re), host::<B>(g_im));
    let chans = channels::<B>([v_re, v_im, w_re, w_im, l_re, l_im], h, m, n, k);
    // Per channel: dv (M, N) re/im, dw (K) re/im, dλ (N) re/im.
    let grads: Vec<[Vec<f32>; 6]> = chans
        .par_iter()
        .enumerate()
        .map(|(c, ch)| {
            let g = (
                &gr[c * m * k..(c + 1) * m * k],
                &gi[c * m * k..(c + 1) * m * k],
            );
            backward_channel(ch, g, m, n)
        })
        .collect();
    let part = |i: usize, dims: Vec<usize>| {
        let v = grads.iter().flat_map(|g| g[i].iter().copied()).collect();
        device_tensor::<B>(v, dims, &device)
    };
    (
        part(0, vec![h, m, n]),
        part(1, vec![h, m, n]),
        part(2, vec![h, k]),
        part(3, vec![h, k]),
        part(4, vec![h, n]),
        part(5, vec![h, n]),
    )
}

/// One channel's gradients: `dv = Σ_k G conj(r)`, `q = Σ_m G conj(v)`, `dλ = Σ_k q conj(r²)`,
/// `dw = −Σ_n q conj(r²)` (see [`super::reference::cauchy_backward`]).
fn backward_channel(ch: &Channel, g: (&[f32], &[f32]), m: usize, n: usize) -> [Vec<f32>; 6] {
    let np = ch.l_re.len();
    let k = ch.w_re.len();
    let (mut dvr, mut dvi) = (vec![0f64; m * n], vec![0f64; m * n]);
    let (mut dlr, mut dli) = (vec![0f64; n], vec![0f64; n]);
    let (mut dwr, mut dwi) = (vec![0f32; k], vec![0f32; k]);
    let mut gk = vec![(0f64, 0f64); m];
    for node in 0..k {
        for (i, x) in gk.iter_mut().enumerate() {
            *x = (g.0[i * k + node].into(), g.1[i * k + node].into());
        }
        let (wr, wi) = (ch.w_re[node], ch.w_im[node]);
        let (mut sr, mut si) = (0f64, 0f64);
        for p in 0..n {
            let dr = wr - ch.l_re[p];
            let di = wi - ch.l_im[p];
            let inv = 1.0 / (dr * dr + di * di);
            let (rr, ri) = (dr * inv, -di * inv);
            // q = Σ_m G conj(v); dv += G conj(r).
            let (mut qr, mut qi) = (0f64, 0f64);
            for (i, &(gr, gi)) in gk.iter().enumerate() {
                let (vr, vi) = (ch.v_re[i * np + p], ch.v_im[i * np + p]);
                qr += gr * vr + gi * vi;
                qi += gi * vr - gr * vi;
                dvr[i * n + p] += gr * rr + gi * ri;
                dvi[i * n + p] += gi * rr - gr * ri;
            }
            // s = q conj(r²), r² = (rr² − ri²) + i 2 rr ri.
            let (r2r, r2i) = (rr * rr - ri * ri, 2.0 * rr * ri);
            let (s_r, s_i) = (qr * r2r + qi * r2i, qi * r2r - qr * r2i);
            dlr[p] += s_r;
            dli[p] += s_i;
            sr -= s_r;
            si -= s_i;
        }
        dwr[node] = sr as f32;
        dwi[node] = si as f32;
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    [f32s(dvr), f32s(dvi), dwr, dwi, f32s(dlr), f32s(dli)]
}
