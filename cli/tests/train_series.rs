//! `zoo train s-mamba` / `time-machine` on the macro series against the baselines, and `zoo
//! forecast` reloading the model.

mod common;

use common::*;

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
            "--device",
            "cpu",
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
            "--device",
            "cpu",
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
