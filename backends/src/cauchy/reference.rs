//! The Cauchy kernel's reference (portable) body: the (H, K, N) reciprocals `1 / (w − λ)`
//! materialised, then complex batched products. The default body of [`crate::SsmOps::cauchy`]
//! and [`crate::SsmOps::cauchy_backward`], and the oracle of the CPU kernel.

use crate::prim::P;
use burn::backend::{Backend, tensor::FloatTensor};

/// A complex tensor as (re, im).
type C<B> = (P<B>, P<B>);

fn cmatmul<B: Backend>(a: C<B>, b: C<B>) -> C<B> {
    (
        a.0.clone().matmul(b.0.clone()) - a.1.clone().matmul(b.1.clone()),
        a.0.matmul(b.1) + a.1.matmul(b.0),
    )
}

fn cmul<B: Backend>(a: C<B>, b: C<B>) -> C<B> {
    (
        a.0.clone() * b.0.clone() - a.1.clone() * b.1.clone(),
        a.0 * b.1 + a.1 * b.0,
    )
}

fn conj<B: Backend>(a: C<B>) -> C<B> {
    (a.0, a.1.mul_scalar(-1.0))
}

/// `r = 1 / (w − λ)` (H, K, N) from `w` (H, K) and `λ` (H, N).
fn reciprocals<B: Backend>(w: C<B>, l: C<B>) -> C<B> {
    let (h, k, n) = (w.0.dims()[0], w.0.dims()[1], l.0.dims()[1]);
    let d = |w: P<B>, l: P<B>| w.reshape(&[h, k, 1]) - l.reshape(&[h, 1, n]);
    let (dr, di) = (d(w.0, l.0), d(w.1, l.1));
    let norm = dr.clone() * dr.clone() + di.clone() * di.clone();
    let div = |x: P<B>| P::<B>::new(B::float_div(x.into_inner(), norm.clone().into_inner()));
    (div(dr), div(di.mul_scalar(-1.0)))
}

/// `out[h, m, k] = Σ_n v[h, m, n] / (w[h, k] − λ[h, n])` as (re, im), each (H, M, K).
pub fn cauchy<B: Backend>(
    v_re: FloatTensor<B>,
    v_im: FloatTensor<B>,
    w_re: FloatTensor<B>,
    w_im: FloatTensor<B>,
    l_re: FloatTensor<B>,
    l_im: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let r = reciprocals::<B>((P::new(w_re), P::new(w_im)), (P::new(l_re), P::new(l_im)));
    // (H, M, N) @ (H, N, K).
    let rt = (r.0.swap_dims(1, 2), r.1.swap_dims(1, 2));
    let (re, im) = cmatmul((P::new(v_re), P::new(v_im)), rt);
    (re.into_inner(), im.into_inner())
}

/// The gradients of `Σ Re(conj(G) out)` with respect to `v`, `w` and `λ` (each as (re, im)),
/// for `G = (g_re, g_im)` (H, M, K): with `r = 1 / (w − λ)` and `q[h, k, n] = Σ_m G conj(v)`,
/// `dv = Σ_k G conj(r)`, `dλ = Σ_k q conj(r²)`, `dw = −Σ_n q conj(r²)` (`∂/∂x + i ∂/∂y` of a
/// real loss through a holomorphic `f` is `G conj(f')`).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn cauchy_backward<B: Backend>(
    g_re: FloatTensor<B>,
    g_im: FloatTensor<B>,
    v_re: FloatTensor<B>,
    v_im: FloatTensor<B>,
    w_re: FloatTensor<B>,
    w_im: FloatTensor<B>,
    l_re: FloatTensor<B>,
    l_im: FloatTensor<B>,
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let r = reciprocals::<B>((P::new(w_re), P::new(w_im)), (P::new(l_re), P::new(l_im)));
    let g = (P::<B>::new(g_re), P::<B>::new(g_im));
    let v = (P::<B>::new(v_re), P::<B>::new(v_im));
    // dv (H, M, N) = G (H, M, K) @ conj(r) (H, K, N).
    let dv = cmatmul(g.clone(), conj(r.clone()));
    // q (H, K, N) = Gᵀ (H, K, M) @ conj(v) (H, M, N).
    let q = cmatmul((g.0.swap_dims(1, 2), g.1.swap_dims(1, 2)), conj(v));
    let s = cmul(q, conj(cmul(r.clone(), r)));
    let k = s.0.dims()[1];
    let n = s.0.dims()[2];
    let h = s.0.dims()[0];
    let dl = (
        s.0.clone().sum_dim(1).reshape(&[h, n]),
        s.1.clone().sum_dim(1).reshape(&[h, n]),
    );
    let dw = (
        s.0.sum_dim(2).reshape(&[h, k]).mul_scalar(-1.0),
        s.1.sum_dim(2).reshape(&[h, k]).mul_scalar(-1.0),
    );
    (
        dv.0.into_inner(),
        dv.1.into_inner(),
        dw.0.into_inner(),
        dw.1.into_inner(),
        dl.0.into_inner(),
        dl.1.into_inner(),
    )
}
