//! The `#[cube]` kernels: written once, compiled by CubeCL to WGSL (wgpu), SPIR-V (vulkan), CUDA
//! and HIP.
//!
//! Every kernel reads flat, contiguous buffers and takes at most seven storage bindings (some
//! adapters bind only eight per kernel, and CubeCL keeps one for itself): small inputs travel
//! packed in one buffer, several outputs share one buffer and are cut into views afterwards. The
//! packed layouts are described by the host launchers in [`super`].
#![allow(clippy::too_many_arguments)]
// `usize::div_ceil` has no CubeCL expansion: the kernels spell it out.
#![allow(clippy::manual_div_ceil)]

use cubecl::prelude::*;

/// `log(1 + exp(x))`, accurate for negative `x` (through `log1p`) and overflow-free for large `x`.
#[cube]
pub(crate) fn softplus_f<F: Float>(x: F) -> F {
    if x > F::new(20.0) { x } else { x.exp().log1p() }
}

/// `1 / (1 + exp(-x))`.
#[cube]
pub(crate) fn sigmoid_f<F: Float>(x: F) -> F {
    F::new(1.0) / (F::new(1.0) + (-x).exp())
}

/// One causal conv step of one channel: the channel's window (the last `width` inputs, `state`
/// from `row * width`, then `x`) shifted into `out` at `off_state + row * width`; returns
/// `bias + Σ_k filters[c, k] · window[k]` (filters (C, width) at the start of `filters`).
#[cube]
fn conv_window_step<F: Float>(
    state: &Tensor<F>,
    x: F,
    filters: &Tensor<F>,
    out: &mut Tensor<F>,
    row: usize,
    c: usize,
    off_state: usize,
    bias: F,
    #[comptime] width: usize,
) -> F {
    let mut acc = bias;
    #[unroll]
    for k in 0..width {
        let v = if k + 1 < width {
            state[row * width + k + 1]
        } else {
            x
        };
        out[off_state + row * width + k] = v;
        acc += filters[c * width + k] * v;
    }
    acc
}

/// Selective-scan forward.
///
/// Cube `(x, g, b)` takes `CUBE_DIM_X` consecutive channels of group `g` of batch `b`, one per
/// unit; the unit keeps its channel's `n_state` states in registers and walks the sequence in
/// chunks of `chunk` steps, the chunk's `B` and `C` of the group staged in shared memory by the
/// whole cube.
///
/// `packed` = `[B (batch, G, N, L) | C (batch, G, N, L) | A (D, N) | D (D) | delta_bias (D) |
/// h0 (batch, D, N)]` at the offsets given; `out` = `[y (batch, D, L) | .. | state (batch, D, N)
/// at off_state]`.
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
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
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
/// `packed` = forward's `packed` followed by `dstate (batch, D, N)` at `off_dstate`;
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
                let mut gb = F::new(0.0);
                let mut ddt = F::new(0.0);
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    let h_t = small[off_states + ((b * chunk + tt) * n_state + n) * dim + d];
                    let h_prev = if tt > 0 {
                        small[off_states + ((b * chunk + tt - 1) * n_state + n) * dim + d]
                    } else {
                        small[off_ckpt + ((b * n_chunks + k) * n_state + n) * dim + d]
                    };
                    let bn = bs[n * chunk + tt];
                    let gn = gh[n] + cs[n * chunk + tt] * gy;
                    let dan = (dt * a[n]).exp();
                    let gda = gn * h_prev * dan;
                    da_acc[n] += gda * dt;
                    ddt += gda * a[n];
                    gb += gn * bn;
                    red[n * cube_dim + unit] = gn * dt * x;
                    red[(n_state + n) * cube_dim + unit] = gy * h_t;
                    gh[n] = gn * dan;
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

/// One decode step of a causal depthwise conv1d: unit `(b, c)` shifts its window, appends `x` and
/// takes the dot product with its filter.
///
/// `packed` = `[weight (C, K) | bias (C)]`; `out` = `[y (batch, C) | .. | state (batch, C, K) at
/// off_state]`.
#[cube(launch)]
pub(crate) fn conv_step_kernel<F: Float>(
    x: &Tensor<F>,
    state: &Tensor<F>,
    packed: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[comptime] width: usize,
    #[comptime] silu: bool,
    #[define(F)] _dtype: ElemType,
) {
    let batch = dims[0] as usize;
    let ch = dims[1] as usize;
    let off_state = dims[2] as usize;
    let pos = ABSOLUTE_POS;
    if pos < batch * ch {
        let c = pos % ch;
        let mut acc = conv_window_step::<F>(
            state,
            x[pos],
            packed,
            out,
            pos,
            c,
            off_state,
            packed[ch * width + c],
            width,
        );
        if silu {
            acc *= sigmoid_f::<F>(acc);
        }
        out[pos] = acc;
    }
}

