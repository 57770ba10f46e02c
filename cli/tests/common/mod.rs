//! What the `zoo` end-to-end tests share: running the binary, the mamba_tiny and mamba2_tiny
//! fixtures, and the checks of a clean one-line error and of `zoo eval` reproducing a run.
#![allow(dead_code)]

pub use ssm_backends::testing::{Fixture, fixtures_dir};
pub use std::path::PathBuf;
pub use std::process::{Command, Output};

pub fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .output()
        .expect("zoo runs")
}

pub const FIXTURES: [&str; 2] = ["mamba_tiny", "mamba2_tiny"];

pub fn model_dir() -> PathBuf {
    model_dir_of(FIXTURES[0])
}

pub fn model_dir_of(name: &str) -> PathBuf {
    fixtures_dir().join(name).join("model")
}

pub fn fixture() -> Fixture {
    fixture_of(FIXTURES[0])
}

pub fn fixture_of(name: &str) -> Fixture {
    Fixture::open(fixtures_dir().join(name).join("tensors.safetensors"))
}

pub fn prompt_rows(f: &Fixture) -> String {
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
pub fn assert_clean_error(out: &Output, needle: &str) {
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
pub fn reported_test_count(train_stdout: &str) -> (u64, u64) {
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
pub fn assert_eval_reproduces(eval: &serde_json::Value, reported: (u64, u64), what: &str) {
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
