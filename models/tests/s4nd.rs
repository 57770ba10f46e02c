//! S4ND against the reference module itself (`fixtures/s4nd`, written by
//! `fixtures/tools/make_s4nd.py` running state-spaces/s4's `s4nd.py`): 1-D, 2-D and 3-D inputs,
//! DPLR and diagonal kernels, bidirectional and causal, inputs smaller and larger than the
//! length a kernel was attuned to, and the resolution change (`rate`), on Flex and wgpu.

use burn::tensor::{Device, Tensor};
use ssm_backends::testing::{Fixture, TestRng, assert_finite, assert_rel, fixtures_dir, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::reference::ReferenceLayer;
use ssm_models::ssm::s4nd::{AxisKernel, S4ND, S4NDConfig, S4NDKernelKind};
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixtures_dir().join("s4nd")
}

fn load(name: &str, device: &Device) -> S4ND {
    S4ND::load_reference(&dir().join(format!("{name}.pth")), device).expect("loads")
}

/// Asserts that `got` has the shape of the fixture tensor `name` and its values within `tol`
/// relative to the fixture tensor's scale, printing the error.
fn assert_close<const D: usize>(t: &Fixture, name: &str, got: Tensor<D>, tol: f64) {
    let (want, shape) = t.values(name);
    assert_eq!(got.dims().to_vec(), shape, "{name}: shape");
    assert_rel(name, &to_vec(got), &want, tol);
}

/// Relative bounds of the layers' outputs on one device.
struct Bounds {
    /// The 2-D bidirectional layer at 6x5, 3x4 and 12x10.
    two_d: f64,
    /// The same layer at rate 0.5.
    rate: f64,
    one_d: f64,
    three_d: f64,
    causal: f64,
}

/// Measured: 2-D 1.5e-7, 3.0e-7, 1.2e-7; rate 8.7e-8; 1-D 9.3e-8, 1.8e-7; 3-D 6.1e-8; causal
/// 6.0e-8.
const FLEX: Bounds = Bounds {
    two_d: 2e-6,
    rate: 1e-6,
    one_d: 1e-6,
    three_d: 1e-6,
    causal: 1e-6,
};

/// Measured: 2-D 2.0e-7, 3.0e-7, 1.2e-7; rate 1.7e-7; 1-D 1.9e-7, 3.0e-7; 3-D 1.2e-7; causal
/// 1.8e-7.
const WGPU: Bounds = Bounds {
    two_d: 5e-6,
    rate: 2e-6,
    one_d: 5e-6,
    three_d: 2e-6,
    causal: 2e-6,
};

fn reproduces_the_reference(device: &Device, b: &Bounds) {
    let t = Fixture::open(dir().join("tensors.safetensors"));
    let x2d: Tensor<4> = t.tensor("x2d", device);
    let s2 = load("s4nd_2d", device);
    assert_eq!(s2.dims(), 2);
    assert!(matches!(s2.kernel[0], AxisKernel::S4(_)));
    let crop = |h: usize, w: usize| x2d.clone().narrow(2, 0, h).narrow(3, 0, w);
    assert_close(&t, "2d.y6x5", s2.forward(crop(6, 5)), b.two_d);
    assert_close(&t, "2d.y3x4", s2.forward(crop(3, 4)), b.two_d);
    // Larger than the lengths its C~ is attuned to: the kernels extend.
    assert_close(&t, "2d.y12x10", s2.forward(x2d.clone()), b.two_d);
    // The resolution change: twice the size at rate 0.5.
    assert_close(
        &t,
        "2d.y12x10_rate05",
        s2.forward_at_rate(x2d.clone(), 0.5),
        b.rate,
    );

    let x1d: Tensor<3> = t.tensor("x1d", device);
    let s1 = load("s4nd_1d", device);
    assert_close(
        &t,
        "1d.y10",
        s1.forward(x1d.clone().narrow(2, 0, 10)),
        b.one_d,
    );
    assert_close(&t, "1d.y16", s1.forward(x1d), b.one_d);

    let s3 = load("s4nd_3d", device);
    assert!(matches!(s3.kernel[2], AxisKernel::S4D(_)));
    assert_close(
        &t,
        "3d.y",
        s3.forward(t.tensor::<5>("x3d", device)),
        b.three_d,
    );

    let causal = load("s4nd_2d_causal", device);
    assert_close(&t, "2d_causal.y", causal.forward(crop(8, 8)), b.causal);
}

#[test]
fn s4nd_reproduces_the_reference_on_flex() {
    reproduces_the_reference(&Device::flex(), &FLEX);
}

#[test]
fn s4nd_reproduces_the_reference_on_wgpu() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    reproduces_the_reference(&device, &WGPU);
}

#[test]
fn a_causal_s4nd_does_not_read_ahead_on_any_axis() {
    // With one-sided kernels, output (i, j) depends on inputs (i', j') with i' <= i, j' <= j
    // only: changing the input at (3, 2) leaves every output above or left of it unchanged.
    let device = Device::flex();
    let mut rng = TestRng::new(1);
    for kind in [S4NDKernelKind::S4, S4NDKernelKind::S4D] {
        let layer = {
            let _seed = seeded(&device, 1);
            S4NDConfig::new(3)
                .with_d_state(4)
                .with_kernel(kind)
                .with_bidirectional(false)
                .init(&device)
        };
        let x = rng.tensor::<4>(
            [1, 3, 6, 5],
            burn::tensor::Distribution::Normal(0., 1.),
            &device,
        );
        let bump = Tensor::<4>::zeros([1, 3, 6, 5], &device).slice_assign(
            [0..1, 0..3, 3..4, 2..3],
            Tensor::ones([1, 3, 1, 1], &device),
        );
        let a = to_vec(layer.forward(x.clone()));
        let b = to_vec(layer.forward(x + bump));
        assert_finite(&format!("{kind:?}: y"), &a);
        assert_finite(&format!("{kind:?}: y bumped"), &b);
        for i in 0..6 {
            for j in 0..5 {
                let changed = (0..3).any(|c| {
                    let k = (c * 6 + i) * 5 + j;
                    (a[k] - b[k]).abs() > 1e-6
                });
                assert_eq!(changed, i >= 3 && j >= 2, "{kind:?} output ({i}, {j})");
            }
        }
    }
}

#[test]
fn wrong_inputs_and_files_are_clear_errors() {
    let device = Device::flex();
    // A block of another family is not an S4ND layer.
    let err = S4ND::load_reference(
        &fixtures_dir().join("s4_family").join("s4_block.pth"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'D'") && err.contains("missing"), "{err}");
    // A rank that does not match the layer's axes.
    let layer = load("s4nd_2d", &device);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        layer.forward(Tensor::<3>::zeros([1, 4, 8], &device))
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("over 2 axes") && msg.contains("rank 3"),
        "{msg}"
    );
}
