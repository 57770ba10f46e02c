//! No silent substitution: a GPU op that cannot run its kernel runs the portable body and says
//! so (a `log` warning once per op and shape, and the launch counter's fallback tally); the CPU
//! kernels refuse a float type they do not compute in (f64; f16 and bf16 activations are
//! widened to f32, the state kept f32); shape errors are the crate's `Error`.

use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use ssm_backends::testing::{TestRng, assert_finite};
use ssm_backends::{Error, SelectiveScan, ungrouped};

/// Random scan inputs, made once and placed on any device.
struct ScanInputs {
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<3>,
    c: Tensor<3>,
}

impl ScanInputs {
    fn random(
        batch: usize,
        d: usize,
        l: usize,
        n: usize,
        rng: &mut TestRng,
        device: &Device,
    ) -> Self {
        let normal = Distribution::Normal(0.0, 1.0);
        // In the order the fields were drawn before.
        let u = rng.tensor::<3>([batch, d, l], normal, device);
        let delta = rng
            .tensor::<3>([batch, d, l], normal, device)
            .mul_scalar(0.1);
        let a = rng.tensor::<2>([d, n], Distribution::Uniform(-2.0, -0.5), device);
        let b = rng.tensor::<3>([batch, n, l], normal, device);
        let c = rng.tensor::<3>([batch, n, l], normal, device);
        Self { u, delta, a, b, c }
    }

    fn on(&self, device: &Device) -> SelectiveScan {
        fn to<const D: usize>(t: &Tensor<D>, device: &Device) -> Tensor<D> {
            Tensor::from_data(t.clone().into_data(), device)
        }
        SelectiveScan::new(
            to(&self.u, device),
            to(&self.delta, device),
            to(&self.a, device),
            ungrouped(to(&self.b, device)),
            ungrouped(to(&self.c, device)),
        )
    }
}

