//! The decode steps on the GPU: the selective state update, the conv window step and the whole
//! Mamba (v1) mixer step after `in_proj`, each a `#[cube]` kernel beside its launcher.
#![allow(clippy::too_many_arguments)]

use super::buffers::{
    Regions, flat, max_units, pack, require_same_dtype, require_u32, shared_limit, u32s,
};
use super::fallback::Unsupported;
use super::math::{sigmoid_f, softplus_f};
use crate::portable::step::MambaStepDims;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Units of the fused decode-step cube.
pub(super) const STEP_UNITS: usize = 256;

/// One causal conv step of one channel: the channel's window (the last `width` inputs, `state`
/// from `row * width`, then `x`) shifted into `out` at `off_state + row * width`; returns
/// `bias + Σ_k filters[c, k] · window[k]` (filters (C, width) at the start of `filters`).
#[cube]
pub(super) fn conv_window_step<F: Float>(
    state: &Tensor<F>,
    x: F,
    filters: &Tensor<F>,
    out: &mut Tensor<F>,
    row: usize,
    c: usize,
    off_state: usize,
    bias: F,
    #[comptime] width: usize,
) -> F {
    let mut acc = bias;
    #[unroll]
    for k in 0..width {
        let v = if k + 1 < width {
            state[row * width + k + 1]
        } else {
            x
        };
        out[off_state + row * width + k] = v;
        acc += filters[c * width + k] * v;
    }
    acc
}

/// One decode step of the selective SSM: unit `(b, d)` updates the `N` states of its channel.
///
/// `packed` = `[A (D, N) | D (D) | dt_bias (D) | B (batch, G, N) | C (batch, G, N)]`;
/// `out` = `[y (batch, D) | .. | state (batch, D, N) at off_state]`.
#[cube(launch)]
pub(crate) fn state_step_kernel<F: Float>(
    state: &Tensor<F>,
    x: &Tensor<F>,
    dt: &Tensor<F>,
    z: &Tensor<F>,
    packed: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[comptime] n_state: usize,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
    #[define(F)] _dtype: ElemType,
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    let batch = dims[0] as usize;
    let dim = dims[1] as usize;
    let groups = dims[2] as usize;
    let off_state = dims[3] as usize;
    let pos = ABSOLUTE_POS;
    if pos < batch * dim {
        let b = pos / dim;
        let d = pos % dim;
        let g = d / (dim / groups);
        let off_d = dim * n_state;
        let off_bias = off_d + dim;
        let off_b = off_bias + dim;
        let off_c = off_b + batch * groups * n_state;
        let xv = x[pos];
        let mut dtv = dt[pos] + packed[off_bias + d];
        if softplus {
            dtv = softplus_f::<F>(dtv);
        }
        let dtx = dtv * xv;
        let mut acc = F::new(0.0);
        #[unroll(unroll_n)]
        for n in 0..n_state {
            let bc = (b * groups + g) * n_state + n;
            let s = (dtv * packed[d * n_state + n]).exp() * state[pos * n_state + n]
                + packed[off_b + bc] * dtx;
            out[off_state + pos * n_state + n] = s;
            acc += packed[off_c + bc] * s;
        }
        let mut y = acc + packed[off_d + d] * xv;
        if gate {
            let zz = z[pos];
            y *= zz * sigmoid_f::<F>(zz);
        }
        out[pos] = y;
    }
}

/// One decode step of a causal depthwise conv1d: unit `(b, c)` shifts its window, appends `x` and
/// takes the dot product with its filter.
///
/// `packed` = `[weight (C, K) | bias (C)]`; `out` = `[y (batch, C) | .. | state (batch, C, K) at
/// off_state]`.
#[cube(launch)]
pub(crate) fn conv_step_kernel<F: Float>(
    x: &Tensor<F>,
    state: &Tensor<F>,
    packed: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[comptime] width: usize,
    #[comptime] silu: bool,
    #[define(F)] _dtype: ElemType,
) {
    let batch = dims[0] as usize;
    let ch = dims[1] as usize;
    let off_state = dims[2] as usize;
    let pos = ABSOLUTE_POS;
    if pos < batch * ch {
        let c = pos % ch;
        let mut acc = conv_window_step::<F>(
            state,
            x[pos],
            packed,
            out,
            pos,
            c,
            off_state,
            packed[ch * width + c],
            width,
        );
        if silu {
            acc *= sigmoid_f::<F>(acc);
        }
        out[pos] = acc;
    }
}

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

