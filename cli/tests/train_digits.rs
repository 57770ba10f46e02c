//! `zoo train s4d-digits` and `zoo eval`: the saved model reloads to the count the run reported;
//! broken folders and settings are one-line errors.

mod common;

use common::*;

#[test]
fn train_saves_a_model_that_eval_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = zoo(&[
        "train",
        "s4d-digits",
        "--epochs",
        "2",
        "--d-model",
        "32",
        "--layers",
        "2",
        "--d-state",
        "16",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let reported = reported_test_count(&text);
    assert!(text.contains("epoch 2/2 valid: Accuracy"), "{text}");
    assert!(out_dir.join("model.bpk").is_file() && out_dir.join("config.json").is_file());
    // burn-train's own checkpoints.
    assert!(out_dir.join("checkpoint").is_dir(), "no checkpoint folder");
    let out = zoo(&["eval", "--model", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["total"], 359);
    // The reloaded model gives exactly the count the run reported from its own weights.
    assert_eval_reproduces(&v, reported, "s4d-digits");
    assert_clean_error(
        &zoo(&[
            "eval",
            "--model",
            out_dir.to_str().unwrap(),
            "--img-size",
            "8",
            "--device",
            "cpu",
        ]),
        "for image models",
    );

    // Bad input: a folder without a model, impossible settings.
    assert_clean_error(
        &zoo(&[
            "eval",
            "--model",
            dir.path().to_str().unwrap(),
            "--device",
            "cpu",
        ]),
        "config.json",
    );
    // A half-written model file (what a non-atomic write killed midway would leave).
    let bytes = std::fs::read(out_dir.join("model.bpk")).unwrap();
    std::fs::write(out_dir.join("model.bpk"), &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &zoo(&[
            "eval",
            "--model",
            out_dir.to_str().unwrap(),
            "--device",
            "cpu",
        ]),
        "model.bpk",
    );
    std::fs::write(out_dir.join("model.bpk"), b"not a burnpack").unwrap();
    assert_clean_error(
        &zoo(&[
            "eval",
            "--model",
            out_dir.to_str().unwrap(),
            "--device",
            "cpu",
        ]),
        "model.bpk",
    );
    assert_clean_error(
        &zoo(&[
            "train",
            "s4d-digits",
            "--epochs",
            "0",
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "at least 1",
    );
}
