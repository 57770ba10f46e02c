//! The Vandermonde kernel on `Tensor`s.

use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use burn::backend::Dispatch;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;

/// `K[h, l] = Σ_n Re(c_hn · exp(z_hn (l − s_hn)))` for `l = 0..len` (H, L): the convolution
/// kernel of a diagonal SSM, `c` (H, N) its output coefficients with the input matrix folded in,
/// `z = log dA` (H, N) (`Δ A` under ZOH), `shift` (H, N) the position each mode is measured
/// from (`None`: 0). S4D's kernel is `2 K` over one mode of each conjugate pair.
///
/// Computed without the (H, N, L) powers on the CPU (f64, from each mode's largest term) and
/// the GPUs (the phases wrapped before the sine and cosine); differentiable in `c` and `z`
/// (`shift` is a constant). Half-precision inputs are widened to f32 and the result returned
/// in `c_re`'s dtype.
///
/// # Panics
/// When the four parts and `shift` are not all (H, N).
pub fn vandermonde(
    c: (Tensor<2>, Tensor<2>),
    z: (Tensor<2>, Tensor<2>),
    shift: Option<Tensor<2>>,
    len: usize,
) -> Tensor<2> {
    let dtype = activation_dtype(&c.0);
    note_widened("Vandermonde kernel", dtype);
    let [cr, ci, zr, zi, s] = checked(c, z, shift);
    let k = <Dispatch as SsmOps>::vandermonde(cr, ci, zr, zi, s, len);
    back(Tensor::from_dispatch(k), dtype)
}

/// [`vandermonde()`] by the reference body (the (H, N, L) powers materialised, in f32): the
/// oracle of the tests, differentiable through Burn's ops.
pub fn vandermonde_reference(
    c: (Tensor<2>, Tensor<2>),
    z: (Tensor<2>, Tensor<2>),
    shift: Option<Tensor<2>>,
    len: usize,
) -> Tensor<2> {
    let [cr, ci, zr, zi, s] = checked(c, z, shift);
    Tensor::from_dispatch(super::reference::vandermonde::<Dispatch>(
        cr, ci, zr, zi, s, len,
    ))
}

/// The five parts as primitives (half precision widened), after checking they are all (H, N).
fn checked(
    c: (Tensor<2>, Tensor<2>),
    z: (Tensor<2>, Tensor<2>),
    shift: Option<Tensor<2>>,
) -> [FloatTensor<Dispatch>; 5] {
    let dims = c.0.dims();
    let shift = shift.unwrap_or_else(|| c.0.zeros_like());
    for (name, t) in [
        ("c_im", &c.1),
        ("z_re", &z.0),
        ("z_im", &z.1),
        ("shift", &shift),
    ] {
        assert_eq!(
            t.dims(),
            dims,
            "vandermonde: {name} is {:?}, c_re is {dims:?}; all must be (H, N)",
            t.dims()
        );
    }
    [c.0, c.1, z.0, z.1, shift].map(|t| wide(t).into_dispatch())
}
