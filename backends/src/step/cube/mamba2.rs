//! The whole Mamba2 mixer step after `in_proj` on the GPU: the `#[cube]` kernel and its
//! launcher (the math: [`crate::step::reference::mamba2_step_composed`]).
#![allow(clippy::too_many_arguments)]

use super::conv::conv_window_step;
use crate::cube::STEP_UNITS;
use crate::cube::buffers::{Regions, flat, max_units, require_same_dtype, shared_limit, u32s};
use crate::cube::fallback::Unsupported;
use crate::cube::math::{sigmoid_f, softplus_f};
use crate::step::reference::Mamba2StepConfig;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The whole Mamba2 step after `in_proj`, one cube per batch row: the conv step and SiLU over
/// xBC (kept in shared memory), per channel the head's `dt` (softplus, clamped), the state
/// update with the group's B and C, `D x`, the `silu(z)` gate, then the RMSNorm of each group of
/// `d_inner / G` features (reduced over the cube) and the norm weight.
///
/// `zx` (batch, 2 d_inner + 2GN + H); `weights` = `[conv_w (C, K) | conv_b (C) | dt_bias (H) |
/// A (H) | D (H) | norm_w (d_inner)]`; `dims` = `[d_inner, C, H, G, conv offset, ssm offset]`;
/// `out` = `[y (batch, d_inner) | .. | conv state | .. | ssm state (batch, d_inner, N)]`.
#[cube(launch)]
pub(crate) fn mamba2_step_kernel<F: Float>(
    zx: &Tensor<F>,
    conv_state: &Tensor<F>,
    ssm_state: &Tensor<F>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    dt_min: f32,
    dt_max: f32,
    eps: f32,
    #[comptime] width: usize,
    #[comptime] n_state: usize,
    #[comptime] max_conv: usize,
    #[comptime] max_di: usize,
    #[comptime] units: usize,
    #[comptime] max_groups: usize,
    #[define(F)] _dtype: ElemType,
) {
    let unroll_n = comptime!(n_state <= 32);
    let di = dims[0] as usize;
    let conv = dims[1] as usize;
    let heads = dims[2] as usize;
    let groups = dims[3] as usize;
    let off_conv = dims[4] as usize;
    let off_ssm = dims[5] as usize;
    let dinp = 2 * di + 2 * groups * n_state + heads;
    let p = di / heads;
    let heads_per_group = heads / groups;
    let b = CUBE_POS_X as usize;
    let unit = UNIT_POS_X as usize;

    let w_bias = conv * width;
    let w_dtb = w_bias + conv;
    let w_a = w_dtb + heads;
    let w_d = w_a + heads;
    let w_norm = w_d + heads;

    let mut xs = Shared::<[F]>::new_slice(max_conv);
    let mut ys = Shared::<[F]>::new_slice(max_di);
    let mut red = Shared::<[F]>::new_slice(units);
    let mut invs = Shared::<[F]>::new_slice(max_groups);

    // 1. Conv step + SiLU over xBC.
    let mut c = unit;
    while c < conv {
        let acc = conv_window_step::<F>(
            conv_state,
            zx[b * dinp + di + c],
            weights,
            out,
            b * conv + c,
            c,
            off_conv,
            weights[w_bias + c],
            width,
        );
        xs[c] = acc * sigmoid_f::<F>(acc);
        c += units;
    }
    sync_cube();

    // 2. State update, D skip and gate per channel.
    let mut d = unit;
    while d < di {
        let h = d / p;
        let g = h / heads_per_group;
        let mut dt = softplus_f::<F>(zx[b * dinp + di + conv + h] + weights[w_dtb + h]);
        dt = F::max(dt, F::cast_from(dt_min));
        dt = F::min(dt, F::cast_from(dt_max));
        let da = (dt * weights[w_a + h]).exp();
        let x = xs[d];
        let dtx = dt * x;
        let row = b * di + d;
        let mut acc = F::new(0.0);
        #[unroll(unroll_n)]
        for n in 0..n_state {
            let s = da * ssm_state[row * n_state + n] + xs[di + g * n_state + n] * dtx;
            out[off_ssm + row * n_state + n] = s;
            acc += xs[di + (groups + g) * n_state + n] * s;
        }
        let zz = zx[b * dinp + d];
        ys[d] = (acc + weights[w_d + h] * x) * zz * sigmoid_f::<F>(zz);
        d += units;
    }
    sync_cube();

    // 3. RMS of each group, reduced over the cube.
    let per_group = di / groups;
    for g in 0..groups {
        let mut partial = F::new(0.0);
        let mut i = unit;
        while i < per_group {
            let v = ys[g * per_group + i];
            partial += v * v;
            i += units;
        }
        red[unit] = partial;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if unit < stride {
                let mine = red[unit];
                let other = red[unit + stride];
                red[unit] = mine + other;
            }
            sync_cube();
            stride /= 2;
        }
        if unit == 0 {
            let total = red[0];
            invs[g] =
                F::new(1.0) / (total / F::cast_from(per_group as u32) + F::cast_from(eps)).sqrt();
        }
        sync_cube();
    }

    // 4. Normalised, weighted output.
    let mut d = unit;
    while d < di {
        out[b * di + d] = ys[d] * invs[d / per_group] * weights[w_norm + d];
        d += units;
    }
}

