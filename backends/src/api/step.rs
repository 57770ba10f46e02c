//! The decode steps of whole mixers as single ops: Mamba's, Mamba2's and Mamba-3's recurrent
//! step after `in_proj`, one kernel launch each on the CubeCL backends; Mamba's and Mamba2's
//! composed from the fused conv and state steps elsewhere, Mamba-3's one fused pass on the CPU.

use super::precision::{activation_dtype, back, note_widened, wide};
use crate::ops::SsmOps;
use crate::portable::mamba3_step::{Mamba3StepConfig, Mamba3StepDims};
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

/// Packs a Mamba-3 mixer's decode weights: `[dt_bias (H) | B_bias (H, R, N) | C_bias (H, R, N) |
/// B_norm (N) | C_norm (N) | D (H) | W^x (H, R, P) | W^z (H, R, P) | W^o (H, R, P) |
/// norm_w (H P)]`. SISO passes R = 1 and ones for the `W`s; a mixer without the output norm,
/// ones for `norm_w` (unused).
#[allow(clippy::too_many_arguments)]
pub fn pack_mamba3_step_weights(
    dt_bias: Tensor<1>,
    b_bias: Tensor<3>,
    c_bias: Tensor<3>,
    b_norm: Tensor<1>,
    c_norm: Tensor<1>,
    d: Tensor<1>,
    w_x: Tensor<3>,
    w_z: Tensor<3>,
    w_o: Tensor<3>,
    norm_w: Tensor<1>,
) -> Tensor<1> {
    let flat3 = |t: Tensor<3>| wide(t).flatten::<1>(0, 2);
    Tensor::cat(
        vec![
            wide(dt_bias),
            flat3(b_bias),
            flat3(c_bias),
            wide(b_norm),
            wide(c_norm),
            wide(d),
            flat3(w_x),
            flat3(w_z),
            flat3(w_o),
            wide(norm_w),
        ],
        0,
    )
}

/// One fused Mamba-3 decode step on the tensors' device (SISO or MIMO; one kernel launch on the
/// CubeCL backends, one pass over each head's state on the CPU ones): `proj` = in_proj's output
/// (B, 2HP + 2RGN + 3H + S), `conv_state` (B, H, S + RN + P) = `[Θ | k_1 … k_R | x]` per head,
/// `ssm_state` (B, HP, N), `weights` from [`pack_mamba3_step_weights`]. Returns the output
/// (B, HP) (before out_proj) and the new states. The math is in
/// [`crate::Mamba3StepConfig`]'s module: `h = α h + (1 − λ) Δ α Σ_r k'_r v'_rᵀ + λ Δ Σ_r k_r
/// v_rᵀ`, `y = Σ_r W^o_r ∘ gate(h q_r + D v_r)`.
///
/// # Panics
/// On inconsistent shapes (see [`Mamba3StepDims::infer`]).
pub fn mamba3_decode_step(
    proj: Tensor<2>,
    conv_state: Tensor<3>,
    ssm_state: Tensor<3>,
    weights: Tensor<1>,
    cfg: Mamba3StepConfig,
) -> (Tensor<2>, Tensor<3>, Tensor<3>) {
    if let Err(e) = Mamba3StepDims::infer(
        &proj.dims(),
        &conv_state.dims(),
        &ssm_state.dims(),
        weights.dims()[0],
        &cfg,
    ) {
        panic!("{e}");
    }
    let dtype = activation_dtype(&proj);
    note_widened("mamba3 decode step", dtype);
    let (y, cs, ss) = <Dispatch as SsmOps>::mamba3_decode_step(
        wide(proj).into_dispatch(),
        wide(conv_state).into_dispatch(),
        wide(ssm_state).into_dispatch(),
        wide(weights).into_dispatch(),
        cfg.heads,
        cfg.groups,
        cfg.rank,
        cfg.angles,
        cfg.mimo,
        cfg.outproj_norm,
        cfg.a_floor,
        cfg.eps,
    );
    (
        back(Tensor::from_dispatch(y), dtype),
        Tensor::from_dispatch(cs),
        Tensor::from_dispatch(ss),
    )
}
