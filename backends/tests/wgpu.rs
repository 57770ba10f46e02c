//! The CubeCL kernels on wgpu (Mesa's lavapipe on CI) against the portable body: forward,
//! gradients and the decode steps over several shapes (L = 1, L not a multiple of the chunks,
//! channel counts not a multiple of the cube), and proof from the runtime's launch log that the
//! kernels ran. Skips with a message where no wgpu adapter exists, unless SSM_ZOO_REQUIRE_WGPU
//! is set (CI sets it). Each bound is relative to the tensor's own scale: 10x the largest error
//! measured for it on lavapipe (autotune may pick other kernels run to run), rounded up to 1, 2
//! or 5 times a power of ten (at least 2e-6).
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use common::{Case, NAMES, inputs, loss_weights, op_gradients, scan, to_device};
use ssm_backends::LaunchCounter;
use ssm_backends::mamba_decode_step;
use ssm_backends::ssd;
use ssm_backends::testing::portable;
use ssm_backends::testing::portable::mamba_step_composed;
use ssm_backends::testing::{
    TestRng, assert_finite, assert_rel, set_gpu_max_buffer, set_gpu_scan_spans,
    set_gpu_scan_staging, wgpu_test_device,
};
use ssm_backends::{add_rms_norm, causal_conv1d_step, selective_state_step, to_vec};
use std::sync::Mutex;

/// The launch observer is process-wide: the tests of this file run one at a time so that each
/// counts its own launches.
static SERIAL: Mutex<()> = Mutex::new(());

fn case(
    (batch, dim, len, state, groups): (usize, usize, usize, usize, usize),
    gate: bool,
    init: bool,
    softplus: bool,
) -> Case {
    Case {
        batch,
        dim,
        len,
        state,
        groups,
        gate,
        init,
        softplus,
    }
}

/// Shapes: L = 1; D above one cube of 32 channels and not a multiple of it; L not a multiple
/// of the forward (64) or backward (32) chunk; several groups; N not a power of two.
fn cases() -> Vec<Case> {
    vec![
        case((2, 4, 1, 8, 1), true, false, true),
        case((1, 40, 37, 16, 1), true, true, true),
        case((2, 8, 37, 5, 2), false, true, true),
        case((3, 8, 130, 16, 4), true, false, false),
        case((1, 72, 200, 16, 2), true, true, true),
        // Mamba2's state size: smaller chunks (and cubes) where the shared memory is small.
        case((1, 16, 40, 128, 1), true, true, true),
    ]
}

/// The forward kernel's `y` against the portable body's, over every case, one pass and in
/// spans, direct and staged loads: measured 5.5e-7.
const FORWARD_Y: f64 = 1e-5;
/// The forward kernel's final state, likewise: measured 1.1e-6.
const FORWARD_STATE: f64 = 2e-5;

/// The op's gradients through the kernels against the portable body's, in [`NAMES`]' order,
/// over every case, one pass and in spans.
const GRADIENTS: [f64; 9] = [
    1e-5, // du: measured 5.9e-7
    1e-5, // ddelta: 7.3e-7
    1e-4, // dA: 6.4e-6 (D 72, L 200 in 2 spans; 2.4e-6 in one pass)
    1e-5, // dB: 1.0e-6
    2e-5, // dC: 1.3e-6
    5e-6, // dD: 4.4e-7
    2e-5, // dz: 1.1e-6
    2e-5, // ddelta_bias: 1.3e-6
    2e-5, // dh0: 2.0e-6
];

