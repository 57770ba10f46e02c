//! The language-model training pieces: packed documents do not leak into each other's losses,
//! weight decay falls on the weight matrices only, a model saved in the Hugging Face layout
//! loads back to the same logits, and the byte-level tokenizer is the identity on bytes.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::{assert_abs, assert_finite, assert_rel, gap, seeded};
use ssm_datasets::text::{PackedRows, TokenDocs};
use ssm_models::io::pytorch_state_dict;
use ssm_models::lm::tokenizer::{BYTE_EOS, TextTokenizer};
use ssm_models::lm::train::{decay_plan, token_losses};
use ssm_models::lm::{CausalLm, Mamba2Settings, MambaLm, MambaLmConfig, TransformerLmConfig};

fn tiny(mamba2: bool, tie: bool) -> MambaLmConfig {
    let mut c = MambaLmConfig::new(16, 2, 40)
        .with_d_state(8)
        .with_tie_embeddings(tie)
        .with_eos_token_id(Some(39));
    if mamba2 {
        c.mamba2 = Some(Mamba2Settings::new().with_head_dim(8).with_chunk_size(8));
    }
    c
}

fn ints(v: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Per-token losses of packed rows, as (row, position) -> loss.
fn packed_losses(model: &MambaLm, rows: &PackedRows, device: &Device) -> Vec<f32> {
    let idx: Vec<usize> = (0..rows.len()).collect();
    let b = rows.batch(&idx, device);
    let (logits, _) = model.forward_packed(b.inputs, b.seq_idx).unwrap();
    token_losses(logits, b.targets)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn changing_one_document_leaves_the_others_losses_unchanged() {
    let device = Device::flex();
    for mamba2 in [false, true] {
        let model = {
            let _seed = seeded(&device, 3);
            tiny(mamba2, true).init(&device)
        };
        let eos = 39u32;
        let doc = |seed: u32, n: usize| -> Vec<u32> {
            (0..n as u32).map(|i| (i * 7 + seed) % 39).collect()
        };
        // Lengths chosen so that documents start mid-row, one spans a row boundary and the
        // SSD chunk (8) does not divide them; one document has a single token.
        let a = doc(1, 9);
        let b = doc(2, 13);
        let b2 = doc(5, 13);
        let c = doc(3, 1);
        let d = doc(4, 30);
        let rows_of = |b: &Vec<u32>| {
            PackedRows::new(
                &TokenDocs {
                    docs: vec![a.clone(), b.clone(), c.clone(), d.clone()],
                },
                eos,
                16,
            )
            .unwrap()
        };
        let (r1, r2) = (rows_of(&b), rows_of(&b2));
        assert_eq!(r1.len(), 3);
        let (l1, l2) = (
            packed_losses(&model, &r1, &device),
            packed_losses(&model, &r2, &device),
        );
        // Each input position's document in the stream `eos a eos b eos c eos d`: B's inputs are
        // its separator and its tokens (stream positions a.len()+1 ..= a.len()+1+b.len()).
        let b_start = a.len() + 1;
        let b_end = b_start + b.len(); // inclusive: B's last token predicts C's separator
        assert_finite(&format!("mamba2 {mamba2}: losses"), &l1);
        assert_finite(&format!("mamba2 {mamba2}: losses with B changed"), &l2);
        // The losses at the positions outside B (flat position p = row * 16 + i).
        let (mut kept1, mut kept2) = (Vec::new(), Vec::new());
        for p in 0..l1.len() {
            let (row, i) = (p / 16, p % 16);
            let pos = row * 16 + i;
            if (b_start..=b_end).contains(&pos) {
                continue;
            }
            kept1.push(l1[p]);
            kept2.push(l2[p]);
        }
        let same = kept1.len();
        // Absolute: losses in nats. Measured 0 (Flex).
        assert_abs(
            &format!("mamba2 {mamba2}: losses outside document B"),
            &kept2,
            &kept1,
            1e-6,
        );
        assert!(same >= 30);
        // B's own losses do change.
        let changed = (b_start + 1..=b_end)
            .filter(|&pos| (l1[pos] - l2[pos]).abs() > 1e-4)
            .count();
        assert!(
            changed > b.len() / 2,
            "mamba2 {mamba2}: only {changed} changed"
        );
    }
}

#[test]
fn weight_decay_falls_on_the_weight_matrices_only() {
    let device = Device::flex();
    for mamba2 in [false, true] {
        let model = {
            let _seed = seeded(&device, 1);
            tiny(mamba2, false).init(&device)
        };
        let plan = decay_plan(&model);
        let decayed: Vec<String> = plan
            .iter()
            .filter(|(_, d)| *d)
            .map(|(p, _)| p.clone())
            .collect();
        let variant = if mamba2 { "Mamba2" } else { "Mamba" };
        let mut expected = Vec::new();
        for i in 0..2 {
            let names: &[&str] = if mamba2 {
                &["in_proj.weight", "conv1d.weight", "out_proj.weight"]
            } else {
                &[
                    "in_proj.weight",
                    "conv1d.weight",
                    "x_proj.weight",
                    "dt_proj.weight",
                    "out_proj.weight",
                ]
            };
            for n in names {
                expected.push(format!("backbone.layers.{i}.mixer.{variant}.{n}"));
            }
        }
        // The untied head is a `VocabMatrix`: one shard on the CPU.
        expected.push("lm_head.weight.0".into());
        let (mut got, mut want) = (decayed.clone(), expected);
        got.sort();
        want.sort();
        assert_eq!(got, want, "plan: {plan:?}");
        // And the rest exists: embeddings, norms, A_log, D, biases.
        for needle in ["embeddings", "norm_f", "A_log", ".D", "bias"] {
            assert!(
                plan.iter().any(|(p, d)| p.contains(needle) && !d),
                "no undecayed {needle}"
            );
        }
    }
}

#[test]
fn saved_hugging_face_directories_load_back_to_the_same_logits() {
    let device = Device::flex();
    for (mamba2, tie) in [(false, true), (false, false), (true, true), (true, false)] {
        let config = tiny(mamba2, tie);
        let model = {
            let _seed = seeded(&device, 7);
            config.init(&device)
        };
        let dir = tempfile::tempdir().unwrap();
        model.save_hf(&config, dir.path()).unwrap();
        let back = MambaLm::load_dir(dir.path(), &device).unwrap();
        let ids = ints((0..12).map(|i| (i * 5) % 40).collect(), [2, 6], &device);
        let a = model
            .forward(ids.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = back.forward(ids).into_data().try_to_vec::<f32>().unwrap();
        // The weights are equal bit for bit; the logits only close (relative 5e-7), because a
        // loaded Linear weight is a transposed view of PyTorch's (out, in) layout, which the
        // matmul accumulates in another order than the initialised (in, out) one. Measured
        // 2.3e-7 (Flex); the rule's 1e-6 would loosen the old 1e-6 abs at scale 1.9.
        assert!(
            pytorch_state_dict(&model) == pytorch_state_dict(&back),
            "mamba2 {mamba2} tie {tie}: weights differ"
        );
        assert_rel(
            &format!("mamba2 {mamba2} tie {tie}: logits loaded back"),
            &b,
            &a,
            5e-7,
        );
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model_type"], if mamba2 { "mamba2" } else { "mamba" });
        assert_eq!(cfg["tie_word_embeddings"], tie);
        assert_eq!(cfg["vocab_size"], 40);
    }
    // A config that does not describe the model is refused.
    let model = {
        let _seed = seeded(&device, 7);
        tiny(false, true).init(&device)
    };
    let dir = tempfile::tempdir().unwrap();
    let err = model
        .save_hf(&MambaLmConfig::new(16, 3, 40), dir.path())
        .unwrap_err();
    assert!(err.to_string().contains("does not describe"), "{err}");
}

#[test]
fn the_byte_tokenizer_is_the_identity_on_bytes() {
    let t = TextTokenizer::bytes();
    assert_eq!(t.vocab_size(), 257);
    assert_eq!(t.eos_token_id(), Some(BYTE_EOS));
    let text = "Shall I compare thee\nto a summer's day? \u{e9}t\u{e9} \u{2014} \t~\u{7f}";
    let ids = t.encode(text).unwrap();
    assert_eq!(ids, text.bytes().map(usize::from).collect::<Vec<_>>());
    assert_eq!(t.decode(&ids).unwrap(), text);
    // Its JSON reloads to the same tokenizer.
    let again = TextTokenizer::from_json(&t.to_json().unwrap()).unwrap();
    assert_eq!(again.encode(text).unwrap(), ids);
}

#[test]
fn the_transformer_baseline_is_causal_and_keeps_packed_documents_apart() {
    let device = Device::flex();
    let model = {
        let _seed = seeded(&device, 5);
        TransformerLmConfig::new(16, 2, 40).init(&device)
    };
    let row = |v: &[i64]| ints(v.to_vec(), [1, v.len()], &device);
    let logits = |ids: &[i64], seq: &[i64]| {
        model
            .forward_packed(row(ids), row(seq))
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let ids = [3, 7, 1, 9, 4, 4, 2, 8];
    let seq = [0, 0, 0, 1, 1, 1, 1, 1];
    let base = logits(&ids, &seq);
    let v = 40;
    // A later token does not change earlier positions; an earlier one changes later ones.
    let mut later = ids;
    later[6] = 30;
    let l2 = logits(&later, &seq);
    // measured 0 (Flex), here and below
    assert_rel(
        "positions before a changed token",
        &l2[..6 * v],
        &base[..6 * v],
        1e-6,
    );
    let g = gap(
        "positions from a changed token",
        &l2[6 * v..],
        &base[6 * v..],
    );
    assert!(
        g.max_abs > 1e-5,
        "a changed token leaves the later positions within 1e-5: {g:?}"
    );
    // A change in the first document leaves the second alone, which equals itself run alone.
    let mut first = ids;
    first[1] = 20;
    let l3 = logits(&first, &seq);
    assert_rel(
        "the second document after a change in the first",
        &l3[3 * v..],
        &base[3 * v..],
        1e-6,
    );
    let alone = logits(&ids[3..], &[0; 5]);
    assert_rel(
        "the second document packed vs alone",
        &alone,
        &base[3 * v..],
        1e-6,
    );
}
