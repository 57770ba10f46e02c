//! `zoo logits` against the fixtures' reference logits, in f32 and bf16, and with q8 weights.

mod common;

use common::*;
use ssm_backends::testing::assert_rel;

#[test]
fn logits_match_the_reference() {
    for name in FIXTURES {
        logits_match(name, "f32");
        logits_match(name, "bf16");
        logits_match(name, "q8");
    }
}

/// `zoo logits --dtype`: f32 within 5e-6 of the largest reference logit; bf16 within eight of
/// its unit roundoffs (2^-8) of it (models/tests/half_precision.rs has the reasoning).
fn logits_match(name: &str, dtype: &str) {
    let f = fixture_of(name);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("logits.safetensors");
    let model = model_dir_of(name);
    let ids = prompt_rows(&f);
    let mut args = vec![
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        &ids,
        "--out",
        out_path.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend(if dtype == "q8" {
        ["--quantize", "q8"]
    } else {
        ["--dtype", dtype]
    });
    let out = zoo(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = Fixture::open(&out_path);
    let (values, shape) = got.values("logits");
    let (want, wshape) = f.values("logits");
    assert_eq!(shape, wshape);
    let what = format!("{name} {dtype} logits");
    if dtype == "q8" {
        // int8 weights, blocks of 32 (models/tests/quantize.rs measures 2.3-3.2% against the
        // f32 model's logits on these fixtures)
        assert_rel(&what, &values, &want, 6e-2);
    } else if dtype == "bf16" {
        // measured 1.4e-2: the 4x rule would give 1e-1, so the 8 u bound stays
        assert_rel(&what, &values, &want, 8.0 * 2f64.powi(-8));
    } else {
        // measured 6.7e-7 (CPU)
        assert_rel(&what, &values, &want, 5e-6);
    }
}
