//! Mamba-3's fused decode step (SISO and MIMO, with and without the output norm, groups, odd
//! head widths): the fused CPU pass (Flex) and the GPU kernel (wgpu, one launch) against the
//! portable body on the same inputs (errors relative to each output's largest magnitude).

use burn::backend::Dispatch;
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::portable::mamba3_step_composed;
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls};
use ssm_backends::{Mamba3StepConfig, Mamba3StepDims, mamba3_decode_step, to_vec};

/// (batch, heads, head_dim, state, groups, rank, angles, mimo, outproj_norm)
type Case = (usize, usize, usize, usize, usize, usize, usize, bool, bool);

const CASES: [Case; 6] = [
    (2, 4, 16, 16, 1, 2, 4, true, false),
    (2, 4, 16, 16, 1, 1, 4, false, false),
    (1, 4, 8, 16, 2, 1, 8, false, true),
    (2, 8, 8, 16, 2, 4, 8, true, true),
    (1, 3, 5, 8, 1, 3, 2, true, false),
    (3, 2, 64, 32, 1, 4, 8, true, true),
];

struct Inputs {
    proj: Tensor<2>,
    conv: Tensor<3>,
    ssm: Tensor<3>,
    weights: Tensor<1>,
    cfg: Mamba3StepConfig,
}

fn inputs(case: Case, rng: &mut TestRng, device: &Device) -> Inputs {
    let (bs, h, p, n, g, r, s, mimo, outproj_norm) = case;
    let cfg = Mamba3StepConfig {
        heads: h,
        groups: g,
        rank: r,
        angles: s,
        mimo,
        outproj_norm,
        a_floor: 1e-4,
        eps: 1e-5,
    };
    let d = Mamba3StepDims {
        batch: bs,
        heads: h,
        head_dim: p,
        state: n,
        groups: g,
        rank: r,
        angles: s,
    };
    let normal = Distribution::Normal(0.0, 1.0);
    let o = d.offsets();
    // Weights near their working ranges: dt_bias so that Δ is small, the rest O(1).
    let mut parts = vec![rng.tensor::<1>([h], Distribution::Uniform(-4.0, -1.0), device)];
    for i in 1..10 {
        parts.push(rng.tensor::<1>([o[i + 1] - o[i]], normal, device));
    }
    Inputs {
        proj: rng.tensor::<2>([bs, d.proj_width()], normal, device),
        conv: rng.tensor::<3>([bs, h, s + r * n + p], normal, device),
        ssm: rng.tensor::<3>([bs, h * p, n], normal, device),
        weights: Tensor::cat(parts, 0),
        cfg,
    }
}

fn composed(x: &Inputs) -> [Vec<f32>; 3] {
    let (y, c, s) = mamba3_step_composed::<Dispatch>(
        x.proj.clone().into_dispatch(),
        x.conv.clone().into_dispatch(),
        x.ssm.clone().into_dispatch(),
        x.weights.clone().into_dispatch(),
        x.cfg,
    );
    [
        to_vec(Tensor::<2>::from_dispatch(y)),
        to_vec(Tensor::<3>::from_dispatch(c)),
        to_vec(Tensor::<3>::from_dispatch(s)),
    ]
}

fn fused(x: &Inputs, device: &Device) -> [Vec<f32>; 3] {
    let on = |t: Tensor<1>| t.to_device(device);
    let (y, c, s) = mamba3_decode_step(
        x.proj.clone().to_device(device),
        x.conv.clone().to_device(device),
        x.ssm.clone().to_device(device),
        on(x.weights.clone()),
        x.cfg,
    );
    [to_vec(y), to_vec(c), to_vec(s)]
}

/// Bounds relative to each output's own scale (its largest magnitude), over all the cases:
/// 4x the largest error measured on Flex, 10x on wgpu (lavapipe), rounded up to 1, 2 or 5
/// times a power of ten.
struct Bounds {
    y: f64,
    conv_state: f64,
    ssm_state: f64,
}

/// The fused CPU pass (Flex).
const FLEX: Bounds = Bounds {
    y: 1e-6,          // measured 2.4e-7
    conv_state: 1e-6, // measured 1.5e-7
    ssm_state: 1e-6,  // measured 1.0e-7
};

/// The GPU kernel (wgpu, lavapipe).
const WGPU: Bounds = Bounds {
    y: 5e-6,          // measured 4.2e-7
    conv_state: 5e-6, // measured 3.2e-7
    ssm_state: 5e-6,  // measured 4.8e-7
};

/// Each output within its bound of the portable body's, relative to its largest magnitude.
fn assert_close(case: Case, what: &str, got: &[Vec<f32>; 3], want: &[Vec<f32>; 3], b: &Bounds) {
    let names = [
        ("y", b.y),
        ("conv state", b.conv_state),
        ("ssm state", b.ssm_state),
    ];
    for ((name, tol), (g, w)) in names.iter().zip(got.iter().zip(want)) {
        assert_rel(&format!("{case:?}: {what} {name}"), g, w, *tol);
    }
}

#[test]
fn the_fused_cpu_step_matches_the_portable_body() {
    let device = Device::flex();
    let mut rng = TestRng::new(3);
    for case in CASES {
        let x = inputs(case, &mut rng, &device);
        let want = composed(&x);
        let before = cpu_kernel_calls().step;
        let got = fused(&x, &device);
        assert!(cpu_kernel_calls().step > before, "the fused CPU step ran");
        assert_close(case, "CPU", &got, &want, &FLEX);
    }
}

#[test]
fn the_gpu_step_kernel_matches_the_portable_body_in_one_launch() {
    let Some(gpu) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(4);
    for case in CASES {
        let x = inputs(case, &mut rng, &cpu);
        let want = composed(&x);
        let counter = ssm_backends::LaunchCounter::start();
        let got = fused(&x, &gpu);
        assert_eq!(
            counter.count_of("mamba3_step_kernel"),
            1,
            "{case:?}: the runtime saw {:?}",
            counter.counts()
        );
        drop(counter);
        assert_close(case, "wgpu", &got, &want, &WGPU);
    }
}

#[test]
fn inconsistent_shapes_are_named() {
    let device = Device::flex();
    let x = inputs(CASES[0], &mut TestRng::new(5), &device);
    let mut cfg = x.cfg;
    cfg.rank = 3;
    let err = Mamba3StepDims::infer(
        &x.proj.dims(),
        &x.conv.dims(),
        &x.ssm.dims(),
        x.weights.dims()[0],
        &cfg,
    )
    .expect_err("rank 3 does not fit")
    .to_string();
    assert!(err.contains("mamba3 step"), "{err}");
}
