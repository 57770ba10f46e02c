//! The S4 family against its reference modules on long inputs (`fixtures/s4_family/long`,
//! written by `fixtures/tools/make_s4_long.py` running state-spaces/s4 and ag1988/dss):
//! an S4 checkpoint saved with `l_max=None` run beyond the length its `C~` is attuned to (the
//! reference doubles `C~` until the input fits), and every S4-family kernel at L = 1024, on
//! Flex and on wgpu.

use burn::tensor::{Device, Tensor};
use ssm_backends::testing::{Fixture, assert_rel, fixtures_dir, gap};
use ssm_backends::to_vec;
use ssm_models::ssm::dss::DSS;
use ssm_models::ssm::reference::{ReferenceLayer, ReferenceOptions};
use ssm_models::ssm::s4::S4;
use ssm_models::ssm::s4d::S4D;
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixtures_dir().join("s4_family").join("long")
}

fn fixture() -> Fixture {
    Fixture::open(dir().join("tensors.safetensors"))
}

/// Asserts that `got` has the shape of the fixture tensor `name` and its values within `tol`
/// relative to the fixture tensor's scale, printing the error.
fn assert_close<const D: usize>(t: &Fixture, name: &str, got: Tensor<D>, tol: f64) {
    let (want, shape) = t.values(name);
    assert_eq!(got.dims().to_vec(), shape, "{name}: shape");
    assert_rel(name, &to_vec(got), &want, tol);
}

/// Relative bounds of one layer's kernel and output at L = 1024.
#[derive(Clone, Copy)]
struct KernelOutput {
    kernel: f64,
    output: f64,
}

/// Relative bounds per tensor on one device.
struct Bounds {
    /// The `l_max=None` S4's outputs at 16, 12 and 40.
    lmax_none: f64,
    /// S4 (DPLR) against the reference run in float64.
    s4_f64: KernelOutput,
    /// S4 (DPLR) against the reference's own float32 run (its root-power error, see below).
    s4_f32: KernelOutput,
    /// The diagonal `S4Block`.
    s4d_block: Diagonal,
    /// `models/s4/s4d.py`.
    s4d: Diagonal,
    dss_exp: Diagonal,
    dss_softmax: Diagonal,
}

/// A diagonal layer's bounds against the reference run in float64 and against its own float32
/// run, whose error (its powers `exp(l dtA)` in float32: 0.8e-6 to 4.0e-6 against its float64
/// run at L = 1024) the second bound carries.
#[derive(Clone, Copy)]
struct Diagonal {
    f64: KernelOutput,
    f32: KernelOutput,
}

const fn diagonal(f64: (f64, f64), f32: (f64, f64)) -> Diagonal {
    Diagonal {
        f64: KernelOutput {
            kernel: f64.0,
            output: f64.1,
        },
        f32: KernelOutput {
            kernel: f32.0,
            output: f32.1,
        },
    }
}

/// Measured on Flex: lmax_none 2.3e-7; S4 vs float64 7.3e-7 (kernel), 5.4e-7 (output), vs
/// float32 2.3e-5, 3.1e-5. The diagonal layers (kernel, output) against the reference's
/// float64 and float32 runs: S4D block 3.8e-6, 3.5e-6 and 1.8e-6, 1.4e-6; S4D 1.1e-6, 1.3e-6
/// and 1.0e-6, 1.2e-6; DSS-exp 7.2e-7, 1.4e-6 and 5.3e-7, 9.3e-7; DSS-softmax 8.4e-7, 1.1e-6
/// and 7.4e-7, 1.1e-6. (Their Vandermonde sums run in f64 now, so they no longer repeat the
/// reference's float32 rounding, 0.8e-6 to 4.0e-6 from its float64 run, step for step as the
/// old f32 body did, 2.5e-7 from it; what is left against float64 is the f32 discretisation
/// before the sums: `Δ A`, `C (exp(Δ A) − 1) / A`.) The S4 output vs float32 keeps its old
/// absolute 1e-4 (1e-4 / 0.90 rounded down): the rule's 2e-4 would be looser.
const FLEX: Bounds = Bounds {
    lmax_none: 1e-6,
    s4_f64: KernelOutput {
        kernel: 5e-6,
        output: 5e-6,
    },
    s4_f32: KernelOutput {
        kernel: 1e-4,
        output: 1e-4,
    },
    s4d_block: diagonal((2e-5, 2e-5), (1e-5, 1e-5)),
    s4d: diagonal((5e-6, 1e-5), (5e-6, 5e-6)),
    dss_exp: diagonal((5e-6, 1e-5), (5e-6, 5e-6)),
    dss_softmax: diagonal((5e-6, 5e-6), (5e-6, 5e-6)),
};

