//! The selective scan's forward on the GPU: the `#[cube]` kernel and its launcher.
//!
//! One cube takes [`SCAN_BLOCK`] consecutive channels of one group of one batch row; a unit keeps
//! its channel's states in registers and walks the sequence in chunks whose B and C are staged
//! in shared memory by the whole cube.
//!
//! When the batch rows times the channels are too few to fill the device (a batch-1 prefill:
//! 1,536 channels against the 270,000 threads an H200 keeps resident), the sequence is also cut
//! into spans walked in parallel ([`scan_spans`]), in two launches of the same kernel. The first
//! scans each span from a zero state and keeps its final state `s_k` and its decay
//! `P_k = exp(A sum(dt))` (zero where a packed sequence restarts inside it). The state is
//! linear in the state it starts from, `h_t = (prod dA) h_start + local_t`, so the second
//! launch starts span `k` from `h_k = P_(k-1) h_(k-1) + s_(k-1)` (k short steps over the
//! summaries, from `h0`) and walks it again, writing the outputs.
// `usize::div_ceil` has no CubeCL expansion: the kernel spells it out.
#![allow(clippy::manual_div_ceil)]

use super::buffers::{
    Cb, Regions, flat, loop_capped, max_buffer, max_units, pack, require_same_dtype, require_u32,
    rows, rows_per_launch, shared_limit,
};
use super::fallback::Unsupported;
use super::math::{sigmoid_f, softplus_f};
use crate::portable::prim::P;
use crate::portable::scan::widened;
use crate::portable::{ScanArgs, ScanDims};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Channels per cube of the scan kernels (one unit each).
pub(super) const SCAN_BLOCK: usize = 32;
/// Steps per chunk of the forward scan (B and C staged in shared memory per chunk), at most.
const FWD_CHUNK: usize = 64;
/// Threads one NVIDIA SM keeps resident (2,048 since Volta; the runtime reports the SMs).
const THREADS_PER_SM: usize = 2048;
/// Threads assumed resident on a hardware GPU whose runtime reports no SM count (wgpu): a
/// mid-range card (16 compute units of 2,048).
const ASSUMED_RESIDENT: usize = 32_768;
/// The fewest steps a span of the sequence-parallel forward holds (below that, the summaries'
/// pass and the second walk cost more than the parallelism gains).
const MIN_SPAN: usize = 128;

/// Spans the forward cuts the sequence into so that `channels` (batch rows x D) units fill a
/// device keeping `resident` threads (`None`: a software adapter, whose few CPU threads the
/// channels already fill): 1 (one pass) when the channels alone fill it, else as many as it
/// takes, each at least [`MIN_SPAN`] steps long.
pub(crate) fn scan_spans(channels: usize, len: usize, resident: Option<usize>) -> usize {
    let Some(resident) = resident else {
        return 1;
    };
    (resident / channels.max(1)).min(len / MIN_SPAN).max(1)
}

/// Threads the device keeps resident, for [`scan_spans`] (`None` on a software adapter).
fn resident_threads(t: &CubeTensor) -> Option<usize> {
    if loop_capped(t) {
        return None;
    }
    let sms = t.client.properties().hardware.num_streaming_multiprocessors;
    Some(sms.map_or(ASSUMED_RESIDENT, |n| n as usize * THREADS_PER_SM))
}

/// A span count set by the tests (0: none), in place of [`scan_spans`]'s.
static TEST_SPANS: AtomicUsize = AtomicUsize::new(0);

/// Sets the forward's span count whatever the device (`None`: back to [`scan_spans`]); for
/// tests of the sequence-parallel path on any device.
#[cfg(feature = "test-utils")]
pub(crate) fn set_test_spans(spans: Option<usize>) {
    TEST_SPANS.store(spans.unwrap_or(0), Ordering::Relaxed);
}

