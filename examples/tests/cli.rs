//! The `zoo` binary end to end: outputs against the mamba_tiny and mamba2_tiny fixtures, and
//! bad input giving a one-line error and a non-zero exit, never a panic.

use ssm_backends::testing::{Fixture, assert_rel, fixtures_dir};
use std::path::PathBuf;
use std::process::{Command, Output};

fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .output()
        .expect("zoo runs")
}

const FIXTURES: [&str; 2] = ["mamba_tiny", "mamba2_tiny"];

fn model_dir() -> PathBuf {
    model_dir_of(FIXTURES[0])
}

fn model_dir_of(name: &str) -> PathBuf {
    fixtures_dir().join(name).join("model")
}

fn fixture() -> Fixture {
    fixture_of(FIXTURES[0])
}

fn fixture_of(name: &str) -> Fixture {
    Fixture::open(fixtures_dir().join(name).join("tensors.safetensors"))
}

fn prompt_rows(f: &Fixture) -> String {
    let (ids, shape) = f.ints("input_ids");
    (0..shape[0])
        .map(|i| {
            ids[i * shape[1]..(i + 1) * shape[1]]
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A failed run: non-zero exit, one line on stderr starting with "error:", no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected '{needle}' in: {err}");
}

/// The `(right, total)` a training run reported on its last line ("test accuracy 61.56%
/// (221/359); model saved to ..."): the count `zoo eval` must reproduce from the saved files.
fn reported_test_count(train_stdout: &str) -> (u64, u64) {
    let line = train_stdout
        .lines()
        .find(|l| l.starts_with("test accuracy"))
        .unwrap_or_else(|| panic!("no test accuracy line in: {train_stdout}"));
    let inner = line
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(c, _)| c)
        .unwrap_or_else(|| panic!("no (right/total) in: {line}"));
    let (right, total) = inner.split_once('/').expect("right/total");
    (right.parse().unwrap(), total.parse().unwrap())
}

/// `zoo eval`'s JSON gives exactly the count the training run reported, and that count is
/// above chance (10 classes).
fn assert_eval_reproduces(eval: &serde_json::Value, reported: (u64, u64), what: &str) {
    assert_eq!(
        (eval["right"].as_u64(), eval["total"].as_u64()),
        (Some(reported.0), Some(reported.1)),
        "{what}: zoo eval {eval} vs the training run's {reported:?}"
    );
    assert!(
        reported.0 * 10 > reported.1 * 2,
        "{what}: {reported:?} is not above chance"
    );
}

#[test]
fn logits_match_the_reference() {
    for name in FIXTURES {
        logits_match(name, "f32");
        logits_match(name, "bf16");
    }
}

/// `zoo logits --dtype`: f32 within 5e-6 of the largest reference logit; bf16 within eight of
/// its unit roundoffs (2^-8) of it (models/tests/half_precision.rs has the reasoning).
fn logits_match(name: &str, dtype: &str) {
    let f = fixture_of(name);
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("logits.safetensors");
    let model = model_dir_of(name);
    let out = zoo(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        &prompt_rows(&f),
        "--out",
        out_path.to_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        dtype,
    ]);
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
    if dtype == "bf16" {
        // measured 1.4e-2: the 4x rule would give 1e-1, so the 8 u bound stays
        assert_rel(&what, &values, &want, 8.0 * 2f64.powi(-8));
    } else {
        // measured 6.7e-7 (CPU)
        assert_rel(&what, &values, &want, 5e-6);
    }
}

#[test]
fn generate_json_gives_the_reference_greedy_tokens() {
    for name in FIXTURES {
        for dtype in ["f32", "bf16", "f16"] {
            greedy_tokens_match(name, dtype);
        }
    }
}

