//! Mamba-3's decode step on `Tensor`s of any device: its weights packed, and the step as one
//! op (one kernel launch on the CubeCL backends, one fused pass over each head's state on the
//! CPU ones).

use super::reference::{Mamba3StepConfig, Mamba3StepDims};
use crate::ops::SsmOps;
use crate::precision::{activation_dtype, back, note_widened, wide};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

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
/// (B, HP) (before out_proj) and the new states. Per head, with the keys `k_r`, queries `q_r`
/// and inputs `v_r` of this token and the carried `k'_r`, `v'_r` of the previous one:
/// `h = α h + (1 − λ) Δ α Σ_r k'_r v'_rᵀ + λ Δ Σ_r k_r v_rᵀ`,
/// `y = Σ_r W^o_r ∘ gate(h q_r + D v_r)` (state-spaces/mamba's `Mamba3.step`).
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
