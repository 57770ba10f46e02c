//! The decode steps (the state and conv steps, the fused Mamba, Mamba2 and Mamba-3 steps) and
//! the residual add + RMSNorm.

use super::{Bound, CpuKernel, Kernels, Suite, host};
use crate::mamba3_step::reference::mamba3_step_composed;
use crate::step::reference::{
    causal_conv1d_step as conv_step_body, mamba_step_composed, mamba2_step_composed,
    selective_state_step as state_step_body,
};
use crate::{
    Mamba2StepConfig, Mamba3StepConfig, Mamba3StepDims, causal_conv1d_step, mamba_decode_step,
    mamba2_decode_step, mamba3_decode_step, pack_mamba_step_weights, pack_mamba2_step_weights,
    selective_state_step,
};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

/// A fused step's outputs: y, the conv state (only shifted: exact up to the kernel's copy) and
/// the SSM state (the wgpu tests' bounds; measured <= 7.0e-7).
const STEP_BOUNDS: [Bound; 3] = [("y", 5e-6), ("conv state", 2e-6), ("ssm state", 1e-5)];

fn three(
    (y, c, s): (
        burn::backend::tensor::FloatTensor<Dispatch>,
        burn::backend::tensor::FloatTensor<Dispatch>,
        burn::backend::tensor::FloatTensor<Dispatch>,
    ),
) -> Vec<Vec<f32>> {
    vec![
        host(Tensor::<2>::from_dispatch(y)),
        host(Tensor::<3>::from_dispatch(c)),
        host(Tensor::<3>::from_dispatch(s)),
    ]
}

pub(super) fn checks(s: &mut Suite<'_>) {
    state_and_conv_steps(s);
    mamba_step(s);
    mamba2_step(s);
    mamba3_step(s);
    norm(s);
}

/// Mamba's state step `h = exp(dt A) h + dt B x`, `y = C h + D x (* silu z)` and the conv
/// step (window shift, depthwise dot, SiLU), at one channel count below a cube and one above
/// it (300, not a multiple).
fn state_and_conv_steps(s: &mut Suite<'_>) {
    let kernel = |gpu| Kernels {
        gpu,
        cpu: Some(CpuKernel::Step),
    };
    for (batch, dim, n, groups, gate) in [(1, 4, 16, 1, true), (3, 300, 5, 3, false)] {
        let state = s.normal([batch, dim, n]);
        let x = s.normal([batch, dim]);
        let dt = s.uniform([batch, dim], -4.0, -1.0);
        let a = s.uniform([dim, n], 0.3, 4.0).neg();
        let b = s.normal([batch, groups, n]);
        let c = s.normal([batch, groups, n]);
        let d = s.normal([dim]);
        let z = s.normal([batch, dim]);
        let bias = s.normal([dim]);
        let shape = format!("B {batch} D {dim} N {n} G {groups}");
        s.check(
            "state step",
            shape.clone(),
            kernel(&["state_step_kernel"]),
            &[("y", 5e-6), ("state", 5e-6)],
            || {
                let (y, h) = state_step_body::<Dispatch>(
                    state.clone().into_dispatch(),
                    x.clone().into_dispatch(),
                    dt.clone().into_dispatch(),
                    a.clone().into_dispatch(),
                    b.clone().into_dispatch(),
                    c.clone().into_dispatch(),
                    d.clone().into_dispatch(),
                    gate.then(|| z.clone().into_dispatch()),
                    bias.clone().into_dispatch(),
                    true,
                );
                vec![
                    host(Tensor::<2>::from_dispatch(y)),
                    host(Tensor::<3>::from_dispatch(h)),
                ]
            },
            || {
                let (y, h) = selective_state_step(
                    state.clone(),
                    x.clone(),
                    dt.clone(),
                    a.clone(),
                    b.clone(),
                    c.clone(),
                    d.clone(),
                    gate.then(|| z.clone()),
                    bias.clone(),
                    true,
                );
                vec![host(y), host(h)]
            },
        );
        for (k, silu) in [(4, true), (3, false)] {
            let window = s.normal([batch, dim, k]);
            let w = s.normal([dim, k]);
            s.check(
                if silu { "conv step, SiLU" } else { "conv step" },
                format!("{shape} K {k}"),
                kernel(&["conv_step_kernel"]),
                &[("out", 2e-6), ("state", 0.0)],
                || {
                    let (o, st) = conv_step_body::<Dispatch>(
                        x.clone().into_dispatch(),
                        window.clone().into_dispatch(),
                        w.clone().into_dispatch(),
                        bias.clone().into_dispatch(),
                        silu,
                    );
                    vec![
                        host(Tensor::<2>::from_dispatch(o)),
                        host(Tensor::<3>::from_dispatch(st)),
                    ]
                },
                || {
                    let (o, st) = causal_conv1d_step(
                        x.clone(),
                        window.clone(),
                        w.clone(),
                        bias.clone(),
                        silu,
                    );
                    vec![host(o), host(st)]
                },
            );
        }
    }
}

