//! The selective scan: fused CPU kernel vs the portable body, gradients vs float64 central
//! finite differences and vs autodiff through the portable body, and the mamba_tiny fixture.
//! All on Flex; each bound is relative to the tensor's own scale: 4x the largest error measured
//! for it, rounded up to 1, 2 or 5 times a power of ten (at least 1e-6).

use burn::backend::Dispatch;
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::cpu_kernel_calls;
use ssm_backends::testing::portable::{self, ScanArgs};
use ssm_backends::testing::{Fixture, TestRng, assert_rel, fixtures_dir};
use ssm_backends::{SelectiveScan, to_vec, ungrouped};

mod common;
use common::{Case, Inputs, NAMES, inputs, loss_weights, op_gradients, scan};

fn cpu_device() -> Device {
    Device::flex()
}

const CASES: &[Case] = &[
    Case {
        batch: 2,
        dim: 4,
        len: 1,
        state: 8,
        groups: 1,
        gate: true,
        init: false,
        softplus: true,
    },
    Case {
        batch: 1,
        dim: 6,
        len: 37,
        state: 16,
        groups: 1,
        gate: true,
        init: true,
        softplus: true,
    },
    Case {
        batch: 2,
        dim: 8,
        len: 37,
        state: 5,
        groups: 2,
        gate: false,
        init: true,
        softplus: true,
    },
    Case {
        batch: 3,
        dim: 8,
        len: 64,
        state: 16,
        groups: 4,
        gate: true,
        init: false,
        softplus: false,
    },
    Case {
        batch: 1,
        dim: 4,
        len: 4096,
        state: 16,
        groups: 1,
        gate: true,
        init: true,
        softplus: true,
    },
    Case {
        batch: 2,
        dim: 4,
        len: 4096,
        state: 16,
        groups: 2,
        gate: false,
        init: false,
        softplus: true,
    },
];

#[test]
fn fused_kernel_matches_portable_body() {
    let device = cpu_device();
    let mut rng = TestRng::new(1);
    for &case in CASES {
        let x = inputs(case, &mut rng, &device);
        let before = cpu_kernel_calls().scan_forward;
        let fused = scan(&x).run();
        assert!(
            cpu_kernel_calls().scan_forward > before,
            "the fused kernel did not run"
        );
        let reference = scan(&x).run_reference();
        // Measured 2.8e-7 (y), 1.7e-7 (state).
        assert_rel(
            &format!("{case:?}: y"),
            &to_vec(fused.y),
            &to_vec(reference.y),
            2e-6,
        );
        assert_rel(
            &format!("{case:?}: state"),
            &to_vec(fused.state),
            &to_vec(reference.state),
            1e-6,
        );
    }
}

#[test]
fn ungrouped_b_and_c_equal_one_group() {
    let device = cpu_device();
    let mut rng = TestRng::new(2);
    let case = Case {
        batch: 2,
        dim: 4,
        len: 9,
        state: 3,
        groups: 1,
        gate: true,
        init: false,
        softplus: true,
    };
    let x = inputs(case, &mut rng, &device);
    let b3 = x.b.clone().squeeze_dim::<3>(1);
    let c3 = x.c.clone().squeeze_dim::<3>(1);
    let grouped = scan(&x).run();
    let plain = SelectiveScan::new(
        x.u.clone(),
        x.delta.clone(),
        x.a.clone(),
        ungrouped(b3),
        ungrouped(c3),
    )
    .d(x.d.clone())
    .delta_bias(x.bias.clone())
    .z(x.z.clone().unwrap())
    .softplus(true)
    .run();
    assert_eq!(to_vec(grouped.y), to_vec(plain.y));
}

#[test]
fn splitting_a_sequence_through_the_state_equals_one_pass() {
    // Chunked (streaming) inference: scan [0, 20) then [20, 45) from the returned state.
    let device = cpu_device();
    let mut rng = TestRng::new(3);
    let case = Case {
        batch: 2,
        dim: 6,
        len: 45,
        state: 4,
        groups: 2,
        gate: true,
        init: true,
        softplus: true,
    };
    let x = inputs(case, &mut rng, &device);
    let whole = scan(&x).run();
    let part = |x: &Inputs, lo: usize, hi: usize, h0: Tensor<3>| {
        SelectiveScan::new(
            x.u.clone().narrow(2, lo, hi - lo),
            x.delta.clone().narrow(2, lo, hi - lo),
            x.a.clone(),
            x.b.clone().narrow(3, lo, hi - lo),
            x.c.clone().narrow(3, lo, hi - lo),
        )
        .d(x.d.clone())
        .delta_bias(x.bias.clone())
        .z(x.z.clone().unwrap().narrow(2, lo, hi - lo))
        .initial_state(h0)
        .softplus(true)
        .run()
    };
    let first = part(&x, 0, 20, x.h0.clone().unwrap());
    let second = part(&x, 20, 45, first.state);
    let y = Tensor::cat(vec![first.y, second.y], 2);
    // Measured 0 (y and state).
    assert_rel("split: y", &to_vec(y), &to_vec(whole.y), 1e-6);
    assert_rel(
        "split: state",
        &to_vec(second.state),
        &to_vec(whole.state),
        1e-6,
    );
}

