//! Parity of `MambaLm` with transformers' `MambaForCausalLM` (mamba_tiny) and
//! `Mamba2ForCausalLM` (mamba2_tiny), and of the recurrent step with the parallel forward.

use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::{Fixture, assert_abs, fixtures_dir, gap};
use ssm_backends::to_vec;
use ssm_models::lm::{CausalLm, GenerationConfig, MambaLm, generate};
use ssm_models::ssm::MixerTrace;
use std::path::PathBuf;

const MAMBA: &str = "mamba_tiny";
const MAMBA2: &str = "mamba2_tiny";

fn fixture_path(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

fn check_forward(name: &str, device: &Device, tol: f32) {
    let model =
        MambaLm::load_dir(&fixture_path(name).join("model"), device).expect("fixture loads");
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let ids: Tensor<2, Int> = t.int_tensor("input_ids", device);
    let out = model.forward_detailed(ids, None);

    let (want, shape) = t.values("logits");
    assert_eq!(out.logits.dims().to_vec(), shape);
    assert_abs("logits", &to_vec(out.logits.clone()), &want, tol as f64);

    let (want, _) = t.values("embeddings");
    assert_abs(
        "embeddings",
        &to_vec(out.embeddings.clone()),
        &want,
        tol as f64,
    );
    // hidden_states.i: the output of layer i; the last index is norm_f of the last layer.
    assert_eq!(out.hidden_states.len(), 3);
    let (want, _) = t.values("norm_f_out");
    assert_abs(
        "norm_f_out",
        &to_vec(out.hidden_states[2].clone()),
        &want,
        tol as f64,
    );
    for (i, h) in out.hidden_states.iter().enumerate() {
        let (want, _) = t.values(&format!("hidden_states.{i}"));
        assert_abs(
            &format!("hidden_states.{i}"),
            &to_vec(h.clone()),
            &want,
            tol as f64,
        );
    }
    for (i, c) in out.cache.layers.iter().enumerate() {
        for (key, got) in [("conv_state", &c.conv_state), ("ssm_state", &c.ssm_state)] {
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
            assert_abs(
                &format!("cache.{i}.{key}"),
                &to_vec(got.clone()),
                &want,
                tol as f64,
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
            assert_abs(&format!("layers.{i}.scan.{key}"), &got, &want, tol as f64);
        }
        if let MixerTrace::Mamba2(tr) = tr {
            let (want, _) = t.values(&format!("layers.{i}.gated_norm_out"));
            assert_abs(
                &format!("layers.{i}.gated_norm_out"),
                &to_vec(tr.gated_norm.clone()),
                &want,
                tol as f64,
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

/// Decoding token by token gives the logits of a parallel forward over the same tokens.
fn check_step_vs_forward(name: &str, device: &Device, tol: f32) {
    check_step_vs_forward_with(name, device, tol, 1e-4)
}

/// As [`check_step_vs_forward`], with the bound on the reference's own forward logits given.
fn check_step_vs_forward_with(name: &str, device: &Device, tol: f32, reference_tol: f32) {
    let model =
        MambaLm::load_dir(&fixture_path(name).join("model"), device).expect("fixture loads");
    let t = Fixture::open(fixture_path(name).join("tensors.safetensors"));
    let (seqs, shape) = t.ints("generate.sequences");
    let (b, total) = (shape[0], shape[1]);
    let full = Tensor::<2, Int>::from_data(TensorData::new(seqs.clone(), [b, total]), device);
    let parallel = model.forward(full);
    let prompt_len = 20;
    let (_, mut cache) = model.prefill(parallel_ids(&seqs, b, total, 0, prompt_len, device));
    let mut worst = 0.0f64;
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
        let want = parallel.clone().narrow(1, pos, 1).squeeze_dim::<2>(1);
        let g = gap(
            &format!("step vs parallel forward at position {pos}"),
            &to_vec(logits),
            &to_vec(want),
        );
        worst = worst.max(g.max_abs);
    }
    eprintln!("step vs parallel forward: max abs error {worst:.2e} (bound {tol:.0e})");
    assert!(
        worst <= tol as f64,
        "step vs parallel forward: max abs error {worst:e}"
    );

    // The reference's own step logits.
    let (want, _) = t.values("generate.full_forward_logits");
    let got = to_vec(parallel.narrow(1, 0, total - 1));
    assert_abs("full_forward_logits", &got, &want, reference_tol as f64);
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
    check_forward(MAMBA, &Device::flex(), 1e-4);
}

#[test]
fn flex_greedy_tokens_match_reference() {
    check_generation(MAMBA, &Device::flex());
}

#[test]
fn flex_step_matches_parallel_forward() {
    check_step_vs_forward(MAMBA, &Device::flex(), 1e-5);
}

#[test]
fn mamba2_flex_forward_matches_reference() {
    check_forward(MAMBA2, &Device::flex(), 1e-4);
}

#[test]
fn mamba2_flex_greedy_tokens_match_reference() {
    check_generation(MAMBA2, &Device::flex());
}

#[test]
fn mamba2_flex_step_matches_parallel_forward() {
    check_step_vs_forward(MAMBA2, &Device::flex(), 1e-5);
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
            assert_abs(
                &format!("generate.logits[{i}, {k}]"),
                &row[i * v..(i + 1) * v],
                w,
                1e-4,
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
    assert_abs(
        "chunked prefill logits",
        &to_vec(second.logits),
        &to_vec(whole.logits.narrow(1, 7, l - 7)),
        1e-5,
    );
}

#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn ndarray_matches_reference() {
    let device = Device::ndarray();
    for name in [MAMBA, MAMBA2] {
        check_forward(name, &device, 1e-4);
        check_generation(name, &device);
        check_step_vs_forward(name, &device, 1e-5);
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
    check_forward(MAMBA, &device, 1e-3);
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
    check_step_vs_forward_with(MAMBA, &device, 1e-4, 1e-3);
    drop(counter);
    // Mamba2: the chunked SSD body on the GPU, looser bounds where the float order differs;
    // the fused Mamba2 step kernel decodes.
    let counter = ssm_backends::LaunchCounter::start();
    check_forward(MAMBA2, &device, 1e-3);
    check_generation(MAMBA2, &device);
    check_step_vs_forward_with(MAMBA2, &device, 1e-4, 1e-3);
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
        assert_abs(&format!("{name}: logits"), &to_vec(logits), &want, 1e-4);
    }
}
