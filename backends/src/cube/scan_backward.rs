//! The selective scan's backward on the GPU: the `#[cube]` kernel (a reverse scan recomputing
//! the forward states chunk by chunk) and its launcher.
#![allow(clippy::manual_div_ceil)]

use super::buffers::{
    Cb, Regions, flat, max_units, pack, require_same_dtype, require_u32, rows, rows_per_launch,
    shared_limit, u32s,
};
use super::fallback::Unsupported;
use super::math::{sigmoid_f, softplus_f};
use super::scan::{SCAN_BLOCK, scan_args_rows, scan_args_steps, scan_backward_inputs_ok};
use super::scan_backward_spans::{backward_over_spans, equal_spans};
use crate::portable::prim::P;
use crate::portable::{ScanArgs, ScanDims, ScanGrads};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Steps per chunk of the backward scan (the states recomputed per chunk), at most.
const BWD_CHUNK: usize = 32;

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

/// Selective-scan backward: a reverse scan recomputing the forward states chunk by chunk.
///
/// Same grid as the forward. Each unit first runs the forward over its channel, leaving the state
/// at every chunk start in the scratch part of `small`; then, chunk by chunk from the end, it
/// recomputes the chunk's states (scratch again) and walks them backwards. The per-channel
/// gradients (du, ddelta, dz) are written directly; dB and dC, sums over the channels of a group,
/// are reduced over the cube in shared memory at each step, leaving one partial per cube for the
/// host to add up; dA, dD and ddelta_bias are summed over the sequence in registers, leaving one
/// partial per batch row.
///
/// `packed` = forward's `packed` (without the reset) followed by `dstate (batch, D, N)` at
/// `off_dstate` and, with `reset`, the reset mask (batch, L) at `off_reset`: the state is zeroed
/// before each step whose entry is 1, so no adjoint flows back through that step into the state;
/// `big` = `[du | ddelta | dz]`, each (batch, D, L), at 0 and the last two offsets; `small` = `[dB partials (batch, G, cubes, N,
/// L) | dC partials | dA (batch, D, N) | dD (batch, D) | dbias (batch, D) | dh0 (batch, D, N) |
/// checkpoints (batch, chunks, N, D) | chunk states (batch, chunk, N, D)]` at the offsets in
/// `offs`.
#[cube(launch)]
pub(crate) fn scan_bwd_kernel<F: Float>(
    u: &Tensor<F>,
    delta: &Tensor<F>,
    z: &Tensor<F>,
    dy: &Tensor<F>,
    packed: &Tensor<F>,
    big: &mut Tensor<F>,
    small: &mut Tensor<F>,
    dims: Sequence<u32>,
    offs: Sequence<u32>,
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] block: usize,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
    #[comptime] reset: bool,
    #[define(F)] _dtype: ElemType,
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    // dims: batch, dim, len, groups (the batch comes from the grid)
    let dim = dims[1] as usize;
    let len = dims[2] as usize;
    let groups = dims[3] as usize;
    // packed offsets
    let off_c = offs[0] as usize;
    let off_a = offs[1] as usize;
    let off_d = offs[2] as usize;
    let off_bias = offs[3] as usize;
    let off_h0 = offs[4] as usize;
    let off_dstate = offs[5] as usize;
    // small offsets
    let off_pdc = offs[6] as usize;
    let off_da = offs[7] as usize;
    let off_dd = offs[8] as usize;
    let off_dbias = offs[9] as usize;
    let off_dh0 = offs[10] as usize;
    let off_ckpt = offs[11] as usize;
    let off_states = offs[12] as usize;
    // big offsets
    let off_ddelta = offs[13] as usize;
    let off_dz = offs[14] as usize;
    // the reset mask (when `reset`)
    let off_reset = offs[15] as usize;

    let per_group = dim / groups;
    let g = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let cube_dim = CUBE_DIM_X as usize;
    let cubes = CUBE_COUNT_X as usize;
    let local = CUBE_POS_X as usize * cube_dim + unit;
    let active = local < per_group;
    let d = g * per_group + local;
    let row = b * dim + d;
    let n_chunks = (len + chunk - 1) / chunk;

    let mut bs = Shared::<[F]>::new_slice(n_state * chunk);
    let mut cs = Shared::<[F]>::new_slice(n_state * chunk);
    let mut red = Shared::<[F]>::new_slice(2 * n_state * block);
    let mut acc = Shared::<[F]>::new_slice(2 * n_state * chunk);

    let mut h = Array::<F>::new(n_state);
    let mut a = Array::<F>::new(n_state);
    let mut gh = Array::<F>::new(n_state);
    let mut da_acc = Array::<F>::new(n_state);
    let mut dskip = F::new(0.0);
    let mut bias = F::new(0.0);
    let bc_base = (b * groups + g) * n_state * len;
    if active {
        #[unroll(unroll_n)]
        for n in 0..n_state {
            h[n] = packed[off_h0 + row * n_state + n];
            a[n] = packed[off_a + d * n_state + n];
            gh[n] = packed[off_dstate + row * n_state + n];
            da_acc[n] = F::new(0.0);
        }
        dskip = packed[off_d + d];
        bias = packed[off_bias + d];
        // Forward pass: the state at each chunk start.
        for k in 0..n_chunks {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                small[off_ckpt + ((b * n_chunks + k) * n_state + n) * dim + d] = h[n];
            }
            let t0 = k * chunk;
            let mut t1 = t0 + chunk;
            if t1 > len {
                t1 = len;
            }
            for t in t0..t1 {
                let idx = row * len + t;
                let mut dt = delta[idx] + bias;
                if softplus {
                    dt = softplus_f::<F>(dt);
                }
                let dtx = dt * u[idx];
                if reset {
                    let keep = F::new(1.0) - packed[off_reset + b * len + t];
                    #[unroll(unroll_n)]
                    for n in 0..n_state {
                        h[n] *= keep;
                    }
                }
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    h[n] = (dt * a[n]).exp() * h[n] + packed[bc_base + n * len + t] * dtx;
                }
            }
        }
    }
    let mut dd_acc = F::new(0.0);
    let mut dbias_acc = F::new(0.0);
    for kk in 0..n_chunks {
        let k = n_chunks - 1 - kk;
        let t0 = k * chunk;
        let mut steps = len - t0;
        if steps > chunk {
            steps = chunk;
        }
        // Stage the chunk's B and C.
        let mut i = unit;
        while i < n_state * chunk {
            let n = i / chunk;
            let tt = i % chunk;
            if tt < steps {
                let at = bc_base + n * len + t0 + tt;
                bs[i] = packed[at];
                cs[i] = packed[off_c + at];
            }
            i += cube_dim;
        }
        // Recompute the chunk's states: states[tt] = h after step t0 + tt.
        if active {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                h[n] = small[off_ckpt + ((b * n_chunks + k) * n_state + n) * dim + d];
            }
            for tt in 0..steps {
                let idx = row * len + t0 + tt;
                let mut dt = delta[idx] + bias;
                if softplus {
                    dt = softplus_f::<F>(dt);
                }
                let dtx = dt * u[idx];
                if reset {
                    let keep = F::new(1.0) - packed[off_reset + b * len + t0 + tt];
                    #[unroll(unroll_n)]
                    for n in 0..n_state {
                        h[n] *= keep;
                    }
                }
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    h[n] = (dt * a[n]).exp() * h[n] + packed[bc_base + n * len + t0 + tt] * dtx;
                    small[off_states + ((b * chunk + tt) * n_state + n) * dim + d] = h[n];
                }
            }
        }
        sync_cube();
        for ii in 0..steps {
            let tt = steps - 1 - ii;
            if active {
                let idx = row * len + t0 + tt;
                let x = u[idx];
                let raw = delta[idx] + bias;
                let mut dt = raw;
                if softplus {
                    dt = softplus_f::<F>(raw);
                }
                let mut pre = dskip * x;
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    pre += cs[n * chunk + tt]
                        * small[off_states + ((b * chunk + tt) * n_state + n) * dim + d];
                }
                let dyv = dy[idx];
                let mut gy = dyv;
                if gate {
                    let zz = z[idx];
                    let sg = sigmoid_f::<F>(zz);
                    big[off_dz + idx] = dyv * pre * sg * (F::new(1.0) + zz * (F::new(1.0) - sg));
                    gy = dyv * zz * sg;
                }
                dd_acc += gy * x;
                // 0 where a sequence starts at this step: the previous state does not enter it.
                let mut keep = F::new(1.0);
                if reset {
                    keep -= packed[off_reset + b * len + t0 + tt];
                }
                let mut gb = F::new(0.0);
                let mut ddt = F::new(0.0);
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    let h_t = small[off_states + ((b * chunk + tt) * n_state + n) * dim + d];
                    let stored = if tt > 0 {
                        small[off_states + ((b * chunk + tt - 1) * n_state + n) * dim + d]
                    } else {
                        small[off_ckpt + ((b * n_chunks + k) * n_state + n) * dim + d]
                    };
                    let h_prev = keep * stored;
                    let bn = bs[n * chunk + tt];
                    let gn = gh[n] + cs[n * chunk + tt] * gy;
                    let dan = (dt * a[n]).exp();
                    let gda = gn * h_prev * dan;
                    da_acc[n] += gda * dt;
                    ddt += gda * a[n];
                    gb += gn * bn;
                    red[n * cube_dim + unit] = gn * dt * x;
                    red[(n_state + n) * cube_dim + unit] = gy * h_t;
                    gh[n] = gn * dan * keep;
                }
                ddt += gb * x;
                big[idx] = gb * dt + gy * dskip;
                let mut ddelta = ddt;
                if softplus {
                    ddelta = ddt * sigmoid_f::<F>(raw);
                }
                big[off_ddelta + idx] = ddelta;
                dbias_acc += ddelta;
            } else {
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    red[n * cube_dim + unit] = F::new(0.0);
                    red[(n_state + n) * cube_dim + unit] = F::new(0.0);
                }
            }
            sync_cube();
            let mut j = unit;
            while j < 2 * n_state {
                let mut s = F::new(0.0);
                for w in 0..cube_dim {
                    s += red[j * cube_dim + w];
                }
                acc[j * chunk + tt] = s;
                j += cube_dim;
            }
            sync_cube();
        }
        // Flush the chunk's dB and dC partials of this cube.
        let cube_x = CUBE_POS_X as usize;
        let mut i = unit;
        while i < 2 * n_state * chunk {
            let j = i / chunk;
            let tt = i % chunk;
            if tt < steps {
                let which = j / n_state;
                let n = j % n_state;
                let at = (((b * groups + g) * cubes + cube_x) * n_state + n) * len + t0 + tt;
                small[which * off_pdc + at] = acc[i];
            }
            i += cube_dim;
        }
        sync_cube();
    }
    if active {
        #[unroll(unroll_n)]
        for n in 0..n_state {
            small[off_da + row * n_state + n] = da_acc[n];
            small[off_dh0 + row * n_state + n] = gh[n];
        }
        small[off_dd + row] = dd_acc;
        small[off_dbias + row] = dbias_acc;
    }
}

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
pub(crate) fn selective_scan_backward(
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
    if s.len > backward_segment(s.state) && super::buffers::loop_capped(&args.u) {
        return backward_in_segments(args, dy, dstate);
    }
    let spans = equal_spans(s.len, super::scan::backward_spans_wanted(&args));
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

/// The longest stretch one backward launch walks, for `n_state` states: the backward kernel
/// loops several times per step (the chunk's states recomputed, then the reverse pass), so
/// lavapipe's cap on shader loops (see [`super::scan::max_segment`]) bites sooner; measured, at
/// N = 4 the gradients were wrong from L = 16,384 on and right at 10,000, at N = 64 (the state
/// loops not unrolled) wrong at 200 and right at 100.
fn backward_segment(n_state: usize) -> usize {
    let rolled = if n_state > 32 { 8 * n_state } else { 0 };
    (50_000 / (6 + n_state / 8 + rolled)).min(8_192)
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
        starts.push(super::scan::selective_scan(scan_args_steps(&args, lo, hi, h))?.1);
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

#[cfg(test)]
mod tests {
    use super::bwd_tiling;

    #[test]
    fn the_backward_tiles_shrink_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(bwd_tiling(16, 4, kb16, 256), Some((32, 32)));
        // Mamba2's N = 128: 2·128·(2·4 + 8)·4 = 16 KiB.
        assert_eq!(bwd_tiling(128, 4, kb16, 256), Some((8, 4)));
        // CUDA's 48 KiB.
        assert_eq!(bwd_tiling(128, 4, 48 * 1024, 1024), Some((32, 8)));
        assert_eq!(bwd_tiling(1000, 4, kb16, 256), None);
    }
}
