//! Parity of `MambaLm` with transformers' `MambaForCausalLM` (mamba_tiny) and
//! `Mamba2ForCausalLM` (mamba2_tiny), and of the recurrent step with the parallel forward.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::{Fixture, assert_rel, fixtures_dir};
use ssm_backends::to_vec;
use ssm_models::lm::{CausalLm, GenerationConfig, MambaLm, generate};
use ssm_models::ssm::MixerTrace;
use std::path::PathBuf;

const MAMBA: &str = "mamba_tiny";
const MAMBA2: &str = "mamba2_tiny";

fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Bounds relative to each tensor's own scale (its largest magnitude), one per kind of tensor.
/// Each rests on the largest error measured over mamba_tiny and mamba2_tiny: 4x it on Flex,
/// 10x it on wgpu (lavapipe), rounded up to 1, 2 or 5 times a power of ten.
struct Bounds {
    logits: f64,
    embeddings: f64,
    /// `hidden_states.i` and `norm_f_out`.
    hidden: f64,
    conv_state: f64,
    ssm_state: f64,
    /// The scan's arguments and output (`layers.i.scan.*`).
    scan: f64,
    gated_norm: f64,
    /// The recurrent step's logits against the parallel forward's, every decoded position.
    step: f64,
}

/// Flex (and the ndarray CPU kernels).
const FLEX: Bounds = Bounds {
    logits: 5e-6,     // measured 6.7e-7
    embeddings: 1e-6, // measured 0 (a gather)
    hidden: 5e-6,     // measured 5.8e-7
    conv_state: 2e-6, // measured 3.0e-7
    ssm_state: 5e-6,  // measured 5.0e-7
    scan: 2e-6,       // measured 3.7e-7
    gated_norm: 5e-6, // measured 8.0e-7
    step: 2e-6,       // measured <= 4.8e-7 (max abs 9.2e-7 at logits of scale >= 1.93)
};

/// wgpu (lavapipe).
#[cfg(feature = "wgpu")]
const WGPU: Bounds = Bounds {
    logits: 1e-5,     // measured 7.2e-7
    embeddings: 2e-6, // measured 0
    hidden: 1e-5,     // measured 5.2e-7
    conv_state: 5e-6, // measured 3.7e-7
    ssm_state: 2e-5,  // measured 1.6e-6
    scan: 5e-6,       // measured 4.6e-7
    gated_norm: 1e-5, // measured 7.3e-7
    step: 5e-6,       // measured <= 4.8e-7 (max abs 9.5e-7 at logits of scale >= 1.93)
};

fn check_forward(name: &str, device: &Device, bounds: &Bounds) {
    let model =
        MambaLm::load_dir(&fixture_path(name).join("model"), device).expect("fixture loads");
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let ids: Tensor<2, Int> = t.int_tensor("input_ids", device);
    let out = model.forward_detailed(ids, None);

    let (want, shape) = t.values("logits");
    assert_eq!(out.logits.dims().to_vec(), shape);
    assert_rel("logits", &to_vec(out.logits.clone()), &want, bounds.logits);

    let (want, _) = t.values("embeddings");
    assert_rel(
        "embeddings",
        &to_vec(out.embeddings.clone()),
        &want,
        bounds.embeddings,
    );
    // hidden_states.i: the output of layer i; the last index is norm_f of the last layer.
    assert_eq!(out.hidden_states.len(), 3);
    let (want, _) = t.values("norm_f_out");
    assert_rel(
        "norm_f_out",
        &to_vec(out.hidden_states[2].clone()),
        &want,
        bounds.hidden,
    );
    for (i, h) in out.hidden_states.iter().enumerate() {
        let (want, _) = t.values(&format!("hidden_states.{i}"));
        assert_rel(
            &format!("hidden_states.{i}"),
            &to_vec(h.clone()),
            &want,
            bounds.hidden,
        );
    }
    for (i, c) in out.cache.layers.iter().enumerate() {
        for (key, got, tol) in [
            ("conv_state", &c.conv_state, bounds.conv_state),
            ("ssm_state", &c.ssm_state, bounds.ssm_state),
        ] {
            let (want, shape) = t.values(&format!("cache.{i}.{key}"));
            // Mamba2's SSM state is kept as (B, H·P, N); the reference's is (B, H, P, N).
            assert_eq!(
                got.dims().iter().product::<usize>(),
                shape.iter().product::<usize>(),
                "cache.{i}.{key} size"
            );
            assert_eq!(
                got.dims()[..2],
                [shape[0], shape[1..shape.len() - 1].iter().product()]
            );
            assert_rel(
                &format!("cache.{i}.{key}"),
                &to_vec(got.clone()),
                &want,
                tol,
            );
        }
    }
    for (i, tr) in out.traces.iter().enumerate() {
        let named: Vec<(&str, Vec<f32>)> = match tr {
            MixerTrace::Mamba(tr) => vec![
                ("y", to_vec(tr.y.clone())),
                ("delta_pre_softplus", to_vec(tr.delta.clone())),
            ],
            MixerTrace::Mamba2(tr) => vec![
                ("x", to_vec(tr.x.clone())),
                ("dt_pre_softplus", to_vec(tr.dt.clone())),
                ("A", to_vec(tr.a.clone())),
                ("B", to_vec(tr.b.clone())),
                ("C", to_vec(tr.c.clone())),
                ("y", to_vec(tr.y.clone())),
            ],
            MixerTrace::Mamba3(_) => panic!("these fixtures have no Mamba-3 layer"),
        };
        for (key, got) in named {
            let (want, _) = t.values(&format!("layers.{i}.scan.{key}"));
            assert_rel(&format!("layers.{i}.scan.{key}"), &got, &want, bounds.scan);
        }
        if let MixerTrace::Mamba2(tr) = tr {
            let (want, _) = t.values(&format!("layers.{i}.gated_norm_out"));
            assert_rel(
                &format!("layers.{i}.gated_norm_out"),
                &to_vec(tr.gated_norm.clone()),
                &want,
                bounds.gated_norm,
            );
        }
    }
}