/// The forward chunk: the longest (a power of two up to [`FWD_CHUNK`]) whose staging fits the
/// device's shared memory (B and C: `2 N chunk` floats; with `stage`, u, delta and z of the
/// cube's channels: `3 SCAN_BLOCK (chunk + 1)`); `None` if not even one step does.
fn fwd_chunk(state: usize, elem: usize, shared: usize, stage: bool) -> Option<usize> {
    // Unstaged, the three staging arrays are one element each.
    let staged = |c: usize| if stage { 3 * SCAN_BLOCK * (c + 1) } else { 3 };
    (0..=FWD_CHUNK.ilog2())
        .rev()
        .map(|e| 1usize << e)
        .find(|c| (2 * state * c + staged(*c)) * elem <= shared)
}

/// Whether the forward stages u, delta and z through shared memory (coalesced loads): on
/// hardware GPUs; a software adapter (lavapipe) reads them from the CPU's caches, where the
/// extra barriers and shorter chunks cost more than they save (measured on lavapipe at B = 1,
/// D = 1536, L = 128: 40 ms staged against 29 ms). The tests force either.
fn stages_inputs(t: &CubeTensor) -> bool {
    match TEST_STAGE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => !loop_capped(t),
    }
}

/// Staging set by the tests (0: the device's rule, 1: off, 2: on).
static TEST_STAGE: AtomicUsize = AtomicUsize::new(0);

/// Makes the forward stage its inputs through shared memory, or not, whatever the device
/// (`None`: back to the rule); for tests of both paths on any device.
#[cfg(feature = "test-utils")]
pub(crate) fn set_test_staging(stage: Option<bool>) {
    TEST_STAGE.store(stage.map_or(0, |s| 1 + s as usize), Ordering::Relaxed);
}

