//! Mamba2's SSD (chunked: the decay-mask and state-pass kernels on a GPU, the fused recurrence
//! on the CPU), with packed rows, with Mamba-3's per-step log decays and rank, and the log-decay
//! form's backward.

use super::{Bound, CpuKernel, Kernels, Suite, grad, host, track};
use crate::Ssd;
use burn::tensor::{Int, Tensor, TensorData};

const FORWARD: Kernels = Kernels {
    gpu: &["ssd_decay_mask_kernel", "ssd_state_pass_kernel"],
    cpu: Some(CpuKernel::SsdForward),
};

/// y and the final state (the wgpu tests' bounds: measured 2.3e-7 and 1.1e-7).
const FORWARD_BOUNDS: [Bound; 2] = [("y", 5e-6), ("state", 2e-6)];

/// The log-decay form's gradients, then y and the final state (the wgpu tests' bounds, 10x
/// lavapipe's measured errors).
const BACKWARD_BOUNDS: [Bound; 9] = [
    ("dx", 5e-6),
    ("ddt", 5e-6),
    ("dlog_decay", 2e-6),
    ("dB", 5e-6),
    ("dC", 5e-6),
    ("dD", 2e-6),
    ("dh0", 5e-6),
    ("y", 2e-6),
    ("state", 5e-6),
];

/// (batch, length, rank, heads, head dim, groups, state, chunk): L = 1; L not a multiple of
/// the chunk; N = 128 (Mamba2's).
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
const CASES: [Case; 3] = [
    (2, 1, 1, 2, 4, 1, 8, 8),
    (2, 37, 1, 4, 16, 2, 8, 8),
    (1, 40, 1, 2, 8, 1, 128, 16),
];

/// Mamba-3's shapes: rank 1 and 2 (MIMO), L not a multiple of the chunk.
const LOG_DECAY_CASES: [Case; 2] = [(2, 37, 1, 4, 8, 2, 16, 16), (2, 30, 2, 2, 8, 1, 16, 8)];

struct Inputs {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    h0: Tensor<4>,
    log_decay: Option<Tensor<3>>,
    seq_idx: Option<Tensor<2, Int>>,
    chunk: usize,
    rank: usize,
}

fn inputs(s: &mut Suite<'_>, (bs, l, r, h, p, g, n, chunk): Case, log_decay: bool) -> Inputs {
    Inputs {
        x: s.normal([bs, l * r, h, p]),
        dt: s.uniform([bs, l, h], 0.01, 0.3),
        a: s.uniform([h], 0.5, 8.0).neg(),
        b: s.normal([bs, l * r, g, n]),
        c: s.normal([bs, l * r, g, n]),
        d: s.normal([h]),
        h0: s.normal([bs, h, p, n]),
        log_decay: log_decay.then(|| s.uniform([bs, l, h], -1.5, -0.01)),
        seq_idx: None,
        chunk,
        rank: r,
    }
}

impl Inputs {
    fn op(&self) -> Ssd {
        let mut op = Ssd::new(
            self.x.clone(),
            self.dt.clone(),
            self.a.clone(),
            self.b.clone(),
            self.c.clone(),
        )
        .d(self.d.clone())
        .initial_state(self.h0.clone())
        .chunk(self.chunk)
        .rank(self.rank);
        if let Some(ld) = &self.log_decay {
            op = op.log_decay(ld.clone());
        }
        if let Some(i) = &self.seq_idx {
            op = op.seq_idx(i.clone());
        }
        op
    }
}

fn shape((bs, l, r, h, p, g, n, chunk): Case) -> String {
    let rank = if r > 1 {
        format!(" R {r}")
    } else {
        String::new()
    };
    format!("B {bs} L {l}{rank} H {h} P {p} G {g} N {n} chunk {chunk}")
}

fn outputs((y, state): (Tensor<4>, Tensor<4>)) -> Vec<Vec<f32>> {
    vec![host(y), host(state)]
}

