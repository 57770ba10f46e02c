//! VMamba: parameter counts of the released configurations, the checkpoint layout of
//! MzeroMiko/VMamba (a `.pth` state dict under "model"), the forward of the v05_noz and the
//! vanilla v0 architectures against the outputs of the reference code itself
//! (fixtures/vmamba_tiny, see fixtures/README.md), the cross-scan routes, and one scan call per
//! SS2D.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{Fixture, TestRng, assert_rel, fixtures_dir, seeded};
use ssm_backends::to_vec;
use ssm_models::io::weights::TensorMap;
use ssm_models::ssm::ss2d::{Ss2dConfig, cross_merge, cross_scan};
use ssm_models::vision::vmamba::{DownsampleVersion, PatchEmbedVersion};
use ssm_models::vision::{VMamba, VMambaConfig};
use std::sync::Mutex;

/// The CPU kernel's call counter is process-wide: every test that runs a scan holds this lock,
/// so the counting test sees only its own calls.
static SERIAL: Mutex<()> = Mutex::new(());

/// The parameters of MzeroMiko/VMamba's `VSSM` (forward type v05_noz, patch embedding v2,
/// downsampling v3, MLP ratio 4, LayerNorm2d, 1000 classes), counted from its module shapes.
fn reference_count(depths: &[usize], dim: usize) -> usize {
    let (n, ratio) = (1, 1);
    let dims: Vec<usize> = (0..4).map(|i| dim << i).collect();
    let half = dim / 2;
    let mut total = (3 * 9 * half + half) + 2 * half + (9 * half * dim + dim) + 2 * dim;
    for (i, (&depth, &d)) in depths.iter().zip(&dims).enumerate() {
        let (di, r) = (ratio * d, d.div_ceil(16));
        let ss2d = d * di
            + di * 9
            + 4 * (r + 2 * n) * di
            + di * d
            + 2 * di
            + 4 * di * n
            + 4 * di
            + 4 * di * r
            + 4 * di;
        let mlp = (d * 4 * d + 4 * d) + (4 * d * d + d);
        total += depth * (2 * d + ss2d + 2 * d + mlp);
        if i < 3 {
            let o = dims[i + 1];
            total += 9 * d * o + o + 2 * o;
        }
    }
    total + 2 * dims[3] + dims[3] * 1000 + 1000
}

#[test]
fn parameter_counts_match_the_released_models() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex();
    for (config, millions, exact) in [
        (VMambaConfig::vmamba_tiny(), "30.25", 30_249_064),
        (VMambaConfig::vmamba_small(), "49.0", 49_012_840),
        (VMambaConfig::vmamba_base(), "86.6", 86_614_504),
    ] {
        assert_eq!(reference_count(&config.depths, config.dim), exact);
        let n = {
            let _seed = seeded(&device, 0);
            config.init(&device).num_params()
        };
        assert_eq!(n, exact, "{config:?}");
        let digits = millions.split('.').nth(1).map_or(0, str::len);
        assert_eq!(format!("{:.*}", digits, n as f64 / 1e6), millions);
    }
}

fn tiny(name: &str) -> VMambaConfig {
    let c = VMambaConfig::new(vec![1, 1])
        .with_dim(8)
        .with_num_classes(5);
    if name == "v05" {
        c.with_d_state(2).with_mlp_ratio(2.0)
    } else {
        c.vanilla().with_d_state(3)
    }
}

fn load(name: &str, device: &Device) -> VMamba {
    let path = fixtures_dir().join(format!("vmamba_tiny/{name}.pth"));
    let mut w = TensorMap::read(&path).expect("fixture checkpoint");
    // The architecture read from the checkpoint is the one it was made with.
    let found = VMamba::config_of(&mut w).expect("architecture");
    assert_eq!(format!("{found:?}"), format!("{:?}", tiny(name)));
    // The loader initialises the model (drawing from the device's generator), then loads.
    let model = {
        let _seed = seeded(device, 0);
        VMamba::from_weights(&tiny(name), &mut w, device).expect("loads")
    };
    w.finish().expect("every key used");
    model
}

/// Relative bounds of one model's logits and pooled features.
#[derive(Clone, Copy)]
struct ModelBounds {
    logits: f64,
    features: f64,
}

/// Relative bounds per model on one device.
struct Bounds {
    v05: ModelBounds,
    v0: ModelBounds,
}

/// Measured: v05 logits 7.0e-7, features 9.1e-7; v0 logits 1.0e-6, features 7.8e-7. The v05
/// logits keep the old absolute 1e-5 (1e-5 / 2.99 rounded down): the rule's 5e-6 would be
/// looser.
const FLEX: Bounds = Bounds {
    v05: ModelBounds {
        logits: 2e-6,
        features: 5e-6,
    },
    v0: ModelBounds {
        logits: 5e-6,
        features: 5e-6,
    },
};

/// The old absolute 1e-5 at the fixture's scales (v05 2.99, 1.18; v0 1.07, 1.22), rounded
/// down; measured since CI runs the ndarray tests (2026-12-07): v05 logits 9.4e-7, features
/// 7.1e-7; v0 logits 8.4e-7, features 3.4e-7.
#[cfg(feature = "ndarray")]
const NDARRAY: Bounds = Bounds {
    v05: ModelBounds {
        logits: 2e-6,
        features: 5e-6,
    },
    v0: ModelBounds {
        logits: 5e-6,
        features: 5e-6,
    },
};

