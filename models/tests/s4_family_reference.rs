//! The S4, S4D (diagonal `S4Block`) and DSS loaders against state dicts saved by the reference
//! modules themselves, and those modules' outputs (`fixtures/s4_family`, written by
//! `fixtures/tools/make_s4_family.py` running state-spaces/s4 `models/s4/s4.py` and
//! ag1988/dss `standalone/dss.py`).

use burn::tensor::{Device, Tensor};
use ssm_backends::testing::{Fixture, assert_rel, fixtures_dir, gap};
use ssm_backends::to_vec;
use ssm_models::ssm::dss::DSS;
use ssm_models::ssm::reference::ReferenceLayer;
use ssm_models::ssm::s4::S4;
use ssm_models::ssm::s4d::S4D;
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixtures_dir().join("s4_family")
}

fn fixture() -> Fixture {
    Fixture::open(dir().join("tensors.safetensors"))
}

fn input(t: &Fixture, len: usize, device: &Device) -> Tensor<3> {
    t.tensor::<3>("x", device).narrow(2, 0, len)
}

/// Asserts the shape of `got` and its values within `tol` relative to the fixture tensor's scale.
fn close(name: &str, got: Tensor<3>, t: &Fixture, tol: f64) {
    let (want, shape) = t.values(name);
    assert_eq!(got.dims().to_vec(), shape, "{name}");
    assert_rel(name, &to_vec(got), &want, tol);
}

/// Runs a recurrent `step` over every position of `x` (B, H, L): the outputs (B, H, L).
fn run_steps<S>(
    x: Tensor<3>,
    mut state: S,
    step: impl Fn(Tensor<2>, S) -> (Tensor<2>, S),
) -> Tensor<3> {
    let len = x.dims()[2];
    let mut ys = Vec::with_capacity(len);
    for i in 0..len {
        let (y, s) = step(x.clone().narrow(2, i, 1).squeeze_dim::<2>(2), state);
        state = s;
        ys.push(y.unsqueeze_dim::<3>(2));
    }
    Tensor::cat(ys, 2)
}

#[test]
fn s4_dplr_block_reproduces_the_reference() {
    use ssm_models::ssm::reference::ReferenceOptions;
    let device = Device::flex();
    let t = fixture();
    // The block was built with l_max 16.
    let options = ReferenceOptions {
        l_max: Some(16),
        ..Default::default()
    };
    let layer =
        S4::load_reference_with(&dir().join("s4_block.pth"), options, &device).expect("loads");
    assert_eq!(layer.kernel.l_kernel, 16);
    // The kernel at the 16 roots of unity.
    let (want, _) = t.values("s4.k16");
    // Measured 2.0e-7 (Flex).
    assert_rel("s4.k16", &to_vec(layer.kernel.kernel(16)), &want, 1e-6);
    // Length 16; 12 (the kernel still read at 16 roots, then truncated); 24 (longer than
    // l_max: the kernel stops at 16, as the reference's FFTConv with l_max 16). Measured
    // 1.1e-7, 1.4e-7, 1.1e-7 (Flex).
    for len in [16, 12, 24] {
        close(
            &format!("s4.y{len}"),
            layer.forward(input(&t, len, &device)),
            &t,
            1e-6,
        );
    }
    // The recurrent step against the reference's own step outputs.
    let rec = layer.kernel.recurrence(16);
    let y = run_steps(input(&t, 16, &device), rec.zero_state(2), |u, s| {
        layer.step(u, &rec, s)
    });
    // Measured 1.1e-7 (Flex).
    close("s4.y16_step", y, &t, 1e-6);
}

#[test]
fn s4d_diagonal_block_reproduces_the_reference() {
    let device = Device::flex();
    let t = fixture();
    let layer = S4D::load_reference(&dir().join("s4d_block.pth"), &device).expect("loads");
    // Measured 1.4e-7 (Flex).
    close("s4d.y16", layer.forward(input(&t, 16, &device)), &t, 1e-6);
    // Its recurrent step equals its convolution.
    let rec = layer.kernel.recurrence();
    let y = run_steps(input(&t, 16, &device), rec.zero_state(2), |u, s| {
        layer.step(u, &rec, s)
    });
    // Measured 7.0e-8 (Flex).
    close("s4d.y16", y, &t, 1e-6);
}

