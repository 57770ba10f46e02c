//! Real FFTs and long convolutions on `Tensor`s, the transforms of the S4 family.
//!
//! Along the last axis:
//! - [`rfft`]: `X_k = Σ_l x_l exp(−2πi k l / n)`, `k = 0..=n/2`, of `x` zero-padded (or
//!   truncated) to `n`;
//! - [`irfft`]: its inverse, `x_l = (1/n) Re Σ_k c_k X_k exp(2πi k l / n)` with `c_0 = c_{n/2} = 1`
//!   and `c_k = 2` otherwise (the imaginary parts of the DC and Nyquist bins are ignored, as in
//!   `torch.fft.irfft`);
//! - [`causal_conv`]: `y[b, h, t] = Σ_{j ≤ t} K[h, j] u[b, h, t − j]`, the parallel form of the
//!   S4 family: the direct (Toeplitz) product for short sequences, the FFT product (zero-padded
//!   to at least `2L`, so the circular product equals the linear one) for long ones;
//! - [`bidirectional_conv`]: the two-sided form of state-spaces/s4's bidirectional layers.
//!
//! On the CPU backends (Flex, NdArray) the transforms run on `rustfft` at any length (the conv
//! picks a 5-smooth size ≥ 2L); on the CubeCL backends on Burn's FFT kernels, which take
//! power-of-two lengths (the conv pads to one; an rfft/irfft of another length takes the
//! DFT-matrix body and says so once); under `Autodiff` each has a hand-written backward made of
//! the same ops.

use crate::ops::SsmOps;
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// Sequences at most this long take the direct form in [`causal_conv`].
pub const DIRECT_MAX_LEN: usize = 128;

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

/// The causal convolution of `u` (B, H, L) with per-channel kernels `k` (H, L): the FFT op for
/// sequences longer than [`DIRECT_MAX_LEN`], the direct (Toeplitz) form otherwise. Both are
/// exact and differentiable.
///
/// # Panics
/// When `k` is not (H, L) for `u` (B, H, L).
pub fn causal_conv(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    let l = check_kernel(&u, &k);
    if l > DIRECT_MAX_LEN {
        causal_conv_fft(u, k)
    } else {
        causal_conv_reference(u, k)
    }
}

/// [`causal_conv`] by the FFT op at any length (rustfft on the CPU backends, Burn's FFT kernels
/// on CubeCL, a hand-written backward under autodiff).
///
/// # Panics
/// When `k` is not (H, L) for `u` (B, H, L).
pub fn causal_conv_fft(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    check_kernel(&u, &k);
    Tensor::from_dispatch(<Dispatch as SsmOps>::causal_conv_fft(
        u.into_dispatch(),
        k.unsqueeze::<3>().into_dispatch(),
    ))
}

/// [`causal_conv`] by the portable body at any length: a (H, L, L) lower-triangular Toeplitz
/// matrix from `k` times `u`, `O(H L²)`, differentiable op by op (the oracle in tests).
///
/// # Panics
/// When `k` is not (H, L) for `u` (B, H, L).
pub fn causal_conv_reference(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    check_kernel(&u, &k);
    Tensor::from_dispatch(super::reference::causal_conv_direct::<Dispatch>(
        u.into_dispatch(),
        k.unsqueeze::<3>().into_dispatch(),
    ))
}

/// The length L, after checking that `k` is (H, L) for `u` (B, H, L).
fn check_kernel(u: &Tensor<3>, k: &Tensor<2>) -> usize {
    let [_, h, l] = u.dims();
    assert_eq!(
        k.dims(),
        [h, l],
        "causal_conv: kernel must be (H, L) = ({h}, {l})"
    );
    l
}

/// A bidirectional (non-causal) convolution: the causal part with `k_fwd` plus the strictly
/// future part with `k_bwd`, `y[t] = Σ_{j ≥ 0} k_fwd[j] u[t − j] + Σ_{j ≥ 0} k_bwd[j] u[t + 1 + j]`
/// (the two-sided kernel of state-spaces/s4's bidirectional layers).
///
/// # Panics
/// When a kernel is not (H, L) for `u` (B, H, L).
pub fn bidirectional_conv(u: Tensor<3>, k_fwd: Tensor<2>, k_bwd: Tensor<2>) -> Tensor<3> {
    let [b, h, l] = u.dims();
    let past = causal_conv(u.clone(), k_fwd);
    // w = causal(flip(u), k_bwd); the future part at t is w[L - 2 - t] (0 at t = L - 1).
    let w = causal_conv(u.flip([2]), k_bwd).flip([2]);
    let future = if l > 1 {
        Tensor::cat(
            vec![
                w.narrow(2, 1, l - 1),
                Tensor::zeros([b, h, 1], &past.device()),
            ],
            2,
        )
    } else {
        Tensor::zeros([b, h, l], &past.device())
    };
    past + future
}