/// The forward kernel against the portable body on every case, with `launches` of it expected
/// per case (`spans`: the span count the tests force, in messages).
fn forward_matches(seed: u64, spans: usize, launches: impl Fn(Case) -> usize) {
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(seed);
    for c in cases() {
        let x = inputs(c, &mut rng, &cpu);
        let want = scan(&x).run_reference();
        let counter = LaunchCounter::start();
        let got = scan(&to_device(&x, &gpu)).run();
        let (y, state) = (to_vec(got.y), to_vec(got.state));
        assert_eq!(
            counter.count_of("scan_fwd_kernel"),
            launches(c),
            "{c:?} in {spans} spans: the runtime saw {:?}",
            counter.counts()
        );
        assert!(counter.fallbacks().is_empty(), "{:?}", counter.fallbacks());
        drop(counter);
        assert_rel(
            &format!("{c:?} in {spans} spans: y"),
            &y,
            &to_vec(want.y),
            FORWARD_Y,
        );
        assert_rel(
            &format!("{c:?} in {spans} spans: state"),
            &state,
            &to_vec(want.state),
            FORWARD_STATE,
        );
    }
}

/// Both ways of loading the inputs: read directly, and staged through shared memory by
/// consecutive units (coalesced).
#[test]
fn scan_kernel_matches_portable_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for stage in [false, true] {
        let _stage = Setting::set(set_gpu_scan_staging, stage);
        forward_matches(11, 1, |_| 1);
    }
}

/// A test setting of the GPU launchers (the span count, the forward's staging, the buffer
/// limit) for the life of the guard.
struct Setting<T>(fn(Option<T>));

impl<T> Setting<T> {
    fn set(setter: fn(Option<T>), value: T) -> Self {
        setter(Some(value));
        Self(setter)
    }
}

impl<T> Drop for Setting<T> {
    fn drop(&mut self) {
        (self.0)(None);
    }
}

/// The sequence-parallel forward (spans scanned from zero, their summaries carried, the spans
/// walked again: two launches) against the portable body, on every shape above cut into 2, 3
/// and 7 spans (unequal spans, spans shorter than the 64-step staging chunk, and a single
/// span where L = 1).
#[test]
fn scan_kernel_over_spans_matches_portable_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (spans, stage) in [(2, false), (3, true), (7, false), (7, true)] {
        let _spans = Setting::set(set_gpu_scan_spans, spans);
        let _stage = Setting::set(set_gpu_scan_staging, stage);
        forward_matches(13, spans, |c| if c.len > 1 { 2 } else { 1 });
    }
}

/// The op's gradients through the kernels against the portable body's on every case, with
/// (backward, span-summary) kernel launches `launches(case)` expected.
fn gradients_match(seed: u64, spans: usize, launches: impl Fn(Case) -> (usize, usize)) {
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(seed);
    for c in cases() {
        // op_gradients tracks z and the initial state: give every case both.
        let c = Case {
            gate: true,
            init: true,
            ..c
        };
        let x = inputs(c, &mut rng, &cpu);
        let (wy, wh) = loss_weights(c, &mut rng, &cpu);
        let want = op_gradients(&x, &wy, &wh, true);
        let counter = LaunchCounter::start();
        let got = op_gradients(
            &to_device(&x, &gpu),
            &Tensor::from_data(wy.into_data(), &gpu),
            &Tensor::from_data(wh.into_data(), &gpu),
            false,
        );
        assert_eq!(
            (
                counter.count_of("scan_bwd_kernel"),
                counter.count_of("scan_bwd_span_kernel")
            ),
            launches(c),
            "{c:?} in {spans} spans: the runtime saw {:?}",
            counter.counts()
        );
        assert!(counter.fallbacks().is_empty(), "{:?}", counter.fallbacks());
        drop(counter);
        for (k, name) in NAMES.iter().enumerate() {
            assert_rel(
                &format!("{c:?} in {spans} spans, d{name}"),
                &got[k],
                &want[k],
                GRADIENTS[k],
            );
        }
    }
}

#[test]
fn scan_kernel_gradients_match_portable_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    gradients_match(12, 1, |_| (1, 0));
}