/// Measured: v05 logits 5.3e-7, features 7.1e-7; v0 logits 7.2e-7, features 3.2e-7.
#[cfg(feature = "wgpu")]
const WGPU: Bounds = Bounds {
    v05: ModelBounds {
        logits: 1e-5,
        features: 1e-5,
    },
    v0: ModelBounds {
        logits: 1e-5,
        features: 5e-6,
    },
};

fn check_fixture(device: &Device, b: &Bounds) {
    let t = Fixture::open(fixtures_dir().join("vmamba_tiny/tensors.safetensors"));
    let images: Tensor<4> = t.tensor("images", device);
    for (name, tol) in [("v05", b.v05), ("v0", b.v0)] {
        let model = load(name, device);
        let (want, _) = t.values(&format!("{name}.logits"));
        assert_rel(
            &format!("{device:?} {name} logits"),
            &to_vec(model.forward(images.clone())),
            &want,
            tol.logits,
        );
        let (want, _) = t.values(&format!("{name}.features"));
        assert_rel(
            &format!("{device:?} {name} features"),
            &to_vec(model.forward_features(images.clone())),
            &want,
            tol.features,
        );
    }
}

#[test]
fn reproduces_the_reference_forward() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    check_fixture(&Device::flex(), &FLEX);
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_reproduces_the_reference_forward() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    check_fixture(&Device::ndarray(), &NDARRAY);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_reproduces_the_reference_forward() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(device) = ssm_backends::testing::wgpu_test_device() {
        check_fixture(&device, &WGPU);
    }
}

#[test]
fn the_four_routes_are_rows_columns_and_their_reverses() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex();
    let (h, w) = (3, 4);
    let values: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
    let x = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([1, 1, h, w]);
    let routes = to_vec(cross_scan(x.clone()));
    let rows: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let cols: Vec<f32> = (0..12).map(|q| ((q % h) * w + q / h) as f32).collect();
    let rev = |v: &[f32]| v.iter().rev().copied().collect::<Vec<_>>();
    assert_eq!(
        routes,
        [rows.clone(), cols.clone(), rev(&rows), rev(&cols)].concat()
    );
    // Merging the routes of a map gives the map four times.
    let mut rng = TestRng::new(0);
    let x = rng.tensor::<4>([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
    let back = cross_merge(cross_scan(x.clone()), h, w);
    // Measured 0 (Flex). The rule's 1e-6 would be 1.01e-5 at this scale (10.1), looser than the
    // old absolute 1e-6: that one is kept, as 1e-6 / 10.1 rounded down.
    assert_rel(
        "cross_merge(cross_scan(x)) vs 4 x",
        &to_vec(back),
        &to_vec(x * 4.0),
        5e-8,
    );
}

#[test]
fn one_selective_scan_call_covers_the_four_routes() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex();
    let op = {
        let _seed = seeded(&device, 0);
        Ss2dConfig::new(8).with_d_state(4).init(&device)
    };
    let mut rng = TestRng::new(0);
    let x = rng.tensor::<4>([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), &device);
    let before = ssm_backends::testing::cpu_kernel_calls().scan_forward;
    let y = op.forward(x);
    assert_eq!(y.dims(), [2, 3, 5, 8]);
    assert_eq!(
        ssm_backends::testing::cpu_kernel_calls().scan_forward - before,
        1
    );
}

#[test]
fn checkpoint_errors_name_the_key_and_the_shapes() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let device = Device::flex();
    // Every load below initialises a model first (drawing from the device's generator).
    let _seed = seeded(&device, 0);
    let path = fixtures_dir().join("vmamba_tiny/v05.pth");
    let mut w = TensorMap::read(&path).unwrap();
    w.discard("layers.1.blocks.0.op.A_logs", &[64, 2]).unwrap();
    let e = VMamba::from_weights(&tiny("v05"), &mut w, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layers.1.blocks.0.op.A_logs") && e.contains("[64, 2]"),
        "{e}"
    );
    // The v05 checkpoint under the vanilla architecture: a shape mismatch names both shapes.
    let mut w = TensorMap::read(&path).unwrap();
    let e = VMamba::from_weights(&tiny("v0"), &mut w, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("patch_embed.0.weight") && e.contains("expected"),
        "{e}"
    );
    // Older key names load as the reference renames them.
    let mut w = TensorMap::read(&fixtures_dir().join("vmamba_tiny/v0.pth")).unwrap();
    for (from, to) in [
        ("patch_embed.0.weight", "patch_embed.proj.weight"),
        ("classifier.head.bias", "head.bias"),
        (
            "layers.0.blocks.0.norm.weight",
            "layers.0.blocks.0.ln_1.weight",
        ),
    ] {
        w.rename(from, to);
    }
    VMamba::from_weights(&tiny("v0"), &mut w, &device).expect("legacy names load");
    w.finish().unwrap();
    // Impossible settings are refused.
    assert!(VMambaConfig::new(vec![]).validate().is_err());
    assert!(
        VMambaConfig::vmamba_tiny()
            .with_ssm_conv(2)
            .validate()
            .is_err()
    );
    let _ = (PatchEmbedVersion::V1, DownsampleVersion::V1);
}
