//! The selective scan's backward launcher: checks and packs the inputs, splits the batch when
//! a buffer would exceed the device's binding limit, walks long sequences in segments on
//! loop-capped devices, cuts short batches into spans ([`super::backward_spans`]), and launches
//! [`super::backward_kernel::scan_bwd_kernel()`].

use super::backward_kernel::scan_bwd_kernel;
use super::backward_spans::backward_over_spans;
use super::launch::{scan_args_rows, scan_args_steps, scan_backward_inputs_ok};
use super::plan::{backward_segment, backward_spans_wanted, bwd_tiling, equal_spans};
use crate::cube::buffers::{
    Cb, Regions, flat, loop_capped, max_units, pack, require_same_dtype, require_u32, rows,
    rows_per_launch, shared_limit, u32s,
};
use crate::cube::fallback::Unsupported;
use crate::prim::P;
use crate::scan::reference::{ScanArgs, ScanDims, ScanGrads};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The tiling of the backward kernel for this problem, or why none fits the device.
fn tiling(s: ScanDims, t: &CubeTensor) -> Result<(usize, usize), Unsupported> {
    let shared = shared_limit(t);
    bwd_tiling(s.state, t.dtype.size(), shared, max_units(t)).ok_or_else(|| {
        Unsupported::Because(format!(
            "the staged B and C and the reductions of one step (N = {}) exceed the \
             {shared}-byte shared memory",
            s.state
        ))
    })
}

/// The backward scan on the kernel (one launch, or one per group of batch rows when its
/// buffers would exceed the device's largest buffer; on devices the batch rows do not fill,
/// the sequence cut into spans walked in parallel, [`backward_over_spans`]), or why the kernel
/// cannot take it.
pub(super) fn selective_scan_backward(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Result<ScanGrads<Cb>, Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    if s.batch == 0 || s.len == 0 || s.dim == 0 {
        return Err(Unsupported::Empty);
    }
    scan_backward_inputs_ok(&args)?;
    require_same_dtype(&[&args.u, &dy, &dstate])?;
    if s.groups == 0 || !s.dim.is_multiple_of(s.groups) {
        return Err(Unsupported::Because(format!(
            "{} groups do not divide D = {}",
            s.groups, s.dim
        )));
    }
    if s.len > backward_segment(s.state) && loop_capped(&args.u) {
        return backward_in_segments(args, dy, dstate);
    }
    let spans = equal_spans(s.len, backward_spans_wanted(&args));
    if spans > 1 {
        return backward_over_spans(args, dy, dstate, spans, backward_rows);
    }
    backward_rows(args, dy, dstate)
}

