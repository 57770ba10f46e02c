//! The selective scan: forward in one pass and in spans, with direct and staged loads, packed
//! rows, the backward in one pass and in spans, and the forward on half-precision activations.

use super::{Bound, CpuKernel, Kernels, Suite, grad, host, track};
use crate::{ScanOutput, SelectiveScan, seq_idx_from_lengths};
use burn::tensor::{DType, FloatDType, Int, Tensor};

const FORWARD: Kernels = Kernels {
    gpu: &["scan_fwd_kernel"],
    cpu: Some(CpuKernel::ScanForward),
};

/// The forward's `y` and final state (the wgpu tests' bounds: measured 5.5e-7 and 1.1e-6).
const FORWARD_BOUNDS: [Bound; 2] = [("y", 1e-5), ("state", 2e-5)];

/// The gradients, in the order of [`Inputs`]' fields (the wgpu tests' bounds, 10x lavapipe's
/// measured errors: 5.9e-7 du ... 6.4e-6 dA in spans).
const GRADIENT_BOUNDS: [Bound; 9] = [
    ("du", 1e-5),
    ("ddelta", 1e-5),
    ("dA", 1e-4),
    ("dB", 1e-5),
    ("dC", 2e-5),
    ("dD", 5e-6),
    ("dz", 2e-5),
    ("ddelta_bias", 2e-5),
    ("dh0", 2e-5),
];

/// (batch, channels, length, state, groups, gate, initial state, softplus): L = 1; D above one
/// cube of 32 channels and not a multiple of it; L not a multiple of the forward (64) or
/// backward (32) chunk; several groups; Mamba2's state size (smaller chunks and cubes).
type Case = (usize, usize, usize, usize, usize, bool, bool, bool);
const CASES: [Case; 5] = [
    (2, 4, 1, 8, 1, true, false, true),
    (1, 40, 37, 16, 1, true, true, true),
    (3, 8, 130, 16, 4, true, false, false),
    (1, 72, 200, 16, 2, true, true, true),
    (1, 16, 40, 128, 1, true, true, true),
];

/// One scan's inputs on the suite's device, in realistic ranges (softplus(delta + bias) in
/// about 0.01..0.5).
#[derive(Clone)]
struct Inputs {
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    z: Option<Tensor<3>>,
    bias: Tensor<1>,
    h0: Option<Tensor<3>>,
    softplus: bool,
    seq_idx: Option<Tensor<2, Int>>,
}

fn inputs(s: &mut Suite<'_>, (bs, d, l, n, g, gate, init, softplus): Case) -> Inputs {
    let u = s.normal([bs, d, l]);
    let delta = if softplus {
        s.uniform([bs, d, l], -4.0, -1.0)
    } else {
        s.uniform([bs, d, l], 0.6, 0.9)
    };
    Inputs {
        u,
        delta,
        a: s.uniform([d, n], 0.3, n as f64).neg(),
        b: s.normal([bs, g, n, l]),
        c: s.normal([bs, g, n, l]),
        d: s.normal([d]),
        z: gate.then(|| s.normal([bs, d, l])),
        bias: s.uniform([d], -0.5, 0.5),
        h0: init.then(|| s.normal([bs, d, n])),
        softplus,
        seq_idx: None,
    }
}

fn scan(x: &Inputs) -> SelectiveScan {
    let mut op = SelectiveScan::new(
        x.u.clone(),
        x.delta.clone(),
        x.a.clone(),
        x.b.clone(),
        x.c.clone(),
    )
    .d(x.d.clone())
    .delta_bias(x.bias.clone())
    .softplus(x.softplus);
    if let Some(z) = &x.z {
        op = op.z(z.clone());
    }
    if let Some(h) = &x.h0 {
        op = op.initial_state(h.clone());
    }
    if let Some(i) = &x.seq_idx {
        op = op.seq_idx(i.clone());
    }
    op
}