/// The scan in float64 on plain vectors, straight from the definition.
#[allow(clippy::too_many_arguments)]
fn reference_f64(
    c: Case,
    u: &[f64],
    delta: &[f64],
    a: &[f64],
    b: &[f64],
    cm: &[f64],
    d: &[f64],
    z: &[f64],
    bias: &[f64],
    h0: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (bs, dim, l, n, g) = (c.batch, c.dim, c.len, c.state, c.groups);
    let per = dim / g;
    let mut y = vec![0.0; bs * dim * l];
    let mut hl = vec![0.0; bs * dim * n];
    for bi in 0..bs {
        for di in 0..dim {
            let gi = di / per;
            let mut h: Vec<f64> = (0..n).map(|k| h0[(bi * dim + di) * n + k]).collect();
            for t in 0..l {
                let i = (bi * dim + di) * l + t;
                let raw = delta[i] + bias[di];
                let dt = if c.softplus {
                    (1.0 + raw.exp()).ln()
                } else {
                    raw
                };
                let mut acc = 0.0;
                for k in 0..n {
                    let bc = ((bi * g + gi) * n + k) * l + t;
                    h[k] = (dt * a[di * n + k]).exp() * h[k] + dt * b[bc] * u[i];
                    acc += cm[bc] * h[k];
                }
                let mut out = acc + d[di] * u[i];
                if c.gate {
                    out *= z[i] / (1.0 + (-z[i]).exp());
                }
                y[i] = out;
            }
            hl[(bi * dim + di) * n..(bi * dim + di + 1) * n].copy_from_slice(&h);
        }
    }
    (y, hl)
}

fn f64s<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    to_vec(t.clone()).into_iter().map(f64::from).collect()
}

#[test]
fn gradients_match_float64_finite_differences() {
    let device = cpu_device();
    let mut rng = TestRng::new(4);
    let case = Case {
        batch: 2,
        dim: 4,
        len: 7,
        state: 3,
        groups: 2,
        gate: true,
        init: true,
        softplus: true,
    };
    let x = inputs(case, &mut rng, &device);
    let (wy, wh) = loss_weights(case, &mut rng, &device);
    let before = cpu_kernel_calls().scan_backward;
    let analytic = op_gradients(&x, &wy, &wh, false);
    assert!(
        cpu_kernel_calls().scan_backward > before,
        "the fused backward did not run"
    );

    let mut vals = [
        f64s(&x.u),
        f64s(&x.delta),
        f64s(&x.a),
        f64s(&x.b),
        f64s(&x.c),
        f64s(&x.d),
        f64s(x.z.as_ref().unwrap()),
        f64s(&x.bias),
        f64s(x.h0.as_ref().unwrap()),
    ];
    let (wy, wh) = (f64s(&wy), f64s(&wh));
    let loss = |v: &[Vec<f64>; 9]| {
        let (y, h) = reference_f64(
            case, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8],
        );
        y.iter().zip(&wy).map(|(a, b)| a * b).sum::<f64>()
            + h.iter().zip(&wh).map(|(a, b)| a * b).sum::<f64>()
    };
    let eps = 1e-6;
    // The differences are taken in float64 on the definition: their own error (rounding about
    // 1e-16 |loss| / eps, truncation about eps^2) is near 1e-9, far below f32's, so the bound is
    // set by the f32 gradients, not by the step. Measured 1.6e-7 at most (du), the others
    // 3.7e-8 to 1.3e-7 (the bound was 2e-4).
    for (k, name) in NAMES.iter().enumerate() {
        let mut fd = Vec::with_capacity(vals[k].len());
        for i in 0..vals[k].len() {
            let orig = vals[k][i];
            vals[k][i] = orig + eps;
            let up = loss(&vals);
            vals[k][i] = orig - eps;
            let down = loss(&vals);
            vals[k][i] = orig;
            fd.push(((up - down) / (2.0 * eps)) as f32);
        }
        assert_rel(
            &format!("d{name} vs finite differences"),
            &analytic[k],
            &fd,
            1e-6,
        );
    }
}

/// The fused backward's gradients against autodiff through the portable body, in the order of
/// [`NAMES`]: the largest error measured over the three cases.
const FUSED_GRADIENT_BOUNDS: [f64; 9] = [
    1e-6, // du: 1.6e-7
    1e-6, // ddelta: 1.6e-7
    5e-6, // dA: 5.1e-7 (L 150, N 16; 1.4e-7 elsewhere)
    1e-6, // dB: 1.7e-7
    1e-6, // dC: 2.3e-7
    1e-6, // dD: 2.5e-7
    1e-6, // dz: 2.0e-7
    1e-6, // ddelta_bias: 1.6e-7
    1e-6, // dh0: 2.2e-7
];