/// Selective-scan forward.
///
/// Cube `(x, g, b * spans + k)` takes `CUBE_DIM_X` consecutive channels of group `g` of batch
/// `b` over span `k` of the sequence (steps `k * span ..`; one span of `len` steps unless
/// sequence-parallel), one unit per channel; the unit keeps its channel's `n_state` states in
/// registers and walks its span in chunks of `chunk` steps. The chunk's `B` and `C` of the
/// group are staged in shared memory by the whole cube; with `stage`, so are the `u`, `delta`
/// and `z` of the cube's `block` channels, consecutive units loading consecutive steps
/// (coalesced, as the reference CUDA kernel's block loads; each unit walking its own row of
/// `L` is a stride of `L` between neighbours), and `y` goes out the same way.
///
/// `packed` = `[B (batch, G, N, L) | C (batch, G, N, L) | A (D, N) | D (D) | delta_bias (D) |
/// h0 (batch, D, N) | reset (batch, L), when packed sequences]` at the offsets given. With
/// `reset`, the state is zeroed before each step whose reset entry is 1 (a new sequence starts
/// there).
///
/// `u`, `delta`, `z` and `y` are of the activations' float type `E` (f32, f16 or bf16; read
/// and written through casts), everything else of `F` (f32): the state, the discretisation and
/// every sum run in `F` whatever `E` is, as mamba_ssm's kernel does.
///
/// - Neither `summarise` nor `carried` (one pass): `y` (batch, D, L); `out` = the final state
///   (batch, D, N) at off_state.
/// - `summarise` (first launch of the sequence-parallel forward): each span from a zero
///   state, no outputs; `out` = `[s (batch, spans, D, N) | .. | P (batch, spans, D, N) at
///   off_state]`, the span's final state and its decay (`exp(A sum(dt))`, 0 past a reset).
/// - `carried` (second launch): span `k` starts from `h0` carried over the summaries of spans
///   `0..k` (`carry`, laid out as `summarise` writes it, `P` at `off_decay`); `y` and `out` as
///   one pass, the state written by the last span. `y` is not written by the other passes.
/// - `carried` and `starts` (for the backward): no walk; `out` = the state each span starts
///   from, (batch, spans, D, N).
// The inputs' first values are placeholders overwritten on either (comptime) path.
#[allow(unused_assignments)]
#[cube(launch)]
pub(crate) fn scan_fwd_kernel<F: Float, E: Float>(
    u: &Tensor<E>,
    delta: &Tensor<E>,
    z: &Tensor<E>,
    packed: &Tensor<F>,
    carry: &Tensor<F>,
    y: &mut Tensor<E>,
    out: &mut Tensor<F>,
    dim: u32,
    len: u32,
    groups: u32,
    span: u32,
    spans: u32,
    off_c: u32,
    off_a: u32,
    off_d: u32,
    off_bias: u32,
    off_h0: u32,
    off_state: u32,
    off_reset: u32,
    off_decay: u32,
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] block: usize,
    #[comptime] stage: bool,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
    #[comptime] reset: bool,
    #[comptime] summarise: bool,
    #[comptime] carried: bool,
    #[comptime] starts: bool,
    #[define(F, E)] _dtypes: [ElemType; 2],
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    let dim = dim as usize;
    let len = len as usize;
    let groups = groups as usize;
    let span = span as usize;
    let spans = spans as usize;
    let per_group = dim / groups;
    let g = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize / spans;
    let k_span = CUBE_POS_Z as usize % spans;
    let unit = UNIT_POS_X as usize;
    let cube_dim = CUBE_DIM_X as usize;
    let local = CUBE_POS_X as usize * cube_dim + unit;
    let active = local < per_group;
    let d = g * per_group + local;
    let row = b * dim + d;
    let t_begin = k_span * span;
    let mut t_end = t_begin + span;
    if t_end > len {
        t_end = len;
    }
    // Where span k_span's summary is (in `out` when summarising, in `carry` when carried).
    let summary_at = ((b * spans + k_span) * dim + d) * n_state;

    let mut bs = Shared::<[F]>::new_slice(n_state * chunk);
    let mut cs = Shared::<[F]>::new_slice(n_state * chunk);
    // The chunk's u, delta (and z) of the cube's channels, a row of `stride` per channel (one
    // more than the chunk, so that the units reading their own rows at one step hit distinct
    // banks); y goes back through `us` once its u is read.
    let stride = comptime!(chunk + 1);
    let staged = comptime!(if stage { block * (chunk + 1) } else { 1 });
    let mut us = Shared::<[F]>::new_slice(staged);
    let mut ds = Shared::<[F]>::new_slice(staged);
    let mut zs = Shared::<[F]>::new_slice(comptime!(if stage && gate { staged } else { 1 }));

    let mut h = Array::<F>::new(n_state);
    let mut a = Array::<F>::new(n_state);
    let mut dskip = F::new(0.0);
    let mut bias = F::new(0.0);
    // The span's sum of steps, and 0 once a sequence restarts in it (summarise only).
    let mut dt_sum = F::new(0.0);
    let mut alive = F::new(1.0);
    if active {
        #[unroll(unroll_n)]
        for n in 0..n_state {
            a[n] = packed[off_a as usize + d * n_state + n];
            if summarise {
                h[n] = F::new(0.0);
            } else {
                h[n] = packed[off_h0 as usize + row * n_state + n];
            }
        }
        if carried {
            for k in 0..k_span {
                let at = ((b * spans + k) * dim + d) * n_state;
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    h[n] = carry[off_decay as usize + at + n] * h[n] + carry[at + n];
                }
            }
        }
        dskip = packed[off_d as usize + d];
        bias = packed[off_bias as usize + d];
    }
    let bc_base = (b * groups + g) * n_state * len;
    // The cube's first channel (local to the group) and its first row.
    let cube_local = CUBE_POS_X as usize * cube_dim;
    let cube_row = b * dim + g * per_group + cube_local;
    let mut n_chunks = (t_end - t_begin + chunk - 1) / chunk;
    if starts {
        n_chunks = 0;
    }
    for k in 0..n_chunks {
        let t0 = t_begin + k * chunk;
        let mut steps = t_end - t0;
        if steps > chunk {
            steps = chunk;
        }
        // Staging by consecutive units along the sequence (coalesced loads).
        let mut i = unit;
        while i < n_state * chunk {
            let n = i / chunk;
            let tt = i % chunk;
            if tt < steps {
                let at = bc_base + n * len + t0 + tt;
                bs[i] = packed[at];
                if !summarise {
                    cs[i] = packed[off_c as usize + at];
                }
            }
            i += cube_dim;
        }
        if stage {
            let mut j = unit;
            while j < block * chunk {
                let ch = j / chunk;
                let tt = j % chunk;
                if tt < steps && cube_local + ch < per_group {
                    let idx = (cube_row + ch) * len + t0 + tt;
                    us[ch * stride + tt] = F::cast_from(u[idx]);
                    ds[ch * stride + tt] = F::cast_from(delta[idx]);
                    if gate && !summarise {
                        zs[ch * stride + tt] = F::cast_from(z[idx]);
                    }
                }
                j += cube_dim;
            }
        }
        sync_cube();
        if active {
            let mine = unit * stride;
            for tt in 0..steps {
                let idx = row * len + t0 + tt;
                let mut x = F::new(0.0);
                let mut dt = bias;
                if stage {
                    x = us[mine + tt];
                    dt += ds[mine + tt];
                } else {
                    x = F::cast_from(u[idx]);
                    dt += F::cast_from(delta[idx]);
                }
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
                    if summarise {
                        alive *= keep;
                    }
                }
                if summarise {
                    dt_sum += dt;
                    #[unroll(unroll_n)]
                    for n in 0..n_state {
                        h[n] = (dt * a[n]).exp() * h[n] + bs[n * chunk + tt] * dtx;
                    }
                } else {
                    let mut acc = F::new(0.0);
                    #[unroll(unroll_n)]
                    for n in 0..n_state {
                        let s = (dt * a[n]).exp() * h[n] + bs[n * chunk + tt] * dtx;
                        h[n] = s;
                        acc += cs[n * chunk + tt] * s;
                    }
                    let mut yt = acc + dskip * x;
                    if gate {
                        let mut zz = F::new(0.0);
                        if stage {
                            zz = zs[mine + tt];
                        } else {
                            zz = F::cast_from(z[idx]);
                        }
                        yt *= zz * sigmoid_f::<F>(zz);
                    }
                    if stage {
                        us[mine + tt] = yt;
                    } else {
                        y[idx] = E::cast_from(yt);
                    }
                }
            }
        }
        sync_cube();
        // The chunk's outputs back by consecutive units (coalesced stores); each unit writes
        // what it staged, so the next chunk's staging needs no barrier before it.
        if stage && !summarise {
            let mut o = unit;
            while o < block * chunk {
                let ch = o / chunk;
                let tt = o % chunk;
                if tt < steps && cube_local + ch < per_group {
                    y[(cube_row + ch) * len + t0 + tt] = E::cast_from(us[ch * stride + tt]);
                }
                o += cube_dim;
            }
        }
    }
    if active {
        if starts {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                out[summary_at + n] = h[n];
            }
        } else if summarise {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                out[summary_at + n] = h[n];
                out[off_state as usize + summary_at + n] = alive * (a[n] * dt_sum).exp();
            }
        } else if k_span + 1 == spans {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                out[off_state as usize + row * n_state + n] = h[n];
            }
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

