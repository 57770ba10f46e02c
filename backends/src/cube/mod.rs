//! `SsmOps` for the CubeCL backend (wgpu, vulkan, cuda, rocm): the kernels of [`kernels`],
//! launched on `CubeTensor`s.
//!
//! Inputs are made contiguous and flat; small inputs are packed into one buffer (a `cat` of a
//! few small tensors), several outputs share one buffer whose regions start on the device's
//! binding alignment, so that they come back as views with no copy. Shapes a kernel cannot take
//! (a state size whose staging does not fit the device's shared memory) fall back to the
//! portable body, which is always correct.

mod kernels;

use crate::portable::{self, ScanArgs, ScanDims};
use crate::prim::P;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::{into_contiguous, slice};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

type Cb = CubeBackend;

/// Channels per cube of the scan kernels (one unit each).
const SCAN_BLOCK: usize = 32;
/// Steps per chunk of the forward scan (B and C staged in shared memory per chunk), at most.
const FWD_CHUNK: usize = 64;
/// Steps per chunk of the backward scan (the states recomputed per chunk), at most.
const BWD_CHUNK: usize = 32;

/// The forward chunk: the longest (a power of two up to [`FWD_CHUNK`]) whose staged B and C
/// (`2 N chunk` floats) fit the device's shared memory; `None` if not even one step does.
fn fwd_chunk(state: usize, elem: usize, shared: usize) -> Option<usize> {
    (0..=FWD_CHUNK.ilog2())
        .rev()
        .map(|e| 1usize << e)
        .find(|c| 2 * state * c * elem <= shared)
}

/// The backward (channels per cube, chunk): the largest that fit the shared memory
/// (`2 N (2 chunk + block)` floats: staged B, C, the per-step reduction and the chunk's dB, dC);
/// large state sizes (Mamba2: N = 128) take smaller cubes and chunks.
fn bwd_tiling(state: usize, elem: usize, shared: usize, units: usize) -> Option<(usize, usize)> {
    [SCAN_BLOCK, 16, 8]
        .into_iter()
        .filter(|b| *b <= units)
        .flat_map(|b| (0..=BWD_CHUNK.ilog2()).rev().map(move |e| (b, 1usize << e)))
        .find(|(b, c)| 2 * state * (2 * c + b) * elem <= shared)
}
/// Units of the fused decode-step cube.
const STEP_UNITS: usize = 256;

/// A contiguous, flat (1-D) copy or view of `t`.
fn flat(t: CubeTensor) -> CubeTensor {
    let n = t.shape().num_elements();
    let t = into_contiguous(t);
    Cb::float_reshape(t, Shape::new([n]))
}

/// Flat tensors laid end to end in one buffer; returns it and each part's offset (elements).
fn pack(parts: Vec<CubeTensor>) -> (CubeTensor, Vec<usize>) {
    let mut offsets = Vec::with_capacity(parts.len());
    let mut at = 0;
    let flats: Vec<CubeTensor> = parts
        .into_iter()
        .map(|p| {
            let f = flat(p);
            offsets.push(at);
            at += f.shape().num_elements();
            f
        })
        .collect();
    (Cb::float_cat(flats, 0), offsets)
}

/// One output buffer holding several regions, each starting on the binding alignment.
struct Regions {
    offsets: Vec<usize>,
    total: usize,
}

impl Regions {
    fn new(like: &CubeTensor, sizes: &[usize]) -> Self {
        let elem = like.dtype.size();
        let align = (like.client.properties().memory.alignment as usize / elem).max(1);
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for s in sizes {
            offsets.push(at);
            at += s.div_ceil(align) * align;
        }
        Self {
            offsets,
            total: at.max(1),
        }
    }

    fn alloc(&self, like: &CubeTensor) -> CubeTensor {
        empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([self.total]),
            like.dtype,
        )
    }

    /// Region `i` of `buf` as a tensor of shape `dims` (a view when aligned).
    fn view(&self, buf: &CubeTensor, i: usize, dims: &[usize]) -> CubeTensor {
        let n: usize = dims.iter().product();
        let start = self.offsets[i];
        let range = start..start + n;
        let part = slice(buf.clone(), std::slice::from_ref(&range));
        Cb::float_reshape(part, Shape::from(dims.to_vec()))
    }
}

