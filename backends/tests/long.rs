//! Long sequences stay finite and chunk exactly: the selective scan and the SSD at
//! L = 65,536 with large steps (dt up to about 5, past `dt_max` 1.0) and small decays (|A| down
//! to 1e-3, so the state barely forgets and grows with the sum of its inputs), on Flex and
//! wgpu; the run in four chunks, each starting from the state the last one ended in, equals one
//! pass within 1e-6 on Flex and 2e-6 on wgpu (relative to the largest output; measured 0); the
//! selective scan streams 1,048,576 steps in chunks on Flex; and on wgpu the scan's gradients
//! over 40,000 steps (three launch segments, see `max_segment`) equal the CPU's.
//!
//! The first of these found that lavapipe stops every shader loop after about 65,535
//! iterations: the GPU scan's outputs were zeros from step 55,923 on (N = 4); the launchers now
//! walk long sequences in segments.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{TestRng, assert_finite, assert_rel};
use ssm_backends::{SelectiveScan, Ssd, to_vec};

fn devices() -> Vec<Device> {
    let mut all = vec![Device::flex()];
    all.extend(ssm_backends::testing::wgpu_test_device());
    all
}

/// The chunked run against one pass, relative to the largest output: measured 0 on Flex and on
/// wgpu (the floors of the bounds: 1e-6 and 2e-6).
fn chunking_bound(device: &Device) -> f64 {
    if *device == Device::flex() {
        1e-6
    } else {
        2e-6
    }
}

/// The wgpu gradients against the CPU's, in the order u, delta, A, B, C: 10x the largest error
/// measured on wgpu (lavapipe) over the three shapes, rounded up to 1, 2 or 5 times a power of
/// ten.
const GRADIENT_BOUNDS: [f64; 5] = [
    2e-5, // du: measured 1.0e-6 (4.1e-4 at scale 395: just above 1.0e-6)
    2e-5, // ddelta: measured 1.2e-6
    1e-4, // dA: measured 5.4e-6 (N 4, L 40,000: a sum over 40,000 steps; <= 1e-6 elsewhere)
    2e-5, // dB: measured 1.7e-6
    2e-5, // dC: measured 1.7e-6
];

/// The scan's inputs `u` and `delta` for (1, D, L): `delta` before softplus in [0, 5] (steps
/// ~0.7 to 5).
fn scan_inputs(d: usize, l: usize, rng: &mut TestRng, device: &Device) -> [Tensor<3>; 2] {
    let u = rng.tensor::<3>([1, d, l], Distribution::Normal(0.0, 1.0), device);
    let delta = rng.tensor::<3>([1, d, l], Distribution::Uniform(0.0, 5.0), device);
    [u, delta]
}

fn scan(
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    bc: (Tensor<4>, Tensor<4>),
    h0: Option<Tensor<3>>,
) -> (Tensor<3>, Tensor<3>) {
    let mut s = SelectiveScan::new(u, delta, a, bc.0, bc.1).softplus(true);
    if let Some(h0) = h0 {
        s = s.initial_state(h0);
    }
    let out = s.run();
    (out.y, out.state)
}

/// One pass over `len` steps against `chunks` passes carrying the state, `n` states.
fn scan_in_chunks(
    rng: &mut TestRng,
    device: &Device,
    len: usize,
    chunks: usize,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let d = 4;
    let [u, delta] = scan_inputs(d, len, rng, device);
    let a = rng.tensor::<2>([d, n], Distribution::Uniform(-0.5, -1e-3), device);
    let b = rng.tensor::<4>([1, 1, n, len], Distribution::Normal(0.0, 1.0), device);
    let c = rng.tensor::<4>([1, 1, n, len], Distribution::Normal(0.0, 1.0), device);
    let (y, _) = scan(
        u.clone(),
        delta.clone(),
        a.clone(),
        (b.clone(), c.clone()),
        None,
    );
    let step = len / chunks;
    let mut h = None;
    let mut parts = Vec::new();
    for k in 0..chunks {
        let (yk, hk) = scan(
            u.clone().narrow(2, k * step, step),
            delta.clone().narrow(2, k * step, step),
            a.clone(),
            (
                b.clone().narrow(3, k * step, step),
                c.clone().narrow(3, k * step, step),
            ),
            h,
        );
        h = Some(hk);
        parts.push(yk);
    }
    (to_vec(y), to_vec(Tensor::cat(parts, 2)))
}

#[test]
fn the_selective_scan_at_65536_steps_is_finite_and_chunks_exactly() {
    for device in devices() {
        let mut rng = TestRng::new(1);
        for n in [4, 64] {
            let (one, chunked) = scan_in_chunks(&mut rng, &device, 65_536, 4, n);
            assert_finite(&format!("{device:?}, N {n}: scan"), &one);
            assert_rel(
                &format!("{device:?}, N {n}: chunked vs one pass"),
                &chunked,
                &one,
                chunking_bound(&device),
            );
        }
    }
}

