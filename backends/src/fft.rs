//! Real FFTs and the FFT long convolution, the transforms of the S4 family.
//!
//! Three ops of [`SsmOps`](crate::SsmOps), along the last axis:
//! - [`rfft`]: `X_k = Σ_l x_l exp(−2πi k l / n)`, `k = 0..=n/2`, of `x` zero-padded (or
//!   truncated) to `n`;
//! - [`irfft`]: its inverse, `x_l = (1/n) Re Σ_k c_k X_k exp(2πi k l / n)` with `c_0 = c_{n/2} = 1`
//!   and `c_k = 2` otherwise (the imaginary parts of the DC and Nyquist bins are ignored, as in
//!   `torch.fft.irfft`);
//! - [`causal_conv`]: `y[b, h, t] = Σ_{j ≤ t} k[h, j] u[b, h, t − j]` by rfft/irfft zero-padded
//!   to at least `2L` (so the circular product equals the linear convolution).
//!
//! On the CPU backends (Flex, NdArray) they run on `rustfft` at any length (the conv picks a
//! 5-smooth size ≥ 2L); on the CubeCL backends on Burn's FFT kernels, which take power-of-two
//! lengths (the conv pads to one; an rfft/irfft of another length takes the DFT-matrix body);
//! under `Autodiff` each has a hand-written backward made of the same ops. The portable bodies
//! ([`rfft_dft`], [`irfft_dft`], [`causal_conv_direct`]) are exact at any length and serve as
//! the oracle in tests.

use crate::ops::SsmOps;
use crate::prim::P;
use burn::backend::Dispatch;
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use rustfft::{FftPlanner, num_complex::Complex32};
use std::f64::consts::PI;

/// The real FFT of `x` (.., m) along the last axis, zero-padded or truncated to `n`: the
/// one-sided spectrum's real and imaginary parts (.., n/2 + 1).
///
/// # Panics
/// When `n` is 0.
pub fn rfft<const D: usize>(x: Tensor<D>, n: usize) -> (Tensor<D>, Tensor<D>) {
    assert!(n > 0, "rfft: the transform length must be positive");
    let (re, im) = <Dispatch as SsmOps>::rfft(x.into_dispatch(), n);
    (Tensor::from_dispatch(re), Tensor::from_dispatch(im))
}

/// The inverse real FFT of the one-sided spectrum `(re, im)` (.., n/2 + 1) along the last axis,
/// to `n` real samples.
///
/// # Panics
/// When `re` and `im` differ in shape or their last axis is not `n/2 + 1`.
pub fn irfft<const D: usize>(re: Tensor<D>, im: Tensor<D>, n: usize) -> Tensor<D> {
    assert_eq!(re.dims(), im.dims(), "irfft: re and im must have one shape");
    assert_eq!(
        re.dims()[D - 1],
        n / 2 + 1,
        "irfft: the spectrum must have n/2 + 1 = {} bins for n = {n}",
        n / 2 + 1
    );
    Tensor::from_dispatch(<Dispatch as SsmOps>::irfft(
        re.into_dispatch(),
        im.into_dispatch(),
        n,
    ))
}

/// The causal convolution of `u` (B, H, L) with kernels `k` (H, L) by FFT, on every backend.
///
/// # Panics
/// When `k` is not (H, L) for `u` (B, H, L).
pub fn causal_conv(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    let [_, h, l] = u.dims();
    assert_eq!(
        k.dims(),
        [h, l],
        "causal_conv: kernel must be (H, L) = ({h}, {l})"
    );
    Tensor::from_dispatch(<Dispatch as SsmOps>::causal_conv_fft(
        u.into_dispatch(),
        k.unsqueeze::<3>().into_dispatch(),
    ))
}

/// The FFT size the CPU conv uses for length `l`: the smallest 5-smooth number ≥ 2L.
pub fn cpu_conv_size(l: usize) -> usize {
    let mut n = (2 * l).max(1);
    loop {
        let mut m = n;
        for p in [2, 3, 5] {
            while m.is_multiple_of(p) {
                m /= p;
            }
        }
        if m == 1 {
            return n;
        }
        n += 1;
    }
}