/// The whole recurrent step of a Mamba (v1) mixer after `in_proj`, in one launch per layer.
///
/// One cube per batch row. In order, with a cube barrier between stages: the causal conv step
/// and SiLU of all `D` channels (the conv output kept in shared memory), `x_proj` (`R + 2N`
/// dot products of length `D`, each split over several units and reduced in shared memory),
/// then per channel `dt_proj`, softplus, the state update and the gated output.
///
/// `xz` (batch, 2D) = `[x | z]` (in_proj's output); `weights` in the layout of
/// `crate::step::pack_mamba_step_weights`: `[conv_w (D, K) | conv_b (D) | x_proj (R + 2N, D) |
/// dt_proj (D, R) | dt_bias (D) | A (D, N) | D (D)]`; `dims` = `[D, R, split, conv state offset,
/// ssm state offset]`; `out` = `[y (batch, D) | .. | conv state (batch, D, K) | .. | ssm state
/// (batch, D, N)]`.
#[cube(launch)]
pub(crate) fn mamba_step_kernel<F: Float>(
    xz: &Tensor<F>,
    conv_state: &Tensor<F>,
    ssm_state: &Tensor<F>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    #[comptime] width: usize,
    #[comptime] n_state: usize,
    #[comptime] max_dim: usize,
    #[comptime] max_proj: usize,
    #[comptime] max_part: usize,
    #[define(F)] _dtype: ElemType,
) {
    // Registers for small states; large ones (Mamba2: 128) stay a loop.
    let unroll_n = comptime!(n_state <= 32);
    let dim = dims[0] as usize;
    let rank = dims[1] as usize;
    let split = dims[2] as usize;
    let off_conv = dims[3] as usize;
    let off_ssm = dims[4] as usize;
    let b = CUBE_POS_X as usize;
    let unit = UNIT_POS_X as usize;
    let cube_dim = CUBE_DIM_X as usize;
    let proj = rank + 2 * n_state;

    let w_conv_b = dim * width;
    let w_xproj = w_conv_b + dim;
    let w_dtproj = w_xproj + proj * dim;
    let w_dtbias = w_dtproj + dim * rank;
    let w_a = w_dtbias + dim;
    let w_d = w_a + dim * n_state;

    let mut xs = Shared::<[F]>::new_slice(max_dim);
    let mut part = Shared::<[F]>::new_slice(max_part);
    let mut dbl = Shared::<[F]>::new_slice(max_proj);

    // 1. Conv step + SiLU.
    let mut c = unit;
    while c < dim {
        let acc = conv_window_step::<F>(
            conv_state,
            xz[b * 2 * dim + c],
            weights,
            out,
            b * dim + c,
            c,
            off_conv,
            weights[w_conv_b + c],
            width,
        );
        xs[c] = acc * sigmoid_f::<F>(acc);
        c += cube_dim;
    }
    sync_cube();

    // 2. x_proj: output o is split into `split` slices, unit (o, s) sums the channels
    // d = s, s + split, ...
    let mut p = unit;
    while p < proj * split {
        let o = p / split;
        let s = p % split;
        let mut acc = F::new(0.0);
        let mut dd = s;
        while dd < dim {
            acc += weights[w_xproj + o * dim + dd] * xs[dd];
            dd += split;
        }
        part[p] = acc;
        p += cube_dim;
    }
    sync_cube();
    let mut o = unit;
    while o < proj {
        let mut acc = F::new(0.0);
        for s in 0..split {
            acc += part[o * split + s];
        }
        dbl[o] = acc;
        o += cube_dim;
    }
    sync_cube();

    // 3. dt_proj, softplus, state update, D skip and gate.
    let mut c = unit;
    while c < dim {
        let row = b * dim + c;
        let mut dt = weights[w_dtbias + c];
        for r in 0..rank {
            dt += weights[w_dtproj + c * rank + r] * dbl[r];
        }
        dt = softplus_f::<F>(dt);
        let xv = xs[c];
        let dtx = dt * xv;
        let mut acc = F::new(0.0);
        #[unroll(unroll_n)]
        for n in 0..n_state {
            let s = (dt * weights[w_a + c * n_state + n]).exp() * ssm_state[row * n_state + n]
                + dbl[rank + n] * dtx;
            out[off_ssm + row * n_state + n] = s;
            acc += dbl[rank + n_state + n] * s;
        }
        let zz = xz[b * 2 * dim + dim + c];
        out[row] = (acc + weights[w_d + c] * xv) * zz * sigmoid_f::<F>(zz);
        c += cube_dim;
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

/// The whole Mamba2 step after `in_proj`, one cube per batch row: the conv step and SiLU over
/// xBC (kept in shared memory), per channel the head's `dt` (softplus, clamped), the state
/// update with the group's B and C, `D x`, the `silu(z)` gate, then the RMSNorm of each group of
/// `d_inner / G` features (reduced over the cube) and the norm weight.
///
/// `zx` (batch, 2 d_inner + 2GN + H); `weights` = `[conv_w (C, K) | conv_b (C) | dt_bias (H) |
/// A (H) | D (H) | norm_w (d_inner)]`; `dims` = `[d_inner, C, H, G, conv offset, ssm offset]`;
/// `out` = `[y (batch, d_inner) | .. | conv state | .. | ssm state (batch, d_inner, N)]`.
#[cube(launch)]
pub(crate) fn mamba2_step_kernel<F: Float>(
    zx: &Tensor<F>,
    conv_state: &Tensor<F>,
    ssm_state: &Tensor<F>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    dt_min: f32,
    dt_max: f32,
    eps: f32,
    #[comptime] width: usize,
    #[comptime] n_state: usize,
    #[comptime] max_conv: usize,
    #[comptime] max_di: usize,
    #[comptime] units: usize,
    #[comptime] max_groups: usize,
    #[define(F)] _dtype: ElemType,
) {
    let unroll_n = comptime!(n_state <= 32);
    let di = dims[0] as usize;
    let conv = dims[1] as usize;
    let heads = dims[2] as usize;
    let groups = dims[3] as usize;
    let off_conv = dims[4] as usize;
    let off_ssm = dims[5] as usize;
    let dinp = 2 * di + 2 * groups * n_state + heads;
    let p = di / heads;
    let heads_per_group = heads / groups;
    let b = CUBE_POS_X as usize;
    let unit = UNIT_POS_X as usize;

    let w_bias = conv * width;
    let w_dtb = w_bias + conv;
    let w_a = w_dtb + heads;
    let w_d = w_a + heads;
    let w_norm = w_d + heads;

    let mut xs = Shared::<[F]>::new_slice(max_conv);
    let mut ys = Shared::<[F]>::new_slice(max_di);
    let mut red = Shared::<[F]>::new_slice(units);
    let mut invs = Shared::<[F]>::new_slice(max_groups);

    // 1. Conv step + SiLU over xBC.
    let mut c = unit;
    while c < conv {
        let acc = conv_window_step::<F>(
            conv_state,
            zx[b * dinp + di + c],
            weights,
            out,
            b * conv + c,
            c,
            off_conv,
            weights[w_bias + c],
            width,
        );
        xs[c] = acc * sigmoid_f::<F>(acc);
        c += units;
    }
    sync_cube();

    // 2. State update, D skip and gate per channel.
    let mut d = unit;
    while d < di {
        let h = d / p;
        let g = h / heads_per_group;
        let mut dt = softplus_f::<F>(zx[b * dinp + di + conv + h] + weights[w_dtb + h]);
        dt = F::max(dt, F::cast_from(dt_min));
        dt = F::min(dt, F::cast_from(dt_max));
        let da = (dt * weights[w_a + h]).exp();
        let x = xs[d];
        let dtx = dt * x;
        let row = b * di + d;
        let mut acc = F::new(0.0);
        #[unroll(unroll_n)]
        for n in 0..n_state {
            let s = da * ssm_state[row * n_state + n] + xs[di + g * n_state + n] * dtx;
            out[off_ssm + row * n_state + n] = s;
            acc += xs[di + (groups + g) * n_state + n] * s;
        }
        let zz = zx[b * dinp + d];
        ys[d] = (acc + weights[w_d + h] * x) * zz * sigmoid_f::<F>(zz);
        d += units;
    }
    sync_cube();

    // 3. RMS of each group, reduced over the cube.
    let per_group = di / groups;
    for g in 0..groups {
        let mut partial = F::new(0.0);
        let mut i = unit;
        while i < per_group {
            let v = ys[g * per_group + i];
            partial += v * v;
            i += units;
        }
        red[unit] = partial;
        sync_cube();
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if unit < stride {
                let mine = red[unit];
                let other = red[unit + stride];
                red[unit] = mine + other;
            }
            sync_cube();
            stride /= 2;
        }
        if unit == 0 {
            let total = red[0];
            invs[g] =
                F::new(1.0) / (total / F::cast_from(per_group as u32) + F::cast_from(eps)).sqrt();
        }
        sync_cube();
    }

    // 4. Normalised, weighted output.
    let mut d = unit;
    while d < di {
        out[b * di + d] = ys[d] * invs[d / per_group] * weights[w_norm + d];
        d += units;
    }
}
