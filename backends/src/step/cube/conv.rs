//! The causal conv window's decode step on the GPU: the `#[cube]` kernel and its launcher, and
//! the one-channel window step that the whole-mixer kernels ([`super::mamba`],
//! [`super::mamba2`]) share.

use crate::cube::buffers::{Regions, flat, max_units, pack, require_same_dtype, require_u32, u32s};
use crate::cube::fallback::Unsupported;
use crate::cube::math::sigmoid_f;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// One causal conv step of one channel: the channel's window (the last `width` inputs, `state`
/// from `row * width`, then `x`) shifted into `out` at `off_state + row * width`; returns
/// `bias + Σ_k filters[c, k] · window[k]` (filters (C, width) at the start of `filters`).
#[cube]
pub(crate) fn conv_window_step<F: Float>(
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

/// The decode step of a causal depthwise conv1d on the kernel, or why the kernel cannot take
/// it.
pub(super) fn launch(
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
