//! The decode steps on `Tensor`s of any device: the building blocks (the selective state
//! update and the causal conv window step, fused), and Mamba's and Mamba2's whole recurrent
//! step after `in_proj` as single ops (one kernel launch each on the CubeCL backends; composed
//! from the fused conv and state steps elsewhere).

use super::reference::{Mamba2StepConfig, MambaStepDims};
use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// Packs a Mamba mixer's decode weights into the flat layout of [`SsmOps::mamba_decode_step`]:
/// `[conv_w (D, K) | conv_b (D) | x_proj (R + 2N, D) | dt_proj (D, R) | dt_bias (D) | A (D, N) |
/// D (D)]`.
///
/// The projections are given in Burn's `Linear` layout (`x_proj_w` (D, R + 2N), `dt_proj_w`
/// (R, D)); `a` is `A = -exp(A_log)` (D, N).
pub fn pack_mamba_step_weights(
    conv_w: Tensor<2>,
    conv_b: Tensor<1>,
    x_proj_w: Tensor<2>,
    dt_proj_w: Tensor<2>,
    dt_bias: Tensor<1>,
    a: Tensor<2>,
    d: Tensor<1>,
) -> Tensor<1> {
    let flat2 = |t: Tensor<2>| wide(t).flatten::<1>(0, 1);
    Tensor::cat(
        vec![
            flat2(conv_w),
            wide(conv_b),
            flat2(x_proj_w.transpose()),
            flat2(dt_proj_w.transpose()),
            wide(dt_bias),
            flat2(a),
            wide(d),
        ],
        0,
    )
}

/// One fused Mamba decode step on the tensors' device (one kernel launch on the CubeCL
/// backends): `xz` (B, 2D) = in_proj's output, `conv_state` (B, D, K), `ssm_state` (B, D, N),
/// `weights` from [`pack_mamba_step_weights`]. Returns `y` (B, D) (before out_proj) and the new
/// conv and SSM states.
///
/// # Panics
/// On inconsistent shapes (see [`MambaStepDims::infer`]).
pub fn mamba_decode_step(
    xz: Tensor<2>,
    conv_state: Tensor<3>,
    ssm_state: Tensor<3>,
    weights: Tensor<1>,
) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
    if let Err(e) = MambaStepDims::infer(
        &xz.dims(),
        &conv_state.dims(),
        &ssm_state.dims(),
        weights.dims()[0],
    ) {
        panic!("{e}");
    }
    let dtype = activation_dtype(&xz);
    note_widened("mamba decode step", dtype);
    let (y, cs, ss) = <Dispatch as SsmOps>::mamba_decode_step(
        wide(xz).into_dispatch(),
        wide(conv_state).into_dispatch(),
        wide(ssm_state).into_dispatch(),
        wide(weights).into_dispatch(),
    );
    (
        back(Tensor::from_dispatch(y), dtype),
        Tensor::from_dispatch(cs),
        Tensor::from_dispatch(ss),
    )
}

/// Packs a Mamba2 mixer's decode weights: `[conv_w (C, K) | conv_b (C) | dt_bias (H) | A (H) |
/// D (H) | norm_w (d_inner)]`, with `A = -exp(A_log)`.
pub fn pack_mamba2_step_weights(
    conv_w: Tensor<2>,
    conv_b: Tensor<1>,
    dt_bias: Tensor<1>,
    a: Tensor<1>,
    d: Tensor<1>,
    norm_w: Tensor<1>,
) -> Tensor<1> {
    Tensor::cat(
        [conv_w.flatten::<1>(0, 1), conv_b, dt_bias, a, d, norm_w]
            .into_iter()
            .map(wide)
            .collect(),
        0,
    )
}

/// One fused Mamba2 decode step on the tensors' device (one kernel launch on the CubeCL
/// backends): `zxbcdt` = in_proj's output (B, 2 d_inner + 2GN + H), `conv_state`
/// (B, d_inner + 2GN, K), `ssm_state` (B, d_inner, N), `weights` from
/// [`pack_mamba2_step_weights`]. Returns the gated-normed output (B, d_inner) (before out_proj)
/// and the new conv and SSM states.
pub fn mamba2_decode_step(
    zxbcdt: Tensor<2>,
    conv_state: Tensor<3>,
    ssm_state: Tensor<3>,
    weights: Tensor<1>,
    cfg: Mamba2StepConfig,
) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
    let dtype = activation_dtype(&zxbcdt);
    note_widened("mamba2 decode step", dtype);
    let (y, cs, ss) = <Dispatch as SsmOps>::mamba2_decode_step(
        wide(zxbcdt).into_dispatch(),
        wide(conv_state).into_dispatch(),
        wide(ssm_state).into_dispatch(),
        wide(weights).into_dispatch(),
        cfg.heads,
        cfg.groups,
        cfg.dt_min,
        cfg.dt_max,
        cfg.eps,
    );
    (
        back(Tensor::from_dispatch(y), dtype),
        Tensor::from_dispatch(cs),
        Tensor::from_dispatch(ss),
    )
}

/// One fused decode step of the selective SSM.
///
/// Shapes: `state` (B, D, N); `x`, `dt`, `z` (B, D); `a` (D, N); `b`, `c` (B, G, N); `d`,
/// `dt_bias` (D). Returns `y` (B, D) and the new state.
#[allow(clippy::too_many_arguments)]
pub fn selective_state_step(
    state: Tensor<3>,
    x: Tensor<2>,
    dt: Tensor<2>,
    a: Tensor<2>,
    b: Tensor<3>,
    c: Tensor<3>,
    d: Tensor<1>,
    z: Option<Tensor<2>>,
    dt_bias: Tensor<1>,
    dt_softplus: bool,
) -> (Tensor<2>, Tensor<3>) {
    let dtype = activation_dtype(&x);
    note_widened("selective state step", dtype);
    let gate = z.is_some();
    let z = z.unwrap_or_else(|| x.clone());
    let (y, h) = <Dispatch as SsmOps>::selective_state_step(
        wide(state).into_dispatch(),
        wide(x).into_dispatch(),
        wide(dt).into_dispatch(),
        wide(a).into_dispatch(),
        wide(b).into_dispatch(),
        wide(c).into_dispatch(),
        wide(d).into_dispatch(),
        wide(z).into_dispatch(),
        gate,
        wide(dt_bias).into_dispatch(),
        dt_softplus,
    );
    (
        back(Tensor::from_dispatch(y), dtype),
        Tensor::from_dispatch(h),
    )
}

/// One fused decode step of a causal depthwise conv1d: `x` (B, C) enters the rolling `state`
/// (B, C, K); returns the output (B, C) (through SiLU when `silu`) and the new state.
pub fn causal_conv1d_step(
    x: Tensor<2>,
    state: Tensor<3>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    silu: bool,
) -> (Tensor<2>, Tensor<3>) {
    let dtype = activation_dtype(&x);
    note_widened("causal conv1d step", dtype);
    let (y, s) = <Dispatch as SsmOps>::causal_conv1d_step(
        wide(x).into_dispatch(),
        wide(state).into_dispatch(),
        wide(weight).into_dispatch(),
        wide(bias).into_dispatch(),
        silu,
    );
    (
        back(Tensor::from_dispatch(y), dtype),
        Tensor::from_dispatch(s),
    )
}
