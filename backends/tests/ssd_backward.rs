//! The log-decay SSD's backward (Mamba-3's scan): the fused CPU reverse recurrence (Flex) and
//! the GPU's (wgpu: autodiff through the chunked form, its inter-chunk pass run backwards on the
//! state-pass kernel) against Burn's autodiff through the portable chunked body, with R
//! sub-steps per step, groups, an initial state, packed rows restarting mid-row, and sequences
//! longer than the CPU kernel's recomputed segments.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls, wgpu_test_device};
use ssm_backends::{LaunchCounter, Ssd, to_vec};

/// (batch, L, R, heads, P, groups, N, chunk)
type Shape = (usize, usize, usize, usize, usize, usize, usize, usize);

const SHAPES: [Shape; 4] = [
    (2, 13, 1, 4, 3, 2, 5, 4),
    (2, 13, 3, 4, 3, 2, 5, 4),
    (1, 150, 2, 2, 4, 1, 8, 16),
    (2, 70, 1, 3, 5, 3, 4, 32),
];

/// The gradients, then the outputs themselves.
const NAMES: [&str; 9] = [
    "dx",
    "ddt",
    "dlog_decay",
    "dB",
    "dC",
    "dD",
    "dh0",
    "y",
    "h_L",
];

/// Bounds relative to each tensor's own scale (its largest magnitude), in [`NAMES`]' order:
/// 4x the largest error measured over the shapes on Flex, 10x on wgpu (lavapipe), rounded up to
/// 1, 2 or 5 times a power of ten (at least 1e-6 and 2e-6).
const FLEX: [f64; 9] = [
    2e-6, // dx: measured 2.8e-7
    1e-6, // ddt: 2.2e-7
    5e-6, // dlog_decay: 6.8e-7 (L 70, chunk 32; <= 3.4e-7 elsewhere)
    5e-6, // dB: 6.2e-7 (L 70, chunk 32; <= 2.9e-7 elsewhere)
    1e-6, // dC: 2.2e-7
    1e-6, // dD: 2.3e-7
    1e-6, // dh0: 1.9e-7
    2e-6, // y: 3.7e-7
    1e-6, // h_L: 2.5e-7
];

/// wgpu against the fused CPU backward (the long shape is not run there).
const WGPU: [f64; 9] = [
    5e-6, // dx: measured 2.3e-7
    5e-6, // ddt: 2.2e-7
    2e-6, // dlog_decay: 1.5e-7
    5e-6, // dB: 2.9e-7
    5e-6, // dC: 2.4e-7
    2e-6, // dD: 1.5e-7
    5e-6, // dh0: 3.0e-7
    2e-6, // y: 1.1e-7
    5e-6, // h_L: 2.3e-7
];

/// Random inputs on the host, (values, dims) per input in [`NAMES`]' order, then the sequence
/// index (row 1 restarts at L/3 and 2L/3) and the two output weights.
struct Case {
    inputs: Vec<(Vec<f32>, Vec<usize>)>,
    seq: Vec<i64>,
    wy: (Vec<f32>, Vec<usize>),
    wh: (Vec<f32>, Vec<usize>),
}

fn case((bs, l, r, h, p, g, n, _): Shape, seed: u64) -> Case {
    let mut rng = TestRng::new(seed);
    let normal = Distribution::Normal(0.0, 1.0);
    let mut rnd = |dims: Vec<usize>, dist: Distribution| {
        let total = dims.iter().product::<usize>();
        (rng.values(total, dist), dims)
    };
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
    Case {
        inputs: vec![
            rnd(vec![bs, l * r, h, p], normal),
            rnd(vec![bs, l, h], Distribution::Uniform(0.01, 0.3)),
            rnd(vec![bs, l, h], Distribution::Uniform(-1.5, -0.01)),
            rnd(vec![bs, l * r, g, n], normal),
            rnd(vec![bs, l * r, g, n], normal),
            rnd(vec![h], normal),
            rnd(vec![bs, h, p, n], normal),
        ],
        seq,
        wy: rnd(vec![bs, l * r, h, p], normal),
        wh: rnd(vec![bs, h, p, n], normal),
    }
}