/// The sequence-parallel backward (the state entering each span and the gradient leaving it
/// from the span summaries, then the spans as batch rows of one backward launch) against the
/// portable body's gradients, every shape above cut into 2 and 5 equal spans where they divide
/// L (and one pass where none does: L = 1, 37).
#[test]
fn scan_kernel_gradients_over_spans_match_portable_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for spans in [2, 5] {
        let _spans = Setting::set(set_gpu_scan_spans, spans);
        gradients_match(14, spans, |c| {
            let cut = c.len.is_multiple_of(spans) && c.len >= spans;
            (1, if cut { 2 } else { 0 })
        });
    }
}

fn normal<const D: usize>(rng: &mut TestRng, dims: [usize; D], device: &Device) -> Tensor<D> {
    rng.tensor(dims, Distribution::Normal(0.0, 1.0), device)
}

fn on<const D: usize>(t: &Tensor<D>, device: &Device) -> Tensor<D> {
    Tensor::from_data(t.clone().into_data(), device)
}

#[test]
fn decode_step_kernels_match_portable_bodies() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(13);
    for (batch, dim, n, groups, gate) in [(1, 4, 16, 1, true), (3, 300, 5, 3, false)] {
        let state = normal(&mut rng, [batch, dim, n], &cpu);
        let x = normal(&mut rng, [batch, dim], &cpu);
        let dt = rng.tensor::<2>([batch, dim], Distribution::Uniform(-4.0, -1.0), &cpu);
        let a = rng
            .tensor::<2>([dim, n], Distribution::Uniform(0.3, 4.0), &cpu)
            .neg();
        let b = normal(&mut rng, [batch, groups, n], &cpu);
        let c = normal(&mut rng, [batch, groups, n], &cpu);
        let d = normal(&mut rng, [dim], &cpu);
        let z = normal(&mut rng, [batch, dim], &cpu);
        let bias = normal(&mut rng, [dim], &cpu);
        let (want_y, want_h) = portable::selective_state_step::<Dispatch>(
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
        let counter = LaunchCounter::start();
        let (y, h) = selective_state_step(
            on(&state, &gpu),
            on(&x, &gpu),
            on(&dt, &gpu),
            on(&a, &gpu),
            on(&b, &gpu),
            on(&c, &gpu),
            on(&d, &gpu),
            gate.then(|| on(&z, &gpu)),
            on(&bias, &gpu),
            true,
        );
        let (y, h) = (to_vec(y), to_vec(h));
        assert_eq!(counter.count_of("state_step_kernel"), 1);
        drop(counter);
        let shape = format!("({batch},{dim},{n},{groups})");
        // Measured 2.2e-7 (y and state).
        assert_rel(
            &format!("state step {shape}: y"),
            &y,
            &to_vec(Tensor::<2>::from_dispatch(want_y)),
            5e-6,
        );
        assert_rel(
            &format!("state step {shape}: state"),
            &h,
            &to_vec(Tensor::<3>::from_dispatch(want_h)),
            5e-6,
        );

        for (k, silu) in [(4, true), (3, false)] {
            let cs = normal(&mut rng, [batch, dim, k], &cpu);
            let w = normal(&mut rng, [dim, k], &cpu);
            let (want_o, want_s) = portable::causal_conv1d_step::<Dispatch>(
                x.clone().into_dispatch(),
                cs.clone().into_dispatch(),
                w.clone().into_dispatch(),
                bias.clone().into_dispatch(),
                silu,
            );
            let counter = LaunchCounter::start();
            let (o, s) = causal_conv1d_step(
                on(&x, &gpu),
                on(&cs, &gpu),
                on(&w, &gpu),
                on(&bias, &gpu),
                silu,
            );
            let (o, s) = (to_vec(o), to_vec(s));
            assert_eq!(counter.count_of("conv_step_kernel"), 1);
            drop(counter);
            // Measured 1.6e-7.
            assert_rel(
                &format!("conv step {shape} k {k}: out"),
                &o,
                &to_vec(Tensor::<2>::from_dispatch(want_o)),
                2e-6,
            );
            // The state is only shifted: exact.
            assert_rel(
                &format!("conv step {shape} k {k}: state"),
                &s,
                &to_vec(Tensor::<3>::from_dispatch(want_s)),
                0.0,
            );
        }
    }
}