/// Mamba's whole decode step in one kernel (conv, x_proj, dt_proj, state update, gate) against
/// the step composed of the conv and state steps and two matmuls (the CPU's fused step too).
fn mamba_step(s: &mut Suite<'_>) {
    // (batch, D, K, N, R): mamba_tiny's shape, and D above the cube's 256 units.
    for (batch, dim, k, n, r) in [(2, 64, 4, 16, 4), (3, 600, 3, 5, 7)] {
        let weights = pack_mamba_step_weights(
            s.normal([dim, k]).mul_scalar(0.3),
            s.normal([dim]),
            s.normal([dim, r + 2 * n]).mul_scalar(0.1),
            s.normal([r, dim]).mul_scalar(0.3),
            s.uniform([dim], -4.0, -1.0),
            s.uniform([dim, n], 0.3, 4.0).neg(),
            s.normal([dim]),
        );
        let xz = s.normal([batch, 2 * dim]);
        let conv = s.normal([batch, dim, k]);
        let ssm = s.normal([batch, dim, n]);
        s.check(
            "mamba decode step",
            format!("B {batch} D {dim} K {k} N {n} R {r}"),
            Kernels {
                gpu: &["mamba_step_kernel"],
                cpu: Some(CpuKernel::Step),
            },
            &STEP_BOUNDS,
            || {
                three(mamba_step_composed::<Dispatch>(
                    xz.clone().into_dispatch(),
                    conv.clone().into_dispatch(),
                    ssm.clone().into_dispatch(),
                    weights.clone().into_dispatch(),
                ))
            },
            || {
                let (y, c, h) =
                    mamba_decode_step(xz.clone(), conv.clone(), ssm.clone(), weights.clone());
                vec![host(y), host(c), host(h)]
            },
        );
    }
}

/// Mamba2's decode step in one kernel (conv, dt, state update, gated RMSNorm) against the
/// composed step (the CPU's fused step too).
fn mamba2_step(s: &mut Suite<'_>) {
    // (batch, heads, head dim, groups, N, K, dt limit): mamba2_tiny's shape, and d_inner above
    // the cube's units with N = 128 and a finite upper dt limit.
    for (batch, h, p, g, n, k, dt_max) in [
        (2, 4, 16, 2, 8, 4, f32::INFINITY),
        (3, 6, 64, 3, 128, 4, 0.05),
    ] {
        let di = h * p;
        let conv = di + 2 * g * n;
        let weights = pack_mamba2_step_weights(
            s.normal([conv, k]).mul_scalar(0.3),
            s.normal([conv]),
            s.uniform([h], -4.0, -1.0),
            s.uniform([h], 1.0, 16.0).neg(),
            s.normal([h]),
            s.normal([di]),
        );
        let zx = s.normal([batch, 2 * di + 2 * g * n + h]);
        let cs = s.normal([batch, conv, k]);
        let ss = s.normal([batch, di, n]);
        let cfg = Mamba2StepConfig {
            heads: h,
            groups: g,
            dt_min: 0.001,
            dt_max,
            eps: 1e-5,
        };
        s.check(
            "mamba2 decode step",
            format!("B {batch} H {h} P {p} G {g} N {n} K {k}"),
            Kernels {
                gpu: &["mamba2_step_kernel"],
                cpu: Some(CpuKernel::Step),
            },
            &STEP_BOUNDS,
            || {
                three(mamba2_step_composed::<Dispatch>(
                    zx.clone().into_dispatch(),
                    cs.clone().into_dispatch(),
                    ss.clone().into_dispatch(),
                    weights.clone().into_dispatch(),
                    cfg,
                ))
            },
            || {
                let (y, c, st) =
                    mamba2_decode_step(zx.clone(), cs.clone(), ss.clone(), weights.clone(), cfg);
                vec![host(y), host(c), host(st)]
            },
        );
    }
}

