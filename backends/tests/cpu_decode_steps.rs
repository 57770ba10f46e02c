//! The fused CPU decode steps of Mamba and Mamba2 (`step/cpu_fused.rs`) against the steps
//! composed of the conv and state steps and Burn's ops (their portable bodies), on Flex and, where
//! built, NdArray: every output within its bound relative to its own scale (4x the largest error
//! measured on Flex, rounded up to 1, 2 or 5 times a power of ten, at least 1e-6), and the fused
//! kernel ran (one count per step).

use burn::backend::Dispatch;
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::portable::{mamba_step_composed, mamba2_step_composed};
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls};
use ssm_backends::{
    Mamba2StepConfig, mamba_decode_step, mamba2_decode_step, pack_mamba_step_weights,
    pack_mamba2_step_weights, to_vec,
};

fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut all = vec![Device::flex()];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    all.push(Device::ndarray());
    all
}

fn normal<const D: usize>(rng: &mut TestRng, dims: [usize; D], device: &Device) -> Tensor<D> {
    rng.tensor(dims, Distribution::Normal(0.0, 1.0), device)
}

fn three(
    (y, c, s): (
        burn::backend::tensor::FloatTensor<Dispatch>,
        burn::backend::tensor::FloatTensor<Dispatch>,
        burn::backend::tensor::FloatTensor<Dispatch>,
    ),
) -> [Vec<f32>; 3] {
    [
        to_vec(Tensor::<2>::from_dispatch(y)),
        to_vec(Tensor::<3>::from_dispatch(c)),
        to_vec(Tensor::<3>::from_dispatch(s)),
    ]
}

/// y: measured 3.0e-6 at mamba-130m's width (D 1536: the fused step sums x_proj's 1,536 terms
/// on eight lanes, Flex's matmul in its own order; y's scale is 127 with these random
/// weights), <= 2.5e-7 elsewhere; the conv state is only shifted (exact); the SSM state: 5.5e-7
/// at D 1536 (its dt from the same reordered sums), <= 7.8e-8 elsewhere.
const BOUNDS: [(&str, f64); 3] = [("y", 2e-5), ("conv state", 0.0), ("ssm state", 5e-6)];

fn check(what: &str, got: [Vec<f32>; 3], want: [Vec<f32>; 3]) {
    for ((name, tol), (g, w)) in BOUNDS.iter().zip(got.iter().zip(&want)) {
        assert_rel(&format!("{what}: {name}"), g, w, *tol);
    }
}

#[test]
fn fused_mamba_step_matches_the_composed_step() {
    for device in devices() {
        let mut rng = TestRng::new(31);
        // (batch, D, K, N, R): mamba_tiny's; mamba-130m's width at batch 1 (the parallel path);
        // odd sizes at batch 3.
        for (batch, dim, k, n, r) in [(2, 64, 4, 16, 4), (1, 1536, 4, 16, 48), (3, 70, 3, 5, 7)] {
            let weights = pack_mamba_step_weights(
                normal(&mut rng, [dim, k], &device).mul_scalar(0.3),
                normal(&mut rng, [dim], &device),
                normal(&mut rng, [dim, r + 2 * n], &device).mul_scalar(0.1),
                normal(&mut rng, [r, dim], &device).mul_scalar(0.3),
                rng.tensor::<1>([dim], Distribution::Uniform(-4.0, -1.0), &device),
                rng.tensor::<2>([dim, n], Distribution::Uniform(0.3, 4.0), &device)
                    .neg(),
                normal(&mut rng, [dim], &device),
            );
            let xz = normal(&mut rng, [batch, 2 * dim], &device);
            let conv = normal(&mut rng, [batch, dim, k], &device);
            let ssm = normal(&mut rng, [batch, dim, n], &device);
            let want = three(mamba_step_composed::<Dispatch>(
                xz.clone().into_dispatch(),
                conv.clone().into_dispatch(),
                ssm.clone().into_dispatch(),
                weights.clone().into_dispatch(),
            ));
            let before = cpu_kernel_calls().step;
            let (y, c, s) = mamba_decode_step(xz, conv, ssm, weights);
            let got = [to_vec(y), to_vec(c), to_vec(s)];
            assert!(cpu_kernel_calls().step > before, "the fused step ran");
            check(
                &format!("{device:?} mamba ({batch},{dim},{k},{n},{r})"),
                got,
                want,
            );
        }
    }
}

#[test]
fn fused_mamba2_step_matches_the_composed_step() {
    for device in devices() {
        let mut rng = TestRng::new(32);
        // (batch, heads, head dim, groups, N, K, dt limit): mamba2_tiny's; mamba2-130m's width
        // (24 heads of 64, N 128) at batch 1; several groups and a finite dt limit at batch 3.
        for (batch, h, p, g, n, k, dt_max) in [
            (2, 4, 16, 2, 8, 4, f32::INFINITY),
            (1, 24, 64, 1, 128, 4, f32::INFINITY),
            (3, 6, 8, 3, 16, 4, 0.05),
        ] {
            let di = h * p;
            let conv = di + 2 * g * n;
            let weights = pack_mamba2_step_weights(
                normal(&mut rng, [conv, k], &device).mul_scalar(0.3),
                normal(&mut rng, [conv], &device),
                rng.tensor::<1>([h], Distribution::Uniform(-4.0, -1.0), &device),
                rng.tensor::<1>([h], Distribution::Uniform(1.0, 16.0), &device)
                    .neg(),
                normal(&mut rng, [h], &device),
                normal(&mut rng, [di], &device),
            );
            let zx = normal(&mut rng, [batch, 2 * di + 2 * g * n + h], &device);
            let cs = normal(&mut rng, [batch, conv, k], &device);
            let ss = normal(&mut rng, [batch, di, n], &device);
            let cfg = Mamba2StepConfig {
                heads: h,
                groups: g,
                dt_min: 0.001,
                dt_max,
                eps: 1e-5,
            };
            let want = three(mamba2_step_composed::<Dispatch>(
                zx.clone().into_dispatch(),
                cs.clone().into_dispatch(),
                ss.clone().into_dispatch(),
                weights.clone().into_dispatch(),
                cfg,
            ));
            let before = cpu_kernel_calls().step;
            let (y, c, s) = mamba2_decode_step(zx, cs, ss, weights, cfg);
            let got = [to_vec(y), to_vec(c), to_vec(s)];
            assert!(cpu_kernel_calls().step > before, "the fused step ran");
            check(
                &format!("{device:?} mamba2 ({batch},{h},{p},{g},{n})"),
                got,
                want,
            );
        }
    }
}
