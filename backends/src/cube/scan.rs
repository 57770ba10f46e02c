//! The selective scan's forward on the GPU: the `#[cube]` kernel and its launcher.
//!
//! One cube takes [`SCAN_BLOCK`] consecutive channels of one group of one batch row; a unit keeps
//! its channel's states in registers and walks the sequence in chunks whose B and C are staged
//! in shared memory by the whole cube.
// `usize::div_ceil` has no CubeCL expansion: the kernel spells it out.
#![allow(clippy::manual_div_ceil)]

use super::buffers::{
    Cb, Regions, flat, loop_capped, max_units, pack, require_same_dtype, require_u32, rows,
    rows_per_launch, shared_limit,
};
use super::fallback::Unsupported;
use super::math::{sigmoid_f, softplus_f};
use crate::portable::prim::P;
use crate::portable::{ScanArgs, ScanDims};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Channels per cube of the scan kernels (one unit each).
pub(super) const SCAN_BLOCK: usize = 32;
/// Steps per chunk of the forward scan (B and C staged in shared memory per chunk), at most.
const FWD_CHUNK: usize = 64;

/// The forward chunk: the longest (a power of two up to [`FWD_CHUNK`]) whose staged B and C
/// (`2 N chunk` floats) fit the device's shared memory; `None` if not even one step does.
fn fwd_chunk(state: usize, elem: usize, shared: usize) -> Option<usize> {
    (0..=FWD_CHUNK.ilog2())
        .rev()
        .map(|e| 1usize << e)
        .find(|c| 2 * state * c * elem <= shared)
}

/// Selective-scan forward.
///
/// Cube `(x, g, b)` takes `CUBE_DIM_X` consecutive channels of group `g` of batch `b`, one per
/// unit; the unit keeps its channel's `n_state` states in registers and walks the sequence in
/// chunks of `chunk` steps, the chunk's `B` and `C` of the group staged in shared memory by the
/// whole cube.
///
/// `packed` = `[B (batch, G, N, L) | C (batch, G, N, L) | A (D, N) | D (D) | delta_bias (D) |
/// h0 (batch, D, N) | reset (batch, L), when packed sequences]` at the offsets given; `out` =
/// `[y (batch, D, L) | .. | state (batch, D, N) at off_state]`. With `reset`, the state is
/// zeroed before each step whose reset entry is 1 (a new sequence starts there).
#[cube(launch)]
pub(crate) fn scan_fwd_kernel<F: Float>(
    u: &Tensor<F>,
    delta: &Tensor<F>,
    z: &Tensor<F>,
    packed: &Tensor<F>,
    out: &mut Tensor<F>,
    dim: u32,
    len: u32,
    groups: u32,
    off_c: u32,
    off_a: u32,
    off_d: u32,
    off_bias: u32,
    off_h0: u32,
    off_state: u32,
    off_reset: u32,
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
    #[comptime] reset: bool,
    #[define(F)] _dtype: ElemType,
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    let dim = dim as usize;
    let len = len as usize;
    let groups = groups as usize;
    let per_group = dim / groups;
    let g = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let cube_dim = CUBE_DIM_X as usize;
    let local = CUBE_POS_X as usize * cube_dim + unit;
    let active = local < per_group;
    let d = g * per_group + local;
    let row = b * dim + d;

    let mut bs = Shared::<[F]>::new_slice(n_state * chunk);
    let mut cs = Shared::<[F]>::new_slice(n_state * chunk);

    let mut h = Array::<F>::new(n_state);
    let mut a = Array::<F>::new(n_state);
    let mut dskip = F::new(0.0);
    let mut bias = F::new(0.0);
    if active {
        #[unroll(unroll_n)]
        for n in 0..n_state {
            h[n] = packed[off_h0 as usize + row * n_state + n];
            a[n] = packed[off_a as usize + d * n_state + n];
        }
        dskip = packed[off_d as usize + d];
        bias = packed[off_bias as usize + d];
    }
    let bc_base = (b * groups + g) * n_state * len;
    let n_chunks = (len + chunk - 1) / chunk;
    for k in 0..n_chunks {
        let t0 = k * chunk;
        let mut steps = len - t0;
        if steps > chunk {
            steps = chunk;
        }
        let mut i = unit;
        while i < n_state * chunk {
            let n = i / chunk;
            let tt = i % chunk;
            if tt < steps {
                let at = bc_base + n * len + t0 + tt;
                bs[i] = packed[at];
                cs[i] = packed[off_c as usize + at];
            }
            i += cube_dim;
        }
        sync_cube();
        if active {
            for tt in 0..steps {
                let idx = row * len + t0 + tt;
                let x = u[idx];
                let mut dt = delta[idx] + bias;
                if softplus {
                    dt = softplus_f::<F>(dt);
                }
                let dtx = dt * x;
                if reset {
                    let keep = F::new(1.0) - packed[off_reset as usize + b * len + t0 + tt];
                    #[unroll(unroll_n)]
                    for n in 0..n_state {
                        h[n] *= keep;
                    }
                }
                let mut acc = F::new(0.0);
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    let s = (dt * a[n]).exp() * h[n] + bs[n * chunk + tt] * dtx;
                    h[n] = s;
                    acc += cs[n * chunk + tt] * s;
                }
                let mut y = acc + dskip * x;
                if gate {
                    let zz = z[idx];
                    y *= zz * sigmoid_f::<F>(zz);
                }
                out[idx] = y;
            }
        }
        sync_cube();
    }
    if active {
        #[unroll(unroll_n)]
        for n in 0..n_state {
            out[off_state as usize + row * n_state + n] = h[n];
        }
    }
}