/// The decode step of the selective SSM on the kernel (see
/// [`crate::portable::selective_state_step`]), or why the kernel cannot take it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_state_step(
    state: CubeTensor,
    x: CubeTensor,
    dt: CubeTensor,
    a: CubeTensor,
    b: CubeTensor,
    c: CubeTensor,
    d: CubeTensor,
    z: Option<CubeTensor>,
    dt_bias: CubeTensor,
    dt_softplus: bool,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let sd = state.shape().to_vec();
    let groups = b.shape()[1];
    let (batch, dim, n) = (sd[0], sd[1], sd[2]);
    if batch * dim * n == 0 {
        return Err(Unsupported::Empty);
    }
    if groups == 0 || !dim.is_multiple_of(groups) {
        return Err(Unsupported::Because(format!(
            "{groups} groups do not divide D = {dim}"
        )));
    }
    let mut ts = vec![&state, &x, &dt, &a, &b, &c, &d, &dt_bias];
    if let Some(z) = &z {
        ts.push(z);
    }
    require_same_dtype(&ts)?;
    require_u32(&[batch * dim * n])?;
    let gate = z.is_some();
    let x = flat(x);
    let z = match z {
        Some(z) => flat(z),
        None => x.clone(),
    };
    let (packed, _) = pack(vec![a, d, dt_bias, b, c]);
    let regions = Regions::new(&x, &[batch * dim, batch * dim * n]);
    let out = regions.alloc(&x);
    let units = batch * dim;
    let cube_dim = CubeDim::new_1d(256.min(max_units(&x)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&x.client, units, cube_dim);
    let dtype = x.dtype;
    let client = x.client.clone();
    state_step_kernel::launch(
        &client,
        count,
        cube_dim,
        flat(state).into_tensor_arg(),
        x.into_tensor_arg(),
        flat(dt).into_tensor_arg(),
        z.into_tensor_arg(),
        packed.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[batch, dim, groups, regions.offsets[1]]),
        n,
        gate,
        dt_softplus,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[batch, dim]),
        regions.view(&out, 1, &[batch, dim, n]),
    ))
}

/// The decode step of a causal depthwise conv1d on the kernel, or why the kernel cannot take
/// it.
pub(crate) fn causal_conv1d_step(
    x: CubeTensor,
    state: CubeTensor,
    weight: CubeTensor,
    bias: CubeTensor,
    silu: bool,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let sd = state.shape().to_vec();
    let (batch, ch, k) = (sd[0], sd[1], sd[2]);
    if batch * ch * k == 0 {
        return Err(Unsupported::Empty);
    }
    require_same_dtype(&[&x, &state, &weight, &bias])?;
    require_u32(&[batch * ch * k])?;
    let (packed, _) = pack(vec![weight, bias]);
    let x = flat(x);
    let regions = Regions::new(&x, &[batch * ch, batch * ch * k]);
    let out = regions.alloc(&x);
    let cube_dim = CubeDim::new_1d(256.min(max_units(&x)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&x.client, batch * ch, cube_dim);
    let dtype = x.dtype;
    let client = x.client.clone();
    conv_step_kernel::launch(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        flat(state).into_tensor_arg(),
        packed.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[batch, ch, regions.offsets[1]]),
        k,
        silu,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[batch, ch]),
        regions.view(&out, 1, &[batch, ch, k]),
    ))
}

/// The fused Mamba decode step on the kernel, or why the kernel cannot take it (`D` too wide
/// for the shared memory of one cube). Sizes as in [`MambaStepDims`].
pub(crate) fn mamba_step(
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
