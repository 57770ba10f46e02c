//! Mamba2's SSD scan on `Tensor`s: `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t ⊗ B_t`,
//! `y_t = h_t C_t + D_h x_t` (Dao & Gu, 2024, eq. 1 with the scalar-identity A).

use crate::ops::SsmOps;
use crate::portable::ssd::{SsdDims, ssd_chunked};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// The SSD scan on the tensors' device through the op (see [`SsmOps::ssd`]): `x` (B, L, H, P),
/// `dt` (B, L, H) (the final step sizes, after bias, softplus and limits), `a` (H), `b`, `c`
/// (B, L, G, N), `d` (H), `initial_state` (B, H, P, N) or zeros; `chunk` is the SSD chunk length
/// (it changes the float order, not the result). Returns `y` (B, L, H, P) and the final state
/// (B, H, P, N).
///
/// # Panics
/// On inconsistent shapes, with a message naming the input and both shapes.
#[allow(clippy::too_many_arguments)]
pub fn ssd(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    initial_state: Option<Tensor<4>>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let (x, dt, a, b, c, d, h0) = ssd_filled(x, dt, a, b, c, d, initial_state);
    let (y, h) = <Dispatch as SsmOps>::ssd(
        x.into_dispatch(),
        dt.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
        c.into_dispatch(),
        d.into_dispatch(),
        h0.into_dispatch(),
        chunk.max(1),
    );
    (Tensor::from_dispatch(y), Tensor::from_dispatch(h))
}

/// [`ssd`] through the portable chunked body, whatever the backend (the oracle in tests).
///
/// # Panics
/// On inconsistent shapes.
#[allow(clippy::too_many_arguments)]
pub fn ssd_reference(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    initial_state: Option<Tensor<4>>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let (x, dt, a, b, c, d, h0) = ssd_filled(x, dt, a, b, c, d, initial_state);
    let (y, h) = ssd_chunked::<Dispatch>(
        x.into_dispatch(),
        dt.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
        c.into_dispatch(),
        d.into_dispatch(),
        h0.into_dispatch(),
        chunk.max(1),
    );
    (Tensor::from_dispatch(y), Tensor::from_dispatch(h))
}

type Filled = (
    Tensor<4>,
    Tensor<3>,
    Tensor<1>,
    Tensor<4>,
    Tensor<4>,
    Tensor<1>,
    Tensor<4>,
);

fn ssd_filled(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Option<Tensor<1>>,
    h0: Option<Tensor<4>>,
) -> Filled {
    let [bs, _, h, p] = x.dims();
    let n = b.dims()[3];
    let device = x.device();
    let d = d.unwrap_or_else(|| Tensor::zeros([h], &device));
    let h0 = h0.unwrap_or_else(|| Tensor::zeros([bs, h, p, n], &device));
    if let Err(e) = SsdDims::check(
        &x.dims(),
        &dt.dims(),
        &a.dims(),
        &b.dims(),
        &c.dims(),
        &d.dims(),
        &h0.dims(),
    ) {
        panic!("{e}");
    }
    (x, dt, a, b, c, d, h0)
}