fn u32s(values: &[usize]) -> SequenceArg<u32> {
    let mut seq = SequenceArg::new();
    for v in values {
        seq.push(u32::try_from(*v).expect("size exceeds the kernels' 32-bit indexing"));
    }
    seq
}

fn fits_u32(sizes: &[usize]) -> bool {
    sizes.iter().all(|s| u32::try_from(*s).is_ok())
}

fn shared_limit(t: &CubeTensor) -> usize {
    t.client.properties().hardware.max_shared_memory_size
}

fn max_units(t: &CubeTensor) -> usize {
    let hw = &t.client.properties().hardware;
    (hw.max_units_per_cube as usize).min(hw.max_cube_dim.0 as usize)
}

/// The environment variable that lowers the largest buffer the launchers plan for (bytes): for
/// adapters that report more than they bind, and for testing the batch split.
pub const MAX_BUFFER_VAR: &str = "SSM_ZOO_CUBE_MAX_BUFFER";

fn max_buffer(t: &CubeTensor) -> usize {
    let device = usize::try_from(t.client.properties().memory.max_page_size).unwrap_or(usize::MAX);
    std::env::var(MAX_BUFFER_VAR)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(device, |v| v.min(device))
}

/// Whether every tensor has the element type of the first (the kernels take one float type).
fn same_dtype(ts: &[&CubeTensor]) -> bool {
    ts.iter().all(|t| t.dtype == ts[0].dtype)
}

/// Rows `lo..hi` of the batch (first) axis.
fn rows(t: &CubeTensor, lo: usize, hi: usize) -> CubeTensor {
    P::<Cb>::new(t.clone()).narrow(0, lo, hi).into_inner()
}

/// The batch rows per launch so that no buffer of `bytes_per_row` (per batch row) exceeds the
/// device's largest binding (lavapipe and WebGPU: 128 MiB); `None` if one row does not fit.
fn rows_per_launch(t: &CubeTensor, batch: usize, bytes_per_row: &[usize]) -> Option<usize> {
    let worst = bytes_per_row.iter().copied().max().unwrap_or(0).max(1);
    // Room for the regions' alignment padding.
    let limit = max_buffer(t).saturating_sub(4096);
    (worst <= limit).then(|| (limit / worst).clamp(1, batch.max(1)))
}

fn scan_args_rows(args: &ScanArgs<Cb>, lo: usize, hi: usize) -> ScanArgs<Cb> {
    ScanArgs {
        u: rows(&args.u, lo, hi),
        delta: rows(&args.delta, lo, hi),
        a: args.a.clone(),
        b: rows(&args.b, lo, hi),
        c: rows(&args.c, lo, hi),
        d: args.d.clone(),
        z: args.z.as_ref().map(|z| rows(z, lo, hi)),
        delta_bias: args.delta_bias.clone(),
        h0: rows(&args.h0, lo, hi),
        delta_softplus: args.delta_softplus,
    }
}

fn scan_inputs_ok(args: &ScanArgs<Cb>) -> bool {
    let mut ts = vec![
        &args.u,
        &args.delta,
        &args.a,
        &args.b,
        &args.c,
        &args.d,
        &args.delta_bias,
        &args.h0,
    ];
    if let Some(z) = &args.z {
        ts.push(z);
    }
    same_dtype(&ts)
}

