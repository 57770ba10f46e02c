//! Real FFTs and the FFT causal convolution on `rustfft` for the CPU backends (Flex, NdArray),
//! at any length: the primitives read to the host as f32, transformed row by row (rayon).

use crate::cpu::calls;
use crate::cpu::{device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;
use realfft::RealFftPlanner;
use rustfft::{FftPlanner, num_complex::Complex32};

/// [`crate::SsmOps::rfft`] on `rustfft`.
pub(crate) fn rfft<B: Backend>(x: FloatTensor<B>, n: usize) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = x.device();
    let mut dims = x.shape().to_vec();
    let m = *dims.last().expect("rfft: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / m.max(1);
    calls::count(&calls::FFT);
    let (re, im) = rfft_rows(&host::<B>(x), rows, m, n);
    *dims.last_mut().expect("rank >= 1") = n / 2 + 1;
    (
        device_tensor::<B>(re, dims.clone(), &device),
        device_tensor::<B>(im, dims, &device),
    )
}

/// [`crate::SsmOps::irfft`] on `rustfft`.
pub(crate) fn irfft<B: Backend>(
    re: FloatTensor<B>,
    im: FloatTensor<B>,
    n: usize,
) -> FloatTensor<B> {
    let device = re.device();
    let mut dims = re.shape().to_vec();
    let bins = *dims.last().expect("irfft: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / bins.max(1);
    calls::count(&calls::FFT);
    let y = irfft_rows(&host::<B>(re), &host::<B>(im), rows, n);
    *dims.last_mut().expect("rank >= 1") = n;
    device_tensor::<B>(y, dims, &device)
}

/// [`crate::SsmOps::causal_conv_fft`] on `rustfft`.
pub(crate) fn causal_conv_fft<B: Backend>(u: FloatTensor<B>, k: FloatTensor<B>) -> FloatTensor<B> {
    let device = u.device();
    let dims = u.shape().to_vec();
    let (b, h, l) = (dims[0], dims[1], dims[2]);
    let bk = k.shape().to_vec()[0];
    calls::count(&calls::FFT);
    let y = causal_conv(&host::<B>(u), &host::<B>(k), b, bk, h, l);
    device_tensor::<B>(y, dims, &device)
}

/// The FFT size the CPU conv uses for length `l`: the smallest 5-smooth number ≥ 2L.
pub(crate) fn conv_size(l: usize) -> usize {
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

/// The rfft of `rows` rows of width `m` (zero-padded or truncated to `n`) on the CPU.
fn rfft_rows(x: &[f32], rows: usize, m: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
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
fn irfft_rows(re: &[f32], im: &[f32], rows: usize, n: usize) -> Vec<f32> {
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
/// one forward and one inverse transform per two rows; an odd row out (a batch of one) and the
/// kernel take real-input transforms (`realfft`: half a complex transform's work); a row with a
/// kernel of its own shares its forward transform with it (`u + i k`, split by symmetry).
fn causal_conv(u: &[f32], k: &[f32], b: usize, bk: usize, h: usize, l: usize) -> Vec<f32> {
    let n = conv_size(l);
    let mut planner = FftPlanner::<f32>::new();
    let (fwd, inv) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
    let mut real = RealFftPlanner::<f32>::new();
    let (r2c, c2r) = (real.plan_fft_forward(n), real.plan_fft_inverse(n));
    let scale = 1.0 / n as f32;
    let bins = n / 2 + 1;
    // The one-sided spectrum of a real row, zero-padded to n (a real-input transform: half a
    // complex one's work).
    let half_spectrum = |row: &[f32]| {
        let mut x = vec![0f32; n];
        x[..row.len()].copy_from_slice(row);
        let mut out = vec![Complex32::new(0.0, 0.0); bins];
        r2c.process(&mut x, &mut out)
            .expect("buffers of the planned lengths");
        out
    };
    // One task per channel: its rows of y, (b, l), written back below.
    let per_channel: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map(|c| {
            let mut y = vec![0f32; b * l];
            let mut buf = vec![Complex32::new(0.0, 0.0); n];
            if bk == 1 {
                // (Not packed with a row of u: when their spectra differ in scale, as a decaying
                // kernel's and a long input's do, splitting them by symmetry costs the smaller
                // one digits; measured 7.5e-6 against 4.5e-7 at L = 65,536.)
                let kh = half_spectrum(row(k, 0, h, c, l));
                let pairs = b / 2 * 2;
                if pairs < b {
                    // The odd row out (a batch of one): real-input transforms both ways.
                    let i = b - 1;
                    let mut z = half_spectrum(row(u, i, h, c, l));
                    for (z, kz) in z.iter_mut().zip(&kh) {
                        *z *= kz;
                    }
                    // Real at the DC and (even n) Nyquist bins, as the inverse requires.
                    z[0].im = 0.0;
                    if n.is_multiple_of(2) {
                        z[bins - 1].im = 0.0;
                    }
                    let mut x = vec![0f32; n];
                    c2r.process(&mut z, &mut x)
                        .expect("a real signal's spectrum, of the planned length");
                    for (t, v) in x[..l].iter().enumerate() {
                        y[i * l + t] = v * scale;
                    }
                }
                // The pairs need the whole (Hermitian) spectrum of the kernel.
                let kf: Vec<Complex32> = (0..if pairs > 0 { n } else { 0 })
                    .map(|j| if j < bins { kh[j] } else { kh[n - j].conj() })
                    .collect();
                for i in (0..pairs).step_by(2) {
                    buf.fill(Complex32::new(0.0, 0.0));
                    for (z, &v) in buf.iter_mut().zip(row(u, i, h, c, l)) {
                        z.re = v;
                    }
                    for (z, &v) in buf.iter_mut().zip(row(u, i + 1, h, c, l)) {
                        z.im = v;
                    }
                    fwd.process(&mut buf);
                    for (z, kz) in buf.iter_mut().zip(&kf) {
                        *z *= kz;
                    }
                    inv.process(&mut buf);
                    for (t, z) in buf[..l].iter().enumerate() {
                        y[i * l + t] = z.re * scale;
                        y[(i + 1) * l + t] = z.im * scale;
                    }
                }
            } else {
                // Own kernel per row: u and k in one transform.
                for i in 0..b {
                    packed_product(&fwd, &mut buf, row(u, i, h, c, l), row(k, i, h, c, l));
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

/// Two real rows in one transform: `buf` ← `FFT(u + i k)` (zero-padded), its spectra split by
/// symmetry, `U_j = (Z_j + conj Z_{n−j}) / 2`, `K_j = (Z_j − conj Z_{n−j}) / 2i`; leaves the
/// product `U K` in `buf`.
fn packed_product(
    fwd: &std::sync::Arc<dyn rustfft::Fft<f32>>,
    buf: &mut [Complex32],
    u: &[f32],
    k: &[f32],
) {
    let n = buf.len();
    buf.fill(Complex32::new(0.0, 0.0));
    for ((z, &uv), &kv) in buf.iter_mut().zip(u).zip(k) {
        *z = Complex32::new(uv, kv);
    }
    fwd.process(buf);
    let z = buf.to_vec();
    for j in 0..n {
        let (a, c2) = (z[j], z[(n - j) % n].conj());
        let uj = (a + c2) * 0.5;
        let kj = (a - c2) * Complex32::new(0.0, -0.5);
        buf[j] = uj * kj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_sizes_are_5_smooth_and_at_least_2l() {
        assert_eq!(conv_size(1), 2);
        assert_eq!(conv_size(7), 15);
        assert_eq!(conv_size(64), 128);
        assert_eq!(conv_size(100), 200);
        assert_eq!(conv_size(1001), 2025);
    }

    fn direct(u: &[f32], k: &[f32], l: usize) -> Vec<f64> {
        (0..l)
            .map(|t| (0..=t).map(|j| k[j] as f64 * u[t - j] as f64).sum())
            .collect()
    }

    #[test]
    fn cpu_conv_matches_the_sum_with_shared_and_own_kernels() {
        // Batches of 1 and 3 (an odd row out packed with the kernel) and 2 (pairs only).
        for b in [1, 2, 3] {
            conv_matches_the_sum(b);
        }
    }

    fn conv_matches_the_sum(b: usize) {
        let (h, l) = (2, 37);
        let u: Vec<f32> = (0..b * h * l)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let k: Vec<f32> = (0..b * h * l)
            .map(|i| ((i * 13 % 7) as f32 - 3.0) / 5.0)
            .collect();
        for bk in [1, b] {
            let y = causal_conv(&u, &k[..bk * h * l], b, bk, h, l);
            for i in 0..b {
                for c in 0..h {
                    let r = (i * h + c) * l;
                    let kr = ((if bk == 1 { 0 } else { i }) * h + c) * l;
                    let want = direct(&u[r..r + l], &k[kr..kr + l], l);
                    for t in 0..l {
                        assert!(
                            (y[r + t] as f64 - want[t]).abs() < 1e-5,
                            "b {b} bk {bk} ({i},{c},{t})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rfft_then_irfft_round_trips_at_odd_and_even_lengths() {
        for n in [1, 2, 7, 12, 45] {
            let x: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let (re, im) = rfft_rows(&x, 2, n, n);
            // X_0 is the sum, real.
            let s: f32 = x[..n].iter().sum();
            assert!((re[0] - s).abs() < 1e-4 && im[0].abs() < 1e-5);
            let back = irfft_rows(&re, &im, 2, n);
            for (a, b) in back.iter().zip(&x) {
                assert!((a - b).abs() < 1e-5, "n {n}");
            }
        }
    }
}