fn outputs(o: ScanOutput) -> Vec<Vec<f32>> {
    vec![host(o.y), host(o.state)]
}

fn shape((bs, d, l, n, g, ..): Case) -> String {
    format!("B {bs} D {d} L {l} N {n} G {g}")
}

/// Forces the GPU scan's span count and staging while it lives (nothing on a CPU).
struct Plan;

impl Plan {
    fn force(spans: usize, stage: bool) -> Self {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            crate::tuning::set_gpu_scan_spans(Some(spans));
            crate::tuning::set_gpu_scan_staging(Some(stage));
        }
        let _ = (spans, stage);
        Self
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            crate::tuning::set_gpu_scan_spans(None);
            crate::tuning::set_gpu_scan_staging(None);
        }
    }
}

/// The GPU's plans: one pass and 3 spans, direct and staged loads; the CPU has one path.
fn plans(s: &Suite<'_>) -> Vec<(usize, bool)> {
    if s.gpu() {
        vec![(1, false), (1, true), (3, true), (3, false)]
    } else {
        vec![(1, false)]
    }
}

fn label(s: &Suite<'_>, what: &str, spans: usize, stage: bool) -> String {
    if !s.gpu() {
        return what.to_string();
    }
    let pass = if spans == 1 {
        "one pass".to_string()
    } else {
        format!("{spans} spans")
    };
    let loads = if stage { "staged" } else { "direct" };
    format!("{what}, {pass}, {loads}")
}

pub(super) fn checks(s: &mut Suite<'_>) {
    for (spans, stage) in plans(s) {
        for case in CASES {
            let x = inputs(s, case);
            let _plan = Plan::force(spans, stage);
            s.check(
                label(s, "scan forward", spans, stage),
                shape(case),
                FORWARD,
                &FORWARD_BOUNDS,
                || outputs(scan(&x).run_reference()),
                || outputs(scan(&x).run()),
            );
        }
    }
    packed(s);
    for spans in if s.gpu() { vec![1, 2] } else { vec![1] } {
        for case in [CASES[1], CASES[3], CASES[4]] {
            backward(s, case, spans);
        }
    }
    for dtype in [FloatDType::F16, FloatDType::BF16] {
        if s.gpu() && s.has(DType::from(dtype)) {
            half(s, dtype);
        }
    }
}

/// Two rows of packed documents (lengths 15 + 22 and 37): the state restarts where a row's
/// document changes.
fn packed(s: &mut Suite<'_>) {
    let case = (2, 40, 37, 16, 2, true, true, true);
    let mut x = inputs(s, case);
    let seq_idx = match seq_idx_from_lengths(&[vec![15, 22], vec![37]], &s.device) {
        Ok(i) => i,
        Err(e) => panic!("the packed rows' indices: {e}"),
    };
    x.seq_idx = Some(seq_idx);
    for (spans, stage) in plans(s) {
        let _plan = Plan::force(spans, stage);
        s.check(
            label(s, "scan forward, packed rows", spans, stage),
            format!("{}, documents 15+22 | 37", shape(case)),
            FORWARD,
            &FORWARD_BOUNDS,
            || outputs(scan(&x).run_reference()),
            || outputs(scan(&x).run()),
        );
    }
}

/// The gradients of `sum(y * wy) + sum(state * wh)` through the op (its hand-written backward:
/// the kernels) and through Burn's autodiff of the portable body, on the device.
fn backward(s: &mut Suite<'_>, case: Case, spans: usize) {
    let (bs, d, l, n, ..) = case;
    let x = inputs(s, case);
    let (wy, wh) = (s.normal([bs, d, l]), s.normal([bs, d, n]));
    let cut = spans > 1 && l.is_multiple_of(spans);
    let kernels = Kernels {
        gpu: if cut {
            &["scan_bwd_kernel", "scan_bwd_span_kernel"]
        } else {
            &["scan_bwd_kernel"]
        },
        cpu: Some(CpuKernel::ScanBackward),
    };
    let what = if spans == 1 {
        "scan backward".to_string()
    } else {
        format!("scan backward, {spans} spans")
    };
    let _plan = Plan::force(spans, s.gpu());
    s.check(
        what,
        shape(case),
        kernels,
        &GRADIENT_BOUNDS,
        || gradients(&x, &wy, &wh, true),
        || gradients(&x, &wy, &wh, false),
    );
}

