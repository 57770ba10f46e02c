//! The real DFTs and the causal long convolution as portable bodies: products with DFT
//! matrices and a Toeplitz matrix, exact at any length, `O(n²)` per row. The FFT forms are the
//! CPU and CubeCL backends' ([`super::cpu`], `super::cube`); these are the default methods of
//! [`crate::SsmOps`] and the oracle in tests.

use crate::prim::P;
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::TensorData;
use std::f64::consts::PI;

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
