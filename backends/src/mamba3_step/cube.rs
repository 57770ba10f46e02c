//! The whole Mamba-3 decode step after `in_proj` on the GPU (SISO or MIMO): the `#[cube]`
//! kernel and its launcher, with the reference body for the inputs the kernel cannot take. The
//! math: [`super::reference`].
#![allow(clippy::too_many_arguments)]

use super::reference::{self, Mamba3StepConfig, Mamba3StepDims};
use crate::cube::buffers::{Cb, Regions, flat, max_units, require_same_dtype, shared_limit, u32s};
use crate::cube::fallback::{PORTABLE, Unsupported, unsupported};
use crate::cube::math::{sigmoid_f, softplus_f};
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// [`crate::SsmOps::mamba3_decode_step`] in one kernel launch, or the reference body.
pub(crate) fn mamba3_decode_step(
    proj: FloatTensor<Cb>,
    conv_state: FloatTensor<Cb>,
    ssm_state: FloatTensor<Cb>,
    weights: FloatTensor<Cb>,
    heads: usize,
    groups: usize,
    rank: usize,
    angles: usize,
    mimo: bool,
    outproj_norm: bool,
    a_floor: f32,
    eps: f32,
) -> (FloatTensor<Cb>, FloatTensor<Cb>, FloatTensor<Cb>) {
    let cfg = Mamba3StepConfig {
        heads,
        groups,
        rank,
        angles,
        mimo,
        outproj_norm,
        a_floor,
        eps,
    };
    let launched = launch(
        proj.clone(),
        conv_state.clone(),
        ssm_state.clone(),
        weights.clone(),
        cfg,
    );
    match launched {
        Ok(out) => out,
        Err(why) => {
            unsupported("mamba3_decode_step", &[&proj, &ssm_state], why, PORTABLE);
            reference::mamba3_step_composed::<Cb>(proj, conv_state, ssm_state, weights, cfg)
        }
    }
}