fn greedy_tokens_match(name: &str, dtype: &str) {
    let f = fixture_of(name);
    let model = model_dir_of(name);
    let out = zoo(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        &prompt_rows(&f),
        "--max-new-tokens",
        "10",
        "--greedy",
        // The reference generated its 10 tokens past EOS (mamba2_tiny's row 1 meets EOS = 2).
        "--ignore-eos",
        "--json",
        "--device",
        "cpu",
        "--dtype",
        dtype,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let (seqs, shape) = f.ints("generate.sequences");
    for row in 0..shape[0] {
        let want: Vec<i64> = seqs[row * shape[1] + 20..(row + 1) * shape[1]].to_vec();
        let got: Vec<i64> = v["tokens"][row]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(got, want, "{name} {dtype} row {row}");
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let model = model_dir();
    let run = |seed: &str| {
        let out = zoo(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.0",
            "--top-k",
            "20",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--json",
            "--device",
            "cpu",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("7"), run("7"));
}

#[test]
fn bench_lm_prints_one_json_object() {
    let out = zoo(&[
        "bench",
        "lm",
        "--d-model",
        "32",
        "--layers",
        "2",
        "--vocab",
        "100",
        "--prefill-len",
        "16",
        "--decode-tokens",
        "4",
        "--repeats",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["layers"], 2);
    assert_eq!(v["dtype"], "f32");
}

#[test]
fn bench_lm_runs_in_bf16_and_refuses_an_unknown_dtype() {
    let args = |dtype: &str| {
        zoo(&[
            "bench",
            "lm",
            "--d-model",
            "32",
            "--layers",
            "1",
            "--vocab",
            "100",
            "--prefill-len",
            "16",
            "--decode-tokens",
            "2",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--dtype",
            dtype,
        ])
    };
    let out = args("bf16");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["dtype"], "bf16");
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let out = args("f8");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("unknown dtype 'f8'") && err.contains("bf16"),
        "{err}"
    );
}

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

#[test]
fn text_prompts_go_through_a_tokenizer() {
    // A word-level tokenizer.json whose words w0..w63 are the fixture's token ids.
    let f = fixture();
    let (ids, shape) = f.ints("input_ids");
    let (seqs, sshape) = f.ints("generate.sequences");
    let prompt: Vec<String> = ids[..shape[1]].iter().map(|i| format!("w{i}")).collect();
    let want: Vec<String> = seqs[shape[1]..sshape[1]]
        .iter()
        .map(|i| format!("w{i}"))
        .collect();
    let model = model_dir();
    let tokenizer = fixtures_dir().join("mamba_tiny/tokenizer.json");
    let out = zoo(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--prompt",
        &prompt.join(" "),
        "--max-new-tokens",
        "10",
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words.len(), 30, "{text}");
    assert_eq!(words[20..].join(" "), want.join(" "), "{text}");
}

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
        ]),
        "for image models",
    );

    // Bad input: a folder without a model, impossible settings.
    assert_clean_error(
        &zoo(&["eval", "--model", dir.path().to_str().unwrap()]),
        "config.json",
    );
    // A half-written model file (what a non-atomic write killed midway would leave).
    let bytes = std::fs::read(out_dir.join("model.bpk")).unwrap();
    std::fs::write(out_dir.join("model.bpk"), &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &zoo(&["eval", "--model", out_dir.to_str().unwrap()]),
        "model.bpk",
    );
    std::fs::write(out_dir.join("model.bpk"), b"not a burnpack").unwrap();
    assert_clean_error(
        &zoo(&["eval", "--model", out_dir.to_str().unwrap()]),
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
        &zoo(&["eval", "--model", out_dir.to_str().unwrap()]),
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
        &zoo(&["eval", "--model", run, "--img-size", "0"]),
        "at least 1",
    );
    assert_clean_error(
        &zoo(&["train", "s4nd-digits", "--d-state", "1", "--out", run]),
        "d_state",
    );
}

fn write_png(path: &std::path::Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 37 + y * 91 + seed * 53) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((v * 7) % 256) as u8])
    });
    img.save(path).unwrap();
}

