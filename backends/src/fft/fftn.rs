//! N-dimensional FFTs over the last axes of a `Tensor` (S4ND's convolution), composed from the
//! per-backend real FFT ops of [`super::api`]: so they run wherever those do (rustfft on the
//! CPU backends at any length, Burn's FFT kernels on CubeCL at powers of two) and are
//! differentiable through their hand-written backward.
//!
//! - [`fft`] / [`ifft`]: the complex DFT `X_k = Σ_l x_l exp(∓2πi k l / n)` of `(re, im)` along
//!   one axis (the inverse scaled by `1/n`), from two real FFTs, `FFT(x + iy) = FFT(x) + i
//!   FFT(y)`, each one-sided spectrum extended by Hermitian symmetry; `ifft(Z) =
//!   conj(FFT(conj Z)) / n`.
//! - [`rfftn`]: the real FFT along the last axis (one-sided, `n/2 + 1` bins), then the complex
//!   FFT along each of the other transformed axes, as `torch.fft.rfftn`.
//! - [`irfftn`]: its inverse, as `torch.fft.irfftn` (the complex inverse along the leading
//!   transformed axes, then the inverse real FFT along the last).

use super::api::{irfft, rfft};
use burn::tensor::Tensor;

/// `x` with `axis` moved last (a swap; its own inverse).
fn to_last<const D: usize>(x: Tensor<D>, axis: usize) -> Tensor<D> {
    if axis == D - 1 {
        x
    } else {
        x.swap_dims(axis, D - 1)
    }
}

/// The full `n`-bin spectrum from a one-sided one (.., n/2 + 1) along the last axis:
/// `X[k] = conj(X[n − k])` for `k > n/2`.
fn hermitian_full<const D: usize>(
    re: Tensor<D>,
    im: Tensor<D>,
    n: usize,
) -> (Tensor<D>, Tensor<D>) {
    let mirror = n - (n / 2 + 1);
    if mirror == 0 {
        return (re, im);
    }
    let r = D - 1;
    let mre = re.clone().narrow(r, 1, mirror).flip([r as isize]);
    let mim = im.clone().narrow(r, 1, mirror).flip([r as isize]).neg();
    (Tensor::cat(vec![re, mre], r), Tensor::cat(vec![im, mim], r))
}

/// The complex FFT of `(re, im)` along `axis`, zero-padded or truncated to `n`: `X_k = Σ_l
/// z_l exp(−2πi k l / n)`, each part with `n` entries along `axis`.
///
/// # Panics
/// When `re` and `im` differ in shape, `axis` is out of range or `n` is 0.
pub fn fft<const D: usize>(
    re: Tensor<D>,
    im: Tensor<D>,
    axis: usize,
    n: usize,
) -> (Tensor<D>, Tensor<D>) {
    assert_eq!(re.dims(), im.dims(), "fft: re and im must have one shape");
    assert!(axis < D, "fft: axis {axis} of a rank-{D} tensor");
    let (xr, xi) = rfft(to_last(re, axis), n);
    let (yr, yi) = rfft(to_last(im, axis), n);
    let (xr, xi) = hermitian_full(xr, xi, n);
    let (yr, yi) = hermitian_full(yr, yi, n);
    (to_last(xr - yi, axis), to_last(xi + yr, axis))
}

/// The inverse complex FFT along `axis` of a spectrum with `n` entries there: `z_l = (1/n)
/// Σ_k X_k exp(2πi k l / n)`.
///
/// # Panics
/// When `re` and `im` differ in shape or do not have `n` entries along `axis`.
pub fn ifft<const D: usize>(
    re: Tensor<D>,
    im: Tensor<D>,
    axis: usize,
    n: usize,
) -> (Tensor<D>, Tensor<D>) {
    assert!(axis < D, "ifft: axis {axis} of a rank-{D} tensor");
    assert_eq!(
        re.dims()[axis],
        n,
        "ifft: the spectrum must have n = {n} entries along axis {axis}"
    );
    let (fr, fi) = fft(re, im.neg(), axis, n);
    let scale = 1.0 / n as f32;
    (fr * scale, fi.neg() * scale)
}

/// The first transformed axis of a rank-`D` tensor for `k` sizes, checked.
fn first_axis<const D: usize>(k: usize, what: &str) -> usize {
    assert!(
        k >= 1 && k <= D,
        "{what}: 1..={D} transform sizes for a rank-{D} tensor, not {k}"
    );
    D - k
}

/// The N-dimensional real FFT of `x` over its last `sizes.len()` axes, each zero-padded or
/// truncated to its size (`torch.fft.rfftn(x, s=sizes)`): the spectrum's real and imaginary
/// parts, `sizes[i]` entries along each transformed axis but the last, which has
/// `sizes.last() / 2 + 1`.
///
/// # Panics
/// When `sizes` is empty, longer than the rank, or holds a 0.
pub fn rfftn<const D: usize>(x: Tensor<D>, sizes: &[usize]) -> (Tensor<D>, Tensor<D>) {
    let first = first_axis::<D>(sizes.len(), "rfftn");
    let (last, rest) = sizes.split_last().expect("checked non-empty");
    let (mut re, mut im) = rfft(x, *last);
    for (i, &n) in rest.iter().enumerate() {
        (re, im) = fft(re, im, first + i, n);
    }
    (re, im)
}

/// The inverse of [`rfftn`] (`torch.fft.irfftn(X, s=sizes)`): real samples with `sizes[i]`
/// entries along each of the last `sizes.len()` axes. The spectrum must have `sizes[i]`
/// entries along each transformed axis but the last, and `sizes.last() / 2 + 1` there.
///
/// # Panics
/// When the shapes do not agree with `sizes`.
pub fn irfftn<const D: usize>(re: Tensor<D>, im: Tensor<D>, sizes: &[usize]) -> Tensor<D> {
    let first = first_axis::<D>(sizes.len(), "irfftn");
    let (last, rest) = sizes.split_last().expect("checked non-empty");
    let (mut re, mut im) = (re, im);
    for (i, &n) in rest.iter().enumerate() {
        (re, im) = ifft(re, im, first + i, n);
    }
    irfft(re, im, *last)
}
