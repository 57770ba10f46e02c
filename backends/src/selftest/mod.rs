//! Every custom kernel against its portable body on one device: the kernel half of `zoo
//! selftest`, so that a user sees on their own GPU (or CPU) whether the kernels are right.
//!
//! Each [`Check`] runs an op at one shape twice on the device: its portable body (the op's
//! `reference.rs`, Burn's own tensor ops; the oracle of the test suite) and then the op as the
//! device dispatches it, under the launch counter. It passes when every output is within its
//! bound of the portable body's, relative to that output's own scale (`|got - want| <= bound x
//! max|want|`, no NaN or infinity on either side), when the op's kernel ran (on a GPU: the
//! runtime saw each of its kernels launch; on the CPU: the fused kernel's own counter moved)
//! and when nothing fell back to a slower body. The shapes reach each path: one pass and spans,
//! direct and staged loads, packed rows, channel counts above one cube and not a multiple of
//! it, lengths not a multiple of a chunk, Mamba2's state size; the bounds are the test suite's
//! (measured on lavapipe and Flex, with the headroom the tests give).

mod fft;
mod q8;
mod s4_kernels;
mod scan;
mod ssd;
mod steps;

use crate::compare::try_gap;
use crate::cpu::calls::{KernelCalls, kernel_calls};
use crate::rng::TestRng;
use burn::tensor::{DType, Device, Tensor};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// One op at one shape against its portable body (see the module's documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The op and the path it takes (`scan forward, 3 spans, staged`).
    pub op: String,
    /// The inputs' shape, in the op's own terms (`B 1 D 72 L 200 N 16 G 2`).
    pub shape: String,
    /// The output nearest its bound (`y`, `state`, `dA`, ...).
    pub output: String,
    /// That output's largest error relative to its own scale; `None` when it could not be
    /// computed (a panic, a non-finite value: see [`Check::failure`]).
    pub error: Option<f64>,
    /// That output's bound.
    pub bound: f64,
    /// Kernel launches the op made (GPU), or runs of the fused CPU kernel (CPU).
    pub launches: Option<usize>,
    /// The ops that ran a slower body instead of their kernel, with how many times.
    pub fallbacks: Vec<(String, usize)>,
    /// Seconds the op took, its first run on this shape (kernel compilation and autotune
    /// included) and the read-back.
    pub seconds: f64,
    /// Why the check failed; `None` when it passed.
    pub failure: Option<String>,
}

impl Check {
    /// Whether every output was within its bound, the kernel ran and nothing fell back.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// Runs every kernel check on `device` (a GPU through wgpu or CUDA, or a CPU backend), in a
/// fixed order with fixed seeds. Half-precision checks run where the device has the type. A
/// check that panics is a failed check, not a crash.
pub fn kernels(device: &Device) -> Vec<Check> {
    kernels_with(device, &mut |_| {})
}

/// [`kernels`], calling `progress` with each check as it completes.
pub fn kernels_with(device: &Device, progress: &mut dyn FnMut(&Check)) -> Vec<Check> {
    let mut suite = Suite::new(device, progress);
    scan::checks(&mut suite);
    ssd::checks(&mut suite);
    steps::checks(&mut suite);
    fft::checks(&mut suite);
    q8::checks(&mut suite);
    s4_kernels::checks(&mut suite);
    suite.rows
}

/// The fused CPU kernels, each with its own run counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernel {
    /// The selective scan's forward.
    ScanForward,
    /// The selective scan's backward.
    ScanBackward,
    /// The decode steps (state, conv, Mamba-3).
    Step,
    /// The SSD's forward (Mamba2's and the log-decay form).
    SsdForward,
    /// The log-decay SSD's backward.
    SsdBackward,
    /// The real FFTs and the FFT convolution.
    Fft,
    /// The products from 8-bit weights.
    Q8Product,
    /// The Vandermonde kernel of S4D and DSS.
    Vandermonde,
    /// The Cauchy sums of S4's DPLR kernel.
    Cauchy,
}

impl CpuKernel {
    fn count(self, c: &KernelCalls) -> usize {
        match self {
            Self::ScanForward => c.scan_forward,
            Self::ScanBackward => c.scan_backward,
            Self::Step => c.step,
            Self::SsdForward => c.ssd_forward,
            Self::SsdBackward => c.ssd_backward,
            Self::Fft => c.fft,
            Self::Q8Product => c.rows_matmul_q8,
            Self::Vandermonde => c.vandermonde,
            Self::Cauchy => c.cauchy,
        }
    }
}

/// What must run for a check to count: the GPU kernels (each at least once; their names as
/// the runtime reports them, matched loosely) and the CPU kernel. An op without a kernel on
/// one side (`&[]`, `None`) is not checked there.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The GPU kernels, by the name of their `#[cube]` function (`scan_fwd_kernel`).
    pub gpu: &'static [&'static str],
    /// The fused CPU kernel.
    pub cpu: Option<CpuKernel>,
}

