//! `zoo classify` on Vim and VMamba checkpoints and a folder holding one; bad input is a one-line
//! error.

mod common;

use common::*;

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
        &zoo(&[
            "classify",
            "--model",
            vim.to_str().unwrap(),
            "missing.png",
            "--device",
            "cpu",
        ]),
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
            "--device",
            "cpu",
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
            "--device",
            "cpu",
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