/// Whether the forward kernel takes the scan's inputs, else why not: the activations (`u`,
/// `delta`, `B`, `C`, `z`) of one float type (f32, f16 or bf16), the parameters, the initial
/// state and the reset mask f32.
pub(super) fn scan_inputs_ok(args: &ScanArgs<Cb>) -> Result<(), Unsupported> {
    let mut acts = vec![&args.u, &args.delta, &args.b, &args.c];
    acts.extend(&args.z);
    require_same_dtype(&acts)?;
    let mut params = vec![&args.a, &args.d, &args.delta_bias, &args.h0];
    params.extend(&args.reset);
    require_same_dtype(&params)?;
    if args.a.dtype != DType::F32 {
        return Err(Unsupported::Because(format!(
            "its parameters and state are {:?}; the kernel keeps them in f32",
            args.a.dtype
        )));
    }
    Ok(())
}

/// Whether the backward kernels take the scan's inputs (every one f32), else why not.
pub(super) fn scan_backward_inputs_ok(args: &ScanArgs<Cb>) -> Result<(), Unsupported> {
    scan_inputs_ok(args)?;
    require_same_dtype(&[&args.u, &args.a])
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
    // Per step: the step itself, staging and storing u/delta/z/y, and B and C.
    (50_000 / (4 + n_state / 16 + rolled)).min(16_384)
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
    // Bytes per batch row of the largest buffers: y (the activations' type) with the state,
    // and the packed parameters (f32, B and C included).
    let (elem, f32s) = (args.u.dtype.size(), std::mem::size_of::<f32>());
    let per_row = [
        s.dim * (elem * s.len + f32s * s.state),
        f32s * (2 * s.groups * s.state * s.len + s.dim * s.state + s.len),
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

/// What one launch of [`scan_fwd_kernel`] does.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// The whole sequence, or a span from the summaries carried over (`carried`).
    Outputs { carried: bool },
    /// Each span from a zero state: its final state and decay.
    Summarise,
    /// The state at each span's start, carried over the summaries; no walk.
    Starts,
}

/// A forward scan's inputs made ready for [`scan_fwd_kernel`] (checked, flat, packed), cut
/// into `spans` spans of `span` steps.
struct Forward {
    s: ScanDims,
    u: CubeTensor,
    delta: CubeTensor,
    z: CubeTensor,
    packed: CubeTensor,
    off: Vec<usize>,
    chunk: usize,
    stage: bool,
    span: usize,
    spans: usize,
    gate: bool,
    softplus: bool,
    reset: bool,
}

impl Forward {
    /// `spans`: `None` for the rule ([`scan_spans`], or the tests' count); the count is lowered
    /// so that the summaries fit one binding and the spans are as equal as they can be.
    fn prepare(args: ScanArgs<Cb>, spans: Option<usize>) -> Result<Self, Unsupported> {
        let s = ScanDims::of::<Cb>(&args.u, &args.b);
        // The staged chunks (B, C, u, delta, z) are held in shared memory as f32.
        let elem = std::mem::size_of::<f32>();
        let shared = shared_limit(&args.u);
        let stage = stages_inputs(&args.u);
        let chunk = fwd_chunk(s.state, elem, shared, stage).ok_or_else(|| {
            Unsupported::Because(format!(
                "the staged B and C of one step (N = {}) exceed the {shared}-byte shared memory",
                s.state
            ))
        })?;
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
            s.batch * s.dim * (s.len + s.state),
            s.batch * (2 * s.groups * s.state * s.len + s.len + s.dim * s.state)
                + s.dim * (s.state + 2),
        ])?;
        let spans = spans.unwrap_or_else(|| forward_spans(&args.u, s));
        // The summaries (two of batch x spans x D x N) must fit one binding and 32-bit indexing.
        let per_span = 2 * s.batch * s.dim * s.state;
        let spans = spans
            .min((max_buffer(&args.u).saturating_sub(4096) / (per_span * elem)).max(1))
            .min((u32::MAX as usize / per_span).max(1))
            .clamp(1, s.len);
        // Equal spans (the last one shorter), none empty.
        let span = s.len.div_ceil(spans);
        let spans = s.len.div_ceil(span);
        // B and C join the f32 parameters (they are small: N per step against D).
        let mut parts = vec![
            widened::<Cb>(args.b),
            widened::<Cb>(args.c),
            args.a,
            args.d,
            args.delta_bias,
            args.h0,
        ];
        let reset = args.reset.is_some();
        parts.extend(args.reset);
        let (packed, off) = pack(parts);
        let u = flat(args.u);
        let gate = args.z.is_some();
        Ok(Self {
            s,
            delta: flat(args.delta),
            z: args.z.map_or_else(|| u.clone(), flat),
            gate,
            u,
            packed,
            off,
            chunk,
            stage,
            span,
            spans,
            softplus: args.delta_softplus,
            reset,
        })
    }

    /// One launch: `carry` (the summaries, decays at `off_decay`) into `y` and `out`, whose
    /// second region starts at `off_state`.
    fn launch(
        &self,
        pass: Pass,
        carry: &CubeTensor,
        y: &CubeTensor,
        out: &CubeTensor,
        off_state: usize,
        off_decay: usize,
    ) {
        let s = self.s;
        let count = CubeCount::Static(
            (s.dim / s.groups).div_ceil(SCAN_BLOCK) as u32,
            s.groups as u32,
            (s.batch * self.spans) as u32,
        );
        let off = &self.off;
        scan_fwd_kernel::launch(
            &self.u.client,
            count,
            CubeDim::new_1d(SCAN_BLOCK as u32),
            self.u.clone().into_tensor_arg(),
            self.delta.clone().into_tensor_arg(),
            self.z.clone().into_tensor_arg(),
            self.packed.clone().into_tensor_arg(),
            carry.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            s.dim as u32,
            s.len as u32,
            s.groups as u32,
            self.span as u32,
            self.spans as u32,
            off[1] as u32,
            off[2] as u32,
            off[3] as u32,
            off[4] as u32,
            off[5] as u32,
            off_state as u32,
            off.get(6).copied().unwrap_or(0) as u32,
            off_decay as u32,
            s.state,
            self.chunk,
            SCAN_BLOCK,
            self.stage,
            self.gate,
            self.softplus,
            self.reset,
            pass == Pass::Summarise,
            matches!(pass, Pass::Outputs { carried: true } | Pass::Starts),
            pass == Pass::Starts,
            [
                dtype_to_storage_type(self.packed.dtype),
                dtype_to_storage_type(self.u.dtype),
            ],
        );
    }

    /// The summaries launch: one buffer holding each span's final state from zero and its
    /// decay, (batch, spans, D, N) each, and the decays' offset.
    fn summaries(&self) -> (CubeTensor, Regions) {
        let each = self.s.batch * self.spans * self.s.dim * self.s.state;
        let regions = Regions::new(&self.packed, &[each, each]);
        let buf = regions.alloc(&self.packed);
        let no_y = self.no_outputs();
        self.launch(
            Pass::Summarise,
            &self.packed,
            &no_y,
            &buf,
            regions.offsets[1],
            0,
        );
        (buf, regions)
    }

    /// A stand-in for `y` in the launches that write none (a distinct buffer: one bound
    /// writable must not alias another binding).
    fn no_outputs(&self) -> CubeTensor {
        Regions::new(&self.u, &[1]).alloc(&self.u)
    }
}

