//! Mamba2's SSD scan: the chunked matmul body and the recurrence (the fused CPU SSD kernel;
//! under Autodiff, the scan kernel) against each other (random shapes, L not a multiple of the
//! chunk, groups, initial state, Mamba2's sizes), against the mamba2_tiny fixture, and their
//! gradients. Each bound is relative to the tensor's own scale: 4x the largest error measured
//! for it on Flex, 10x on wgpu (lavapipe), rounded up to 1, 2 or 5 times a power of ten (at
//! least 1e-6 on Flex, 2e-6 on wgpu).

use burn::tensor::activation::softplus;
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{Fixture, TestRng, assert_rel, cpu_kernel_calls, fixtures_dir};
use ssm_backends::to_vec;
use ssm_backends::{ssd, ssd_reference};

struct Inputs {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    h0: Tensor<4>,
}

fn inputs(
    (bs, l, h, p, g, n): (usize, usize, usize, usize, usize, usize),
    rng: &mut TestRng,
    device: &Device,
) -> Inputs {
    let normal = Distribution::Normal(0.0, 1.0);
    Inputs {
        x: rng.tensor([bs, l, h, p], normal, device),
        dt: rng.tensor([bs, l, h], Distribution::Uniform(0.01, 0.3), device),
        a: rng
            .tensor::<1>([h], Distribution::Uniform(0.5, 8.0), device)
            .neg(),
        b: rng.tensor([bs, l, g, n], normal, device),
        c: rng.tensor([bs, l, g, n], normal, device),
        d: rng.tensor([h], normal, device),
        h0: rng.tensor([bs, h, p, n], normal, device),
    }
}

const SHAPES: [(usize, usize, usize, usize, usize, usize); 4] = [
    (2, 1, 2, 3, 1, 4),
    (2, 20, 4, 16, 2, 8),
    (1, 37, 6, 5, 3, 16),
    (3, 64, 2, 8, 1, 32),
];

#[test]
fn chunked_body_equals_the_recurrence() {
    let device = Device::flex();
    let mut rng = TestRng::new(21);
    for shape in SHAPES {
        let x = inputs(shape, &mut rng, &device);
        // Flex runs the recurrence on the fused SSD kernel.

        let (y, h) = ssd(
            x.x.clone(),
            x.dt.clone(),
            x.a.clone(),
            x.b.clone(),
            x.c.clone(),
            Some(x.d.clone()),
            Some(x.h0.clone()),
            8,
        );
        let (y, h) = (to_vec(y), to_vec(h));
        for chunk in [1, 8, 16, 64] {
            let (yr, hr) = ssd_reference(
                x.x.clone(),
                x.dt.clone(),
                x.a.clone(),
                x.b.clone(),
                x.c.clone(),
                Some(x.d.clone()),
                Some(x.h0.clone()),
                chunk,
            );
            // Measured 5.3e-7 (y), 8.3e-7 (state), both at chunk 64 (<= 3.3e-7 below it).
            assert_rel(
                &format!("{shape:?} chunk {chunk}: y"),
                &to_vec(yr),
                &y,
                5e-6,
            );
            assert_rel(
                &format!("{shape:?} chunk {chunk}: state"),
                &to_vec(hr),
                &h,
                5e-6,
            );
        }
    }
}