/// One cube per (batch row, head): the B/C RMSNorms of the head's group per rank, the head's
/// `Δ`, `α`, `λ`, the angles, the biased and rotated keys and queries (in shared memory), then
/// per state row `p` (units over P) the update `h = α h + β Σ_r k'_r v'_r + γ Σ_r k_r v_r` and
/// the ranks' read-outs `y_r = h q_r + D v_r`, then the per-rank norm (reduced over the cube),
/// gate and sum over the ranks.
///
/// `dims` = `[H, G, conv offset, ssm offset, weight offsets (10)]`; `rot` the rotation's pair
/// constants (see step 2); `out` = `[y (B, HP) | ..
/// | conv state (B, H, S + RN + P) | .. | ssm state (B, HP, N)]`.
#[cube(launch)]
pub(crate) fn mamba3_step_kernel<F: Float>(
    proj: &Tensor<F>,
    conv_state: &Tensor<F>,
    ssm_state: &Tensor<F>,
    weights: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    a_floor: f32,
    eps: f32,
    rot: Sequence<u32>,
    #[comptime] n_state: usize,
    #[comptime] head_dim: usize,
    #[comptime] rank: usize,
    #[comptime] angles: usize,
    #[comptime] norm: bool,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let heads = dims[0] as usize;
    let groups = dims[1] as usize;
    let off_conv = dims[2] as usize;
    let off_ssm = dims[3] as usize;
    let o_dtb = dims[4] as usize;
    let o_bb = dims[5] as usize;
    let o_cb = dims[6] as usize;
    let o_bn = dims[7] as usize;
    let o_cn = dims[8] as usize;
    let o_d = dims[9] as usize;
    let o_wx = dims[10] as usize;
    let o_wz = dims[11] as usize;
    let o_wo = dims[12] as usize;
    let o_nw = dims[13] as usize;
    let n = n_state;
    let p = head_dim;
    let rn = rank * n;
    let di = heads * p;
    let rgn = rank * groups * n;
    let width = 2 * di + 2 * rgn + 3 * heads + angles;
    let cw = angles + rn + p;
    let hb = 2 * di + 2 * rgn;

    let task = CUBE_POS_X as usize;
    let b = task / heads;
    let h = task % heads;
    let g = h / (heads / groups);
    let unit = UNIT_POS_X as usize;
    let row = b * width;
    let conv_row = task * cw;

    let mut qk = Shared::<[F]>::new_slice(2 * rn);
    let mut ys = Shared::<[F]>::new_slice(rank * head_dim);
    let mut red = Shared::<[F]>::new_slice(units);
    let mut inv = Shared::<[F]>::new_slice(2 * rank);

    // The head's scalars (every unit).
    let dt = softplus_f::<F>(proj[row + hb + h] + weights[o_dtb + h]);
    let a = proj[row + hb + heads + h];
    let heavy = F::max(
        F::max(a, F::new(0.0)) + F::new(1.0) / (F::new(1.0) - F::min(a, F::new(0.0))),
        F::cast_from(a_floor),
    );
    let alpha = (-(heavy * dt)).exp();
    let lam = sigmoid_f::<F>(proj[row + hb + 2 * heads + h]);
    let beta = (F::new(1.0) - lam) * dt * alpha;
    let gamma = lam * dt;

    // 1. The angles (into the carried state); the RMS of B (units 0..R) and C (R..2R) of the
    // head's group per rank.
    let pi = F::new(core::f32::consts::PI);
    let two_pi = F::new(2.0 * core::f32::consts::PI);
    let mut i = unit;
    while i < angles {
        let t = conv_state[conv_row + i] + proj[row + hb + 3 * heads + i].tanh() * pi * dt;
        out[off_conv + conv_row + i] = t - (t / two_pi).floor() * two_pi;
        i += units;
    }
    if unit < 2 * rank {
        let which = unit / rank;
        let r = unit % rank;
        let src = row + 2 * di + which * rgn + (r * groups + g) * n;
        let mut acc = F::new(0.0);
        for k in 0..n {
            let v = proj[src + k];
            acc += v * v;
        }
        inv[unit] = F::new(1.0) / (acc / F::cast_from(n as u32) + F::cast_from(eps)).sqrt();
    }
    sync_cube();

    // 2. Keys (qk[0..RN]) and queries (qk[RN..2RN]): normed, biased and rotated, each entry
    // computing its rotation partner from global memory (SISO pairs (2i, 2i+1), MIMO
    // (i, i + N/2); `mimo` 0 or 1, `half` N/2). Keys read B's norm weight and bias, queries
    // C's.
    // Host constants: SISO (A, B, C, step) = (2, N − 1, 1, 1), MIMO (1, N/2, N/2, N/2): the
    // pair index (k / A) % B, the second of its pair when (k / C) % 2 = 1; a SISO second's
    // partner is (k + B) % N = k − 1.
    let pair_a = rot[0] as usize;
    let pair_b = rot[1] as usize;
    let pair_c = rot[2] as usize;
    let step = rot[3] as usize;
    let mut e = unit;
    while e < 2 * rn {
        let which = e / rn;
        let r = (e % rn) / n;
        let k = e % n;
        let src = row + 2 * di + which * rgn + (r * groups + g) * n;
        let scale = inv[which * rank + r];
        let o_norm = o_bn + which * (o_cn - o_bn);
        let o_bias = o_bb + which * (o_cb - o_bb) + (h * rank + r) * n;
        let own = proj[src + k] * scale * weights[o_norm + k] + weights[o_bias + k];
        let pair = (k / pair_a) % pair_b;
        let second = (k / pair_c) % 2;
        // The partner: `up` = k + step (mod N) for the first of a pair, `down` = (k + B) mod N
        // for the second (k − 1 for SISO, k + N/2 mod N = `up` for MIMO).
        let up = (k + step) % n;
        let down = (k + pair_b) % n;
        let mut v = own;
        if pair < angles {
            // A second's partner is `down` (for MIMO the same entry as `up`).
            let wd = F::cast_from(second);
            let other_up = proj[src + up] * scale * weights[o_norm + up] + weights[o_bias + up];
            let other_down =
                proj[src + down] * scale * weights[o_norm + down] + weights[o_bias + down];
            let other = other_up * (F::new(1.0) - wd) + other_down * wd;
            let t =
                conv_state[conv_row + pair] + proj[row + hb + 3 * heads + pair].tanh() * pi * dt;
            let c = t.cos();
            let sn = t.sin();
            // First of its pair: own c − other s; second: other s + own c.
            let sign = F::cast_from(2 * second) - F::new(1.0);
            v = own * c + other * sn * sign;
        }
        qk[e] = v;
        e += units;
    }
    sync_cube();
    // The new keys and x into the carried state.
    let mut e = unit;
    while e < rn {
        out[off_conv + conv_row + angles + e] = qk[e];
        e += units;
    }

    // 4. State rows p: update and the ranks' read-outs.
    let dskip = weights[o_d + h];
    let mut vp = Array::<F>::new(rank);
    let mut vn = Array::<F>::new(rank);
    let mut acc = Array::<F>::new(rank);
    let mut pp = unit;
    while pp < p {
        let x = proj[row + di + h * p + pp];
        let x_old = conv_state[conv_row + angles + rn + pp];
        out[off_conv + conv_row + angles + rn + pp] = x;
        #[unroll]
        for r in 0..rank {
            let wx = weights[o_wx + (h * rank + r) * p + pp];
            vp[r] = beta * x_old * wx;
            vn[r] = gamma * x * wx;
            acc[r] = F::new(0.0);
        }
        let srow = (task * p + pp) * n;
        for k in 0..n {
            let mut v = alpha * ssm_state[srow + k];
            #[unroll]
            for r in 0..rank {
                v += vp[r] * conv_state[conv_row + angles + r * n + k] + vn[r] * qk[r * n + k];
            }
            out[off_ssm + srow + k] = v;
            #[unroll]
            for r in 0..rank {
                acc[r] += v * qk[rn + r * n + k];
            }
        }
        #[unroll]
        for r in 0..rank {
            ys[r * p + pp] = acc[r] + dskip * x * weights[o_wx + (h * rank + r) * p + pp];
        }
        pp += units;
    }
    sync_cube();

    // 5. The per-rank RMS over P (with the output norm).
    if comptime!(norm) {
        for r in 0..rank {
            let mut partial = F::new(0.0);
            let mut pp = unit;
            while pp < p {
                let v = ys[r * p + pp];
                partial += v * v;
                pp += units;
            }
            red[unit] = partial;
            sync_cube();
            // A runtime start (a mutable initialised from the comptime `units` fails CubeCL's
            // IR verifier).
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
                inv[r] = F::new(1.0) / (red[0] / F::cast_from(p as u32) + F::cast_from(eps)).sqrt();
            }
            sync_cube();
        }
    }

    // 6. Gate and the sum over the ranks.
    let mut pp = unit;
    while pp < p {
        let z = proj[row + h * p + pp];
        let mut y = F::new(0.0);
        #[unroll]
        for r in 0..rank {
            let at = (h * rank + r) * p + pp;
            let mut v = ys[r * p + pp];
            if comptime!(norm) {
                v = v * inv[r] * weights[o_nw + h * p + pp];
            }
            let zr = z * weights[o_wz + at];
            y += v * zr * sigmoid_f::<F>(zr) * weights[o_wo + at];
        }
        out[task * p + pp] = y;
        pp += units;
    }
}