fn check_generation(name: &str, device: &Device) {
    let model =
        MambaLm::load_dir(&fixture_path(name).join("model"), device).expect("fixture loads");
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let (ids, shape) = t.ints("input_ids");
    let (seqs, sshape) = t.ints("generate.sequences");
    let (b, l) = (shape[0], shape[1]);
    let n_new = sshape[1] - l;
    let prompts: Vec<Vec<usize>> = (0..b)
        .map(|i| {
            ids[i * l..(i + 1) * l]
                .iter()
                .map(|&x| x as usize)
                .collect()
        })
        .collect();
    let config = GenerationConfig {
        max_new_tokens: n_new,
        ..Default::default()
    };
    let out = generate(&model, &prompts, &config, |_, _| {}).unwrap();
    for (i, row) in out.iter().enumerate() {
        let want: Vec<usize> = seqs[i * sshape[1] + l..(i + 1) * sshape[1]]
            .iter()
            .map(|&x| x as usize)
            .collect();
        assert_eq!(row, &want, "row {i} greedy tokens");
    }
}

/// Decoding token by token gives the logits of a parallel forward over the same tokens, and the
/// parallel forward gives the reference's.
fn check_step_vs_forward(name: &str, device: &Device, bounds: &Bounds) {
    let model =
        MambaLm::load_dir(&fixture_path(name).join("model"), device).expect("fixture loads");
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let (seqs, shape) = t.ints("generate.sequences");
    let (b, total) = (shape[0], shape[1]);
    let full = Tensor::<2, Int>::from_data(TensorData::new(seqs.clone(), [b, total]), device);
    let parallel = model.forward(full);
    let prompt_len = 20;
    let (_, mut cache) = model.prefill(parallel_ids(&seqs, b, total, 0, prompt_len, device));
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for pos in prompt_len..total {
        let step_ids = Tensor::<1, Int>::from_data(
            TensorData::new(
                (0..b).map(|i| seqs[i * total + pos]).collect::<Vec<_>>(),
                [b],
            ),
            device,
        );
        let (logits, c) = model.step(step_ids, cache);
        cache = c;
        got.extend(to_vec(logits));
        let at_pos = parallel.clone().narrow(1, pos, 1).squeeze_dim::<2>(1);
        want.extend(to_vec(at_pos));
    }
    assert_rel("step vs parallel forward logits", &got, &want, bounds.step);

    // The reference's own step logits.
    let (want, _) = t.values("generate.full_forward_logits");
    let got = to_vec(parallel.narrow(1, 0, total - 1));
    assert_rel("full_forward_logits", &got, &want, bounds.logits);
}

fn parallel_ids(
    seqs: &[i64],
    b: usize,
    total: usize,
    lo: usize,
    hi: usize,
    device: &Device,
) -> Tensor<2, Int> {
    let v: Vec<i64> = (0..b)
        .flat_map(|i| seqs[i * total + lo..i * total + hi].to_vec())
        .collect();
    Tensor::from_data(TensorData::new(v, [b, hi - lo]), device)
}

#[test]
fn flex_forward_matches_reference() {
    check_forward(MAMBA, &Device::flex(), &FLEX);
}

#[test]
fn flex_greedy_tokens_match_reference() {
    check_generation(MAMBA, &Device::flex());
}

#[test]
fn flex_step_matches_parallel_forward() {
    check_step_vs_forward(MAMBA, &Device::flex(), &FLEX);
}

#[test]
fn mamba2_flex_forward_matches_reference() {
    check_forward(MAMBA2, &Device::flex(), &FLEX);
}

#[test]
fn mamba2_flex_greedy_tokens_match_reference() {
    check_generation(MAMBA2, &Device::flex());
}

#[test]
fn mamba2_flex_step_matches_parallel_forward() {
    check_step_vs_forward(MAMBA2, &Device::flex(), &FLEX);
}

