//! `zoo train lm` end to end on the shipped text: the validation loss goes down for both
//! architectures, a run killed with SIGKILL and resumed equals one that never stopped (bit for
//! bit on the CPU), a corrupt checkpoint is refused with a clear error, and the exported Hugging
//! Face directory reloads to the trained model's logits and is read by `zoo generate`.

use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_models::io::pytorch_state_dict;
use ssm_models::lm::{MambaLm, read_mamba_config};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .output()
        .expect("zoo runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tiny model on the shipped text.
fn tiny(arch: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "lm",
        "--arch",
        arch,
        "--d-model",
        "32",
        "--layers",
        "2",
        "--d-state",
        "8",
        "--head-dim",
        "16",
        "--seq-len",
        "64",
        "--batch-size",
        "8",
        "--lr",
        "5e-3",
        "--warmup",
        "2",
        "--val-batches",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
}

fn losses(m: &serde_json::Value) -> Vec<f64> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn twenty_steps_lower_the_validation_loss_for_every_architecture() {
    for arch in ["mamba", "mamba2", "mamba3"] {
        let dir = tempfile::tempdir().unwrap();
        let args = tiny(arch, dir.path(), &["--steps", "20", "--eval-every", "10"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&zoo(&args));
        let m = metrics(dir.path());
        let evals = m["evals"].as_array().unwrap();
        // At step 0, 10 and 20.
        assert_eq!(evals.len(), 3, "{m}");
        let first = evals[0]["val_loss"].as_f64().unwrap();
        let last = evals[2]["val_loss"].as_f64().unwrap();
        // From about ln(264) = 5.6 nats (uniform over the byte vocabulary).
        assert!(first > 5.0, "{arch}: initial validation loss {first}");
        assert!(
            last < first - 1.0,
            "{arch}: validation loss {first} -> {last}"
        );
        assert_eq!(m["steps"], 20);
    }
}

/// `--dtype bf16`: the forward and backward in bf16 from f32 master weights follow the f32
/// run (the same data, seed and steps) and export f32 weights; f16 (no loss scaling) and
/// resuming under another dtype are refused.
#[test]
fn bf16_training_follows_f32_from_f32_master_weights() {
    let run = |dtype: &str| {
        let dir = tempfile::tempdir().unwrap();
        let args = tiny(
            "mamba",
            dir.path(),
            &["--steps", "20", "--eval-every", "20", "--dtype", dtype],
        );
        ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        dir
    };
    let (f32_dir, bf16_dir) = (run("f32"), run("bf16"));
    let last = |dir: &Path| {
        let m = metrics(dir);
        let evals = m["evals"].as_array().unwrap().clone();
        (
            evals[0]["val_loss"].as_f64().unwrap(),
            evals[evals.len() - 1]["val_loss"].as_f64().unwrap(),
        )
    };
    let ((f0, f1), (b0, b1)) = (last(f32_dir.path()), last(bf16_dir.path()));
    assert!(b1 < b0 - 1.0, "bf16: validation loss {b0} -> {b1}");
    // Same start, and after 20 steps within 0.05 nats of the f32 run (measured: 1e-4 apart).
    assert!((f0 - b0).abs() < 0.01, "untrained: f32 {f0}, bf16 {b0}");
    assert!((f1 - b1).abs() < 0.05, "trained: f32 {f1}, bf16 {b1}");
    // The exported weights are the f32 masters.
    let bytes = std::fs::read(bf16_dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(
        st.tensors()
            .iter()
            .all(|(_, t)| t.dtype() == safetensors::Dtype::F32)
    );

    let dir = tempfile::tempdir().unwrap();
    let args = tiny("mamba", dir.path(), &["--steps", "2", "--dtype", "f16"]);
    let out = zoo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("loss scaling"),
        "{err}"
    );

    let mut again = tiny(
        "mamba",
        f32_dir.path(),
        &["--steps", "20", "--eval-every", "20", "--dtype", "bf16"],
    );
    again.push("--resume".into());
    let out = zoo(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("dtype"), "{err}");
}

/// Spawns a run and kills it (SIGKILL) once its checkpoint of step `at` exists.
fn run_and_kill(args: &[String], ckpt: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ckpt.is_dir() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint at {}",
            ckpt.display()
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was to be killed, it finished");
}

#[test]
fn a_killed_run_resumes_bit_for_bit() {
    for arch in ["mamba", "mamba2"] {
        let common = [
            "--steps",
            "12",
            "--checkpoint-every",
            "3",
            "--eval-every",
            "4",
            "--accumulate",
            "2",
        ];
        let straight = tempfile::tempdir().unwrap();
        let args = tiny(arch, straight.path(), &common);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&zoo(&args));

        let resumed = tempfile::tempdir().unwrap();
        let args = tiny(arch, resumed.path(), &common);
        run_and_kill(&args, &resumed.path().join("checkpoints/step-00000006"));
        // Without --resume, the run refuses to overwrite the earlier one.
        let refused = zoo(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
        let mut again = args.clone();
        again.push("--resume".into());
        let text = ok(&zoo(&again.iter().map(String::as_str).collect::<Vec<_>>()));
        assert!(text.contains("resuming from"), "{text}");

        let (a, b) = (metrics(straight.path()), metrics(resumed.path()));
        assert_eq!(losses(&a), losses(&b), "{arch}: losses differ");
        assert_eq!(a["evals"], b["evals"], "{arch}: evaluations differ");
        let wa = std::fs::read(straight.path().join("model.safetensors")).unwrap();
        let wb = std::fs::read(resumed.path().join("model.safetensors")).unwrap();
        assert!(wa == wb, "{arch}: the resumed model's weights differ");
    }
}

#[test]
fn a_corrupt_or_foreign_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = tiny(
        "mamba",
        dir.path(),
        &["--steps", "4", "--checkpoint-every", "2"],
    );
    ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let ckpt = dir.path().join("checkpoints/step-00000004");
    // Other settings: named in the error.
    let mut other = tiny(
        "mamba",
        dir.path(),
        &["--steps", "8", "--checkpoint-every", "2"],
    );
    other.push("--resume".into());
    let out = zoo(&other.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("steps 4 (now 8)"),
        "{err}"
    );
    // A truncated optimizer state.
    let optim = ckpt.join("optim.bpk");
    let bytes = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &bytes[..bytes.len() / 2]).unwrap();
    let mut again = args.clone();
    again.push("--resume".into());
    let out = zoo(&again.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("optim.bpk"),
        "{err}"
    );
}

