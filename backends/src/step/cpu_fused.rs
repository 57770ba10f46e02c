//! Mamba's and Mamba2's whole decode steps fused on the CPU backends (Flex, NdArray): one pass
//! over the packed weights per step, with no tensor op between the parts (the composed step
//! runs a dozen ops, each a dispatch, an allocation and for most a parallel region; at batch 1
//! that overhead, not arithmetic, was a third of a decoded token's time).
//!
//! Mamba: the conv window step and SiLU, `x_proj` (the few-row product over every core),
//! `dt = softplus(dt_proj(dt_low) + dt_bias)`, `h = exp(dt A) h + dt B u`, `y = (C . h + D u)
//! silu(z)`: the conv and the state update per channel in one parallel region each. Mamba2: the
//! dt of each head, the conv step over `xBC`, the state update with one `A` per head, and the
//! gated RMSNorm `(y silu(z)) / rms * w` per group. The same arithmetic as the composed bodies
//! (`super::reference`), in the same order per channel (the conv window is `super::cpu`'s).

use super::cpu::conv_step;
use super::reference::{Mamba2StepConfig, MambaStepDims};
use crate::cpu::gemv::{WeightView, rows_matmul};
use crate::cpu::lanes::{dot, exp_approx, silu, softplus, update};
use crate::cpu::{calls, device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use rayon::prelude::*;

/// Work (multiply-adds) under which a part runs on the calling thread: a parallel region costs
/// more than it saves.
const PARALLEL_MIN: usize = 1 << 15;

/// Runs `f` on each task (with its index), on every core when `work` is large enough.
fn run_tasks<T: Send>(tasks: &mut [T], work: usize, f: impl Fn(usize, &mut T) + Sync + Send) {
    if work >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        tasks.par_iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    } else {
        tasks.iter_mut().enumerate().for_each(|(i, t)| f(i, t));
    }
}

/// [`crate::SsmOps::mamba_decode_step`] fused (see the module's documentation); the packed
/// weights read to the host (NdArray; Flex reads them in place, [`mamba_decode_step_flex`]).
pub(crate) fn mamba_decode_step<B: Backend>(
    xz: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let w = host::<B>(weights);
    mamba_step_on::<B>(xz, conv_state, ssm_state, &w)
}

/// [`mamba_decode_step`] on Flex, reading the packed weights in place (a decode step must not
/// copy its 0.9 MB of step weights per layer and token at mamba-130m's shape) where they are
/// one contiguous f32 run, else through the host copy.
#[cfg(feature = "flex")]
pub(crate) fn mamba_decode_step_flex(
    xz: FloatTensor<burn::backend::Flex>,
    conv_state: FloatTensor<burn::backend::Flex>,
    ssm_state: FloatTensor<burn::backend::Flex>,
    weights: FloatTensor<burn::backend::Flex>,
) -> (
    FloatTensor<burn::backend::Flex>,
    FloatTensor<burn::backend::Flex>,
    FloatTensor<burn::backend::Flex>,
) {
    use burn::backend::Flex;
    let len = weights.layout().shape()[0];
    let contiguous = weights.dtype() == burn::tensor::DType::F32
        && (len <= 1 || weights.layout().strides()[0] == 1);
    if !contiguous {
        return mamba_decode_step::<Flex>(xz, conv_state, ssm_state, weights);
    }
    let off = weights.layout().start_offset();
    let w = &weights.storage::<f32>()[off..off + len];
    mamba_step_on::<Flex>(xz, conv_state, ssm_state, w)
}

/// The fused Mamba step with the packed weights as a slice.
fn mamba_step_on<B: Backend>(
    xz: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    w: &[f32],
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let device = xz.device();
    let (cs, ss) = (conv_state.shape().to_vec(), ssm_state.shape().to_vec());
    let s = MambaStepDims::infer(&xz.shape(), &cs, &ss, w.len()).unwrap_or_else(|e| panic!("{e}"));
    calls::count(&calls::STEP);
    let (bs, d, k, n, r) = (s.batch, s.dim, s.width, s.state, s.rank);
    let o = s.offsets();
    let xz = host::<B>(xz);
    let mut conv = host::<B>(conv_state);
    let mut ssm = host::<B>(ssm_state);
    let x: Vec<f32> = (0..bs)
        .flat_map(|b| xz[b * 2 * d..b * 2 * d + d].iter().copied())
        .collect();
    let u = conv_step(&x, &mut conv, &w[o[0]..o[1]], &w[o[1]..o[2]], d, k, true);
    // x_dbl = u x_projᵀ, x_proj (R + 2N, D) row-major: the (D, R + 2N) view by columns.
    let proj = r + 2 * n;
    let x_dbl = rows_matmul(
        &u,
        bs,
        &WeightView {
            data: w,
            off: o[2],
            sk: 1,
            sn: d,
            k: d,
            n: proj,
        },
    );
    let (dt_w, dt_bias, a, dd) = (
        &w[o[3]..o[4]],
        &w[o[4]..o[5]],
        &w[o[5]..o[6]],
        &w[o[6]..o[7]],
    );
    let mut y = vec![0.0f32; bs * d];
    // One task per (row, block of channels): dt, the state update and the gate.
    let block = 64.min(d);
    let blocks = d.div_ceil(block);
    let mut tasks: Vec<(&mut [f32], &mut [f32])> = y
        .chunks_mut(d)
        .zip(ssm.chunks_mut(d * n))
        .flat_map(|(yr, hr)| yr.chunks_mut(block).zip(hr.chunks_mut(block * n)))
        .collect();
    let run = |t: usize, (yb, hb): &mut (&mut [f32], &mut [f32])| {
        let (row, c0) = (t / blocks, (t % blocks) * block);
        let xd = &x_dbl[row * proj..(row + 1) * proj];
        let (dt_low, bm, cm) = (&xd[..r], &xd[r..r + n], &xd[r + n..]);
        for (i, (yv, h)) in yb.iter_mut().zip(hb.chunks_mut(n)).enumerate() {
            let c = c0 + i;
            let dt = softplus(dot(&dt_w[c * r..(c + 1) * r], dt_low) + dt_bias[c]);
            let uc = u[row * d + c];
            let acc = update(h, &a[c * n..(c + 1) * n], bm, cm, dt, dt * uc);
            *yv = (acc + dd[c] * uc) * silu(xz[row * 2 * d + d + c]);
        }
    };
    run_tasks(&mut tasks, bs * d * (n + r), run);
    drop(tasks);
    (
        device_tensor::<B>(y, vec![bs, d], &device),
        device_tensor::<B>(conv, cs, &device),
        device_tensor::<B>(ssm, ss, &device),
    )
}

