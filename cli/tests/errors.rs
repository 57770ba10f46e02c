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

/// `zoo` run under an address-space limit of 2 GiB, so that a size that slipped past the
/// estimate fails fast (an allocation failure) instead of swapping.
fn zoo_limited(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2097152 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .output()
        .expect("sh runs")
}

/// A mistyped size that could not fit in memory is refused before it is allocated: one line
/// naming the estimate and the settings to change, exit status 1 (it used to abort in the
/// allocator: "memory allocation of 320000000000 bytes failed").
#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    let text = fixtures_dir().join("../README.md");
    let text = text.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train", "lm", "--bytes", "--text", text, "--steps", "2", "--device", "cpu", "--out",
            out,
        ];
        args.extend_from_slice(extra);
        zoo_limited(&args)
    };
    for (extra, needle) in [
        (&["--d-model", "200000", "--layers", "4"][..], "--d-model"),
        (&["--layers", "200000"][..], "--layers"),
        (&["--batch-size", "2000000"][..], "--batch-size"),
        (
            &["--d-model", "4096", "--d-state", "100000"][..],
            "--d-state",
        ),
    ] {
        let result = train(extra);
        assert_clean_error(&result, "needs about");
        assert_clean_error(&result, needle);
    }
    for extra in [
        &["--d-model", "100000", "--layers", "24"][..],
        &["--prefill-len", "100000000"][..],
        &["--prefill-batch", "100000000"][..],
    ] {
        let mut args = vec!["bench", "lm", "--device", "cpu"];
        args.extend_from_slice(extra);
        let result = zoo_limited(&args);
        assert_clean_error(&result, "needs about");
        assert_clean_error(&result, "force it");
    }
    // --force goes on past the estimate, here into an allocation the 2 GiB limit refuses:
    // one line naming the command, not Rust's abort.
    let forced = train(&["--d-model", "200000", "--layers", "4", "--force"]);
    assert_clean_error(&forced, "zoo train lm: out of memory: an allocation of");
}
