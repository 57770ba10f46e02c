//! The Vandermonde kernel's reference (portable) body: the (H, N, L) powers materialised, then
//! summed over the modes. The default body of [`crate::SsmOps::vandermonde`] and
//! [`crate::SsmOps::vandermonde_backward`], and the oracle of the kernels.

use crate::prim::P;
use burn::backend::{Backend, tensor::FloatTensor};

/// The (H, N, L) exponents `z (l − s)` as (re, im), and `l − s`.
fn exponents<B: Backend>(
    z_re: FloatTensor<B>,
    z_im: FloatTensor<B>,
    shift: FloatTensor<B>,
    len: usize,
) -> (P<B>, P<B>, P<B>) {
    let z_re = P::<B>::new(z_re);
    let dims = z_re.dims();
    let (h, n) = (dims[0], dims[1]);
    let steps = P::<B>::from_vec(
        (0..len).map(|l| l as f32).collect(),
        &[1, 1, len],
        &z_re.device(),
    );
    let t = steps - P::<B>::new(shift).reshape(&[h, n, 1]);
    let re = z_re.reshape(&[h, n, 1]) * t.clone();
    let im = P::<B>::new(z_im).reshape(&[h, n, 1]) * t.clone();
    (re, im, t)
}

/// `exp(re + i im)` as (re, im).
fn cexp<B: Backend>(re: P<B>, im: P<B>) -> (P<B>, P<B>) {
    let m = re.exp();
    (
        m.clone() * im.clone().map(B::float_cos),
        m * im.map(B::float_sin),
    )
}

/// `K[h, l] = Σ_n Re(c_hn exp(z_hn (l − s_hn)))` (H, L); `c`, `z`, `shift` (H, N).
pub fn vandermonde<B: Backend>(
    c_re: FloatTensor<B>,
    c_im: FloatTensor<B>,
    z_re: FloatTensor<B>,
    z_im: FloatTensor<B>,
    shift: FloatTensor<B>,
    len: usize,
) -> FloatTensor<B> {
    let c_re = P::<B>::new(c_re);
    let dims = c_re.dims();
    let (h, n) = (dims[0], dims[1]);
    let (re, im, _) = exponents::<B>(z_re, z_im, shift, len);
    let (er, ei) = cexp(re, im);
    let term = c_re.reshape(&[h, n, 1]) * er - P::<B>::new(c_im).reshape(&[h, n, 1]) * ei;
    term.sum_dim(1).reshape(&[h, len]).into_inner()
}

/// The gradients of `Σ_hl g[h, l] K[h, l]` with respect to `c_re`, `c_im`, `z_re`, `z_im`
/// (each (H, N)), with `S1 = Σ_l g_l e_l` and `S2 = Σ_l g_l (l − s) e_l`, `e_l = exp(z (l − s))`:
/// `dc = (Re S1, −Im S1)`, `dz = (Re(c S2), −Im(c S2))` (`Re f` of a holomorphic `f` has
/// `∂/∂x = Re f'`, `∂/∂y = −Im f'`). `shift` is a constant.
pub fn vandermonde_backward<B: Backend>(
    grad: FloatTensor<B>,
    c_re: FloatTensor<B>,
    c_im: FloatTensor<B>,
    z_re: FloatTensor<B>,
    z_im: FloatTensor<B>,
    shift: FloatTensor<B>,
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let g = P::<B>::new(grad);
    let gd = g.dims();
    let (h, len) = (gd[0], gd[1]);
    let c_re = P::<B>::new(c_re);
    let n = c_re.dims()[1];
    let (re, im, t) = exponents::<B>(z_re, z_im, shift, len);
    let (er, ei) = cexp(re, im);
    let g = g.reshape(&[h, 1, len]);
    let sum = |x: P<B>| x.sum_dim(2).reshape(&[h, n]);
    let s1r = sum(g.clone() * er.clone());
    let s1i = sum(g.clone() * ei.clone());
    let gt = g * t;
    let s2r = sum(gt.clone() * er);
    let s2i = sum(gt * ei);
    grads_from_sums::<B>((c_re, P::new(c_im)), (s1r, s1i), (s2r, s2i))
}

/// The four gradients from the sums `S1`, `S2` (each (H, N) as (re, im)):
/// `dc = (Re S1, −Im S1)`, `dz = (Re(c S2), −Im(c S2))`, with
/// `c S2 = (cr s2r − ci s2i) + i (cr s2i + ci s2r)`.
#[allow(clippy::type_complexity)]
pub(crate) fn grads_from_sums<B: Backend>(
    (cr, ci): (P<B>, P<B>),
    (s1r, s1i): (P<B>, P<B>),
    (s2r, s2i): (P<B>, P<B>),
) -> (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
) {
    let dz_re = cr.clone() * s2r.clone() - ci.clone() * s2i.clone();
    let dz_im = (cr * s2i + ci * s2r).mul_scalar(-1.0);
    (
        s1r.into_inner(),
        s1i.mul_scalar(-1.0).into_inner(),
        dz_re.into_inner(),
        dz_im.into_inner(),
    )
}