#[test]
fn bidirectional_softplus_blocks_reproduce_the_reference() {
    use ssm_models::ssm::reference::{DtTransform, ReferenceOptions};
    let device = Device::flex();
    let t = fixture();
    // The S4 block was built with l_max 16, the S4D block with l_max None.
    let softplus = ReferenceOptions {
        dt_transform: DtTransform::Softplus,
        bilinear: false,
        l_max: Some(16),
    };
    let s4 =
        S4::load_reference_with(&dir().join("s4_bidir.pth"), softplus, &device).expect("loads");
    assert!(s4.kernel.C_bwd.is_some());
    let unbounded = ReferenceOptions {
        l_max: None,
        ..softplus
    };
    let s4d =
        S4D::load_reference_with(&dir().join("s4d_bidir.pth"), unbounded, &device).expect("loads");
    assert!(s4d.kernel.C_bwd.is_some());
    // At 24 the S4 kernels stop at 16 taps (l_max), the S4D ones run the whole length.
    // Measured (Flex): S4 2.7e-7, 2.8e-7; S4D 1.8e-7, 1.4e-7.
    for len in [16, 24] {
        close(
            &format!("s4_bidir.y{len}"),
            s4.forward(input(&t, len, &device)),
            &t,
            2e-6,
        );
        close(
            &format!("s4d_bidir.y{len}"),
            s4d.forward(input(&t, len, &device)),
            &t,
            1e-6,
        );
    }
    // Read with the wrong dt transform, the same weights give other outputs: the option matters.
    let exp = S4::load_reference(&dir().join("s4_bidir.pth"), &device).unwrap();
    let (want, _) = t.values("s4_bidir.y16");
    let off = gap(
        "s4_bidir.y16 read with exp",
        &to_vec(exp.forward(input(&t, 16, &device))),
        &want,
    )
    .max_abs;
    assert!(
        off > 1e-3,
        "exp and softplus gave the same outputs ({off:e})"
    );
}

#[test]
fn a_block_reads_out_of_a_whole_lightning_checkpoint() {
    use ssm_models::io::TensorMap;
    use ssm_models::ssm::reference::{DtTransform, ReferenceOptions};
    let device = Device::flex();
    let t = fixture();
    let mut w = TensorMap::read(&dir().join("lightning.ckpt")).expect("reads");
    let block = w.split_prefix("state_dict.model.layers.0.layer.");
    let options = ReferenceOptions {
        dt_transform: DtTransform::Softplus,
        bilinear: false,
        l_max: Some(16),
    };
    let s4 = S4::from_reference_map(block, options, &device).expect("loads");
    // Measured 2.7e-7 (Flex).
    close("s4_bidir.y16", s4.forward(input(&t, 16, &device)), &t, 2e-6);
    // The rest of the file stays in the map (model norms, encoder, decoder, optimizer state).
    assert!(w.contains("state_dict.encoder.0.weight"));
    assert!(!w.keys().any(|k| k.contains("layer.kernel")));
}

#[test]
fn v3_state_dicts_load_too() {
    let device = Device::flex();
    let t = fixture();
    let s4 = S4::load_reference(&dir().join("s4v3.pth"), &device).expect("loads");
    assert_eq!(s4.kernel.l_kernel, 16);
    // Measured 3.0e-7, 3.1e-7 (Flex).
    for len in [16, 12] {
        close(
            &format!("s4v3.y{len}"),
            s4.forward(input(&t, len, &device)),
            &t,
            2e-6,
        );
    }
    let s4d = S4D::load_reference(&dir().join("s4dv3.pth"), &device).expect("loads");
    // Measured 9.7e-8 (Flex).
    close("s4dv3.y16", s4d.forward(input(&t, 16, &device)), &t, 1e-6);
}

#[test]
fn dss_exp_and_softmax_reproduce_the_reference() {
    let device = Device::flex();
    let t = fixture();
    // Measured (Flex): kernels 7.0e-8 (exp), 1.1e-7 (softmax); outputs 1.5e-7, 1.3e-7.
    for name in ["dss_exp", "dss_softmax"] {
        let layer =
            DSS::load_reference(&dir().join(format!("{name}.pth")), &device).expect("loads");
        assert_eq!(layer.gated_output(), name == "dss_softmax");
        assert_eq!(layer.kernel.is_softmax(), name == "dss_softmax");
        let (want, _) = t.values(&format!("{name}.k16"));
        assert_rel(
            &format!("{name}.k16"),
            &to_vec(layer.kernel.kernel(16)),
            &want,
            1e-6,
        );
        close(
            &format!("{name}.y16"),
            layer.forward(input(&t, 16, &device)),
            &t,
            1e-6,
        );
    }
}