/// The forward scan on the kernel (one launch, or one per group of batch rows when the
/// outputs would exceed the device's largest buffer), or `None` when the shape does not suit
/// the kernel.
pub(crate) fn selective_scan(args: ScanArgs<Cb>) -> Option<(CubeTensor, CubeTensor)> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    if s.batch == 0 || s.len == 0 || s.dim == 0 || !scan_inputs_ok(&args) {
        return None;
    }
    let elem = args.u.dtype.size();
    let per_row = [
        elem * s.dim * (s.len + s.state),
        elem * (2 * s.groups * s.state * s.len + s.dim * s.state),
    ];
    let step = rows_per_launch(&args.u, s.batch, &per_row)?;
    if step >= s.batch {
        return selective_scan_launch(args);
    }
    let (mut ys, mut hs) = (Vec::new(), Vec::new());
    for lo in (0..s.batch).step_by(step) {
        let hi = (lo + step).min(s.batch);
        let (y, h) = selective_scan_launch(scan_args_rows(&args, lo, hi))?;
        ys.push(y);
        hs.push(h);
    }
    Some((Cb::float_cat(ys, 0), Cb::float_cat(hs, 0)))
}

fn selective_scan_launch(args: ScanArgs<Cb>) -> Option<(CubeTensor, CubeTensor)> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let elem = args.u.dtype.size();
    let chunk = fwd_chunk(s.state, elem, shared_limit(&args.u))?;
    let total = s.batch * s.dim * s.len;
    if s.groups == 0
        || !s.dim.is_multiple_of(s.groups)
        || max_units(&args.u) < SCAN_BLOCK
        || !fits_u32(&[
            total + s.batch * s.dim * s.state,
            2 * s.batch * s.groups * s.state * s.len,
        ])
    {
        return None;
    }
    let gate = args.z.is_some();
    let u = flat(args.u);
    let delta = flat(args.delta);
    let z = match args.z {
        Some(z) => flat(z),
        None => u.clone(),
    };
    let (packed, off) = pack(vec![
        args.b,
        args.c,
        args.a,
        args.d,
        args.delta_bias,
        args.h0,
    ]);
    let regions = Regions::new(&u, &[total, s.batch * s.dim * s.state]);
    let out = regions.alloc(&u);
    let per_group = s.dim / s.groups;
    let count = CubeCount::Static(
        per_group.div_ceil(SCAN_BLOCK) as u32,
        s.groups as u32,
        s.batch as u32,
    );
    let dtype = u.dtype;
    let client = u.client.clone();
    kernels::scan_fwd_kernel::launch(
        &client,
        count,
        CubeDim::new_1d(SCAN_BLOCK as u32),
        u.into_tensor_arg(),
        delta.into_tensor_arg(),
        z.into_tensor_arg(),
        packed.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        s.dim as u32,
        s.len as u32,
        s.groups as u32,
        off[1] as u32,
        off[2] as u32,
        off[3] as u32,
        off[4] as u32,
        off[5] as u32,
        regions.offsets[1] as u32,
        s.state,
        chunk,
        gate,
        args.delta_softplus,
        dtype_to_storage_type(dtype),
    );
    Some((
        regions.view(&out, 0, &[s.batch, s.dim, s.len]),
        regions.view(&out, 1, &[s.batch, s.dim, s.state]),
    ))
}

/// The backward scan on the kernel (one launch, or one per group of batch rows when its
/// buffers would exceed the device's largest buffer), or `None` when the shape does not suit
/// the kernel.
pub(crate) fn selective_scan_backward(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Option<portable::ScanGrads<Cb>> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    if s.batch == 0 || s.len == 0 || s.dim == 0 || !scan_inputs_ok(&args) {
        return None;
    }
    if !same_dtype(&[&args.u, &dy, &dstate]) || s.groups == 0 {
        return None;
    }
    let elem = args.u.dtype.size();
    let (block, chunk) = bwd_tiling(s.state, elem, shared_limit(&args.u), max_units(&args.u))?;
    let cubes = (s.dim / s.groups).div_ceil(block);
    let per_row = [
        elem * 3 * s.dim * s.len,
        elem * (2 * s.groups * cubes * s.state * s.len
            + s.dim * s.state * (3 + s.len.div_ceil(chunk) + chunk)
            + 2 * s.dim),
    ];
    let step = rows_per_launch(&args.u, s.batch, &per_row)?;
    if step >= s.batch {
        return selective_scan_backward_launch(args, dy, dstate);
    }
    let mut parts = Vec::new();
    for lo in (0..s.batch).step_by(step) {
        let hi = (lo + step).min(s.batch);
        parts.push(selective_scan_backward_launch(
            scan_args_rows(&args, lo, hi),
            rows(&dy, lo, hi),
            rows(&dstate, lo, hi),
        )?);
    }
    let cat = |f: fn(&portable::ScanGrads<Cb>) -> CubeTensor| {
        Cb::float_cat(parts.iter().map(f).collect(), 0)
    };
    let sum = |f: fn(&portable::ScanGrads<Cb>) -> CubeTensor| {
        parts
            .iter()
            .map(f)
            .reduce(Cb::float_add)
            .expect("at least one batch group")
    };
    Some(portable::ScanGrads {
        du: cat(|g| g.du.clone()),
        ddelta: cat(|g| g.ddelta.clone()),
        da: sum(|g| g.da.clone()),
        db: cat(|g| g.db.clone()),
        dc: cat(|g| g.dc.clone()),
        dd: sum(|g| g.dd.clone()),
        dz: args
            .z
            .is_some()
            .then(|| cat(|g| g.dz.clone().expect("dz with a gate"))),
        ddelta_bias: sum(|g| g.ddelta_bias.clone()),
        dh0: cat(|g| g.dh0.clone()),
    })
}

