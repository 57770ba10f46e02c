//! The Vandermonde kernel of the diagonal SSMs, `K[h, l] = Σ_n Re(c exp(z (l − s)))`, on every
//! backend built: values against the same sum in f64 and against the reference body (the
//! (H, N, L) powers in f32), gradients against autodiff through the reference body, modes
//! measured from the far end (DSS-softmax's), and the kernels proven to have run.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls};
use ssm_backends::{to_vec, vandermonde, vandermonde_reference};
use std::f64::consts::PI;

fn devices() -> Vec<Device> {
    let mut all = vec![Device::flex()];
    #[cfg(feature = "ndarray")]
    all.push(Device::ndarray());
    #[cfg(feature = "wgpu")]
    all.extend(ssm_backends::testing::wgpu_test_device());
    all
}

fn is_gpu(device: &Device) -> bool {
    format!("{device:?}").contains("Cube")
}

/// The op or its reference body.
type KernelFn =
    fn((Tensor<2>, Tensor<2>), (Tensor<2>, Tensor<2>), Option<Tensor<2>>, usize) -> Tensor<2>;

/// One case: `c`, `z`, `shift` (H, N) as f32 values.
struct Case {
    name: &'static str,
    h: usize,
    n: usize,
    c: (Vec<f32>, Vec<f32>),
    z: (Vec<f32>, Vec<f32>),
    shift: Option<Vec<f32>>,
}

/// S4D-Lin's exponents `Δ A` (ZOH): `A_n = −1/2 + iπn`, `Δ` log-uniform in [1e-3, 1e-1] per
/// channel, `c` complex normal; or DSS-softmax-like modes, half of them with a positive real
/// part measured from the end (`s = L − 1`).
fn case(name: &'static str, h: usize, n: usize, len: usize, seed: u64, growing: bool) -> Case {
    let mut rng = TestRng::new(seed);
    let normal = Distribution::Normal(0.0, 0.5f64.sqrt());
    let c = (rng.values(h * n, normal), rng.values(h * n, normal));
    let (mut zr, mut zi, mut s) = (vec![0f32; h * n], vec![0f32; h * n], vec![0f32; h * n]);
    for ch in 0..h {
        let dt = (rng.sample(Distribution::Uniform(1e-3f64.ln(), 1e-1f64.ln()))).exp();
        for m in 0..n {
            let i = ch * n + m;
            let (re, im) = if growing {
                let re = rng.sample(Distribution::Uniform(0.05, 1.0));
                (
                    if m % 2 == 0 { re } else { -re },
                    rng.sample(Distribution::Normal(0.0, 20.0)),
                )
            } else {
                (-0.5, PI * m as f64)
            };
            zr[i] = (dt * re) as f32;
            zi[i] = (dt * im) as f32;
            if growing && re > 0.0 {
                s[i] = (len - 1) as f32;
            }
        }
    }
    Case {
        name,
        h,
        n,
        c,
        z: (zr, zi),
        shift: growing.then_some(s),
    }
}

impl Case {
    fn tensors(&self, device: &Device) -> [Tensor<2>; 5] {
        let t = |v: &Vec<f32>| {
            Tensor::<2>::from_data(TensorData::new(v.clone(), [self.h, self.n]), device)
        };
        let zeros = vec![0f32; self.h * self.n];
        [
            t(&self.c.0),
            t(&self.c.1),
            t(&self.z.0),
            t(&self.z.1),
            t(self.shift.as_ref().unwrap_or(&zeros)),
        ]
    }

    /// The kernel by `run` (the op or its reference body).
    fn kernel(&self, len: usize, device: &Device, run: KernelFn) -> Vec<f32> {
        let [cr, ci, zr, zi, s] = self.tensors(device);
        to_vec(run((cr, ci), (zr, zi), Some(s), len))
    }

    /// The same sum in f64, term by term from the f32 inputs.
    fn kernel_f64(&self, len: usize) -> Vec<f64> {
        let mut k = vec![0f64; self.h * len];
        for ch in 0..self.h {
            for m in 0..self.n {
                let i = ch * self.n + m;
                let (cr, ci) = (f64::from(self.c.0[i]), f64::from(self.c.1[i]));
                let (zr, zi) = (f64::from(self.z.0[i]), f64::from(self.z.1[i]));
                let s = self.shift.as_ref().map_or(0.0, |s| f64::from(s[i]));
                for l in 0..len {
                    let t = l as f64 - s;
                    let mag = (zr * t).exp();
                    let (sin, cos) = (zi * t).sin_cos();
                    k[ch * len + l] += mag * (cr * cos - ci * sin);
                }
            }
        }
        k
    }
}

/// Bounds relative to the kernel's largest magnitude: about 4x the largest error measured,
/// rounded up to 1, 2 or 5 times a power of ten.
struct Bounds {
    /// The op against the f64 sum.
    f64_sum: f64,
    /// The op against the reference body (whose own f32 error dominates).
    reference: f64,
    /// The gradients against autodiff through the reference body.
    grads: f64,
}

/// Flex and NdArray: the kernel sums in f64, so against the f64 sum only the final rounding to
/// f32 is left; against the reference body, that body's own f32 error (4.5e-6 at L = 1024).
const CPU: Bounds = Bounds {
    f64_sum: 2e-7,   // measured 0 (the same f32 rounding of the same f64 sum)
    reference: 2e-5, // measured 4.5e-6 (the reference body's error against f64: 4.5e-6)
    grads: 5e-5,     // measured 8.2e-6
};

