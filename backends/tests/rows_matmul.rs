//! `rows_matmul` (a decode step's projections) against Burn's own matmul: every layout the
//! weight can come in (stored (K, N), a transposed view of an (N, K) tensor, a tied head in its
//! (N, K) layout), serial and parallel sizes, a row count past the kernel's (Flex's GEMM), the
//! gradients under Autodiff, and the same on wgpu.

use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls};
use ssm_backends::{rows_matmul, rows_matmul_transposed, to_vec};

/// (rows, K, N): under and over the kernel's parallel threshold, K not a multiple of 4 or 32,
/// N not a multiple of the column block, and 9 rows (more than the kernel takes).
const SIZES: [(usize, usize, usize); 5] = [
    (1, 37, 70),
    (3, 100, 300),
    (1, 256, 520),
    (8, 129, 517),
    (9, 64, 300),
];

fn random(rng: &mut TestRng, dims: [usize; 2], device: &Device) -> Tensor<2> {
    rng.tensor(dims, Distribution::Uniform(-1.0, 1.0), device)
}

/// Every layout of the weight against `x.matmul(w)` on `device` for each of `sizes`, within
/// `tol` (relative to the largest output).
fn check_layouts(sizes: &[(usize, usize, usize)], rng: &mut TestRng, device: &Device, tol: f64) {
    for &(m, k, n) in sizes {
        let x = random(rng, [m, k], device);
        let w = random(rng, [k, n], device);
        let want = to_vec(x.clone().matmul(w.clone()));
        // The same (K, N) values stored as (N, K): a transposed view, and the transposed op.
        let wt = Tensor::from_data(w.clone().transpose().into_data(), device);
        let cases = [
            ("(K, N)", rows_matmul(x.clone(), w.clone())),
            (
                "(N, K) viewed transposed",
                rows_matmul(x.clone(), wt.clone().transpose()),
            ),
            (
                "(N, K) transposed op",
                rows_matmul_transposed(x.clone(), wt),
            ),
            (
                "(K, N) viewed, transposed op",
                rows_matmul_transposed(x.clone(), w.transpose()),
            ),
        ];
        for (name, got) in cases {
            assert_eq!(got.dims(), [m, n], "{name}: shape");
            assert_rel(
                &format!("{m}x{k}x{n}, weight {name}"),
                &to_vec(got),
                &want,
                tol,
            );
        }
    }
}

#[test]
fn flex_matches_matmul_in_every_layout() {
    let device = Device::flex();
    let before = cpu_kernel_calls().rows_matmul;
    // Measured 4.4e-7 (4x, rounded up to 1, 2 or 5 times a power of ten).
    check_layouts(&SIZES, &mut TestRng::new(1), &device, 2e-6);
    // Four layouts for each size of at most 8 rows ran the kernel; 9 rows went to the GEMM.
    assert_eq!(cpu_kernel_calls().rows_matmul - before, 4 * 4);

    // bf16 weights and rows (in this test: the kernel counter is process-wide): the kernel
    // reads the bf16 weight in place, (K, N) and as a tied head's (N, K), and gives the f32
    // product of the same bf16 values rounded to bf16 once: within 2^-8 of the largest output
    // (bf16's unit roundoff; the sums are f32).
    let mut rng = TestRng::new(11);
    let before = cpu_kernel_calls().rows_matmul;
    for &(m, k, n) in &SIZES[..4] {
        let x = random(&mut rng, [m, k], &device).cast(FloatDType::BF16);
        let w = random(&mut rng, [k, n], &device).cast(FloatDType::BF16);
        let want = to_vec(
            x.clone()
                .cast(FloatDType::F32)
                .matmul(w.clone().cast(FloatDType::F32)),
        );
        let wt = Tensor::<2>::from_data(w.clone().transpose().into_data(), &device)
            .cast(FloatDType::BF16);
        for (what, got) in [
            ("(K, N)", rows_matmul(x.clone(), w.clone())),
            (
                "(N, K) transposed op",
                rows_matmul_transposed(x.clone(), wt),
            ),
        ] {
            assert_eq!(got.dtype(), DType::BF16, "{what}");
            let what = format!("bf16 {what} m {m} k {k} n {n}");
            assert_rel(&what, &to_vec(got), &want, 2f64.powi(-8));
        }
    }
    assert_eq!(cpu_kernel_calls().rows_matmul - before, 4 * 2);
}

#[test]
fn gradients_under_autodiff_match_matmul() {
    let device = Device::flex().autodiff();
    let mut rng = TestRng::new(2);
    let x = random(&mut rng, [2, 40], &device).require_grad();
    let w = random(&mut rng, [40, 30], &device).require_grad();
    let wt = random(&mut rng, [30, 40], &device).require_grad();
    let loss = |a: Tensor<2>, b: Tensor<2>| a.sum_dim(1).sum() * 2.0 + b.powf_scalar(2.0).sum();
    let ours = loss(
        rows_matmul(x.clone(), w.clone()),
        rows_matmul_transposed(x.clone(), wt.clone()),
    )
    .backward();
    let theirs = loss(
        x.clone().matmul(w.clone()),
        x.clone().matmul(wt.clone().transpose()),
    )
    .backward();
    for (name, t) in [("x", &x), ("w", &w), ("wt", &wt)] {
        let a = to_vec(t.grad(&ours).expect("gradient"));
        let b = to_vec(t.grad(&theirs).expect("gradient"));
        // Measured 0 (the floor of the bounds on Flex).
        assert_rel(&format!("d{name}"), &a, &b, 1e-6);
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_matmul_in_every_layout() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    // The GPU runs the op's default body (Burn's matmul, whose autotuning compiles kernels
    // for each new shape): one size checks the plumbing of every layout.
    // Measured 0 (the floor of the bounds on wgpu).
    check_layouts(&SIZES[1..2], &mut TestRng::new(3), &device, 2e-6);
}
