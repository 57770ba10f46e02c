//! `zoo bench lm`: one JSON object, bf16, an unknown dtype refused, a mixed-length batch against
//! one by one, batched decoding and training steps; `zoo bench scan`'s bandwidth against a
//! copy's; `zoo devices`.

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
    // The decode's bound: every weight read once per step (tied embedding: read whole as the
    // head), at the read bandwidth measured in the same process.
    let params = v["parameters"].as_f64().unwrap();
    assert_eq!(v["weights_bytes_per_token"].as_f64().unwrap(), 4.0 * params);
    let bw = v["read_gb_s"].as_f64().unwrap();
    assert!(bw > 0.0);
    let bound = v["decode_bound_tokens_per_s"].as_f64().unwrap();
    assert!((bound - bw * 1e9 / (4.0 * params)).abs() <= 1e-9 * bound);
    let fraction = v["decode_fraction_of_bound"].as_f64().unwrap();
    assert!((fraction - v["decode_tokens_per_s"].as_f64().unwrap() / bound).abs() < 1e-9);
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

/// `zoo bench lm --quantize q8`: the weights' bytes per token are the int8 values and their
/// scales (under half of f32's at this shape), the decode runs; q8 with bf16 and an unknown
/// quantization are refused with a message, not a panic.
#[test]
fn bench_lm_runs_quantized_and_refuses_impossible_combinations() {
    let args = |extra: &[&str]| {
        let mut a = vec![
            "bench",
            "lm",
            "--d-model",
            "64",
            "--layers",
            "2",
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
        ];
        a.extend_from_slice(extra);
        zoo(&a)
    };
    let out = args(&["--quantize", "q8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["quantize"], "q8");
    let params = v["parameters"].as_f64().unwrap();
    let bytes = v["weights_bytes_per_token"].as_f64().unwrap();
    assert!(
        bytes < 0.5 * 4.0 * params && bytes > params,
        "{bytes} for {params}"
    );
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    for (extra, want) in [
        (
            &["--quantize", "q8", "--dtype", "bf16"][..],
            "leave --dtype at f32",
        ),
        (&["--quantize", "q4"][..], "unknown quantization 'q4'"),
        (
            &["--quantize", "q8:48"][..],
            "not a whole number of blocks of 48",
        ),
    ] {
        let out = args(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        assert!(err.contains(want), "{extra:?}: {err}");
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

#[test]
fn bench_lm_decodes_a_batch_and_times_training_steps() {
    let out = zoo(&[
        "bench",
        "lm",
        "--arch",
        "mamba2",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--vocab",
        "100",
        "--head-dim",
        "16",
        "--chunk-size",
        "8",
        "--d-state",
        "8",
        "--prefill-len",
        "16",
        "--prefill-batch",
        "2",
        "--decode-tokens",
        "3",
        "--decode-batch",
        "2",
        "--train-batch",
        "2",
        "--train-len",
        "16",
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
    assert_eq!(v["decode_batch"], 2);
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let t = &v["training"];
    assert_eq!(
        (t["batch"].as_u64(), t["len"].as_u64()),
        (Some(2), Some(16))
    );
    assert!(t["tokens_per_s"].as_f64().unwrap() > 0.0, "{t}");
}

#[test]
fn bench_scan_reports_the_bandwidth_against_a_copy() {
    let out = zoo(&[
        "bench",
        "scan",
        "--device",
        "cpu",
        "--batch",
        "1,2",
        "--d",
        "16",
        "--len",
        "64",
        "--spans",
        "4",
        "--repeats",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["adapter_kind"], "host");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        for key in [
            "copy_gb_s",
            "one_pass_gb_s",
            "spans_gb_s",
            "device_rule_gb_s",
        ] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
        }
        let fraction = r["one_pass_gb_s"].as_f64().unwrap() / r["copy_gb_s"].as_f64().unwrap();
        assert!(
            (r["one_pass_fraction_of_copy"].as_f64().unwrap() - fraction).abs() < 1e-9,
            "{r}"
        );
    }
    let bad = zoo(&[
        "bench", "scan", "--device", "cpu", "--len", "64", "--spans", "65",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--spans must be between 2 and --len"));
}

#[test]
fn devices_lists_the_cpu_and_which_one_auto_picks() {
    let out = zoo(&["devices"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let cpu = rows.iter().find(|r| r["device"] == "cpu").expect("the CPU");
    assert_eq!(cpu["kind"], "host");
    assert_eq!(
        rows.iter().filter(|r| r["auto"] == true).count(),
        1,
        "{rows:?}"
    );
    // Mesa's lavapipe, where installed (CI), is listed as a software adapter.
    for r in rows
        .iter()
        .filter(|r| r["device"].as_str().unwrap().starts_with("wgpu"))
    {
        if r["name"].as_str().unwrap().contains("llvmpipe") {
            assert_eq!(r["kind"], "software", "{r}");
            assert_eq!(r["auto"], false, "{r}");
        }
    }
}