#[test]
fn the_exported_directory_reloads_to_the_trained_logits() {
    // Mamba and Mamba2 in transformers' layout, Mamba-3 in state-spaces/mamba's.
    for arch in ["mamba", "mamba2", "mamba3"] {
        let dir = tempfile::tempdir().unwrap();
        let args = tiny(
            arch,
            dir.path(),
            &["--steps", "3", "--checkpoint-every", "3"],
        );
        ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        let device = Device::flex();
        // The trained weights as the checkpoint holds them (burnpack, Burn's own layout) ...
        let (config, _) = read_mamba_config(&dir.path().join("config.json")).unwrap();
        let mut trained = config.init(&device);
        let mut store =
            BurnpackStore::from_file(dir.path().join("checkpoints/step-00000003/model.bpk"));
        trained.load_from(&mut store).unwrap();
        // ... and as exported (safetensors, the reference's names and layouts).
        let exported = MambaLm::load_dir(dir.path(), &device).unwrap();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(
                "Shall I compare thee".bytes().map(i64::from).collect(),
                [1, 20],
            ),
            &device,
        );
        use ssm_models::lm::CausalLm;
        let a = trained
            .forward(ids.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = exported
            .forward(ids)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a.len(), 20 * 264);
        // Equal weights; logits within 1e-6 of their scale (a loaded Linear weight is a
        // transposed view, which the matmul may accumulate in another order; measured 0).
        assert!(
            pytorch_state_dict(&trained) == pytorch_state_dict(&exported),
            "{arch}: exported weights differ"
        );
        ssm_backends::testing::assert_rel(&format!("{arch}: exported logits"), &b, &a, 1e-6);
        // zoo generate reads the directory (its tokenizer.json included).
        let text = ok(&zoo(&[
            "generate",
            "--model",
            dir.path().to_str().unwrap(),
            "--prompt",
            "Shall I",
            "--max-new-tokens",
            "5",
            "--greedy",
            "--device",
            "cpu",
        ]));
        assert!(text.starts_with("Shall I"), "{text}");
    }
}