/// The backward in one launch, or one per group of batch rows when its buffers would exceed
/// the device's largest buffer.
fn backward_rows(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Result<ScanGrads<Cb>, Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let elem = args.u.dtype.size();
    let (block, chunk) = tiling(s, &args.u)?;
    let cubes = (s.dim / s.groups).div_ceil(block);
    let per_row = [
        elem * 3 * s.dim * s.len,
        elem * (2 * s.groups * cubes * s.state * s.len
            + s.dim * s.state * (3 + s.len.div_ceil(chunk) + chunk)
            + 2 * s.dim),
        elem * (2 * s.groups * s.state * s.len + 2 * s.dim * s.state + s.len),
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
    let dh0 = Cb::float_cat(parts.iter().map(|g| g.dh0.clone()).collect(), 0);
    // Batch groups: every per-row gradient along the batch.
    Ok(join(&parts, 0, 0, dh0))
}

/// Partial gradients joined: the per-row, per-step ones concatenated (du, ddelta, dz, each
/// (B, D, L), along `axis`; db, dc, each (B, G, N, L), along `bc_axis`), the parameters' (A, D,
/// delta_bias) summed, `dh0` as given.
fn join(parts: &[ScanGrads<Cb>], axis: usize, bc_axis: usize, dh0: CubeTensor) -> ScanGrads<Cb> {
    let cat = |f: fn(&ScanGrads<Cb>) -> CubeTensor, dim: usize| {
        Cb::float_cat(parts.iter().map(f).collect(), dim)
    };
    let sum = |f: fn(&ScanGrads<Cb>) -> CubeTensor| {
        parts
            .iter()
            .map(f)
            .reduce(Cb::float_add)
            .expect("at least one part")
    };
    ScanGrads {
        du: cat(|g| g.du.clone(), axis),
        ddelta: cat(|g| g.ddelta.clone(), axis),
        da: sum(|g| g.da.clone()),
        db: cat(|g| g.db.clone(), bc_axis),
        dc: cat(|g| g.dc.clone(), bc_axis),
        dd: sum(|g| g.dd.clone()),
        dz: parts[0]
            .dz
            .is_some()
            .then(|| cat(|g| g.dz.clone().expect("dz with a gate"), axis)),
        ddelta_bias: sum(|g| g.ddelta_bias.clone()),
        dh0,
    }
}

/// The backward over a sequence longer than [`backward_segment`], segment by segment from the
/// last: each segment's starting state comes from a forward pass
/// over the segments before it, and the gradient reaching a segment's start is the next one's
/// final-state gradient. Per-step gradients are joined along L, the parameters' summed.
fn backward_in_segments(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Result<ScanGrads<Cb>, Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let (len, segment) = (s.len, backward_segment(s.state));
    let bounds: Vec<(usize, usize)> = (0..len)
        .step_by(segment)
        .map(|lo| (lo, (lo + segment).min(len)))
        .collect();
    let mut starts = vec![args.h0.clone()];
    for &(lo, hi) in &bounds[..bounds.len() - 1] {
        let h = starts.last().expect("one start at least").clone();
        starts.push(super::launch::selective_scan(scan_args_steps(&args, lo, hi, h))?.1);
    }
    let along = |t: &CubeTensor, dim: usize, lo: usize, hi: usize| {
        P::<Cb>::new(t.clone()).narrow(dim, lo, hi).into_inner()
    };
    let mut parts = Vec::with_capacity(bounds.len());
    let mut carried = dstate;
    for (&(lo, hi), h0) in bounds.iter().zip(starts).rev() {
        let g = selective_scan_backward(
            scan_args_steps(&args, lo, hi, h0),
            along(&dy, 2, lo, hi),
            carried,
        )?;
        carried = g.dh0.clone();
        parts.push(g);
    }
    parts.reverse();
    // Segments: the per-step gradients along L.
    Ok(join(&parts, 2, 3, carried))
}

fn selective_scan_backward_launch(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
) -> Result<ScanGrads<Cb>, Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let (block, chunk) = tiling(s, &args.u)?;
    let total = s.batch * s.dim * s.len;
    let per_group = s.dim / s.groups;
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
    require_u32(&[
        3 * total,
        small_total,
        s.batch * (2 * s.groups * s.state * s.len + 2 * s.dim * s.state + s.len)
            + s.dim * (s.state + 2),
    ])?;

    let gate = args.z.is_some();
    let has_reset = args.reset.is_some();
    let u = flat(args.u);
    let delta = flat(args.delta);
    let z = match args.z {
        Some(z) => flat(z),
        None => u.clone(),
    };
    let dy = flat(dy);
    let mut parts = vec![
        args.b,
        args.c,
        args.a,
        args.d,
        args.delta_bias,
        args.h0,
        dstate,
    ];
    parts.extend(args.reset);
    let (packed, off) = pack(parts);
    let big_regions = Regions::new(&u, &[total, total, if gate { total } else { 1 }]);
    let big = big_regions.alloc(&u);
    let small_regions = Regions::new(&u, &sizes);
    let small = small_regions.alloc(&u);
    let so = &small_regions.offsets;
    let count = CubeCount::Static(cubes as u32, s.groups as u32, s.batch as u32);
    let dtype = u.dtype;
    let client = u.client.clone();
    scan_bwd_kernel::launch(
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
            off.get(7).copied().unwrap_or(0),
        ]),
        s.state,
        chunk,
        block,
        gate,
        args.delta_softplus,
        has_reset,
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
    Ok(ScanGrads {
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