#[test]
fn the_fused_cpu_kernel_runs_and_matches_the_chunked_body_at_mamba2_sizes() {
    let device = Device::flex();
    let mut rng = TestRng::new(23);
    // Mamba2's head_dim 64; N = 132 leaves a tail after the 8-lane blocks; two groups; L = 150
    // crosses the kernel's blocks of 64 steps, N = 24 takes a chunk of three registers.
    for shape in [
        (1, 40, 4, 64, 2, 132),
        (2, 9, 3, 5, 1, 128),
        (1, 150, 2, 8, 1, 24),
    ] {
        let x = inputs(shape, &mut rng, &device);
        let before = cpu_kernel_calls().ssd_forward;
        let (y, h) = ssd(
            x.x.clone(),
            x.dt.clone(),
            x.a.clone(),
            x.b.clone(),
            x.c.clone(),
            Some(x.d.clone()),
            Some(x.h0.clone()),
            16,
        );
        assert!(
            cpu_kernel_calls().ssd_forward > before,
            "the fused SSD kernel did not run"
        );
        let (yr, hr) = ssd_reference(x.x, x.dt, x.a, x.b, x.c, Some(x.d), Some(x.h0), 16);
        // Measured 2.4e-7 (y), 1.1e-7 (state).
        assert_rel(&format!("{shape:?}: y"), &to_vec(yr), &to_vec(y), 1e-6);
        assert_rel(&format!("{shape:?}: state"), &to_vec(hr), &to_vec(h), 1e-6);
    }
}

#[test]
fn reproduces_the_mamba2_tiny_scans() {
    let device = Device::flex();
    let dir = fixtures_dir().join("mamba2_tiny");
    let t = Fixture::open(dir.join("tensors.safetensors"));
    let w = Fixture::open(dir.join("model").join("model.safetensors"));
    for i in 0..2 {
        let x: Tensor<4> = t.tensor(&format!("layers.{i}.scan.x"), &device);
        let dt_pre: Tensor<3> = t.tensor(&format!("layers.{i}.scan.dt_pre_softplus"), &device);
        let a: Tensor<1> = t.tensor(&format!("layers.{i}.scan.A"), &device);
        let b: Tensor<4> = t.tensor(&format!("layers.{i}.scan.B"), &device);
        let c: Tensor<4> = t.tensor(&format!("layers.{i}.scan.C"), &device);
        let d: Tensor<1> = w.tensor(&format!("backbone.layers.{i}.mixer.D"), &device);
        let bias: Tensor<1> = w.tensor(&format!("backbone.layers.{i}.mixer.dt_bias"), &device);
        let dt = softplus(dt_pre + bias.unsqueeze_dims::<3>(&[0, 1]), 1.0);
        let (want, _) = t.values(&format!("layers.{i}.scan.y"));
        let (y, _) = ssd(
            x.clone(),
            dt.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            Some(d.clone()),
            None,
            8,
        );
        // Measured 3.3e-8 (both forms).
        assert_rel(
            &format!("layers.{i}.scan.y (recurrence)"),
            &to_vec(y),
            &want,
            1e-6,
        );
        let (y, _) = ssd_reference(x, dt, a, b, c, Some(d), None, 8);
        assert_rel(
            &format!("layers.{i}.scan.y (chunked, chunk 8)"),
            &to_vec(y),
            &want,
            1e-6,
        );
    }
}

/// Gradients of `sum(y * wy) + sum(state * wh)` with respect to every input.
fn gradients(x: &Inputs, wy: &Tensor<4>, wh: &Tensor<4>, chunked: bool) -> Vec<Vec<f32>> {
    let device = x.x.device().autodiff();
    fn track<const D: usize>(t: &Tensor<D>, device: &Device) -> Tensor<D> {
        Tensor::<D>::from_data(t.clone().into_data(), device).require_grad()
    }
    let (xx, dt, a, b, c, d, h0) = (
        track(&x.x, &device),
        track(&x.dt, &device),
        track(&x.a, &device),
        track(&x.b, &device),
        track(&x.c, &device),
        track(&x.d, &device),
        track(&x.h0, &device),
    );
    let run = if chunked { ssd_reference } else { ssd };
    let (y, h) = run(
        xx.clone(),
        dt.clone(),
        a.clone(),
        b.clone(),
        c.clone(),
        Some(d.clone()),
        Some(h0.clone()),
        8,
    );
    let loss = (y * Tensor::from_data(wy.clone().into_data(), &device)).sum()
        + (h * Tensor::from_data(wh.clone().into_data(), &device)).sum();
    let g = loss.backward();
    vec![
        to_vec(xx.grad(&g).unwrap()),
        to_vec(dt.grad(&g).unwrap()),
        to_vec(a.grad(&g).unwrap()),
        to_vec(b.grad(&g).unwrap()),
        to_vec(c.grad(&g).unwrap()),
        to_vec(d.grad(&g).unwrap()),
        to_vec(h0.grad(&g).unwrap()),
    ]
}