/// An output's name and its bound relative to the output's own scale.
pub type Bound = (&'static str, f64);

/// The checks of one run: the device, its inputs' generator, the rows so far.
pub(crate) struct Suite<'p> {
    pub device: Device,
    pub rng: TestRng,
    host: bool,
    rows: Vec<Check>,
    progress: &'p mut dyn FnMut(&Check),
}

impl<'p> Suite<'p> {
    fn new(device: &Device, progress: &'p mut dyn FnMut(&Check)) -> Self {
        Self {
            device: device.clone(),
            rng: TestRng::new(2026),
            host: crate::is_host(device),
            rows: Vec::new(),
            progress,
        }
    }

    /// Whether the device has the float type (f16, bf16).
    pub fn has(&self, dtype: DType) -> bool {
        self.device.supports_dtype(dtype)
    }

    /// Whether the device is a GPU (CubeCL) rather than a CPU backend.
    pub fn gpu(&self) -> bool {
        !self.host
    }

    /// A standard normal tensor on the device.
    pub fn normal<const D: usize>(&mut self, dims: [usize; D]) -> Tensor<D> {
        let device = self.device.clone();
        self.rng.normal(dims, &device)
    }

    /// A tensor uniform on `[lo, hi)` on the device.
    pub fn uniform<const D: usize>(&mut self, dims: [usize; D], lo: f64, hi: f64) -> Tensor<D> {
        let device = self.device.clone();
        self.rng.uniform(dims, lo, hi, &device)
    }

    /// One check on the suite's device (see [`check`]); nothing where the op has no kernel
    /// on this kind of device.
    pub fn check(
        &mut self,
        op: impl Into<String>,
        shape: impl Into<String>,
        kernels: Kernels,
        bounds: &[Bound],
        want: impl FnOnce() -> Vec<Vec<f32>>,
        got: impl FnOnce() -> Vec<Vec<f32>>,
    ) {
        if let Some(row) = check(&self.device, op, shape, kernels, bounds, want, got) {
            (self.progress)(&row);
            self.rows.push(row);
        }
    }
}