/// Gradients of `Σ y ∘ wy + Σ h_L ∘ wh` for every input, then `y` and `h_L`, through the op (`reference` false) or
/// the portable chunked body, on `device` under autodiff.
fn gradients(c: &Case, shape: Shape, device: &Device, reference: bool) -> Vec<Vec<f32>> {
    let (bs, l, r, _, _, _, _, chunk) = shape;
    let device = device.clone().autodiff();
    let t4 = |(v, d): &(Vec<f32>, Vec<usize>)| {
        Tensor::<4>::from_data(TensorData::new(v.clone(), d.clone()), &device)
    };
    let t3 = |(v, d): &(Vec<f32>, Vec<usize>)| {
        Tensor::<3>::from_data(TensorData::new(v.clone(), d.clone()), &device)
    };
    let t1 = |(v, d): &(Vec<f32>, Vec<usize>)| {
        Tensor::<1>::from_data(TensorData::new(v.clone(), d.clone()), &device)
    };
    let i = &c.inputs;
    let (x, dt, log_decay) = (
        t4(&i[0]).require_grad(),
        t3(&i[1]).require_grad(),
        t3(&i[2]).require_grad(),
    );
    let (b, cc, d, h0) = (
        t4(&i[3]).require_grad(),
        t4(&i[4]).require_grad(),
        t1(&i[5]).require_grad(),
        t4(&i[6]).require_grad(),
    );
    let h = i[5].1[0];
    let seq_idx = Tensor::<2, Int>::from_data(TensorData::new(c.seq.clone(), [bs, l]), &device);
    let op = Ssd::new(
        x.clone(),
        dt.clone(),
        Tensor::zeros([h], &device),
        b.clone(),
        cc.clone(),
    )
    .log_decay(log_decay.clone())
    .d(d.clone())
    .initial_state(h0.clone())
    .seq_idx(seq_idx)
    .chunk(chunk)
    .rank(r);
    let (y, hl) = if reference {
        op.run_reference()
    } else {
        op.run()
    };
    let outputs = (to_vec(y.clone()), to_vec(hl.clone()));
    let grads = ((y * t4(&c.wy)).sum() + (hl * t4(&c.wh)).sum()).backward();
    vec![
        to_vec(x.grad(&grads).unwrap()),
        to_vec(dt.grad(&grads).unwrap()),
        to_vec(log_decay.grad(&grads).unwrap()),
        to_vec(b.grad(&grads).unwrap()),
        to_vec(cc.grad(&grads).unwrap()),
        to_vec(d.grad(&grads).unwrap()),
        to_vec(h0.grad(&grads).unwrap()),
        outputs.0,
        outputs.1,
    ]
}

fn assert_all_close(got: &[Vec<f32>], want: &[Vec<f32>], bounds: &[f64; 9], what: &str) {
    for (k, name) in NAMES.iter().enumerate() {
        assert_rel(&format!("{what} {name}"), &got[k], &want[k], bounds[k]);
    }
}

/// Flex: the op's gradients come from the fused reverse recurrence (counted) and equal Burn's
/// autodiff through the chunked body.
#[test]
fn the_fused_cpu_backward_matches_the_chunked_body() {
    let device = Device::flex();
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let c = case(shape, 40 + i as u64);
        let before = cpu_kernel_calls().ssd_backward;
        let got = gradients(&c, shape, &device, false);
        assert_eq!(
            cpu_kernel_calls().ssd_backward,
            before + 1,
            "{shape:?}: the fused backward did not run once"
        );
        let want = gradients(&c, shape, &device, true);
        assert_all_close(&got, &want, &FLEX, &format!("Flex {shape:?}"));
    }
}

/// wgpu: the op's gradients (autodiff through the chunked form, the state pass run backwards on
/// its kernel) equal the fused CPU backward's.
#[test]
fn gpu_gradients_match_the_fused_cpu_backward() {
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    // The long shape is left to the CPU test (lavapipe is slow).
    for (i, shape) in SHAPES.into_iter().enumerate().filter(|(_, s)| s.1 < 100) {
        let c = case(shape, 60 + i as u64);
        let want = gradients(&c, shape, &Device::flex(), false);
        let counter = LaunchCounter::start();
        let got = gradients(&c, shape, &gpu, false);
        // Forward, the backward's recomputed forward, and the reverse pass.
        let passes = counter.count_of("ssd_state_pass_kernel");
        assert!(
            passes >= 3,
            "{shape:?}: the state-pass kernel ran {passes} times: {:?}",
            counter.counts()
        );
        drop(counter);
        assert_all_close(&got, &want, &WGPU, &format!("wgpu {shape:?}"));
    }
}