/// Rows `lo..hi` of the batch of a scan's arguments.
pub(super) fn scan_args_rows(args: &ScanArgs<Cb>, lo: usize, hi: usize) -> ScanArgs<Cb> {
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
        reset: args.reset.as_ref().map(|r| rows(r, lo, hi)),
        delta_softplus: args.delta_softplus,
    }
}

/// Whether the kernels take the scan's inputs (one float type), else why not.
pub(super) fn scan_inputs_ok(args: &ScanArgs<Cb>) -> Result<(), Unsupported> {
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
    if let Some(r) = &args.reset {
        ts.push(r);
    }
    require_same_dtype(&ts)
}

/// The longest stretch of a sequence one forward scan launch walks, for `n_state` states.
/// Mesa's llvmpipe/lavapipe (the software Vulkan of machines without a GPU) caps the loop
/// iterations of a shader invocation at about 65,535, counted over all its loops, and silently
/// stops there: measured, the forward kernel's outputs were zeros from step 55,923 on at N = 4
/// and from 42,367 at N = 16 (each step costs one iteration, plus the loops staging B and C),
/// and from about 1,000 at N = 64, where the loop over the states is no longer unrolled and
/// costs N iterations a step. On such devices ([`loop_capped`]: no physical card) longer
/// sequences run as consecutive launches, each starting from the state the previous one ended
/// in (exact: the scan is a recurrence); real GPUs walk any length in one.
pub(crate) fn max_segment(n_state: usize) -> usize {
    let rolled = if n_state > 32 { n_state } else { 0 };
    (50_000 / (2 + n_state / 16 + rolled)).min(16_384)
}

/// Steps `lo..hi` of a scan's arguments, starting from `h0`.
pub(super) fn scan_args_steps(
    args: &ScanArgs<Cb>,
    lo: usize,
    hi: usize,
    h0: CubeTensor,
) -> ScanArgs<Cb> {
    let along =
        |t: &CubeTensor, dim: usize| P::<Cb>::new(t.clone()).narrow(dim, lo, hi).into_inner();
    ScanArgs {
        u: along(&args.u, 2),
        delta: along(&args.delta, 2),
        a: args.a.clone(),
        b: along(&args.b, 3),
        c: along(&args.c, 3),
        d: args.d.clone(),
        z: args.z.as_ref().map(|z| along(z, 2)),
        delta_bias: args.delta_bias.clone(),
        h0,
        reset: args.reset.as_ref().map(|r| along(r, 1)),
        delta_softplus: args.delta_softplus,
    }
}

/// The forward scan on the kernel (one launch, or one per group of batch rows when the
/// outputs would exceed the device's largest buffer, and one per [`max_segment`] steps), or
/// why the kernel cannot take it.
pub(crate) fn selective_scan(args: ScanArgs<Cb>) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    if s.batch == 0 || s.len == 0 || s.dim == 0 {
        return Err(Unsupported::Empty);
    }
    scan_inputs_ok(&args)?;
    let segment = max_segment(s.state);
    if s.len > segment && loop_capped(&args.u) {
        let (mut ys, mut h) = (Vec::new(), args.h0.clone());
        for lo in (0..s.len).step_by(segment) {
            let hi = (lo + segment).min(s.len);
            let (y, next) = selective_scan(scan_args_steps(&args, lo, hi, h))?;
            ys.push(y);
            h = next;
        }
        return Ok((Cb::float_cat(ys, 2), h));
    }
    let elem = args.u.dtype.size();
    let per_row = [
        elem * s.dim * (s.len + s.state),
        elem * (2 * s.groups * s.state * s.len + s.dim * s.state + s.len),
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
    Ok((Cb::float_cat(ys, 0), Cb::float_cat(hs, 0)))
}

fn selective_scan_launch(args: ScanArgs<Cb>) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let elem = args.u.dtype.size();
    let shared = shared_limit(&args.u);
    let chunk = fwd_chunk(s.state, elem, shared).ok_or_else(|| {
        Unsupported::Because(format!(
            "the staged B and C of one step (N = {}) exceed the {shared}-byte shared memory",
            s.state
        ))
    })?;
    let total = s.batch * s.dim * s.len;
    if s.groups == 0 || !s.dim.is_multiple_of(s.groups) {
        return Err(Unsupported::Because(format!(
            "{} groups do not divide D = {}",
            s.groups, s.dim
        )));
    }
    if max_units(&args.u) < SCAN_BLOCK {
        return Err(Unsupported::Because(format!(
            "the device runs fewer than {SCAN_BLOCK} units per cube"
        )));
    }
    require_u32(&[
        total + s.batch * s.dim * s.state,
        s.batch * (2 * s.groups * s.state * s.len + s.len + s.dim * s.state)
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
    let mut parts = vec![args.b, args.c, args.a, args.d, args.delta_bias, args.h0];
    parts.extend(args.reset);
    let (packed, off) = pack(parts);
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
    scan_fwd_kernel::launch(
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
        off.get(6).copied().unwrap_or(0) as u32,
        s.state,
        chunk,
        gate,
        args.delta_softplus,
        has_reset,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[s.batch, s.dim, s.len]),
        regions.view(&out, 1, &[s.batch, s.dim, s.state]),
    ))
}

#[cfg(test)]
mod tests {
    use super::fwd_chunk;

    #[test]
    fn the_forward_chunk_shrinks_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(fwd_chunk(16, 4, kb16), Some(64));
        assert_eq!(fwd_chunk(128, 4, kb16), Some(16));
        assert_eq!(fwd_chunk(5000, 4, kb16), None);
    }
}
