//! The decode steps of whole mixers as single ops: Mamba's and Mamba2's recurrent step after
//! `in_proj`, one kernel launch each on the CubeCL backends, composed from the fused conv and
//! state steps elsewhere.

use crate::ops::SsmOps;
use crate::portable::step::{Mamba2StepConfig, MambaStepDims};
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
    let flat2 = |t: Tensor<2>| t.flatten::<1>(0, 1);
    Tensor::cat(
        vec![
            flat2(conv_w),
            conv_b,
            flat2(x_proj_w.transpose()),
            flat2(dt_proj_w.transpose()),
            dt_bias,
            flat2(a),
            d,
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
    let (y, cs, ss) = <Dispatch as SsmOps>::mamba_decode_step(
        xz.into_dispatch(),
        conv_state.into_dispatch(),
        ssm_state.into_dispatch(),
        weights.into_dispatch(),
    );
    (
        Tensor::from_dispatch(y),
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
        vec![conv_w.flatten::<1>(0, 1), conv_b, dt_bias, a, d, norm_w],
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
    let (y, cs, ss) = <Dispatch as SsmOps>::mamba2_decode_step(
        zxbcdt.into_dispatch(),
        conv_state.into_dispatch(),
        ssm_state.into_dispatch(),
        weights.into_dispatch(),
        cfg.heads,
        cfg.groups,
        cfg.dt_min,
        cfg.dt_max,
        cfg.eps,
    );
    (
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(cs),
        Tensor::from_dispatch(ss),
    )
}