#[test]
fn fused_mamba_step_kernel_matches_composed_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(14);
    // (batch, D, K, N, R): mamba_tiny's shape, and one with D above the cube's 256 units.
    for (batch, dim, k, n, r) in [(2, 64, 4, 16, 4), (1, 64, 4, 16, 2), (3, 600, 3, 5, 7)] {
        let weights = ssm_backends::pack_mamba_step_weights(
            normal(&mut rng, [dim, k], &cpu).mul_scalar(0.3),
            normal(&mut rng, [dim], &cpu),
            normal(&mut rng, [dim, r + 2 * n], &cpu).mul_scalar(0.1),
            normal(&mut rng, [r, dim], &cpu).mul_scalar(0.3),
            rng.tensor::<1>([dim], Distribution::Uniform(-4.0, -1.0), &cpu),
            rng.tensor::<2>([dim, n], Distribution::Uniform(0.3, 4.0), &cpu)
                .neg(),
            normal(&mut rng, [dim], &cpu),
        );
        let xz = normal(&mut rng, [batch, 2 * dim], &cpu);
        let conv = normal(&mut rng, [batch, dim, k], &cpu);
        let ssm = normal(&mut rng, [batch, dim, n], &cpu);
        let want = mamba_step_composed::<Dispatch>(
            xz.clone().into_dispatch(),
            conv.clone().into_dispatch(),
            ssm.clone().into_dispatch(),
            weights.clone().into_dispatch(),
        );
        let counter = LaunchCounter::start();
        let got = mamba_decode_step(
            on(&xz, &gpu),
            on(&conv, &gpu),
            on(&ssm, &gpu),
            on(&weights, &gpu),
        );
        let got = (to_vec(got.0), to_vec(got.1), to_vec(got.2));
        assert_eq!(
            counter.count_of("mamba_step_kernel"),
            1,
            "the runtime saw {:?}",
            counter.counts()
        );
        drop(counter);
        let shape = format!("({batch},{dim},{k},{n},{r})");
        let want = (
            to_vec(Tensor::<2>::from_dispatch(want.0)),
            to_vec(Tensor::<3>::from_dispatch(want.1)),
            to_vec(Tensor::<3>::from_dispatch(want.2)),
        );
        // Measured 3.0e-7 (y), 0 (conv state), 4.4e-7 (ssm state).
        assert_rel(&format!("{shape}: y"), &got.0, &want.0, 5e-6);
        assert_rel(&format!("{shape}: conv state"), &got.1, &want.1, 2e-6);
        assert_rel(&format!("{shape}: ssm state"), &got.2, &want.2, 5e-6);
    }
}

#[test]
fn add_rms_norm_kernel_matches_portable_body() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(15);
    // Widths below, at and above the cube's 256 units, not powers of two.
    for (rows, width, residual) in [
        (1, 3, false),
        (1, 32, false),
        (1, 128, true),
        (4, 256, true),
        (3, 1000, true),
    ] {
        let x = normal(&mut rng, [rows, width], &cpu);
        let r = normal(&mut rng, [rows, width], &cpu);
        let w = normal(&mut rng, [width], &cpu);
        let (want_s, want_y) = portable::add_rms_norm::<Dispatch>(
            x.clone().into_dispatch(),
            residual.then(|| r.clone().into_dispatch()),
            w.clone().into_dispatch(),
            1e-5,
        );
        let counter = LaunchCounter::start();
        let (s, y) = add_rms_norm(
            on(&x, &gpu),
            residual.then(|| on(&r, &gpu)),
            on(&w, &gpu),
            1e-5,
        );
        let (s, y) = (to_vec(s), to_vec(y));
        assert_eq!(counter.count_of("add_rms_norm_kernel"), 1);
        drop(counter);
        // Measured 0 (sum: 1e-6, already below the rule's 2e-6, stays), 7.0e-8 (norm).
        assert_rel(
            &format!("({rows},{width}): sum"),
            &s,
            &to_vec(Tensor::<2>::from_dispatch(want_s)),
            1e-6,
        );
        assert_rel(
            &format!("({rows},{width}): norm"),
            &y,
            &to_vec(Tensor::<2>::from_dispatch(want_y)),
            2e-6,
        );
    }
}

