//! The Cauchy kernel of S4's DPLR kernel (Gu et al., 2022, "Efficiently Modeling Long
//! Sequences with Structured State Spaces", eq. 5 and Lemma C.3): for numerators `v` (H, M, N),
//! nodes `w` (H, K) and poles `λ` (H, N), all complex,
//!
//! `out[h, m, k] = Σ_n v[h, m, n] / (w[h, k] − λ[h, n])`,
//!
//! S4's four Cauchy sums `k₀₀, k₀₁, k₁₀, k₁₁` at the roots of unity (`M` = 4), and its backward.
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`cauchy()`];
//! - [`mod@reference`]: the portable body, which materialises the (H, K, N) reciprocals (the
//!   oracle, and what the GPUs run);
//! - [`cpu`]: Flex and NdArray, in f64 with no (H, K, N) tensor, SIMD lanes over the poles;
//! - [`autodiff`]: one graph node whose backward is [`crate::SsmOps::cauchy_backward`];
//! - `fusion`: the output shapes under Fusion.

pub(crate) mod api;
pub(crate) mod autodiff;
pub(crate) mod cpu;
pub(crate) mod reference;

pub use api::{ComplexParts, cauchy, cauchy_reference};

/// The op's output shapes for Fusion.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) mod fusion {
    use burn::backend::fusion::custom::TensorSpec as S;
    use burn::tensor::Shape;

    /// `re` and `im`, each (H, M, K).
    pub(crate) fn cauchy(v_re: &S, _vi: &S, w_re: &S, _wi: &S, _lr: &S, _li: &S) -> (S, S) {
        let v = v_re.shape.to_vec();
        let k = w_re.shape.to_vec()[1];
        let s = S::new(Shape::from(vec![v[0], v[1], k]), v_re.dtype);
        (s.clone(), s)
    }

    /// The gradients of `v`, `w` and `λ` (re, im), shaped as they are.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    pub(crate) fn cauchy_backward(
        _gr: &S,
        _gi: &S,
        v_re: &S,
        _vi: &S,
        w_re: &S,
        _wi: &S,
        l_re: &S,
        _li: &S,
    ) -> (S, S, S, S, S, S) {
        (
            v_re.clone(),
            v_re.clone(),
            w_re.clone(),
            w_re.clone(),
            l_re.clone(),
            l_re.clone(),
        )
    }
}