#[test]
fn fused_backward_matches_autodiff_through_portable_body() {
    let device = cpu_device();
    let mut rng = TestRng::new(5);
    for case in [
        Case {
            batch: 2,
            dim: 6,
            len: 37,
            state: 5,
            groups: 3,
            gate: true,
            init: true,
            softplus: true,
        },
        // Longer than one backward chunk (64) and not a multiple of it.
        Case {
            batch: 1,
            dim: 4,
            len: 150,
            state: 16,
            groups: 1,
            gate: true,
            init: true,
            softplus: true,
        },
        Case {
            batch: 1,
            dim: 2,
            len: 1,
            state: 4,
            groups: 1,
            gate: true,
            init: true,
            softplus: false,
        },
    ] {
        let x = inputs(case, &mut rng, &device);
        let (wy, wh) = loss_weights(case, &mut rng, &device);
        let fused = op_gradients(&x, &wy, &wh, false);
        let reference = op_gradients(&x, &wy, &wh, true);
        for (k, name) in NAMES.iter().enumerate() {
            let tol = FUSED_GRADIENT_BOUNDS[k];
            assert_rel(&format!("{case:?} d{name}"), &fused[k], &reference[k], tol);
        }
    }
}

#[test]
fn portable_backward_matches_autodiff_through_portable_body() {
    // The default body of `selective_scan_backward` (what backends without a kernel run).
    let device = cpu_device();
    let mut rng = TestRng::new(6);
    let case = Case {
        batch: 2,
        dim: 4,
        len: 21,
        state: 3,
        groups: 2,
        gate: true,
        init: true,
        softplus: true,
    };
    let x = inputs(case, &mut rng, &device);
    let (wy, wh) = loss_weights(case, &mut rng, &device);
    let reference = op_gradients(&x, &wy, &wh, true);
    let g = portable::selective_scan_backward::<Dispatch>(
        ScanArgs {
            u: x.u.clone().into_dispatch(),
            delta: x.delta.clone().into_dispatch(),
            a: x.a.clone().into_dispatch(),
            b: x.b.clone().into_dispatch(),
            c: x.c.clone().into_dispatch(),
            d: x.d.clone().into_dispatch(),
            z: x.z.clone().map(Tensor::into_dispatch),
            delta_bias: x.bias.clone().into_dispatch(),
            h0: x.h0.clone().unwrap().into_dispatch(),
            reset: None,
            delta_softplus: true,
        },
        wy.into_dispatch(),
        wh.into_dispatch(),
        8, // several chunks, the last one partial
    );
    let t3 = |t| to_vec(Tensor::<3>::from_dispatch(t));
    let got = [
        t3(g.du),
        t3(g.ddelta),
        to_vec(Tensor::<2>::from_dispatch(g.da)),
        to_vec(Tensor::<4>::from_dispatch(g.db)),
        to_vec(Tensor::<4>::from_dispatch(g.dc)),
        to_vec(Tensor::<1>::from_dispatch(g.dd)),
        t3(g.dz.unwrap()),
        to_vec(Tensor::<1>::from_dispatch(g.ddelta_bias)),
        t3(g.dh0),
    ];
    // Measured 9.3e-8 at most (dD), several exact.
    for (k, name) in NAMES.iter().enumerate() {
        assert_rel(&format!("d{name}"), &got[k], &reference[k], 1e-6);
    }
}

#[test]
fn forward_matches_float64_definition() {
    let device = cpu_device();
    let mut rng = TestRng::new(7);
    let case = Case {
        batch: 2,
        dim: 4,
        len: 300,
        state: 16,
        groups: 2,
        gate: true,
        init: true,
        softplus: true,
    };
    let x = inputs(case, &mut rng, &device);
    let out = scan(&x).run();
    let (y, h) = reference_f64(
        case,
        &f64s(&x.u),
        &f64s(&x.delta),
        &f64s(&x.a),
        &f64s(&x.b),
        &f64s(&x.c),
        &f64s(&x.d),
        &f64s(x.z.as_ref().unwrap()),
        &f64s(&x.bias),
        &f64s(x.h0.as_ref().unwrap()),
    );
    let y: Vec<f32> = y.into_iter().map(|v| v as f32).collect();
    let h: Vec<f32> = h.into_iter().map(|v| v as f32).collect();
    // Measured 1.1e-7 (y), 7.6e-8 (state).
    assert_rel("f64 definition: y", &to_vec(out.y), &y, 1e-6);
    assert_rel("f64 definition: state", &to_vec(out.state), &h, 1e-6);
}