fn selective_scan_backward_launch(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Option<portable::ScanGrads<Cb>> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let elem = args.u.dtype.size();
    let (block, chunk) = bwd_tiling(s.state, elem, shared_limit(&args.u), max_units(&args.u))?;
    let total = s.batch * s.dim * s.len;
    let per_group = s.dim.checked_div(s.groups)?;
    let cubes = per_group.div_ceil(block);
    let n_chunks = s.len.div_ceil(chunk);
    let bsd = s.batch * s.dim;
    let partial = s.batch * s.groups * cubes * s.state * s.len;
    let sizes = [
        partial,
        partial,
        bsd * s.state,
        bsd,
        bsd,
        bsd * s.state,
        bsd * n_chunks * s.state,
        bsd * chunk * s.state,
    ];
    let small_total: usize = sizes.iter().sum::<usize>() + 64 * sizes.len();
    if !s.dim.is_multiple_of(s.groups)
        || !fits_u32(&[
            3 * total,
            small_total,
            s.batch * s.groups * s.state * s.len * 2,
        ])
    {
        return None;
    }
    let gate = args.z.is_some();
    let u = flat(args.u);
    let delta = flat(args.delta);
    let z = match args.z {
        Some(z) => flat(z),
        None => u.clone(),
    };
    let dy = flat(dy);
    let (packed, off) = pack(vec![
        args.b,
        args.c,
        args.a,
        args.d,
        args.delta_bias,
        args.h0,
        dstate,
    ]);
    let big_regions = Regions::new(&u, &[total, total, if gate { total } else { 1 }]);
    let big = big_regions.alloc(&u);
    let small_regions = Regions::new(&u, &sizes);
    let small = small_regions.alloc(&u);
    let so = &small_regions.offsets;
    let count = CubeCount::Static(cubes as u32, s.groups as u32, s.batch as u32);
    let dtype = u.dtype;
    let client = u.client.clone();
    kernels::scan_bwd_kernel::launch(
        &client,
        count,
        CubeDim::new_1d(block as u32),
        u.into_tensor_arg(),
        delta.into_tensor_arg(),
        z.into_tensor_arg(),
        dy.into_tensor_arg(),
        packed.into_tensor_arg(),
        big.clone().into_tensor_arg(),
        small.clone().into_tensor_arg(),
        u32s(&[s.batch, s.dim, s.len, s.groups]),
        u32s(&[
            off[1],
            off[2],
            off[3],
            off[4],
            off[5],
            off[6],
            so[1],
            so[2],
            so[3],
            so[4],
            so[5],
            so[6],
            so[7],
            big_regions.offsets[1],
            big_regions.offsets[2],
        ]),
        s.state,
        chunk,
        block,
        gate,
        args.delta_softplus,
        dtype_to_storage_type(dtype),
    );
    let big_view = |i: usize| big_regions.view(&big, i, &[s.batch, s.dim, s.len]);
    let sum_cubes = |i: usize| -> CubeTensor {
        let p = small_regions.view(&small, i, &[s.batch, s.groups, cubes, s.state, s.len]);
        P::<Cb>::new(p)
            .sum_dim(2)
            .reshape(&[s.batch, s.groups, s.state, s.len])
            .into_inner()
    };
    let sum_batch = |i: usize, dims: &[usize]| -> CubeTensor {
        let mut full = vec![s.batch];
        full.extend_from_slice(dims);
        P::<Cb>::new(small_regions.view(&small, i, &full))
            .sum_dim(0)
            .reshape(dims)
            .into_inner()
    };
    Some(portable::ScanGrads {
        du: big_view(0),
        ddelta: big_view(1),
        da: sum_batch(2, &[s.dim, s.state]),
        db: sum_cubes(0),
        dc: sum_cubes(1),
        dd: sum_batch(3, &[s.dim]),
        dz: gate.then(|| big_view(2)),
        ddelta_bias: sum_batch(4, &[s.dim]),
        dh0: small_regions.view(&small, 5, &[s.batch, s.dim, s.state]),
    })
}

