//! 8-bit weights (`ssm_models::quantize`) on the shipped fixtures (Mamba, Mamba2, Mamba-3 SISO
//! and MIMO, random weights at the references' tiny shapes), on Flex: the quantized model's
//! logits against the f32 model's, its cross-entropy on the fixtures' tokens within 1% of f32's,
//! its greedy tokens, its decode steps against its own parallel forward, and the refusals.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::{Fixture, fixtures_dir};
use ssm_backends::{is_quantized, to_vec};
use ssm_models::io::pytorch_state_dict_q8;
use ssm_models::lm::{CausalLm, MambaLm};
use ssm_models::quantize::{QUANT_METHOD, Quantization, save_quantized, stored_bytes};

const FIXTURES: [&str; 4] = ["mamba_tiny", "mamba2_tiny", "mamba3_tiny", "mamba3_mimo"];

fn load(name: &str, device: &Device) -> MambaLm {
    MambaLm::load_dir(&fixtures_dir().join(name).join("model"), device).expect("fixture loads")
}

fn cpu() -> Device {
    ssm_backends::parse_device(Some("cpu")).expect("the CPU device")
}

fn q8() -> Quantization {
    Quantization::parse("q8").unwrap()
}

/// The fixture's generated sequences (prompt and continuation), (B, T).
fn sequences(name: &str, device: &Device) -> (Vec<i64>, [usize; 2], Tensor<2, Int>) {
    let t = Fixture::open(fixtures_dir().join(name).join("tensors.safetensors"));
    let (seqs, shape) = t.ints("generate.sequences");
    let dims = [shape[0], shape[1]];
    let ids = Tensor::from_data(TensorData::new(seqs.clone(), dims), device);
    (seqs, dims, ids)
}

/// Mean cross-entropy (nats) of each next token of `seqs` under `logits` (B, T, V).
fn cross_entropy(logits: &[f32], seqs: &[i64], [b, t]: [usize; 2], v: usize) -> f64 {
    let mut sum = 0.0f64;
    for i in 0..b {
        for p in 0..t - 1 {
            let row = &logits[(i * t + p) * v..(i * t + p + 1) * v];
            let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - row[seqs[i * t + p + 1] as usize] as f64;
        }
    }
    sum / (b * (t - 1)) as f64
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        )
        .0
}

/// Per fixture (2 rows of 30 tokens): the q8 forward's logits within 6% of the f32 forward's
/// largest logit (measured 2.3-3.2%: int8 rounding of every projection and the head, blocks of
/// 32 spanning whole rows at d = 32), its cross-entropy on the tokens within 1% of f32's
/// (measured at most 0.03%), at least 90% of the greedy tokens equal (measured 57-60 of 60),
/// the decode steps (whose rows of x are int8 too) within 6% of its own parallel forward
/// (measured 2.1-3.2%), and the weights stored in at most half of f32's bytes (measured
/// 0.30-0.46 at these tiny shapes, where A, D, the conv, norms and the dt path, all f32, weigh
/// most).
#[test]
fn quantized_fixtures_track_f32() {
    let device = cpu();
    for name in FIXTURES {
        let f32_model = load(name, &device);
        let model = q8()
            .apply(load(name, &device))
            .expect("the fixture quantizes");
        assert!(model.is_quantized() && !f32_model.is_quantized());
        let ratio = stored_bytes(&model) as f64 / stored_bytes(&f32_model) as f64;
        let (seqs, dims, ids) = sequences(name, &device);
        let want = to_vec(f32_model.forward(ids.clone()));
        let logits = model.forward(ids);
        let v = logits.dims()[2];
        let got = to_vec(logits);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() as f64))
            / scale;
        let (ce_q, ce_f) = (
            cross_entropy(&got, &seqs, dims, v),
            cross_entropy(&want, &seqs, dims, v),
        );
        let positions = dims[0] * dims[1];
        let same = (0..positions)
            .filter(|&p| argmax(&got[p * v..(p + 1) * v]) == argmax(&want[p * v..(p + 1) * v]))
            .count();

        // Decoding: prefill 4 tokens, then one step per token.
        let [b, t] = dims;
        let prefix: Vec<i64> = (0..b)
            .flat_map(|i| seqs[i * t..i * t + 4].to_vec())
            .collect();
        let (_, mut cache) =
            model.prefill(Tensor::from_data(TensorData::new(prefix, [b, 4]), &device));
        let mut step_err = 0.0f64;
        for p in 4..t {
            let step_ids: Vec<i64> = (0..b).map(|i| seqs[i * t + p]).collect();
            let (l, c) = model.step(
                Tensor::from_data(TensorData::new(step_ids, [b]), &device),
                cache,
            );
            cache = c;
            let l = to_vec(l);
            for i in 0..b {
                let row = &got[(i * t + p) * v..(i * t + p + 1) * v];
                for (x, y) in l[i * v..(i + 1) * v].iter().zip(row) {
                    step_err = step_err.max((x - y).abs() as f64 / scale);
                }
            }
        }
        eprintln!(
            "{name}: logits {err:.2e} of scale {scale:.3}, cross-entropy {ce_q:.5} vs {ce_f:.5} \
             ({:+.3}%), greedy {same}/{positions}, step vs forward {step_err:.2e}, bytes x{ratio:.3}",
            100.0 * (ce_q - ce_f) / ce_f
        );
        assert!(err <= 6e-2, "{name}: q8 logits {err:e} from f32's");
        assert!(
            (ce_q - ce_f).abs() <= 0.01 * ce_f,
            "{name}: cross-entropy {ce_q} vs {ce_f}"
        );
        assert!(
            same * 10 >= positions * 9,
            "{name}: greedy {same}/{positions}"
        );
        assert!(
            step_err <= 6e-2,
            "{name}: q8 steps {step_err:e} from its forward"
        );
        assert!(ratio <= 0.5, "{name}: q8 holds x{ratio} of f32's bytes");
    }
}

