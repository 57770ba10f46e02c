//! The Cauchy kernel on `Tensor`s.

use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use burn::backend::Dispatch;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;

/// A complex tensor as its (re, im) parts.
pub type ComplexParts<const D: usize> = (Tensor<D>, Tensor<D>);

/// `out[h, m, k] = Σ_n v[h, m, n] / (w[h, k] − λ[h, n])` as (re, im), each (H, M, K), for
/// numerators `v` (H, M, N), nodes `w` (H, K) and poles `lambda` (H, N): the Cauchy sums of
/// S4's DPLR kernel.
///
/// On the CPU without the (H, K, N) reciprocals (f64, lanes over the poles); elsewhere the
/// reference body. Differentiable in all three. Half-precision inputs are widened to f32 and
/// the result returned in `v`'s dtype.
///
/// # Panics
/// When the shapes do not agree ((H, M, N), (H, K), (H, N), each part as its pair).
pub fn cauchy(v: ComplexParts<3>, w: ComplexParts<2>, lambda: ComplexParts<2>) -> ComplexParts<3> {
    let dtype = activation_dtype(&v.0);
    note_widened("Cauchy kernel", dtype);
    let [vr, vi, wr, wi, lr, li] = checked(v, w, lambda);
    let (re, im) = <Dispatch as SsmOps>::cauchy(vr, vi, wr, wi, lr, li);
    (
        back(Tensor::from_dispatch(re), dtype),
        back(Tensor::from_dispatch(im), dtype),
    )
}

/// [`cauchy()`] by the reference body (the reciprocals materialised, in f32): the oracle of the
/// tests, differentiable through Burn's ops.
pub fn cauchy_reference(
    v: ComplexParts<3>,
    w: ComplexParts<2>,
    lambda: ComplexParts<2>,
) -> ComplexParts<3> {
    let [vr, vi, wr, wi, lr, li] = checked(v, w, lambda);
    let (re, im) = super::reference::cauchy::<Dispatch>(vr, vi, wr, wi, lr, li);
    (Tensor::from_dispatch(re), Tensor::from_dispatch(im))
}

/// The six parts as primitives (half precision widened), after checking their shapes.
fn checked(
    v: ComplexParts<3>,
    w: ComplexParts<2>,
    lambda: ComplexParts<2>,
) -> [FloatTensor<Dispatch>; 6] {
    let [h, m, n] = v.0.dims();
    let k = w.0.dims()[1];
    let want = |name: &str, got: Vec<usize>, dims: Vec<usize>| {
        assert_eq!(
            got, dims,
            "cauchy: {name} is {got:?}, expected {dims:?} (v (H, M, N) = ({h}, {m}, {n}), w (H, K))"
        );
    };
    want("v_im", v.1.dims().to_vec(), vec![h, m, n]);
    want("w_re", w.0.dims().to_vec(), vec![h, k]);
    want("w_im", w.1.dims().to_vec(), vec![h, k]);
    want("lambda_re", lambda.0.dims().to_vec(), vec![h, n]);
    want("lambda_im", lambda.1.dims().to_vec(), vec![h, n]);
    let w3 = |t: Tensor<3>| wide(t).into_dispatch();
    let w2 = |t: Tensor<2>| wide(t).into_dispatch();
    [
        w3(v.0),
        w3(v.1),
        w2(w.0),
        w2(w.1),
        w2(lambda.0),
        w2(lambda.1),
    ]
}
