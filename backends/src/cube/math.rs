//! `#[cube]` helpers the kernels share.

use cubecl::prelude::*;

/// `log(1 + exp(x))`, accurate for negative `x` (through `log1p`) and overflow-free for large `x`.
#[cube]
pub(crate) fn softplus_f<F: Float>(x: F) -> F {
    if x > F::new(20.0) { x } else { x.exp().log1p() }
}

/// `1 / (1 + exp(-x))`.
#[cube]
pub(crate) fn sigmoid_f<F: Float>(x: F) -> F {
    F::new(1.0) / (F::new(1.0) + (-x).exp())
}

/// `π/2` in three parts (Cody and Waite; Cephes' `sinf` constants, doubled): the first two
/// have few significant bits, so `q · part` is exact for `|q| < 2¹⁶`.
const PIO2_1: f32 = 1.570_312_5;
const PIO2_2: f32 = 4.837_513e-4;
const PIO2_3: f32 = 7.549_79e-8;

/// The quadrant `q = round(x · 2/π)` of an angle, and the rest `x − q π/2` in `[−π/4, π/4]`,
/// to about 1e-7 absolute for `|x|` up to 1e5: GPUs' `sin` and `cos` are only specified
/// (Vulkan: 2⁻¹¹ absolute) inside `[−π, π]`, and the phases `l · Im(z)` of a long kernel run to
/// thousands of radians.
#[cube]
pub(crate) fn quadrant_rest<F: Float>(x: F) -> (F, F) {
    let q = (x * F::new(std::f32::consts::FRAC_2_PI)).round();
    let y = x - q * F::new(PIO2_1) - q * F::new(PIO2_2) - q * F::new(PIO2_3);
    (q, y)
}

/// `(sin x, cos x)` from the wrapped angle ([`quadrant_rest`]) by minimax polynomials on
/// `[−π/4, π/4]` (Cephes' `sinf`/`cosf` coefficients, about 1 ulp of f32).
#[cube]
pub(crate) fn sin_cos_wrapped<F: Float>(x: F) -> (F, F) {
    let (q, y) = quadrant_rest::<F>(x);
    let z = y * y;
    let s = y + y
        * z
        * (F::new(-1.666_665_5e-1) + z * (F::new(8.332_161e-3) + z * F::new(-1.951_529_6e-4)));
    let c = F::new(1.0) - F::new(0.5) * z
        + z * z
            * (F::new(4.166_664_6e-2) + z * (F::new(-1.388_731_6e-3) + z * F::new(2.443_315_7e-5)));
    let quadrant = i32::cast_from(q) & 3;
    let mut sin = s;
    let mut cos = c;
    if quadrant == 1 {
        sin = c;
        cos = -s;
    } else if quadrant == 2 {
        sin = -s;
        cos = -c;
    } else if quadrant == 3 {
        sin = -c;
        cos = s;
    }
    (sin, cos)
}
