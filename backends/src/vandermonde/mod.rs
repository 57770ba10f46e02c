//! The Vandermonde kernel of the diagonal state-space models (S4D, DSS, S4ND's axes): for
//! complex coefficients `c` and exponents `z` (H, N) and real offsets `s` (H, N),
//!
//! `K[h, l] = Σ_n Re(c_hn · exp(z_hn (l − s_hn)))`, `l = 0..L`,
//!
//! the convolution kernel `K[l] = Re Σ_n C̄_n dA_n^l` of a diagonal SSM with `z = log dA` (under
//! ZOH `z = Δ A`; Gu et al., 2022, eq. 6), and its backward. The offsets let a mode be evaluated
//! from the far end (DSS-softmax's modes with a positive real part: `s = L − 1`).
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`vandermonde`];
//! - [`mod@reference`]: the portable body, which materialises the (H, N, L) powers: the oracle;
//! - [`cpu`]: Flex and NdArray, in f64 with no (H, N, L) tensor: per mode, the powers walked
//!   from the largest term by repeated multiplication, SIMD lanes over consecutive positions;
//! - `cube`: one unit per output (forward) or per mode (backward), the phases wrapped to
//!   `[−π/4, π/4]` before the sine and cosine (with `wgpu` or `cuda`);
//! - [`autodiff`]: one graph node whose backward is [`crate::SsmOps::vandermonde_backward`];
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod cube;
pub(crate) mod reference;

pub use api::{vandermonde, vandermonde_reference};

/// The op's output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `K` (H, L).
    pub(crate) fn vandermonde(c_re: &S, _ci: &S, _zr: &S, _zi: &S, _s: &S, len: &usize) -> S {
        let h = c_re.shape.to_vec()[0];
        S::new(Shape::from(vec![h, *len]), c_re.dtype)
    }

    /// The four gradients, each (H, N) as `c_re`.
    pub(crate) fn vandermonde_backward(
        _grad: &S,
        c_re: &S,
        _ci: &S,
        _zr: &S,
        _zi: &S,
        _s: &S,
    ) -> (S, S, S, S) {
        (c_re.clone(), c_re.clone(), c_re.clone(), c_re.clone())
    }
}