#[test]
fn mamba2_generation_logits_match_reference() {
    check_generation_logits(MAMBA2);
}

#[test]
fn mamba2_chunked_prefill_equals_one_prefill() {
    check_chunked_prefill(MAMBA2);
}

#[test]
fn generation_logits_match_reference() {
    check_generation_logits(MAMBA);
}

/// generate.logits[:, k]: from the prefill for k = 0 (`prefill_last`: the LM head on the last
/// position only, as generation runs it), from one recurrent step after.
fn check_generation_logits(name: &str) {
    let device = Device::flex();
    let model = MambaLm::load_dir(&fixture_path(name).join("model"), &device).unwrap();
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let (seqs, shape) = t.ints("generate.sequences");
    let (b, total) = (shape[0], shape[1]);
    let (want, wshape) = t.values("generate.logits");
    let v = wshape[2];
    let (logits, mut cache) = model.prefill_last(parallel_ids(&seqs, b, total, 0, 20, &device));
    let mut got = vec![to_vec(logits)];

    for pos in 20..total - 1 {
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(
                (0..b).map(|i| seqs[i * total + pos]).collect::<Vec<_>>(),
                [b],
            ),
            &device,
        );
        let (l, c) = model.step(ids, cache);
        cache = c;
        got.push(to_vec(l));
    }
    for (k, row) in got.iter().enumerate() {
        for i in 0..b {
            let w = &want[(i * wshape[1] + k) * v..(i * wshape[1] + k + 1) * v];
            // measured 6.3e-7 (Flex)
            assert_rel(
                &format!("generate.logits[{i}, {k}]"),
                &row[i * v..(i + 1) * v],
                w,
                5e-6,
            );
        }
    }
}

#[test]
fn chunked_prefill_equals_one_prefill() {
    check_chunked_prefill(MAMBA);
}

fn check_chunked_prefill(name: &str) {
    let device = Device::flex();
    let model = MambaLm::load_dir(&fixture_path(name).join("model"), &device).unwrap();
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let (ids, shape) = t.ints("input_ids");
    let (b, l) = (shape[0], shape[1]);
    let whole = model.forward_detailed(parallel_ids(&ids, b, l, 0, l, &device), None);
    let first = model.forward_detailed(parallel_ids(&ids, b, l, 0, 7, &device), None);
    let second = model.forward_detailed(parallel_ids(&ids, b, l, 7, l, &device), Some(first.cache));
    // measured 1.5e-7 (Flex)
    assert_rel(
        "chunked prefill logits",
        &to_vec(second.logits),
        &to_vec(whole.logits.narrow(1, 7, l - 7)),
        1e-6,
    );
}

#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn ndarray_matches_reference() {
    let device = Device::ndarray();
    for name in [MAMBA, MAMBA2] {
        check_forward(name, &device, &FLEX);
        check_generation(name, &device);
        check_step_vs_forward(name, &device, &FLEX);
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_reference() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    // The runtime's launch log proves that the scan and the decode step ran as this crate's
    // kernels, not as the portable bodies.
    let counter = ssm_backends::LaunchCounter::start();
    check_forward(MAMBA, &device, &WGPU);
    assert!(
        counter.count_of("scan_fwd_kernel") >= 2,
        "the scan kernel did not run: {:?}",
        counter.counts()
    );
    check_generation(MAMBA, &device);
    assert!(
        counter.count_of("mamba_step_kernel") >= 2,
        "the decode-step kernel did not run: {:?}",
        counter.counts()
    );
    check_step_vs_forward(MAMBA, &device, &WGPU);
    drop(counter);
    // Mamba2: the chunked SSD body on the GPU; the fused Mamba2 step kernel decodes.
    let counter = ssm_backends::LaunchCounter::start();
    check_forward(MAMBA2, &device, &WGPU);
    check_generation(MAMBA2, &device);
    check_step_vs_forward(MAMBA2, &device, &WGPU);
    assert!(
        counter.count_of("mamba2_step_kernel") >= 2,
        "the Mamba2 decode-step kernel did not run: {:?}",
        counter.counts()
    );
}

#[test]
fn state_spaces_pytorch_checkpoint_matches_reference() {
    // The same weights as a state-spaces `pytorch_model.bin` (zip-pickle, keys
    // `backbone.embedding.*`, a tied `lm_head.weight` stored) with a state-spaces config.json
    // (`ssm_cfg.layer = "Mamba2"` for Mamba2); written by fixtures/tools/make_pytorch_bin.py.
    let device = Device::flex();
    for name in [MAMBA, MAMBA2] {
        let model =
            MambaLm::load_dir(&fixture_path(name).join("state_spaces"), &device).expect("loads");
        let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
        let logits = model.forward(t.int_tensor("input_ids", &device));
        let (want, _) = t.values("logits");
        assert_rel(
            &format!("{name}: logits"),
            &to_vec(logits),
            &want,
            FLEX.logits,
        );
    }
}
