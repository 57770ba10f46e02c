//! `zoo train vim-digits` / `vmamba-digits` / `s4nd-digits` and `zoo eval`, at the training side
//! and (S4ND) at others.

mod common;

use common::*;

#[test]
fn vim_and_vmamba_digits_train_and_eval_reloads_them() {
    for task in ["vmamba-digits", "vim-digits"] {
        image_task(task);
    }
}

fn image_task(task: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = zoo(&[
        "train",
        task,
        "--epochs",
        "2",
        "--embed-dim",
        "32",
        "--depth",
        "2",
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
    assert!(out_dir.join("zoo.json").is_file());
    let out = zoo(&["eval", "--model", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["total"], 359);
    assert_eval_reproduces(&v, reported, task);
    // A patch grid is tied to its training side.
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
        "cannot be evaluated at 8",
    );
    // Impossible settings and a corrupt kind file are clean errors.
    assert_clean_error(
        &zoo(&[
            "train",
            task,
            "--patch-size",
            "0",
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "patch_size",
    );
    std::fs::write(out_dir.join("zoo.json"), "{\"kind\": \"gpt\"}").unwrap();
    assert_clean_error(
        &zoo(&[
            "eval",
            "--model",
            out_dir.to_str().unwrap(),
            "--device",
            "cpu",
        ]),
        "unknown model kind",
    );
}

#[test]
fn s4nd_digits_trains_and_evaluates_at_other_resolutions() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let run = out_dir.to_str().unwrap();
    let out = zoo(&[
        "train",
        "s4nd-digits",
        "--epochs",
        "2",
        "--embed-dim",
        "16",
        "--depth",
        "1",
        "--d-state",
        "8",
        "--out",
        run,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let reported = reported_test_count(&text);
    assert!(text.contains("epoch 2/2 valid: Accuracy"), "{text}");
    // At the training side (16) the run's own count; without retraining, at half and twice the
    // side, above chance (10 classes).
    for side in [None, Some("8"), Some("32")] {
        let mut args = vec!["eval", "--model", run];
        if let Some(s) = side {
            args.extend(["--img-size", s]);
        }
        let out = zoo(&args);
        assert!(
            out.status.success(),
            "{side:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["total"], 359);
        match side {
            None => assert_eval_reproduces(&v, reported, "s4nd-digits"),
            Some(s) => {
                let acc = v["test_accuracy"].as_f64().unwrap();
                assert!(acc > 0.2, "side {s}: test accuracy {acc}");
            }
        }
    }
    assert_clean_error(
        &zoo(&["eval", "--model", run, "--img-size", "0", "--device", "cpu"]),
        "at least 1",
    );
    assert_clean_error(
        &zoo(&["train", "s4nd-digits", "--d-state", "1", "--out", run]),
        "d_state",
    );
}
