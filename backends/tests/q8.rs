//! 8-bit weights through the public API (`quantize_q8`, `rows_matmul_transposed`,
//! `embedding_rows`) on the CPU backends: Flex's kernel (few rows, in integer dot products),
//! its many-row path (the weight dequantized once, f32 GEMM) and NdArray's reference body (the
//! dequantized weight per use) against the product of Burn's own dequantization of the same
//! tensor; and the refusals.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ssm_backends::testing::{TestRng, cpu_kernel_calls};
use ssm_backends::{
    embedding_rows, is_quantized, quantize_q8, rows_matmul, rows_matmul_transposed, to_vec,
};

fn cpu_devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![("flex", ssm_backends::parse_device(Some("cpu")).unwrap())];
    if let Ok(d) = ssm_backends::parse_device(Some("ndarray")) {
        v.push(("ndarray", d));
    }
    v
}

/// Rows of x quantized per block of `bk` as the kernel does (`x ≈ dx q`, dx = max |x| / 127),
/// back in f32: the kernel's product is exact against these up to f32 summation order.
fn rounded_rows(x: &[f32], bk: usize) -> Vec<f32> {
    x.chunks(bk)
        .flat_map(|b| {
            let d = b.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            b.iter()
                .map(move |&v| if d > 0.0 { d * (v / d).round() } else { 0.0 })
        })
        .collect()
}

/// `x wᵀ` from the 8-bit (N, K) weight against the f64 product of its dequantized values (Burn's
/// `dequantize`): on Flex with at most 8 rows, x's rows quantized as the kernel does, within
/// 1e-5 of the sum of magnitudes; with more rows (and on NdArray) x as it is, within the same.
/// The kernel ran (its counter) for the few-row products on Flex.
#[test]
fn products_match_the_dequantized_weight() {
    for (name, device) in cpu_devices() {
        let mut rng = TestRng::new(7);
        for &(m, n, k, bk) in &[
            (1, 300, 64, 32),
            (3, 70, 128, 64),
            (8, 33, 96, 32),
            (20, 50, 64, 32),
        ] {
            let x = rng.values(m * k, Distribution::Normal(0.0, 1.0));
            let w = Tensor::<2>::from_data(
                TensorData::new(rng.values(n * k, Distribution::Normal(0.0, 1.0)), [n, k]),
                &device,
            );
            let wq = quantize_q8(w, bk).unwrap();
            assert!(is_quantized(&wq));
            let deq = to_vec(wq.clone().dequantize());
            let before = cpu_kernel_calls().rows_matmul_q8;
            let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
            let got = to_vec(rows_matmul_transposed(xt, wq));
            let kernel = name == "flex" && m <= 8;
            if kernel {
                assert!(
                    cpu_kernel_calls().rows_matmul_q8 > before,
                    "{name}: no kernel"
                );
            }
            let xs = if kernel {
                rounded_rows(&x, bk)
            } else {
                x.clone()
            };
            for r in 0..m {
                for j in 0..n {
                    let (mut s, mut mag) = (0.0f64, 0.0f64);
                    for i in 0..k {
                        let p = xs[r * k + i] as f64 * deq[j * k + i] as f64;
                        s += p;
                        mag += p.abs();
                    }
                    let g = got[r * n + j] as f64;
                    assert!(
                        (g - s).abs() <= 1e-5 * mag,
                        "{name} m {m} n {n} k {k} bk {bk} ({r}, {j}): {g} vs {s}"
                    );
                }
            }
        }
    }
}

/// Looked-up rows equal the dequantized matrix's rows exactly; an id past the matrix is an
/// error naming the range.
#[test]
fn embedding_rows_are_the_dequantized_rows() {
    for (name, device) in cpu_devices() {
        let mut rng = TestRng::new(3);
        let (n, k) = (40, 64);
        let w = Tensor::<2>::from_data(
            TensorData::new(rng.values(n * k, Distribution::Normal(0.0, 1.0)), [n, k]),
            &device,
        );
        let wq = quantize_q8(w, 32).unwrap();
        let deq = to_vec(wq.clone().dequantize());
        let ids = [39i64, 0, 7, 7];
        let t = Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [4]), &device);
        let got = to_vec(embedding_rows(wq.clone(), t).unwrap());
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            assert_eq!(
                &got[i * k..(i + 1) * k],
                &deq[id * k..(id + 1) * k],
                "{name}"
            );
        }
        let bad = Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 40], [2]), &device);
        let e = embedding_rows(wq, bad).unwrap_err().to_string();
        assert!(e.contains("40") && e.contains("40 rows"), "{name}: {e}");
    }
}

/// A K that is not a whole number of blocks, a block of 0 or over 255, a weight quantized
/// twice: errors that name the shape and the reason. A quantized weight multiplied as `x w`
/// (not the layout the kernel reads) still computes, by the reference body.
#[test]
fn impossible_quantizations_are_refused() {
    let device = ssm_backends::parse_device(Some("cpu")).unwrap();
    let w = || Tensor::<2>::ones([4, 48], &device);
    let e = quantize_q8(w(), 32).unwrap_err().to_string();
    assert!(
        e.contains("(4, 48)") && e.contains("K = 48") && e.contains("32"),
        "{e}"
    );
    for bk in [0, 256] {
        assert!(quantize_q8(w(), bk).is_err());
    }
    let q = quantize_q8(w(), 16).unwrap();
    let e = quantize_q8(q.clone(), 16).unwrap_err().to_string();
    assert!(e.contains("already quantized"), "{e}");
    let x = Tensor::<2>::ones([2, 4], &device);
    let y = to_vec(rows_matmul(x, q));
    assert!(y.iter().all(|&v| (v - 4.0).abs() < 1e-5), "{y:?}");
}
