//! The S4 family against its reference modules on long inputs (`fixtures/s4_family/long`,
//! written by `fixtures/tools/make_s4_long.py` running state-spaces/s4 and ag1988/dss):
//! an S4 checkpoint saved with `l_max=None` run beyond the length its `C~` is attuned to (the
//! reference doubles `C~` until the input fits), and every S4-family kernel at L = 1024, on
//! Flex and on wgpu.

use burn::tensor::{Device, Tensor};
use ssm_backends::testing::{Fixture, assert_abs, fixtures_dir, gap};
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
/// (max absolute error), printing the error (what `Fixture::assert_close` did).
fn assert_close<const D: usize>(t: &Fixture, name: &str, got: Tensor<D>, tol: f64) {
    let (want, shape) = t.values(name);
    assert_eq!(got.dims().to_vec(), shape, "{name}: shape");
    assert_abs(name, &to_vec(got), &want, tol);
}

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

fn every_kernel_at_1024(device: &Device, tol: f64) {
    let t = fixture();
    let x: Tensor<3> = t.tensor("x1024", device);
    let path = |name: &str| dir().join(format!("{name}.pth"));
    // S4's DPLR kernel against the reference module run in float64 (exact roots of unity); the
    // reference's own float32 run evaluates at powers of a complex64 root, 6e-6 off in the
    // kernel and 3e-5 in the outputs at this length, so against it the bound is 1e-4.
    let s4 = S4::load_reference(&path("s4_1024"), device).expect("loads");
    let k = s4.kernel.kernel(1024);
    assert_close(&t, "s4_1024.k1024_f64", k.clone(), tol);
    assert_close(&t, "s4_1024.k1024", k, 1e-4);
    let y = s4.forward(x.clone());
    assert_close(&t, "s4_1024.y1024_f64", y.clone(), tol);
    assert_close(&t, "s4_1024.y1024", y, 1e-4);
    for name in ["s4d_block_1024", "s4d_1024"] {
        let layer = S4D::load_reference(&path(name), device).expect("loads");
        assert_close(&t, &format!("{name}.k1024"), layer.kernel.kernel(1024), tol);
        assert_close(&t, &format!("{name}.y1024"), layer.forward(x.clone()), tol);
    }
    for name in ["dss_exp_1024", "dss_softmax_1024"] {
        let layer = DSS::load_reference(&path(name), device).expect("loads");
        assert_close(&t, &format!("{name}.k1024"), layer.kernel.kernel(1024), tol);
        assert_close(&t, &format!("{name}.y1024"), layer.forward(x.clone()), tol);
    }
}

#[test]
fn s4_with_l_max_none_extends_its_kernel_as_the_reference_on_flex() {
    l_max_none_extends_the_kernel(&Device::flex(), 1e-5);
}

#[test]
fn s4_family_kernels_at_1024_match_the_reference_on_flex() {
    every_kernel_at_1024(&Device::flex(), 1e-5);
}

#[test]
fn s4_family_on_long_inputs_matches_the_reference_on_wgpu() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    l_max_none_extends_the_kernel(&device, 1e-4);
    every_kernel_at_1024(&device, 1e-4);
}
