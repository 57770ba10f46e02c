//! The selective state update's decode step on the GPU: the `#[cube]` kernel and its launcher.
#![allow(clippy::too_many_arguments)]

use crate::cube::buffers::{Regions, flat, max_units, pack, require_same_dtype, require_u32, u32s};
use crate::cube::fallback::Unsupported;
use crate::cube::math::{sigmoid_f, softplus_f};
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

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

/// The decode step of the selective SSM on the kernel (see
/// [`crate::step::reference::selective_state_step`]), or why the kernel cannot take it.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
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