/// The span count of the rule for this device and problem, or the tests' count.
fn forward_spans(u: &CubeTensor, s: ScanDims) -> usize {
    match TEST_SPANS.load(Ordering::Relaxed) {
        0 => scan_spans(s.batch * s.dim, s.len, resident_threads(u)),
        forced => forced,
    }
}

/// The span count the sequence-parallel backward would take for these inputs (the forward's
/// rule), before it is made to divide the length.
pub(super) fn backward_spans_wanted(args: &ScanArgs<Cb>) -> usize {
    forward_spans(&args.u, ScanDims::of::<Cb>(&args.u, &args.b))
}

fn selective_scan_launch(args: ScanArgs<Cb>) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let f = Forward::prepare(args, None)?;
    let s = f.s;
    // y in the activations' type, the state in f32.
    let y_regions = Regions::new(&f.u, &[s.batch * s.dim * s.len]);
    let y = y_regions.alloc(&f.u);
    let state_regions = Regions::new(&f.packed, &[s.batch * s.dim * s.state]);
    let state = state_regions.alloc(&f.packed);
    if f.spans > 1 {
        let (carry, summaries) = f.summaries();
        let pass = Pass::Outputs { carried: true };
        f.launch(pass, &carry, &y, &state, 0, summaries.offsets[1]);
    } else {
        let pass = Pass::Outputs { carried: false };
        f.launch(pass, &f.packed, &y, &state, 0, 0);
    }
    Ok((
        y_regions.view(&y, 0, &[s.batch, s.dim, s.len]),
        state_regions.view(&state, 0, &[s.batch, s.dim, s.state]),
    ))
}