#[test]
fn gradients_through_the_scan_kernel_match_the_chunked_body() {
    let device = Device::flex();
    let mut rng = TestRng::new(22);
    for shape in [SHAPES[1], SHAPES[2]] {
        let x = inputs(shape, &mut rng, &device);
        let (bs, l, h, p, _, n) = shape;
        let wy = rng.tensor::<4>([bs, l, h, p], Distribution::Normal(0.0, 1.0), &device);
        let wh = rng.tensor::<4>([bs, h, p, n], Distribution::Normal(0.0, 1.0), &device);
        let got = gradients(&x, &wy, &wh, false);
        let want = gradients(&x, &wy, &wh, true);
        // (name, bound): measured 2.6e-7 (dx), 2.8e-7 (ddt), <= 2.0e-7 the others.
        let bounds = [
            ("x", 2e-6),
            ("dt", 2e-6),
            ("A", 1e-6),
            ("B", 1e-6),
            ("C", 1e-6),
            ("D", 1e-6),
            ("h0", 1e-6),
        ];
        for (k, (name, tol)) in bounds.iter().enumerate() {
            assert_rel(&format!("{shape:?} d{name}"), &got[k], &want[k], *tol);
        }
    }
}

#[test]
#[should_panic(expected = "cannot be shared among")]
fn heads_must_divide_among_groups() {
    let device = Device::flex();
    let x = inputs((1, 4, 3, 2, 2, 4), &mut TestRng::new(0), &device);
    let _ = ssd(x.x, x.dt, x.a, x.b, x.c, None, None, 8);
}

/// Per-step log decays (Mamba-3's data-dependent `A`): given as `dt·A` they reproduce the
/// plain scan; given separately, the chunked body equals the step-by-step recurrence
/// `h_t = exp(a_t) h_{t−1} + dt_t B_t x_tᵀ`, `y_t = C_t h_t + D x_t`.
#[test]
fn log_decays_equal_dt_a_and_the_recurrence() {
    use ssm_backends::Ssd;
    let mut devices = vec![Device::flex()];
    devices.extend(ssm_backends::testing::wgpu_test_device());
    for device in devices {
        let mut rng = TestRng::new(5);
        let (bs, l, h, p, g, n) = (2, 13, 4, 3, 2, 5);
        let s = inputs((bs, l, h, p, g, n), &mut rng, &device);
        // The scan of these inputs, with log decays when given.
        let run = |log_decay: Option<Tensor<3>>| {
            let op = Ssd::new(
                s.x.clone(),
                s.dt.clone(),
                s.a.clone(),
                s.b.clone(),
                s.c.clone(),
            )
            .d(s.d.clone())
            .initial_state(s.h0.clone())
            .chunk(4);
            match log_decay {
                Some(l) => op.log_decay(l),
                None => op,
            }
            .run()
        };
        let gpu = device != Device::flex();
        let plain = run(None);
        let before = cpu_kernel_calls().ssd_forward;
        let given = run(Some(s.dt.clone() * s.a.clone().reshape([1, 1, h])));
        if device == Device::flex() {
            assert!(
                cpu_kernel_calls().ssd_forward > before,
                "the fused CPU SSD kernel ran"
            );
        }
        // Measured 0 on Flex and wgpu (y and state).
        let tol = if gpu { 2e-6 } else { 1e-6 };
        assert_rel(
            &format!("{device:?}: log decays = dt A: y"),
            &to_vec(given.0),
            &to_vec(plain.0),
            tol,
        );
        assert_rel(
            &format!("{device:?}: log decays = dt A: state"),
            &to_vec(given.1),
            &to_vec(plain.1),
            tol,
        );

        // Decays independent of dt, against the recurrence on the host.
        let a_t = rng.tensor::<3>([bs, l, h], Distribution::Uniform(-2.0, -0.01), &device);
        let (y, hl) = run(Some(a_t.clone()));
        let (x, dt, a_t) = (to_vec(s.x), to_vec(s.dt), to_vec(a_t));
        let (b, c, d, mut st) = (to_vec(s.b), to_vec(s.c), to_vec(s.d), to_vec(s.h0));
        let mut want = vec![0f32; bs * l * h * p];
        for bi in 0..bs {
            for t in 0..l {
                for hi in 0..h {
                    let gi = hi / (h / g);
                    let at = (a_t[(bi * l + t) * h + hi]).exp();
                    let w = dt[(bi * l + t) * h + hi];
                    for pi in 0..p {
                        let xv = x[((bi * l + t) * h + hi) * p + pi];
                        let mut acc = 0.0;
                        for ni in 0..n {
                            let si = ((bi * h + hi) * p + pi) * n + ni;
                            let bv = b[((bi * l + t) * g + gi) * n + ni];
                            st[si] = at * st[si] + w * bv * xv;
                            acc += c[((bi * l + t) * g + gi) * n + ni] * st[si];
                        }
                        want[((bi * l + t) * h + hi) * p + pi] = acc + d[hi] * xv;
                    }
                }
            }
        }
        // Measured 6.0e-8 (y), 7.7e-8 (state) on Flex; 1.2e-7, 2.3e-7 on wgpu.
        let (y_tol, state_tol) = if gpu { (2e-6, 5e-6) } else { (1e-6, 1e-6) };
        assert_rel(
            &format!("{device:?}: log decays vs the recurrence: y"),
            &to_vec(y),
            &want,
            y_tol,
        );
        assert_rel(
            &format!("{device:?}: log decays vs the recurrence: state"),
            &to_vec(hl),
            &st,
            state_tol,
        );
    }
}