#[test]
fn shape_errors_are_the_crate_error_naming_the_input() {
    let device = Device::flex();
    let bad = SelectiveScan::new(
        Tensor::<3>::zeros([1, 4, 8], &device),
        Tensor::<3>::zeros([1, 4, 7], &device),
        Tensor::<2>::zeros([4, 2], &device),
        Tensor::<4>::zeros([1, 1, 2, 8], &device),
        Tensor::<4>::zeros([1, 1, 2, 8], &device),
    );
    match bad.check() {
        Err(Error::Shape(m)) => assert!(m.contains("delta is [1, 4, 7]"), "{m}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    let e = ssm_backends::MambaStepDims::infer(&[2, 16], &[2, 8, 4], &[3, 8, 2], 152).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e:?}");
}

#[test]
#[should_panic(expected = "the CPU kernels take f32 tensors, got F64")]
fn the_cpu_kernels_refuse_other_float_types() {
    let device = Device::flex();
    let f64s = |dims: [usize; 3]| Tensor::<3>::ones(dims, &device).cast(FloatDType::F64);
    let scan = SelectiveScan::new(
        f64s([1, 2, 3]),
        f64s([1, 2, 3]),
        Tensor::<2>::ones([2, 1], &device)
            .neg()
            .cast(FloatDType::F64),
        ungrouped(f64s([1, 1, 3])),
        ungrouped(f64s([1, 1, 3])),
    );
    let _ = scan.run();
}

/// f16 and bf16 activations are not "other float types": the CPU scan widens them as it reads
/// (the state and sums in f32) and returns `y` in their type, equal to the f32 run on the same
/// values up to `y`'s own rounding.
#[test]
fn the_cpu_scan_takes_half_activations() {
    let device = Device::flex();
    let x = ScanInputs::random(2, 6, 19, 4, &mut TestRng::new(5), &device);
    for (dtype, u) in [
        (FloatDType::F16, 2f32.powi(-11)),
        (FloatDType::BF16, 2f32.powi(-8)),
    ] {
        let h3 = |t: &Tensor<3>| t.clone().cast(dtype);
        let w3 = |t: Tensor<3>| t.cast(FloatDType::F32);
        let (hu, hd, hb, hc) = (h3(&x.u), h3(&x.delta), h3(&x.b), h3(&x.c));
        let got = SelectiveScan::new(
            hu.clone(),
            hd.clone(),
            x.a.clone(),
            ungrouped(hb.clone()),
            ungrouped(hc.clone()),
        )
        .softplus(true)
        .run();
        assert_eq!(got.y.dtype(), burn::tensor::DType::from(dtype));
        assert_eq!(got.state.dtype(), burn::tensor::DType::F32);
        let want = SelectiveScan::new(
            w3(hu),
            w3(hd),
            x.a.clone(),
            ungrouped(w3(hb)),
            ungrouped(w3(hc)),
        )
        .softplus(true)
        .run();
        let (gy, wy) = (ssm_backends::to_vec(got.y), ssm_backends::to_vec(want.y));
        assert_finite(&format!("{dtype:?}: y"), &gy);
        assert_finite(&format!("{dtype:?}: y of the f32 run"), &wy);
        for (g, w) in gy.iter().zip(&wy) {
            assert!((g - w).abs() <= u * w.abs() + 1e-6, "{dtype:?}: {g} vs {w}");
        }
        let (gs, ws) = (
            ssm_backends::to_vec(got.state),
            ssm_backends::to_vec(want.state),
        );
        assert_eq!(gs, ws, "{dtype:?}: the state is the f32 run's");
    }
}

#[cfg(feature = "wgpu")]
mod gpu {
    use super::ScanInputs;
    use burn::tensor::{Device, Distribution, Tensor};
    use ssm_backends::testing::{TestRng, assert_rel, set_gpu_max_buffer, wgpu_test_device};
    use ssm_backends::{LaunchCounter, rfft, to_vec};
    use std::sync::{Mutex, OnceLock};

    /// The launch counter, the buffer limit and the logger are process-wide.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// The warnings logged so far (a logger that keeps them).
    struct Kept(Mutex<Vec<String>>);

    impl log::Log for Kept {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    fn warnings() -> &'static Kept {
        static KEPT: OnceLock<&'static Kept> = OnceLock::new();
        KEPT.get_or_init(|| {
            let kept: &'static Kept = Box::leak(Box::new(Kept(Mutex::new(Vec::new()))));
            log::set_logger(kept).expect("the only logger of this test binary");
            log::set_max_level(log::LevelFilter::Warn);
            kept
        })
    }

    fn warned_about(op: &str) -> usize {
        warnings()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|m| m.starts_with(op))
            .count()
    }

    #[test]
    fn an_fft_length_burn_cannot_take_runs_the_dft_body_and_says_so_once() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = wgpu_test_device() else {
            return;
        };
        let cpu = Device::flex();
        let x = TestRng::new(3).tensor::<2>([3, 12], Distribution::Normal(0.0, 1.0), &cpu);
        let (want_re, want_im) = rfft(x.clone(), 12);
        warnings();
        let counter = LaunchCounter::start();
        for pass in 0..2 {
            let (re, im) = rfft(Tensor::<2>::from_data(x.clone().into_data(), &gpu), 12);
            let (want_re, want_im) = (to_vec(want_re.clone()), to_vec(want_im.clone()));
            // Measured 7.4e-8 (re), 1.4e-7 (im) on wgpu.
            assert_rel(
                &format!("rfft pass {pass}: re"),
                &to_vec(re),
                &want_re,
                2e-6,
            );
            assert_rel(
                &format!("rfft pass {pass}: im"),
                &to_vec(im),
                &want_im,
                2e-6,
            );
        }
        assert_eq!(counter.fallbacks(), vec![("rfft".to_string(), 2)]);
        assert_eq!(
            warned_about("rfft on inputs [[3, 12]]"),
            1,
            "one warning per shape"
        );
        // A power of two takes Burn's FFT kernels: no fallback.
        counter.reset();
        let _ = to_vec(rfft(Tensor::<2>::from_data(x.into_data(), &gpu), 16).0);
        assert!(counter.fallbacks().is_empty(), "{:?}", counter.fallbacks());
    }

    #[test]
    fn a_scan_over_the_binding_limit_runs_the_portable_body_and_says_so() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gpu) = wgpu_test_device() else {
            return;
        };
        let cpu = Device::flex();
        let inputs = ScanInputs::random(2, 8, 16, 4, &mut TestRng::new(4), &cpu);
        let want = inputs.on(&cpu).run_reference();
        warnings();
        // One batch row's output takes 8 (16 + 4) floats: more than a limit of 100 bytes
        // (after the alignment margin, nothing fits).
        set_gpu_max_buffer(Some(100));
        let counter = LaunchCounter::start();
        let got = inputs.on(&gpu).run();
        let (y, h) = (to_vec(got.y), to_vec(got.state));
        set_gpu_max_buffer(None);
        assert_eq!(counter.count_of("scan_fwd_kernel"), 0);
        assert_eq!(counter.fallbacks(), vec![("selective_scan".to_string(), 1)]);
        assert_eq!(warned_about("selective_scan on inputs"), 1);
        // Measured 6.2e-7 (y), 7.2e-7 (state) on wgpu.
        assert_rel("selective_scan fallback: y", &y, &to_vec(want.y), 1e-5);
        assert_rel(
            "selective_scan fallback: state",
            &h,
            &to_vec(want.state),
            1e-5,
        );
    }
}
