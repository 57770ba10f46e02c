//! The SSD's two GPU stages that Burn's tensor ops do poorly: the intra-chunk decay mask and the
//! inter-chunk state pass, each a `#[cube]` kernel beside its launcher, with the reference body
//! for the inputs a kernel cannot take. The rest of the chunked form (matmuls) is the reference
//! body's, on the backend's own ops.

use super::reference;
use crate::cube::buffers::{Cb, Regions, flat, max_units, require_same_dtype, require_u32, u32s};
use crate::cube::fallback::{PORTABLE, Unsupported, unsupported};
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// [`crate::SsmOps::ssd_decay_mask`] on its kernel, or the reference body.
pub(crate) fn ssd_decay_mask(cum: FloatTensor<Cb>) -> FloatTensor<Cb> {
    match launch_decay_mask(cum.clone()) {
        Ok(out) => out,
        Err(why) => {
            unsupported("ssd_decay_mask", &[&cum], why, PORTABLE);
            reference::decay_mask::<Cb>(cum)
        }
    }
}

/// [`crate::SsmOps::ssd_state_pass`] on its kernel, or the reference body.
pub(crate) fn ssd_state_pass(
    chunk_states: FloatTensor<Cb>,
    chunk_decay: FloatTensor<Cb>,
    h0: FloatTensor<Cb>,
) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    match launch_state_pass(chunk_states.clone(), chunk_decay.clone(), h0.clone()) {
        Ok(out) => out,
        Err(why) => {
            unsupported("ssd_state_pass", &[&chunk_states], why, PORTABLE);
            reference::state_pass::<Cb>(chunk_states, chunk_decay, h0)
        }
    }
}

/// SSD intra-chunk decay mask: unit per output element `(row, t, s)` of (rows, Q, Q):
/// `exp(cum[row, t] - cum[row, s])` for `s <= t`, else 0.
#[cube(launch)]
pub(crate) fn ssd_decay_mask_kernel<F: Float>(
    cum: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    q: u32,
    #[define(F)] _dtype: ElemType,
) {
    let q = q as usize;
    let pos = ABSOLUTE_POS;
    if pos < rows as usize * q * q {
        let row = pos / (q * q);
        let t = (pos / q) % q;
        let s = pos % q;
        let mut v = F::new(0.0);
        if s <= t {
            v = (cum[row * q + t] - cum[row * q + s]).exp();
        }
        out[pos] = v;
    }
}

/// SSD inter-chunk pass: unit per state element `(b, h, n, p)` walks the K chunks:
/// `start_k = s`, `s = decay_k s + chunk_state_k`. `out` = `[starts (B, H, K, N, P) | final
/// (B, H, N, P) at off_final]`.
#[cube(launch)]
pub(crate) fn ssd_state_pass_kernel<F: Float>(
    chunk_states: &Tensor<F>,
    decay: &Tensor<F>,
    h0: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[define(F)] _dtype: ElemType,
) {
    // dims: B·H, K, N·P, off_final
    let bh_count = dims[0] as usize;
    let k_count = dims[1] as usize;
    let np_count = dims[2] as usize;
    let off_final = dims[3] as usize;
    let pos = ABSOLUTE_POS;
    if pos < bh_count * np_count {
        let bh = pos / np_count;
        let e = pos % np_count;
        let mut s = h0[pos];
        for k in 0..k_count {
            let at = (bh * k_count + k) * np_count + e;
            out[at] = s;
            s = s * decay[bh * k_count + k] + chunk_states[at];
        }
        out[off_final + pos] = s;
    }
}

/// The SSD decay mask on the kernel, or why the kernel cannot take it.
fn launch_decay_mask(cum: CubeTensor) -> Result<CubeTensor, Unsupported> {
    let dims = cum.shape().to_vec();
    let q = dims[3];
    let rows = dims[..3].iter().product::<usize>();
    let total = rows * q * q;
    if total == 0 {
        return Err(Unsupported::Empty);
    }
    require_u32(&[total])?;
    let cum = flat(cum);
    let out = empty_device_dtype(
        cum.client.clone(),
        cum.device.clone(),
        Shape::new([total]),
        cum.dtype,
    );
    let cube_dim = CubeDim::new_1d(256.min(max_units(&cum)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&cum.client, total, cube_dim);
    let dtype = cum.dtype;
    let client = cum.client.clone();
    ssd_decay_mask_kernel::launch(
        &client,
        count,
        cube_dim,
        cum.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        q as u32,
        dtype_to_storage_type(dtype),
    );
    let mut out_dims = dims;
    out_dims.push(q);
    Ok(Cb::float_reshape(out, Shape::from(out_dims)))
}

/// The SSD inter-chunk pass on the kernel, or why the kernel cannot take it.
fn launch_state_pass(
    chunk_states: CubeTensor,
    chunk_decay: CubeTensor,
    h0: CubeTensor,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let d = chunk_states.shape().to_vec();
    let (bh, k, np) = (d[0] * d[1], d[2], d[3] * d[4]);
    if bh * k * np == 0 {
        return Err(Unsupported::Empty);
    }
    require_same_dtype(&[&chunk_states, &chunk_decay, &h0])?;
    require_u32(&[bh * (k + 1) * np + 64])?;
    let h0_dims = h0.shape().to_vec();
    let chunk_states = flat(chunk_states);
    let regions = Regions::new(&chunk_states, &[bh * k * np, bh * np]);
    let out = regions.alloc(&chunk_states);
    let cube_dim = CubeDim::new_1d(256.min(max_units(&chunk_states)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&chunk_states.client, bh * np, cube_dim);
    let dtype = chunk_states.dtype;
    let client = chunk_states.client.clone();
    ssd_state_pass_kernel::launch(
        &client,
        count,
        cube_dim,
        chunk_states.into_tensor_arg(),
        flat(chunk_decay).into_tensor_arg(),
        flat(h0).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[bh, k, np, regions.offsets[1]]),
        dtype_to_storage_type(dtype),
    );
    Ok((regions.view(&out, 0, &d), regions.view(&out, 1, &h0_dims)))
}