/// Under autodiff, log decays computed in the graph as `dt·A` give the plain scan's gradients
/// (the plain one through the scan kernel's backward, the log-decay one op by op).
#[test]
fn log_decay_gradients_match_the_plain_scan() {
    use ssm_backends::Ssd;
    let device = Device::flex().autodiff();
    let mut rng = TestRng::new(9);
    let (h, p, n) = (4, 3, 5);
    let s = inputs((2, 11, h, p, 2, n), &mut rng, &device);
    let w = rng.tensor::<4>([2, 11, h, p], Distribution::Normal(0.0, 1.0), &device);
    let grads_of = |with_log_decay: bool| {
        let (x, dt, a, b, c) = (
            s.x.clone().require_grad(),
            s.dt.clone().require_grad(),
            s.a.clone().require_grad(),
            s.b.clone().require_grad(),
            s.c.clone().require_grad(),
        );
        let mut op = Ssd::new(x.clone(), dt.clone(), a.clone(), b.clone(), c.clone())
            .d(s.d.clone())
            .initial_state(s.h0.clone())
            .chunk(4);
        if with_log_decay {
            op = op.log_decay(dt.clone() * a.clone().reshape([1, 1, h]));
        }
        let (y, state) = op.run();
        let g = ((y * w.clone()).sum() + state.sum()).backward();
        [
            to_vec(x.grad(&g).unwrap()),
            to_vec(dt.grad(&g).unwrap()),
            to_vec(a.grad(&g).unwrap()),
            to_vec(b.grad(&g).unwrap()),
            to_vec(c.grad(&g).unwrap()),
        ]
    };
    let (plain, given) = (grads_of(false), grads_of(true));
    // (name, bound): measured 3.5e-7 (dA), <= 2.1e-7 the others.
    let bounds = [
        ("x", 1e-6),
        ("dt", 1e-6),
        ("A", 2e-6),
        ("B", 1e-6),
        ("C", 1e-6),
    ];
    for ((name, tol), (p, q)) in bounds.iter().zip(plain.iter().zip(&given)) {
        assert_rel(&format!("d{name}"), q, p, *tol);
    }
}

