//! `zoo bench lm`: one JSON object, bf16, an unknown dtype refused, a mixed-length batch against
//! one by one.

mod common;

use common::*;

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