/// Last-axis dims of a primitive: (rows, width).
fn rows_width<B: Backend>(t: &FloatTensor<B>) -> (Vec<usize>, usize, usize) {
    let dims = t.shape().to_vec();
    let w = *dims.last().expect("fft: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / w.max(1);
    (dims, rows, w)
}

/// `x` zero-padded or truncated to `n` along the last axis.
pub(crate) fn fit_last<B: Backend>(x: FloatTensor<B>, n: usize) -> FloatTensor<B> {
    let x = P::<B>::new(x);
    let dims = x.dims();
    let (r, m) = (dims.len() - 1, dims[dims.len() - 1]);
    if m >= n {
        return x.narrow(r, 0, n).into_inner();
    }
    let mut pad = dims.clone();
    pad[r] = n - m;
    let device = x.device();
    P::cat(vec![x, P::zeros(&pad, &device)], r).into_inner()
}

/// The (n, n/2 + 1) DFT matrices `cos(2π k l / n)` and `sin(2π k l / n)`, scaled per bin by
/// `scale(k)`, transposed when `by_bin` (rows = bins).
fn dft_mats<B: Backend>(
    n: usize,
    by_bin: bool,
    scale: impl Fn(usize) -> f64,
    device: &B::Device,
) -> (P<B>, P<B>) {
    let bins = n / 2 + 1;
    let (mut c, mut s) = (vec![0f32; n * bins], vec![0f32; n * bins]);
    for l in 0..n {
        for k in 0..bins {
            let ang = 2.0 * PI * ((k * l) % n) as f64 / n as f64;
            let i = if by_bin { k * n + l } else { l * bins + k };
            c[i] = (ang.cos() * scale(k)) as f32;
            s[i] = (ang.sin() * scale(k)) as f32;
        }
    }
    let dims = if by_bin { [bins, n] } else { [n, bins] };
    (P::from_vec(c, &dims, device), P::from_vec(s, &dims, device))
}

/// The rfft as a product with the DFT matrix, `O(n²)` per row, exact at any length.
pub fn rfft_dft<B: Backend>(x: FloatTensor<B>, n: usize) -> (FloatTensor<B>, FloatTensor<B>) {
    let (dims, rows, _) = rows_width::<B>(&x);
    let device = P::<B>::new(x.clone()).device();
    let x = P::<B>::new(fit_last::<B>(x, n)).reshape(&[rows, n]);
    let (c, s) = dft_mats::<B>(n, false, |_| 1.0, &device);
    let mut out = dims;
    *out.last_mut().expect("rank >= 1") = n / 2 + 1;
    let re = x.clone().matmul(c).reshape(&out);
    let im = x.matmul(s).mul_scalar(-1.0).reshape(&out);
    (re.into_inner(), im.into_inner())
}

/// The bin weights `c_k / n` of the inverse real DFT.
fn irfft_weight(n: usize) -> impl Fn(usize) -> f64 {
    move |k| {
        let edge = k == 0 || 2 * k == n;
        if edge { 1.0 / n as f64 } else { 2.0 / n as f64 }
    }
}

/// The irfft as a product with the DFT matrix, `O(n²)` per row, exact at any length.
pub fn irfft_dft<B: Backend>(re: FloatTensor<B>, im: FloatTensor<B>, n: usize) -> FloatTensor<B> {
    let (dims, rows, bins) = rows_width::<B>(&re);
    let device = P::<B>::new(re.clone()).device();
    let (c, s) = dft_mats::<B>(n, true, irfft_weight(n), &device);
    let re = P::<B>::new(re).reshape(&[rows, bins]);
    let im = P::<B>::new(im).reshape(&[rows, bins]);
    let mut out = dims;
    *out.last_mut().expect("rank >= 1") = n;
    (re.matmul(c) - im.matmul(s)).reshape(&out).into_inner()
}

/// The direct causal convolution of `u` (B, H, L) with `k` (1 or B, H, L): a lower-triangular
/// Toeplitz matrix per kernel row times `u`, `O(L²)` per row, exact.
pub fn causal_conv_direct<B: Backend>(u: FloatTensor<B>, k: FloatTensor<B>) -> FloatTensor<B> {
    let [b, h, l]: [usize; 3] = u.shape().to_vec().try_into().expect("u is (B, H, L)");
    let bk = k.shape().to_vec()[0];
    let device = P::<B>::new(u.clone()).device();
    // T[.., t, s] = k[.., t − s] for s ≤ t, else 0.
    let lags: Vec<i64> = (0..l * l)
        .map(|i| (i / l).saturating_sub(i % l) as i64)
        .collect();
    let mask: Vec<f32> = (0..l * l)
        .map(|i| f32::from(u8::from(i % l <= i / l)))
        .collect();
    let lags = B::int_from_data(TensorData::new(lags, [l * l]), &device);
    let t = P::<B>::new(B::float_select(k, 2, lags)).reshape(&[bk, h, l, l])
        * P::from_vec(mask, &[1, 1, l, l], &device);
    let t = if bk == b { t } else { t.expand(&[b, h, l, l]) };
    t.matmul(P::new(u).reshape(&[b, h, l, 1]))
        .reshape(&[b, h, l])
        .into_inner()
}

/// The rfft of `rows` rows of width `m` (zero-padded or truncated to `n`) on the CPU.
pub fn cpu_rfft(x: &[f32], rows: usize, m: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let bins = n / 2 + 1;
    let plan = FftPlanner::<f32>::new().plan_fft_forward(n);
    let (mut re, mut im) = (vec![0f32; rows * bins], vec![0f32; rows * bins]);
    re.par_chunks_mut(bins)
        .zip(im.par_chunks_mut(bins))
        .enumerate()
        .for_each(|(r, (re, im))| {
            let mut buf = vec![Complex32::new(0.0, 0.0); n];
            for (z, &v) in buf.iter_mut().zip(&x[r * m..r * m + m.min(n)]) {
                z.re = v;
            }
            plan.process(&mut buf);
            for (k, z) in buf[..bins].iter().enumerate() {
                re[k] = z.re;
                im[k] = z.im;
            }
        });
    (re, im)
}

/// Fills `buf` (length n) with the Hermitian spectrum whose first half is `(re, im)`.
fn hermitian(buf: &mut [Complex32], re: &[f32], im: &[f32]) {
    let n = buf.len();
    for k in 0..=n / 2 {
        let edge = k == 0 || 2 * k == n;
        let z = Complex32::new(re[k], if edge { 0.0 } else { im[k] });
        buf[k] = z;
        if k > 0 && !edge {
            buf[n - k] = z.conj();
        }
    }
}

/// The irfft of `rows` one-sided spectra to `n` samples on the CPU.
pub fn cpu_irfft(re: &[f32], im: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let bins = n / 2 + 1;
    let plan = FftPlanner::<f32>::new().plan_fft_inverse(n);
    let mut out = vec![0f32; rows * n];
    out.par_chunks_mut(n).enumerate().for_each(|(r, out)| {
        let mut buf = vec![Complex32::new(0.0, 0.0); n];
        hermitian(
            &mut buf,
            &re[r * bins..(r + 1) * bins],
            &im[r * bins..(r + 1) * bins],
        );
        plan.process(&mut buf);
        for (o, z) in out.iter_mut().zip(&buf) {
            *o = z.re / n as f32;
        }
    });
    out
}

/// Row `i` of channel `c` of a (·, h, l) slice.
fn row(t: &[f32], i: usize, h: usize, c: usize, l: usize) -> &[f32] {
    &t[(i * h + c) * l..(i * h + c + 1) * l]
}

/// The FFT causal convolution on the CPU: `u` (b, h, l), `k` (bk, h, l) with `bk` 1 or `b`.
///
/// Per channel, the kernel's spectrum is taken once when shared; two real rows travel in one
/// complex transform (`u₁ + i u₂`, then `ifft(Z K) = u₁ ∗ k + i u₂ ∗ k`), so a shared kernel costs
/// one forward and one inverse transform per two rows.
pub fn cpu_causal_conv(u: &[f32], k: &[f32], b: usize, bk: usize, h: usize, l: usize) -> Vec<f32> {
    let n = cpu_conv_size(l);
    let mut planner = FftPlanner::<f32>::new();
    let (fwd, inv) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
    let scale = 1.0 / n as f32;
    let spectrum = |row: &[f32]| {
        let mut buf = vec![Complex32::new(0.0, 0.0); n];
        for (z, &v) in buf.iter_mut().zip(row) {
            z.re = v;
        }
        fwd.process(&mut buf);
        buf
    };
    // One task per channel: its rows of y, (b, l), written back below.
    let per_channel: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map(|c| {
            let mut y = vec![0f32; b * l];
            let mut buf = vec![Complex32::new(0.0, 0.0); n];
            if bk == 1 {
                let kf = spectrum(row(k, 0, h, c, l));
                for i in (0..b).step_by(2) {
                    buf.fill(Complex32::new(0.0, 0.0));
                    for (z, &v) in buf.iter_mut().zip(row(u, i, h, c, l)) {
                        z.re = v;
                    }
                    if i + 1 < b {
                        for (z, &v) in buf.iter_mut().zip(row(u, i + 1, h, c, l)) {
                            z.im = v;
                        }
                    }
                    fwd.process(&mut buf);
                    for (z, kz) in buf.iter_mut().zip(&kf) {
                        *z *= kz;
                    }
                    inv.process(&mut buf);
                    for (t, z) in buf[..l].iter().enumerate() {
                        y[i * l + t] = z.re * scale;
                        if i + 1 < b {
                            y[(i + 1) * l + t] = z.im * scale;
                        }
                    }
                }
            } else {
                // Own kernel per row: u and k in one transform, spectra split by symmetry:
                // U_j = (Z_j + conj Z_{n−j}) / 2, K_j = (Z_j − conj Z_{n−j}) / 2i.
                for i in 0..b {
                    buf.fill(Complex32::new(0.0, 0.0));
                    for ((z, &uv), &kv) in buf
                        .iter_mut()
                        .zip(row(u, i, h, c, l))
                        .zip(row(k, i, h, c, l))
                    {
                        *z = Complex32::new(uv, kv);
                    }
                    fwd.process(&mut buf);
                    let z = buf.clone();
                    for j in 0..n {
                        let (a, c2) = (z[j], z[(n - j) % n].conj());
                        let uj = (a + c2) * 0.5;
                        let kj = (a - c2) * Complex32::new(0.0, -0.5);
                        buf[j] = uj * kj;
                    }
                    inv.process(&mut buf);
                    for (t, z) in buf[..l].iter().enumerate() {
                        y[i * l + t] = z.re * scale;
                    }
                }
            }
            y
        })
        .collect();
    let mut out = vec![0f32; b * h * l];
    for (c, y) in per_channel.iter().enumerate() {
        for i in 0..b {
            out[(i * h + c) * l..(i * h + c + 1) * l].copy_from_slice(&y[i * l..(i + 1) * l]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_sizes_are_5_smooth_and_at_least_2l() {
        assert_eq!(cpu_conv_size(1), 2);
        assert_eq!(cpu_conv_size(7), 15);
        assert_eq!(cpu_conv_size(64), 128);
        assert_eq!(cpu_conv_size(100), 200);
        assert_eq!(cpu_conv_size(1001), 2025);
    }

    fn direct(u: &[f32], k: &[f32], l: usize) -> Vec<f64> {
        (0..l)
            .map(|t| (0..=t).map(|j| k[j] as f64 * u[t - j] as f64).sum())
            .collect()
    }

    #[test]
    fn cpu_conv_matches_the_sum_with_shared_and_own_kernels() {
        let (b, h, l) = (3, 2, 37);
        let u: Vec<f32> = (0..b * h * l)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let k: Vec<f32> = (0..b * h * l)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 5.0)
            .collect();
        for bk in [1, b] {
            let y = cpu_causal_conv(&u, &k[..bk * h * l], b, bk, h, l);
            for i in 0..b {
                for c in 0..h {
                    let r = (i * h + c) * l;
                    let kr = ((if bk == 1 { 0 } else { i }) * h + c) * l;
                    let want = direct(&u[r..r + l], &k[kr..kr + l], l);
                    for t in 0..l {
                        assert!(
                            (y[r + t] as f64 - want[t]).abs() < 1e-5,
                            "bk {bk} ({i},{c},{t})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cpu_rfft_then_irfft_round_trips_at_odd_and_even_lengths() {
        for n in [1, 2, 7, 12, 45] {
            let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let (re, im) = cpu_rfft(&x, 2, n, n);
            // X_0 is the sum, real.
            let s: f32 = x[..n].iter().sum();
            assert!((re[0] - s).abs() < 1e-4 && im[0].abs() < 1e-5);
            let back = cpu_irfft(&re, &im, 2, n);
            for (a, b) in back.iter().zip(&x) {
                assert!((a - b).abs() < 1e-5, "n {n}");
            }
        }
    }
}
