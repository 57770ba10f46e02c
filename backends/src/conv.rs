//! Long causal convolutions, the parallel form of the S4 family:
//! `y[b, h, t] = Σ_{j ≤ t} K[h, j] u[b, h, t - j]`.
//!
//! Two exact forms: the direct (Toeplitz) product, `O(H L²)`, best for short sequences; and the
//! FFT product (rfft/irfft zero-padded to a power of two at least `2L`, so the circular
//! convolution equals the linear one), `O(H L log L)`, an op of [`crate::SsmOps`] on every
//! backend ([`crate::fft`]: `rustfft` on the CPU backends, Burn's FFT kernels on CubeCL, a
//! hand-written backward under `Autodiff`). Both are differentiable.

use burn::tensor::{Int, Tensor};

/// Sequences at most this long take the direct form.
pub const DIRECT_MAX_LEN: usize = 128;

/// The causal convolution of `u` (B, H, L) with per-channel kernels `k` (H, L): the FFT form
/// for sequences longer than [`DIRECT_MAX_LEN`], the direct form otherwise.
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
    if l > DIRECT_MAX_LEN {
        causal_conv_fft(u, k)
    } else {
        causal_conv_direct(u, k)
    }
}

/// The direct form: a (H, L, L) lower-triangular Toeplitz matrix from `k`, times `u`.
pub fn causal_conv_direct(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    let [_, h, l] = u.dims();
    let device = u.device();
    // T[h, t, s] = k[h, t - s] for s <= t, else 0.
    let lags: Vec<i64> = (0..l * l)
        .map(|i| {
            let (t, s) = (i / l, i % l);
            if s <= t { (t - s) as i64 } else { 0 }
        })
        .collect();
    let mask: Vec<f32> = (0..l * l)
        .map(|i| f32::from(u8::from(i % l <= i / l)))
        .collect();
    let lags = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(lags, [l * l]), &device);
    let mask = Tensor::<2>::from_data(burn::tensor::TensorData::new(mask, [l, l]), &device);
    let toeplitz = k.select(1, lags).reshape([h, l, l]) * mask.unsqueeze::<3>();
    toeplitz
        .unsqueeze::<4>()
        .matmul(u.unsqueeze_dim::<4>(3))
        .squeeze_dim::<3>(3)
}

/// The FFT form (see [`crate::fft::causal_conv`]).
pub fn causal_conv_fft(u: Tensor<3>, k: Tensor<2>) -> Tensor<3> {
    crate::fft::causal_conv(u, k)
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