/// Mamba-3's decode step (SISO and MIMO, with and without the output projection's norm, data-
/// dependent rotations) in one kernel against the step on the backend's tensor ops (the Mamba-3
/// step tests' wgpu bounds: measured <= 4.8e-7).
fn mamba3_step(s: &mut Suite<'_>) {
    // (batch, heads, head dim, N, groups, rank, angles, MIMO, out-projection norm).
    for (bs, h, p, n, g, r, angles, mimo, outproj_norm) in [
        (2, 4, 16, 16, 1, 2, 4, true, false),
        (2, 4, 16, 16, 1, 1, 4, false, false),
        (2, 8, 8, 16, 2, 4, 8, true, true),
        (3, 2, 64, 32, 1, 4, 8, true, true),
    ] {
        let cfg = Mamba3StepConfig {
            heads: h,
            groups: g,
            rank: r,
            angles,
            mimo,
            outproj_norm,
            a_floor: 1e-4,
            eps: 1e-5,
        };
        let dims = Mamba3StepDims {
            batch: bs,
            heads: h,
            head_dim: p,
            state: n,
            groups: g,
            rank: r,
            angles,
        };
        let o = dims.offsets();
        // dt_bias so that the step sizes are small, the other weights O(1).
        let mut parts = vec![s.uniform([h], -4.0, -1.0)];
        for i in 1..10 {
            parts.push(s.normal([o[i + 1] - o[i]]));
        }
        let weights = Tensor::cat(parts, 0);
        let proj = s.normal([bs, dims.proj_width()]);
        let conv = s.normal([bs, h, angles + r * n + p]);
        let ssm = s.normal([bs, h * p, n]);
        let kind = if mimo { "MIMO" } else { "SISO" };
        let norm = if outproj_norm { ", out-proj norm" } else { "" };
        s.check(
            format!("mamba3 decode step, {kind}{norm}"),
            format!("B {bs} H {h} P {p} N {n} G {g} R {r} angles {angles}"),
            Kernels {
                gpu: &["mamba3_step_kernel"],
                cpu: Some(CpuKernel::Step),
            },
            &[("y", 5e-6), ("conv state", 5e-6), ("ssm state", 5e-6)],
            || {
                three(mamba3_step_composed::<Dispatch>(
                    proj.clone().into_dispatch(),
                    conv.clone().into_dispatch(),
                    ssm.clone().into_dispatch(),
                    weights.clone().into_dispatch(),
                    cfg,
                ))
            },
            || {
                let (y, c, st) = mamba3_decode_step(
                    proj.clone(),
                    conv.clone(),
                    ssm.clone(),
                    weights.clone(),
                    cfg,
                );
                vec![host(y), host(c), host(st)]
            },
        );
    }
}

/// The residual add + RMSNorm in one kernel (GPU; the CPU backends run the portable body),
/// widths below, at and above the cube's 256 units and not powers of two (the wgpu tests'
/// bounds: the sum 1e-6, the norm 2e-6).
fn norm(s: &mut Suite<'_>) {
    for (rows, width, residual) in [(1, 3, false), (1, 128, true), (3, 1000, true)] {
        let x = s.normal([rows, width]);
        let r = s.normal([rows, width]);
        let w = s.normal([width]);
        s.check(
            if residual {
                "add + rms norm"
            } else {
                "rms norm"
            },
            format!("rows {rows} width {width}"),
            Kernels {
                gpu: &["add_rms_norm_kernel"],
                cpu: None,
            },
            &[("sum", 1e-6), ("norm", 2e-6)],
            || {
                let (sum, y) = crate::norm::reference::add_rms_norm::<Dispatch>(
                    x.clone().into_dispatch(),
                    residual.then(|| r.clone().into_dispatch()),
                    w.clone().into_dispatch(),
                    1e-5,
                );
                vec![
                    host(Tensor::<2>::from_dispatch(sum)),
                    host(Tensor::<2>::from_dispatch(y)),
                ]
            },
            || {
                let (sum, y) =
                    crate::add_rms_norm(x.clone(), residual.then(|| r.clone()), w.clone(), 1e-5);
                vec![host(sum), host(y)]
            },
        );
    }
}