/// The decode step of the selective SSM on the kernel (see [`portable::selective_state_step`]).
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
) -> (CubeTensor, CubeTensor) {
    let sd = state.shape().to_vec();
    let groups = b.shape()[1];
    let (batch, dim, n) = (sd[0], sd[1], sd[2]);
    let mut ts = vec![&state, &x, &dt, &a, &b, &c, &d, &dt_bias];
    if let Some(z) = &z {
        ts.push(z);
    }
    if batch * dim == 0 || groups == 0 || !same_dtype(&ts) {
        return portable::selective_state_step::<Cb>(
            state,
            x,
            dt,
            a,
            b,
            c,
            d,
            z,
            dt_bias,
            dt_softplus,
        );
    }
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
    kernels::state_step_kernel::launch(
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
    (
        regions.view(&out, 0, &[batch, dim]),
        regions.view(&out, 1, &[batch, dim, n]),
    )
}

/// The decode step of a causal depthwise conv1d on the kernel.
pub(crate) fn causal_conv1d_step(
    x: CubeTensor,
    state: CubeTensor,
    weight: CubeTensor,
    bias: CubeTensor,
    silu: bool,
) -> (CubeTensor, CubeTensor) {
    let sd = state.shape().to_vec();
    let (batch, ch, k) = (sd[0], sd[1], sd[2]);
    if batch * ch * k == 0 || !same_dtype(&[&x, &state, &weight, &bias]) {
        return portable::causal_conv1d_step::<Cb>(x, state, weight, bias, silu);
    }
    let (packed, _) = pack(vec![weight, bias]);
    let x = flat(x);
    let regions = Regions::new(&x, &[batch * ch, batch * ch * k]);
    let out = regions.alloc(&x);
    let cube_dim = CubeDim::new_1d(256.min(max_units(&x)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&x.client, batch * ch, cube_dim);
    let dtype = x.dtype;
    let client = x.client.clone();
    kernels::conv_step_kernel::launch(
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
    (
        regions.view(&out, 0, &[batch, ch]),
        regions.view(&out, 1, &[batch, ch, k]),
    )
}

/// The fused Mamba decode step on the kernel, or `None` when `D` does not fit the shared
/// memory of one cube. Sizes as in [`crate::step::MambaStepDims`].
pub(crate) fn mamba_step(
    xz: CubeTensor,
    conv_state: CubeTensor,
    ssm_state: CubeTensor,
    weights: CubeTensor,
    dims: crate::step::MambaStepDims,
) -> Option<(CubeTensor, CubeTensor, CubeTensor)> {
    let crate::step::MambaStepDims {
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
    if batch * dim == 0
        || shared > shared_limit(&xz)
        || !fits_u32(&[weights.shape().num_elements()])
        || !same_dtype(&[&xz, &conv_state, &ssm_state, &weights])
    {
        return None;
    }
    let xz = flat(xz);
    let regions = Regions::new(&xz, &[batch * dim, batch * dim * width, batch * dim * n]);
    let out = regions.alloc(&xz);
    let dtype = xz.dtype;
    let client = xz.client.clone();
    kernels::mamba_step_kernel::launch(
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
    Some((
        regions.view(&out, 0, &[batch, dim]),
        regions.view(&out, 1, &[batch, dim, width]),
        regions.view(&out, 2, &[batch, dim, n]),
    ))
}

/// Residual add and RMSNorm over the last axis on the kernel (one launch): returns `x + r` (or
/// `x`) and its normalised form.
pub(crate) fn add_rms_norm(
    x: CubeTensor,
    residual: Option<CubeTensor>,
    weight: CubeTensor,
    eps: f32,
) -> (CubeTensor, CubeTensor) {
    let dims = x.shape().to_vec();
    let width = *dims.last().expect("add_rms_norm: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / width.max(1);
    let mut ts = vec![&x, &weight];
    if let Some(r) = &residual {
        ts.push(r);
    }
    if rows == 0 || width == 0 || !same_dtype(&ts) {
        return portable::add_rms_norm::<Cb>(x, residual, weight, eps);
    }
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
    kernels::add_rms_norm_kernel::launch(
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
    (regions.view(&out, 0, &dims), regions.view(&out, 1, &dims))
}

/// The fused Mamba2 decode step on the kernel, or `None` when xBC and d_inner do not fit the
/// shared memory of one cube (then the composed step runs).
pub(crate) fn mamba2_step(
    zxbcdt: CubeTensor,
    conv_state: CubeTensor,
    ssm_state: CubeTensor,
    weights: CubeTensor,
    cfg: crate::step::Mamba2StepConfig,
) -> Option<(CubeTensor, CubeTensor, CubeTensor)> {
    let ss = ssm_state.shape().to_vec();
    let cs = conv_state.shape().to_vec();
    let (batch, di, n) = (ss[0], ss[1], ss[2]);
    let (conv, width) = (cs[1], cs[2]);
    let (heads, groups) = (cfg.heads, cfg.groups);
    let cap = STEP_UNITS.min(max_units(&zxbcdt));
    let units = 1usize << cap.max(1).ilog2();
    let elem = zxbcdt.dtype.size();
    let shared = (conv + di + units + groups) * elem;
    if batch * di == 0
        || heads == 0
        || groups == 0
        || !di.is_multiple_of(heads)
        || !heads.is_multiple_of(groups)
        || shared > shared_limit(&zxbcdt)
        || !same_dtype(&[&zxbcdt, &conv_state, &ssm_state, &weights])
    {
        return None;
    }
    let zx = flat(zxbcdt);
    let regions = Regions::new(&zx, &[batch * di, batch * conv * width, batch * di * n]);
    let out = regions.alloc(&zx);
    let dtype = zx.dtype;
    let client = zx.client.clone();
    kernels::mamba2_step_kernel::launch(
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
    Some((
        regions.view(&out, 0, &[batch, di]),
        regions.view(&out, 1, &[batch, conv, width]),
        regions.view(&out, 2, &[batch, di, n]),
    ))
}

/// The SSD decay mask on the kernel (portable body for odd dtypes or empty tensors).
pub(crate) fn ssd_decay_mask(cum: CubeTensor) -> CubeTensor {
    let dims = cum.shape().to_vec();
    let q = dims[3];
    let rows = dims[..3].iter().product::<usize>();
    let total = rows * q * q;
    if total == 0 || !fits_u32(&[total]) {
        return crate::ssd::decay_mask::<Cb>(cum);
    }
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
    kernels::ssd_decay_mask_kernel::launch(
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
    Cb::float_reshape(out, Shape::from(out_dims))
}

/// The SSD inter-chunk pass on the kernel.
pub(crate) fn ssd_state_pass(
    chunk_states: CubeTensor,
    chunk_decay: CubeTensor,
    h0: CubeTensor,
) -> (CubeTensor, CubeTensor) {
    let d = chunk_states.shape().to_vec();
    let (bh, k, np) = (d[0] * d[1], d[2], d[3] * d[4]);
    if bh * k * np == 0
        || !same_dtype(&[&chunk_states, &chunk_decay, &h0])
        || !fits_u32(&[bh * (k + 1) * np + 64])
    {
        return crate::ssd::state_pass::<Cb>(chunk_states, chunk_decay, h0);
    }
    let h0_dims = h0.shape().to_vec();
    let chunk_states = flat(chunk_states);
    let regions = Regions::new(&chunk_states, &[bh * k * np, bh * np]);
    let out = regions.alloc(&chunk_states);
    let cube_dim = CubeDim::new_1d(256.min(max_units(&chunk_states)) as u32);
    let count = cubecl::calculate_cube_count_elemwise(&chunk_states.client, bh * np, cube_dim);
    let dtype = chunk_states.dtype;
    let client = chunk_states.client.clone();
    kernels::ssd_state_pass_kernel::launch(
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
    (regions.view(&out, 0, &d), regions.view(&out, 1, &h0_dims))
}

/// The rfft on Burn's CubeCL FFT (power-of-two `n`); other lengths take the DFT-matrix body.
pub(crate) fn rfft(x: CubeTensor, n: usize) -> (CubeTensor, CubeTensor) {
    use burn::signal::SignalOps;
    if !n.is_power_of_two() || n < 2 || x.shape().num_elements() == 0 {
        return crate::fft::rfft_dft::<Cb>(x, n);
    }
    let r = x.shape().num_dims() - 1;
    Cb::rfft(crate::fft::fit_last::<Cb>(x, n), r, Some(n))
}

/// The irfft on Burn's CubeCL FFT (power-of-two `n`); other lengths take the DFT-matrix body.
pub(crate) fn irfft(re: CubeTensor, im: CubeTensor, n: usize) -> CubeTensor {
    use burn::signal::SignalOps;
    if !n.is_power_of_two() || n < 2 || re.shape().num_elements() == 0 {
        return crate::fft::irfft_dft::<Cb>(re, im, n);
    }
    let r = re.shape().num_dims() - 1;
    Cb::irfft(re, im, r, Some(n))
}

/// The FFT causal convolution on Burn's CubeCL FFT, zero-padded to the power of two ≥ 2L.
pub(crate) fn causal_conv_fft(u: CubeTensor, k: CubeTensor) -> CubeTensor {
    use burn::signal::SignalOps;
    let dims = u.shape().to_vec();
    let l = dims[2];
    if u.shape().num_elements() == 0 {
        return u;
    }
    let n = (2 * l).next_power_of_two();
    let (ur, ui) = Cb::rfft(crate::fft::fit_last::<Cb>(u, n), 2, Some(n));
    let (kr, ki) = Cb::rfft(crate::fft::fit_last::<Cb>(k, n), 2, Some(n));
    let yr = Cb::float_sub(
        Cb::float_mul(ur.clone(), kr.clone()),
        Cb::float_mul(ui.clone(), ki.clone()),
    );
    let yi = Cb::float_add(Cb::float_mul(ur, ki), Cb::float_mul(ui, kr));
    P::<Cb>::new(Cb::irfft(yr, yi, 2, Some(n)))
        .narrow(2, 0, l)
        .into_inner()
}

#[cfg(test)]
mod tests {
    use super::{bwd_tiling, fwd_chunk};

    #[test]
    fn tiles_shrink_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(fwd_chunk(16, 4, kb16), Some(64));
        assert_eq!(fwd_chunk(128, 4, kb16), Some(16));
        assert_eq!(bwd_tiling(16, 4, kb16, 256), Some((32, 32)));
        // Mamba2's N = 128: 2·128·(2·4 + 8)·4 = 16 KiB.
        assert_eq!(bwd_tiling(128, 4, kb16, 256), Some((8, 4)));
        // CUDA's 48 KiB.
        assert_eq!(bwd_tiling(128, 4, 48 * 1024, 1024), Some((32, 8)));
        assert_eq!(fwd_chunk(5000, 4, kb16), None);
        assert_eq!(bwd_tiling(1000, 4, kb16, 256), None);
    }
}