#[test]
fn scans_larger_than_one_buffer_run_in_batch_groups() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(16);
    let c = case((4, 40, 37, 16, 2), true, true, true);
    let x = inputs(c, &mut rng, &cpu);
    // Forward: y and the state of one batch row take 40 (37 + 16) floats, B and C 2·2·16·37:
    // a limit of 20 000 bytes (plus the alignment margin) lets one row through per launch.
    let want = scan(&x).run_reference();
    let got = {
        let _limit = Setting::set(set_gpu_max_buffer, 4096 + 20_000);
        let counter = LaunchCounter::start();
        let got = scan(&to_device(&x, &gpu)).run();
        let (y, h) = (to_vec(got.y), to_vec(got.state));
        assert_eq!(
            counter.count_of("scan_fwd_kernel"),
            4,
            "one launch per batch row"
        );
        (y, h)
    };
    // Measured 6.0e-7 (y), 1.1e-6 (state).
    assert_rel("split forward: y", &got.0, &to_vec(want.y), 1e-5);
    assert_rel("split forward: state", &got.1, &to_vec(want.state), 2e-5);

    // Backward: about 105 000 bytes of partials and scratch per row.
    let (wy, wh) = loss_weights(c, &mut rng, &cpu);
    let want = op_gradients(&x, &wy, &wh, true);
    let got = {
        let _limit = Setting::set(set_gpu_max_buffer, 4096 + 150_000);
        let counter = LaunchCounter::start();
        let got = op_gradients(
            &to_device(&x, &gpu),
            &Tensor::from_data(wy.into_data(), &gpu),
            &Tensor::from_data(wh.into_data(), &gpu),
            false,
        );
        assert_eq!(
            counter.count_of("scan_bwd_kernel"),
            4,
            "one launch per batch row"
        );
        got
    };
    // In `NAMES`' order: measured du 3.6e-7, ddelta 6.5e-7, dA 2.1e-6, dB 7.2e-7, dC 7.5e-7,
    // dD 1.6e-7, dz 3.5e-7, ddelta_bias 8.3e-7, dh0 7.7e-7.
    let bounds = [5e-6, 1e-5, 5e-5, 1e-5, 1e-5, 2e-6, 5e-6, 1e-5, 1e-5];
    for (k, name) in NAMES.iter().enumerate() {
        assert_rel(
            &format!("split backward d{name}"),
            &got[k],
            &want[k],
            bounds[k],
        );
    }
}