/// wgpu (lavapipe): the kernel computes in f32 like the reference body (its error against the
/// f64 sum is the reference body's, 4.4e-6 at L = 1024; the phase `Im(z) (l − s)` rounded to
/// f32 dominates it).
const GPU: Bounds = Bounds {
    f64_sum: 2e-5,   // measured 4.4e-6
    reference: 1e-6, // measured 1.7e-7
    grads: 2e-6,     // measured 4.6e-7
};

fn bounds(device: &Device) -> &'static Bounds {
    if is_gpu(device) { &GPU } else { &CPU }
}

#[test]
fn kernel_matches_the_f64_sum_and_the_reference_body() {
    for device in devices() {
        let gpu = is_gpu(&device);
        let lengths: &[usize] = if gpu {
            &[1, 37, 1024]
        } else {
            &[1, 37, 1024, 4096]
        };
        for &len in lengths {
            for (seed, growing) in [(1, false), (2, true)] {
                let c = case(
                    if growing { "growing" } else { "S4D-Lin" },
                    3,
                    16,
                    len,
                    seed,
                    growing,
                );
                let before = cpu_kernel_calls().vandermonde;
                #[cfg(feature = "wgpu")]
                let launches = ssm_backends::LaunchCounter::start();
                let got = c.kernel(len, &device, vandermonde);
                if gpu {
                    #[cfg(feature = "wgpu")]
                    assert!(
                        launches.count_of("vandermonde_kernel") > 0,
                        "the GPU kernel ran"
                    );
                } else {
                    assert!(
                        cpu_kernel_calls().vandermonde > before,
                        "the CPU kernel ran"
                    );
                }
                let want = c.kernel_f64(len);
                let reference = c.kernel(len, &device, vandermonde_reference);
                let what = format!("{device:?} {} L {len}", c.name);
                let b = bounds(&device);
                let ours = assert_rel(
                    &format!("{what}: op vs f64"),
                    &got,
                    &want.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    b.f64_sum,
                );
                let theirs = ssm_backends::testing::gap(
                    "reference body vs f64",
                    &reference,
                    &want.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                );
                eprintln!("{what}: reference body vs f64 {:.2e}", theirs.rel());
                assert!(
                    ours.rel() <= theirs.rel().max(b.f64_sum),
                    "{what}: the op ({:e}) is less precise than the reference body ({:e})",
                    ours.rel(),
                    theirs.rel()
                );
                assert_rel(
                    &format!("{what}: op vs reference body"),
                    &got,
                    &reference,
                    b.reference,
                );
            }
        }
    }
}

#[test]
fn gradients_match_autodiff_through_the_reference_body() {
    for base in devices() {
        let device = base.clone().autodiff();
        let lengths: &[usize] = if is_gpu(&base) {
            &[300]
        } else {
            &[5, 300, 2500]
        };
        for &len in lengths {
            for (seed, growing) in [(3, false), (4, true)] {
                let c = case("grads", 2, 8, len, seed, growing);
                let w = TestRng::new(seed + 10).values(c.h * len, Distribution::Normal(0.0, 1.0));
                let run = |reference: bool| {
                    let [cr, ci, zr, zi, s] = c.tensors(&device);
                    let [cr, ci, zr, zi] = [cr, ci, zr, zi].map(|t| t.require_grad());
                    let f = if reference {
                        vandermonde_reference
                    } else {
                        vandermonde
                    };
                    let k = f(
                        (cr.clone(), ci.clone()),
                        (zr.clone(), zi.clone()),
                        Some(s),
                        len,
                    );
                    let w = Tensor::<2>::from_data(TensorData::new(w.clone(), [c.h, len]), &device);
                    let g = (k * w).sum().backward();
                    [cr, ci, zr, zi].map(|p| to_vec(p.grad(&g).expect("gradient")))
                };
                let before = cpu_kernel_calls().vandermonde;
                let (ours, reference) = (run(false), run(true));
                if !is_gpu(&base) {
                    assert!(
                        cpu_kernel_calls().vandermonde >= before + 2,
                        "forward and backward kernels ran"
                    );
                }
                for (name, (a, b)) in ["c_re", "c_im", "z_re", "z_im"]
                    .iter()
                    .zip(ours.iter().zip(&reference))
                {
                    let what = format!(
                        "{base:?} {} L {len}: d{name}",
                        if growing { "growing" } else { "S4D-Lin" }
                    );
                    assert_rel(&what, a, b, bounds(&base).grads);
                }
            }
        }
    }
}

#[test]
fn long_kernels_stay_finite_and_fast_decaying_modes_end_early() {
    // L = 65,536 on the CPU kernel, with modes that decay to nothing within a few steps beside
    // slow ones (their walks end early, with no subnormal computed): every value finite, and
    // equal to the f64 sum.
    let len = 65_536;
    let mut c = case("long", 2, 4, len, 5, false);
    c.z.0[1] = -50.0;
    c.z.0[5] = -800.0;
    let device = Device::flex();
    let got = c.kernel(len, &device, vandermonde);
    let want: Vec<f32> = c.kernel_f64(len).iter().map(|&v| v as f32).collect();
    assert_rel(&format!("{device:?} L {len}"), &got, &want, CPU.f64_sum);
}