/// R sub-steps per time step (Mamba-3's MIMO): the fused CPU kernel (Flex), the chunked body
/// (the portable oracle, and wgpu) and a host recurrence agree, `h_t = exp(a_t) h_{t−1} +
/// dt_t Σ_r B_{t,r} x_{t,r}ᵀ`, `y_{t,r} = C_{t,r} h_t + D x_{t,r}`, with an initial state and
/// packed sequences restarting inside rows; L not a multiple of the chunk.
#[test]
fn ranked_sub_steps_equal_the_recurrence() {
    use ssm_backends::Ssd;
    let mut devices = vec![Device::flex()];
    devices.extend(ssm_backends::testing::wgpu_test_device());
    for device in devices {
        let mut rng = TestRng::new(17);
        let (bs, l, r, h, p, g, n) = (2, 13, 3, 4, 3, 2, 5);
        let normal = Distribution::Normal(0.0, 1.0);
        let x = rng.tensor::<4>([bs, l * r, h, p], normal, &device);
        let b = rng.tensor::<4>([bs, l * r, g, n], normal, &device);
        let c = rng.tensor::<4>([bs, l * r, g, n], normal, &device);
        let dt = rng.tensor::<3>([bs, l, h], Distribution::Uniform(0.01, 0.3), &device);
        let a_t = rng.tensor::<3>([bs, l, h], Distribution::Uniform(-2.0, -0.01), &device);
        let d = rng.tensor::<1>([h], normal, &device);
        let h0 = rng.tensor::<4>([bs, h, p, n], normal, &device);
        // Row 0 one sequence; row 1 restarting at steps 5 and 9.
        let seq: Vec<i64> = (0..l as i64)
            .chain((0..l as i64).map(|t| i64::from(t >= 5) + i64::from(t >= 9)))
            .collect();
        let seq_idx = Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(seq.clone(), [bs, l]),
            &device,
        );
        let op = Ssd::new(
            x.clone(),
            dt.clone(),
            Tensor::zeros([h], &device),
            b.clone(),
            c.clone(),
        )
        .log_decay(a_t.clone())
        .d(d.clone())
        .initial_state(h0.clone())
        .seq_idx(seq_idx)
        .chunk(4)
        .rank(r);
        let (y, hl) = op.clone().run();
        assert_eq!(y.dims(), [bs, l * r, h, p]);
        let (y_ref, hl_ref) = op.run_reference();

        let (x, dt, a_t) = (to_vec(x), to_vec(dt), to_vec(a_t));
        let (b, c, d, mut st) = (to_vec(b), to_vec(c), to_vec(d), to_vec(h0));
        let mut want = vec![0f32; bs * l * r * h * p];
        for bi in 0..bs {
            for t in 0..l {
                let restart = t > 0 && seq[bi * l + t] != seq[bi * l + t - 1];
                for hi in 0..h {
                    let gi = hi / (h / g);
                    let at = a_t[(bi * l + t) * h + hi].exp();
                    let w = dt[(bi * l + t) * h + hi];
                    for pi in 0..p {
                        for ni in 0..n {
                            let si = ((bi * h + hi) * p + pi) * n + ni;
                            let mut v = if restart { 0.0 } else { at * st[si] };
                            for ri in 0..r {
                                let j = (bi * l + t) * r + ri;
                                v += w * b[(j * g + gi) * n + ni] * x[(j * h + hi) * p + pi];
                            }
                            st[si] = v;
                        }
                    }
                    for ri in 0..r {
                        let j = (bi * l + t) * r + ri;
                        for pi in 0..p {
                            let mut acc = 0.0;
                            for ni in 0..n {
                                let si = ((bi * h + hi) * p + pi) * n + ni;
                                acc += c[(j * g + gi) * n + ni] * st[si];
                            }
                            want[(j * h + hi) * p + pi] = acc + d[hi] * x[(j * h + hi) * p + pi];
                        }
                    }
                }
            }
        }
        // Measured 1.2e-7 (y), 1.6e-7 (state) on Flex; 6.1e-8, 1.6e-7 on wgpu.
        let tol = if device == Device::flex() { 1e-6 } else { 2e-6 };
        for (what, y, hl) in [("op", y, hl), ("chunked body", y_ref, hl_ref)] {
            assert_rel(
                &format!("{device:?}: {what} with rank {r} vs the recurrence: y"),
                &to_vec(y),
                &want,
                tol,
            );
            assert_rel(
                &format!("{device:?}: {what} with rank {r} vs the recurrence: state"),
                &to_vec(hl),
                &st,
                tol,
            );
        }
    }
}

