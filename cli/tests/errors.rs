//! Bad input to `zoo generate` and `zoo logits` (devices, token ids, prompts, weights, configs,
//! sampling settings): a one-line error and a non-zero exit, never a panic.

mod common;

use common::*;

#[test]
fn bad_input_gives_one_line_errors() {
    let model = model_dir();
    let m = model.to_str().unwrap();
    // Unknown device.
    assert_clean_error(
        &zoo(&["generate", "--model", m, "--ids", "1,2", "--device", "tpu"]),
        "unknown device 'tpu'",
    );
    // Token id beyond the vocabulary (64).
    assert_clean_error(
        &zoo(&["generate", "--model", m, "--ids", "1,64", "--device", "cpu"]),
        "token id 64 is out of range",
    );
    // Empty prompt.
    assert_clean_error(
        &zoo(&["generate", "--model", m, "--ids", "", "--device", "cpu"]),
        "empty prompt",
    );
    // Not a number.
    assert_clean_error(
        &zoo(&[
            "logits",
            "--model",
            m,
            "--ids",
            "1,x",
            "--out",
            "/tmp/never.safetensors",
            "--device",
            "cpu",
        ]),
        "'x' is not a token id",
    );
    // A truncated weights file and an impossible config.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(model.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    assert_clean_error(
        &zoo(&["generate", "--model", d, "--ids", "1", "--device", "cpu"]),
        "cannot read weights",
    );
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"mamba","hidden_size":32,"num_hidden_layers":2,"vocab_size":64,"state_size":0}"#,
    )
    .unwrap();
    assert_clean_error(
        &zoo(&["generate", "--model", d, "--ids", "1", "--device", "cpu"]),
        "d_state must be at least 1",
    );
    // A missing model directory.
    assert_clean_error(
        &zoo(&[
            "generate",
            "--model",
            "/nonexistent/model",
            "--ids",
            "1",
            "--device",
            "cpu",
        ]),
        "cannot read /nonexistent/model/config.json",
    );
    // A prompt without a tokenizer.
    assert_clean_error(
        &zoo(&[
            "generate", "--model", m, "--prompt", "hello", "--device", "cpu",
        ]),
        "needs a tokenizer",
    );
    // Impossible sampling settings.
    assert_clean_error(
        &zoo(&[
            "generate", "--model", m, "--ids", "1", "--top-p", "2", "--device", "cpu",
        ]),
        "top-p must be in (0, 1]",
    );
}

/// Picking the device on a headless machine (no `XDG_RUNTIME_DIR`, as on servers and CI, with
/// Mesa's lavapipe installed) prints no line that looks like an error: Mesa's window-system
/// probe used to print "error: XDG_RUNTIME_DIR is invalid or not set" twice.
#[test]
fn picking_the_device_headless_prints_no_error_line() {
    let m = model_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args([
            "generate",
            "--model",
            m.to_str().unwrap(),
            "--ids",
            "1,2",
            "--max-new-tokens",
            "2",
            "--greedy",
            "--json",
        ])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("zoo runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.to_ascii_lowercase().contains("error")),
        "an error-looking line on a successful run: {err}"
    );
    // The device picked is said, once.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("device: ")).count(),
        1,
        "{err}"
    );
}