/// One check on `device`: `want` (the portable body, or reference values) runs and is read
/// back first, then `got` (the op) under the launch counter; both return their outputs in the
/// order of `bounds`. `None` where the op has no kernel on this kind of device (no GPU kernel
/// named, or no CPU kernel). A panic in either is a failed check.
pub fn check(
    device: &Device,
    op: impl Into<String>,
    shape: impl Into<String>,
    kernels: Kernels,
    bounds: &[Bound],
    want: impl FnOnce() -> Vec<Vec<f32>>,
    got: impl FnOnce() -> Vec<Vec<f32>>,
) -> Option<Check> {
    let host = crate::is_host(device);
    let (op, shape) = (op.into(), shape.into());
    if (host && kernels.cpu.is_none()) || (!host && kernels.gpu.is_empty()) {
        return None;
    }
    let mut row = Check {
        op,
        shape,
        output: bounds.first().map_or("", |b| b.0).to_string(),
        error: None,
        bound: bounds.first().map_or(0.0, |b| b.1),
        launches: None,
        fallbacks: Vec::new(),
        seconds: 0.0,
        failure: None,
    };
    let want = match catch_unwind(AssertUnwindSafe(want)) {
        Ok(w) => w,
        Err(e) => {
            row.failure = Some(format!("the reference panicked: {}", panic_text(&e)));
            return Some(row);
        }
    };
    let watch = Watch::start(host);
    let started = std::time::Instant::now();
    let got = catch_unwind(AssertUnwindSafe(got));
    row.seconds = started.elapsed().as_secs_f64();
    let ran = watch.finish(kernels, &mut row);
    let got = match got {
        Ok(g) => g,
        Err(e) => {
            row.failure = Some(format!("the op panicked: {}", panic_text(&e)));
            return Some(row);
        }
    };
    let mut problems = Vec::new();
    if let Err(missing) = ran {
        problems.push(missing);
    }
    if !row.fallbacks.is_empty() {
        let names: Vec<String> = row
            .fallbacks
            .iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect();
        problems.push(format!("fell back to a slower body: {}", names.join(", ")));
    }
    // The output nearest its bound (the largest error / bound) is the row's.
    let mut worst: Option<(f64, &str, f64, f64)> = None;
    for (k, &(name, bound)) in bounds.iter().enumerate() {
        let (Some(g), Some(w)) = (got.get(k), want.get(k)) else {
            problems.push(format!("{name}: the op returned no such output"));
            continue;
        };
        match try_gap(name, g, w) {
            Ok(gap) => {
                let e = gap.rel();
                let ratio = if bound > 0.0 { e / bound } else { e };
                if worst.is_none_or(|(r, ..)| ratio > r) {
                    worst = Some((ratio, name, e, bound));
                }
                if e > bound {
                    problems.push(format!(
                        "{name}: error {e:.2e} > bound {bound:.0e} (max abs {:.2e} at {}, \
                         scale {:.2e})",
                        gap.max_abs, gap.at, gap.scale
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if let Some((_, name, e, bound)) = worst {
        row.output = name.to_string();
        row.error = Some(e);
        row.bound = bound;
    }
    if !problems.is_empty() {
        row.failure = Some(problems.join("; "));
    }
    Some(row)
}

/// Counting what ran while the op under test runs.
struct Watch {
    cpu_before: KernelCalls,
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    gpu: Option<crate::LaunchCounter>,
}

impl Watch {
    fn start(host: bool) -> Self {
        #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
        let _ = host;
        Self {
            cpu_before: kernel_calls(),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            gpu: (!host).then(crate::LaunchCounter::start),
        }
    }

    /// Fills the row's launches and fallbacks; an error naming the kernels that did not run.
    fn finish(self, kernels: Kernels, row: &mut Check) -> Result<(), String> {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let Some(counter) = &self.gpu {
            row.launches = Some(counter.total());
            row.fallbacks = counter.fallbacks();
            let missing: Vec<&str> = kernels
                .gpu
                .iter()
                .copied()
                .filter(|k| counter.count_of(k) == 0)
                .collect();
            return if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} did not launch (the runtime saw {:?})",
                    missing.join(", "),
                    counter.counts()
                ))
            };
        }
        let Some(cpu) = kernels.cpu else {
            return Ok(());
        };
        let ran = cpu.count(&kernel_calls()) - cpu.count(&self.cpu_before);
        row.launches = Some(ran);
        if ran == 0 {
            Err(format!("the fused CPU kernel ({cpu:?}) did not run"))
        } else {
            Ok(())
        }
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// `t`'s values on `device` (an autodiff device), tracked for gradients.
pub(crate) fn track<const D: usize>(t: &Tensor<D>, device: &Device) -> Tensor<D> {
    Tensor::from_data(t.clone().into_data(), device).require_grad()
}

/// The gradient of a tracked tensor, on the host.
pub(crate) fn grad<const D: usize>(t: &Tensor<D>, g: &burn::tensor::Gradients) -> Vec<f32> {
    host(t.grad(g).expect("a gradient for every tracked input"))
}

/// A tensor's values as f32 on the host.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    crate::to_vec(t)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    const FFT: Kernels = Kernels {
        gpu: &["fft"],
        cpu: Some(CpuKernel::Fft),
    };

    /// An op that runs the FFT kernel and returns `out`.
    fn fft_then(out: Vec<f32>) -> Vec<Vec<f32>> {
        let x = Tensor::<2>::zeros([1, 8], &Device::flex());
        let _ = host(crate::rfft(x, 8).0);
        vec![out]
    }

    fn run(got: impl FnOnce() -> Vec<Vec<f32>>) -> Check {
        check(
            &Device::flex(),
            "op",
            "shape",
            FFT,
            &[("y", 1e-3)],
            || vec![vec![1.0, -2.0]],
            got,
        )
        .expect("the op has a CPU kernel")
    }

    #[test]
    fn within_the_bound_with_the_kernel_run_passes() {
        let row = run(|| fft_then(vec![1.0, -2.001]));
        assert!(row.passed(), "{row:?}");
        assert_eq!(row.output, "y");
        assert!((row.error.unwrap() - 0.0005).abs() < 1e-6, "{row:?}");
        assert!(row.launches.unwrap() >= 1);
    }

    #[test]
    fn past_the_bound_fails_naming_the_output() {
        let row = run(|| fft_then(vec![1.0, -2.1]));
        let why = row.failure.expect("fails");
        assert!(why.contains("y: error 5.00e-2 > bound 1e-3"), "{why}");
    }

    #[test]
    fn a_nan_fails() {
        let row = run(|| fft_then(vec![f32::NAN, -2.0]));
        let why = row.failure.expect("fails");
        assert!(
            why.contains("non-finite computed value at index 0"),
            "{why}"
        );
    }

    #[test]
    fn a_kernel_that_did_not_run_fails() {
        let row = run(|| vec![vec![1.0, -2.0]]);
        assert_eq!(row.launches, Some(0));
        let why = row.failure.expect("fails");
        assert!(
            why.contains("the fused CPU kernel (Fft) did not run"),
            "{why}"
        );
    }

    #[test]
    fn a_panic_fails_with_its_message() {
        let row = run(|| panic!("shapes differ"));
        let why = row.failure.expect("fails");
        assert!(why.contains("the op panicked: shapes differ"), "{why}");
        let row = run(Vec::new);
        assert!(row.failure.unwrap().contains("no such output"));
    }

    #[test]
    fn an_op_without_a_kernel_on_the_device_is_not_checked() {
        let gpu_only = Kernels {
            gpu: &["mamba_step_kernel"],
            cpu: None,
        };
        let row = check(&Device::flex(), "op", "", gpu_only, &[], Vec::new, Vec::new);
        assert!(row.is_none());
    }

    /// Every check passes on the CPU backend (the kernels against their portable bodies).
    #[test]
    fn every_kernel_passes_on_flex() {
        let rows = kernels(&Device::flex());
        assert!(rows.len() >= 30, "{} checks", rows.len());
        let failed: Vec<&Check> = rows.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