/// Row 1 restarts at L/3 and 2L/3; row 0 is one sequence.
fn packed_rows(bs: usize, l: usize, device: &burn::tensor::Device) -> Tensor<2, Int> {
    let seq: Vec<i64> = (0..bs)
        .flat_map(|row| {
            (0..l as i64).map(move |t| {
                if row == 1 {
                    i64::from(3 * t >= l as i64) + i64::from(3 * t >= 2 * l as i64)
                } else {
                    0
                }
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(seq, [bs, l]), device)
}

pub(super) fn checks(s: &mut Suite<'_>) {
    for case in CASES {
        let x = inputs(s, case, false);
        s.check(
            "ssd",
            shape(case),
            FORWARD,
            &FORWARD_BOUNDS,
            || outputs(x.op().run_reference()),
            || outputs(x.op().run()),
        );
    }
    let case = CASES[1];
    let mut x = inputs(s, case, false);
    x.seq_idx = Some(packed_rows(case.0, case.1, &s.device));
    s.check(
        "ssd, packed rows",
        format!("{}, row 1 in 3 documents", shape(case)),
        FORWARD,
        &FORWARD_BOUNDS,
        || outputs(x.op().run_reference()),
        || outputs(x.op().run()),
    );
    for case in LOG_DECAY_CASES {
        let mut x = inputs(s, case, true);
        x.seq_idx = Some(packed_rows(case.0, case.1, &s.device));
        s.check(
            "ssd, log decays, packed rows",
            shape(case),
            FORWARD,
            &FORWARD_BOUNDS,
            || outputs(x.op().run_reference()),
            || outputs(x.op().run()),
        );
        let (wy, wh) = (
            s.normal([case.0, case.1 * case.2, case.3, case.4]),
            s.normal([case.0, case.3, case.4, case.6]),
        );
        s.check(
            "ssd backward, log decays, packed rows",
            shape(case),
            Kernels {
                gpu: &["ssd_state_pass_kernel"],
                cpu: Some(CpuKernel::SsdBackward),
            },
            &BACKWARD_BOUNDS,
            || gradients(&x, &wy, &wh, true),
            || gradients(&x, &wy, &wh, false),
        );
    }
}

/// Gradients of `sum(y * wy) + sum(state * wh)` for x, dt, the log decays, B, C, D and the
/// initial state, then y and the state, through the op or through Burn's autodiff of the
/// portable chunked body, on the device.
fn gradients(x: &Inputs, wy: &Tensor<4>, wh: &Tensor<4>, reference: bool) -> Vec<Vec<f32>> {
    let device = x.x.device().autodiff();
    let log_decay = x.log_decay.as_ref().expect("a log-decay case");
    let tracked = Inputs {
        x: track(&x.x, &device),
        dt: track(&x.dt, &device),
        a: Tensor::from_data(x.a.clone().into_data(), &device),
        b: track(&x.b, &device),
        c: track(&x.c, &device),
        d: track(&x.d, &device),
        h0: track(&x.h0, &device),
        log_decay: Some(track(log_decay, &device)),
        seq_idx: x
            .seq_idx
            .as_ref()
            .map(|i| Tensor::from_data(i.clone().into_data(), &device)),
        chunk: x.chunk,
        rank: x.rank,
    };
    let (y, state) = if reference {
        tracked.op().run_reference()
    } else {
        tracked.op().run()
    };
    let values = (host(y.clone()), host(state.clone()));
    let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &device);
    let grads = ((y * on(wy)).sum() + (state * on(wh)).sum()).backward();
    vec![
        grad(&tracked.x, &grads),
        grad(&tracked.dt, &grads),
        grad(tracked.log_decay.as_ref().expect("tracked"), &grads),
        grad(&tracked.b, &grads),
        grad(&tracked.c, &grads),
        grad(&tracked.d, &grads),
        grad(&tracked.h0, &grads),
        values.0,
        values.1,
    ]
}