#[test]
fn the_wrong_loader_or_a_damaged_file_is_a_clear_error() {
    let device = Device::flex();
    let err = S4D::load_reference(&dir().join("s4_block.pth"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer.kernel.P") && err.contains("S4::load_reference"),
        "{err}"
    );
    let err = S4::load_reference(&dir().join("s4d_block.pth"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer.kernel.P") && err.contains("missing"),
        "{err}"
    );
    let err = DSS::load_reference(&dir().join("s4_block.pth"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("'D'") && err.contains("missing"), "{err}");
    // A truncated file.
    let bytes = std::fs::read(dir().join("s4_block.pth")).unwrap();
    let tmp = tempfile::Builder::new().suffix(".pth").tempfile().unwrap();
    std::fs::write(tmp.path(), &bytes[..bytes.len() / 2]).unwrap();
    let err = S4::load_reference(tmp.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read weights"), "{err}");
}

#[test]
fn wgpu_reproduces_the_reference_s4_and_dss() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    let t = fixture();
    let s4 = S4::load_reference(&dir().join("s4_block.pth"), &device).expect("loads");
    // Measured 6.6e-8, 1.4e-7 (wgpu).
    for len in [16, 12] {
        close(
            &format!("s4.y{len}"),
            s4.forward(input(&t, len, &device)),
            &t,
            2e-6,
        );
    }
    let dss = DSS::load_reference(&dir().join("dss_softmax.pth"), &device).expect("loads");
    // Measured 1.1e-6 (wgpu; 1.3e-7 on Flex).
    close(
        "dss_softmax.y16",
        dss.forward(input(&t, 16, &device)),
        &t,
        2e-5,
    );
}

/// S5 layers initialised and run by the JAX reference (lindermanlab/S5), saved as Flax msgpack
/// (`fixtures/s5_reference`, `fixtures/tools/make_s5_reference.py`).
#[test]
fn s5_layers_from_flax_reproduce_the_reference() {
    use ssm_models::ssm::s5::S5;
    let device = Device::flex();
    let d = fixtures_dir().join("s5_reference");
    let t = Fixture::open(d.join("tensors.safetensors"));
    let x: Tensor<3> = t.tensor("x", &device);
    for (name, bilinear) in [("zoh", false), ("bidir", true)] {
        let layer = S5::load_reference(
            &d.join(format!("{name}.msgpack")),
            "params",
            bilinear,
            &device,
        )
        .expect("loads");
        assert_eq!(layer.bidirectional, name == "bidir");
        // Measured (Flex): SSM outputs 6.2e-8 (zoh), 6.9e-8 (bidir); GLU outputs 3.2e-7, 8.7e-8.
        let glu = if name == "zoh" { 2e-6 } else { 1e-6 };
        close(&format!("{name}.ssm"), layer.ssm(x.clone()), &t, 1e-6);
        close(&format!("{name}.glu"), layer.forward(x.clone()), &t, glu);
    }
    // The wrong prefix, a missing key, a damaged file: errors naming what is wrong.
    let zoh = d.join("zoh.msgpack");
    let err = S5::load_reference(&zoh, "params.encoder", false, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("params.encoder.seq.Lambda_re") && err.contains("missing"),
        "{err}"
    );
    let bytes = std::fs::read(&zoh).unwrap();
    let tmp = tempfile::Builder::new()
        .suffix(".msgpack")
        .tempfile()
        .unwrap();
    std::fs::write(tmp.path(), &bytes[..bytes.len() - 9]).unwrap();
    let err = S5::load_reference(tmp.path(), "params", false, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not Flax msgpack") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(tmp.path(), b"not msgpack at all").unwrap();
    let err = S5::load_reference(tmp.path(), "params", false, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not Flax msgpack"), "{err}");
}

#[test]
fn example_py_classifier_reproduces_the_reference() {
    use ssm_models::classify::SequenceClassifier;
    let device = Device::flex();
    let t = fixture();
    let model = SequenceClassifier::load_reference(
        &dir().join("classifier.pth"),
        false,
        Default::default(),
        &device,
    )
    .expect("loads");
    assert_eq!(model.layers.len(), 2);
    let logits = model.forward(t.tensor::<3>("clf.x", &device));
    let (want, shape) = t.values("clf.logits");
    assert_eq!(logits.dims().to_vec(), shape);
    // Measured 1.2e-7 (Flex).
    assert_rel("clf.logits", &to_vec(logits), &want, 1e-6);
    // Pre-norm is a different network: the same weights give other logits.
    let pre = SequenceClassifier::load_reference(
        &dir().join("classifier.pth"),
        true,
        Default::default(),
        &device,
    )
    .unwrap();
    let other = gap(
        "clf.logits with pre-norm",
        &to_vec(pre.forward(t.tensor::<3>("clf.x", &device))),
        &want,
    )
    .max_abs;
    assert!(
        other > 1e-3,
        "pre-norm gave the post-norm logits ({other:e})"
    );
    // A single layer's file is not a classifier.
    let err = SequenceClassifier::load_reference(
        &dir().join("s4d_block.pth"),
        false,
        Default::default(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("encoder.weight") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn s5_classifier_from_flax_reproduces_the_reference() {
    use burn::tensor::activation::log_softmax;
    use ssm_models::classify::SequenceClassifier;
    let device = Device::flex();
    let d = fixtures_dir().join("s5_reference");
    let t = Fixture::open(d.join("tensors.safetensors"));
    let model =
        SequenceClassifier::load_s5_reference(&d.join("classifier.msgpack"), false, false, &device)
            .expect("loads");
    assert_eq!(model.layers.len(), 2);
    let logits = model.forward(t.tensor::<3>("clf.x", &device));
    let (want, _) = t.values("clf.log_probs");
    // Measured 6.1e-8 (Flex).
    assert_rel(
        "clf.log_probs",
        &to_vec(log_softmax(logits, 1)),
        &want,
        1e-6,
    );
    // A single layer's tree is not a classifier.
    let err = SequenceClassifier::load_s5_reference(&d.join("zoh.msgpack"), false, false, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.encoder.kernel") && err.contains("missing"),
        "{err}"
    );
}
