//! The fixed-step, seeded runs: `zoo demo` and `zoo train selective-copying`.

mod common;

use common::*;

#[test]
fn selective_copying_runs_and_reports_accuracy() {
    let out = zoo(&[
        "train",
        "selective-copying",
        "--steps",
        "20",
        "--context-len",
        "12",
        "--n-copy",
        "2",
        "--d-model",
        "16",
        "--layers",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trained 20 steps"), "{text}");
    assert!(text.contains("held-out accuracy"), "{text}");
}

#[test]
fn demo_trains_a_language_model_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = zoo(&[
        "demo",
        "--steps",
        "2",
        "--new-bytes",
        "8",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("held-out loss"), "{text}");
    assert_eq!(text.matches("sampled bytes").count(), 3, "{text}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
}