/// The tied head of mamba_tiny is the embedding quantized once; mamba2_tiny's untied head is
/// quantized too; every in_proj and out_proj is, the dt path is not.
#[test]
fn what_is_quantized() {
    let device = cpu();
    let m = q8().apply(load("mamba_tiny", &device)).unwrap();
    assert!(m.lm_head.is_none());
    assert!(is_quantized(&m.backbone.embeddings.weight[0]));
    let m2 = q8().apply(load("mamba2_tiny", &device)).unwrap();
    assert!(is_quantized(&m2.lm_head.as_ref().unwrap().weight[0]));
    for layer in &m.backbone.layers {
        let ssm_models::ssm::Mixer::Mamba(mixer) = &layer.mixer else {
            panic!("a Mamba layer");
        };
        assert!(is_quantized(&mixer.in_proj.weight) && is_quantized(&mixer.out_proj.weight));
        assert!(!is_quantized(&mixer.x_proj.weight) && !is_quantized(&mixer.dt_proj.weight));
    }
}

/// Blocks that do not divide a matrix's K are refused naming the key and its shape; a model
/// quantized twice, and unknown names, are refused.
#[test]
fn impossible_quantizations_are_refused() {
    let device = cpu();
    let e = Quantization::parse("q8:24")
        .unwrap()
        .apply(load("mamba_tiny", &device))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backbone.embeddings.weight.0")
            && e.contains("(64, 32)")
            && e.contains("blocks of 24")
            && e.contains("4 more"),
        "{e}"
    );
    let twice = q8().apply(q8().apply(load("mamba_tiny", &device)).unwrap());
    let e = twice.unwrap_err().to_string();
    assert!(e.contains("already quantized"), "{e}");
    for bad in ["q4", "q8:0", "q8:256", "q8:x", ""] {
        let e = Quantization::parse(bad).unwrap_err().to_string();
        assert!(e.contains("expected q8"), "{bad}: {e}");
    }
}

/// On a GPU the quantization is refused with a clear error (the 8-bit products are CPU
/// kernels; CubeCL's own quantizer does not take these blocks).
#[cfg(feature = "wgpu")]
#[test]
fn gpu_models_are_refused() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    let e = q8()
        .apply(load("mamba_tiny", &device))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("CPU backends") && e.contains("cpu device"),
        "{e}"
    );
}

