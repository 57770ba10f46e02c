//! `zoo train graph-mamba` on node (SBM, karate) and graph (TU) tasks, reloaded by `zoo eval`.

mod common;

use common::*;

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
    assert_clean_error(
        &zoo(&["eval", "--model", &toy, "--device", "cpu"]),
        "data settings",
    );
    assert_clean_error(
        &zoo(&["train", "graph-mamba", "--data", "tu", "--device", "cpu"]),
        "--tu-dir",
    );
    assert_clean_error(
        &zoo(&["train", "graph-mamba", "--data", "cora"]),
        "--data cora",
    );
}
