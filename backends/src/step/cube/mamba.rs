//! The whole Mamba (v1) mixer step after `in_proj` on the GPU: the `#[cube]` kernel and its
//! launcher (the math: [`crate::step::reference::mamba_step_composed`]).
#![allow(clippy::too_many_arguments)]

use super::conv::conv_window_step;
use crate::cube::STEP_UNITS;
use crate::cube::buffers::{
    Regions, flat, max_units, require_same_dtype, require_u32, shared_limit, u32s,
};
use crate::cube::fallback::Unsupported;
use crate::cube::math::{sigmoid_f, softplus_f};
use crate::step::reference::MambaStepDims;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The whole recurrent step of a Mamba (v1) mixer after `in_proj`, in one launch per layer.
///
/// One cube per batch row. In order, with a cube barrier between stages: the causal conv step
/// and SiLU of all `D` channels (the conv output kept in shared memory), `x_proj` (`R + 2N`
/// dot products of length `D`, each split over several units and reduced in shared memory),
/// then per channel `dt_proj`, softplus, the state update and the gated output.
///
/// `xz` (batch, 2D) = `[x | z]` (in_proj's output); `weights` in the layout of
/// `crate::step::pack_mamba_step_weights`: `[conv_w (D, K) | conv_b (D) | x_proj (R + 2N, D) |
/// dt_proj (D, R) | dt_bias (D) | A (D, N) | D (D)]`; `dims` = `[D, R, split, conv state offset,
/// ssm state offset]`; `out` = `[y (batch, D) | .. | conv state (batch, D, K) | .. | ssm state
/// (batch, D, N)]`.
#[cube(launch)]
pub(crate) fn mamba_step_kernel<F: Float>(
    xz: &Tensor<F>,
    conv_state: &Tensor<F>,
    ssm_state: &Tensor<F>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[comptime] width: usize,
    #[comptime] n_state: usize,
    #[comptime] max_dim: usize,
    #[comptime] max_proj: usize,
    #[comptime] max_part: usize,
    #[define(F)] _dtype: ElemType,
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    let dim = dims[0] as usize;
    let rank = dims[1] as usize;
    let split = dims[2] as usize;
    let off_conv = dims[3] as usize;
    let off_ssm = dims[4] as usize;
    let b = CUBE_POS_X as usize;
    let unit = UNIT_POS_X as usize;
    let cube_dim = CUBE_DIM_X as usize;
    let proj = rank + 2 * n_state;

    let w_conv_b = dim * width;
    let w_xproj = w_conv_b + dim;
    let w_dtproj = w_xproj + proj * dim;
    let w_dtbias = w_dtproj + dim * rank;
    let w_a = w_dtbias + dim;
    let w_d = w_a + dim * n_state;

    let mut xs = Shared::<[F]>::new_slice(max_dim);
    let mut part = Shared::<[F]>::new_slice(max_part);
    let mut dbl = Shared::<[F]>::new_slice(max_proj);

    // 1. Conv step + SiLU.
    let mut c = unit;
    while c < dim {
        let acc = conv_window_step::<F>(
            conv_state,
            xz[b * 2 * dim + c],
            weights,
            out,
            b * dim + c,
            c,
            off_conv,
            weights[w_conv_b + c],
            width,
        );
        xs[c] = acc * sigmoid_f::<F>(acc);
        c += cube_dim;
    }
    sync_cube();

    // 2. x_proj: output o is split into `split` slices, unit (o, s) sums the channels
    // d = s, s + split, ...
    let mut p = unit;
    while p < proj * split {
        let o = p / split;
        let s = p % split;
        let mut acc = F::new(0.0);
        let mut dd = s;
        while dd < dim {
            acc += weights[w_xproj + o * dim + dd] * xs[dd];
            dd += split;
        }
        part[p] = acc;
        p += cube_dim;
    }
    sync_cube();
    let mut o = unit;
    while o < proj {
        let mut acc = F::new(0.0);
        for s in 0..split {
            acc += part[o * split + s];
        }
        dbl[o] = acc;
        o += cube_dim;
    }
    sync_cube();

    // 3. dt_proj, softplus, state update, D skip and gate.
    let mut c = unit;
    while c < dim {
        let row = b * dim + c;
        let mut dt = weights[w_dtbias + c];
        for r in 0..rank {
            dt += weights[w_dtproj + c * rank + r] * dbl[r];
        }
        dt = softplus_f::<F>(dt);
        let xv = xs[c];
        let dtx = dt * xv;
        let mut acc = F::new(0.0);
        #[unroll(unroll_n)]
        for n in 0..n_state {
            let s = (dt * weights[w_a + c * n_state + n]).exp() * ssm_state[row * n_state + n]
                + dbl[rank + n] * dtx;
            out[off_ssm + row * n_state + n] = s;
            acc += dbl[rank + n_state + n] * s;
        }
        let zz = xz[b * 2 * dim + dim + c];
        out[row] = (acc + weights[w_d + c] * xv) * zz * sigmoid_f::<F>(zz);
        c += cube_dim;
    }
}

/// The fused Mamba decode step on the kernel, or why the kernel cannot take it (`D` too wide
/// for the shared memory of one cube). Sizes as in [`MambaStepDims`].
pub(super) fn launch(
    xz: CubeTensor,
    conv_state: CubeTensor,
    ssm_state: CubeTensor,
    weights: CubeTensor,
    dims: MambaStepDims,
) -> Result<(CubeTensor, CubeTensor, CubeTensor), Unsupported> {
    let MambaStepDims {
        batch,
        dim,
        width,
        state: n,
        rank,
    } = dims;
    let proj = rank + 2 * n;
    let units = STEP_UNITS.min(max_units(&xz));
    // Each x_proj output is split over `split` units (as many as fill the cube, at most 8).
    let split = (units / proj).clamp(1, 8);
    let elem = xz.dtype.size();
    let shared = (dim + proj + proj * split) * elem;
    if batch * dim == 0 {
        return Err(Unsupported::Empty);
    }
    let limit = shared_limit(&xz);
    if shared > limit {
        return Err(Unsupported::Because(format!(
            "D = {dim} and the x_proj outputs need {shared} bytes of shared memory, over the \
             device's {limit}"
        )));
    }
    require_u32(&[weights.shape().num_elements()])?;
    require_same_dtype(&[&xz, &conv_state, &ssm_state, &weights])?;
    let xz = flat(xz);
    let regions = Regions::new(&xz, &[batch * dim, batch * dim * width, batch * dim * n]);
    let out = regions.alloc(&xz);
    let dtype = xz.dtype;
    let client = xz.client.clone();
    mamba_step_kernel::launch(
        &client,
        CubeCount::Static(batch as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        xz.into_tensor_arg(),
        flat(conv_state).into_tensor_arg(),
        flat(ssm_state).into_tensor_arg(),
        flat(weights).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[dim, rank, split, regions.offsets[1], regions.offsets[2]]),
        width,
        n,
        dim,
        proj,
        proj * split,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[batch, dim]),
        regions.view(&out, 1, &[batch, dim, width]),
        regions.view(&out, 2, &[batch, dim, n]),
    ))
}
