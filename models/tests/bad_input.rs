//! Bad checkpoints and configs give errors that name the problem, never a panic.

use burn::tensor::Device;
use ssm_backends::testing::fixtures_dir;
use ssm_models::ModelError;
use ssm_models::lm::{GenerationConfig, MambaLm, generate};
use std::path::{Path, PathBuf};

fn fixture_model() -> PathBuf {
    fixtures_dir().join("mamba_tiny/model")
}

/// A copy of the fixture model directory whose weights file is replaced by `weights`.
fn model_dir_with(weights: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_model().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    dir
}

/// The fixture weights with `edit` applied to the (name, shape, f32 values) list.
fn edited_weights(edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> Vec<u8> {
    let bytes = std::fs::read(fixture_model().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut list: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, t.shape().to_vec(), v)
        })
        .collect();
    edit(&mut list);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = list
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load(dir: &Path) -> Result<MambaLm, ModelError> {
    MambaLm::load_dir(dir, &Device::flex())
}

#[test]
fn truncated_weights_are_an_error() {
    let bytes = std::fs::read(fixture_model().join("model.safetensors")).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        let dir = model_dir_with(&bytes[..cut]);
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(err, ModelError::Weights { .. }),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn garbage_weights_are_an_error() {
    let dir = model_dir_with(b"this is not a safetensors file at all, not even close......");
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn missing_key_names_key_and_shape() {
    let dir = model_dir_with(&edited_weights(|l| {
        l.retain(|(n, _, _)| n != "backbone.layers.1.mixer.A_log")
    }));
    let err = load(dir.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        "weights: key 'backbone.layers.1.mixer.A_log' is missing (expected shape [64, 8])"
    );
}

#[test]
fn misshaped_key_names_both_shapes() {
    let dir = model_dir_with(&edited_weights(|l| {
        let e = l
            .iter_mut()
            .find(|(n, _, _)| n == "backbone.layers.0.mixer.x_proj.weight")
            .unwrap();
        e.1 = vec![9, 128];
    }));
    let err = load(dir.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        "weights: key 'backbone.layers.0.mixer.x_proj.weight' has shape [9, 128], expected [18, 64]"
    );
}

#[test]
fn unexpected_key_is_named() {
    let dir = model_dir_with(&edited_weights(|l| {
        l.push((
            "backbone.layers.2.norm.weight".into(),
            vec![32],
            vec![1.0; 32],
        ))
    }));
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("unexpected key(s) backbone.layers.2.norm.weight"),
        "{err}"
    );
}

#[test]
fn state_spaces_keys_load_too() {
    // The same weights under state-spaces' names (backbone.embedding.*), with the tied head
    // stored as the released checkpoints do.
    let dir = model_dir_with(&edited_weights(|l| {
        let emb = l
            .iter_mut()
            .find(|(n, _, _)| n == "backbone.embeddings.weight")
            .unwrap();
        emb.0 = "backbone.embedding.weight".into();
        let head = ("lm_head.weight".to_string(), emb.1.clone(), emb.2.clone());
        l.push(head);
    }));
    load(dir.path()).expect("state-spaces key names load");
}

#[test]
fn impossible_configs_are_errors() {
    let weights = std::fs::read(fixture_model().join("model.safetensors")).unwrap();
    for (config, needle) in [
        (
            r#"{"model_type":"mamba","hidden_size":32,"num_hidden_layers":2,"vocab_size":64,"state_size":0}"#,
            "d_state must be at least 1",
        ),
        (
            r#"{"model_type":"mamba","hidden_size":32,"num_hidden_layers":2,"vocab_size":64,"expand":0}"#,
            "expand must be at least 1",
        ),
        (
            r#"{"model_type":"mamba","hidden_size":32,"vocab_size":64}"#,
            "missing required field 'num_hidden_layers'",
        ),
        ("{\"hidden_size\": 32,", "not valid JSON"),
    ] {
        let dir = model_dir_with(&weights);
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{config}: {err}");
        assert!(err.contains("config.json"), "{err}");
    }
}

#[test]
fn a_directory_without_weights_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_model().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("expected model.safetensors or pytorch_model.bin"),
        "{err}"
    );
}

#[test]
fn bad_token_ids_and_empty_prompts_are_errors() {
    let model = load(&fixture_model()).unwrap();
    let cfg = GenerationConfig::default();
    let err = generate(&model, &[vec![1, 64]], &cfg, |_, _| {})
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "token id 64 is out of range: the vocabulary has 64 entries"
    );
    let err = generate(&model, &[vec![]], &cfg, |_, _| {}).unwrap_err();
    assert!(matches!(err, ModelError::EmptyPrompt));
    assert!(model.check_ids(&[vec![63]]).is_ok());
}

/// A config.json whose model cannot fit in this machine's memory is refused before its weights
/// are read (here a tiny weights file: the size check comes first, not a shape mismatch).
#[test]
fn a_model_too_large_for_memory_is_refused_before_reading_it() {
    let dir = model_dir_with(&std::fs::read(fixture_model().join("model.safetensors")).unwrap());
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"mamba","hidden_size":200000,"num_hidden_layers":64,"vocab_size":50280}"#,
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("needs about") && err.contains("weights") && err.contains("the model"),
        "{err}"
    );
}