/// For the sequence-parallel backward: with the sequence cut into `spans` spans of equal
/// length, the state at each span's start and each span's decay `P` (both (batch, spans, D,
/// N)): two launches (the summaries, then the starts carried over them).
pub(super) fn span_starts(
    args: ScanArgs<Cb>,
    spans: usize,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let f = Forward::prepare(args, Some(spans))?;
    if f.spans != spans || f.span * spans != f.s.len {
        return Err(Unsupported::Because(format!(
            "{spans} equal spans of L = {} do not fit the device",
            f.s.len
        )));
    }
    let (carry, summaries) = f.summaries();
    let dims = [f.s.batch, spans, f.s.dim, f.s.state];
    let starts_regions = Regions::new(&f.packed, &[dims.iter().product()]);
    let starts = starts_regions.alloc(&f.packed);
    let no_y = f.no_outputs();
    f.launch(
        Pass::Starts,
        &carry,
        &no_y,
        &starts,
        0,
        summaries.offsets[1],
    );
    Ok((
        starts_regions.view(&starts, 0, &dims),
        summaries.view(&carry, 1, &dims),
    ))
}

#[cfg(test)]
mod tests {
    use super::{fwd_chunk, scan_spans};

    #[test]
    fn spans_fill_the_device_only_when_the_channels_do_not() {
        // An H200 (132 SMs of 2,048 threads): mamba-130m's 1,536 channels at batch 1 over
        // 2,048 steps take 16 spans of 128; at batch 256 the channels fill it alone.
        let h200 = Some(132 * 2048);
        assert_eq!(scan_spans(1536, 2048, h200), 16);
        assert_eq!(scan_spans(1536, 65_536, h200), 176);
        assert_eq!(scan_spans(256 * 1536, 2048, h200), 1);
        // Too short to cut, or a software adapter: one pass.
        assert_eq!(scan_spans(1536, 200, h200), 1);
        assert_eq!(scan_spans(4, 1 << 20, None), 1);
        assert_eq!(scan_spans(0, 1024, h200), 8);
    }

    #[test]
    fn the_forward_chunk_shrinks_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(fwd_chunk(16, 4, kb16, true), Some(16));
        assert_eq!(fwd_chunk(128, 4, kb16, true), Some(8));
        assert_eq!(fwd_chunk(5000, 4, kb16, true), None);
        // CUDA's 48 KiB of static shared memory.
        assert_eq!(fwd_chunk(16, 4, 48 * 1024, true), Some(64));
        assert_eq!(fwd_chunk(16, 2, kb16, true), Some(32));
        // Unstaged: B and C alone.
        assert_eq!(fwd_chunk(16, 4, kb16, false), Some(64));
        assert_eq!(fwd_chunk(128, 4, kb16, false), Some(8));
        // Lavapipe's 32 KiB at N = 128: 32 steps would leave no room for the placeholders.
        assert_eq!(fwd_chunk(128, 4, 32 * 1024, false), Some(16));
    }
}
