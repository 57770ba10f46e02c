//! Real FFTs and long convolutions, the transforms of the S4 family: along the last axis,
//! `X_k = Σ_l x_l exp(−2πi k l / n)` (the one-sided spectrum, `k = 0..=n/2`), its inverse, and
//! the causal convolution `y[b, h, t] = Σ_{j ≤ t} K[h, j] u[b, h, t − j]` by FFT, zero-padded
//! to at least `2L`; N-dimensional transforms composed of them.
//!
//! Everything the ops are, in one place:
//! - [`api`]: the tensor-level [`rfft`], [`irfft`], [`causal_conv`] (direct or by FFT) and
//!   [`bidirectional_conv`]; [`fftn`]: [`fft()`], [`ifft`], [`rfftn`], [`irfftn`];
//! - [`mod@reference`]: the DFT-matrix and Toeplitz bodies (exact at any length, `O(n²)`);
//! - [`cpu`]: `rustfft` at any length on Flex and NdArray;
//! - `cube`: Burn's FFT kernels, at powers of two (with `wgpu` or `cuda`);
//! - [`autodiff`]: hand-written backward nodes made of the same ops;
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod fftn;
pub(crate) mod reference;

pub use api::{
    DIRECT_MAX_LEN, bidirectional_conv, causal_conv, causal_conv_fft, causal_conv_reference, irfft,
    rfft,
};
pub use fftn::{fft, ifft, irfftn, rfftn};

/// The FFT ops' output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `re` and `im` as `x` with `n / 2 + 1` bins on the last axis.
    pub(crate) fn rfft(x: &S, n: &usize) -> (S, S) {
        let mut dims = x.shape.to_vec();
        *dims.last_mut().expect("rank >= 1") = n / 2 + 1;
        let s = S::new(Shape::from(dims), x.dtype);
        (s.clone(), s)
    }

    /// The signal as `re` with `n` samples on the last axis.
    pub(crate) fn irfft(re: &S, _im: &S, n: &usize) -> S {
        let mut dims = re.shape.to_vec();
        *dims.last_mut().expect("rank >= 1") = *n;
        S::new(Shape::from(dims), re.dtype)
    }

    /// The output as `u`.
    pub(crate) fn causal_conv_fft(u: &S, _k: &S) -> S {
        u.clone()
    }
}
