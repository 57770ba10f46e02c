//! The S4 family at another sampling rate, against state-spaces/s4 itself
//! (`fixtures/s4_family/rate`, made by `fixtures/tools/make_s4_rate.py`): a DPLR block and an
//! S4ND layer attuned at 9 steps (`l_max` 9), run at rate 2, where the reference derives its
//! lengths with Python's `round` (ties to even): `round(9 / 2) = 4` taps and roots, where
//! rounding ties away from zero gives 5 and an output 0.014 to 0.055 off. Rates 0.5 and 3
//! (no tie) pin the rest of the rate logic.

use burn::tensor::{Device, Tensor, s};
use ssm_backends::testing::{Fixture, assert_rel, fixtures_dir};
use ssm_backends::to_vec;
use ssm_models::ssm::reference::{ReferenceLayer, ReferenceOptions};
use ssm_models::ssm::s4::S4;
use ssm_models::ssm::s4nd::S4ND;
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixtures_dir().join("s4_family").join("rate")
}

fn options() -> ReferenceOptions {
    ReferenceOptions {
        l_max: Some(9),
        ..Default::default()
    }
}

/// The first `len` steps of the fixture's input (1, 4, 18).
fn x(t: &Fixture, len: usize, device: &Device) -> Tensor<3> {
    t.tensor::<3>("x", device).slice(s![.., .., 0..len])
}

// Bounds relative to each tensor's scale (Flex): kernels measured at most 1.2e-7, outputs 1.6e-7.
const KERNEL: f64 = 1e-6;
const OUTPUT: f64 = 1e-6;

#[test]
fn the_dplr_kernel_and_block_round_lengths_as_the_reference_does() {
    let device = Device::flex();
    let t = Fixture::open(dir().join("tensors.safetensors"));
    let layer = S4::load_reference_with(&dir().join("s4_l9.pth"), options(), &device).unwrap();
    assert_eq!(layer.kernel.l_kernel, 9);
    for (key, len, rate) in [
        ("k_rate2_L4", 4, 2.0),
        // The reference with L = None: L = round(9 / 2) = 4 taps.
        ("k_rate2", 4, 2.0),
        ("k_rate0.5_L18", 18, 0.5),
        ("k_rate3_L3", 3, 3.0),
    ] {
        let (k, _) = layer.kernel.kernels_at_rate(len, rate);
        let (want, shape) = t.values(key);
        assert_eq!(k.dims().to_vec(), shape, "{key}");
        assert_rel(key, &to_vec(k), &want, KERNEL);
    }
    for (key, len, rate) in [
        ("y9", 9, 1.0),
        ("y_rate2_L4", 4, 2.0),
        // min(6, round(9 / 2)) = 4 taps, zero beyond.
        ("y_rate2_L6", 6, 2.0),
        ("y_rate0.5_L18", 18, 0.5),
        ("y_rate3_L3", 3, 3.0),
    ] {
        let y = layer.forward_at_rate(x(&t, len, &device), rate);
        let (want, shape) = t.values(key);
        assert_eq!(y.dims().to_vec(), shape, "{key}");
        assert_rel(key, &to_vec(y), &want, OUTPUT);
    }
}

#[test]
fn s4nd_rounds_its_taps_as_the_reference_does() {
    let device = Device::flex();
    let t = Fixture::open(dir().join("tensors.safetensors"));
    let layer = S4ND::load_reference_with(&dir().join("s4nd_l9.pth"), options(), &device).unwrap();
    for (key, len, rate) in [
        ("s4nd.y9", 9, 1.0),
        ("s4nd.y_rate2_L4", 4, 2.0),
        ("s4nd.y_rate2_L6", 6, 2.0),
        ("s4nd.y_rate0.5_L18", 18, 0.5),
    ] {
        let y = layer.forward_at_rate(x(&t, len, &device), rate);
        let (want, shape) = t.values(key);
        assert_eq!(y.dims().to_vec(), shape, "{key}");
        assert_rel(key, &to_vec(y), &want, OUTPUT);
    }
}
