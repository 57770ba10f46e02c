//! The Vandermonde kernel and its backward on the GPU: the `#[cube]` kernels and their
//! launchers, with the reference body for the inputs the kernels cannot take. The phases
//! `Im(z) (l − s)` are wrapped to `[−π/4, π/4]` before the sine and cosine
//! ([`sin_cos_wrapped`]), so a long kernel's precision does not rest on the device's `sin`.

use super::reference;
use crate::cube::buffers::{
    Cb, flat, max_buffer, max_units, pack, require_same_dtype, require_u32, u32s,
};
use crate::cube::fallback::{PORTABLE, Unsupported, unsupported};
use crate::cube::math::sin_cos_wrapped;
use crate::prim::P;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;
use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Positions one unit of the backward sums (a segment of `l`): the partial sums of the
/// segments are added afterwards, so no invocation loops more than this (lavapipe stops a
/// shader's loops at about 65,535 iterations) and short rows of many modes still fill a GPU.
const SEGMENT: usize = 1024;

/// [`crate::SsmOps::vandermonde`] in one kernel launch, or the reference body.
pub(crate) fn vandermonde(
    c_re: FloatTensor<Cb>,
    c_im: FloatTensor<Cb>,
    z_re: FloatTensor<Cb>,
    z_im: FloatTensor<Cb>,
    shift: FloatTensor<Cb>,
    len: usize,
) -> FloatTensor<Cb> {
    let parts = [c_re, c_im, z_re, z_im, shift];
    match launch_forward(&parts, len) {
        Ok(k) => k,
        Err(why) => {
            unsupported("vandermonde", &[&parts[0]], why, PORTABLE);
            let [cr, ci, zr, zi, s] = parts;
            reference::vandermonde::<Cb>(cr, ci, zr, zi, s, len)
        }
    }
}

/// [`crate::SsmOps::vandermonde_backward`] in one kernel launch and a sum over the segments,
/// or the reference body.
pub(crate) fn vandermonde_backward(
    grad: FloatTensor<Cb>,
    c_re: FloatTensor<Cb>,
    c_im: FloatTensor<Cb>,
    z_re: FloatTensor<Cb>,
    z_im: FloatTensor<Cb>,
    shift: FloatTensor<Cb>,
) -> (
    FloatTensor<Cb>,
    FloatTensor<Cb>,
    FloatTensor<Cb>,
    FloatTensor<Cb>,
) {
    let parts = [c_re, c_im, z_re, z_im, shift];
    match launch_backward(grad.clone(), &parts) {
        Ok(d) => d,
        Err(why) => {
            unsupported("vandermonde_backward", &[&grad, &parts[0]], why, PORTABLE);
            let [cr, ci, zr, zi, s] = parts;
            reference::vandermonde_backward::<Cb>(grad, cr, ci, zr, zi, s)
        }
    }
}

/// `K[h, l] = Σ_n Re(c exp(z (l − s)))`, one unit per output.
///
/// `packed` = `[c_re | c_im | z_re | z_im | shift]`, each (H, N); `out` (H, L).
#[cube(launch)]
pub(crate) fn vandermonde_kernel<F: Float>(
    packed: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[define(F)] _dtype: ElemType,
) {
    let h = dims[0] as usize;
    let n = dims[1] as usize;
    let len = dims[2] as usize;
    let hn = h * n;
    let pos = ABSOLUTE_POS;
    if pos < h * len {
        let row = pos / len;
        let l = F::cast_from((pos % len) as u32);
        let mut acc = F::new(0.0);
        for i in 0..n {
            let m = row * n + i;
            let t = l - packed[4 * hn + m];
            let mag = (packed[2 * hn + m] * t).exp();
            let (sin, cos) = sin_cos_wrapped::<F>(packed[3 * hn + m] * t);
            acc += mag * (packed[m] * cos - packed[hn + m] * sin);
        }
        out[pos] = acc;
    }
}