#[test]
fn the_selective_scan_streams_a_million_steps() {
    let device = Device::flex();
    let mut rng = TestRng::new(2);
    let (one, chunked) = scan_in_chunks(&mut rng, &device, 1 << 20, 16, 4);
    assert_finite("scan, 1,048,576 steps", &one);
    assert_rel(
        "scan, 1,048,576 steps: chunked vs one pass",
        &chunked,
        &one,
        chunking_bound(&device),
    );
}

#[test]
fn the_ssd_at_65536_steps_is_finite_and_chunks_exactly() {
    for device in devices() {
        let mut rng = TestRng::new(3);
        let (l, h, p, n) = (65_536, 2, 4, 4);
        let normal = Distribution::Normal(0.0, 1.0);
        let x = rng.tensor::<4>([1, l, h, p], normal, &device);
        let dt = rng.tensor::<3>([1, l, h], Distribution::Uniform(0.5, 5.0), &device);
        let a = rng.tensor::<1>([h], Distribution::Uniform(-0.5, -1e-3), &device);
        let b = rng.tensor::<4>([1, l, 1, n], normal, &device);
        let c = rng.tensor::<4>([1, l, 1, n], normal, &device);
        let run = |lo: usize, len: usize, h0: Option<Tensor<4>>| {
            let mut op = Ssd::new(
                x.clone().narrow(1, lo, len),
                dt.clone().narrow(1, lo, len),
                a.clone(),
                b.clone().narrow(1, lo, len),
                c.clone().narrow(1, lo, len),
            )
            .chunk(256);
            if let Some(h0) = h0 {
                op = op.initial_state(h0);
            }
            op.run()
        };
        let (y, _) = run(0, l, None);
        let one = to_vec(y);
        assert_finite(&format!("{device:?}: ssd"), &one);
        let mut state = None;
        let mut parts = Vec::new();
        for k in 0..4 {
            let (yk, hk) = run(k * l / 4, l / 4, state);
            state = Some(hk);
            parts.push(yk);
        }
        assert_rel(
            &format!("{device:?}: ssd chunked vs one pass"),
            &to_vec(Tensor::cat(parts, 1)),
            &one,
            chunking_bound(&device),
        );
    }
}

#[test]
fn long_scan_gradients_on_wgpu_equal_the_cpu() {
    let Some(gpu) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    // N = 4: 40,000 steps (several segments); N = 64 (the state loop not unrolled, so far
    // shorter segments): 3,000 steps.
    for (n, l) in [(4, 40_000), (64, 200), (64, 3_000)] {
        scan_gradients_match(&gpu, n, l);
    }
}

fn scan_gradients_match(gpu: &Device, n: usize, l: usize) {
    let cpu = Device::flex();
    let mut rng = TestRng::new(6);
    let d = 4;
    let [u, delta] = scan_inputs(d, l, &mut rng, &cpu);
    let a = rng.tensor::<2>([d, n], Distribution::Uniform(-0.5, -1e-3), &cpu);
    let b = rng.tensor::<4>([1, 1, n, l], Distribution::Normal(0.0, 1.0), &cpu);
    let c = rng.tensor::<4>([1, 1, n, l], Distribution::Normal(0.0, 1.0), &cpu);
    let w = rng.tensor::<3>([1, d, l], Distribution::Normal(0.0, 1.0), &cpu);
    let grads = |device: &Device| {
        let ad = device.clone().autodiff();
        let on3 = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &ad).require_grad();
        let on4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
        let (u, delta, b, c) = (on3(&u), on3(&delta), on4(&b), on4(&c));
        let a = Tensor::<2>::from_data(a.to_data(), &ad).require_grad();
        let (y, h) = scan(
            u.clone(),
            delta.clone(),
            a.clone(),
            (b.clone(), c.clone()),
            None,
        );
        let g = ((y * Tensor::<3>::from_data(w.to_data(), &ad)).sum() + h.sum()).backward();
        [
            to_vec(u.grad(&g).unwrap()),
            to_vec(delta.grad(&g).unwrap()),
            to_vec(a.grad(&g).unwrap()),
            to_vec(b.grad(&g).unwrap()),
            to_vec(c.grad(&g).unwrap()),
        ]
    };
    let (want, got) = (grads(&cpu), grads(gpu));
    for (k, (name, (g, w))) in ["u", "delta", "A", "B", "C"]
        .iter()
        .zip(got.iter().zip(&want))
        .enumerate()
    {
        assert_finite(&format!("N {n}, L {l}: d{name} (wgpu)"), g);
        let tol = GRADIENT_BOUNDS[k];
        assert_rel(&format!("N {n}, L {l}: d{name}: wgpu vs cpu"), g, w, tol);
    }
}