/// `save_quantized` then `load_dir`: every fixture (transformers' layout and state-spaces')
/// comes back bit for bit (the int8 values, the scales, every f32 tensor) and computes the same
/// logits exactly; the tied head is stored once.
#[test]
fn saved_quantized_models_load_bit_for_bit() {
    let device = cpu();
    for name in FIXTURES {
        let from = fixtures_dir().join(name).join("model");
        let model = q8().apply(load(name, &device)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_quantized(&model, &from, dir.path()).unwrap();
        let back = MambaLm::load_dir(dir.path(), &device).expect("the quantized folder loads");
        assert!(back.is_quantized());
        // The same scheme as the in-memory quantization (the one Flex's kernel takes).
        assert_eq!(
            back.backbone.embeddings.weight[0].dtype(),
            model.backbone.embeddings.weight[0].dtype(),
            "{name}"
        );
        assert_eq!(
            pytorch_state_dict_q8(&model),
            pytorch_state_dict_q8(&back),
            "{name}: the tensors after the round trip"
        );
        let (_, _, ids) = sequences(name, &device);
        assert_eq!(
            to_vec(model.forward(ids.clone())),
            to_vec(back.forward(ids)),
            "{name}: logits after the round trip"
        );
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["quantization_config"]["quant_method"], QUANT_METHOD);
    }
}

/// A quantized file with a scale missing, of the wrong shape, zero, negative or NaN, int8
/// values without scales, a scale beside float values, or an 8-bit matrix where only f32 is
/// read (x_proj): each refused with an error naming the key.
#[test]
fn bad_quantized_files_are_refused_by_key() {
    let device = cpu();
    let dir = tempfile::tempdir().unwrap();
    let from = fixtures_dir().join("mamba_tiny").join("model");
    save_quantized(
        &q8().apply(load("mamba_tiny", &device)).unwrap(),
        &from,
        dir.path(),
    )
    .unwrap();
    let file = dir.path().join("model.safetensors");
    let original = std::fs::read(&file).unwrap();
    let key = "backbone.layers.0.mixer.in_proj.weight";
    let scale = format!("{key}_scale");

    // Rewrites the file with `edit` applied to its tensors (name -> (dtype, shape, bytes)).
    type Tensors = std::collections::BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;
    let rewrite = |edit: &dyn Fn(&mut Tensors)| {
        let st = safetensors::SafeTensors::deserialize(&original).unwrap();
        let mut t: Tensors = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
            .collect();
        edit(&mut t);
        let views: Vec<(String, safetensors::tensor::TensorView)> = t
            .iter()
            .map(|(k, (d, s, b))| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
        MambaLm::load_dir(dir.path(), &device)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let set_scale = |t: &mut Tensors, v: f32| {
        let (_, _, b) = t.get_mut(&scale).unwrap();
        b[..4].copy_from_slice(&v.to_le_bytes());
    };
    let e = rewrite(&|t| {
        t.remove(&scale);
    });
    assert!(
        e.contains(key) && e.contains("_scale") && e.contains("missing"),
        "{e}"
    );
    let e = rewrite(&|t| {
        let (_, s, b) = t.get_mut(&scale).unwrap();
        *s = vec![s[0] * s[1]];
        let _ = b;
    });
    assert!(e.contains(&scale) && e.contains("shape"), "{e}");
    for v in [0.0, -1.0, f32::NAN] {
        let e = rewrite(&|t| set_scale(t, v));
        assert!(
            e.contains(&scale) && e.contains("finite and positive"),
            "{v}: {e}"
        );
    }
    let e = rewrite(&|t| {
        let (d, _, b) = t.get_mut(key).unwrap();
        *d = safetensors::Dtype::U8;
        let _ = b;
    });
    assert!(e.contains(key) && e.contains("int8"), "{e}");
    let e = rewrite(&|t| {
        let x = "backbone.layers.0.mixer.x_proj.weight";
        let (_, s, _) = t[x].clone();
        let n: usize = s.iter().product();
        t.insert(x.into(), (safetensors::Dtype::I8, s.clone(), vec![1; n]));
        t.insert(
            format!("{x}_scale"),
            (
                safetensors::Dtype::F32,
                vec![s[0], 1],
                [0, 0, 128, 63].repeat(s[0]),
            ),
        );
    });
    assert!(
        e.contains("x_proj.weight") && e.contains("only the mixers' in_proj"),
        "{e}"
    );
}