fn gradients(x: &Inputs, wy: &Tensor<3>, wh: &Tensor<3>, reference: bool) -> Vec<Vec<f32>> {
    let device = x.u.device().autodiff();
    let (z, h0) = (
        x.z.as_ref().expect("the backward cases have a gate"),
        x.h0.as_ref()
            .expect("the backward cases have an initial state"),
    );
    let (u, delta, a, b, c) = (
        track(&x.u, &device),
        track(&x.delta, &device),
        track(&x.a, &device),
        track(&x.b, &device),
        track(&x.c, &device),
    );
    let (d, z, bias, h0) = (
        track(&x.d, &device),
        track(z, &device),
        track(&x.bias, &device),
        track(h0, &device),
    );
    let op = SelectiveScan::new(u.clone(), delta.clone(), a.clone(), b.clone(), c.clone())
        .d(d.clone())
        .z(z.clone())
        .delta_bias(bias.clone())
        .initial_state(h0.clone())
        .softplus(x.softplus);
    let out = if reference {
        op.run_reference()
    } else {
        op.run()
    };
    let on = |t: &Tensor<3>| Tensor::<3>::from_data(t.clone().into_data(), &device);
    let grads = ((out.y * on(wy)).sum() + (out.state * on(wh)).sum()).backward();
    vec![
        grad(&u, &grads),
        grad(&delta, &grads),
        grad(&a, &grads),
        grad(&b, &grads),
        grad(&c, &grads),
        grad(&d, &grads),
        grad(&z, &grads),
        grad(&bias, &grads),
        grad(&h0, &grads),
    ]
}

/// The forward reading u, delta, B, C, z in a half type and writing y in it (the state and the
/// sums in f32), against the portable body on the same half values widened to f32: the only
/// differences are y's rounding to the half type (half a unit in the last place: 2^-11 of |y|
/// in f16, 2^-8 in bf16) and the f32 sums' order. Bounds relative to y's scale: 1e-3 (f16)
/// and 1e-2 (bf16); the state 2e-5 (lavapipe: 1.8e-6).
fn half(s: &mut Suite<'_>, dtype: FloatDType) {
    let (name, y_bound) = match dtype {
        FloatDType::BF16 => ("bf16", 1e-2),
        _ => ("f16", 1e-3),
    };
    for (spans, stage) in plans(s) {
        for case in [CASES[1], CASES[3]] {
            let mut x = inputs(s, case);
            x.u = x.u.cast(dtype);
            x.delta = x.delta.cast(dtype);
            x.b = x.b.cast(dtype);
            x.c = x.c.cast(dtype);
            x.z = x.z.map(|z| z.cast(dtype));
            let mut wide = x.clone();
            wide.u = wide.u.cast(FloatDType::F32);
            wide.delta = wide.delta.cast(FloatDType::F32);
            wide.b = wide.b.cast(FloatDType::F32);
            wide.c = wide.c.cast(FloatDType::F32);
            wide.z = wide.z.map(|z| z.cast(FloatDType::F32));
            let _plan = Plan::force(spans, stage);
            s.check(
                label(s, &format!("scan forward {name}"), spans, stage),
                shape(case),
                FORWARD,
                &[("y", y_bound), ("state", 2e-5)],
                || outputs(scan(&wide).run_reference()),
                || {
                    let out = scan(&x).run();
                    assert_eq!(
                        out.y.dtype(),
                        DType::from(dtype),
                        "y comes back in the activations' type"
                    );
                    outputs(out)
                },
            );
        }
    }
}