#[test]
fn ssd_on_wgpu_matches_the_cpu_recurrence() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(17);
    // (B, L, H, P, G, N), chunk: L = 1; L not a multiple of the chunk; N = 128.
    for ((bs, l, h, p, g, n), chunk) in [
        ((2, 1, 2, 4, 1, 8), 8),
        ((2, 37, 4, 16, 2, 8), 8),
        ((1, 40, 2, 8, 1, 128), 16),
    ] {
        let x = normal(&mut rng, [bs, l, h, p], &cpu);
        let dt = rng.tensor::<3>([bs, l, h], Distribution::Uniform(0.01, 0.3), &cpu);
        let a = rng
            .tensor::<1>([h], Distribution::Uniform(0.5, 8.0), &cpu)
            .neg();
        let b = normal(&mut rng, [bs, l, g, n], &cpu);
        let c = normal(&mut rng, [bs, l, g, n], &cpu);
        let d = normal(&mut rng, [h], &cpu);
        let h0 = normal(&mut rng, [bs, h, p, n], &cpu);
        let run = |dev: &Device| {
            let (y, s) = ssd(
                on(&x, dev),
                on(&dt, dev),
                on(&a, dev),
                on(&b, dev),
                on(&c, dev),
                Some(on(&d, dev)),
                Some(on(&h0, dev)),
                chunk,
            );
            (to_vec(y), to_vec(s))
        };
        let (want_y, want_s) = run(&cpu);
        let counter = LaunchCounter::start();
        let (y, s) = run(&gpu);
        for kernel in ["ssd_decay_mask_kernel", "ssd_state_pass_kernel"] {
            assert_eq!(
                counter.count_of(kernel),
                1,
                "{kernel}: the runtime saw {:?}",
                counter.counts()
            );
        }
        drop(counter);
        let shape = format!("({bs},{l},{h},{p},{g},{n}) chunk {chunk}");
        // Measured 2.3e-7 (y), 1.1e-7 (state).
        assert_rel(&format!("{shape}: y"), &y, &want_y, 5e-6);
        assert_rel(&format!("{shape}: state"), &s, &want_s, 2e-6);
    }
}

#[test]
fn fused_mamba2_step_kernel_matches_composed_step() {
    use ssm_backends::testing::portable::mamba2_step_composed;
    use ssm_backends::{Mamba2StepConfig, mamba2_decode_step};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(18);
    // (batch, heads, head_dim, groups, N, K, dt limits): mamba2_tiny's shape, and one with
    // d_inner above the cube's units, N = 128 and a finite upper dt limit.
    for (batch, h, p, g, n, k, dt_max) in [
        (2, 4, 16, 2, 8, 4, f32::INFINITY),
        (3, 6, 64, 3, 128, 4, 0.05),
    ] {
        let di = h * p;
        let conv = di + 2 * g * n;
        let weights = ssm_backends::pack_mamba2_step_weights(
            normal(&mut rng, [conv, k], &cpu).mul_scalar(0.3),
            normal(&mut rng, [conv], &cpu),
            rng.tensor::<1>([h], Distribution::Uniform(-4.0, -1.0), &cpu),
            rng.tensor::<1>([h], Distribution::Uniform(1.0, 16.0), &cpu)
                .neg(),
            normal(&mut rng, [h], &cpu),
            normal(&mut rng, [di], &cpu),
        );
        let zx = normal(&mut rng, [batch, 2 * di + 2 * g * n + h], &cpu);
        let cs = normal(&mut rng, [batch, conv, k], &cpu);
        let ss = normal(&mut rng, [batch, di, n], &cpu);
        let cfg = Mamba2StepConfig {
            heads: h,
            groups: g,
            dt_min: 0.001,
            dt_max,
            eps: 1e-5,
        };
        let want = mamba2_step_composed::<Dispatch>(
            zx.clone().into_dispatch(),
            cs.clone().into_dispatch(),
            ss.clone().into_dispatch(),
            weights.clone().into_dispatch(),
            cfg,
        );
        let counter = LaunchCounter::start();
        let got = mamba2_decode_step(
            on(&zx, &gpu),
            on(&cs, &gpu),
            on(&ss, &gpu),
            on(&weights, &gpu),
            cfg,
        );
        let got = (to_vec(got.0), to_vec(got.1), to_vec(got.2));
        assert_eq!(
            counter.count_of("mamba2_step_kernel"),
            1,
            "the runtime saw {:?}",
            counter.counts()
        );
        drop(counter);
        let shape = format!("({batch},{h},{p},{g},{n})");
        let want = (
            to_vec(Tensor::<2>::from_dispatch(want.0)),
            to_vec(Tensor::<3>::from_dispatch(want.1)),
            to_vec(Tensor::<3>::from_dispatch(want.2)),
        );
        // Measured 2.4e-7 (y), 0 (conv state), 7.0e-7 (ssm state).
        assert_rel(&format!("{shape}: y"), &got.0, &want.0, 5e-6);
        assert_rel(&format!("{shape}: conv state"), &got.1, &want.1, 2e-6);
        assert_rel(&format!("{shape}: ssm state"), &got.2, &want.2, 1e-5);
    }
}

