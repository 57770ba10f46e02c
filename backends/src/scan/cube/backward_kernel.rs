//! The selective scan's backward `#[cube]` kernel: a reverse scan recomputing the forward
//! states chunk by chunk; its launcher is [`super::backward_launch`].
#![allow(clippy::manual_div_ceil)]

use crate::cube::math::{sigmoid_f, softplus_f};
use cubecl::prelude::*;

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