/// The fused Mamba-3 decode step on the kernel, or why the kernel cannot take it.
fn launch(
    proj: CubeTensor,
    conv_state: CubeTensor,
    ssm_state: CubeTensor,
    weights: CubeTensor,
    cfg: Mamba3StepConfig,
) -> Result<(CubeTensor, CubeTensor, CubeTensor), Unsupported> {
    let s = Mamba3StepDims::infer(
        &proj.shape().to_vec(),
        &conv_state.shape().to_vec(),
        &ssm_state.shape().to_vec(),
        weights.shape().num_elements(),
        &cfg,
    )
    .map_err(|e| Unsupported::Because(e.to_string()))?;
    let (bs, h, p, n, r, sa) = (s.batch, s.heads, s.head_dim, s.state, s.rank, s.angles);
    if bs * h * p * n == 0 {
        return Err(Unsupported::Empty);
    }
    let cap = crate::cube::STEP_UNITS.min(max_units(&proj));
    let want = p.max(2 * r).next_power_of_two().max(32);
    let units = want.min(1usize << cap.max(1).ilog2());
    let elem = proj.dtype.size();
    let shared = (2 * r * n + r * p + units + 2 * r) * elem;
    let limit = shared_limit(&proj);
    if shared > limit {
        return Err(Unsupported::Because(format!(
            "the keys, queries and outputs need {shared} bytes of shared memory, over the \
             device's {limit}"
        )));
    }
    if units < 2 * r {
        return Err(Unsupported::Because(format!(
            "rank {r} needs {} units, the device gives {units}",
            2 * r
        )));
    }
    require_same_dtype(&[&proj, &conv_state, &ssm_state, &weights])?;
    let cw = sa + r * n + p;
    let proj = flat(proj);
    let regions = Regions::new(&proj, &[bs * h * p, bs * h * cw, bs * h * p * n]);
    let out = regions.alloc(&proj);
    let o = s.offsets();
    let mut dims = vec![h, s.groups, regions.offsets[1], regions.offsets[2]];
    dims.extend_from_slice(&o[..10]);
    let dtype = proj.dtype;
    let client = proj.client.clone();
    mamba3_step_kernel::launch(
        &client,
        CubeCount::Static((bs * h) as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        proj.into_tensor_arg(),
        flat(conv_state).into_tensor_arg(),
        flat(ssm_state).into_tensor_arg(),
        flat(weights).into_tensor_arg(),
        out.clone().into_tensor_arg(),
        u32s(&dims),
        cfg.a_floor,
        cfg.eps,
        u32s(&if cfg.mimo {
            [1, n / 2, n / 2, n / 2]
        } else {
            [2, n - 1, 1, 1]
        }),
        n,
        p,
        r,
        sa,
        cfg.outproj_norm,
        units,
        dtype_to_storage_type(dtype),
    );
    Ok((
        regions.view(&out, 0, &[bs, h * p]),
        regions.view(&out, 1, &[bs, h, cw]),
        regions.view(&out, 2, &[bs, h * p, n]),
    ))
}
