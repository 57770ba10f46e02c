//! `zoo data list` / `fetch` with `file://` mirrors into a cache, and `zoo train s-mamba --dataset`
//! reading the cached copy with ETT's split.

mod common;

use common::*;

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
