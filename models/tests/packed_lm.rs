//! Packed documents through the Mamba and Mamba2 LMs: the logits of a row of packed documents equal each
//! document's run alone, and the returned state is the row's last document's (decoding goes on
//! from it as from that document alone). Documents of length 1 and shorter than the conv
//! window (K = 4), a row ending with one. On Flex (1e-5) and on wgpu (1e-4).

use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::testing::{Fixture, assert_abs, fixtures_dir};
use ssm_backends::{seq_idx_from_lengths, to_vec};
use ssm_models::lm::{CausalLm, MambaLm};

fn docs() -> Vec<Vec<usize>> {
    vec![vec![1, 6, 7, 2], vec![10, 6]]
}

fn check(name: &str, device: &Device, tol: f32) {
    let dir = fixtures_dir().join(name);
    let model = MambaLm::load_dir(&dir.join("model"), device).expect("fixture loads");
    let t = Fixture::open(dir.join("tensors.safetensors"));
    let (ids, shape) = t.ints("input_ids");
    let l: usize = docs()[0].iter().sum();
    assert!(shape[1] >= l);
    let rows: Vec<Vec<i64>> = (0..2)
        .map(|b| ids[b * shape[1]..b * shape[1] + l].to_vec())
        .collect();
    let tokens = |row: &[i64]| {
        Tensor::<2, Int>::from_data(TensorData::new(row.to_vec(), [1, row.len()]), device)
    };
    let all: Vec<i64> = rows.concat();
    let packed_ids = Tensor::<2, Int>::from_data(TensorData::new(all, [2, l]), device);
    let seq = seq_idx_from_lengths(&docs(), device).unwrap();
    let (logits, cache) = model.forward_packed(packed_ids, seq).unwrap();
    let v = logits.dims()[2];
    let logits = to_vec(logits);
    for (b, row) in docs().iter().enumerate() {
        let mut from = 0;
        for (i, &len) in row.iter().enumerate() {
            let (want, alone_cache) = model.prefill(tokens(&rows[b][from..from + len]));
            let got = logits[(b * l + from) * v..(b * l + from + len) * v].to_vec();
            assert_abs(
                &format!("{name} row {b} document {i}: logits"),
                &got,
                &to_vec(want),
                tol as f64,
            );
            if i + 1 == row.len() {
                // The row's state is its last document's: the next step agrees.
                let next = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64], [1]), device);
                let (want, _) = model.step(next.clone(), alone_cache);
                let (got, _) = model.step(next, model.keep_rows(cache.clone(), &[b]));
                assert_abs(
                    &format!("{name} row {b}: the step after the packed row"),
                    &to_vec(got),
                    &to_vec(want),
                    tol as f64,
                );
            }
            from += len;
        }
    }
}

#[test]
fn packed_documents_through_the_lm_equal_each_alone_on_the_cpu() {
    for name in ["mamba_tiny", "mamba2_tiny"] {
        check(name, &Device::flex(), 1e-5);
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn packed_documents_through_the_lm_equal_each_alone_on_wgpu() {
    if let Some(device) = ssm_backends::testing::wgpu_test_device() {
        for name in ["mamba_tiny", "mamba2_tiny"] {
            check(name, &device, 1e-4);
        }
    }
}

#[test]
fn a_sequence_index_of_another_shape_is_a_clear_error() {
    let device = Device::flex();
    let model = MambaLm::load_dir(&fixtures_dir().join("mamba_tiny").join("model"), &device)
        .expect("fixture loads");
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
    let err = model
        .forward_packed(ids, seq_idx_from_lengths(&[vec![2]], &device).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("seq_idx has shape [1, 2]"), "{err}");
}