/// Measured on wgpu: lmax_none 2.3e-7; S4 vs float64 3.0e-6 (kernel), 2.2e-6 (output), vs
/// float32 2.3e-5, 3.1e-5; the diagonal layers against float64 and float32: S4D block 1.5e-5,
/// 1.4e-5 and 1.9e-5, 1.8e-5; S4D 5.1e-6, 4.3e-6 and 4.9e-6, 4.3e-6; DSS-exp 2.2e-6, 5.8e-6 and
/// 2.5e-6, 6.7e-6; DSS-softmax 8.6e-6, 7.2e-6 and 8.1e-6, 7.8e-6 (these L = 1024 errors are
/// high; issue 38 works on them: the Vandermonde kernel itself is within 4.4e-6 of f64 on
/// lavapipe, `backends/tests/vandermonde.rs`).
/// Where the rule's 10x gave a bound looser than the old absolute 1e-4 at the tensor's scale,
/// the old one is kept, as 1e-4 / scale rounded down (marked "old").
const WGPU: Bounds = Bounds {
    lmax_none: 5e-6,
    s4_f64: KernelOutput {
        kernel: 5e-5,
        output: 5e-5,
    },
    s4_f32: KernelOutput {
        // Old: 1e-4 / 0.256, rounded down.
        kernel: 2e-4,
        // Old: 1e-4 / 0.902.
        output: 1e-4,
    },
    // Old: 2e-4 and 1e-4 / 1.36 (against float32; the float64 run's bounds are the same).
    s4d_block: diagonal((2e-4, 5e-5), (2e-4, 5e-5)),
    // Old: 5e-5 and 1e-4 / 2.64.
    s4d: diagonal((5e-5, 2e-5), (5e-5, 2e-5)),
    // Old: 5e-5 and 1e-4 / 4.25.
    dss_exp: diagonal((5e-5, 2e-5), (5e-5, 2e-5)),
    // Old: 1e-4 and 1e-4 / 3.30.
    dss_softmax: diagonal((1e-4, 2e-5), (1e-4, 2e-5)),
};

fn l_max_none_extends_the_kernel(device: &Device, tol: f64) {
    let t = fixture();
    let x: Tensor<3> = t.tensor("x", device);
    let layer = S4::load_reference(&dir().join("s4_lmax_none.pth"), device).expect("loads");
    assert_eq!(layer.kernel.l_kernel, 16);
    assert_eq!(layer.l_max, None);
    for len in [16, 12, 40] {
        assert_close(
            &t,
            &format!("lmax_none.y{len}"),
            layer.forward(x.clone().narrow(2, 0, len)),
            tol,
        );
    }
    // Told the model's l_max (16), the same file caps its kernel at 16 taps instead: beyond
    // position 16 the outputs differ from the extended kernel's.
    let capped = S4::load_reference_with(
        &dir().join("s4_lmax_none.pth"),
        ReferenceOptions {
            l_max: Some(16),
            ..Default::default()
        },
        device,
    )
    .expect("loads");
    let (want, _) = t.values("lmax_none.y40");
    let off = gap(
        "lmax_none.y40 with a capped kernel",
        &to_vec(capped.forward(x)),
        &want,
    )
    .max_abs;
    assert!(
        off > 1e-2,
        "a capped kernel gave the extended outputs ({off:e})"
    );
}

fn every_kernel_at_1024(device: &Device, b: &Bounds) {
    let t = fixture();
    let x: Tensor<3> = t.tensor("x1024", device);
    let path = |name: &str| dir().join(format!("{name}.pth"));
    // S4's DPLR kernel against the reference module run in float64 (exact roots of unity); the
    // reference's own float32 run evaluates at powers of a complex64 root, 6e-6 off in the
    // kernel (2.3e-5 of its scale) and 3e-5 in the outputs at this length, so against it the
    // bounds are wider.
    let s4 = S4::load_reference(&path("s4_1024"), device).expect("loads");
    let k = s4.kernel.kernel(1024);
    assert_close(&t, "s4_1024.k1024_f64", k.clone(), b.s4_f64.kernel);
    assert_close(&t, "s4_1024.k1024", k, b.s4_f32.kernel);
    let y = s4.forward(x.clone());
    assert_close(&t, "s4_1024.y1024_f64", y.clone(), b.s4_f64.output);
    assert_close(&t, "s4_1024.y1024", y, b.s4_f32.output);
    for (name, tol) in [("s4d_block_1024", b.s4d_block), ("s4d_1024", b.s4d)] {
        let layer = S4D::load_reference(&path(name), device).expect("loads");
        let (k, y) = (layer.kernel.kernel(1024), layer.forward(x.clone()));
        diagonal_close(&t, name, k, y, tol);
    }
    for (name, tol) in [
        ("dss_exp_1024", b.dss_exp),
        ("dss_softmax_1024", b.dss_softmax),
    ] {
        let layer = DSS::load_reference(&path(name), device).expect("loads");
        let (k, y) = (layer.kernel.kernel(1024), layer.forward(x.clone()));
        diagonal_close(&t, name, k, y, tol);
    }
}

/// A diagonal layer's kernel `k` and output `y` against the reference's float64 and float32
/// runs.
fn diagonal_close(t: &Fixture, name: &str, k: Tensor<2>, y: Tensor<3>, tol: Diagonal) {
    assert_close(t, &format!("{name}.k1024_f64"), k.clone(), tol.f64.kernel);
    assert_close(t, &format!("{name}.y1024_f64"), y.clone(), tol.f64.output);
    assert_close(t, &format!("{name}.k1024"), k, tol.f32.kernel);
    assert_close(t, &format!("{name}.y1024"), y, tol.f32.output);
}

#[test]
fn s4_with_l_max_none_extends_its_kernel_as_the_reference_on_flex() {
    l_max_none_extends_the_kernel(&Device::flex(), FLEX.lmax_none);
}

#[test]
fn s4_family_kernels_at_1024_match_the_reference_on_flex() {
    every_kernel_at_1024(&Device::flex(), &FLEX);
}

#[test]
fn s4_family_on_long_inputs_matches_the_reference_on_wgpu() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    l_max_none_extends_the_kernel(&device, WGPU.lmax_none);
    every_kernel_at_1024(&device, &WGPU);
}