/// The backward's sums over one segment of `l` for one mode: `S1 = Σ g e`, `S2 = Σ g (l − s) e`
/// with `e = exp(z (l − s))`.
///
/// `packed` as the forward's; `grad` (H, L); `out` = `[S1re | S1im | S2re | S2im]`, each
/// (H, N, segments).
#[cube(launch)]
pub(crate) fn vandermonde_backward_kernel<F: Float>(
    packed: &Tensor<F>,
    grad: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[define(F)] _dtype: ElemType,
) {
    let h = dims[0] as usize;
    let n = dims[1] as usize;
    let len = dims[2] as usize;
    let segments = dims[3] as usize;
    let segment = dims[4] as usize;
    let hn = h * n;
    let total = hn * segments;
    let pos = ABSOLUTE_POS;
    if pos < total {
        let m = pos / segments;
        let seg = pos % segments;
        let row = m / n;
        let zr = packed[2 * hn + m];
        let zi = packed[3 * hn + m];
        let s = packed[4 * hn + m];
        let start = seg * segment;
        let mut end = start + segment;
        if end > len {
            end = len;
        }
        let mut s1r = F::new(0.0);
        let mut s1i = F::new(0.0);
        let mut s2r = F::new(0.0);
        let mut s2i = F::new(0.0);
        for l in start..end {
            let t = F::cast_from(l as u32) - s;
            let mag = (zr * t).exp();
            let (sin, cos) = sin_cos_wrapped::<F>(zi * t);
            let g = grad[row * len + l] * mag;
            s1r += g * cos;
            s1i += g * sin;
            s2r += g * t * cos;
            s2i += g * t * sin;
        }
        out[pos] = s1r;
        out[total + pos] = s1i;
        out[2 * total + pos] = s2r;
        out[3 * total + pos] = s2i;
    }
}

/// What both kernels require of their inputs: f32 (the wrapped phases are f32 arithmetic),
/// one float type, 32-bit indexing and buffers the device binds.
fn require(parts: &[&CubeTensor], elements: &[usize]) -> Result<(), Unsupported> {
    require_same_dtype(parts)?;
    if parts[0].dtype != DType::F32 {
        return Err(Unsupported::Because(format!(
            "the kernel computes in f32, not {:?}",
            parts[0].dtype
        )));
    }
    require_u32(elements)?;
    let limit = max_buffer(parts[0]);
    match elements.iter().find(|e| **e * 4 > limit) {
        Some(e) => Err(Unsupported::Because(format!(
            "a buffer of {} bytes exceeds the device's {limit}-byte binding limit",
            e * 4
        ))),
        None => Ok(()),
    }
}

/// The forward on its kernel, or why not.
fn launch_forward(parts: &[CubeTensor; 5], len: usize) -> Result<CubeTensor, Unsupported> {
    let dims = parts[0].shape().to_vec();
    let (h, n) = (dims[0], dims[1]);
    if h * n * len == 0 {
        return Err(Unsupported::Empty);
    }
    require(&parts.each_ref(), &[5 * h * n, h * len])?;
    let (packed, _) = pack(parts.to_vec());
    let out = empty_device_dtype(
        packed.client.clone(),
        packed.device.clone(),
        Shape::new([h * len]),
        packed.dtype,
    );
    let cube_dim = CubeDim::new_1d(256.min(max_units(&packed)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&packed.client, h * len, cube_dim);
    let dtype = packed.dtype;
    let client = packed.client.clone();
    vandermonde_kernel::launch(
        &client,
        count,
        cube_dim,
        packed.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[h, n, len]),
        dtype_to_storage_type(dtype),
    );
    Ok(P::<Cb>::new(out).reshape(&[h, len]).into_inner())
}

/// The backward on its kernel, the segments' sums added, or why not.
fn launch_backward(
    grad: CubeTensor,
    parts: &[CubeTensor; 5],
) -> Result<(CubeTensor, CubeTensor, CubeTensor, CubeTensor), Unsupported> {
    let dims = parts[0].shape().to_vec();
    let (h, n) = (dims[0], dims[1]);
    let len = grad.shape().to_vec()[1];
    if h * n * len == 0 {
        return Err(Unsupported::Empty);
    }
    let segments = len.div_ceil(SEGMENT);
    let mut all: Vec<&CubeTensor> = parts.iter().collect();
    all.push(&grad);
    require(&all, &[5 * h * n, h * len, 4 * h * n * segments])?;
    let (packed, _) = pack(parts.to_vec());
    let total = h * n * segments;
    let out = empty_device_dtype(
        packed.client.clone(),
        packed.device.clone(),
        Shape::new([4 * total]),
        packed.dtype,
    );
    let cube_dim = CubeDim::new_1d(256.min(max_units(&packed)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&packed.client, total, cube_dim);
    let dtype = packed.dtype;
    let client = packed.client.clone();
    vandermonde_backward_kernel::launch(
        &client,
        count,
        cube_dim,
        packed.into_tensor_arg(),
        flat(grad).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&[h, n, len, segments, SEGMENT]),
        dtype_to_storage_type(dtype),
    );
    let sums = P::<Cb>::new(out)
        .reshape(&[4, h, n, segments])
        .sum_dim(3)
        .reshape(&[4, h, n]);
    let part = |i: usize| sums.clone().narrow(0, i, i + 1).reshape(&[h, n]);
    let c = (
        P::<Cb>::new(parts[0].clone()),
        P::<Cb>::new(parts[1].clone()),
    );
    Ok(reference::grads_from_sums::<Cb>(
        c,
        (part(0), part(1)),
        (part(2), part(3)),
    ))
}