#[test]
fn two_replicas_equal_one_device_accumulating_two_micro_batches() {
    let one = tempfile::tempdir().unwrap();
    let args = tiny("mamba2", one.path(), &["--steps", "4", "--accumulate", "2"]);
    ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    let two = tempfile::tempdir().unwrap();
    let mut args = tiny(
        "mamba2",
        two.path(),
        &["--steps", "4", "--devices", "cpu,cpu"],
    );
    // --devices replaces --device.
    let at = args.iter().position(|a| a == "--device").unwrap();
    args.drain(at..at + 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&zoo(&args));
    let (a, b) = (metrics(one.path()), metrics(two.path()));
    assert_eq!(losses(&a), losses(&b));
    let wa = std::fs::read(one.path().join("model.safetensors")).unwrap();
    let wb = std::fs::read(two.path().join("model.safetensors")).unwrap();
    assert!(wa == wb, "two replicas differ from one device accumulating");
    // A device that does not exist is named.
    let none = two.path().join("never");
    let out = zoo(&[
        "train",
        "lm",
        "--devices",
        "cpu,tpu",
        "--steps",
        "1",
        "--out",
        none.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tpu"), "{err}");
    assert!(!none.exists(), "a refused run wrote its folder");
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let mut weights = Vec::new();
    for threads in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let args = tiny("mamba", dir.path(), &["--steps", "3"]);
        let out = Command::new(env!("CARGO_BIN_EXE_zoo"))
            .args(&args)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        ok(&out);
        weights.push(std::fs::read(dir.path().join("model.safetensors")).unwrap());
    }
    assert!(
        weights[0] == weights[1],
        "1 and 2 threads train different models"
    );
}

#[test]
fn reads_text_jsonl_and_token_files_with_a_tokenizer_file_and_caches_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = "To be, or not to be, that is the question:\n".repeat(40);
    std::fs::write(d.join("a.txt"), &text).unwrap();
    let jsonl: String = (0..30)
        .map(|i| format!("{{\"text\": \"Sonnet {i}: shall I compare thee to a summer's day?\", \"id\": {i}}}\n"))
        .collect();
    std::fs::write(d.join("b.jsonl"), jsonl).unwrap();
    // A token file (the layout of the cache): two documents of byte ids.
    let mut tokens = b"SSMZTOK1".to_vec();
    tokens.extend(2u64.to_le_bytes());
    for len in [300u64, 200] {
        tokens.extend(len.to_le_bytes());
    }
    for i in 0..500u32 {
        tokens.extend((97 + i % 26).to_le_bytes());
    }
    std::fs::write(d.join("c.tokens"), tokens).unwrap();
    let tok = d.join("bytes.json");
    std::fs::write(&tok, ssm_models::lm::tokenizer::byte_level_tokenizer_json()).unwrap();
    let out = d.join("run");
    let mut args = tiny(
        "mamba",
        &out,
        &["--steps", "2", "--val-fraction", "0.1", "--text"],
    );
    let at = args.iter().position(|a| a == "--seq-len").unwrap();
    args[at + 1] = "32".into();
    for f in ["a.txt", "b.jsonl", "c.tokens"] {
        args.push(d.join(f).to_str().unwrap().into());
    }
    args.push("--tokenizer".into());
    args.push(tok.to_str().unwrap().into());
    let text_out = ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    // 1 + 30 + 2 documents.
    assert!(text_out.contains("documents"), "{text_out}");
    let caches = |dir: &Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tokens"))
            .count()
    };
    assert_eq!(caches(&out), 1);
    // The same inputs again (resumed, nothing left to do) reuse the cache; a changed file
    // makes a new one.
    std::fs::write(d.join("a.txt"), text.replace("question", "answer")).unwrap();
    let _ = std::fs::remove_dir_all(out.join("checkpoints"));
    ok(&zoo(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(caches(&out), 2);
    // Bad inputs: a JSON line without text, a truncated token file.
    std::fs::write(d.join("bad.jsonl"), "{\"text\": \"ok\"}\n{\"title\": 3}\n").unwrap();
    let out = zoo(&[
        "train",
        "lm",
        "--text",
        d.join("bad.jsonl").to_str().unwrap(),
        "--out",
        d.join("r2").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2") && err.contains("\"text\""),
        "{err}"
    );
    let t = std::fs::read(d.join("c.tokens")).unwrap();
    std::fs::write(d.join("cut.tokens"), &t[..t.len() - 3]).unwrap();
    let out = zoo(&[
        "train",
        "lm",
        "--text",
        d.join("cut.tokens").to_str().unwrap(),
        "--out",
        d.join("r3").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("truncated"), "{err}");
}

#[test]
fn bench_compare_trains_three_models_and_draws_the_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(&zoo(&[
        "bench",
        "compare",
        "--steps",
        "2",
        "--d-model",
        "32",
        "--layers",
        "2",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--lengths",
        "64,128",
        "--out",
        dir.path().to_str().unwrap(),
    ]));
    assert!(text.contains("Transformer"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("compare.json")).unwrap())
            .unwrap();
    assert_eq!(v["training"].as_array().unwrap().len(), 3, "{v}");
    // 4 models x 2 lengths, each with a time and (on the CPU) a peak.
    let inf = v["inference"].as_array().unwrap();
    assert_eq!(inf.len(), 8, "{v}");
    assert!(inf.iter().all(|r| r["ms"].as_f64().unwrap() > 0.0));
    assert!(inf.iter().all(|r| r["peak_mib"].as_f64().unwrap() > 0.0));
    let png = std::fs::read(dir.path().join("compare.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let none = dir.path().join("never");
    let out = zoo(&[
        "bench",
        "compare",
        "--models",
        "mamba,rnn",
        "--out",
        none.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("'rnn'"), "{err}");
    assert!(!none.exists());
}