/// The chunked form on wgpu against the fused CPU recurrence at chunk lengths of 16 and more
/// with several rows and heads (packed rows, groups, R sub-steps; Mamba2's chunk 256): Burn
/// 0.22.1's batched matmul on CubeCL got the chunks' running sums wrong there (a reshaped
/// permuted left side), O(1) errors in `y`, until they became one flat product.
#[test]
fn long_chunks_on_wgpu_equal_the_cpu_recurrence() {
    use burn::tensor::{Int, TensorData};
    use ssm_backends::Ssd;
    let Some(gpu) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    // (B, L, H, P, G, N, chunk, R)
    for (bs, l, h, p, g, n, chunk, r) in [
        (2, 32, 3, 1, 1, 1, 16, 1),
        (2, 300, 2, 4, 1, 8, 256, 1),
        (3, 100, 4, 4, 2, 8, 16, 3),
    ] {
        let cpu = Device::flex();
        let mut rng = TestRng::new(3);
        let normal = Distribution::Normal(0.0, 1.0);
        let mut host = |dims: Vec<usize>, dist: Distribution| {
            let total = dims.iter().product::<usize>();
            (rng.values(total, dist), dims)
        };
        let x = host(vec![bs, l * r, h, p], normal);
        let dt = host(vec![bs, l, h], Distribution::Uniform(0.01, 0.3));
        let log_decay = host(vec![bs, l, h], Distribution::Uniform(-1.5, -0.01));
        let b = host(vec![bs, l * r, g, n], normal);
        let c = host(vec![bs, l * r, g, n], normal);
        // Every row after the first restarts a third of the way in.
        let seq: Vec<i64> = (0..bs * l)
            .map(|i| i64::from(i >= l && 3 * (i % l) >= l))
            .collect();
        let run = |dev: &Device| {
            let t4 = |(v, d): &(Vec<f32>, Vec<usize>)| {
                Tensor::<4>::from_data(TensorData::new(v.clone(), d.clone()), dev)
            };
            let t3 = |(v, d): &(Vec<f32>, Vec<usize>)| {
                Tensor::<3>::from_data(TensorData::new(v.clone(), d.clone()), dev)
            };
            let seq_idx = Tensor::<2, Int>::from_data(TensorData::new(seq.clone(), [bs, l]), dev);
            let (y, s) = Ssd::new(t4(&x), t3(&dt), Tensor::zeros([h], dev), t4(&b), t4(&c))
                .log_decay(t3(&log_decay))
                .seq_idx(seq_idx)
                .chunk(chunk)
                .rank(r)
                .run();
            (to_vec(y), to_vec(s))
        };
        let (want_y, want_s) = run(&cpu);
        let (y, s) = run(&gpu);
        let what = format!("({bs},{l},{h},{p},{g},{n}) chunk {chunk} rank {r}");
        // Measured on wgpu: y 2.0e-6 at chunk 256 (<= 2.7e-7 at chunk 16), state 4.2e-7.
        assert_rel(&format!("{what}: y"), &y, &want_y, 2e-5);
        assert_rel(&format!("{what}: state"), &s, &want_s, 5e-6);
    }
}