/// Half-precision activations (f16: lavapipe has shader-f16; WGSL has no bf16): the forward
/// kernel reads u, delta, B, C, z in f16 and writes y in f16, with its state and sums in f32.
/// Against the portable body on the same f16 values widened to f32, the only difference is y's
/// rounding to f16 (half a unit in the last place, 2^-12 relative) and the f32 sums' order:
/// `|dy| <= 2^-11 |y| + 1e-4`, the state (f32) within 2e-5 of its scale (measured 1.8e-6).
/// Staged and direct loads, one pass and 3 spans; the kernel ran, nothing fell back.
#[test]
fn scan_kernel_reads_and_writes_f16_activations() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    if !gpu.supports_dtype(DType::F16) {
        ssm_backends::testing::skip(
            "scan_kernel_reads_and_writes_f16_activations",
            format!("{gpu:?} has no f16"),
        );
        return;
    }
    let cpu = Device::flex();
    let mut rng = TestRng::new(23);
    let half = |t: Tensor<3>| t.cast(FloatDType::F16);
    let half4 = |t: Tensor<4>| t.cast(FloatDType::F16);
    let wide = |t: Tensor<3>| t.cast(FloatDType::F32);
    let wide4 = |t: Tensor<4>| t.cast(FloatDType::F32);
    for (stage, spans) in [(false, 1), (true, 1), (true, 3), (false, 3)] {
        let _stage = Setting::set(set_gpu_scan_staging, stage);
        let _spans = Setting::set(set_gpu_scan_spans, spans);
        for c in cases() {
            let mut x = to_device(&inputs(c, &mut rng, &cpu), &gpu);
            (x.u, x.delta, x.b, x.c) = (half(x.u), half(x.delta), half4(x.b), half4(x.c));
            x.z = x.z.map(half);
            // The reference: the same f16 values in f32, on the portable body.
            let mut r = to_device(&x, &cpu);
            (r.u, r.delta, r.b, r.c) = (wide(r.u), wide(r.delta), wide4(r.b), wide4(r.c));
            r.z = r.z.map(wide);
            let want = scan(&r).run_reference();
            let counter = LaunchCounter::start();
            let got = scan(&x).run();
            assert_eq!(got.y.dtype(), DType::F16, "y in the activations' type");
            assert_eq!(got.state.dtype(), DType::F32, "the state in f32");
            let (y, state) = (to_vec(got.y), to_vec(got.state));
            let launches = if spans > 1 && c.len > 1 { 2 } else { 1 };
            assert_eq!(
                counter.count_of("scan_fwd_kernel"),
                launches,
                "{c:?}: {:?}",
                counter.counts()
            );
            assert!(counter.fallbacks().is_empty(), "{:?}", counter.fallbacks());
            drop(counter);
            let want_y = to_vec(want.y);
            // f32::max skips NaN: check both sides first.
            let name = format!("{c:?} stage {stage} spans {spans}");
            assert_finite(&format!("{name}: y"), &y);
            assert_finite(&format!("{name}: y reference"), &want_y);
            let worst = y
                .iter()
                .zip(&want_y)
                .map(|(g, w)| (g - w).abs() - 2f32.powi(-11) * w.abs())
                .fold(f32::MIN, f32::max);
            assert!(
                worst <= 1e-4,
                "{c:?} stage {stage} spans {spans}: y off by {worst:e} past the f16 rounding"
            );
            assert_rel(&format!("{name}: state"), &state, &to_vec(want.state), 2e-5);
        }
    }
}