/// The fused Mamba2 decode step on the kernel, or why the kernel cannot take it (xBC and
/// d_inner too wide for the shared memory of one cube).
pub(super) fn launch(
    zxbcdt: CubeTensor,
    conv_state: CubeTensor,
    ssm_state: CubeTensor,
    weights: CubeTensor,
    cfg: Mamba2StepConfig,
) -> Result<(CubeTensor, CubeTensor, CubeTensor), Unsupported> {
    let ss = ssm_state.shape().to_vec();
    let cs = conv_state.shape().to_vec();
    let (batch, di, n) = (ss[0], ss[1], ss[2]);
    let (conv, width) = (cs[1], cs[2]);
    let (heads, groups) = (cfg.heads, cfg.groups);
    let cap = STEP_UNITS.min(max_units(&zxbcdt));
    let units = 1usize << cap.max(1).ilog2();
    let elem = zxbcdt.dtype.size();
    let shared = (conv + di + units + groups) * elem;
    if batch * di == 0 {
        return Err(Unsupported::Empty);
    }
    if heads == 0 || groups == 0 || !di.is_multiple_of(heads) || !heads.is_multiple_of(groups) {
        return Err(Unsupported::Because(format!(
            "{heads} heads and {groups} groups do not divide d_inner = {di}"
        )));
    }
    let limit = shared_limit(&zxbcdt);
    if shared > limit {
        return Err(Unsupported::Because(format!(
            "xBC and d_inner need {shared} bytes of shared memory, over the device's {limit}"
        )));
    }
    require_same_dtype(&[&zxbcdt, &conv_state, &ssm_state, &weights])?;
    let zx = flat(zxbcdt);
    let regions = Regions::new(&zx, &[batch * di, batch * conv * width, batch * di * n]);
    let out = regions.alloc(&zx);
    let dtype = zx.dtype;
    let client = zx.client.clone();
    mamba2_step_kernel::launch(
        &client,
        CubeCount::Static(batch as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        zx.into_tensor_arg(),
        flat(conv_state).into_tensor_arg(),
        flat(ssm_state).into_tensor_arg(),
        flat(weights).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[
            di,
            conv,
            heads,
            groups,
            regions.offsets[1],
            regions.offsets[2],
        ]),
        cfg.dt_min,
        cfg.dt_max.min(f32::MAX),
        cfg.eps,
        width,
        n,
        conv,
        di,
        units,
        groups,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[batch, di]),
        regions.view(&out, 1, &[batch, conv, width]),
        regions.view(&out, 2, &[batch, di, n]),
    ))
}
