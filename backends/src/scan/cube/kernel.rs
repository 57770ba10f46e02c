//! The selective scan's forward `#[cube]` kernel; its launcher is [`super::launch`], the sizes
//! it is launched with (chunk, staging, spans) come from [`super::plan`].
//!
//! One cube takes [`super::plan::SCAN_BLOCK`] consecutive channels of one group of one batch
//! row; a unit keeps its channel's states in registers and walks the sequence in chunks whose B
//! and C are staged in shared memory by the whole cube.
//!
//! When the sequence is cut into spans walked in parallel ([`super::plan::scan_spans`]), the
//! same kernel runs twice. The first launch scans each span from a zero state and keeps its
//! final state `s_k` and its decay `P_k = exp(A sum(dt))` (zero where a packed sequence
//! restarts inside it). The state is linear in the state it starts from,
//! `h_t = (prod dA) h_start + local_t`, so the second launch starts span `k` from
//! `h_k = P_(k-1) h_(k-1) + s_(k-1)` (k short steps over the summaries, from `h0`) and walks it
//! again, writing the outputs.
// `usize::div_ceil` has no CubeCL expansion: the kernel spells it out.
#![allow(clippy::manual_div_ceil)]

use crate::cube::math::{sigmoid_f, softplus_f};
use cubecl::prelude::*;

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