#[test]
fn classify_prints_the_top_classes_of_vim_and_vmamba_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    write_png(&a, 40, 30, 1);
    write_png(&b, 20, 20, 2);
    let fixtures = ssm_backends::testing::fixtures_dir();
    for model in [
        "vim_tiny/model.pth",
        "vmamba_tiny/v05.pth",
        "vmamba_tiny/v0.pth",
    ] {
        let path = fixtures.join(model);
        let out = zoo(&[
            "classify",
            "--model",
            path.to_str().unwrap(),
            "--img-size",
            "16",
            "--top",
            "3",
            "--json",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let preds = v["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 2);
        for p in preds {
            let top = p["top"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
            assert!(probs.windows(2).all(|w| w[0] >= w[1]), "sorted: {probs:?}");
            assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-5);
        }
    }
    // A folder holding one checkpoint file.
    let folder = dir.path().join("vim-folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(fixtures.join("vim_tiny/model.pth"), folder.join("vim.pth")).unwrap();
    let out = zoo(&[
        "classify",
        "--model",
        folder.to_str().unwrap(),
        "--json",
        a.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Text output names the rank, probability and class.
    let out = zoo(&[
        "classify",
        "--model",
        fixtures.join("vim_tiny/model.pth").to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("a.png") && text.contains("  1. ") && text.contains("  5. "),
        "{text}"
    );
    // Bad input: a missing image, a non-image, a checkpoint of another family, --top 0.
    let vim = fixtures.join("vim_tiny/model.pth");
    assert_clean_error(
        &zoo(&["classify", "--model", vim.to_str().unwrap(), "missing.png"]),
        "missing.png",
    );
    let text_file = dir.path().join("notes.png");
    std::fs::write(&text_file, "not an image").unwrap();
    assert_clean_error(
        &zoo(&[
            "classify",
            "--model",
            vim.to_str().unwrap(),
            text_file.to_str().unwrap(),
        ]),
        "notes.png",
    );
    let lm = fixtures.join("mamba_tiny/model/model.safetensors");
    assert_clean_error(
        &zoo(&[
            "classify",
            "--model",
            lm.to_str().unwrap(),
            a.to_str().unwrap(),
        ]),
        "neither a Vim",
    );
    assert_clean_error(
        &zoo(&[
            "classify",
            "--model",
            vim.to_str().unwrap(),
            "--top",
            "0",
            a.to_str().unwrap(),
        ]),
        "--top",
    );
}

#[test]
fn s_mamba_trains_on_the_macro_series_and_reports_the_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sm");
    let out = zoo(&[
        "train",
        "s-mamba",
        "--seq-len",
        "16",
        "--pred-len",
        "4",
        "--epochs",
        "2",
        "--d-model",
        "16",
        "--d-ff",
        "32",
        "--time-features",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).expect("a JSON summary line");
    for model in ["s_mamba", "linear", "last_value"] {
        let mse = v[model]["mse"].as_f64().unwrap();
        let mae = v[model]["mae"].as_f64().unwrap();
        assert!(
            mse.is_finite() && mse > 0.0 && mae.is_finite() && mae > 0.0,
            "{model}: {v}"
        );
    }
    assert_eq!(v["test_windows"], 37);
    assert!(out_dir.join("model.bpk").is_file() && out_dir.join("metrics.json").is_file());
    // `zoo forecast` reloads the model: the same test MSE, and a PNG of a window.
    let plot = dir.path().join("plot.png");
    let out = zoo(&[
        "forecast",
        "--model",
        out_dir.to_str().unwrap(),
        "--variate",
        "cpi",
        "--window",
        "3",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let (a, b) = (
        f["mse"].as_f64().unwrap(),
        v["s_mamba"]["mse"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-6 * b.max(1.0),
        "forecast MSE {a} vs training-time {b}"
    );
    let png = image::open(&plot).expect("a PNG");
    assert_eq!((png.width(), png.height()), (960, 480));
    assert_clean_error(
        &zoo(&[
            "forecast",
            "--model",
            out_dir.to_str().unwrap(),
            "--variate",
            "gdp",
        ]),
        "no variate 'gdp'",
    );
    assert_clean_error(
        &zoo(&[
            "forecast",
            "--model",
            out_dir.to_str().unwrap(),
            "--window",
            "999",
        ]),
        "--window 999",
    );
    let tm_dir = dir.path().join("tm");
    let out = zoo(&[
        "train",
        "time-machine",
        "--seq-len",
        "16",
        "--pred-len",
        "4",
        "--epochs",
        "2",
        "--n1",
        "16",
        "--n2",
        "8",
        "--d-state",
        "4",
        "--out",
        tm_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        v["time_machine"]["mse"].as_f64().unwrap().is_finite(),
        "{v}"
    );
    // Impossible settings and bad files are one-line errors.
    assert_clean_error(
        &zoo(&[
            "train",
            "s-mamba",
            "--seq-len",
            "300",
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "cannot hold the splits",
    );
    assert_clean_error(
        &zoo(&[
            "train",
            "s-mamba",
            "--missing",
            "drop",
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "--missing drop",
    );
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "date,a\n2020-01-01,1\nnot-a-date,2\n").unwrap();
    assert_clean_error(
        &zoo(&[
            "train",
            "s-mamba",
            "--csv",
            bad.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]),
        "line 3",
    );
}

/// A failed download: non-zero exit, no panic, the last stderr line the error (the lines
/// before it say what was being downloaded).
fn assert_download_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "expected '{needle}' in: {err}"
    );
}

/// A file in the ETTh1 layout and size (17,420 hourly rows from 2016-07-01, 7 variables).
fn fake_etth1(path: &std::path::Path) {
    use std::fmt::Write;
    let start = chrono::NaiveDate::from_ymd_opt(2016, 7, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut text = String::from("date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n");
    for t in 0..17_420i64 {
        let date = start + chrono::Duration::hours(t);
        write!(text, "{}", date.format("%Y-%m-%d %H:%M:%S")).unwrap();
        for c in 0..7 {
            let x = (t as f64 * (0.26 + 0.01 * c as f64)).sin() + 0.1 * c as f64;
            write!(text, ",{x:.3}").unwrap();
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn zoo_with_cache(cache: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .env("SSM_ZOO_CACHE", cache)
        .args(args)
        .output()
        .expect("zoo runs")
}

#[test]
fn benchmarks_download_into_the_cache_and_train_with_their_splits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("mirror").join("ETTh1.csv");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    fake_etth1(&source);
    let mirror = format!("file://{}", source.display());

    let list = |cache: &std::path::Path| -> serde_json::Value {
        let out = zoo_with_cache(cache, &["data", "list"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    };
    let v = list(&cache);
    assert_eq!(v["cache"], cache.join("datasets").display().to_string());
    let names: Vec<_> = v["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["etth1", "ettm1", "weather", "electricity"]);
    assert_eq!(v["datasets"][0]["cached"], false);

    // A mirror that does not hold the file, then one whose file is not ETTh1: one-line errors,
    // nothing cached.
    let nowhere = format!("file://{}/none.csv", dir.path().display());
    assert_download_error(
        &zoo_with_cache(&cache, &["data", "fetch", "etth1", "--mirror", &nowhere]),
        "could not download ETTh1.csv (file://",
    );
    let macro_ = format!(
        "file://{}",
        ssm_datasets::timeseries::shipped_series("macrodata.csv").display()
    );
    assert_download_error(
        &zoo_with_cache(&cache, &["data", "fetch", "etth1", "--mirror", &macro_]),
        "expected 17420 x 7",
    );
    assert_eq!(list(&cache)["datasets"][0]["cached"], false);
    assert_download_error(
        &zoo_with_cache(&cache, &["data", "fetch", "traffic"]),
        "unknown data set \"traffic\"",
    );

    let out = zoo_with_cache(&cache, &["data", "fetch", "etth1", "--mirror", &mirror]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cached = cache.join("datasets").join("ETTh1.csv");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        cached.display().to_string()
    );
    assert_eq!(list(&cache)["datasets"][0]["cached"], true);

    // Training by name reads the cached copy (the mirror is gone) with ETT's 12/4/4-month split:
    // the test split has 4 x 30 x 24 = 2880 targets, so 2880 - 4 + 1 windows of horizon 4.
    std::fs::remove_file(&source).unwrap();
    let out_dir = dir.path().join("run");
    let out = zoo_with_cache(
        &cache,
        &[
            "train",
            "s-mamba",
            "--dataset",
            "ETTh1",
            "--seq-len",
            "16",
            "--pred-len",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--d-model",
            "8",
            "--d-ff",
            "16",
            "--d-state",
            "4",
            "--e-layers",
            "1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(v["test_windows"], 2877, "{v}");
    assert_eq!(v["series"], cached.display().to_string());
    let out = zoo_with_cache(
        &cache,
        &["train", "s-mamba", "--dataset", "etth1", "--csv", "x.csv"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot be used with"),
        "{err}"
    );
}

#[test]
fn graph_mamba_trains_on_node_and_graph_tasks() {
    let json_line = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap()).expect("a JSON summary line")
    };
    let runs = tempfile::tempdir().unwrap();
    let out = |name: &str| runs.path().join(name).to_str().unwrap().to_string();
    // Trained with burn-train, saved, and reloaded by `zoo eval` with the same test accuracy.
    let reloads = |dir: &str, v: &serde_json::Value| {
        let e = json_line(&zoo(&["eval", "--model", dir]));
        assert_eq!(e["total"], v["test_total"], "{e} vs {v}");
        assert_eq!(e["right"], v["test_right"], "{e} vs {v}");
    };
    let sbm = out("sbm");
    let v = json_line(&zoo(&[
        "train",
        "graph-mamba",
        "--out",
        &sbm,
        "--data",
        "sbm",
        "--block-size",
        "10",
        "--epochs",
        "5",
        "--dim",
        "8",
        "--layers",
        "1",
    ]));
    // 4 blocks of 10 nodes, split 50/25/25.
    assert_eq!(v["test_total"], 10);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    reloads(&sbm, &v);
    for split in ["train", "valid"] {
        assert!(
            runs.path().join("sbm").join(split).is_dir(),
            "burn-train's {split} logs"
        );
    }
    let karate = out("karate");
    let v = json_line(&zoo(&[
        "train",
        "graph-mamba",
        "--out",
        &karate,
        "--data",
        "karate",
        "--epochs",
        "3",
        "--dim",
        "8",
    ]));
    assert_eq!(v["test_total"], 32);
    reloads(&karate, &v);
    // A TU data set: 10 small graphs, triangles (class 1) and paths (class 0).
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut ind, mut lab) = (String::new(), String::new(), String::new());
    let mut next = 1;
    for g in 0..10 {
        let tri = g % 2 == 1;
        for _ in 0..3 {
            ind.push_str(&format!("{}\n", g + 1));
        }
        let (x, y, z) = (next, next + 1, next + 2);
        let mut edges = vec![(x, y), (y, z)];
        if tri {
            edges.push((x, z));
        }
        for (p, q) in edges {
            a.push_str(&format!("{p}, {q}\n{q}, {p}\n"));
        }
        lab.push_str(if tri { "1\n" } else { "0\n" });
        next += 3;
    }
    for (f, t) in [("A", a), ("graph_indicator", ind), ("graph_labels", lab)] {
        std::fs::write(dir.path().join(format!("TOY_{f}.txt")), t).unwrap();
    }
    let toy = out("toy");
    let v = json_line(&zoo(&[
        "train",
        "graph-mamba",
        "--out",
        &toy,
        "--data",
        "tu",
        "--tu-dir",
        dir.path().to_str().unwrap(),
        "--tu-name",
        "TOY",
        "--epochs",
        "3",
        "--dim",
        "8",
    ]));
    // 10 graphs: 2 test, 1 validation, 7 training.
    assert_eq!(v["test_total"], 2);
    reloads(&toy, &v);
    // A saved run whose data settings were damaged: a one-line error.
    std::fs::write(
        runs.path().join("toy").join("zoo.json"),
        r#"{"kind": "graph-mamba", "data": {"data": "tu"}}"#,
    )
    .unwrap();
    assert_clean_error(&zoo(&["eval", "--model", &toy]), "data settings");
    assert_clean_error(&zoo(&["train", "graph-mamba", "--data", "tu"]), "--tu-dir");
    assert_clean_error(
        &zoo(&["train", "graph-mamba", "--data", "cora"]),
        "--data cora",
    );
}

/// `zoo generate --ids` with rows of different lengths: one batch, each row's tokens as alone.
#[test]
fn generate_decodes_rows_of_different_lengths_as_they_decode_alone() {
    let run = |ids: &str| -> Vec<Vec<i64>> {
        let out = zoo(&[
            "generate",
            "--model",
            model_dir().to_str().unwrap(),
            "--ids",
            ids,
            "--max-new-tokens",
            "6",
            "--greedy",
            "--json",
            "--device",
            "cpu",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect()
            })
            .collect()
    };
    let rows = ["5,9,13,2,7", "11", "3,4,6"];
    let batched = run(&rows.join(";"));
    assert_eq!(batched.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(batched[i], run(row)[0], "row {i} ({row})");
    }
}

/// `zoo bench lm --batch 3 --mixed-lengths`: prompt lengths over [L/4, L], the batch and the
/// one-by-one figures from one run (the tokens are checked equal by the command itself).
#[test]
fn bench_lm_times_a_mixed_length_batch_against_one_by_one() {
    let out = zoo(&[
        "bench",
        "lm",
        "--d-model",
        "32",
        "--layers",
        "2",
        "--vocab",
        "100",
        "--prefill-len",
        "8",
        "--prompt-len",
        "8",
        "--decode-tokens",
        "4",
        "--repeats",
        "1",
        "--batch",
        "3",
        "--mixed-lengths",
        "--device",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let m = &v["mixed_batch"];
    assert_eq!(m["prompt_lengths"], serde_json::json!([2, 5, 8]));
    assert_eq!(m["new_tokens"], 12);
    assert!(m["speedup"].as_f64().unwrap() > 0.0);
}