#[test]
fn reproduces_the_mamba_tiny_scans() {
    let device = cpu_device();
    let dir = fixtures_dir().join("mamba_tiny");
    let t = Fixture::open(dir.join("tensors.safetensors"));
    let w = Fixture::open(dir.join("model/model.safetensors"));
    for layer in 0..2 {
        let p = format!("layers.{layer}.scan");
        let m = format!("backbone.layers.{layer}.mixer");
        let b: Tensor<3> = t.tensor(&format!("{p}.B"), &device);
        let c: Tensor<3> = t.tensor(&format!("{p}.C"), &device);
        let out = SelectiveScan::new(
            t.tensor(&format!("{p}.u"), &device),
            t.tensor(&format!("{p}.delta_pre_softplus"), &device),
            t.tensor(&format!("{p}.A"), &device),
            ungrouped(b),
            ungrouped(c),
        )
        .d(w.tensor(&format!("{m}.D"), &device))
        .z(t.tensor(&format!("{p}.z"), &device))
        .delta_bias(w.tensor(&format!("{m}.dt_proj.bias"), &device))
        .softplus(true)
        .run();
        let (want, _) = t.values(&format!("{p}.y"));
        // Measured 6.1e-8.
        assert_rel(&format!("layer {layer}: y"), &to_vec(out.y), &want, 1e-6);
        // The final state is the reference's cache (scale about 2e-2; it was an absolute 1e-5).
        // Measured 3.0e-7.
        let (state, _) = t.values(&format!("cache.{layer}.ssm_state"));
        assert_rel(
            &format!("layer {layer}: ssm_state"),
            &to_vec(out.state),
            &state,
            2e-6,
        );
    }
}

/// The fused decode step against one step of the scan: a small case (on the calling thread)
/// and mamba-130m's (1536 channels x 16 states: spread over the pool).
#[test]
fn decode_step_matches_one_scan_step() {
    let device = cpu_device();
    let mut rng = TestRng::new(8);
    for (batch, dim, state, groups) in [(2, 6, 4, 3), (1, 1536, 16, 1)] {
        let case = Case {
            batch,
            dim,
            len: 1,
            state,
            groups,
            gate: true,
            init: true,
            softplus: true,
        };
        let x = inputs(case, &mut rng, &device);
        let full = scan(&x).run();
        let before = cpu_kernel_calls().step;
        let (y, h) = ssm_backends::selective_state_step(
            x.h0.clone().unwrap(),
            x.u.clone().squeeze_dim(2),
            x.delta.clone().squeeze_dim(2),
            x.a.clone(),
            x.b.clone().squeeze_dim(3),
            x.c.clone().squeeze_dim(3),
            x.d.clone(),
            x.z.clone().map(|z| z.squeeze_dim(2)),
            x.bias.clone(),
            true,
        );
        assert!(
            cpu_kernel_calls().step > before,
            "the fused step did not run"
        );
        // Measured 1.3e-7 (y), 1.1e-7 (state).
        assert_rel(&format!("{case:?}: y"), &to_vec(y), &to_vec(full.y), 1e-6);
        assert_rel(
            &format!("{case:?}: state"),
            &to_vec(h),
            &to_vec(full.state),
            1e-6,
        );
    }
}

#[test]
fn conv_step_matches_portable_step() {
    let device = cpu_device();
    let mut rng = TestRng::new(9);
    let x = rng.tensor::<2>([2, 5], Distribution::Normal(0.0, 1.0), &device);
    let st = rng.tensor::<3>([2, 5, 4], Distribution::Normal(0.0, 1.0), &device);
    let w = rng.tensor::<2>([5, 4], Distribution::Normal(0.0, 1.0), &device);
    let b = rng.tensor::<1>([5], Distribution::Normal(0.0, 1.0), &device);
    let (y, s) =
        ssm_backends::causal_conv1d_step(x.clone(), st.clone(), w.clone(), b.clone(), true);
    let (ry, rs) = portable::causal_conv1d_step::<Dispatch>(
        x.into_dispatch(),
        st.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        true,
    );
    // Measured 0.
    assert_rel(
        "conv step: y",
        &to_vec(y),
        &to_vec(Tensor::<2>::from_dispatch(ry)),
        1e-6,
    );
    assert_eq!(to_vec(s), to_vec(Tensor::<3>::from_dispatch(rs)));
}

#[test]
#[should_panic(expected = "B has 3 groups, which must divide D = 4")]
fn bad_group_count_is_reported() {
    let device = cpu_device();
    let u = Tensor::<3>::zeros([1, 4, 5], &device);
    let b = Tensor::<4>::zeros([1, 3, 2, 5], &device);
    let _ = SelectiveScan::new(u.clone(), u, Tensor::zeros([4, 2], &device), b.clone(), b).run();
}