/// [`crate::SsmOps::mamba2_decode_step`] fused (see the module's documentation).
pub(crate) fn mamba2_decode_step<B: Backend>(
    zxbcdt: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
    cfg: Mamba2StepConfig,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let device = zxbcdt.device();
    let (cs, ss) = (conv_state.shape().to_vec(), ssm_state.shape().to_vec());
    let (bs, di, n) = (ss[0], ss[1], ss[2]);
    let (conv_ch, k) = (cs[1], cs[2]);
    let (h, g) = (cfg.heads, cfg.groups);
    let p = di / h;
    let width = 2 * di + 2 * g * n + h;
    let zx_dims = zxbcdt.shape().to_vec();
    assert!(
        zx_dims == [bs, width] && cs[0] == bs && conv_ch == di + 2 * g * n && di % h == 0,
        "mamba2 step: inconsistent shapes zxbcdt {zx_dims:?}, conv_state {cs:?}, ssm_state \
         {ss:?} for {h} heads and {g} groups"
    );
    let packed = weights.shape().num_elements();
    assert_eq!(
        packed,
        conv_ch * (k + 1) + 3 * h + di,
        "mamba2 step: packed weights of length {packed} do not fit the shapes"
    );
    calls::count(&calls::STEP);
    let w = host::<B>(weights);
    let zx = host::<B>(zxbcdt);
    let mut conv = host::<B>(conv_state);
    let mut ssm = host::<B>(ssm_state);
    let (conv_w, rest) = w.split_at(conv_ch * k);
    let (conv_b, rest) = rest.split_at(conv_ch);
    let (dt_bias, rest) = rest.split_at(h);
    let (a, rest) = rest.split_at(h);
    let (dd, norm_w) = rest.split_at(h);
    let xbc_in: Vec<f32> = (0..bs)
        .flat_map(|b| zx[b * width + di..b * width + di + conv_ch].iter().copied())
        .collect();
    let xbc = conv_step(&xbc_in, &mut conv, conv_w, conv_b, conv_ch, k, true);
    let dt: Vec<f32> = (0..bs * h)
        .map(|t| {
            let (b, hi) = (t / h, t % h);
            softplus(zx[b * width + di + conv_ch + hi] + dt_bias[hi]).clamp(cfg.dt_min, cfg.dt_max)
        })
        .collect();
    let mut y = vec![0.0f32; bs * di];
    let heads_per_group = h / g;
    // One task per (row, head): the state update of its P channels.
    let mut tasks: Vec<(&mut [f32], &mut [f32])> =
        y.chunks_mut(p).zip(ssm.chunks_mut(p * n)).collect();
    let run = |t: usize, (yh, hh): &mut (&mut [f32], &mut [f32])| {
        let (row, hi) = (t / h, t % h);
        let gi = hi / heads_per_group;
        let xr = &xbc[row * conv_ch..(row + 1) * conv_ch];
        let bm = &xr[di + gi * n..di + (gi + 1) * n];
        let cm = &xr[di + g * n + gi * n..di + g * n + (gi + 1) * n];
        let dtv = dt[row * h + hi];
        // One decay per head (A is a scalar per head).
        let decay = exp_approx(dtv * a[hi]);
        for (i, (yv, st)) in yh.iter_mut().zip(hh.chunks_mut(n)).enumerate() {
            let xc = xr[hi * p + i];
            let du = dtv * xc;
            for (sv, &bv) in st.iter_mut().zip(bm) {
                *sv = decay * *sv + du * bv;
            }
            *yv = dot(st, cm) + dd[hi] * xc;
        }
    };
    run_tasks(&mut tasks, bs * di * n, run);
    drop(tasks);
    // The gated RMSNorm per group of d_inner / G features.
    let per = di / g;
    let mut groups: Vec<&mut [f32]> = y.chunks_mut(per).collect();
    run_tasks(&mut groups, bs * di, |t, yg| {
        let (row, gi) = (t / g, t % g);
        let z = &zx[row * width + gi * per..row * width + (gi + 1) * per];
        for (v, &zv) in yg.iter_mut().zip(z) {
            *v *= silu(zv);
        }
        let ms = yg.iter().map(|v| v * v).sum::<f32>() / per as f32;
        let inv = 1.0 / (ms + cfg.eps).sqrt();
        for (v, &wv) in yg.iter_mut().zip(&norm_w[gi * per..(gi + 1) * per]) {
            *v = *v * inv * wv;
        }
    });
    drop(groups);
    (
        device_tensor::<B>(y, vec![bs, di], &device),
        device_tensor::<B>(conv, cs, &device),
        device_tensor::<B>(ssm, ss, &device),
    )
}
