//! The fused residual add and RMSNorm on the GPU: the `#[cube]` kernel and its launcher, with
//! the reference body for the inputs the kernel cannot take.

use super::reference;
use crate::cube::STEP_UNITS;
use crate::cube::buffers::{Cb, Regions, flat, max_units, require_same_dtype, require_u32};
use crate::cube::fallback::{PORTABLE, Unsupported, unsupported};
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// [`crate::SsmOps::add_rms_norm`] in one kernel launch, or the reference body.
pub(crate) fn add_rms_norm(
    x: FloatTensor<Cb>,
    residual: FloatTensor<Cb>,
    has_residual: bool,
    weight: FloatTensor<Cb>,
    eps: f32,
) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    let residual = has_residual.then_some(residual);
    match launch(x.clone(), residual.clone(), weight.clone(), eps) {
        Ok(out) => out,
        Err(why) => {
            unsupported("add_rms_norm", &[&x], why, PORTABLE);
            reference::add_rms_norm::<Cb>(x, residual, weight, eps)
        }
    }
}

/// Residual add and RMSNorm of one row per cube: `s = x + r` (or `s = x` without residual),
/// `y = s / sqrt(mean(s²) + eps) * weight`. The sum of squares is reduced over the cube in
/// shared memory (`CUBE_DIM_X` a power of two).
///
/// `out` = `[s (rows, width) | .. | y (rows, width) at off_y]`.
#[cube(launch)]
pub(crate) fn add_rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    residual: &Tensor<F>,
    weight: &Tensor<F>,
    out: &mut Tensor<F>,
    width: u32,
    off_y: u32,
    eps: f32,
    #[comptime] has_residual: bool,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let width = width as usize;
    let off_y = off_y as usize;
    let row = CUBE_POS_X as usize * width;
    let unit = UNIT_POS_X as usize;
    let mut sums = Shared::<[F]>::new_slice(units);
    let mut acc = F::new(0.0);
    let mut i = unit;
    while i < width {
        let mut v = x[row + i];
        if has_residual {
            v += residual[row + i];
        }
        out[row + i] = v;
        acc += v * v;
        i += units;
    }
    sums[unit] = acc;
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            let mine = sums[unit];
            let other = sums[unit + stride];
            sums[unit] = mine + other;
        }
        sync_cube();
        stride /= 2;
    }
    let total = sums[0];
    let inv = F::new(1.0) / (total / F::cast_from(width as u32) + F::cast_from(eps)).sqrt();
    let mut i = unit;
    while i < width {
        let mut v = x[row + i];
        if has_residual {
            v += residual[row + i];
        }
        out[off_y + row + i] = v * inv * weight[i];
        i += units;
    }
}

/// Residual add and RMSNorm over the last axis on the kernel (one launch): returns `x + r` (or
/// `x`) and its normalised form; or why the kernel cannot take it.
fn launch(
    x: CubeTensor,
    residual: Option<CubeTensor>,
    weight: CubeTensor,
    eps: f32,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let dims = x.shape().to_vec();
    let width = *dims.last().expect("add_rms_norm: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / width.max(1);
    let mut ts = vec![&x, &weight];
    if let Some(r) = &residual {
        ts.push(r);
    }
    if rows == 0 || width == 0 {
        return Err(Unsupported::Empty);
    }
    require_same_dtype(&ts)?;
    require_u32(&[rows * width])?;
    let has_residual = residual.is_some();
    let x = flat(x);
    let residual = match residual {
        Some(r) => flat(r),
        None => x.clone(),
    };
    let regions = Regions::new(&x, &[rows * width, rows * width]);
    let out = regions.alloc(&x);
    // A power of two for the tree reduction.
    let cap = STEP_UNITS
        .min(max_units(&x))
        .min(width.next_power_of_two())
        .max(1);
    let units = 1usize << cap.ilog2();
    let dtype = x.dtype;
    let client = x.client.clone();
    add_rms_norm_kernel::launch(
        &client,
        CubeCount::Static(rows as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        residual.into_tensor_arg(),
        flat(weight).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        width as u32,
        regions.offsets[1] as u32,
        eps,
        has_residual,
        units,
        dtype_to_storage_type(dtype),
    );
    Ok((regions.view(&out, 0, &dims), regions.view(&out, 1, &dims)))
}
